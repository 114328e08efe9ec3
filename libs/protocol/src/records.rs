//! What travels between services: a submitted op (gateway → sequencer), and what the sequencer
//! decided about it (sequencer → store and gateways).
//!
//! These are domain types; their protobuf forms for Kafka and gRPC convert to and from them at the
//! edge, so the sequencer and the gateway never see wire types.

use serde::{Deserialize, Serialize};
use tandem_ot::Operation;

use crate::{ClientId, DocId, ErrorCode};

/// One op as a client submitted it, after the gateway validated its shape and the client's
/// permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub doc: DocId,
    pub client: ClientId,
    /// The client's counter for this document: 1, 2, 3, … with no gap.
    pub seq: u64,
    /// The version the op was made against.
    pub base: u64,
    pub op: Operation,
    /// The authenticated user who submitted it, stamped at the edge (gateway or ingress), never
    /// chosen by the client. Recorded as the event's author; "" from producers that predate it.
    #[serde(default)]
    pub author: String,
    /// Instead of an op: delete the document (its owner purges it and publishes
    /// [`SequencedRecord::Deleted`]). `seq`, `base` and `op` are not used.
    #[serde(default)]
    pub delete_document: bool,
}

/// A committed change: version `version` of `doc` is the text of version `version - 1` with `op`
/// applied. Stored in the event log under primary key (doc, version), unique (doc, client, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEvent {
    pub doc: DocId,
    pub version: u64,
    pub client: ClientId,
    pub seq: u64,
    /// The op as transformed to apply on `version - 1`, in normal form.
    pub op: Operation,
    /// The authenticated user who submitted the op ([`Submission::author`]); "" for events
    /// committed before authors were recorded.
    #[serde(default)]
    pub author: String,
}

/// The tombstone of a deleted document: its events, snapshots and checkpoints are purged, and its
/// versions start again from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentDeleted {
    pub doc: DocId,
    /// The document's last version before it was deleted (0 if it had none).
    pub last_version: u64,
    /// The user who deleted it.
    pub author: String,
}

/// An op the sequencer refused. It uses up its `seq`, so it is stored too: a resubmission of the
/// same `seq` gets the same error again, even after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub doc: DocId,
    pub client: ClientId,
    pub seq: u64,
    pub code: ErrorCode,
    pub message: String,
    /// The document's version when the op was refused; orders the rejection among the events.
    pub at_version: u64,
}

/// What became of a client's `seq` on a document: remembered so a resubmission gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Committed { version: u64 },
    Rejected { code: ErrorCode, message: String },
}

/// One thing the sequencer publishes to the gateways, in the document's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SequencedRecord {
    /// A new version, for every subscriber of the document.
    Committed(CommittedEvent),
    /// A resubmitted op that was already committed: the author gets its `ack` again, unless it has
    /// already received that version.
    Reacknowledged { doc: DocId, client: ClientId, seq: u64, version: u64 },
    /// A refused op, for its author only.
    Rejected(Rejection),
    /// The document was deleted, for every subscriber of the document.
    Deleted(DocumentDeleted),
}

impl SequencedRecord {
    /// The document this record belongs to: the key it is partitioned and routed by.
    pub fn doc(&self) -> &DocId {
        match self {
            SequencedRecord::Committed(e) => &e.doc,
            SequencedRecord::Reacknowledged { doc, .. } => doc,
            SequencedRecord::Rejected(r) => &r.doc,
            SequencedRecord::Deleted(d) => &d.doc,
        }
    }
}
