//! The document state machine: a pure function of (state, submitted op) → (state, decision).
//!
//! It holds what the sequencer needs to order one document: the text, the version, a bounded window
//! of recent committed ops to transform late ops against, and the last `seq` of the clients that
//! wrote it most recently (a bounded number of them) so a resubmission is recognised. All I/O stays
//! outside: when it needs older history, an old outcome or a client it no longer remembers, it says
//! so ([`Decision::NeedHistory`], [`Decision::NeedOutcome`], [`Decision::NeedClient`]) and the
//! caller fetches it from the store and asks again.
//!
//! What one op may cost is bounded: an op based more than [`Limits::max_base_lag`] versions back is
//! refused before anything is read, and the history an older op needs is asked for one page (the
//! window's length) at a time, the progress kept here between pages, so the caller can serve other
//! documents between two pages.
//!
//! A submission with `delete_document` is not an op: it is decided at once ([`Decision::Delete`]),
//! whatever its `seq`, and the state starts over as the empty document at version 0 that knows no
//! client (the store purges the document's events and rejections with the tombstone).

use std::collections::{HashMap, VecDeque};

use ropey::Rope;
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Outcome, Rejection, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::{ClientRecord, Snapshot, StoredDocument};

/// Limits that protect the sequencer and everyone else's documents from one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest document, in characters.
    pub max_document_chars: usize,
    /// Most characters one op may insert.
    pub max_op_insert_chars: usize,
    /// Committed ops kept in memory per document to transform late ops against; older ones are read
    /// from the store, this many per read (one page).
    pub history_window: usize,
    /// Oldest `base` accepted, in versions behind the document: what one op may cost is reading and
    /// transforming this many ops. Past it the op is refused (`invalid_op`: reload the document)
    /// before anything is read.
    pub max_base_lag: u64,
    /// Clients whose last `seq` a document keeps in memory (and in its snapshots); past it the
    /// least recently seen are forgotten, and looked up in the store if they come back.
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_chars: 10_000_000,
            max_op_insert_chars: 1_000_000,
            history_window: 1_000,
            // Ten pages of history at most: a client offline for a while (10,000 versions is hours of
            // a few people typing) is still transformed; one that was gone longer reloads, which
            // costs it less than the partition reading a long history inline for one op.
            max_base_lag: 10_000,
            max_clients: 1_000,
        }
    }
}

/// What the state machine decided about one submitted op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new version. The state has advanced; the event must be committed before anyone hears of it.
    Commit(CommittedEvent),
    /// A resubmission of an op committed as `version`: re-acknowledge it, change nothing.
    Duplicate { version: u64 },
    /// The document is deleted: the state is the empty document at version 0 again, knowing no
    /// client. The tombstone must be committed (after the events of the document decided before it,
    /// which it purges, and before any decided after it) before anyone hears of it.
    Delete(DocumentDeleted),
    /// The op is refused. `new` is false when this is a resubmission of an op refused before: the
    /// same error again, nothing to store.
    Reject { rejection: Rejection, new: bool },
    /// The op's base is older than the window: call again with the events `after < v <= up_to`
    /// (at most one page, the window's length). The progress made with earlier pages is kept in the
    /// state, so the op may be decided over several calls, with other documents served between them;
    /// nothing else may be decided on this document meanwhile.
    NeedHistory { after: u64, up_to: u64 },
    /// A resubmission of a `seq` older than the client's last: call again with its stored outcome.
    NeedOutcome,
    /// A client this document does not remember (it may have been forgotten to bound memory): call
    /// again with its last outcome from the store ([`Fetched::Client`]).
    NeedClient,
}

/// Extra input for a further call after [`Decision::NeedHistory`], [`Decision::NeedOutcome`] or
/// [`Decision::NeedClient`].
#[derive(Debug, Clone, Copy)]
pub enum Fetched<'a> {
    Nothing,
    /// The events the state machine asked for.
    History(&'a [CommittedEvent]),
    /// The stored outcome of the resubmitted `seq`, if the store has one.
    Outcome(Option<&'a Outcome>),
    /// The client's highest stored `seq` and its outcome, if the store has any.
    Client(Option<&'a ClientRecord>),
}

/// One committed op kept in the window.
#[derive(Debug, Clone)]
struct WindowEntry {
    client: ClientId,
    seq: u64,
    op: Operation,
}

impl WindowEntry {
    /// Roughly what the entry holds in memory, counted in characters (about bytes): the inserted
    /// text plus the fixed part.
    fn cost(&self) -> usize {
        self.op.inserted_chars() + self.op.components().len() * 16 + self.client.as_str().len() + 64
    }
}

/// What a client record costs in memory, in characters: the id, the outcome (a rejection's
/// message is usually under a hundred characters) and the map's overhead.
const CLIENT_COST: usize = 256;

/// A client's last `seq` on the document, and when the document last heard from it.
#[derive(Debug, Clone)]
struct Remembered {
    record: ClientRecord,
    /// The document's use counter at the client's latest op: the least recently used are forgotten.
    used: u64,
}

/// A late op decided over several pages of history: how far it has been transformed.
#[derive(Debug, Clone)]
struct LateOp {
    client: ClientId,
    seq: u64,
    base: u64,
    submitted: Operation,
    /// `submitted`, transformed against every version up to `through`.
    op: Operation,
    through: u64,
}

/// The in-memory state of one document, owned by its partition's sequencer.
#[derive(Debug, Clone)]
pub struct DocumentState {
    doc: DocId,
    version: u64,
    text: Rope,
    /// `text`'s length in characters, kept beside it: ropey counts a rope of one leaf (any text
    /// under about a kilobyte) by scanning it, and the partition asks every cached document's size
    /// after each commit.
    text_chars: usize,
    /// Committed ops with versions `window_start + 1 ..= version`, oldest first.
    window: VecDeque<WindowEntry>,
    window_start: u64,
    /// The highest version known to be in the store. Ops above it are never dropped from the window,
    /// so a late op can always be transformed without reading uncommitted history from the store.
    durable_version: u64,
    clients: HashMap<ClientId, Remembered>,
    /// Every client that ever wrote the document is in `clients`. False once one was forgotten, and
    /// for a document loaded from a snapshot (which may have been written after some were): then a
    /// client not in `clients` is looked up in the store before its op is decided.
    clients_complete: bool,
    /// Counts the ops decided, to order clients by their latest use.
    uses: u64,
    /// What the window holds, in characters (see [`WindowEntry::cost`]).
    window_cost: usize,
    /// The late op being decided page by page, if any.
    late: Option<LateOp>,
    snapshot_version: u64,
}

impl DocumentState {
    /// A document that was never written: empty text at version 0.
    pub fn new(doc: DocId) -> Self {
        Self {
            doc,
            version: 0,
            text: Rope::new(),
            text_chars: 0,
            window: VecDeque::new(),
            window_start: 0,
            durable_version: 0,
            clients: HashMap::new(),
            clients_complete: true,
            uses: 0,
            window_cost: 0,
            late: None,
            snapshot_version: 0,
        }
    }

    /// Rebuilds a document from the store: its latest snapshot, then every later event and rejection.
    pub fn load(doc: DocId, stored: StoredDocument, limits: &Limits) -> Result<Self, LoadError> {
        let mut state = Self::new(doc);
        if let Some(snapshot) = stored.snapshot {
            state.version = snapshot.version;
            state.window_start = snapshot.version;
            state.snapshot_version = snapshot.version;
            state.text = Rope::from_str(&snapshot.text);
            state.text_chars = state.text.len_chars();
            state.clients =
                snapshot.clients.into_iter().map(|(c, record)| (c, Remembered { record, used: 0 })).collect();
            state.clients_complete = false;
        }
        for event in stored.events {
            if event.version != state.version + 1 {
                return Err(LoadError(format!(
                    "document {} jumps from version {} to {}",
                    state.doc, state.version, event.version
                )));
            }
            event.op.apply_to_rope(&mut state.text).map_err(|e| {
                LoadError(format!("event {} of document {} does not apply: {e}", event.version, state.doc))
            })?;
            state.text_chars = event.op.target_len();
            state.version = event.version;
            state.remember(&event.client, event.seq, Outcome::Committed { version: event.version });
            state.push_window(WindowEntry { client: event.client, seq: event.seq, op: event.op });
        }
        for rejection in stored.rejections {
            state.remember(
                &rejection.client,
                rejection.seq,
                Outcome::Rejected { code: rejection.code, message: rejection.message },
            );
        }
        state.durable_version = state.version;
        state.trim_window(limits.history_window);
        state.forget_clients(limits.max_clients);
        Ok(state)
    }

    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn text(&self) -> &Rope {
        &self.text
    }

    /// Roughly what the document holds in memory, in characters (about bytes): its text, its history
    /// window and its client records. What the partition's cache budget counts.
    pub fn memory_chars(&self) -> usize {
        debug_assert_eq!(self.text_chars, self.text.len_chars(), "the kept length of {}", self.doc);
        self.text_chars + self.window_cost + self.clients.len() * CLIENT_COST
    }

    /// Decides what to do with a submitted op, advancing the state when it commits.
    ///
    /// Call with [`Fetched::Nothing`] first; on `NeedHistory`, `NeedOutcome` or `NeedClient`, fetch
    /// what it asks for and call again with it (a late op may ask for several pages of history, one
    /// call each).
    pub fn decide(&mut self, sub: &Submission, limits: &Limits, fetched: Fetched<'_>) -> Decision {
        debug_assert_eq!(sub.doc, self.doc, "a submission routed to the wrong document");
        if sub.delete_document {
            // Not deduplicated by (client, seq): the client records go with the document, and a
            // delete repeated is a delete of whatever the document holds by then.
            return self.delete(sub);
        }
        self.uses += 1;
        let last = match self.clients.get_mut(&sub.client) {
            Some(known) => {
                known.used = self.uses;
                known.record.seq
            }
            None if self.clients_complete => 0,
            // Forgotten, or never seen: only the store can tell, and it must, or a forgotten client's
            // resubmission would look like a new op (and its next op like a gap).
            None => match fetched {
                Fetched::Client(Some(record)) => {
                    self.clients
                        .insert(sub.client.clone(), Remembered { record: record.clone(), used: self.uses });
                    record.seq
                }
                Fetched::Client(None) => {
                    // Remembered as having used nothing, so later calls for this op (pages of
                    // history) do not ask again; the decision replaces it. Never in a snapshot.
                    let record = ClientRecord { seq: 0, outcome: Outcome::Committed { version: 0 } };
                    self.clients.insert(sub.client.clone(), Remembered { record, used: self.uses });
                    0
                }
                _ => return Decision::NeedClient,
            },
        };
        if sub.seq == 0 {
            // Never stored: seq 0 names no op, so there is nothing for a resubmission to find.
            return self.refuse(sub, ErrorCode::InvalidOp, "seq must start at 1".to_owned());
        }
        if sub.seq <= last {
            return self.resubmission(sub, last, fetched);
        }
        if sub.seq != last + 1 {
            return self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!(
                    "seq {} skips ahead (expected {}); it is used up now, so the next seq is {}",
                    sub.seq,
                    last + 1,
                    sub.seq.saturating_add(1)
                ),
            );
        }
        if sub.base > self.version {
            return self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!("base {} is ahead of the document, which is at version {}", sub.base, self.version),
            );
        }
        if self.version - sub.base > limits.max_base_lag {
            return self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!(
                    "base {} is {} versions behind the document; the limit is {}: reload the document",
                    sub.base,
                    self.version - sub.base,
                    limits.max_base_lag
                ),
            );
        }
        let inserted = sub.op.inserted_chars();
        if inserted > limits.max_op_insert_chars {
            return self.reject(
                sub,
                ErrorCode::TooLarge,
                format!("the op inserts {inserted} characters; the limit is {}", limits.max_op_insert_chars),
            );
        }

        let op = match self.transform_to_head(sub, fetched, limits) {
            Ok(op) => op,
            Err(decision) => {
                if !matches!(decision, Decision::NeedHistory { .. }) {
                    self.late = None;
                }
                return decision;
            }
        };
        if op.base_len() != self.text_chars {
            return self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!(
                    "the op spans {} characters but version {} has {}",
                    sub.op.base_len(),
                    sub.base,
                    self.text_chars
                ),
            );
        }
        if op.target_len() > limits.max_document_chars {
            return self.reject(
                sub,
                ErrorCode::TooLarge,
                format!(
                    "the document would have {} characters; the limit is {}",
                    op.target_len(),
                    limits.max_document_chars
                ),
            );
        }
        op.apply_to_rope(&mut self.text).expect("the op's base length was checked against the text");
        self.text_chars = op.target_len();
        self.version += 1;
        self.remember(&sub.client, sub.seq, Outcome::Committed { version: self.version });
        self.push_window(WindowEntry { client: sub.client.clone(), seq: sub.seq, op: op.clone() });
        self.trim_window(limits.history_window);
        Decision::Commit(CommittedEvent {
            author: sub.author.clone(),
            doc: self.doc.clone(),
            version: self.version,
            client: sub.client.clone(),
            seq: sub.seq,
            op,
        })
    }

    /// Forgets the document: text, history window, clients, a late op in progress and the snapshot
    /// counter. After it, an op resubmitted from before is judged like any op of a client the
    /// document never saw: a seq other than 1 skips ahead and a base above the new version is ahead
    /// of the document (both refused, `invalid_op`); it is never acknowledged with a purged version.
    fn delete(&mut self, sub: &Submission) -> Decision {
        let deleted =
            DocumentDeleted { doc: self.doc.clone(), last_version: self.version, author: sub.author.clone() };
        *self = Self::new(self.doc.clone());
        Decision::Delete(deleted)
    }

    /// Everything up to `version` is in the store: the window may now drop it.
    pub fn mark_durable(&mut self, version: u64, limits: &Limits) {
        self.durable_version = self.durable_version.max(version.min(self.version));
        self.trim_window(limits.history_window);
    }

    /// Everything decided so far (events and rejections) is in the store: the window may drop what
    /// is beyond its length, and the least recently seen clients beyond [`Limits::max_clients`] are
    /// forgotten (their outcomes are in the store, where [`Decision::NeedClient`] finds them).
    pub fn all_durable(&mut self, limits: &Limits) {
        self.mark_durable(self.version, limits);
        self.forget_clients(limits.max_clients);
    }

    /// A snapshot of the current state, if `every` versions have passed since the last one.
    pub fn snapshot_due(&mut self, every: u64) -> Option<Snapshot> {
        if every == 0 || self.version < self.snapshot_version + every || self.durable_version < self.version {
            return None;
        }
        self.snapshot_version = self.version;
        Some(Snapshot {
            doc: self.doc.clone(),
            version: self.version,
            text: self.text.to_string(),
            clients: self
                .clients
                .iter()
                .filter(|(_, r)| r.record.seq > 0)
                .map(|(c, r)| (c.clone(), r.record.clone()))
                .collect(),
        })
    }

    /// Transforms the submitted op against every op committed after its base, one at a time in
    /// version order, as PROTOCOL.md fixes (never against their composition: ties could differ).
    ///
    /// History older than the window comes from the store one page at a time
    /// ([`Decision::NeedHistory`]); the op transformed so far is kept in `late` between pages.
    fn transform_to_head(
        &mut self,
        sub: &Submission,
        fetched: Fetched<'_>,
        limits: &Limits,
    ) -> Result<Operation, Decision> {
        let mut op = sub.op.clone();
        let mut through = sub.base;
        if sub.base < self.window_start {
            if let Some(late) = self.late.take().filter(|late| {
                late.client == sub.client
                    && late.seq == sub.seq
                    && late.base == sub.base
                    && late.submitted == sub.op
            }) {
                (op, through) = (late.op, late.through);
            }
            if let Fetched::History(page) = fetched {
                let expected = through + 1..=through + page.len() as u64;
                if page.is_empty()
                    || !page.iter().map(|e| e.version).eq(expected)
                    || through + page.len() as u64 > self.window_start
                {
                    // A store hiccup, not the client's fault: refuse without using the seq up.
                    return Err(self.refuse(
                        sub,
                        ErrorCode::Unavailable,
                        format!("the history after version {} could not be read; resend the op", sub.base),
                    ));
                }
                for event in page {
                    op = self.transform_one(sub, op, &event.op)?;
                }
                through += page.len() as u64;
            }
            if through < self.window_start {
                let page = limits.history_window.max(1) as u64;
                let up_to = self.window_start.min(through + page);
                self.late = Some(LateOp {
                    client: sub.client.clone(),
                    seq: sub.seq,
                    base: sub.base,
                    submitted: sub.op.clone(),
                    op,
                    through,
                });
                return Err(Decision::NeedHistory { after: through, up_to });
            }
        }
        let skip = through.saturating_sub(self.window_start) as usize;
        let window = std::mem::take(&mut self.window);
        let result =
            window.iter().skip(skip).try_fold(op, |op, entry| self.transform_one(sub, op, &entry.op));
        self.window = window;
        result
    }

    fn transform_one(
        &mut self,
        sub: &Submission,
        op: Operation,
        committed: &Operation,
    ) -> Result<Operation, Decision> {
        match Operation::transform(&op, committed) {
            Ok((transformed, _)) => Ok(transformed),
            Err(_) => Err(self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!(
                    "the op spans {} characters but version {} has {}",
                    sub.op.base_len(),
                    sub.base,
                    committed.base_len()
                ),
            )),
        }
    }

    fn resubmission(&mut self, sub: &Submission, last: u64, fetched: Fetched<'_>) -> Decision {
        let outcome = if sub.seq == last {
            self.clients.get(&sub.client).map(|r| r.record.outcome.clone())
        } else if let Some(version) = self.window_version_of(&sub.client, sub.seq) {
            Some(Outcome::Committed { version })
        } else {
            match fetched {
                Fetched::Outcome(outcome) => outcome.cloned(),
                _ => return Decision::NeedOutcome,
            }
        };
        match outcome {
            Some(Outcome::Committed { version }) => Decision::Duplicate { version },
            Some(Outcome::Rejected { code, message }) => self.refuse(sub, code, message),
            None => self.refuse(
                sub,
                ErrorCode::InvalidOp,
                format!("seq {} was already used; the next seq is {}", sub.seq, last.saturating_add(1)),
            ),
        }
    }

    fn window_version_of(&self, client: &ClientId, seq: u64) -> Option<u64> {
        self.window
            .iter()
            .position(|e| e.seq == seq && &e.client == client)
            .map(|i| self.window_start + 1 + i as u64)
    }

    /// A refusal of `sub` at the document's current version.
    fn rejection(&self, sub: &Submission, code: ErrorCode, message: String) -> Rejection {
        Rejection {
            doc: self.doc.clone(),
            client: sub.client.clone(),
            seq: sub.seq,
            code,
            message,
            at_version: self.version,
        }
    }

    /// Refuses without recording anything: the same `seq` may be sent again.
    fn refuse(&self, sub: &Submission, code: ErrorCode, message: String) -> Decision {
        Decision::Reject { rejection: self.rejection(sub, code, message), new: false }
    }

    fn reject(&mut self, sub: &Submission, code: ErrorCode, message: String) -> Decision {
        // A refused op uses its seq up, so the client's next op is seq + 1 (PROTOCOL.md).
        self.remember(&sub.client, sub.seq, Outcome::Rejected { code, message: message.clone() });
        Decision::Reject { rejection: self.rejection(sub, code, message), new: true }
    }

    /// Records `seq` as the client's latest, unless a later one is already known (replays of stored
    /// events and rejections arrive in two streams and may interleave).
    fn remember(&mut self, client: &ClientId, seq: u64, outcome: Outcome) {
        let used = self.uses;
        match self.clients.get_mut(client) {
            Some(known) if known.record.seq >= seq => {}
            Some(known) => *known = Remembered { record: ClientRecord { seq, outcome }, used },
            None => {
                self.clients
                    .insert(client.clone(), Remembered { record: ClientRecord { seq, outcome }, used });
            }
        }
    }

    /// Forgets the least recently seen clients beyond `keep`, down to seven eighths of it (so the
    /// selection is not repeated for every new client). Only for clients whose outcomes are all in
    /// the store: see [`DocumentState::all_durable`].
    fn forget_clients(&mut self, keep: usize) {
        if self.clients.len() <= keep {
            return;
        }
        let target = keep - keep / 8;
        let mut by_use: Vec<(u64, ClientId)> =
            self.clients.iter().map(|(c, r)| (r.used, c.clone())).collect();
        let forget = by_use.len() - target;
        if forget < by_use.len() {
            by_use.select_nth_unstable_by_key(forget, |(used, _)| *used);
        }
        for (_, client) in by_use.into_iter().take(forget) {
            self.clients.remove(&client);
        }
        self.clients_complete = false;
    }

    fn push_window(&mut self, entry: WindowEntry) {
        self.window_cost += entry.cost();
        self.window.push_back(entry);
    }

    fn trim_window(&mut self, keep: usize) {
        while self.window.len() > keep && self.window_start < self.durable_version {
            if let Some(entry) = self.window.pop_front() {
                self.window_cost -= entry.cost();
            }
            self.window_start += 1;
        }
    }
}

/// The stored history of a document does not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot load document: {0}")]
pub struct LoadError(pub String);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod delete_tests;
