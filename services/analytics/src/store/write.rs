//! Writing a batch's [`Changes`] inside its transaction, and the conversions between the tables'
//! bigints and timestamps and the tally's numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use crate::record::Position;
use crate::tally::{Changes, DeletionMark, DocumentTotals, EditRun, Increment};

/// Every table with rows of a document, purged by its tombstone: all but `analytics_deletions`,
/// which holds the purge mark, and `analytics_offsets`, which has no document.
const PURGE: [&str; 5] = [
    "DELETE FROM analytics_documents WHERE doc = ANY($1::text[])",
    "DELETE FROM analytics_document_authors WHERE doc = ANY($1::text[])",
    "DELETE FROM analytics_minutes WHERE doc = ANY($1::text[])",
    "DELETE FROM analytics_user_minutes WHERE doc = ANY($1::text[])",
    "DELETE FROM analytics_edit_runs WHERE doc = ANY($1::text[])",
];

const WRITE_DELETIONS: &str = r#"INSERT INTO analytics_deletions
     (doc, last_version, author, deleted_at, "partition", through_offset)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::int[], $6::bigint[])
     ON CONFLICT (doc) DO UPDATE SET last_version = EXCLUDED.last_version, author = EXCLUDED.author,
         deleted_at = EXCLUDED.deleted_at, "partition" = EXCLUDED."partition", through_offset = EXCLUDED.through_offset"#;

const WRITE_DOCUMENTS: &str = "INSERT INTO analytics_documents \
     (doc, ops, chars_inserted, chars_deleted, first_version, last_version, first_seen, last_seen, versions_missed) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
         $7::timestamptz[], $8::timestamptz[], $9::bigint[]) \
     ON CONFLICT (doc) DO UPDATE SET ops = EXCLUDED.ops, chars_inserted = EXCLUDED.chars_inserted, \
         chars_deleted = EXCLUDED.chars_deleted, first_version = EXCLUDED.first_version, \
         last_version = EXCLUDED.last_version, first_seen = EXCLUDED.first_seen, \
         last_seen = EXCLUDED.last_seen, versions_missed = EXCLUDED.versions_missed";

const ADD_DOCUMENT_AUTHORS: &str = "INSERT INTO analytics_document_authors AS a \
     (doc, author, ops, chars_inserted, chars_deleted, first_seen, last_seen) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
         $6::timestamptz[], $7::timestamptz[]) \
     ON CONFLICT (doc, author) DO UPDATE SET ops = a.ops + EXCLUDED.ops, \
         chars_inserted = a.chars_inserted + EXCLUDED.chars_inserted, \
         chars_deleted = a.chars_deleted + EXCLUDED.chars_deleted, \
         first_seen = least(a.first_seen, EXCLUDED.first_seen), \
         last_seen = greatest(a.last_seen, EXCLUDED.last_seen)";

const ADD_MINUTES: &str = "INSERT INTO analytics_minutes AS m \
     (doc, minute, author, ops, chars_inserted, chars_deleted) \
     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[]) \
     ON CONFLICT (doc, minute, author) DO UPDATE SET ops = m.ops + EXCLUDED.ops, \
         chars_inserted = m.chars_inserted + EXCLUDED.chars_inserted, \
         chars_deleted = m.chars_deleted + EXCLUDED.chars_deleted";

const ADD_USER_MINUTES: &str = "INSERT INTO analytics_user_minutes AS m \
     (doc, minute, user_id, ops, chars_inserted, chars_deleted) \
     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[]) \
     ON CONFLICT (doc, minute, user_id) DO UPDATE SET ops = m.ops + EXCLUDED.ops, \
         chars_inserted = m.chars_inserted + EXCLUDED.chars_inserted, \
         chars_deleted = m.chars_deleted + EXCLUDED.chars_deleted";

const WRITE_RUNS: &str = "INSERT INTO analytics_edit_runs \
     (doc, author, started_at, last_edit_at, ops, chars_inserted, chars_deleted, first_version, last_version) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[], \
         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) \
     ON CONFLICT (doc, author, started_at) DO UPDATE SET last_edit_at = EXCLUDED.last_edit_at, \
         ops = EXCLUDED.ops, chars_inserted = EXCLUDED.chars_inserted, \
         chars_deleted = EXCLUDED.chars_deleted, first_version = EXCLUDED.first_version, \
         last_version = EXCLUDED.last_version";

/// Writes `changes`: first the purges (so the increments after them count from nothing), then
/// the marks, then the counts.
pub(super) async fn write_changes(tx: &Transaction<'_>, changes: Changes) -> anyhow::Result<()> {
    if !changes.purged.is_empty() {
        let docs: Vec<&str> = changes.purged.iter().map(String::as_str).collect();
        for statement in PURGE {
            let statement = tx.prepare_cached(statement).await.context("prepare a purge")?;
            tx.execute(&statement, &[&docs]).await.context("purge deleted documents")?;
        }
    }
    if !changes.deletions.is_empty() {
        let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (doc, mark) in &changes.deletions {
            c.0.push(doc.as_str());
            c.1.push(int(mark.last_version)?);
            c.2.push(mark.author.as_str());
            c.3.push(time(mark.deleted_ms));
            c.4.push(mark.position.partition);
            c.5.push(mark.position.offset);
        }
        let statement = tx.prepare_cached(WRITE_DELETIONS).await.context("prepare the deletions write")?;
        tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5]).await.context("write the deletions")?;
    }
    if !changes.documents.is_empty() {
        let mut c = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (doc, t) in &changes.documents {
            c.0.push(doc.as_str());
            c.1.push(int(t.ops)?);
            c.2.push(int(t.chars_inserted)?);
            c.3.push(int(t.chars_deleted)?);
            c.4.push(int(t.first_version)?);
            c.5.push(int(t.last_version)?);
            c.6.push(time(t.first_seen_ms));
            c.7.push(time(t.last_seen_ms));
            c.8.push(int(t.versions_missed)?);
        }
        let statement = tx.prepare_cached(WRITE_DOCUMENTS).await.context("prepare the documents write")?;
        tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &c.8])
            .await
            .context("write the documents")?;
    }
    if !changes.authors.is_empty() {
        let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((doc, author), i) in &changes.authors {
            c.0.push(doc.as_str());
            c.1.push(author.as_str());
            c.2.push(int(i.ops)?);
            c.3.push(int(i.chars_inserted)?);
            c.4.push(int(i.chars_deleted)?);
            c.5.push(time(i.first_seen_ms));
            c.6.push(time(i.last_seen_ms));
        }
        let statement = tx.prepare_cached(ADD_DOCUMENT_AUTHORS).await.context("prepare the authors write")?;
        tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6])
            .await
            .context("write the authors")?;
    }
    add_minutes(tx, ADD_MINUTES, &changes.minutes).await.context("write the minutes")?;
    add_minutes(tx, ADD_USER_MINUTES, &changes.user_minutes).await.context("write the users' minutes")?;
    if !changes.runs.is_empty() {
        let mut c = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((doc, author, _), r) in &changes.runs {
            c.0.push(doc.as_str());
            c.1.push(author.as_str());
            c.2.push(time(r.started_ms));
            c.3.push(time(r.last_edit_ms));
            c.4.push(int(r.ops)?);
            c.5.push(int(r.chars_inserted)?);
            c.6.push(int(r.chars_deleted)?);
            c.7.push(int(r.first_version)?);
            c.8.push(int(r.last_version)?);
        }
        let statement = tx.prepare_cached(WRITE_RUNS).await.context("prepare the runs write")?;
        tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &c.8])
            .await
            .context("write the runs")?;
    }
    Ok(())
}

/// Adds per-minute increments keyed (doc, minute, who) with `sql` (sessions or users).
async fn add_minutes(
    tx: &Transaction<'_>,
    sql: &str,
    minutes: &std::collections::BTreeMap<(String, i64, String), Increment>,
) -> anyhow::Result<()> {
    if minutes.is_empty() {
        return Ok(());
    }
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((doc, minute, who), i) in minutes {
        c.0.push(doc.as_str());
        c.1.push(time(*minute));
        c.2.push(who.as_str());
        c.3.push(int(i.ops)?);
        c.4.push(int(i.chars_inserted)?);
        c.5.push(int(i.chars_deleted)?);
    }
    let statement = tx.prepare_cached(sql).await.context("prepare")?;
    tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5]).await?;
    Ok(())
}

pub(super) fn document_row(row: &Row) -> anyhow::Result<(String, DocumentTotals)> {
    let totals = DocumentTotals {
        ops: count(row.try_get(1)?)?,
        chars_inserted: count(row.try_get(2)?)?,
        chars_deleted: count(row.try_get(3)?)?,
        first_version: count(row.try_get(4)?)?,
        last_version: count(row.try_get(5)?)?,
        first_seen_ms: millis(row.try_get(6)?),
        last_seen_ms: millis(row.try_get(7)?),
        versions_missed: count(row.try_get(8)?)?,
    };
    Ok((row.try_get(0)?, totals))
}

pub(super) fn run_row(row: &Row) -> anyhow::Result<((String, String), EditRun)> {
    let run = EditRun {
        started_ms: millis(row.try_get(2)?),
        last_edit_ms: millis(row.try_get(3)?),
        ops: count(row.try_get(4)?)?,
        chars_inserted: count(row.try_get(5)?)?,
        chars_deleted: count(row.try_get(6)?)?,
        first_version: count(row.try_get(7)?)?,
        last_version: count(row.try_get(8)?)?,
    };
    Ok(((row.try_get(0)?, row.try_get(1)?), run))
}

pub(super) fn deletion_row(row: &Row) -> anyhow::Result<(String, DeletionMark)> {
    let mark = DeletionMark {
        last_version: count(row.try_get(1)?)?,
        author: row.try_get(2)?,
        deleted_ms: millis(row.try_get(3)?),
        position: Position { partition: row.try_get(4)?, offset: row.try_get(5)? },
    };
    Ok((row.try_get(0)?, mark))
}

/// A count or version as a bigint. Versions never pass i64::MAX (the decoder refuses them) and
/// counts would take centuries to.
fn int(value: u64) -> anyhow::Result<i64> {
    i64::try_from(value).with_context(|| format!("{value} does not fit a bigint"))
}

/// A bigint read back; the tables' checks keep them non-negative.
fn count(value: i64) -> anyhow::Result<u64> {
    u64::try_from(value).with_context(|| format!("negative count {value} in an analytics table"))
}

/// Milliseconds since the epoch as a timestamp.
fn time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs()),
    }
}

/// A timestamp as milliseconds since the epoch.
fn millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
