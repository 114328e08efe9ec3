//! The contract test suite every [`EventStore`] implementation must pass.
//!
//! The sequencer and the gateway are tested against one implementation and run in production on
//! another, so the behaviour they rely on is written down once, here, as executable checks, and
//! every implementation's tests call [`run_all`]. A behaviour that is not checked here is not part
//! of the contract.
//!
//! Every check works on its own documents and partitions inside a [`Namespace`] that is unique to
//! the run, so one store (even a database shared with earlier runs) can run every check, and checks
//! never see each other's data. What outlives a restart of the store depends on how it is opened,
//! so durability across reopening is tested by each implementation itself.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use crate::{CommitBatch, EventStore, PartitionId, StoreError, UnpublishedCommit};

mod checks;
mod deletion_checks;
mod history_checks;
pub use checks::*;
pub use deletion_checks::*;
pub use history_checks::*;

/// Where one run of the suite keeps its data: a document id prefix and a range of partitions that
/// no other run uses, so runs against a persistent database need no cleanup.
#[derive(Debug, Clone)]
pub struct Namespace {
    run: String,
    partition_base: PartitionId,
}

impl Namespace {
    /// A namespace unique to this call: random enough that two runs, even concurrent ones against
    /// the same database, do not collide.
    pub fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        hasher.write_u32(std::process::id());
        let nonce = hasher.finish();
        // Partitions in the upper half, 256 per run, leave the low numbers to real deployments.
        let partition_base = 0x8000_0000 | ((nonce as u32) & 0x7fff_ff00);
        Self { run: format!("contract-{nonce:016x}"), partition_base }
    }

    /// A document of this run.
    pub fn doc(&self, name: &str) -> DocId {
        DocId::parse(&format!("{}/{name}", self.run)).expect("contract document names are valid ids")
    }

    /// Partition `index` (< 256) of this run.
    pub fn partition(&self, index: u8) -> PartitionId {
        self.partition_base + PartitionId::from(index)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check of the contract, by name, in the order [`run_all`] runs them.
        const CHECKS: &[(&str, fn(Arc<dyn EventStore>, Namespace) -> CheckFuture)] = &[
            $((stringify!($name), |store, ns| Box::pin(async move { $name(&*store, &ns).await }))),*
        ];
    };
}

checks!(
    empty_document,
    commit_and_read_back,
    batch_of_many_documents,
    conflicting_batch_writes_nothing,
    duplicate_version_conflicts,
    duplicate_client_seq_conflicts,
    duplicate_rejection_conflicts,
    one_outcome_per_seq,
    find_outcome_answers,
    last_outcome_answers,
    claim_bumps_epoch_and_fences,
    offset_stored_with_commit,
    snapshot_bounds_loading,
    unicode_round_trips,
    nul_characters_round_trip,
    extreme_seqs_round_trip,
    commit_numbers_count_commits_per_partition,
    unpublished_returns_commits_after_published_through,
    unpublished_pages_by_whole_commits,
    published_through_rides_on_the_next_commit,
    mark_published_is_fenced,
    new_owner_sees_unpublished_records,
    failed_batch_takes_no_commit_number,
    retried_commit_is_recognised_by_its_number,
    authors_round_trip,
    history_has_commit_times,
    snapshots_of_past_versions_are_kept_per_window,
    snapshot_after_the_latest_version_is_refused,
    checkpoints_are_immutable,
    deletion_purges_the_document,
    deletion_publishes_a_tombstone_in_order,
    deleted_document_starts_again_from_version_1,
    deletion_is_fenced_and_retried_by_its_number,
    a_late_snapshot_or_checkpoint_cannot_outlive_a_deletion,
);

/// Runs every check against `store`, each as its own task, and panics naming every check that
/// failed (with its panic message), after running all of them.
///
/// Must be called inside a tokio runtime (`#[tokio::test]`).
pub async fn run_all(store: Arc<dyn EventStore>) {
    let ns = Namespace::new();
    let mut failures = Vec::new();
    for (name, check) in CHECKS {
        let outcome = tokio::spawn(check(Arc::clone(&store), ns.clone())).await;
        if let Err(err) = outcome {
            let message = match err.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "non-text panic".to_owned()),
                Err(err) => err.to_string(),
            };
            failures.push(format!("contract check `{name}` failed: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} contract checks failed:\n{}",
        failures.len(),
        CHECKS.len(),
        failures.join("\n")
    );
}

// Helpers shared by the checks.

pub(crate) fn client(name: &str) -> ClientId {
    ClientId::parse(name).expect("contract client names are valid ids")
}

pub(crate) fn insert_at(len: usize, text: &str) -> Operation {
    let mut op = Operation::new();
    op.retain(len).insert(text);
    op
}

/// The user the helpers' events of `client` are by, so every check that reads events back checks
/// their author too.
pub(crate) fn author_of(client: &ClientId) -> String {
    format!("{client}@example.com")
}

/// Versions `1..=n` of `doc` by `client` (seq = version), each appending `v{version};`.
pub(crate) fn history(doc: &DocId, client: &ClientId, n: u64) -> Vec<CommittedEvent> {
    let mut len = 0;
    (1..=n)
        .map(|version| {
            let text = format!("v{version};");
            let op = insert_at(len, &text);
            len += text.chars().count();
            CommittedEvent {
                author: author_of(client),
                doc: doc.clone(),
                version,
                client: client.clone(),
                seq: version,
                op,
            }
        })
        .collect()
}

pub(crate) fn event(doc: &DocId, version: u64, client: &ClientId, seq: u64) -> CommittedEvent {
    CommittedEvent {
        author: author_of(client),
        doc: doc.clone(),
        version,
        client: client.clone(),
        seq,
        op: insert_at(0, "x"),
    }
}

pub(crate) fn rejection(doc: &DocId, client: &ClientId, seq: u64, at_version: u64) -> Rejection {
    Rejection {
        doc: doc.clone(),
        client: client.clone(),
        seq,
        code: ErrorCode::InvalidOp,
        message: format!("op {seq} does not fit version {at_version}"),
        at_version,
    }
}

pub(crate) async fn claim(store: &dyn EventStore, partition: PartitionId) -> u64 {
    store.claim_partition(partition).await.expect("claim").epoch
}

pub(crate) fn batch(
    partition: PartitionId,
    epoch: u64,
    events: Vec<CommittedEvent>,
    rejections: Vec<Rejection>,
) -> CommitBatch {
    CommitBatch {
        deletions: Vec::new(),
        partition,
        epoch,
        next_offset: None,
        events,
        rejections,
        published_through: None,
        expected_commit: None,
    }
}

/// Every record of the outbox of `partition` after commit `after`, in one page.
pub(crate) async fn outbox(
    store: &dyn EventStore,
    partition: PartitionId,
    after: u64,
) -> Vec<UnpublishedCommit> {
    store.unpublished(partition, after, usize::MAX).await.expect("read the outbox")
}

/// The outbox entry of commit `commit` holding `records`, in the given (expected) order.
pub(crate) fn unpublished(commit: u64, records: Vec<SequencedRecord>) -> UnpublishedCommit {
    UnpublishedCommit { commit, records }
}

pub(crate) fn committed(event: &CommittedEvent) -> SequencedRecord {
    SequencedRecord::Committed(event.clone())
}

pub(crate) fn rejected(rejection: &Rejection) -> SequencedRecord {
    SequencedRecord::Rejected(rejection.clone())
}

pub(crate) async fn all_events(store: &dyn EventStore, doc: &DocId) -> Vec<CommittedEvent> {
    store.read_events(doc, 0, u64::MAX, usize::MAX).await.expect("read events")
}

pub(crate) fn expect_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) {
    match result {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains(mentions), "conflict {message:?} should mention {mentions:?}")
        }
        other => panic!("expected a conflict mentioning {mentions:?}, got {other:?}"),
    }
}
