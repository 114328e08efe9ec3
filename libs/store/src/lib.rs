//! The event store: Tandem's source of truth.
//!
//! Every committed op is an event in an append-only log keyed by (document, version), with its
//! author and commit time; every refused op is remembered by (document, client, seq) so a
//! resubmission gets the same answer. Snapshots are only a read cache that bounds the cost of
//! loading a document, now or at a past version (see [`SNAPSHOT_WINDOW`] for which are kept).
//! Checkpoints name versions. The one way a log shrinks is the deletion of a whole document
//! ([`CommitBatch::deletions`]): its events, rejections, snapshots and checkpoints are purged and
//! a tombstone is published in their place; the id may then be used again from version 1.
//!
//! [`EventStore`] is the trait the sequencer and the gateway use. It is shaped for the distributed
//! mode from the start: a [`CommitBatch`] carries many events of many documents, the input offset
//! consumed up to, and the committing owner's epoch, and commits all of it atomically or nothing.
//!
//! The store is also the transactional outbox between committing and publishing: every commit that
//! stores records gets the partition's next commit number, and the partition remembers up to which
//! commit its records were published (see [`EventStore::unpublished`]). A new owner republishes
//! what its predecessor committed but never published, so nothing committed is lost on the way to
//! the gateways.
//! [`embedded::SqliteStore`] implements it for the single-process mode, `postgres::PostgresStore`
//! (behind the default `postgres` feature) for the distributed mode; both pass the same contract
//! suite (`contract`, behind the `testing` feature).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Outcome, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId};

mod codec;
mod commit_rules;
#[cfg(feature = "testing")]
pub mod contract;
pub mod embedded;
mod history;
pub mod intercept;
mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;

/// A partition of the op log: the unit of ownership. The single-process mode has one or a few.
pub type PartitionId = u32;

/// Snapshot retention, the same in both stores: a document keeps its two newest snapshots (the
/// newest is where loading starts, the one before a fallback for manual recovery), and, of every
/// window of this many versions (`[0, 10000)`, `[10000, 20000)`, ...), the one of the lowest
/// version in it. Writing a snapshot drops the others. So a past version is never much further than a
/// window (plus the sequencer's snapshot interval) from a kept snapshot at or before it
/// ([`EventStore::snapshot_at_or_before`]), and a document keeps about one snapshot per window of
/// its history: about 100 for a million versions.
pub const SNAPSHOT_WINDOW: u64 = 10_000;

/// Everything one sequencer commits at once: the events and rejections of a batch of ops (many
/// documents), and how far into its input partition it has consumed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitBatch {
    /// The input partition the batch's ops came from: the unit the epoch fences.
    pub partition: PartitionId,
    /// The committing owner's epoch, from [`EventStore::claim_partition`]. The commit fails with
    /// [`StoreError::Fenced`] when another owner has claimed the partition since.
    pub epoch: u64,
    /// The next input offset to consume after this batch, stored atomically with the events so a
    /// new owner resumes exactly where the last commit ended. `None` when the input has no offsets.
    pub next_offset: Option<i64>,
    /// New versions, in version order per document.
    pub events: Vec<CommittedEvent>,
    /// Refused ops: stored so that a resubmission of the same `seq` gets the same error.
    pub rejections: Vec<Rejection>,
    /// Every commit of the partition up to this number has been published: the store raises the
    /// partition's `published_through` to it (never lowers it) in the same transaction, so the
    /// owner records its progress with its next commit at no extra cost. It must not exceed the
    /// partition's last commit *before* this batch (a batch cannot have been published before it
    /// is committed), or the commit fails with [`StoreError::Conflict`]. `None` leaves it as it was.
    pub published_through: Option<u64>,
    /// The commit number this batch takes, as its owner counts (the claim's `last_commit`, plus one
    /// per commit since). It makes a retry safe: when a commit's outcome was lost (the connection
    /// dropped during COMMIT), the owner sends the same batch again, and if the partition's last
    /// commit under this epoch already has this number, the batch was committed: the store answers
    /// with the number and writes nothing. Only one owner writes under an epoch and it does not move
    /// on before its commit succeeds, so the number identifies the batch. `None` disables the check.
    pub expected_commit: Option<u64>,
    /// Documents deleted by this batch: each one's events, rejections, snapshots and checkpoints
    /// are purged in the same transaction, after the batch's own events of it, and its tombstone
    /// is stored under the batch's commit number, so [`EventStore::unpublished`] returns it as a
    /// [`SequencedRecord::Deleted`] until it is published.
    pub deletions: Vec<DocumentDeleted>,
}

impl CommitBatch {
    /// True when the batch stores events, rejections or deletions: committing it takes a commit
    /// number.
    pub fn has_records(&self) -> bool {
        !self.events.is_empty() || !self.rejections.is_empty() || !self.deletions.is_empty()
    }

    /// True when committing the batch would change nothing, so the caller can skip the round trip.
    /// (Committing an empty batch is still valid: it only checks the epoch.)
    pub fn is_empty(&self) -> bool {
        !self.has_records() && self.next_offset.is_none() && self.published_through.is_none()
    }
}

/// What a new owner of a partition starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionClaim {
    /// The new owner's epoch: one more than any before it.
    pub epoch: u64,
    /// Where the previous owner's last commit ended, if any.
    pub next_offset: Option<i64>,
    /// The number of the partition's latest commit that stored records (0 before the first).
    /// Commit numbers go on from here across owners: the next one is `last_commit + 1`.
    pub last_commit: u64,
    /// Every commit up to this number is published; those after it, up to `last_commit`, may not
    /// be, and the new owner republishes them (see [`EventStore::unpublished`]).
    pub published_through: u64,
}

/// The records of one commit that is not marked published, as [`EventStore::unpublished`] returns
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpublishedCommit {
    /// The commit's number in its partition.
    pub commit: u64,
    /// Every event, rejection and tombstone the commit stored, as they are published:
    /// [`SequencedRecord::Committed`], [`SequencedRecord::Rejected`] and
    /// [`SequencedRecord::Deleted`]. Ordered by document id, then in each document's order:
    /// version `v`, then the rejections at version `v`, then version `v + 1`, and a tombstone
    /// last. Rejections at the same version are ordered by client id, then by `seq`.
    ///
    /// A deletion purges its document's records, of this commit and of earlier ones: a commit
    /// that deleted a document holds only the tombstone for it, and an unpublished commit whose
    /// every record was purged by a later deletion is not returned at all (commit numbers then
    /// have gaps).
    pub records: Vec<SequencedRecord>,
}

/// The last `seq` a client used on a document and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The client's highest `seq` on the document.
    pub seq: u64,
    /// What became of that `seq`, answered again if the client resubmits it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A document's state at a version: the read cache that bounds loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The document this is a snapshot of.
    pub doc: DocId,
    /// The version whose text this is: events after it are applied on top when loading.
    pub version: u64,
    /// The whole text at `version`.
    pub text: String,
    /// The last `seq` of every client that ever wrote the document, as of `version`.
    pub clients: BTreeMap<ClientId, ClientRecord>,
}

/// A document as the store has it: the latest snapshot (if any), then every event after it and
/// every rejection at or after its version, each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// The newest snapshot; `None` when none was written, and loading starts from the empty text.
    pub snapshot: Option<Snapshot>,
    /// Every event after the snapshot's version (after 0 without one), ascending by version.
    pub events: Vec<CommittedEvent>,
    /// Every rejection with `at_version` at or after the snapshot's version (every one without a
    /// snapshot), ascending by `at_version`.
    pub rejections: Vec<Rejection>,
}

/// A committed event as the history shows it: with the time the log committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub event: CommittedEvent,
    /// When the event log committed it, milliseconds since the Unix epoch; 0 when unknown (events
    /// stored before the time was recorded). Every event of one commit has the same time: the
    /// Postgres server's clock at the start of the commit's transaction, or the committing
    /// process's clock for the embedded store. So times rise with versions as long as that clock
    /// does not step back.
    pub committed_at_ms: i64,
}

/// A named, immutable version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub doc: DocId,
    /// Unique per document.
    pub name: String,
    pub version: u64,
    /// The user who created it.
    pub author: String,
    /// When it was created, milliseconds since the Unix epoch (set by the store).
    pub created_at_ms: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another owner claimed the partition: this one must stop, nothing was written.
    #[error("partition {partition} is owned by epoch {current}, not {epoch}: this owner is stale")]
    Fenced {
        /// The partition the commit was for.
        partition: PartitionId,
        /// The epoch the commit carried.
        epoch: u64,
        /// The partition's epoch in the store (0 for a partition never claimed).
        current: u64,
    },
    /// A version or a (client, seq) that already exists, or a version the log cannot hold: nothing
    /// was written. The message names the document and the version or the client and seq. Also a
    /// `published_through` beyond the partition's last commit: marking commits published that do
    /// not exist yet would lose them when they do. Also a checkpoint name already given to another
    /// version, and a snapshot or checkpoint of a version after the document's latest.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store cannot be reached or failed to do the work; retrying may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back: a bug or tampering.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// The event store. Implementations are shared between tasks (`Arc<dyn EventStore>`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Takes ownership of a partition: bumps its epoch and returns the new epoch, the offset the
    /// last commit stored, and the partition's outbox position (its last commit number and how far
    /// its commits were published). Every commit of an older epoch fails from now on.
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError>;

    /// Writes a whole batch in one transaction, or nothing, and returns the partition's commit
    /// number after it. Fails with `Fenced` if the batch's epoch is not the partition's current
    /// one, with `Conflict` if an event's (doc, version) or (doc, client, seq) already exists, or a
    /// rejection's (doc, client, seq) does, or if `published_through` is beyond the last commit.
    ///
    /// A partition must be claimed before anything is committed to it: epoch 0 is never current,
    /// so two owners that both skipped the claim cannot write unfenced. A (doc, client, seq) has
    /// one outcome: committing it after it was rejected, or rejecting it after it was committed,
    /// is a `Conflict` too.
    ///
    /// Commit numbers: a batch that stores events or rejections ([`CommitBatch::has_records`])
    /// takes the partition's next number (one more than the last, across owners), and all its
    /// records are stored under it, unpublished until `published_through` reaches it. A batch
    /// without records (only an offset, a `published_through`, or nothing: an epoch check) takes
    /// no number and returns the current last one. A batch that fails takes none either.
    ///
    /// Deletions ([`CommitBatch::deletions`]) count as records: a batch that only deletes takes a
    /// number too. They apply after the batch's events and rejections, so a batch cannot write a
    /// document again after deleting it (those events would be purged with the rest); the next
    /// batch can, from version 1. Deleting a document twice in one batch stores two tombstones.
    async fn commit(&self, batch: &CommitBatch) -> Result<u64, StoreError>;

    /// Records that every commit of `partition` up to `through` is published: raises the
    /// partition's `published_through` to `through` (a lower value changes nothing). For when
    /// there is no next commit to carry it in [`CommitBatch::published_through`]: the partition
    /// went idle, or its owner is leaving. Fails with `Fenced` (changing nothing) unless `epoch` is
    /// the partition's current one, and with `Conflict` if `through` is beyond its last commit.
    async fn mark_published(
        &self,
        partition: PartitionId,
        epoch: u64,
        through: u64,
    ) -> Result<(), StoreError>;

    /// The outbox: the records of the commits of `partition` numbered above both `after` and the
    /// partition's `published_through`, oldest commit first, each commit whole (see
    /// [`UnpublishedCommit`] for the order inside one). Records committed before the outbox existed
    /// count as published.
    ///
    /// Bounded: it returns as many whole commits as fit in `limit` records, but always the first
    /// one (when `limit > 0`) even if it alone holds more (a commit is one owner batch, which its
    /// owner held in memory). Nothing (an empty vector) means there is nothing more to publish. To
    /// page, call again with `after` set to the last returned commit number, or after
    /// [`EventStore::mark_published`] with the same `after`. A read: any epoch may call it.
    async fn unpublished(
        &self,
        partition: PartitionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnpublishedCommit>, StoreError>;

    /// The latest committed version of a document; 0 for a document never written, or deleted
    /// and not written since.
    async fn latest_version(&self, doc: &DocId) -> Result<u64, StoreError>;

    /// Events of `doc` with `after < version <= up_to`, ascending, at most `limit` of them.
    async fn read_events(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent>, StoreError>;

    /// The latest snapshot and everything after it (see [`StoredDocument`]).
    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError>;

    /// Stores a snapshot (replacing one of the same version), and drops the document's snapshots
    /// that [`SNAPSHOT_WINDOW`]'s retention rule does not keep.
    ///
    /// Fails with [`StoreError::Conflict`], storing nothing, for a version after the document's
    /// latest: the document was deleted while the snapshot was being written, and keeping it
    /// would hand the document's next life a wrong text. (A deletion and a snapshot write of the
    /// same document are serialised, so one never slips past the other.)
    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// What became of `seq` of `client` on `doc`, if the store has it.
    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError>;

    /// The highest `seq` `client` has an outcome for on `doc` (committed or rejected) and that
    /// outcome; `None` for a client that never wrote the document. The sequencer asks when it meets
    /// a client it no longer remembers (documents keep a bounded number of clients in memory and in
    /// snapshots), so that a forgotten client's next `seq` is checked against what it really used.
    async fn last_outcome(&self, doc: &DocId, client: &ClientId) -> Result<Option<ClientRecord>, StoreError>;

    /// Like [`EventStore::read_events`], with the time each event was committed: the history a
    /// reader of the Documents API sees.
    async fn read_history(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The newest snapshot of `doc` whose version is at most `version`, if one is kept: where
    /// rebuilding the text of a past version starts. Stores keep more than the latest snapshot so
    /// that a past version is never far from one (the retention of [`SNAPSHOT_WINDOW`]).
    async fn snapshot_at_or_before(&self, doc: &DocId, version: u64) -> Result<Option<Snapshot>, StoreError>;

    /// Names a version. Checkpoints are immutable: if `checkpoint.name` exists for the document
    /// with the same version, returns the stored one (idempotent retry; its author and time are
    /// the first call's); with another version, fails with [`StoreError::Conflict`] naming both
    /// versions. A version after the document's latest is a `Conflict` too (a deletion may have
    /// happened since the caller looked). The store sets `created_at_ms`. Names are stored as
    /// given: checking them (1 to 128 characters, no control characters) is the API's job.
    async fn create_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, StoreError>;

    /// The document's checkpoints, ascending by version, then name.
    async fn list_checkpoints(&self, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError>;
}
