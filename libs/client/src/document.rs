//! The client state machine of PROTOCOL.md for one document, in the style of ot.js `Client`.
//!
//! Pure: no I/O, no async. The connection layer feeds it what arrives (`op`, `ack`, `snapshot`) and
//! sends what it returns ([`OutgoingOp`]); tests drive it directly against a model server.
//!
//! At most one op per document is unacknowledged ("in flight"). Edits made meanwhile are composed into
//! one buffer, sent when the in-flight op is acknowledged. Every received op is transformed against the
//! in-flight op and then the buffer (`transform(own, received)`, as the protocol fixes the tie-break),
//! so the local text always equals "server text + own unacknowledged edits".
//!
//! Undo and redo ([`DocumentClient::undo`], [`DocumentClient::redo`]) revert this client's own edits
//! only, as ot.js `UndoManager` does; the rules are in the `undo` module and in the crate docs.

use std::time::Instant;

use ropey::Rope;
use serde::Serialize;
use tandem_ot::{Operation, OtError};
use tandem_protocol::ws::ClientMessage;
use tandem_protocol::DocId;

use crate::undo::{UndoHistory, UndoOptions};
use crate::ClientError;

#[path = "document_saved.rs"]
mod saved;

pub use saved::{SavedDocument, SavedInFlight};

/// An `op` message to send: kept exactly as first sent, because after a reconnect the protocol requires
/// the unacknowledged op to be resubmitted with the same `seq`, `base` and `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingOp {
    /// The document the op edits.
    pub doc: DocId,
    /// Per client and document, 1, 2, 3…; a repeated `seq` tells the server this is a resubmission.
    pub seq: u64,
    /// The version the op applies to.
    pub base: u64,
    /// The operation on the text at `base`.
    pub op: Operation,
}

impl OutgoingOp {
    /// The protocol message, for code that works with [`ClientMessage`].
    pub fn to_message(&self) -> ClientMessage {
        ClientMessage::Op { doc: self.doc.clone(), seq: self.seq, base: self.base, op: self.op.clone() }
    }

    /// The text frame to send, serialised straight from the fields (no intermediate JSON value: a
    /// load generator sends tens of thousands of these a second).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            r#type: &'static str,
            doc: &'a DocId,
            seq: u64,
            base: u64,
            op: &'a Operation,
        }
        let frame = Frame { r#type: "op", doc: &self.doc, seq: self.seq, base: self.base, op: &self.op };
        serde_json::to_string(&frame).expect("an op frame always encodes as JSON")
    }
}

/// Where the document stands with respect to the server.
#[derive(Debug, Clone)]
enum State {
    /// Every local edit is acknowledged.
    Synced,
    /// One op is in flight.
    AwaitingAck {
        /// The op as sent (for resubmission).
        sent: OutgoingOp,
        /// The in-flight op transformed against every op received since it was sent: what it still
        /// changes relative to the current server version.
        pending: Operation,
    },
    /// One op is in flight and later edits wait, composed, in `buffer`.
    AwaitingWithBuffer { sent: OutgoingOp, pending: Operation, buffer: Operation },
}

/// An edit made by [`DocumentClient::undo`] or [`DocumentClient::redo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEdit {
    /// The op applied to the local text, so that an editor can move carets and selections with it.
    pub op: Operation,
    /// The op to send now, as [`DocumentClient::local_edit`] returns it: `None` when an op is in
    /// flight and this edit waits in the buffer.
    pub outgoing: Option<OutgoingOp>,
}

/// One document as one client sees it: the text with its own edits applied, the last server version it
/// has, the next `seq`, and what is unacknowledged.
///
/// The text is a rope so that edits cost O(log n) even on large documents, which matters for a load
/// generator running thousands of clients.
#[derive(Debug, Clone)]
pub struct DocumentClient {
    doc: DocId,
    text: Rope,
    version: u64,
    next_seq: u64,
    state: State,
    history: UndoHistory,
    /// How many local edits the op in flight and the buffer carry ("3 edits waiting").
    in_flight_edits: u64,
    buffer_edits: u64,
}

impl DocumentClient {
    /// Starts from a `snapshot`: the text at `version`, nothing in flight, first `seq` 1.
    pub fn new(doc: DocId, version: u64, text: &str) -> Self {
        Self {
            doc,
            text: Rope::from_str(text),
            version,
            next_seq: 1,
            state: State::Synced,
            history: UndoHistory::new(UndoOptions::default()),
            in_flight_edits: 0,
            buffer_edits: 0,
        }
    }

    /// Sets the limits of the undo history (default: [`UndoOptions::default`]); steps beyond a smaller
    /// depth are dropped, oldest first.
    pub fn with_undo_options(mut self, options: UndoOptions) -> Self {
        self.history.set_options(options);
        self
    }

    /// The limits of the undo history.
    pub fn undo_options(&self) -> UndoOptions {
        self.history.options()
    }

    /// The document id.
    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    /// The local text: the server text at [`version`](Self::version) plus this client's unacknowledged
    /// edits.
    pub fn text(&self) -> String {
        self.text.to_string()
    }

    /// Length of the local text in characters (Unicode scalar values): the base length a new local
    /// edit must have.
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }

    /// The last server version received (by `snapshot`, `op` or `ack`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The `seq` the next op will carry. Never goes back, even across [`reset`](Self::reset).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// True when nothing is in flight and nothing is buffered: every local edit is committed.
    pub fn is_synced(&self) -> bool {
        matches!(self.state, State::Synced)
    }

    /// Local edits not yet acknowledged: carried by the op in flight or waiting in the buffer (an
    /// undo or redo counts as one edit). Zero exactly when [`is_synced`](Self::is_synced).
    pub fn pending_edits(&self) -> u64 {
        self.in_flight_edits + self.buffer_edits
    }

    /// The `seq` of the op in flight, if any.
    pub fn in_flight_seq(&self) -> Option<u64> {
        match &self.state {
            State::Synced => None,
            State::AwaitingAck { sent, .. } | State::AwaitingWithBuffer { sent, .. } => Some(sent.seq),
        }
    }

    /// Applies a local edit to the text. Returns the op to send now if nothing was in flight; otherwise
    /// the edit is composed into the buffer and `None` is returned. An edit that does not fit the local
    /// text is refused and changes nothing.
    ///
    /// The edit's inverse goes onto the undo stack (see [`undo`](Self::undo)), timed by the clock:
    /// [`local_edit_at`](Self::local_edit_at) takes the time from the caller.
    pub fn local_edit(&mut self, op: Operation) -> Result<Option<OutgoingOp>, ClientError> {
        self.local_edit_at(op, Instant::now())
    }

    /// [`local_edit`](Self::local_edit) made at `at`, which decides whether the edit joins the undo
    /// step of the previous one (a typing run within [`UndoOptions::group_window`]); for simulations
    /// and tests that run on their own clock.
    pub fn local_edit_at(&mut self, op: Operation, at: Instant) -> Result<Option<OutgoingOp>, ClientError> {
        check_fits(&op, &self.text)?;
        if !self.history.keeps_steps() {
            // No history (depth 0): the inverse would be computed only to be dropped.
            return self.submit(op);
        }
        let inverse = op.invert_rope(&self.text)?;
        let out = self.submit(op)?;
        self.history.record(inverse, at);
        Ok(out)
    }

    /// Reverts this client's most recent undo step (a local edit, or a typing run of them) that is not
    /// undone yet, as a new local edit: applied to the text and sent (or buffered) like any other.
    /// Returns `None` when there is nothing to undo.
    ///
    /// Other clients' edits are never reverted: the step was transformed against each of them as they
    /// arrived, so it removes only what this client inserted and is still there, and restores what
    /// this client deleted (see the crate docs for the exact rule). The next local edit starts a new
    /// step; the undo can be redone until then.
    pub fn undo(&mut self) -> Result<Option<HistoryEdit>, ClientError> {
        let Some(op) = self.history.next_undo().cloned() else { return Ok(None) };
        let inverse = op.invert_rope(&self.text)?;
        let outgoing = self.submit(op.clone())?;
        self.history.undone(inverse);
        Ok(Some(HistoryEdit { op, outgoing }))
    }

    /// Applies the most recently undone step again, as a new local edit. Returns `None` when there is
    /// nothing to redo: nothing was undone, or a local edit was made since.
    pub fn redo(&mut self) -> Result<Option<HistoryEdit>, ClientError> {
        let Some(op) = self.history.next_redo().cloned() else { return Ok(None) };
        let inverse = op.invert_rope(&self.text)?;
        let outgoing = self.submit(op.clone())?;
        self.history.redone(inverse);
        Ok(Some(HistoryEdit { op, outgoing }))
    }

    /// True when [`undo`](Self::undo) has a step to revert.
    pub fn can_undo(&self) -> bool {
        self.history.can_undo()
    }

    /// True when [`redo`](Self::redo) has a step to apply again.
    pub fn can_redo(&self) -> bool {
        self.history.can_redo()
    }

    /// Makes the next local edit start a new undo step even if it continues the previous one (for an
    /// editor's own notion of a step, such as a word boundary, a paste or a moved caret).
    pub fn break_undo_group(&mut self) {
        self.history.break_group();
    }

    /// Steps on the undo stack, for tests.
    #[cfg(test)]
    pub(crate) fn undo_len(&self) -> usize {
        self.history.undo_len()
    }

    /// Applies an op on the local text and sends or buffers it: a local edit without its history.
    fn submit(&mut self, op: Operation) -> Result<Option<OutgoingOp>, ClientError> {
        // The text is "server + pending + buffer", so an op of the text's length also composes with
        // the buffer; checking first means nothing changes on failure.
        check_fits(&op, &self.text)?;
        match &mut self.state {
            State::Synced => {
                apply(&op, &mut self.text)?;
                self.in_flight_edits = 1;
                return Ok(Some(self.send(op)));
            }
            State::AwaitingWithBuffer { buffer, .. } => {
                *buffer = buffer.compose(&op)?;
            }
            State::AwaitingAck { .. } => {
                if let State::AwaitingAck { sent, pending } =
                    std::mem::replace(&mut self.state, State::Synced)
                {
                    self.state = State::AwaitingWithBuffer { sent, pending, buffer: op.clone() };
                }
            }
        }
        apply(&op, &mut self.text)?;
        self.buffer_edits += 1;
        Ok(None)
    }

    /// Takes another client's op, committed as `version`, which applies to the server text at
    /// `version - 1`. Returns the op as applied to the local text (transformed past the own
    /// unacknowledged edits), so that a UI can move cursors and selections with it. The undo and redo
    /// stacks are transformed against it.
    ///
    /// `version` must be exactly one more than [`version`](Self::version): PROTOCOL.md delivers every
    /// version once and in order, and anything else is [`ClientError::VersionGap`]. On error nothing
    /// changes.
    pub fn on_remote_op(&mut self, version: u64, op: &Operation) -> Result<Operation, ClientError> {
        self.check_version(version)?;
        // Transform into locals first: nothing may change if a transform fails.
        let (applied, pending, buffer) = match &self.state {
            State::Synced => (op.clone(), None, None),
            State::AwaitingAck { pending, .. } => {
                let (pending, op) = Operation::transform(pending, op)?;
                (op, Some(pending), None)
            }
            State::AwaitingWithBuffer { pending, buffer, .. } => {
                let (pending, op) = Operation::transform(pending, op)?;
                let (buffer, op) = Operation::transform(buffer, &op)?;
                (op, Some(pending), Some(buffer))
            }
        };
        let history = self.history.transformed(&applied)?;
        apply(&applied, &mut self.text)?;
        if let (
            State::AwaitingAck { pending: p, .. } | State::AwaitingWithBuffer { pending: p, .. },
            Some(new),
        ) = (&mut self.state, pending)
        {
            *p = new;
        }
        if let (State::AwaitingWithBuffer { buffer: b, .. }, Some(new)) = (&mut self.state, buffer) {
            *b = new;
        }
        self.history = history;
        self.version = version;
        Ok(applied)
    }

    /// Takes the `ack` of the in-flight op, committed as `version`. If edits were buffered meanwhile,
    /// returns them as the next op to send (next `seq`, `base` = `version`).
    ///
    /// `seq` must be the in-flight op's and `version` exactly one more than
    /// [`version`](Self::version); otherwise the server broke the protocol and nothing changes.
    pub fn on_ack(&mut self, seq: u64, version: u64) -> Result<Option<OutgoingOp>, ClientError> {
        let in_flight = self.in_flight_seq();
        if in_flight != Some(seq) {
            return Err(ClientError::UnexpectedAck { doc: self.doc.clone(), seq, in_flight });
        }
        self.check_version(version)?;
        self.version = version;
        self.in_flight_edits = std::mem::take(&mut self.buffer_edits);
        match std::mem::replace(&mut self.state, State::Synced) {
            State::Synced | State::AwaitingAck { .. } => Ok(None),
            State::AwaitingWithBuffer { buffer, .. } => Ok(Some(self.send(buffer))),
        }
    }

    /// The in-flight op exactly as it was first sent, to resend after a reconnect once `opened` has
    /// shown it was not committed (a committed one would have come back as `ack` during catch-up).
    pub fn resubmission(&self) -> Option<OutgoingOp> {
        match &self.state {
            State::Synced => None,
            State::AwaitingAck { sent, .. } | State::AwaitingWithBuffer { sent, .. } => Some(sent.clone()),
        }
    }

    /// Starts over from a fresh `snapshot` after the server rejected the in-flight op (`invalid_op`):
    /// the in-flight op and the buffer are discarded, as PROTOCOL.md requires, but `seq` continues,
    /// because the rejected op used its `seq` up. The undo history is cleared: its steps were made
    /// for a text the snapshot replaced.
    pub fn reset(&mut self, version: u64, text: &str) {
        self.text = Rope::from_str(text);
        self.version = version;
        self.state = State::Synced;
        self.in_flight_edits = 0;
        self.buffer_edits = 0;
        self.history.clear();
    }

    /// The server dropped the in-flight op without using its `seq` up (`forbidden`: it never reached
    /// the document), so the next op takes that `seq` again. Call before [`reset`](Self::reset).
    pub fn reuse_in_flight_seq(&mut self) {
        if let Some(seq) = self.in_flight_seq() {
            self.next_seq = seq;
        }
    }

    fn check_version(&self, version: u64) -> Result<(), ClientError> {
        let expected = self.version + 1;
        if version == expected {
            Ok(())
        } else {
            Err(ClientError::VersionGap { doc: self.doc.clone(), expected, got: version })
        }
    }

    /// Puts `op` in flight with the next `seq`, based on the current version.
    fn send(&mut self, op: Operation) -> OutgoingOp {
        let sent =
            OutgoingOp { doc: self.doc.clone(), seq: self.next_seq, base: self.version, op: op.clone() };
        self.next_seq += 1;
        self.state = State::AwaitingAck { sent: sent.clone(), pending: op };
        sent
    }
}

/// Refuses an op whose base length is not the text's.
fn check_fits(op: &Operation, text: &Rope) -> Result<(), ClientError> {
    if op.base_len() == text.len_chars() {
        Ok(())
    } else {
        Err(OtError::BaseLengthMismatch { expected: op.base_len(), actual: text.len_chars() }.into())
    }
}

/// Applies `op` to `text`; on a length mismatch `text` is left untouched.
fn apply(op: &Operation, text: &mut Rope) -> Result<(), ClientError> {
    op.apply_to_rope(text)?;
    Ok(())
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "document_saved_tests.rs"]
mod saved_tests;

#[cfg(test)]
#[path = "undo_tests.rs"]
mod undo_tests;
