//! Group commit: a whole [`CommitBatch`] in one transaction, in a fixed number of statements
//! whatever its size.
//!
//! 1. `SELECT epoch ... FOR UPDATE` locks the partition's row and fences: a claim (which updates
//!    that row) waits for this transaction, and this transaction sees any claim committed before
//!    it, so a stale owner can never commit after a newer owner's claim.
//! 2. Transaction-scoped advisory locks on the batch's documents, taken in one global order. The
//!    partition lock already serialises the writers of a document as long as a document maps to one
//!    partition; these keep the cross-table check of step 3 sound even when it does not (a
//!    repartitioned topic), where two owners could otherwise commit and reject the same seq at once.
//! 3. One query checks every (doc, client, seq) of the batch against both tables: a seq has one
//!    outcome, and no single unique key spans events and rejections.
//! 4. One multi-row insert of the events and one of the rejections (`unnest` of array parameters),
//!    each row stamped with the partition and the batch's commit number; one update of the
//!    partition's row (commit number, offset, published mark); `COMMIT`.
//! 5. Only in a batch that deletes documents, before the update of step 4: the documents' deletion
//!    locks, then one statement that purges their events, rejections, snapshots and checkpoints
//!    and stores their tombstones (see the `deletion` module).
//!
//! Steps 1 to 3 go to the server together, and so do the statements of step 4 (all of them when
//! the batch deletes nothing): tokio-postgres pipelines concurrent queries on one connection, and
//! Postgres runs them in order, so a commit costs four round trips (begin, checks, writes, commit)
//! instead of seven or eight, and as many wake-ups fewer of the sequencer and of its backend.
//!
//! The checks that need no database (the fence, the retry of a committed batch, the published
//! bound, versions too large, keys repeated within the batch) are [`crate::commit_rules`], shared
//! with the embedded store: the batch's own verdict is found before the transaction starts, but
//! reported only after the epoch check, so a stale owner always learns first that it is stale.

use std::collections::HashSet;

use deadpool_postgres::{Client, Transaction};
use tandem_protocol::{ClientId, DocId};

use super::codec::{
    clamp_to_sql, column, pg_error, seq_conflict, seq_from_sql, seq_to_sql, stored_client, stored_u64,
    unique_violation, version_conflict,
};
use super::deletion;
use crate::codec::encode_op;
use crate::commit_rules::{self, PartitionState, Plan, ALREADY_COMMITTED, ALREADY_REJECTED};
use crate::{CommitBatch, StoreError};

const LOCK_PARTITION: &str = r#"SELECT epoch, last_commit FROM partitions WHERE "partition" = $1 FOR UPDATE"#;

/// The advisory lock class of documents ('TDOC'); the second key is the document id's hash.
/// Locks are taken in key order, so two commits never wait for each other in a cycle.
const LOCK_DOCUMENTS: &str = "SELECT count(pg_advisory_xact_lock(1413762883, k)) \
     FROM (SELECT DISTINCT hashtext(d) AS k FROM unnest($1::text[]) AS u(d) ORDER BY 1) AS keys";

const FIND_OUTCOME_OF_ANY: &str = "SELECT o.doc, o.client, o.seq, o.committed \
     FROM unnest($1::text[], $2::text[], $3::bigint[]) AS b(doc, client, seq) \
     CROSS JOIN LATERAL ( \
         SELECT e.doc, e.client, e.seq, true AS committed FROM events e \
         WHERE e.doc = b.doc AND e.client = b.client AND e.seq = b.seq \
         UNION ALL \
         SELECT r.doc, r.client, r.seq, false FROM rejections r \
         WHERE r.doc = b.doc AND r.client = b.client AND r.seq = b.seq \
     ) AS o LIMIT 1";

const INSERT_EVENTS: &str = r#"INSERT INTO events
     (doc, version, client, seq, op, author, "partition", commit_seq)
     SELECT u.*, $7::bigint, $8::bigint
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[]) AS u"#;

const INSERT_REJECTIONS: &str = r#"INSERT INTO rejections
     (doc, client, seq, code, message, at_version, "partition", commit_seq)
     SELECT u.*, $7::bigint, $8::bigint
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS u"#;

/// Every change of the partition's row in one statement. `$3` (the offset) and `$4` (published
/// through) are NULL when the batch leaves them as they are.
const UPDATE_PARTITION: &str = r#"UPDATE partitions SET last_commit = $2,
     next_offset = coalesce($3::bigint, next_offset),
     published_through = greatest(published_through, coalesce($4::bigint, 0))
     WHERE "partition" = $1"#;

/// Which of the batch's versions already exists; asked only after an insert failed on the primary
/// key, to name it.
const FIND_TAKEN_VERSION: &str =
    "SELECT b.doc, b.version FROM unnest($1::text[], $2::bigint[]) AS b(doc, version) \
     WHERE EXISTS (SELECT 1 FROM events e WHERE e.doc = b.doc AND e.version = b.version) LIMIT 1";

/// The batch as the array parameters of the statements, one vector per column.
#[derive(Default)]
struct Columns<'a> {
    event_doc: Vec<&'a str>,
    event_version: Vec<i64>,
    event_client: Vec<&'a str>,
    event_seq: Vec<i64>,
    event_op: Vec<String>,
    event_author: Vec<&'a str>,
    rejection_doc: Vec<&'a str>,
    rejection_client: Vec<&'a str>,
    rejection_seq: Vec<i64>,
    rejection_code: Vec<&'a str>,
    rejection_message: Vec<&'a str>,
    rejection_at_version: Vec<i64>,
    /// The batch's documents (deleted ones too), each once: the advisory locks to take.
    docs: Vec<&'a str>,
    /// The batch's deletions, in batch order.
    pub(super) deleted: deletion::Columns<'a>,
    /// Every (doc, client, seq) of the batch, events' then rejections'.
    key_doc: Vec<&'a str>,
    key_client: Vec<&'a str>,
    key_seq: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// Lays the batch out in columns, and finds what makes it unwritable without asking the
    /// database ([`commit_rules::verdict`]).
    fn new(batch: &'a CommitBatch) -> (Self, Result<(), StoreError>) {
        let mut cols = Columns::default();
        let mut verdict = commit_rules::verdict(batch);
        for e in &batch.events {
            cols.event_doc.push(e.doc.as_str());
            // A version too large is in `verdict`: the batch is never written.
            cols.event_version.push(clamp_to_sql(e.version));
            cols.event_client.push(e.client.as_str());
            cols.event_seq.push(seq_to_sql(e.seq));
            cols.event_op.push(encode_op(&e.op));
            cols.event_author.push(&e.author);
        }
        for r in &batch.rejections {
            cols.rejection_doc.push(r.doc.as_str());
            cols.rejection_client.push(r.client.as_str());
            cols.rejection_seq.push(seq_to_sql(r.seq));
            cols.rejection_code.push(r.code.as_str());
            cols.rejection_message.push(&r.message);
            cols.rejection_at_version.push(clamp_to_sql(r.at_version));
        }
        cols.key_doc = [&cols.event_doc[..], &cols.rejection_doc[..]].concat();
        cols.key_client = [&cols.event_client[..], &cols.rejection_client[..]].concat();
        cols.key_seq = [&cols.event_seq[..], &cols.rejection_seq[..]].concat();
        cols.deleted = deletion::Columns::new(&batch.deletions, &mut verdict);
        cols.docs = [&cols.key_doc[..], &cols.deleted.doc[..]].concat();
        cols.docs.sort_unstable();
        cols.docs.dedup();
        (cols, verdict)
    }
}

/// Keeps the first reason a batch cannot be written: the one a sequential check would report.
pub(super) fn refuse(err: StoreError, verdict: &mut Result<(), StoreError>) {
    if verdict.is_ok() {
        *verdict = Err(err);
    }
}

/// Why the transaction stopped.
enum Stop {
    Failed(StoreError),
    /// The events insert hit the primary key: which version was taken is asked afterwards, outside
    /// the aborted transaction.
    VersionTaken,
}

impl From<StoreError> for Stop {
    fn from(err: StoreError) -> Self {
        Stop::Failed(err)
    }
}

/// Commits `batch` on `client` and returns the partition's commit number after it; see the module
/// documentation for the steps.
pub(super) async fn commit(client: &mut Client, batch: &CommitBatch) -> Result<u64, StoreError> {
    let (cols, verdict) = Columns::new(batch);
    match write(client, batch, &cols, verdict).await {
        Ok(number) => Ok(number),
        Err(Stop::Failed(err)) => Err(err),
        Err(Stop::VersionTaken) => Err(name_taken_version(client, &cols).await),
    }
}

async fn write(
    client: &mut Client,
    batch: &CommitBatch,
    cols: &Columns<'_>,
    verdict: Result<(), StoreError>,
) -> Result<u64, Stop> {
    // Dropping `tx` on any early return rolls the transaction back (and frees its locks).
    let tx = client.transaction().await.map_err(fail("begin a commit"))?;
    let partition = i64::from(batch.partition);

    // Steps 1 to 3 in one round trip: the statements are sent together (tokio-postgres pipelines
    // the queries it is polled for at once) and Postgres runs them in this order, so what each
    // sees is what it saw when each waited for the one before. Their answers are read in the same
    // order: a stale owner learns first that it is stale.
    let (row, locked, taken) = tokio::join!(
        lock_partition(&tx, partition),
        lock_documents(&tx, cols),
        find_outcome_of_any(&tx, cols)
    );
    let (current, last_commit) = match row? {
        Some(row) => {
            let epoch: i64 = column(&row, 0, "partition epoch")?;
            let last_commit: i64 = column(&row, 1, "last commit")?;
            (
                stored_u64(epoch, || format!("epoch of partition {}", batch.partition))?,
                stored_u64(last_commit, || format!("last commit of partition {}", batch.partition))?,
            )
        }
        None => (0, 0),
    };
    // Only `published_through` is left out of the state: the row lock makes the fence exact, and
    // the bound is checked against `last_commit`.
    let state = PartitionState { epoch: current, last_commit, published_through: 0 };
    let number = match commit_rules::plan(batch, &state, verdict)? {
        Plan::Answer(number) => {
            // A retry of a batch that did commit, or an epoch check: nothing to write.
            tx.commit().await.map_err(fail("end a commit that writes nothing"))?;
            return Ok(number);
        }
        Plan::Write(number) => number,
    };
    locked?;
    if let Some(row) = taken? {
        return Err(taken_seq(&row)?.into());
    }

    // `plan` only hands out numbers that fit.
    let number_sql = clamp_to_sql(number);
    // `through` fits: it was checked against a stored commit number.
    let published = batch.published_through.map(clamp_to_sql);
    let update = (partition, number_sql, batch.next_offset, published);
    if cols.deleted.doc.is_empty() {
        // Step 4's statements in one round trip, read in order: after a failed insert the others
        // fail only because the transaction is aborted.
        let (events, rejections, updated) = tokio::join!(
            insert_events(&tx, cols, partition, number_sql),
            insert_rejections(&tx, cols, partition, number_sql),
            update_partition(&tx, update)
        );
        events?;
        rejections?;
        updated?;
    } else {
        let (events, rejections) = tokio::join!(
            insert_events(&tx, cols, partition, number_sql),
            insert_rejections(&tx, cols, partition, number_sql)
        );
        events?;
        rejections?;
        // After the inserts: a deletion purges the batch's own events of its document too.
        deletion::delete_documents(&tx, &cols.deleted, partition, number_sql).await?;
        update_partition(&tx, update).await?;
    }
    // An error here leaves the outcome unknown (the connection may have dropped after the server
    // committed): the caller treats it like any lost answer, and resubmissions are deduplicated.
    tx.commit().await.map_err(fail("commit the batch"))?;
    Ok(number)
}

/// Maps a failed statement to the stop that names what it was doing.
fn fail(doing: &'static str) -> impl Fn(tokio_postgres::Error) -> Stop {
    move |e| Stop::Failed(pg_error(e, doing))
}

/// Step 1: the partition's row, locked; `None` for a partition never claimed.
async fn lock_partition(tx: &Transaction<'_>, partition: i64) -> Result<Option<tokio_postgres::Row>, Stop> {
    let stmt = tx.prepare_cached(LOCK_PARTITION).await.map_err(fail("prepare the epoch check"))?;
    tx.query_opt(&stmt, &[&partition]).await.map_err(fail("check the epoch"))
}

/// Step 2.
async fn lock_documents(tx: &Transaction<'_>, cols: &Columns<'_>) -> Result<(), Stop> {
    if cols.docs.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(LOCK_DOCUMENTS).await.map_err(fail("prepare the document locks"))?;
    tx.query_one(&stmt, &[&cols.docs]).await.map_err(fail("lock the batch's documents"))?;
    Ok(())
}

/// Step 3: a (doc, client, seq) of the batch that already has an outcome, if any.
async fn find_outcome_of_any(
    tx: &Transaction<'_>,
    cols: &Columns<'_>,
) -> Result<Option<tokio_postgres::Row>, Stop> {
    if cols.key_doc.is_empty() {
        return Ok(None);
    }
    let stmt = tx.prepare_cached(FIND_OUTCOME_OF_ANY).await.map_err(fail("prepare the seq check"))?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&cols.key_doc, &cols.key_client, &cols.key_seq];
    tx.query_opt(&stmt, &params).await.map_err(fail("check the batch's seqs"))
}

async fn insert_events(
    tx: &Transaction<'_>,
    cols: &Columns<'_>,
    partition: i64,
    commit: i64,
) -> Result<(), Stop> {
    if cols.event_doc.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(INSERT_EVENTS).await.map_err(fail("prepare the event insert"))?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &cols.event_doc,
        &cols.event_version,
        &cols.event_client,
        &cols.event_seq,
        &cols.event_op,
        &cols.event_author,
        &partition,
        &commit,
    ];
    match tx.execute(&stmt, &params).await {
        Ok(_) => Ok(()),
        Err(err) => Err(match unique_violation(&err) {
            Some("events_pkey") => Stop::VersionTaken,
            _ => Stop::Failed(pg_error(err, "insert the batch's events")),
        }),
    }
}

async fn insert_rejections(
    tx: &Transaction<'_>,
    cols: &Columns<'_>,
    partition: i64,
    commit: i64,
) -> Result<(), Stop> {
    if cols.rejection_doc.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(INSERT_REJECTIONS).await.map_err(fail("prepare the rejection insert"))?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &cols.rejection_doc,
        &cols.rejection_client,
        &cols.rejection_seq,
        &cols.rejection_code,
        &cols.rejection_message,
        &cols.rejection_at_version,
        &partition,
        &commit,
    ];
    tx.execute(&stmt, &params).await.map_err(fail("insert the batch's rejections"))?;
    Ok(())
}

/// The partition's row after the commit: (partition, commit number, offset, published through).
async fn update_partition(
    tx: &Transaction<'_>,
    (partition, commit, offset, published): (i64, i64, Option<i64>, Option<i64>),
) -> Result<(), Stop> {
    let stmt = tx.prepare_cached(UPDATE_PARTITION).await.map_err(fail("prepare the partition update"))?;
    tx.execute(&stmt, &[&partition, &commit, &offset, &published])
        .await
        .map_err(fail("update the partition"))?;
    Ok(())
}

/// The conflict for a (doc, client, seq) of the batch that the store already has an outcome for.
fn taken_seq(row: &tokio_postgres::Row) -> Result<StoreError, StoreError> {
    let doc: &str = column(row, 0, "document of a taken seq")?;
    let doc =
        DocId::parse(doc).map_err(|e| StoreError::Corrupt(format!("document id {doc:?} stored: {e}")))?;
    let client: ClientId = stored_client(column(row, 1, "client of a taken seq")?, &doc)?;
    let seq = seq_from_sql(column(row, 2, "a taken seq")?);
    let committed: bool = column(row, 3, "outcome of a taken seq")?;
    let what = if committed { ALREADY_COMMITTED } else { ALREADY_REJECTED };
    Ok(seq_conflict(&doc, &client, seq, what))
}

/// The conflict naming the first of the batch's versions that exists. The version that failed the
/// insert is still there to be found unless its document was deleted meanwhile; then the fallback
/// names the batch's documents.
async fn name_taken_version(client: &Client, cols: &Columns<'_>) -> StoreError {
    let found = async {
        let stmt = client.prepare_cached(FIND_TAKEN_VERSION).await?;
        client.query_opt(&stmt, &[&cols.event_doc, &cols.event_version]).await
    };
    match found.await {
        Ok(Some(row)) => {
            let doc: Result<&str, _> = column(&row, 0, "document of a taken version");
            let version: Result<i64, _> = column(&row, 1, "a taken version");
            match (doc, version) {
                (Ok(doc), Ok(version)) => match (DocId::parse(doc), u64::try_from(version)) {
                    (Ok(doc), Ok(version)) => version_conflict(&doc, version),
                    _ => StoreError::Corrupt(format!("version {version} of document {doc:?} is stored")),
                },
                (Err(err), _) | (_, Err(err)) => err,
            }
        }
        // The row that failed the insert cannot disappear; if it did, say what is known.
        Ok(None) => StoreError::Conflict(format!(
            "a version of documents {:?} already exists",
            cols.event_doc.iter().collect::<HashSet<_>>()
        )),
        Err(err) => pg_error(err, "find which version of the batch exists"),
    }
}
