//! Offline edits kept across a restart ([`ClientOptions::state_dir`](super::ClientOptions::state_dir)):
//! the session id and each open document's [`SavedDocument`] in files of one folder, so that a process
//! that stops while edits are unacknowledged (offline, or an ack lost with the connection) sends them
//! from the next process, once, with their original `seq` and `base`; the server applies a
//! (client, seq) at most once, so resending is always safe.
//!
//! The folder holds:
//! - `lock`: locked exclusively (`flock` on Unix) while a client uses the folder. Seqs are per client
//!   id and document, so two clients on one session would send different ops under one `seq` and the
//!   server would drop one of them as a repeat: a second client on a held folder is refused.
//! - `session`: the client id, taken over by the next client on the folder.
//! - `doc-<SHA-256 of the document id, hex>.json`, one per document: a hash because a document id
//!   may hold `/`, differ from another only in case (which some file systems ignore) and be longer
//!   than a file name may be; the id itself is inside, and checked on reading.
//!
//! Every file is written whole and atomically: to a temporary file, fsync, rename over the old one,
//! fsync of the folder. A document's file is written on every change of its state, under the lock of
//! the client state, before anything that change makes the client send (an op is on disk before it is
//! on the wire), so a process that dies at any point leaves a state the next one can carry on from.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_protocol::{ClientId, DocId};
use tokio::time::Instant;
use tracing::warn;

use super::{Phase, Shared, State};
use crate::{ClientError, DocumentClient, SavedDocument, UndoOptions};

/// Version of the file layout; a file of another layout is refused, not guessed at.
const LAYOUT: u32 = 1;

/// How often a client waits for a folder still held by a client that is ending.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// One document's file.
#[derive(Serialize, Deserialize)]
struct DocFile {
    layout: u32,
    /// The document was waiting for a fresh snapshot (after a rejected op): nothing is pending, and
    /// only `state.next_seq` counts (seq continues where it was).
    awaiting_snapshot: bool,
    state: SavedDocument,
}

/// A document found in the folder.
pub(super) enum Restored {
    /// Carries on: text and pending edits back at once; reopened with `since`, the op in flight
    /// resent unchanged after `opened`, then the buffer.
    Editing(DocumentClient),
    /// Opens from a fresh snapshot, `seq` continuing from this client's.
    Fresh(DocumentClient),
}

/// The state folder of a running client; the lock is held until it is dropped.
pub(super) struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the folder if needed and locks it. A folder held by another client is waited for up
    /// to `wait` (a client that was just dropped lets go once its task has ended), then refused.
    pub(super) async fn open(path: &Path, wait: Duration) -> Result<StateDir, ClientError> {
        let fail = |problem: String| ClientError::StateDir { path: path.to_owned(), problem };
        fs::create_dir_all(path).map_err(|e| fail(format!("cannot create it: {e}")))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| fail(format!("cannot open {}: {e}", lock_path.display())))?;
        let deadline = Instant::now() + wait;
        loop {
            // Named in full: std's File::try_lock (Rust 1.89) would otherwise shadow fs4's.
            match fs4::FileExt::try_lock(&lock) {
                Ok(()) => break,
                Err(fs4::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(fs4::TryLockError::WouldBlock) => {
                    return Err(fail(format!(
                        "in use by another client (waited {wait:?}); a folder holds one session, \
                         and two clients on it would send different ops under one seq"
                    )));
                }
                Err(fs4::TryLockError::Error(e)) => return Err(fail(format!("cannot lock it: {e}"))),
            }
        }
        Ok(StateDir { path: path.to_owned(), _lock: lock })
    }

    /// The session to use: the stored one, else `given`, else `fresh()`; stored if it was not.
    /// A `given` id other than the stored one is refused: the stored documents' pending edits carry
    /// that session's seqs and cannot be sent under another id.
    pub(super) fn session(
        &self,
        given: Option<&ClientId>,
        fresh: impl FnOnce() -> ClientId,
    ) -> Result<ClientId, ClientError> {
        let path = self.path.join("session");
        let stored = match fs::read_to_string(&path) {
            Ok(text) => Some(ClientId::parse(text.trim()).map_err(|e| self.error(&path, e.to_string()))?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(self.error(&path, e.to_string())),
        };
        match (stored, given) {
            (Some(stored), Some(given)) if stored != *given => Err(self.error(
                &path,
                format!(
                    "holds session {stored}, but client_id {given} was given; leave client_id unset to \
                     take the session over, or use another folder"
                ),
            )),
            (Some(stored), _) => Ok(stored),
            (None, given) => {
                let id = given.cloned().unwrap_or_else(fresh);
                self.write_atomic("session", id.as_str().as_bytes())
                    .map_err(|e| self.error(&path, format!("cannot write: {e}")))?;
                Ok(id)
            }
        }
    }

    /// The stored state of `doc`, if there is one. A file that cannot be read as a state of this
    /// document is an error, not a reason to start over: starting over would reuse seqs the server
    /// has seen and lose the edits sent under them.
    pub(super) fn load(&self, doc: &DocId, undo: UndoOptions) -> Result<Option<Restored>, ClientError> {
        let path = self.path.join(file_name(doc));
        let refuse = |problem: String| ClientError::SavedState {
            doc: doc.clone(),
            problem: format!("{}: {problem}", path.display()),
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(&path, e.to_string())),
        };
        let file: DocFile = serde_json::from_slice(&bytes).map_err(|e| refuse(format!("unreadable: {e}")))?;
        if file.layout != LAYOUT {
            return Err(refuse(format!("layout {}, but this client reads layout {LAYOUT}", file.layout)));
        }
        if file.state.doc != *doc {
            return Err(refuse(format!("holds document {}", file.state.doc)));
        }
        let client = DocumentClient::from_saved(file.state)
            .map_err(|e| match e {
                ClientError::SavedState { problem, .. } => refuse(problem),
                other => other,
            })?
            .with_undo_options(undo);
        Ok(Some(if file.awaiting_snapshot { Restored::Fresh(client) } else { Restored::Editing(client) }))
    }

    /// Writes the state of `client` whole. `awaiting_snapshot`: it is being reloaded after a rejected
    /// op, so its pending edits are dropped and only its next `seq` is kept.
    fn save(&self, client: &DocumentClient, awaiting_snapshot: bool) -> io::Result<()> {
        let state = if awaiting_snapshot {
            SavedDocument {
                doc: client.doc().clone(),
                text: String::new(),
                version: 0,
                next_seq: client.next_seq(),
                in_flight: None,
                buffer: None,
                in_flight_edits: 0,
                buffer_edits: 0,
            }
        } else {
            client.to_saved()
        };
        let bytes = serde_json::to_vec(&DocFile { layout: LAYOUT, awaiting_snapshot, state })?;
        self.write_atomic(&file_name(client.doc()), &bytes)
    }

    /// Replaces `name` by `bytes`: a reader (or the next process, after a crash) finds the old file
    /// or the new one, never a mix.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.path.join(name))?;
        // The rename is durable only once the folder's entry is.
        #[cfg(unix)]
        File::open(&self.path)?.sync_all()?;
        Ok(())
    }

    fn error(&self, file: &Path, problem: String) -> ClientError {
        ClientError::StateDir { path: self.path.clone(), problem: format!("{}: {problem}", file.display()) }
    }
}

/// The file of `doc`: `doc-<hex SHA-256 of the id>.json`.
fn file_name(doc: &DocId) -> String {
    let digest = Sha256::digest(doc.as_str().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("doc-{hex}.json")
}

impl Shared {
    /// Writes the state of `doc` if the client has a state folder. Called under the state lock after
    /// every change of a document's state and before what the change makes the client send. A
    /// failed write is counted ([`Stats::state_write_failures`](super::Stats)) and logged; the edits
    /// go on, in memory only.
    pub(super) fn persist(&self, state: &mut State, doc: &DocId) {
        let Some(dir) = &self.state_dir else { return };
        // A closed document's state does not change; a reopen reads its file.
        let Some(entry) = state.docs.get(doc).filter(|e| e.phase != Phase::Closed) else { return };
        let written = dir.save(&entry.doc, entry.phase == Phase::Resyncing);
        if let Err(e) = written {
            state.stats.state_write_failures += 1;
            warn!(dir = %dir.path.display(), %doc, error = %e, "the document's state is not kept across a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use tandem_ot::Operation;

    use super::*;

    #[test]
    fn file_names_are_safe_whatever_the_id() {
        let long = DocId::parse(&"A/".repeat(128)).unwrap();
        for doc in [DocId::parse("a/../b").unwrap(), DocId::parse("Notes").unwrap(), long] {
            let name = file_name(&doc);
            assert!(name.len() < 100 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)));
        }
        assert_ne!(file_name(&DocId::parse("Notes").unwrap()), file_name(&DocId::parse("notes").unwrap()));
    }

    #[tokio::test]
    async fn a_document_being_reloaded_is_stored_with_its_seq_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::open(dir.path(), Duration::ZERO).await.unwrap();
        let doc = DocId::parse("d").unwrap();
        let mut client = DocumentClient::new(doc.clone(), 3, "abc");
        client.local_edit(Operation::from_patch(3, 0, 0, "x").unwrap()).unwrap(); // seq 1 in flight
        client.local_edit(Operation::from_patch(4, 0, 0, "y").unwrap()).unwrap(); // buffered

        store.save(&client, false).unwrap();
        let Some(Restored::Editing(editing)) = store.load(&doc, UndoOptions::default()).unwrap() else {
            panic!("a document with pending edits carries on");
        };
        assert_eq!(editing.to_saved(), client.to_saved());

        store.save(&client, true).unwrap();
        let Some(Restored::Fresh(fresh)) = store.load(&doc, UndoOptions::default()).unwrap() else {
            panic!("a document being reloaded opens fresh");
        };
        assert_eq!((fresh.next_seq(), fresh.pending_edits(), fresh.text().as_str()), (2, 0, ""));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "no temporary file left: {names:?}");
    }
}
