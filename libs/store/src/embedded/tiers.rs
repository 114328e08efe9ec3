//! Interned ids and the two tiers of per-document keys (see `migrations` for why).
//!
//! A commit writes its keys to the recent tier, whose primary keys refuse a (doc, version) or
//! (doc, client, seq) that is already recent; the main tier is checked explicitly first
//! ([`taken`]), which only reads pages. Both checks run inside the commit's `IMMEDIATE`
//! transaction, under SQLite's one write lock, so no other writer (another store or process on
//! the same file) can add a key in between.
//!
//! [`fold_step`] moves the recent keys of a range of documents into the main tier, each step one
//! transaction: readers see a key in one tier or the other, never in neither, and a fold made of
//! steps writes each document's main-tier pages once, as a fold in one transaction would, while a
//! commit waits for a step (a few hundred keys) instead of for the whole fold.

use rusqlite::{params, Connection, OptionalExtension};

use crate::StoreError;

const DOC_ID: &str = "SELECT id FROM doc_ids WHERE name = ?1";
const NEW_DOC_ID: &str = "INSERT INTO doc_ids (name) VALUES (?1) RETURNING id";
const CLIENT_ID: &str = "SELECT id FROM client_ids WHERE name = ?1";
const NEW_CLIENT_ID: &str = "INSERT INTO client_ids (name) VALUES (?1) RETURNING id";

/// Which of a (doc, version, client, seq) the main tier or the rejections already hold: three
/// look-ups in one statement.
const TAKEN: &str = "SELECT \
     EXISTS (SELECT 1 FROM versions WHERE doc = ?1 AND version = ?2), \
     EXISTS (SELECT 1 FROM seqs WHERE doc = ?1 AND client = ?3 AND seq = ?4), \
     EXISTS (SELECT 1 FROM rejection_log WHERE doc = ?1 AND client = ?3 AND seq = ?4)";
/// Whether a (doc, client, seq) was committed, in either tier.
const COMMITTED: &str =
    "SELECT EXISTS (SELECT 1 FROM recent_seqs WHERE doc = ?1 AND client = ?2 AND seq = ?3) \
     OR EXISTS (SELECT 1 FROM seqs WHERE doc = ?1 AND client = ?2 AND seq = ?3)";
const INSERT_VERSION: &str = "INSERT INTO recent_versions (doc, version, event) VALUES (?1, ?2, ?3)";
const INSERT_SEQ: &str = "INSERT INTO recent_seqs (doc, client, seq, version) VALUES (?1, ?2, ?3, ?4)";

/// One step of a fold: the recent keys of the documents with ids in `[?1, ?2)`, in key order so
/// each main-tier page is written once.
const FOLD_STEP: [&str; 4] = [
    "INSERT INTO versions SELECT doc, version, event FROM recent_versions \
     WHERE doc >= ?1 AND doc < ?2 ORDER BY doc, version",
    "INSERT INTO seqs SELECT doc, client, seq, version FROM recent_seqs \
     WHERE doc >= ?1 AND doc < ?2 ORDER BY doc, client, seq",
    "DELETE FROM recent_versions WHERE doc >= ?1 AND doc < ?2",
    "DELETE FROM recent_seqs WHERE doc >= ?1 AND doc < ?2",
];
/// The document of the recent key `?2` keys past the first of document `?1` or later: where a
/// step of `?2` keys ends.
const STEP_END: &str =
    "SELECT doc FROM recent_versions WHERE doc >= ?1 ORDER BY doc, version LIMIT 1 OFFSET ?2";

/// The id of a document name, if it was ever written.
pub(super) fn doc_id(conn: &Connection, doc: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn.prepare_cached(DOC_ID)?.query_row([doc], |row| row.get(0)).optional()?)
}

/// The id of a client name, if it ever wrote.
pub(super) fn client_id(conn: &Connection, client: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn.prepare_cached(CLIENT_ID)?.query_row([client], |row| row.get(0)).optional()?)
}

/// The id of a document name, given one if it has none. Ids are never taken back (a deleted
/// document keeps its id for its next life), so a cached id stays right.
pub(super) fn intern_doc(conn: &Connection, doc: &str) -> Result<i64, StoreError> {
    match doc_id(conn, doc)? {
        Some(id) => Ok(id),
        None => Ok(conn.prepare_cached(NEW_DOC_ID)?.query_row([doc], |row| row.get(0))?),
    }
}

pub(super) fn intern_client(conn: &Connection, client: &str) -> Result<i64, StoreError> {
    match client_id(conn, client)? {
        Some(id) => Ok(id),
        None => Ok(conn.prepare_cached(NEW_CLIENT_ID)?.query_row([client], |row| row.get(0))?),
    }
}

/// What the main tier and the rejections already hold of an event's keys.
pub(super) struct Taken {
    pub version: bool,
    pub committed_seq: bool,
    pub rejected_seq: bool,
}

pub(super) fn taken(
    conn: &Connection,
    doc: i64,
    version: i64,
    client: i64,
    seq: i64,
) -> Result<Taken, StoreError> {
    Ok(conn.prepare_cached(TAKEN)?.query_row(params![doc, version, client, seq], |row| {
        Ok(Taken { version: row.get(0)?, committed_seq: row.get(1)?, rejected_seq: row.get(2)? })
    })?)
}

/// Whether (doc, client, seq) was committed.
pub(super) fn committed(conn: &Connection, doc: i64, client: i64, seq: i64) -> Result<bool, StoreError> {
    Ok(conn.prepare_cached(COMMITTED)?.query_row(params![doc, client, seq], |row| row.get(0))?)
}

/// A key the recent tier already holds.
pub(super) enum Duplicate {
    Version,
    Seq,
}

/// Adds an event's keys to the recent tier; `Err(Ok(_))` names a key that is already recent.
pub(super) fn insert_keys(
    conn: &Connection,
    doc: i64,
    version: i64,
    client: i64,
    seq: i64,
    event: i64,
) -> Result<(), Result<Duplicate, StoreError>> {
    let duplicate = |err: rusqlite::Error, which| {
        if super::codec::is_key_violation(&err) {
            Ok(which)
        } else {
            Err(StoreError::from(err))
        }
    };
    let mut insert = conn.prepare_cached(INSERT_VERSION).map_err(|e| Err(e.into()))?;
    insert.execute(params![doc, version, event]).map_err(|e| duplicate(e, Duplicate::Version))?;
    let mut insert = conn.prepare_cached(INSERT_SEQ).map_err(|e| Err(e.into()))?;
    insert.execute(params![doc, client, seq, version]).map_err(|e| duplicate(e, Duplicate::Seq))?;
    Ok(())
}

/// How many keys the recent tier holds: where a writer starts counting towards its next fold.
pub(super) fn recent_count(conn: &Connection) -> Result<u64, StoreError> {
    let count: i64 = conn.query_row("SELECT count(*) FROM recent_versions", [], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Where a fold goes on: the lowest document id its next step moves.
pub(super) type FoldFrom = i64;

/// Where a fold starts: below every document id.
pub(super) const FOLD_START: FoldFrom = i64::MIN;

/// Moves the recent keys of the documents from `from` on into the main tier, whole documents of
/// about `keys` keys (more when one document alone has more), in one transaction. Returns where
/// the next step starts, or `None` when this step reached the last document.
pub(super) fn fold_step(
    conn: &mut Connection,
    from: FoldFrom,
    keys: u64,
) -> Result<Option<FoldFrom>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let offset = i64::try_from(keys.max(1)).unwrap_or(i64::MAX);
    let end: Option<i64> =
        tx.prepare_cached(STEP_END)?.query_row(params![from, offset], |row| row.get(0)).optional()?;
    // A step moves whole documents: it ends before the document its last key would split, or
    // after the first one when that document alone has more keys than a step.
    let next = end.map(|doc| doc.max(from.saturating_add(1)));
    let until = next.unwrap_or(i64::MAX);
    for statement in FOLD_STEP {
        tx.prepare_cached(statement)?.execute(params![from, until])?;
    }
    tx.commit()?;
    Ok(next)
}
