//! The rules of a commit that need no database, written once for both stores: the epoch fence,
//! the retry of a batch that did commit, the `published_through` bound, the commit number, and
//! what makes a batch unwritable by itself (a version too large, a key it repeats). Each store
//! reads its partition's row under its write lock, asks [`plan`] what to do, and words its own key
//! conflicts with [`version_conflict`] and [`seq_conflict`], so both report the same errors.
//!
//! The order of the checks is part of the contract: a stale owner learns first that it is stale,
//! then a retry of a batch that committed is answered before the batch is judged again.

use std::collections::HashSet;

use tandem_protocol::{ClientId, DocId};

use crate::codec::version_to_sql;
use crate::{CommitBatch, PartitionId, StoreError};

/// What a store holds about a partition when it commits: zeros for a partition never claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PartitionState {
    pub epoch: u64,
    /// The number of the partition's latest commit that stored records.
    pub last_commit: u64,
    pub published_through: u64,
}

/// What a commit does after the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Write nothing and answer this commit number: the batch is a retry of the partition's last
    /// commit (its answer was lost), or it changes nothing (an epoch check).
    Answer(u64),
    /// Write the batch under this commit number (the last one when the batch has no records).
    Write(u64),
}

/// Why a seq cannot take the outcome a batch gives it.
pub(crate) const ALREADY_COMMITTED: &str = "was already committed";
pub(crate) const ALREADY_REJECTED: &str = "was already rejected";

/// Fences: `epoch` must be the partition's current one, and epoch 0 never is, so a partition must
/// be claimed before anything is committed to it. Accepting epoch 0 on a never-claimed partition
/// would let two owners that both skipped the claim write unfenced.
pub(crate) fn fence(partition: PartitionId, epoch: u64, state: &PartitionState) -> Result<(), StoreError> {
    if epoch == 0 || epoch != state.epoch {
        return Err(StoreError::Fenced { partition, epoch, current: state.epoch });
    }
    Ok(())
}

/// Refuses to mark commits published that the partition does not have yet: marking them would
/// lose them when they do.
fn check_published(partition: PartitionId, through: u64, last_commit: u64) -> Result<(), StoreError> {
    if through > last_commit {
        return Err(StoreError::Conflict(format!(
            "commit {through} of partition {partition} cannot be published: its last commit is {last_commit}"
        )));
    }
    Ok(())
}

/// The checks of [`crate::EventStore::mark_published`]; `true` when the mark must be raised.
pub(crate) fn mark_published(
    partition: PartitionId,
    epoch: u64,
    through: u64,
    state: &PartitionState,
) -> Result<bool, StoreError> {
    fence(partition, epoch, state)?;
    check_published(partition, through, state.last_commit)?;
    Ok(through > state.published_through)
}

/// Decides a commit from the partition's state and the batch's own [`verdict`].
pub(crate) fn plan(
    batch: &CommitBatch,
    state: &PartitionState,
    verdict: Result<(), StoreError>,
) -> Result<Plan, StoreError> {
    fence(batch.partition, batch.epoch, state)?;
    if let Some(expected) = batch.expected_commit.filter(|_| batch.has_records()) {
        if state.last_commit == expected {
            // A retry of a batch that did commit (its answer was lost): nothing to write again.
            return Ok(Plan::Answer(expected));
        }
        if state.last_commit.checked_add(1) != Some(expected) {
            return Err(StoreError::Conflict(format!(
                "partition {} is at commit {}, but the batch expects to be commit {expected}",
                batch.partition, state.last_commit
            )));
        }
    }
    verdict?;
    if let Some(through) = batch.published_through {
        check_published(batch.partition, through, state.last_commit)?;
    }
    if batch.is_empty() {
        return Ok(Plan::Answer(state.last_commit));
    }
    if !batch.has_records() {
        return Ok(Plan::Write(state.last_commit));
    }
    match state.last_commit.checked_add(1).filter(|n| i64::try_from(*n).is_ok()) {
        Some(number) => Ok(Plan::Write(number)),
        None => Err(StoreError::Conflict(format!("partition {} has no commit number left", batch.partition))),
    }
}

/// What makes `batch` unwritable whatever the store holds: a version too large to store, a
/// (doc, version) or (doc, client, seq) the batch repeats. The first reason in batch order, as a
/// row-by-row insert would meet it.
pub(crate) fn verdict(batch: &CommitBatch) -> Result<(), StoreError> {
    let mut versions = HashSet::with_capacity(batch.events.len());
    let mut seqs = HashSet::with_capacity(batch.events.len() + batch.rejections.len());
    for e in &batch.events {
        version_to_sql(e.version, &e.doc)?;
        if !versions.insert((&e.doc, e.version)) {
            return Err(version_conflict(&e.doc, e.version));
        }
        if !seqs.insert((&e.doc, &e.client, e.seq)) {
            return Err(seq_conflict(&e.doc, &e.client, e.seq, "appears twice in one batch"));
        }
    }
    for r in &batch.rejections {
        version_to_sql(r.at_version, &r.doc)?;
        if !seqs.insert((&r.doc, &r.client, r.seq)) {
            return Err(seq_conflict(&r.doc, &r.client, r.seq, "has two outcomes in one batch"));
        }
    }
    for d in &batch.deletions {
        version_to_sql(d.last_version, &d.doc)?;
    }
    Ok(())
}

pub(crate) fn version_conflict(doc: &DocId, version: u64) -> StoreError {
    StoreError::Conflict(format!("version {version} of document {doc} already exists"))
}

pub(crate) fn seq_conflict(doc: &DocId, client: &ClientId, seq: u64, what: &str) -> StoreError {
    StoreError::Conflict(format!("seq {seq} of client {client} on document {doc} {what}"))
}

#[cfg(test)]
mod tests {
    use tandem_ot::Operation;
    use tandem_protocol::records::{CommittedEvent, Rejection};
    use tandem_protocol::ErrorCode;

    use super::*;

    fn event(doc: &str, version: u64, seq: u64) -> CommittedEvent {
        CommittedEvent {
            author: String::new(),
            doc: DocId::parse(doc).unwrap(),
            version,
            client: ClientId::parse("c").unwrap(),
            seq,
            op: Operation::new(),
        }
    }

    fn batch(epoch: u64, events: Vec<CommittedEvent>) -> CommitBatch {
        CommitBatch { partition: 7, epoch, events, ..CommitBatch::default() }
    }

    const STATE: PartitionState = PartitionState { epoch: 3, last_commit: 10, published_through: 8 };

    #[test]
    fn only_the_current_epoch_commits_and_epoch_zero_never_does() {
        let b = batch(3, vec![event("d", 1, 1)]);
        assert_eq!(plan(&b, &STATE, Ok(())).unwrap(), Plan::Write(11));
        for epoch in [0, 2, 4] {
            let err = plan(&batch(epoch, vec![]), &STATE, Ok(())).unwrap_err();
            assert!(matches!(err, StoreError::Fenced { partition: 7, current: 3, .. }), "{err}");
        }
        let unclaimed = PartitionState::default();
        assert!(matches!(plan(&batch(0, vec![]), &unclaimed, Ok(())), Err(StoreError::Fenced { .. })));
    }

    #[test]
    fn a_stale_owner_hears_it_is_stale_before_anything_else() {
        let bad = Err(version_conflict(&DocId::parse("d").unwrap(), 1));
        assert!(matches!(plan(&batch(2, vec![]), &STATE, bad), Err(StoreError::Fenced { .. })));
    }

    #[test]
    fn the_expected_commit_number_recognises_a_retry_and_refuses_a_gap() {
        let mut b = batch(3, vec![event("d", 1, 1)]);
        b.expected_commit = Some(10);
        // A retry is answered even if the batch would now conflict: it committed.
        let bad = Err(version_conflict(&DocId::parse("d").unwrap(), 1));
        assert_eq!(plan(&b, &STATE, bad).unwrap(), Plan::Answer(10));
        b.expected_commit = Some(11);
        assert_eq!(plan(&b, &STATE, Ok(())).unwrap(), Plan::Write(11));
        b.expected_commit = Some(13);
        assert!(
            matches!(plan(&b, &STATE, Ok(())), Err(StoreError::Conflict(m)) if m.contains("at commit 10"))
        );
        // Without records the number is not checked: such a batch takes none.
        let mut empty = batch(3, vec![]);
        empty.expected_commit = Some(99);
        assert_eq!(plan(&empty, &STATE, Ok(())).unwrap(), Plan::Answer(10));
    }

    #[test]
    fn published_through_cannot_pass_the_last_commit() {
        let mut b = batch(3, vec![]);
        b.published_through = Some(10);
        assert_eq!(plan(&b, &STATE, Ok(())).unwrap(), Plan::Write(10), "no records: no new number");
        b.published_through = Some(11);
        assert!(matches!(plan(&b, &STATE, Ok(())), Err(StoreError::Conflict(_))));
        assert!(mark_published(7, 3, 9, &STATE).unwrap());
        assert!(!mark_published(7, 3, 8, &STATE).unwrap(), "never lowered");
        assert!(matches!(mark_published(7, 3, 11, &STATE), Err(StoreError::Conflict(_))));
        assert!(matches!(mark_published(7, 2, 9, &STATE), Err(StoreError::Fenced { .. })));
    }

    #[test]
    fn commit_numbers_run_out_as_a_conflict() {
        let full = PartitionState { last_commit: i64::MAX as u64, ..STATE };
        assert!(matches!(
            plan(&batch(3, vec![event("d", 1, 1)]), &full, Ok(())),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn a_batch_that_repeats_a_key_or_holds_a_huge_version_is_refused() {
        assert!(verdict(&batch(3, vec![event("d", 1, 1), event("d", 2, 2), event("e", 1, 1)])).is_ok());
        let twice = verdict(&batch(3, vec![event("d", 1, 1), event("d", 1, 2)])).unwrap_err();
        assert!(
            matches!(&twice, StoreError::Conflict(m) if m.contains("version 1 of document d")),
            "{twice}"
        );
        let seq = verdict(&batch(3, vec![event("d", 1, 5), event("d", 2, 5)])).unwrap_err();
        assert!(matches!(&seq, StoreError::Conflict(m) if m.contains("seq 5")), "{seq}");
        assert!(verdict(&batch(3, vec![event("d", u64::MAX, 1)])).is_err());
        let mut both = batch(3, vec![event("d", 1, 5)]);
        both.rejections.push(Rejection {
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq: 5,
            code: ErrorCode::InvalidOp,
            message: String::new(),
            at_version: 1,
        });
        assert!(matches!(verdict(&both), Err(StoreError::Conflict(m)) if m.contains("two outcomes")));
    }
}
