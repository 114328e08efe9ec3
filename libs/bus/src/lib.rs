//! The logs between Tandem's services.
//!
//! Two streams connect the gateway and the sequencer:
//!
//! - **submitted ops** (Kafka topic `tandem.ops` in the distributed mode): gateways hand ops in through
//!   an [`OpSubmitter`]; the owner of each partition reads them in order through an [`OpConsumer`];
//! - **sequenced records** (topic `tandem.events`): the sequencer publishes what it committed through an
//!   [`EventPublisher`]; every gateway reads all of it through [`EventSubscriber::subscribe`].
//!
//! A third, ephemeral channel runs between gateways only: **presence** (topic `tandem.presence`,
//! [`presence::PresenceBus`]), where each editing session's selection is, best effort.
//!
//! Both streams are partitioned by document id, so one document's ops and records stay in order.
//! [`in_process`] implements them with channels for the single-process mode; the Kafka implementation
//! fits the same traits. Neither promises more than Kafka does: a reader may see a gap (a lagging
//! in-process subscriber, a lost record), and consumers repair gaps from the event store.

use std::sync::Arc;

use async_trait::async_trait;
use tandem_protocol::records::{SequencedRecord, Submission};
use tandem_protocol::{DocId, ErrorCode};

pub mod in_process;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod presence;

/// A partition of the op log; the unit of sequencer ownership.
pub type PartitionId = u32;

/// Why the bus could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus is full or unreachable now; the caller may retry later.
    #[error("the op log is not accepting ops now: {0}")]
    Unavailable(String),
    /// The bus has shut down; no retry will succeed.
    #[error("the bus is closed")]
    Closed,
    /// The op was refused for what it is (malformed, or a caller without write permission): resending
    /// the same op cannot succeed, so the client hears `code` rather than "resend later".
    #[error("the op log refused the op: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
}

/// Which partition a document's ops go to: a stable hash of its id, the same in every process.
pub fn partition_of(doc: &DocId, partitions: u32) -> PartitionId {
    // FNV-1a: stable across processes and builds, unlike std's randomly seeded hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in doc.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as PartitionId
}

/// The gateway's side of the op log.
#[async_trait]
pub trait OpSubmitter: Send + Sync + 'static {
    /// Appends an op to its document's partition. Returns once the log has it (durably, for Kafka:
    /// acks=all); an error means the op may not have been taken and the client should resend later,
    /// except [`BusError::Refused`]: the op was not taken and never will be.
    async fn submit(&self, submission: Submission) -> Result<(), BusError>;
}

/// One submitted op as read from its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRecord {
    pub partition: PartitionId,
    /// Position in the partition; the sequencer stores `offset + 1` with the batch it commits.
    pub offset: i64,
    pub submission: Submission,
    /// The W3C `traceparent` the op travelled with (the ingress's `ingress append` span), when its
    /// trace is on: the partition owner's spans for the op are its children (docs/TRACING.md).
    pub traceparent: Option<String>,
}

/// The reading side of one partition of the op log, owned by one sequencer task.
#[async_trait]
pub trait OpConsumer: Send + 'static {
    /// The partition this consumer reads.
    fn partition(&self) -> PartitionId;

    /// Waits until at least one op is available, then returns up to `max` ops that are ready without
    /// further waiting: the batch the sequencer commits together. `Err(Closed)` ends the partition.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<SubmissionRecord>, BusError>;

    /// Continues reading at `next_offset`: a new owner resumes exactly where the last commit (whose
    /// offset is stored with its events) ended, so no accepted op is skipped or sequenced twice.
    async fn seek(&mut self, next_offset: i64) -> Result<(), BusError>;

    /// Asked after the owner was fenced (another claim of the partition came after its own):
    /// whether the group has taken the partition from this member, waiting up to `grace` for the
    /// revocation to arrive. `false` means the partition is still this member's, so whoever fenced
    /// it claimed late (a member the partition was just revoked from, whose claim was still on its
    /// way), and the owner must claim it again: nobody else will until the next rebalance. The
    /// default, `true`, is for a bus without a group (the in-process one), where a fence is final.
    async fn revoked_within(&mut self, grace: std::time::Duration) -> bool {
        let _ = grace;
        true
    }
}

/// A record on its way to the record stream, with the trace context it goes out with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub record: SequencedRecord,
    /// The W3C `traceparent` of the owner's `publish` span for the op this record answers, when
    /// that op's trace is sampled; gateways make their `deliver` span its child.
    pub traceparent: Option<String>,
}

impl From<SequencedRecord> for Published {
    /// An untraced record.
    fn from(record: SequencedRecord) -> Self {
        Self { record, traceparent: None }
    }
}

/// The sequencer's side of the record stream.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes committed records, in order. Called only after they are committed to the store.
    async fn publish(&self, records: Vec<Published>) -> Result<(), BusError>;
}

/// What a gateway reads from the record stream.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next record. Shared: one record fans out to many subscribers without copies.
    Record {
        record: Arc<SequencedRecord>,
        /// The trace context it was published with (see [`Published::traceparent`]).
        traceparent: Option<Arc<str>>,
    },
    /// This reader fell behind and records were dropped; any document may have a gap to repair.
    Lagged(u64),
}

/// A gateway's view of the whole record stream.
#[async_trait]
pub trait EventStream: Send + 'static {
    /// The next delivery; `None` when the stream has ended for good.
    async fn next(&mut self) -> Option<Delivery>;
}

/// Opens readers of the record stream.
pub trait EventSubscriber: Send + Sync + 'static {
    /// A new reader that sees every record published from now on.
    fn subscribe(&self) -> Box<dyn EventStream>;
}
