//! The analytics tables in Postgres: one transaction per batch writes the counts and the offsets
//! they take the consumer to, so the two never disagree.
//!
//! **Exactly once in effect.** A batch's transaction reads the rows of the documents (and the latest
//! edit runs) it touches, counts with the pure [`Tally`], and writes the new rows and the next
//! offset of every partition the batch read, then commits. So:
//!
//! - a record read again after a crash (its batch never committed, or committed with its offset)
//!   is either not counted yet or falls at or below its document's `last_version`: counted once;
//! - a republished copy (a different offset, the same doc and version) is dropped by the same mark;
//! - two members counting the same records at once (a partition moving between instances while
//!   the old owner still commits) cannot both count them: the transaction runs at REPEATABLE READ,
//!   so the second one to write a row the first changed fails with a serialization error (or a
//!   unique violation for a row both created) and its whole batch is retried, reading the new
//!   rows.
//!
//! **Offsets.** The next offset of each partition is stored here, never committed to Kafka; on
//! assignment the consumer starts where this table says. A stored offset is always one whose
//! records below it were all counted by some transaction (each owner counts a partition
//! contiguously from where it started), so even an old owner's late, lower offset only makes the
//! next owner read records again, which deduplication drops.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::record::Edit;
use crate::tally::{Applied, Changes, DocumentTotals, EditRun, Tally};

mod migrate;

const READ_DOCUMENTS: &str = "SELECT doc, ops, chars_inserted, chars_deleted, first_version, last_version, \
     first_seen, last_seen, versions_missed FROM analytics_documents WHERE doc = ANY($1::text[])";

/// The latest run of each (doc, author) pair of the batch.
const READ_LATEST_RUNS: &str = "SELECT DISTINCT ON (r.doc, r.author) r.doc, r.author, r.started_at, \
     r.last_edit_at, r.ops, r.chars_inserted, r.chars_deleted, r.first_version, r.last_version \
     FROM analytics_edit_runs r \
     JOIN unnest($1::text[], $2::text[]) AS p(doc, author) ON r.doc = p.doc AND r.author = p.author \
     ORDER BY r.doc, r.author, r.started_at DESC";

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

const WRITE_RUNS: &str = "INSERT INTO analytics_edit_runs \
     (doc, author, started_at, last_edit_at, ops, chars_inserted, chars_deleted, first_version, last_version) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[], \
         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) \
     ON CONFLICT (doc, author, started_at) DO UPDATE SET last_edit_at = EXCLUDED.last_edit_at, \
         ops = EXCLUDED.ops, chars_inserted = EXCLUDED.chars_inserted, \
         chars_deleted = EXCLUDED.chars_deleted, first_version = EXCLUDED.first_version, \
         last_version = EXCLUDED.last_version";

const WRITE_OFFSETS: &str = r#"INSERT INTO analytics_offsets (topic, "partition", next_offset)
     SELECT $1::text, u.p, u.o FROM unnest($2::int[], $3::bigint[]) AS u(p, o)
     ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"#;

const READ_OFFSETS: &str = r#"SELECT "partition", next_offset FROM analytics_offsets
     WHERE topic = $1 AND "partition" = ANY($2::int[])"#;

/// What one batch read: its committed edits in topic order, and where each partition it read
/// resumes after it.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub edits: Vec<Edit>,
    /// Partition → the offset after the last record of that partition in the batch (skipped
    /// records included: they are done with too).
    pub next_offsets: BTreeMap<i32, i64>,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Edits counted.
    pub counted: u64,
    /// Edits of versions counted before (republished copies, records read again).
    pub duplicates: u64,
    /// Versions jumped over (never seen) before a counted edit.
    pub versions_missed: u64,
}

/// The connection pool to the analytics tables.
#[derive(Clone)]
pub struct AnalyticsStore {
    pool: Pool,
}

impl std::fmt::Debug for AnalyticsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsStore").field("connections", &self.pool.status().size).finish()
    }
}

impl AnalyticsStore {
    /// Builds the pool and opens one connection, so a wrong URL or an unreachable server is
    /// reported at start.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut pg: tokio_postgres::Config = url.parse().context("parse the postgres url")?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("tandem-analytics");
        }
        // A process frozen inside a batch must not hold row locks, and so other members' batches,
        // forever; a batch waiting that long for a lock fails and is retried.
        let session = "-c idle_in_transaction_session_timeout=10000 -c lock_timeout=10000";
        let options = match pg.get_options() {
            Some(given) => format!("{given} {session}"),
            None => session.to_owned(),
        };
        pg.options(&options);
        let manager =
            Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        // One batch at a time, plus the readiness probe and the offsets read at assignment.
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("build the postgres pool")?;
        drop(pool.get().await.context("connect to postgres")?);
        Ok(Self { pool })
    }

    /// Creates or updates the analytics tables; returns how many migrations it applied.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let mut client = self.pool.get().await.context("connect to postgres")?;
        migrate::migrate(&mut client).await
    }

    /// `SELECT 1`: the readiness check.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let client = self.pool.get().await.context("connect to postgres")?;
        client.simple_query("SELECT 1").await.context("SELECT 1")?;
        Ok(())
    }

    /// The stored next offset of each of `partitions` of `topic` that has one.
    pub async fn next_offsets(&self, topic: &str, partitions: &[i32]) -> anyhow::Result<HashMap<i32, i64>> {
        let client = self.pool.get().await.context("connect to postgres")?;
        let statement = client.prepare_cached(READ_OFFSETS).await.context("prepare the offsets read")?;
        let rows = client.query(&statement, &[&topic, &partitions]).await.context("read the offsets")?;
        rows.iter()
            .map(|row| Ok((row.try_get::<_, i32>(0)?, row.try_get::<_, i64>(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("decode the offsets")
    }

    /// Counts `batch` and stores the offsets after it, in one transaction. `run_gap_ms`: the
    /// edit-run rule ([`Tally::new`]). A failure leaves nothing written: retry the same batch.
    pub async fn commit(&self, topic: &str, batch: &Batch, run_gap_ms: i64) -> anyhow::Result<Summary> {
        let mut client = self.pool.get().await.context("connect to postgres")?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await
            .context("begin")?;

        let mut docs: Vec<&str> = batch.edits.iter().map(|e| e.doc.as_str()).collect();
        docs.sort_unstable();
        docs.dedup();
        let mut pairs: Vec<(&str, &str)> =
            batch.edits.iter().map(|e| (e.doc.as_str(), e.author.as_str())).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut summary = Summary::default();
        if !batch.edits.is_empty() {
            let statement = tx.prepare_cached(READ_DOCUMENTS).await.context("prepare the documents read")?;
            let rows = tx.query(&statement, &[&docs]).await.context("read the documents")?;
            let documents = rows.iter().map(document_row).collect::<anyhow::Result<Vec<_>>>()?;
            let (pair_docs, pair_authors): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
            let statement = tx.prepare_cached(READ_LATEST_RUNS).await.context("prepare the runs read")?;
            let rows = tx.query(&statement, &[&pair_docs, &pair_authors]).await.context("read the runs")?;
            let runs = rows.iter().map(run_row).collect::<anyhow::Result<Vec<_>>>()?;

            let mut tally = Tally::new(run_gap_ms, documents, runs);
            for edit in &batch.edits {
                match tally.apply(edit) {
                    Applied::Counted => summary.counted += 1,
                    Applied::CountedAfterGap(missed) => {
                        summary.counted += 1;
                        summary.versions_missed += missed;
                        tracing::warn!(
                            doc = %edit.doc,
                            version = edit.version,
                            missed,
                            "versions missing on the events topic before this one; counted without them"
                        );
                    }
                    Applied::Duplicate => summary.duplicates += 1,
                }
            }
            write_changes(&tx, tally.into_changes()).await?;
        }
        if !batch.next_offsets.is_empty() {
            let (partitions, offsets): (Vec<i32>, Vec<i64>) =
                batch.next_offsets.iter().map(|(p, o)| (*p, *o)).unzip();
            let statement = tx.prepare_cached(WRITE_OFFSETS).await.context("prepare the offsets write")?;
            tx.execute(&statement, &[&topic, &partitions, &offsets]).await.context("write the offsets")?;
        }
        tx.commit().await.context("commit")?;
        Ok(summary)
    }
}

/// Whether `error` is another transaction's concurrent change of the same rows (a retry reads
/// them and succeeds) rather than a fault.
pub fn is_conflict(error: &anyhow::Error) -> bool {
    let conflicts =
        [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::UNIQUE_VIOLATION];
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|e| e.code().is_some_and(|code| conflicts.contains(code)))
}

async fn write_changes(tx: &deadpool_postgres::Transaction<'_>, changes: Changes) -> anyhow::Result<()> {
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
    if !changes.minutes.is_empty() {
        let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((doc, minute, author), i) in &changes.minutes {
            c.0.push(doc.as_str());
            c.1.push(time(*minute));
            c.2.push(author.as_str());
            c.3.push(int(i.ops)?);
            c.4.push(int(i.chars_inserted)?);
            c.5.push(int(i.chars_deleted)?);
        }
        let statement = tx.prepare_cached(ADD_MINUTES).await.context("prepare the minutes write")?;
        tx.execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5]).await.context("write the minutes")?;
    }
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

fn document_row(row: &Row) -> anyhow::Result<(String, DocumentTotals)> {
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

fn run_row(row: &Row) -> anyhow::Result<((String, String), EditRun)> {
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
