//! What the Documents API reads and writes besides the log itself: the snapshots kept for past
//! versions, checkpoints, and the deletion of a document (which runs inside a commit, see
//! [`delete_documents`]). (The history's events are read like the log's, in `queries`.)
//!
//! Every write here runs in an `IMMEDIATE` transaction, under SQLite's one write lock, so each
//! check (a version that exists, a name that is free) holds until the write commits: no commit,
//! and so no deletion, can land in between.

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tandem_protocol::DocId;

use super::codec::now_ms;
use super::queries::latest_version;
use super::tiers::doc_id;
use crate::codec::{clamp_to_sql, decode_snapshot, encode_clients, stored_u64, version_to_sql};
use crate::history::{checkpoint_after_latest, same_version, snapshot_after_latest};
use crate::{Checkpoint, CommitBatch, Snapshot, StoreError, SNAPSHOT_WINDOW};

const SNAPSHOT_AT_OR_BEFORE: &str = "SELECT version, text, clients FROM snapshots \
     WHERE doc = ?1 AND version <= ?2 ORDER BY version DESC LIMIT 1";
const UPSERT_SNAPSHOT: &str = "INSERT INTO snapshots (doc, version, text, clients) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (doc, version) DO UPDATE SET text = excluded.text, clients = excluded.clients";
/// The retention rule (see [`crate::SNAPSHOT_WINDOW`]): a snapshot goes when it is neither one of
/// the two newest nor the oldest of its window of `?2` versions.
const TRIM_SNAPSHOTS: &str = "DELETE FROM snapshots WHERE doc = ?1 \
     AND version < (SELECT version FROM snapshots WHERE doc = ?1 ORDER BY version DESC LIMIT 1 OFFSET 1) \
     AND version NOT IN (SELECT min(version) FROM snapshots WHERE doc = ?1 GROUP BY version / ?2)";
const SELECT_CHECKPOINT: &str =
    "SELECT version, author, created_at FROM checkpoints WHERE doc = ?1 AND name = ?2";
const INSERT_CHECKPOINT: &str =
    "INSERT INTO checkpoints (doc, name, version, author, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const LIST_CHECKPOINTS: &str =
    "SELECT name, version, author, created_at FROM checkpoints WHERE doc = ?1 ORDER BY version, name";
/// What deleting a document purges, by its interned id (`?1`): its events (found through the keys
/// of both tiers), then the keys and its rejections, each a range scan of its table's key.
const PURGE_LOG: [&str; 6] = [
    "DELETE FROM event_log WHERE id IN ( \
       SELECT event FROM versions WHERE doc = ?1 UNION ALL SELECT event FROM recent_versions WHERE doc = ?1)",
    "DELETE FROM versions WHERE doc = ?1",
    "DELETE FROM recent_versions WHERE doc = ?1",
    "DELETE FROM seqs WHERE doc = ?1",
    "DELETE FROM recent_seqs WHERE doc = ?1",
    "DELETE FROM rejection_log WHERE doc = ?1",
];
/// And by its name (`?1`): its snapshots and checkpoints.
const PURGE_BY_NAME: [&str; 2] =
    ["DELETE FROM snapshots WHERE doc = ?1", "DELETE FROM checkpoints WHERE doc = ?1"];
const INSERT_TOMBSTONE: &str = r#"INSERT INTO tombstones
     ("partition", commit_seq, ordinal, doc, last_version, author, deleted_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#;

/// Stores a snapshot (replacing one of the same version), then applies the retention rule.
///
/// A snapshot of a version after the document's latest is refused: the document was deleted
/// while the snapshot was on its way (the sequencer writes snapshots after their commit, in a
/// task of their own), and storing it would give the next document of that id a wrong text.
pub(super) fn write_snapshot(conn: &mut Connection, snapshot: &Snapshot) -> Result<(), StoreError> {
    let doc = &snapshot.doc;
    let version = version_to_sql(snapshot.version, doc)?;
    let clients = encode_clients(&snapshot.clients);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let latest = latest_version(&tx, doc)?;
    if snapshot.version > latest {
        return Err(snapshot_after_latest(doc, snapshot.version, latest));
    }
    tx.prepare_cached(UPSERT_SNAPSHOT)?.execute(params![doc.as_str(), version, snapshot.text, clients])?;
    tx.prepare_cached(TRIM_SNAPSHOTS)?.execute(params![doc.as_str(), window()])?;
    tx.commit()?;
    Ok(())
}

fn window() -> i64 {
    i64::try_from(SNAPSHOT_WINDOW).expect("the snapshot window fits an i64")
}

pub(super) fn snapshot_at_or_before(
    conn: &Connection,
    doc: &DocId,
    version: u64,
) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached(SNAPSHOT_AT_OR_BEFORE)?
        .query_row(params![doc.as_str(), clamp_to_sql(version)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?))
        })
        .optional()?
        .map(|(version, text, clients)| decode_snapshot(doc, version, text, &clients))
        .transpose()
}

/// Creates the checkpoint, or returns the stored one of the same name and version; see
/// [`crate::EventStore::create_checkpoint`] for the conflicts.
pub(super) fn create_checkpoint(
    conn: &mut Connection,
    wanted: &Checkpoint,
) -> Result<Checkpoint, StoreError> {
    let doc = &wanted.doc;
    let version = version_to_sql(wanted.version, doc)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<(i64, String, i64)> = tx
        .prepare_cached(SELECT_CHECKPOINT)?
        .query_row(params![doc.as_str(), wanted.name], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    if let Some((version, author, created_at_ms)) = stored {
        let stored = Checkpoint {
            version: stored_u64(version, || format!("version of checkpoint {:?} of {doc}", wanted.name))?,
            author,
            created_at_ms,
            ..wanted.clone()
        };
        return same_version(stored, wanted.version);
    }
    let latest = latest_version(&tx, doc)?;
    if wanted.version > latest {
        return Err(checkpoint_after_latest(wanted, latest));
    }
    let created_at_ms = now_ms();
    tx.prepare_cached(INSERT_CHECKPOINT)?.execute(params![
        doc.as_str(),
        wanted.name,
        version,
        wanted.author,
        created_at_ms
    ])?;
    tx.commit()?;
    Ok(Checkpoint { created_at_ms, ..wanted.clone() })
}

pub(super) fn list_checkpoints(conn: &Connection, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError> {
    let mut stmt = conn.prepare_cached(LIST_CHECKPOINTS)?;
    let rows = stmt.query_map([doc.as_str()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?, row.get(3)?))
    })?;
    let mut checkpoints = Vec::new();
    for row in rows {
        let (name, version, author, created_at_ms) = row?;
        let version = stored_u64(version, || format!("version of checkpoint {name:?} of {doc}"))?;
        checkpoints.push(Checkpoint { doc: doc.clone(), name, version, author, created_at_ms });
    }
    Ok(checkpoints)
}

/// The deletions of a batch, inside its commit transaction and after its events and rejections:
/// purges each document's events, rejections, snapshots and checkpoints, and stores its tombstone
/// under the batch's commit number (the outbox reads it back as a `SequencedRecord::Deleted`).
pub(super) fn delete_documents(
    tx: &Transaction<'_>,
    batch: &CommitBatch,
    commit: i64,
    now: i64,
) -> Result<(), StoreError> {
    for (ordinal, deleted) in batch.deletions.iter().enumerate() {
        let doc = deleted.doc.as_str();
        let last_version = version_to_sql(deleted.last_version, &deleted.doc)?;
        if let Some(id) = doc_id(tx, doc)? {
            for purge in PURGE_LOG {
                tx.prepare_cached(purge)?.execute([id])?;
            }
        }
        for purge in PURGE_BY_NAME {
            tx.prepare_cached(purge)?.execute([doc])?;
        }
        let ordinal = i64::try_from(ordinal).unwrap_or(i64::MAX);
        tx.prepare_cached(INSERT_TOMBSTONE)?.execute(params![
            batch.partition,
            commit,
            ordinal,
            doc,
            last_version,
            deleted.author,
            now
        ])?;
    }
    Ok(())
}
