//! A [`DocumentClient`] written down and read back, so that edits made offline survive a restart of
//! the process (the same content as the JS client's `DocumentState#toJSON`).
//!
//! Only what the next process needs to carry on: the local text, the server version, the next `seq`,
//! the op in flight exactly as sent (a resubmission must repeat it) with what it still changes, the
//! buffer, and how many edits those carry. The server text is not kept apart: it is the local text
//! without the op in flight and the buffer, so the two always fit together. The undo history is not
//! kept (its steps were made for a session that is gone). Pure: the file I/O is the connection's.

use ropey::Rope;
use serde::{Deserialize, Serialize};
use tandem_ot::Operation;
use tandem_protocol::DocId;

use super::{DocumentClient, OutgoingOp, State};
use crate::undo::{UndoHistory, UndoOptions};
use crate::ClientError;

/// The saved state of one document ([`DocumentClient::to_saved`], [`DocumentClient::from_saved`]).
/// Serialisable with serde; its fields are public so that a store can inspect them, but a state put
/// together by hand is only taken if it fits together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDocument {
    /// The document id.
    pub doc: DocId,
    /// The local text: the server text at `version` with the op in flight and the buffer applied.
    pub text: String,
    /// The last server version this client had.
    pub version: u64,
    /// The `seq` the next op will carry.
    pub next_seq: u64,
    /// The op in flight, if any.
    pub in_flight: Option<SavedInFlight>,
    /// Local edits made while the op was in flight, composed; only with an op in flight.
    pub buffer: Option<Operation>,
    /// How many local edits the op in flight carries (at least 1 when there is one, else 0).
    pub in_flight_edits: u64,
    /// How many local edits the buffer carries (at least 1 when there is one, else 0).
    pub buffer_edits: u64,
}

/// The op in flight of a [`SavedDocument`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInFlight {
    /// Its `seq`, as sent.
    pub seq: u64,
    /// Its `base`, as sent.
    pub base: u64,
    /// The op exactly as sent: what a resubmission repeats (the server applies a (client, seq) once).
    pub sent: Operation,
    /// The op transformed against every op received since it was sent: what it still changes
    /// relative to the server text at `version`, and what later remote ops are transformed against.
    pub pending: Operation,
}

impl DocumentClient {
    /// Everything needed to carry on in another process ([`DocumentClient::from_saved`]). Costs a copy
    /// of the text.
    pub fn to_saved(&self) -> SavedDocument {
        let (in_flight, buffer) = match &self.state {
            State::Synced => (None, None),
            State::AwaitingAck { sent, pending } => (Some(saved_in_flight(sent, pending)), None),
            State::AwaitingWithBuffer { sent, pending, buffer } => {
                (Some(saved_in_flight(sent, pending)), Some(buffer.clone()))
            }
        };
        SavedDocument {
            doc: self.doc.clone(),
            text: self.text.to_string(),
            version: self.version,
            next_seq: self.next_seq,
            in_flight,
            buffer,
            in_flight_edits: self.in_flight_edits,
            buffer_edits: self.buffer_edits,
        }
    }

    /// The client a [`SavedDocument`] describes, with an empty undo history and the default undo
    /// limits (see [`DocumentClient::with_undo_options`]). Its op in flight is resent, unchanged, by
    /// [`DocumentClient::resubmission`] once a reopen with `since` = [`version`](Self::version)
    /// has shown it was not committed.
    ///
    /// A state that does not fit together is refused with [`ClientError::SavedState`] naming what is
    /// wrong, never repaired by guessing: a buffer without an op in flight, an in-flight `seq` that is
    /// not below `next_seq` or a `base` after `version`, ops whose lengths do not lead to the text,
    /// edit counts that do not match what is pending.
    pub fn from_saved(saved: SavedDocument) -> Result<Self, ClientError> {
        check(&saved).map_err(|problem| ClientError::SavedState { doc: saved.doc.clone(), problem })?;
        let SavedDocument { doc, text, version, next_seq, in_flight, buffer, in_flight_edits, buffer_edits } =
            saved;
        let state = match (in_flight, buffer) {
            (None, _) => State::Synced,
            (Some(f), buffer) => {
                let sent = OutgoingOp { doc: doc.clone(), seq: f.seq, base: f.base, op: f.sent };
                match buffer {
                    None => State::AwaitingAck { sent, pending: f.pending },
                    Some(buffer) => State::AwaitingWithBuffer { sent, pending: f.pending, buffer },
                }
            }
        };
        Ok(Self {
            doc,
            text: Rope::from_str(&text),
            version,
            next_seq,
            state,
            history: UndoHistory::new(UndoOptions::default()),
            in_flight_edits,
            buffer_edits,
        })
    }
}

fn saved_in_flight(sent: &OutgoingOp, pending: &Operation) -> SavedInFlight {
    SavedInFlight { seq: sent.seq, base: sent.base, sent: sent.op.clone(), pending: pending.clone() }
}

/// What is wrong with a saved state, if anything.
fn check(saved: &SavedDocument) -> Result<(), String> {
    let text_len = saved.text.chars().count();
    if saved.next_seq == 0 {
        return Err("next_seq is 0; seqs start at 1".into());
    }
    let Some(f) = &saved.in_flight else {
        if saved.buffer.is_some() {
            return Err("a buffer without an op in flight (edits are buffered only behind one)".into());
        }
        if (saved.in_flight_edits, saved.buffer_edits) != (0, 0) {
            return Err(format!(
                "nothing in flight, but {} + {} edits counted as pending",
                saved.in_flight_edits, saved.buffer_edits
            ));
        }
        return Ok(());
    };
    if f.seq == 0 || f.seq >= saved.next_seq {
        return Err(format!(
            "the op in flight has seq {}, but seqs start at 1 and next_seq is {}",
            f.seq, saved.next_seq
        ));
    }
    if f.base > saved.version {
        return Err(format!(
            "the op in flight is based on version {} after version {}",
            f.base, saved.version
        ));
    }
    if f.base == saved.version && f.pending != f.sent {
        // Nothing was received since it was sent, so nothing can have transformed it.
        return Err(format!(
            "no version after its base {}, yet the pending op differs from the sent one",
            f.base
        ));
    }
    // The local text is the server text + pending + buffer: the lengths must chain up to it.
    let after_pending = match &saved.buffer {
        Some(buffer) => {
            if buffer.target_len() != text_len {
                return Err(format!(
                    "the buffer makes a text of {} characters, but the text has {text_len}",
                    buffer.target_len()
                ));
            }
            buffer.base_len()
        }
        None => text_len,
    };
    if f.pending.target_len() != after_pending {
        return Err(format!(
            "the pending op makes a text of {} characters, but {after_pending} are needed",
            f.pending.target_len()
        ));
    }
    if saved.in_flight_edits == 0 {
        return Err("an op in flight that carries no edit (in_flight_edits is 0)".into());
    }
    if saved.buffer.is_some() != (saved.buffer_edits > 0) {
        return Err(format!(
            "buffer_edits is {} for {} buffer",
            saved.buffer_edits,
            if saved.buffer.is_some() { "a" } else { "no" }
        ));
    }
    Ok(())
}
