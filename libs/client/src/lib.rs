//! The Rust client of Tandem.
//!
//! - [`DocumentClient`]: the pure client state machine of PROTOCOL.md for one document (no I/O), used
//!   directly by simulations and underneath the connection;
//! - [`Client`] and [`DocHandle`]: a WebSocket connection with handshake, reconnect with `since` and
//!   resubmission (to the same gateway or, with [`ClientOptions::fallback_urls`], to the next one), and
//!   reload after `invalid_op`, for integration tests and the load generator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tandem_client::ClientError> {
//! use std::time::Duration;
//! use tandem_client::{Client, ClientOptions, DocId};
//!
//! let options = ClientOptions { token: Some("dev-token".into()), ..ClientOptions::default() };
//! let client = Client::connect("ws://127.0.0.1:8080/v1/ws", options).await?;
//! let doc = client.open(&DocId::parse("notes/today").expect("valid id")).await?;
//! doc.insert(0, "hello")?; // applied locally at once, sent by the background task
//! doc.wait_synced(Duration::from_secs(5)).await?; // acknowledged by the server
//! assert!(client.errors().is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Undo and redo
//!
//! [`DocumentClient::undo`] and [`DocumentClient::redo`] (and the same on [`DocHandle`]) revert and
//! reapply this client's own edits only, with the semantics of ot.js `UndoManager`:
//!
//! - every local edit pushes its inverse onto the undo stack and clears the redo stack; undo applies
//!   the top inverse as a new local edit, sent like any other op, and pushes its inverse onto the
//!   redo stack; redo does the reverse;
//! - every op of another client transforms every entry of both stacks, so an entry always applies to
//!   the current text;
//! - a typing run is one step: a local edit joins the top step when no undo, redo or
//!   [`DocumentClient::break_undo_group`] came since the step began, it follows the previous local
//!   edit within [`UndoOptions::group_window`] (1 s), and it continues the step: both plain inserts,
//!   the new one starting where the step's text ends (typing on), or both plain deletes, the new one
//!   ending where the step's range starts (Backspace) or starting at the same place (Delete);
//! - at most [`UndoOptions::depth`] steps (500) are kept, the oldest dropped first (set with
//!   [`ClientOptions::undo`] or [`DocumentClient::with_undo_options`]; depth 0 keeps none); a snapshot
//!   that replaces the text ([`DocumentClient::reset`]) clears both stacks.
//!
//! What undo does where another client's edits overlap the undone text:
//!
//! - undoing an insert removes only the characters this client inserted that are still there: text
//!   another client typed inside them stays, and characters another client already deleted are not
//!   deleted twice;
//! - undoing a delete inserts the deleted text again, in one piece, where it was: ahead of text another
//!   client inserted at that place meanwhile, even text that client typed between the deleted
//!   characters before it received the delete (the place is a position, not the characters around it);
//! - a character that another client's op removed from this client's text never comes back by undo.
//!   A character that this client's own edit removed does come back, even if another client deleted
//!   it concurrently (before receiving this client's delete): that delete reached this client as a
//!   no-op (the characters were gone already), so undo restores the characters as its own deletion.
//!
//! So undoing every step of a client leaves none of its characters and every other character (of the
//! text it started from and of others' inserts) except those another client's op removed from this
//! client's text; characters that were in this client's text together keep their order. The one
//! difference from "what the other clients' edits alone would give" is the concurrent delete above,
//! whose characters come back.
//!
//! `undo_sim.rs` checks these rules on random interleavings; `vectors/undo-vectors.json` holds
//! scripted cases that the JavaScript client replays too.
//!
//! # Offline edits kept across a restart
//!
//! With [`ClientOptions::state_dir`], edits not yet acknowledged when the process stops (offline, or
//! an ack lost with the connection) are sent by the next process on that folder, **once, with their
//! original `seq` and `base`**, as the JavaScript client does with its `storage` option:
//!
//! ```no_run
//! # async fn demo() -> Result<(), tandem_client::ClientError> {
//! use tandem_client::{Client, ClientOptions, DocId};
//!
//! let dir = "/var/lib/my-editor/tandem".into();
//! let options = ClientOptions { state_dir: Some(dir), ..ClientOptions::default() };
//! let client = Client::connect("ws://127.0.0.1:8080/v1/ws", options).await?; // the stored session
//! let doc = client.open(&DocId::parse("notes/today").expect("valid id")).await?; // at once if stored
//! println!("{} edits waiting", doc.pending_edits());
//! # Ok(())
//! # }
//! ```
//!
//! - What is kept: the session id (file `session`, taken over when [`ClientOptions::client_id`] is
//!   unset; another id is refused) and per document a [`SavedDocument`] ([`DocumentClient::to_saved`]):
//!   local text, version, next `seq`, the op in flight exactly as sent with what it still changes, the
//!   buffer and the edit counts. Each file is written whole and atomically (temporary file, fsync,
//!   rename) on every change, before anything the change makes the client send. Not kept: the undo
//!   history.
//! - Why exactly once: the next process reopens the document with `since` = the stored version, then
//!   resends the op in flight unchanged (the server applies a (client, seq) at most once and
//!   acknowledges a repeat), then the buffer with the next `seq`. [`Client::open`] resolves at once
//!   with the stored text, before the server answers.
//! - One client per folder: the folder is locked while a client uses it (a second one is refused),
//!   because two clients on one session would send different ops under one `seq`.
//! - A stored state that cannot be read or does not fit together is refused
//!   ([`ClientError::SavedState`]), not guessed at; to start over, remove the whole folder (a new
//!   session), never one document's file (its `seq`s would start again at 1 under the old session).
//! - [`Client::connect`] still needs the server to answer (its first connection fails fast, as
//!   always); a process that starts offline retries `connect` itself, and its edits wait on disk.

mod connection;
mod document;
mod error;
mod presence;
mod undo;

pub use connection::{
    Client, ClientEvent, ClientOptions, DocHandle, ErrorRecord, ErrorSource, Stats, MAX_ERROR_RECORDS,
};
pub use document::{DocumentClient, HistoryEdit, OutgoingOp, SavedDocument, SavedInFlight};
pub use error::ClientError;
pub use presence::{Participant, RemoteSelections, SelectionAt, ShownSelection};
/// Re-exported so that users of the client need not name the crates it is built on.
pub use tandem_ot::Operation;
pub use tandem_protocol::{ClientId, DocId, ErrorCode};
pub use undo::UndoOptions;
