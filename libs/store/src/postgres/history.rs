//! What the Documents API reads and writes besides the log itself: the snapshots kept for past
//! versions, the history with authors and commit times, and checkpoints. (Deleting a document is
//! part of a commit: see the `deletion` module, which also explains the lock that snapshot and
//! checkpoint writes take here.)

use deadpool_postgres::{Client, Transaction};
use tandem_protocol::DocId;

use super::codec::{
    clamp_to_sql, column, decode_event, decode_snapshot, pg_error, stored_u64, version_to_sql,
};
use super::deletion::lock_shared;
use super::queries::LATEST_VERSION;
use crate::history::{checkpoint_after_latest, same_version, snapshot_after_latest};
use crate::{Checkpoint, HistoryEntry, Snapshot, StoreError, SNAPSHOT_WINDOW};

/// Milliseconds since the Unix epoch of a `timestamptz`, rounded down.
macro_rules! epoch_ms {
    ($column:literal) => {
        concat!("floor(extract(epoch FROM ", $column, ") * 1000)::bigint")
    };
}

const SNAPSHOT_AT_OR_BEFORE: &str = "SELECT version, text, clients::text FROM snapshots \
     WHERE doc = $1 AND version <= $2 ORDER BY version DESC LIMIT 1";
const UPSERT_SNAPSHOT: &str =
    "INSERT INTO snapshots (doc, version, text, clients) VALUES ($1, $2, $3, $4::text::jsonb) \
     ON CONFLICT (doc, version) DO UPDATE SET text = excluded.text, clients = excluded.clients";
/// The retention rule (see [`crate::SNAPSHOT_WINDOW`]): a snapshot goes when it is neither one of
/// the two newest nor the oldest of its window of `$2` versions.
const TRIM_SNAPSHOTS: &str = "DELETE FROM snapshots WHERE doc = $1 \
     AND version < (SELECT version FROM snapshots WHERE doc = $1 ORDER BY version DESC LIMIT 1 OFFSET 1) \
     AND version NOT IN (SELECT min(version) FROM snapshots WHERE doc = $1 GROUP BY version / $2)";
const SELECT_HISTORY: &str = concat!(
    "SELECT version, client, seq, op, author, ",
    epoch_ms!("committed_at"),
    " FROM events WHERE doc = $1 AND version > $2 AND version <= $3 ORDER BY version LIMIT $4"
);
const SELECT_CHECKPOINT: &str = concat!(
    "SELECT version, author, ",
    epoch_ms!("created_at"),
    " FROM checkpoints WHERE doc = $1 AND name = $2"
);
/// `ON CONFLICT DO NOTHING`: a concurrent creation of the same name wins, and is read back after.
const INSERT_CHECKPOINT: &str =
    "INSERT INTO checkpoints (doc, name, version, author) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (doc, name) DO NOTHING";
const LIST_CHECKPOINTS: &str = concat!(
    "SELECT name, version, author, ",
    epoch_ms!("created_at"),
    " FROM checkpoints WHERE doc = $1 ORDER BY version, name"
);

/// Stores a snapshot (replacing one of the same version), then applies the retention rule; a
/// snapshot of a version after the document's latest is refused (see
/// [`crate::EventStore::write_snapshot`]).
pub(super) async fn write_snapshot(client: &mut Client, snapshot: &Snapshot) -> Result<(), StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let doc = &snapshot.doc;
    let version = version_to_sql(snapshot.version, doc)?;
    let clients = serde_json::to_string(&snapshot.clients).expect("client records always encode as JSON");
    let window = i64::try_from(SNAPSHOT_WINDOW).expect("the snapshot window fits a bigint");
    let tx = client.transaction().await.map_err(fail("begin writing a snapshot"))?;
    lock_shared(&tx, doc).await?;
    let latest = latest_version(&tx, doc).await?;
    if snapshot.version > latest {
        return Err(snapshot_after_latest(doc, snapshot.version, latest));
    }
    let stmt = tx.prepare_cached(UPSERT_SNAPSHOT).await.map_err(fail("prepare the snapshot write"))?;
    tx.execute(&stmt, &[&doc.as_str(), &version, &snapshot.text.as_bytes(), &clients])
        .await
        .map_err(fail("write the snapshot"))?;
    let stmt = tx.prepare_cached(TRIM_SNAPSHOTS).await.map_err(fail("prepare the snapshot trim"))?;
    tx.execute(&stmt, &[&doc.as_str(), &window]).await.map_err(fail("drop old snapshots"))?;
    tx.commit().await.map_err(fail("commit the snapshot"))?;
    Ok(())
}

async fn latest_version(tx: &Transaction<'_>, doc: &DocId) -> Result<u64, StoreError> {
    let stmt = tx.prepare_cached(LATEST_VERSION).await.map_err(|e| pg_error(e, "prepare latest version"))?;
    let row =
        tx.query_one(&stmt, &[&doc.as_str()]).await.map_err(|e| pg_error(e, "read the latest version"))?;
    let latest: Option<i64> = column(&row, 0, "latest version")?;
    latest.map_or(Ok(0), |v| stored_u64(v, || format!("latest version of document {doc}")))
}

pub(super) async fn snapshot_at_or_before(
    client: &Client,
    doc: &DocId,
    version: u64,
) -> Result<Option<Snapshot>, StoreError> {
    let stmt = client
        .prepare_cached(SNAPSHOT_AT_OR_BEFORE)
        .await
        .map_err(|e| pg_error(e, "prepare the snapshot read"))?;
    let row = client
        .query_opt(&stmt, &[&doc.as_str(), &clamp_to_sql(version)])
        .await
        .map_err(|e| pg_error(e, "read a snapshot"))?;
    row.map(|row| decode_snapshot(doc, &row)).transpose()
}

pub(super) async fn read_history(
    client: &Client,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    if limit == 0 || up_to <= after {
        return Ok(Vec::new());
    }
    let (after, up_to) = (clamp_to_sql(after), clamp_to_sql(up_to));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt =
        client.prepare_cached(SELECT_HISTORY).await.map_err(|e| pg_error(e, "prepare the history read"))?;
    let rows = client
        .query(&stmt, &[&doc.as_str(), &after, &up_to, &limit])
        .await
        .map_err(|e| pg_error(e, "read the history"))?;
    rows.iter()
        .map(|row| {
            Ok(HistoryEntry {
                event: decode_event(doc, row)?,
                committed_at_ms: column(row, 5, "commit time")?,
            })
        })
        .collect()
}

/// Creates the checkpoint, or returns the stored one of the same name and version; see
/// [`crate::EventStore::create_checkpoint`] for the conflicts.
pub(super) async fn create_checkpoint(
    client: &mut Client,
    wanted: &Checkpoint,
) -> Result<Checkpoint, StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let doc = &wanted.doc;
    let version = version_to_sql(wanted.version, doc)?;
    let tx = client.transaction().await.map_err(fail("begin creating a checkpoint"))?;
    lock_shared(&tx, doc).await?;
    if let Some(stored) = find_checkpoint(&tx, wanted).await? {
        return same_version(stored, wanted.version);
    }
    let latest = latest_version(&tx, doc).await?;
    if wanted.version > latest {
        return Err(checkpoint_after_latest(wanted, latest));
    }
    let stmt = tx.prepare_cached(INSERT_CHECKPOINT).await.map_err(fail("prepare the checkpoint write"))?;
    tx.execute(&stmt, &[&doc.as_str(), &wanted.name, &version, &wanted.author])
        .await
        .map_err(fail("write the checkpoint"))?;
    // Ours, or the one a concurrent creation of the same name committed first.
    let stored = find_checkpoint(&tx, wanted)
        .await?
        .ok_or_else(|| StoreError::Unavailable(format!("checkpoint {:?} of {doc} vanished", wanted.name)))?;
    tx.commit().await.map_err(fail("commit the checkpoint"))?;
    same_version(stored, wanted.version)
}

async fn find_checkpoint(
    tx: &Transaction<'_>,
    wanted: &Checkpoint,
) -> Result<Option<Checkpoint>, StoreError> {
    let stmt =
        tx.prepare_cached(SELECT_CHECKPOINT).await.map_err(|e| pg_error(e, "prepare the checkpoint read"))?;
    let row = tx
        .query_opt(&stmt, &[&wanted.doc.as_str(), &wanted.name])
        .await
        .map_err(|e| pg_error(e, "read a checkpoint"))?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = column(&row, 0, "checkpoint version")?;
    Ok(Some(Checkpoint {
        version: stored_u64(version, || {
            format!("version of checkpoint {:?} of {}", wanted.name, wanted.doc)
        })?,
        author: column(&row, 1, "checkpoint author")?,
        created_at_ms: column(&row, 2, "checkpoint time")?,
        ..wanted.clone()
    }))
}

pub(super) async fn list_checkpoints(client: &Client, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError> {
    let stmt = client
        .prepare_cached(LIST_CHECKPOINTS)
        .await
        .map_err(|e| pg_error(e, "prepare the checkpoint list"))?;
    let rows = client.query(&stmt, &[&doc.as_str()]).await.map_err(|e| pg_error(e, "list checkpoints"))?;
    rows.iter()
        .map(|row| {
            let name: String = column(row, 0, "checkpoint name")?;
            let version: i64 = column(row, 1, "checkpoint version")?;
            let version = stored_u64(version, || format!("version of checkpoint {name:?} of {doc}"))?;
            Ok(Checkpoint {
                doc: doc.clone(),
                version,
                author: column(row, 2, "checkpoint author")?,
                created_at_ms: column(row, 3, "checkpoint time")?,
                name,
            })
        })
        .collect()
}
