//! Every operation but the commit and the history's: claims, the outbox and the sequencer's reads,
//! each one statement or one short transaction on a pooled connection, through statements prepared
//! once per connection.

use deadpool_postgres::Client;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{ClientId, DocId};
use tokio_postgres::IsolationLevel;

use super::codec::{
    clamp_to_sql, column, decode_event, decode_snapshot, pg_error, seq_to_sql, stored_code, stored_u64,
    version_to_sql,
};
use crate::codec::{decode_outbox, OutboxFields};
use crate::commit_rules::{self, PartitionState};
use crate::outbox::{self, OutboxRow, Page};
use crate::{ClientRecord, PartitionClaim, PartitionId, StoreError, StoredDocument, UnpublishedCommit};

const CLAIM_PARTITION: &str = r#"INSERT INTO partitions ("partition", epoch, next_offset) VALUES ($1, 1, NULL)
     ON CONFLICT ("partition") DO UPDATE SET epoch = partitions.epoch + 1
     RETURNING epoch, next_offset, last_commit, published_through"#;
const LOCK_PARTITION: &str =
    r#"SELECT epoch, last_commit, published_through FROM partitions WHERE "partition" = $1 FOR UPDATE"#;
const MARK_PUBLISHED: &str =
    r#"UPDATE partitions SET published_through = greatest(published_through, $2) WHERE "partition" = $1"#;
const PUBLISHED_THROUGH: &str = r#"SELECT published_through FROM partitions WHERE "partition" = $1"#;
/// The outbox in commit order, `kind` 0 for events, 1 for rejections and 2 for tombstones. The
/// columns after the document: version (a rejection's `at_version`, a tombstone's
/// `last_version`), client and seq ('' and 0 for a tombstone), op or code ('' for a tombstone),
/// message (NULL but for a rejection), author ('' for a rejection). Each branch is a range scan
/// of its table's `(partition, commit_seq)` index, merged.
const UNPUBLISHED_AFTER: &str = r#"
     SELECT commit_seq, 0, doc, version, client, seq, op, NULL::text, author FROM events
     WHERE "partition" = $1 AND commit_seq > $2
     UNION ALL
     SELECT commit_seq, 1, doc, at_version, client, seq, code, message, '' FROM rejections
     WHERE "partition" = $1 AND commit_seq > $2
     UNION ALL
     SELECT commit_seq, 2, doc, last_version, '', 0, '', NULL::text, author FROM tombstones
     WHERE "partition" = $1 AND commit_seq > $2
     ORDER BY 1 LIMIT $3"#;
const UNPUBLISHED_OF_COMMIT: &str = r#"
     SELECT commit_seq, 0, doc, version, client, seq, op, NULL::text, author FROM events
     WHERE "partition" = $1 AND commit_seq = $2
     UNION ALL
     SELECT commit_seq, 1, doc, at_version, client, seq, code, message, '' FROM rejections
     WHERE "partition" = $1 AND commit_seq = $2
     UNION ALL
     SELECT commit_seq, 2, doc, last_version, '', 0, '', NULL::text, author FROM tombstones
     WHERE "partition" = $1 AND commit_seq = $2"#;
pub(super) const LATEST_VERSION: &str = "SELECT max(version) FROM events WHERE doc = $1";
const SELECT_EVENTS: &str = "SELECT version, client, seq, op, author FROM events \
     WHERE doc = $1 AND version > $2 AND version <= $3 ORDER BY version LIMIT $4";
const NEWEST_SNAPSHOT: &str =
    "SELECT version, text, clients::text FROM snapshots WHERE doc = $1 ORDER BY version DESC LIMIT 1";
const EVENTS_AFTER: &str =
    "SELECT version, client, seq, op, author FROM events WHERE doc = $1 AND version > $2 ORDER BY version";
const REJECTIONS_FROM: &str = "SELECT client, seq, code, message, at_version FROM rejections \
     WHERE doc = $1 AND at_version >= $2 ORDER BY at_version, client, seq";
/// One statement, so one consistent view: an outcome is in one table or the other.
const FIND_OUTCOME: &str =
    "SELECT version, NULL::text, NULL::text FROM events WHERE doc = $1 AND client = $2 AND seq = $3 \
     UNION ALL \
     SELECT NULL::bigint, code, message FROM rejections WHERE doc = $1 AND client = $2 AND seq = $3 \
     LIMIT 1";

/// The highest seq of a client on a document, over events and rejections (NULL for none): each
/// half is one look-up in the (doc, client, seq) key; `greatest` ignores a NULL half.
const LAST_SEQ: &str = "SELECT greatest( \
       (SELECT max(seq) FROM events WHERE doc = $1 AND client = $2), \
       (SELECT max(seq) FROM rejections WHERE doc = $1 AND client = $2))";

/// Bumps the partition's epoch (creating its row at epoch 1) and returns it with the stored offset
/// and outbox position. The update waits for a commit holding the row, so the claim is ordered
/// after it.
pub(super) async fn claim_partition(
    client: &Client,
    partition: PartitionId,
) -> Result<PartitionClaim, StoreError> {
    let stmt = client.prepare_cached(CLAIM_PARTITION).await.map_err(|e| pg_error(e, "prepare the claim"))?;
    let row = client
        .query_one(&stmt, &[&i64::from(partition)])
        .await
        .map_err(|e| pg_error(e, "claim the partition"))?;
    let epoch: i64 = column(&row, 0, "claimed epoch")?;
    let epoch = stored_u64(epoch, || format!("epoch of partition {partition}"))?;
    let next_offset: Option<i64> = column(&row, 1, "stored offset")?;
    let last_commit: i64 = column(&row, 2, "last commit")?;
    let last_commit = stored_u64(last_commit, || format!("last commit of partition {partition}"))?;
    let published_through: i64 = column(&row, 3, "published commit")?;
    let published_through =
        stored_u64(published_through, || format!("published commit of partition {partition}"))?;
    tracing::info!(partition, epoch, last_commit, published_through, "partition claimed");
    Ok(PartitionClaim { epoch, next_offset, last_commit, published_through })
}

/// Raises the partition's published mark, fenced like a commit: the row is locked while the epoch
/// is checked, so a claim cannot slip in between.
pub(super) async fn mark_published(
    client: &mut Client,
    partition: PartitionId,
    epoch: u64,
    through: u64,
) -> Result<(), StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let tx = client.transaction().await.map_err(fail("begin marking published"))?;
    let key = i64::from(partition);
    let stmt = tx.prepare_cached(LOCK_PARTITION).await.map_err(fail("prepare the epoch check"))?;
    let (current, last_commit, published) =
        match tx.query_opt(&stmt, &[&key]).await.map_err(fail("check the epoch"))? {
            Some(row) => {
                let epoch: i64 = column(&row, 0, "partition epoch")?;
                let last_commit: i64 = column(&row, 1, "last commit")?;
                let published: i64 = column(&row, 2, "published commit")?;
                (
                    stored_u64(epoch, || format!("epoch of partition {partition}"))?,
                    stored_u64(last_commit, || format!("last commit of partition {partition}"))?,
                    stored_u64(published, || format!("published commit of partition {partition}"))?,
                )
            }
            None => (0, 0, 0),
        };
    let state = PartitionState { epoch: current, last_commit, published_through: published };
    if commit_rules::mark_published(partition, epoch, through, &state)? {
        let stmt = tx.prepare_cached(MARK_PUBLISHED).await.map_err(fail("prepare the published mark"))?;
        tx.execute(&stmt, &[&key, &clamp_to_sql(through)]).await.map_err(fail("mark published"))?;
    }
    tx.commit().await.map_err(fail("commit the published mark"))?;
    Ok(())
}

/// One page of the outbox, read in one `REPEATABLE READ` transaction (see [`outbox`] for the
/// paging).
pub(super) async fn unpublished(
    client: &mut Client,
    partition: PartitionId,
    after: u64,
    limit: usize,
) -> Result<Vec<UnpublishedCommit>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail("begin reading the outbox"))?;
    let key = i64::from(partition);
    let stmt = tx.prepare_cached(PUBLISHED_THROUGH).await.map_err(fail("prepare the published read"))?;
    let published = match tx.query_opt(&stmt, &[&key]).await.map_err(fail("read the published mark"))? {
        Some(row) => {
            let published: i64 = column(&row, 0, "published commit")?;
            stored_u64(published, || format!("published commit of partition {partition}"))?
        }
        None => 0,
    };
    let from = clamp_to_sql(after.max(published));
    let stmt = tx.prepare_cached(UNPUBLISHED_AFTER).await.map_err(fail("prepare the outbox read"))?;
    let rows = tx
        .query(&stmt, &[&key, &from, &outbox::rows_to_read(limit)])
        .await
        .map_err(fail("read the outbox"))?;
    let rows = rows.iter().map(decode_outbox_row).collect::<Result<Vec<_>, _>>()?;
    let page = match outbox::page(rows, limit) {
        Page::Done(page) => page,
        Page::FirstCommitTooLarge(commit) => {
            let stmt =
                tx.prepare_cached(UNPUBLISHED_OF_COMMIT).await.map_err(fail("prepare the commit read"))?;
            let rows = tx
                .query(&stmt, &[&key, &clamp_to_sql(commit)])
                .await
                .map_err(fail("read a commit of the outbox"))?;
            outbox::group(rows.iter().map(decode_outbox_row).collect::<Result<Vec<_>, _>>()?)
        }
    };
    tx.commit().await.map_err(fail("end reading the outbox"))?;
    Ok(page)
}

/// An outbox row: `commit_seq, kind, doc, version, client, seq, op or code, message, author` (see
/// [`UNPUBLISHED_AFTER`]).
fn decode_outbox_row(row: &tokio_postgres::Row) -> Result<OutboxRow, StoreError> {
    let kind: i32 = column(row, 1, "outbox record kind")?;
    decode_outbox(OutboxFields {
        commit: column(row, 0, "outbox commit")?,
        kind: i64::from(kind),
        doc: column(row, 2, "outbox document")?,
        version: column(row, 3, "outbox version")?,
        client: column(row, 4, "outbox client")?,
        seq: column(row, 5, "outbox seq")?,
        text: column(row, 6, "outbox op or code")?,
        message: column(row, 7, "outbox message")?,
        author: column(row, 8, "outbox author")?,
    })
}

pub(super) async fn latest_version(client: &Client, doc: &DocId) -> Result<u64, StoreError> {
    let stmt =
        client.prepare_cached(LATEST_VERSION).await.map_err(|e| pg_error(e, "prepare latest version"))?;
    let row = client
        .query_one(&stmt, &[&doc.as_str()])
        .await
        .map_err(|e| pg_error(e, "read the latest version"))?;
    let latest: Option<i64> = column(&row, 0, "latest version")?;
    latest.map_or(Ok(0), |v| stored_u64(v, || format!("latest version of document {doc}")))
}

pub(super) async fn read_events(
    client: &Client,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<CommittedEvent>, StoreError> {
    if limit == 0 || up_to <= after {
        return Ok(Vec::new());
    }
    let (after, up_to) = (clamp_to_sql(after), clamp_to_sql(up_to));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt =
        client.prepare_cached(SELECT_EVENTS).await.map_err(|e| pg_error(e, "prepare the event read"))?;
    let rows = client
        .query(&stmt, &[&doc.as_str(), &after, &up_to, &limit])
        .await
        .map_err(|e| pg_error(e, "read events"))?;
    rows.iter().map(|row| decode_event(doc, row)).collect()
}

/// Reads the snapshot, the events and the rejections in one `REPEATABLE READ` transaction, so they
/// describe one state even while a commit of the document lands between the statements.
pub(super) async fn load_document(client: &mut Client, doc: &DocId) -> Result<StoredDocument, StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail("begin loading a document"))?;

    let stmt = tx.prepare_cached(NEWEST_SNAPSHOT).await.map_err(fail("prepare the snapshot read"))?;
    let snapshot = match tx.query_opt(&stmt, &[&doc.as_str()]).await.map_err(fail("read the snapshot"))? {
        Some(row) => Some(decode_snapshot(doc, &row)?),
        None => None,
    };
    let from = match &snapshot {
        Some(s) => version_to_sql(s.version, doc)?,
        None => 0,
    };

    let stmt = tx.prepare_cached(EVENTS_AFTER).await.map_err(fail("prepare the event read"))?;
    let rows = tx.query(&stmt, &[&doc.as_str(), &from]).await.map_err(fail("read events"))?;
    let events = rows.iter().map(|row| decode_event(doc, row)).collect::<Result<Vec<_>, _>>()?;

    let stmt = tx.prepare_cached(REJECTIONS_FROM).await.map_err(fail("prepare the rejection read"))?;
    let rows = tx.query(&stmt, &[&doc.as_str(), &from]).await.map_err(fail("read rejections"))?;
    let rejections = rows.iter().map(|row| decode_rejection(doc, row)).collect::<Result<Vec<_>, _>>()?;

    tx.commit().await.map_err(fail("end loading a document"))?;
    Ok(StoredDocument { snapshot, events, rejections })
}

/// A rejection row of `doc`: `client, seq, code, message, at_version`.
fn decode_rejection(doc: &DocId, row: &tokio_postgres::Row) -> Result<Rejection, StoreError> {
    crate::codec::decode_rejection(
        doc,
        column(row, 0, "rejection client")?,
        column(row, 1, "rejection seq")?,
        column(row, 2, "rejection code")?,
        column(row, 3, "rejection message")?,
        column(row, 4, "rejection version")?,
    )
}

pub(super) async fn last_outcome(
    client: &Client,
    doc: &DocId,
    who: &ClientId,
) -> Result<Option<ClientRecord>, StoreError> {
    let stmt = client.prepare_cached(LAST_SEQ).await.map_err(|e| pg_error(e, "prepare the last seq read"))?;
    let row = client
        .query_one(&stmt, &[&doc.as_str(), &who.as_str()])
        .await
        .map_err(|e| pg_error(e, "read the last seq"))?;
    let seq: Option<i64> = column(&row, 0, "last seq")?;
    let Some(seq) = seq else { return Ok(None) };
    let seq = stored_u64(seq, || format!("last seq of {who} on document {doc}"))?;
    let outcome = find_outcome(client, doc, who, seq)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("seq {seq} of {who} on document {doc} vanished")))?;
    Ok(Some(ClientRecord { seq, outcome }))
}

pub(super) async fn find_outcome(
    client: &Client,
    doc: &DocId,
    who: &ClientId,
    seq: u64,
) -> Result<Option<Outcome>, StoreError> {
    let stmt =
        client.prepare_cached(FIND_OUTCOME).await.map_err(|e| pg_error(e, "prepare the outcome read"))?;
    let row = client
        .query_opt(&stmt, &[&doc.as_str(), &who.as_str(), &seq_to_sql(seq)])
        .await
        .map_err(|e| pg_error(e, "read an outcome"))?;
    let Some(row) = row else { return Ok(None) };
    let version: Option<i64> = column(&row, 0, "committed version")?;
    if let Some(version) = version {
        let version = stored_u64(version, || format!("version of seq {seq} of {who} on document {doc}"))?;
        return Ok(Some(Outcome::Committed { version }));
    }
    let code: &str = column(&row, 1, "rejection code")?;
    let message: String = column(&row, 2, "rejection message")?;
    Ok(Some(Outcome::Rejected { code: stored_code(code, doc)?, message }))
}
