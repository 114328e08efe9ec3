//! The reads the sequencer and the gateways need: the outbox, the log of a document, a document
//! to load, and the outcomes of seqs (the history's reads are in `history`).
//!
//! A document's keys are in two tiers (see `migrations`): each read looks in both, each look-up
//! one index seek or range scan per tier, so no read costs more than its answer plus a few pages.
//! Reads that take several statements run in one read transaction, so they see one state even
//! while a commit or a fold lands.

use rusqlite::{params, Connection, OptionalExtension};
use tandem_protocol::records::{CommittedEvent, Outcome};
use tandem_protocol::{ClientId, DocId};

use super::codec::{decode_event_row, decode_outbox_row, event_columns, outbox_columns};
use super::tiers::{client_id, doc_id};
use crate::codec::{clamp_to_sql, decode_rejection, decode_snapshot, seq_to_sql, stored_code, stored_u64};
use crate::outbox::{self, Page};
use crate::{ClientRecord, HistoryEntry, PartitionId, StoreError, StoredDocument, UnpublishedCommit};

/// The outbox in commit order, `kind` 0 for events, 1 for rejections and 2 for tombstones (see
/// `codec::OutboxColumns` for the columns). Each branch is a range scan of its table's
/// `(partition, commit_seq)` index. `?2` and `?3` bound the commit numbers, `?4` the rows.
const UNPUBLISHED: &str = r#"
    SELECT e.commit_seq, 0, d.name, e.version, c.name, e.seq, e.op, NULL, e.author
    FROM event_log e JOIN doc_ids d ON d.id = e.doc JOIN client_ids c ON c.id = e.client
    WHERE e."partition" = ?1 AND e.commit_seq > ?2 AND e.commit_seq <= ?3
    UNION ALL
    SELECT r.commit_seq, 1, d.name, r.at_version, c.name, r.seq, r.code, r.message, ''
    FROM rejection_log r JOIN doc_ids d ON d.id = r.doc JOIN client_ids c ON c.id = r.client
    WHERE r."partition" = ?1 AND r.commit_seq > ?2 AND r.commit_seq <= ?3
    UNION ALL
    SELECT commit_seq, 2, doc, last_version, '', 0, '', NULL, author FROM tombstones
    WHERE "partition" = ?1 AND commit_seq > ?2 AND commit_seq <= ?3
    ORDER BY 1 LIMIT ?4"#;
/// A document's events in a version range, with their commit times: the keys of both tiers
/// merged in version order (each branch a range scan of its primary key), then the rows.
const SELECT_EVENTS: &str = "SELECT k.version, c.name, e.seq, e.op, e.author, e.committed_at FROM ( \
       SELECT version, event FROM versions WHERE doc = ?1 AND version > ?2 AND version <= ?3 \
       UNION ALL \
       SELECT version, event FROM recent_versions WHERE doc = ?1 AND version > ?2 AND version <= ?3 \
       ORDER BY version LIMIT ?4) AS k \
     JOIN event_log e ON e.id = k.event JOIN client_ids c ON c.id = e.client ORDER BY k.version";
const LATEST_VERSION: &str = "SELECT max(v) FROM ( \
       SELECT max(version) AS v FROM versions WHERE doc = ?1 \
       UNION ALL SELECT max(version) FROM recent_versions WHERE doc = ?1)";
const NEWEST_SNAPSHOT: &str =
    "SELECT version, text, clients FROM snapshots WHERE doc = ?1 ORDER BY version DESC LIMIT 1";
const REJECTIONS_FROM: &str = "SELECT c.name, r.seq, r.code, r.message, r.at_version \
     FROM rejection_log r JOIN client_ids c ON c.id = r.client \
     WHERE r.doc = ?1 AND r.at_version >= ?2 ORDER BY r.at_version, c.name, r.seq";
const VERSION_OF_SEQ: &str = "SELECT version FROM recent_seqs WHERE doc = ?1 AND client = ?2 AND seq = ?3 \
     UNION ALL SELECT version FROM seqs WHERE doc = ?1 AND client = ?2 AND seq = ?3 LIMIT 1";
const REJECTION_OF_SEQ: &str =
    "SELECT code, message FROM rejection_log WHERE doc = ?1 AND client = ?2 AND seq = ?3";
/// The highest seq of a client on a document, over both tiers and the rejections (NULL for none):
/// each part one look-up at the end of a (doc, client, seq) key.
const LAST_SEQ: &str = "SELECT max(seq) FROM ( \
       SELECT max(seq) AS seq FROM seqs WHERE doc = ?1 AND client = ?2 \
       UNION ALL SELECT max(seq) FROM recent_seqs WHERE doc = ?1 AND client = ?2 \
       UNION ALL SELECT max(seq) FROM rejection_log WHERE doc = ?1 AND client = ?2)";

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
    let read = |from: i64, through: i64, rows: i64| -> Result<Vec<_>, StoreError> {
        let mut stmt = tx.prepare_cached(UNPUBLISHED)?;
        let rows = stmt.query_map(params![partition, from, through, rows], outbox_columns)?;
        rows.map(|row| decode_outbox_row(row?)).collect()
    };
    let page = match outbox::page(read(from, i64::MAX, outbox::rows_to_read(limit))?, limit) {
        Page::Done(page) => page,
        Page::FirstCommitTooLarge(commit) => {
            let commit = clamp_to_sql(commit);
            outbox::group(read(commit - 1, commit, i64::MAX)?)
        }
    };
    tx.finish()?;
    Ok(page)
}

pub(super) fn latest_version(conn: &Connection, doc: &DocId) -> Result<u64, StoreError> {
    let Some(id) = doc_id(conn, doc.as_str())? else { return Ok(0) };
    let latest: Option<i64> = conn.prepare_cached(LATEST_VERSION)?.query_row([id], |row| row.get(0))?;
    latest.map_or(Ok(0), |v| stored_u64(v, || format!("latest version of document {doc}")))
}

/// Events of `doc` with `after < version <= up_to`, at most `limit`, with their commit times.
pub(super) fn read_history(
    conn: &Connection,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    if limit == 0 || up_to <= after {
        return Ok(Vec::new());
    }
    let Some(id) = doc_id(conn, doc.as_str())? else { return Ok(Vec::new()) };
    // Bounds beyond what SQLite can hold mean "to the end"; no stored version is that large.
    let (after, up_to) = (clamp_to_sql(after), clamp_to_sql(up_to));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(SELECT_EVENTS)?;
    let rows = stmt.query_map(params![id, after, up_to, limit], event_columns)?;
    rows.map(|row| {
        let (event, committed_at_ms) = decode_event_row(doc, row?)?;
        Ok(HistoryEntry { event, committed_at_ms })
    })
    .collect()
}

pub(super) fn read_events(
    conn: &Connection,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<CommittedEvent>, StoreError> {
    Ok(read_history(conn, doc, after, up_to, limit)?.into_iter().map(|entry| entry.event).collect())
}

/// Reads the snapshot, the events and the rejections in one read transaction, so they describe
/// one consistent state even while a commit lands.
pub(super) fn load_document(conn: &mut Connection, doc: &DocId) -> Result<StoredDocument, StoreError> {
    let tx = conn.transaction()?;
    let snapshot = tx
        .prepare_cached(NEWEST_SNAPSHOT)?
        .query_row([doc.as_str()], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?)))
        .optional()?
        .map(|(version, text, clients)| decode_snapshot(doc, version, text, &clients))
        .transpose()?;
    let from = snapshot.as_ref().map_or(0, |s| s.version);
    let events = read_events(&tx, doc, from, u64::MAX, usize::MAX)?;
    let mut rejections = Vec::new();
    if let Some(id) = doc_id(&tx, doc.as_str())? {
        let mut stmt = tx.prepare_cached(REJECTIONS_FROM)?;
        let rows = stmt.query_map(params![id, clamp_to_sql(from)], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?))
        })?;
        for row in rows {
            let (client, seq, code, message, at_version): (String, i64, String, String, i64) = row?;
            rejections.push(decode_rejection(doc, &client, seq, &code, message, at_version)?);
        }
    }
    tx.finish()?;
    Ok(StoredDocument { snapshot, events, rejections })
}

/// The interned ids of a document and a client, if both ever wrote.
fn ids(conn: &Connection, doc: &DocId, client: &ClientId) -> Result<Option<(i64, i64)>, StoreError> {
    let Some(doc) = doc_id(conn, doc.as_str())? else { return Ok(None) };
    Ok(client_id(conn, client.as_str())?.map(|client| (doc, client)))
}

fn outcome(
    conn: &Connection,
    doc: &DocId,
    client: &ClientId,
    (doc_id, client_id): (i64, i64),
    seq: u64,
) -> Result<Option<Outcome>, StoreError> {
    let key = params![doc_id, client_id, seq_to_sql(seq)];
    let version: Option<i64> =
        conn.prepare_cached(VERSION_OF_SEQ)?.query_row(key, |row| row.get(0)).optional()?;
    if let Some(v) = version {
        let version = stored_u64(v, || format!("version of seq {seq} of {client} on document {doc}"))?;
        return Ok(Some(Outcome::Committed { version }));
    }
    conn.prepare_cached(REJECTION_OF_SEQ)?
        .query_row(key, |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
        .optional()?
        .map(|(code, message)| Ok(Outcome::Rejected { code: stored_code(&code, doc)?, message }))
        .transpose()
}

pub(super) fn find_outcome(
    conn: &mut Connection,
    doc: &DocId,
    client: &ClientId,
    seq: u64,
) -> Result<Option<Outcome>, StoreError> {
    let tx = conn.transaction()?;
    let found = match ids(&tx, doc, client)? {
        Some(ids) => outcome(&tx, doc, client, ids, seq)?,
        None => None,
    };
    tx.finish()?;
    Ok(found)
}

pub(super) fn last_outcome(
    conn: &mut Connection,
    doc: &DocId,
    client: &ClientId,
) -> Result<Option<ClientRecord>, StoreError> {
    let tx = conn.transaction()?;
    let Some(ids) = ids(&tx, doc, client)? else { return Ok(None) };
    let seq: Option<i64> = tx.prepare_cached(LAST_SEQ)?.query_row(params![ids.0, ids.1], |row| row.get(0))?;
    let record = match seq {
        None => None,
        Some(seq) => {
            let seq = stored_u64(seq, || format!("last seq of {client} on document {doc}"))?;
            let outcome = outcome(&tx, doc, client, ids, seq)?.ok_or_else(|| {
                StoreError::Corrupt(format!("seq {seq} of {client} on document {doc} vanished"))
            })?;
            Some(ClientRecord { seq, outcome })
        }
    };
    tx.finish()?;
    Ok(record)
}
