//! The store's operations as blocking functions on a connection, one transaction each: claims,
//! the commit, the outbox and the reads the sequencer needs (the history's are in `history`).
//!
//! Every statement is prepared once per connection (`prepare_cached`), and a batch inserts all its
//! rows through the same prepared statements inside one transaction, so a large group commit costs
//! one fsync and no SQL compilation.

use rusqlite::{ffi, params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{ClientId, DocId};

use super::codec::{
    clamp_to_sql, constraint, decode_event, decode_outbox_row, decode_snapshot, event_columns, now_ms,
    outbox_columns, seq_conflict, seq_from_sql, seq_to_sql, stored_client, stored_code, stored_u64,
    version_to_sql,
};
use super::history;
use crate::outbox::{self, Page};
use crate::{
    ClientRecord, CommitBatch, PartitionClaim, PartitionId, StoreError, StoredDocument, UnpublishedCommit,
};

/// Every event of a commit is stamped with the same time (`?9`), taken once per commit.
const INSERT_EVENT: &str = r#"INSERT INTO events
                              (doc, version, client, seq, op, author, "partition", commit_seq, committed_at)
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#;
const INSERT_REJECTION: &str = r#"INSERT INTO rejections
                                  (doc, client, seq, code, message, at_version, "partition", commit_seq)
                                  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#;
const EVENT_VERSION_OF_SEQ: &str = "SELECT version FROM events WHERE doc = ?1 AND client = ?2 AND seq = ?3";
/// The highest seq of a client on a document, over events and rejections (NULL for none): each
/// half is one look-up in the (doc, client, seq) key.
const LAST_SEQ: &str = "SELECT max(seq) FROM ( \
       SELECT max(seq) AS seq FROM events WHERE doc = ?1 AND client = ?2 \
       UNION ALL SELECT max(seq) FROM rejections WHERE doc = ?1 AND client = ?2)";
const REJECTION_OF_SEQ: &str =
    "SELECT code, message FROM rejections WHERE doc = ?1 AND client = ?2 AND seq = ?3";
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
/// The outbox in commit order, `kind` 0 for events, 1 for rejections and 2 for tombstones (see
/// `codec::OutboxColumns` for the columns). Each branch is a range scan of its table's
/// `(partition, commit_seq)` index.
const UNPUBLISHED_AFTER: &str = r#"
    SELECT commit_seq, 0, doc, version, client, seq, op, NULL, author FROM events
    WHERE "partition" = ?1 AND commit_seq > ?2
    UNION ALL
    SELECT commit_seq, 1, doc, at_version, client, seq, code, message, '' FROM rejections
    WHERE "partition" = ?1 AND commit_seq > ?2
    UNION ALL
    SELECT commit_seq, 2, doc, last_version, '', 0, '', NULL, author FROM tombstones
    WHERE "partition" = ?1 AND commit_seq > ?2
    ORDER BY 1 LIMIT ?3"#;
const UNPUBLISHED_OF_COMMIT: &str = r#"
    SELECT commit_seq, 0, doc, version, client, seq, op, NULL, author FROM events
    WHERE "partition" = ?1 AND commit_seq = ?2
    UNION ALL
    SELECT commit_seq, 1, doc, at_version, client, seq, code, message, '' FROM rejections
    WHERE "partition" = ?1 AND commit_seq = ?2
    UNION ALL
    SELECT commit_seq, 2, doc, last_version, '', 0, '', NULL, author FROM tombstones
    WHERE "partition" = ?1 AND commit_seq = ?2"#;
const SELECT_EVENTS: &str = "SELECT version, client, seq, op, author FROM events \
                             WHERE doc = ?1 AND version > ?2 AND version <= ?3 ORDER BY version LIMIT ?4";

/// Bumps the partition's epoch (creating the row at epoch 1) and returns it with the stored offset
/// and outbox position.
pub(super) fn claim_partition(
    conn: &mut Connection,
    partition: PartitionId,
) -> Result<PartitionClaim, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (epoch, next_offset, last_commit, published_through): (i64, Option<i64>, i64, i64) = tx
        .prepare_cached(
            r#"INSERT INTO partitions ("partition", epoch, next_offset) VALUES (?1, 1, NULL)
               ON CONFLICT ("partition") DO UPDATE SET epoch = epoch + 1
               RETURNING epoch, next_offset, last_commit, published_through"#,
        )?
        .query_row([partition], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    tx.commit()?;
    let epoch = stored_u64(epoch, || format!("epoch of partition {partition}"))?;
    let last_commit = stored_u64(last_commit, || format!("last commit of partition {partition}"))?;
    let published_through =
        stored_u64(published_through, || format!("published commit of partition {partition}"))?;
    tracing::info!(partition, epoch, last_commit, published_through, "partition claimed");
    Ok(PartitionClaim { epoch, next_offset, last_commit, published_through })
}

/// A partition's row as a commit sees it: epoch, last commit number, published through.
struct PartitionState {
    epoch: u64,
    last_commit: u64,
    published_through: u64,
}

/// Reads the partition's row inside `tx` (all zeros for a partition never claimed) and fences:
/// `epoch` must be the current one, and epoch 0 never is.
fn fence(tx: &Transaction<'_>, partition: PartitionId, epoch: u64) -> Result<PartitionState, StoreError> {
    let row: Option<(i64, i64, i64)> = tx
        .prepare_cached(PARTITION_STATE)?
        .query_row([partition], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let state = match row {
        Some((epoch, last_commit, published_through)) => PartitionState {
            epoch: stored_u64(epoch, || format!("epoch of partition {partition}"))?,
            last_commit: stored_u64(last_commit, || format!("last commit of partition {partition}"))?,
            published_through: stored_u64(published_through, || {
                format!("published commit of partition {partition}")
            })?,
        },
        None => PartitionState { epoch: 0, last_commit: 0, published_through: 0 },
    };
    if epoch == 0 || epoch != state.epoch {
        return Err(StoreError::Fenced { partition, epoch, current: state.epoch });
    }
    Ok(state)
}

/// Refuses to mark commits published that the partition does not have yet.
fn check_published(partition: PartitionId, through: u64, last_commit: u64) -> Result<(), StoreError> {
    if through > last_commit {
        return Err(StoreError::Conflict(format!(
            "commit {through} of partition {partition} cannot be published: its last commit is {last_commit}"
        )));
    }
    Ok(())
}

/// Writes a batch in one `IMMEDIATE` transaction: the epoch is read under the write lock, so no
/// claim can slip in between the check and the writes. Any error returns before `commit`, and
/// dropping the transaction rolls everything back.
///
/// Epoch rule: the batch's epoch must equal the partition's stored epoch, and epoch 0 is never
/// valid, so a partition must be claimed before anything is committed to it. Accepting epoch 0 on
/// a never-claimed partition would let two owners that both skipped the claim write unfenced.
///
/// A batch with records takes the next commit number and stores every row under it; the number,
/// offset and published mark are written together in one update of the partition's row. Deletions
/// come last, so they purge the batch's own events of their documents too.
pub(super) fn commit(conn: &mut Connection, batch: &CommitBatch) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = fence(&tx, batch.partition, batch.epoch)?;
    if let Some(expected) = batch.expected_commit.filter(|_| batch.has_records()) {
        if state.last_commit == expected {
            // A retry of a batch that did commit (its answer was lost): nothing to write again.
            return Ok(expected);
        }
        if state.last_commit + 1 != expected {
            return Err(StoreError::Conflict(format!(
                "partition {} is at commit {}, but the batch expects to be commit {expected}",
                batch.partition, state.last_commit
            )));
        }
    }
    if let Some(through) = batch.published_through {
        check_published(batch.partition, through, state.last_commit)?;
    }
    if batch.is_empty() {
        return Ok(state.last_commit);
    }
    let number = if batch.has_records() { state.last_commit + 1 } else { state.last_commit };
    let number_sql = i64::try_from(number).map_err(|_| {
        StoreError::Conflict(format!("partition {} has no commit number left", batch.partition))
    })?;

    let now = now_ms();
    {
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut rejected = tx.prepare_cached(REJECTION_OF_SEQ)?;
        for e in &batch.events {
            let seq = seq_to_sql(e.seq);
            // A seq has one outcome: it cannot be committed after it was refused.
            if rejected.exists(params![e.doc.as_str(), e.client.as_str(), seq])? {
                return Err(seq_conflict(&e.doc, &e.client, e.seq, "was already rejected"));
            }
            let op = serde_json::to_string(&e.op).expect("an operation always encodes as JSON");
            let version = version_to_sql(e.version, &e.doc)?;
            let row = params![
                e.doc.as_str(),
                version,
                e.client.as_str(),
                seq,
                op,
                e.author,
                batch.partition,
                number_sql,
                now
            ];
            insert.execute(row).map_err(|err| match constraint(&err) {
                Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => StoreError::Conflict(format!(
                    "version {} of document {} already exists",
                    e.version, e.doc
                )),
                Some(_) => seq_conflict(&e.doc, &e.client, e.seq, "already has an outcome"),
                None => StoreError::from(err),
            })?;
        }
    }
    {
        let mut insert = tx.prepare_cached(INSERT_REJECTION)?;
        let mut committed = tx.prepare_cached(EVENT_VERSION_OF_SEQ)?;
        for r in &batch.rejections {
            let seq = seq_to_sql(r.seq);
            if committed.exists(params![r.doc.as_str(), r.client.as_str(), seq])? {
                return Err(seq_conflict(&r.doc, &r.client, r.seq, "was already committed"));
            }
            let at_version = version_to_sql(r.at_version, &r.doc)?;
            let row = params![
                r.doc.as_str(),
                r.client.as_str(),
                seq,
                r.code.as_str(),
                r.message,
                at_version,
                batch.partition,
                number_sql
            ];
            insert.execute(row).map_err(|err| match constraint(&err) {
                Some(_) => seq_conflict(&r.doc, &r.client, r.seq, "already has an outcome"),
                None => StoreError::from(err),
            })?;
        }
    }
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
    Ok(number)
}

/// Raises the partition's published mark, fenced like a commit.
pub(super) fn mark_published(
    conn: &mut Connection,
    partition: PartitionId,
    epoch: u64,
    through: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = fence(&tx, partition, epoch)?;
    check_published(partition, through, state.last_commit)?;
    if through > state.published_through {
        tx.prepare_cached(MARK_PUBLISHED)?.execute(params![partition, clamp_to_sql(through)])?;
    }
    tx.commit()?;
    Ok(())
}

/// One page of the outbox, read in one read transaction (see [`outbox`] for the paging).
pub(super) fn unpublished(
    conn: &mut Connection,
    partition: PartitionId,
    after: u64,
    limit: usize,
) -> Result<Vec<UnpublishedCommit>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let tx = conn.transaction()?;
    let published: Option<i64> = tx
        .prepare_cached(r#"SELECT published_through FROM partitions WHERE "partition" = ?1"#)?
        .query_row([partition], |row| row.get(0))
        .optional()?;
    let published = match published {
        Some(p) => stored_u64(p, || format!("published commit of partition {partition}"))?,
        None => 0,
    };
    let from = clamp_to_sql(after.max(published));
    let rows = {
        let mut stmt = tx.prepare_cached(UNPUBLISHED_AFTER)?;
        let rows = stmt.query_map(params![partition, from, outbox::rows_to_read(limit)], outbox_columns)?;
        rows.map(|row| decode_outbox_row(row?)).collect::<Result<Vec<_>, _>>()?
    };
    let page = match outbox::page(rows, limit) {
        Page::Done(page) => page,
        Page::FirstCommitTooLarge(commit) => {
            let mut stmt = tx.prepare_cached(UNPUBLISHED_OF_COMMIT)?;
            let rows = stmt.query_map(params![partition, clamp_to_sql(commit)], outbox_columns)?;
            outbox::group(rows.map(|row| decode_outbox_row(row?)).collect::<Result<Vec<_>, _>>()?)
        }
    };
    tx.finish()?;
    Ok(page)
}

pub(super) fn latest_version(conn: &Connection, doc: &DocId) -> Result<u64, StoreError> {
    let latest: Option<i64> = conn
        .prepare_cached("SELECT MAX(version) FROM events WHERE doc = ?1")?
        .query_row([doc.as_str()], |row| row.get(0))?;
    latest.map_or(Ok(0), |v| stored_u64(v, || format!("latest version of document {doc}")))
}

pub(super) fn read_events(
    conn: &Connection,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<CommittedEvent>, StoreError> {
    if limit == 0 || up_to <= after {
        return Ok(Vec::new());
    }
    // Bounds beyond what SQLite can hold mean "to the end"; no stored version is that large.
    let (after, up_to) = (clamp_to_sql(after), clamp_to_sql(up_to));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(SELECT_EVENTS)?;
    let rows = stmt.query_map(params![doc.as_str(), after, up_to, limit], event_columns)?;
    let mut events = Vec::new();
    for row in rows {
        events.push(decode_event(doc, row?)?);
    }
    Ok(events)
}

/// Reads the snapshot, the events and the rejections in one read transaction, so they describe
/// one consistent state even while a commit lands.
pub(super) fn load_document(conn: &mut Connection, doc: &DocId) -> Result<StoredDocument, StoreError> {
    let tx = conn.transaction()?;
    let snapshot = tx
        .prepare_cached(
            "SELECT version, text, clients FROM snapshots WHERE doc = ?1 ORDER BY version DESC LIMIT 1",
        )?
        .query_row([doc.as_str()], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?)))
        .optional()?
        .map(|(version, text, clients)| decode_snapshot(doc, version, text, &clients))
        .transpose()?;
    let from = match &snapshot {
        Some(s) => version_to_sql(s.version, doc)?,
        None => 0,
    };

    let mut events = Vec::new();
    {
        let mut stmt = tx.prepare_cached(SELECT_EVENTS)?;
        for row in stmt.query_map(params![doc.as_str(), from, i64::MAX, i64::MAX], event_columns)? {
            events.push(decode_event(doc, row?)?);
        }
    }
    let mut rejections = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT client, seq, code, message, at_version FROM rejections \
             WHERE doc = ?1 AND at_version >= ?2 ORDER BY at_version, client, seq",
        )?;
        let rows = stmt.query_map(params![doc.as_str(), from], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?))
        })?;
        for row in rows {
            let (client, seq, code, message, at_version): (String, i64, String, String, i64) = row?;
            rejections.push(Rejection {
                doc: doc.clone(),
                client: stored_client(&client, doc)?,
                seq: seq_from_sql(seq),
                code: stored_code(&code, doc)?,
                message,
                at_version: stored_u64(at_version, || format!("version of a rejection on document {doc}"))?,
            });
        }
    }
    tx.finish()?;
    Ok(StoredDocument { snapshot, events, rejections })
}

pub(super) fn find_outcome(
    conn: &mut Connection,
    doc: &DocId,
    client: &ClientId,
    seq: u64,
) -> Result<Option<Outcome>, StoreError> {
    let tx = conn.transaction()?;
    let key = params![doc.as_str(), client.as_str(), seq_to_sql(seq)];
    let version: Option<i64> =
        tx.prepare_cached(EVENT_VERSION_OF_SEQ)?.query_row(key, |row| row.get(0)).optional()?;
    let outcome = match version {
        Some(v) => Some(Outcome::Committed {
            version: stored_u64(v, || format!("version of seq {seq} of {client} on document {doc}"))?,
        }),
        None => tx
            .prepare_cached(REJECTION_OF_SEQ)?
            .query_row(key, |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .optional()?
            .map(|(code, message)| {
                Ok::<_, StoreError>(Outcome::Rejected { code: stored_code(&code, doc)?, message })
            })
            .transpose()?,
    };
    tx.finish()?;
    Ok(outcome)
}

pub(super) fn last_outcome(
    conn: &mut Connection,
    doc: &DocId,
    client: &ClientId,
) -> Result<Option<ClientRecord>, StoreError> {
    let seq: Option<i64> =
        conn.prepare_cached(LAST_SEQ)?.query_row(params![doc.as_str(), client.as_str()], |row| row.get(0))?;
    let Some(seq) = seq else { return Ok(None) };
    let seq = stored_u64(seq, || format!("last seq of {client} on document {doc}"))?;
    let outcome = find_outcome(conn, doc, client, seq)?
        .ok_or_else(|| StoreError::Corrupt(format!("seq {seq} of {client} on document {doc} vanished")))?;
    Ok(Some(ClientRecord { seq, outcome }))
}
