//! Deleting documents inside a commit, and the lock that keeps a deletion and a write of the same
//! document's snapshots or checkpoints from crossing.
//!
//! The race it closes: the sequencer writes a snapshot in a task of its own after the commit that
//! made its version durable, and a checkpoint is created after its caller read the latest version.
//! Either may reach the database while a deletion of the document commits; under `READ COMMITTED`
//! the deletion's `DELETE` cannot see a row inserted by a transaction still open, so the stale row
//! would outlive the purge and be read as the next document of that id. So a deletion takes an
//! exclusive transaction-scoped advisory lock per document (class 'TDEL', taken in key order after
//! the commit's 'TDOC' locks), and a snapshot or checkpoint write takes the same lock shared
//! before it checks that its version exists ([`lock_shared`]): whichever comes second sees the
//! other's outcome. Commits that delete nothing never take these locks, so snapshot and
//! checkpoint writes never wait for, or delay, the ordinary group commit.

use deadpool_postgres::Transaction;
use tandem_protocol::records::DocumentDeleted;
use tandem_protocol::DocId;

use super::codec::{pg_error, version_to_sql};
use super::commit::refuse;
use crate::StoreError;

/// The advisory lock class of deletions ('TDEL'); the second key is the document id's hash, as
/// for the commit's document locks.
const LOCK_DELETED: &str = "SELECT count(pg_advisory_xact_lock(1413760332, k)) \
     FROM (SELECT DISTINCT hashtext(d) AS k FROM unnest($1::text[]) AS u(d) ORDER BY 1) AS keys";
const LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(1413760332, hashtext($1))";

/// Every purge and the tombstones in one statement: data-modifying CTEs all run, to completion,
/// whether or not the main statement reads them, and each sees the batch's events inserted by the
/// statements before it.
const PURGE_AND_BURY: &str = r#"WITH
     e AS (DELETE FROM events WHERE doc = ANY($2::text[])),
     r AS (DELETE FROM rejections WHERE doc = ANY($2::text[])),
     s AS (DELETE FROM snapshots WHERE doc = ANY($2::text[])),
     c AS (DELETE FROM checkpoints WHERE doc = ANY($2::text[]))
     INSERT INTO tombstones ("partition", commit_seq, ordinal, doc, last_version, author)
     SELECT $5::bigint, $6::bigint, u.*
     FROM unnest($1::integer[], $2::text[], $3::bigint[], $4::text[]) AS u"#;

/// A batch's deletions as array parameters, in batch order.
#[derive(Default)]
pub(super) struct Columns<'a> {
    ordinal: Vec<i32>,
    pub(super) doc: Vec<&'a str>,
    last_version: Vec<i64>,
    author: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    /// Lays the deletions out; a last version too large to store is kept in `verdict`.
    pub(super) fn new(deletions: &'a [DocumentDeleted], verdict: &mut Result<(), StoreError>) -> Self {
        let mut cols = Columns::default();
        for (ordinal, d) in deletions.iter().enumerate() {
            let last_version = version_to_sql(d.last_version, &d.doc).unwrap_or_else(|err| {
                refuse(err, verdict);
                i64::MAX
            });
            let ordinal = i32::try_from(ordinal).unwrap_or_else(|_| {
                refuse(
                    StoreError::Conflict(format!("a batch deletes more than {} documents", i32::MAX)),
                    verdict,
                );
                i32::MAX
            });
            cols.ordinal.push(ordinal);
            cols.doc.push(d.doc.as_str());
            cols.last_version.push(last_version);
            cols.author.push(&d.author);
        }
        cols
    }
}

/// Purges the deleted documents and stores their tombstones under the commit `commit` of
/// `partition`, inside the commit's transaction. Nothing to do (and no round trip) without
/// deletions.
pub(super) async fn delete_documents(
    tx: &Transaction<'_>,
    cols: &Columns<'_>,
    partition: i64,
    commit: i64,
) -> Result<(), StoreError> {
    if cols.doc.is_empty() {
        return Ok(());
    }
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let stmt = tx.prepare_cached(LOCK_DELETED).await.map_err(fail("prepare the deletion locks"))?;
    tx.query_one(&stmt, &[&cols.doc]).await.map_err(fail("lock the deleted documents"))?;
    let stmt = tx.prepare_cached(PURGE_AND_BURY).await.map_err(fail("prepare the deletion"))?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&cols.ordinal, &cols.doc, &cols.last_version, &cols.author, &partition, &commit];
    tx.execute(&stmt, &params).await.map_err(fail("delete documents"))?;
    Ok(())
}

/// Takes `doc`'s deletion lock shared, until the end of `tx`: no deletion of the document commits
/// between this and the end of `tx`, and one that committed before is visible to what follows.
pub(super) async fn lock_shared(tx: &Transaction<'_>, doc: &DocId) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(LOCK_SHARED).await.map_err(|e| pg_error(e, "prepare the deletion lock"))?;
    tx.query_one(&stmt, &[&doc.as_str()]).await.map_err(|e| pg_error(e, "take the deletion lock"))?;
    Ok(())
}
