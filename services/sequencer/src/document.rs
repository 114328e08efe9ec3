//! The document state machine: a pure function of (state, submitted op) → (state, decision).
//!
//! It holds what the sequencer needs to order one document: the text, the version, a bounded window
//! of recent committed ops to transform late ops against, and the last `seq` of every client so a
//! resubmission is recognised. All I/O stays outside: when it needs older history or an old outcome
//! than it keeps, it says so ([`Decision::NeedHistory`], [`Decision::NeedOutcome`]) and the caller
//! fetches it from the store and asks again.

use std::collections::{HashMap, VecDeque};

use ropey::Rope;
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection, Submission};
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
    /// from the store.
    pub history_window: usize,
    /// Oldest `base` accepted, in versions behind the document: transforming against a longer history
    /// would stall every document of the partition for one op.
    pub max_base_lag: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_chars: 10_000_000,
            max_op_insert_chars: 1_000_000,
            history_window: 1_000,
            max_base_lag: 100_000,
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
    /// The op is refused. `new` is false when this is a resubmission of an op refused before: the
    /// same error again, nothing to store.
    Reject { rejection: Rejection, new: bool },
    /// The op's base is older than the window: call again with the events `after < v <= up_to`.
    NeedHistory { after: u64, up_to: u64 },
    /// A resubmission of a `seq` older than the client's last: call again with its stored outcome.
    NeedOutcome,
}

/// Extra input for a second call after [`Decision::NeedHistory`] or [`Decision::NeedOutcome`].
#[derive(Debug, Clone, Copy)]
pub enum Fetched<'a> {
    Nothing,
    /// The events the state machine asked for.
    History(&'a [CommittedEvent]),
    /// The stored outcome of the resubmitted `seq`, if the store has one.
    Outcome(Option<&'a Outcome>),
}

/// One committed op kept in the window.
#[derive(Debug, Clone)]
struct WindowEntry {
    client: ClientId,
    seq: u64,
    op: Operation,
}

/// The in-memory state of one document, owned by its partition's sequencer.
#[derive(Debug, Clone)]
pub struct DocumentState {
    doc: DocId,
    version: u64,
    text: Rope,
    /// Committed ops with versions `window_start + 1 ..= version`, oldest first.
    window: VecDeque<WindowEntry>,
    window_start: u64,
    /// The highest version known to be in the store. Ops above it are never dropped from the window,
    /// so a late op can always be transformed without reading uncommitted history from the store.
    durable_version: u64,
    clients: HashMap<ClientId, ClientRecord>,
    snapshot_version: u64,
}

impl DocumentState {
    /// A document that was never written: empty text at version 0.
    pub fn new(doc: DocId) -> Self {
        Self {
            doc,
            version: 0,
            text: Rope::new(),
            window: VecDeque::new(),
            window_start: 0,
            durable_version: 0,
            clients: HashMap::new(),
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
            state.clients = snapshot.clients.into_iter().collect();
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
            state.version = event.version;
            state.remember(&event.client, event.seq, Outcome::Committed { version: event.version });
            state.window.push_back(WindowEntry { client: event.client, seq: event.seq, op: event.op });
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

    /// Decides what to do with a submitted op, advancing the state when it commits.
    ///
    /// Call with [`Fetched::Nothing`] first; on `NeedHistory` or `NeedOutcome`, fetch what it asks
    /// for and call again with it.
    pub fn decide(&mut self, sub: &Submission, limits: &Limits, fetched: Fetched<'_>) -> Decision {
        debug_assert_eq!(sub.doc, self.doc, "a submission routed to the wrong document");
        let last = self.clients.get(&sub.client).map(|r| r.seq).unwrap_or(0);
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

        let op = match self.transform_to_head(sub, fetched) {
            Ok(op) => op,
            Err(decision) => return decision,
        };
        if op.base_len() != self.text.len_chars() {
            return self.reject(
                sub,
                ErrorCode::InvalidOp,
                format!(
                    "the op spans {} characters but version {} has {}",
                    sub.op.base_len(),
                    sub.base,
                    self.text.len_chars()
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
        self.version += 1;
        self.remember(&sub.client, sub.seq, Outcome::Committed { version: self.version });
        self.window.push_back(WindowEntry { client: sub.client.clone(), seq: sub.seq, op: op.clone() });
        self.trim_window(limits.history_window);
        Decision::Commit(CommittedEvent {
            doc: self.doc.clone(),
            version: self.version,
            client: sub.client.clone(),
            seq: sub.seq,
            op,
        })
    }

    /// Everything up to `version` is in the store: the window may now drop it.
    pub fn mark_durable(&mut self, version: u64, limits: &Limits) {
        self.durable_version = self.durable_version.max(version.min(self.version));
        self.trim_window(limits.history_window);
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
            clients: self.clients.iter().map(|(c, r)| (c.clone(), r.clone())).collect(),
        })
    }

    /// Transforms the submitted op against every op committed after its base, one at a time in
    /// version order, as PROTOCOL.md fixes (never against their composition: ties could differ).
    fn transform_to_head(&mut self, sub: &Submission, fetched: Fetched<'_>) -> Result<Operation, Decision> {
        let mut op = sub.op.clone();
        if sub.base < self.window_start {
            let Fetched::History(history) = fetched else {
                return Err(Decision::NeedHistory { after: sub.base, up_to: self.window_start });
            };
            let expected = sub.base + 1..=self.window_start;
            let versions = history.iter().map(|e| e.version);
            if !versions.eq(expected) {
                // A store hiccup, not the client's fault: refuse without using the seq up.
                return Err(self.refuse(
                    sub,
                    ErrorCode::Unavailable,
                    format!("the history after version {} could not be read; resend the op", sub.base),
                ));
            }
            for event in history {
                op = self.transform_one(sub, op, &event.op)?;
            }
        }
        let skip = sub.base.saturating_sub(self.window_start) as usize;
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
            self.clients.get(&sub.client).map(|r| r.outcome.clone())
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
        match self.clients.get_mut(client) {
            Some(record) if record.seq >= seq => {}
            Some(record) => *record = ClientRecord { seq, outcome },
            None => {
                self.clients.insert(client.clone(), ClientRecord { seq, outcome });
            }
        }
    }

    fn trim_window(&mut self, keep: usize) {
        while self.window.len() > keep && self.window_start < self.durable_version {
            self.window.pop_front();
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
