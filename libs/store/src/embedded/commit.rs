//! The writes of the log: claims, the group commit and the published mark, each one `IMMEDIATE`
//! transaction, so the partition's row is read under the write lock and no claim can slip in
//! between a check and the writes. Any error returns before `commit`, and dropping the
//! transaction rolls everything back.
//!
//! The checks that need no database are [`crate::commit_rules`], shared with the Postgres store.
//! A batch's rows go through statements prepared once per connection, so a group commit costs one
//! fsync and no SQL compilation; where the rows go, and why, is in `migrations`.

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::codec::now_ms;
use super::history;
use super::ids::IdCache;
use super::tiers::{self, Duplicate};
use crate::codec::{clamp_to_sql, encode_op, seq_to_sql, stored_u64};
use crate::commit_rules::{self, seq_conflict, version_conflict, PartitionState, Plan};
use crate::commit_rules::{ALREADY_COMMITTED, ALREADY_REJECTED};
use crate::{CommitBatch, PartitionClaim, PartitionId, StoreError};

/// Every event of a commit is stamped with the same time (`?9`), taken once per commit.
const INSERT_EVENT: &str = r#"INSERT INTO event_log
     (doc, version, client, seq, op, author, "partition", commit_seq, committed_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#;
const INSERT_REJECTION: &str = r#"INSERT INTO rejection_log
     (doc, client, seq, code, message, at_version, "partition", commit_seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#;
const PARTITION_STATE: &str =
    r#"SELECT epoch, last_commit, published_through FROM partitions WHERE "partition" = ?1"#;
/// The partition's row after a commit: every change in one statement. `?3` (the offset) and `?4`
/// (published through) are NULL when the batch leaves them as they are.
const UPDATE_PARTITION: &str = r#"UPDATE partitions SET last_commit = ?2,
     next_offset = coalesce(?3, next_offset),
     published_through = max(published_through, coalesce(?4, 0))
     WHERE "partition" = ?1"#;
const MARK_PUBLISHED: &str =
    r#"UPDATE partitions SET published_through = max(published_through, ?2) WHERE "partition" = ?1"#;
const CLAIM: &str = r#"INSERT INTO partitions ("partition", epoch, next_offset) VALUES (?1, 1, NULL)
     ON CONFLICT ("partition") DO UPDATE SET epoch = epoch + 1
     RETURNING epoch, next_offset, last_commit, published_through"#;

/// Bumps the partition's epoch (creating the row at epoch 1) and returns it with the stored offset
/// and outbox position.
pub(super) fn claim_partition(
    conn: &mut Connection,
    partition: PartitionId,
) -> Result<PartitionClaim, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (epoch, next_offset, last_commit, published_through): (i64, Option<i64>, i64, i64) = tx
        .prepare_cached(CLAIM)?
        .query_row([partition], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    tx.commit()?;
    let epoch = stored_u64(epoch, || format!("epoch of partition {partition}"))?;
    let last_commit = stored_u64(last_commit, || format!("last commit of partition {partition}"))?;
    let published_through =
        stored_u64(published_through, || format!("published commit of partition {partition}"))?;
    tracing::info!(partition, epoch, last_commit, published_through, "partition claimed");
    Ok(PartitionClaim { epoch, next_offset, last_commit, published_through })
}

/// The partition's row inside `tx`; all zeros for a partition never claimed.
fn partition_state(tx: &Transaction<'_>, partition: PartitionId) -> Result<PartitionState, StoreError> {
    let row: Option<(i64, i64, i64)> = tx
        .prepare_cached(PARTITION_STATE)?
        .query_row([partition], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let Some((epoch, last_commit, published_through)) = row else { return Ok(PartitionState::default()) };
    Ok(PartitionState {
        epoch: stored_u64(epoch, || format!("epoch of partition {partition}"))?,
        last_commit: stored_u64(last_commit, || format!("last commit of partition {partition}"))?,
        published_through: stored_u64(published_through, || {
            format!("published commit of partition {partition}")
        })?,
    })
}

/// Writes a batch and returns the partition's commit number after it (see
/// [`crate::EventStore::commit`]). Deletions come last, so they purge the batch's own events of
/// their documents too.
pub(super) fn commit(
    conn: &mut Connection,
    ids: &mut IdCache,
    batch: &CommitBatch,
) -> Result<u64, StoreError> {
    let verdict = commit_rules::verdict(batch);
    ids.begin();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = partition_state(&tx, batch.partition)?;
    let number = match commit_rules::plan(batch, &state, verdict)? {
        // Dropping `tx` ends the read-only transaction.
        Plan::Answer(number) => return Ok(number),
        Plan::Write(number) => number,
    };
    // `plan` only hands out numbers that fit.
    let number_sql = clamp_to_sql(number);
    let now = now_ms();
    insert_events(&tx, ids, batch, number_sql, now)?;
    insert_rejections(&tx, ids, batch, number_sql)?;
    history::delete_documents(&tx, batch, number_sql, now)?;
    // `through` fits: it was checked against a stored commit number.
    let published = batch.published_through.map(clamp_to_sql);
    tx.prepare_cached(UPDATE_PARTITION)?.execute(params![
        batch.partition,
        number_sql,
        batch.next_offset,
        published
    ])?;
    tx.commit()?;
    ids.committed();
    Ok(number)
}

/// The batch's events: a row appended to the log and its keys added to the recent tier, after
/// checking that neither tier nor the rejections hold them.
fn insert_events(
    tx: &Transaction<'_>,
    ids: &mut IdCache,
    batch: &CommitBatch,
    commit: i64,
    now: i64,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_EVENT)?;
    for e in &batch.events {
        let doc = ids.doc(tx, e.doc.as_str())?;
        let client = ids.client(tx, e.client.as_str())?;
        // `verdict` checked that every version fits.
        let (version, seq) = (clamp_to_sql(e.version), seq_to_sql(e.seq));
        let taken = tiers::taken(tx, doc, version, client, seq)?;
        if taken.version {
            return Err(version_conflict(&e.doc, e.version));
        }
        if taken.committed_seq {
            return Err(seq_conflict(&e.doc, &e.client, e.seq, ALREADY_COMMITTED));
        }
        if taken.rejected_seq {
            return Err(seq_conflict(&e.doc, &e.client, e.seq, ALREADY_REJECTED));
        }
        let row =
            params![doc, version, client, seq, encode_op(&e.op), e.author, batch.partition, commit, now];
        insert.execute(row)?;
        let event = tx.last_insert_rowid();
        match tiers::insert_keys(tx, doc, version, client, seq, event) {
            Ok(()) => {}
            Err(Ok(Duplicate::Version)) => return Err(version_conflict(&e.doc, e.version)),
            Err(Ok(Duplicate::Seq)) => return Err(seq_conflict(&e.doc, &e.client, e.seq, ALREADY_COMMITTED)),
            Err(Err(err)) => return Err(err),
        }
    }
    Ok(())
}

/// The batch's rejections; a seq has one outcome, so a committed or rejected one is a conflict.
fn insert_rejections(
    tx: &Transaction<'_>,
    ids: &mut IdCache,
    batch: &CommitBatch,
    commit: i64,
) -> Result<(), StoreError> {
    for r in &batch.rejections {
        let doc = ids.doc(tx, r.doc.as_str())?;
        let client = ids.client(tx, r.client.as_str())?;
        let seq = seq_to_sql(r.seq);
        if tiers::committed(tx, doc, client, seq)? {
            return Err(seq_conflict(&r.doc, &r.client, r.seq, ALREADY_COMMITTED));
        }
        let row = params![
            doc,
            client,
            seq,
            r.code.as_str(),
            r.message,
            clamp_to_sql(r.at_version),
            batch.partition,
            commit
        ];
        tx.prepare_cached(INSERT_REJECTION)?.execute(row).map_err(|err| {
            if super::codec::is_key_violation(&err) {
                seq_conflict(&r.doc, &r.client, r.seq, ALREADY_REJECTED)
            } else {
                StoreError::from(err)
            }
        })?;
    }
    Ok(())
}

/// Raises the partition's published mark, fenced like a commit.
pub(super) fn mark_published(
    conn: &mut Connection,
    partition: PartitionId,
    epoch: u64,
    through: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = partition_state(&tx, partition)?;
    if commit_rules::mark_published(partition, epoch, through, &state)? {
        tx.prepare_cached(MARK_PUBLISHED)?.execute(params![partition, clamp_to_sql(through)])?;
    }
    tx.commit()?;
    Ok(())
}
