//! The analytics tables in Postgres: one transaction per batch writes the counts and the offsets
//! they take the consumer to, so the two never disagree.
//!
//! **Exactly once in effect.** A batch's transaction reads the rows of the documents (their totals,
//! purge marks and latest edit runs) it touches, counts with the pure [`Tally`], and writes the new
//! rows, the purges of deleted documents and the next offset of every partition the batch read,
//! then commits. So:
//!
//! - a record read again after a crash (its batch never committed, or committed with its offset)
//!   is either not counted yet or falls at or below its document's `last_version` (or, for a
//!   deleted document, at or before its watermark): counted once;
//! - a republished copy (a different offset, the same doc and version) is dropped by the same mark;
//! - two members counting the same records at once (a partition moving between instances while
//!   the old owner still commits) cannot both count them: the transaction runs at REPEATABLE READ,
//!   so the second one to write a row the first changed fails with a serialization error (or a
//!   unique violation for a row both created) and its whole batch is retried, reading the new
//!   rows. One such row is always there: every batch writes the offsets row of each partition it
//!   read, and all records of a document are in one partition. That is what makes a purge safe at
//!   this level: an upsert finds no conflict with a row another transaction *deleted* (it inserts
//!   it anew), so without that shared row a member whose snapshot predates a purge could write the
//!   purged document's rows back.
//!
//! **Offsets.** The next offset of each partition is stored here, never committed to Kafka; on
//! assignment the consumer starts where this table says. A stored offset is always one whose
//! records below it were all counted by some transaction (each owner counts a partition
//! contiguously from where it started), so even an old owner's late, lower offset only makes the
//! next owner read records again, which deduplication drops.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

use crate::record::Record;
use crate::tally::{Applied, Deleted, Tally};

mod migrate;
mod write;

const READ_DOCUMENTS: &str = "SELECT doc, ops, chars_inserted, chars_deleted, first_version, last_version, \
     first_seen, last_seen, versions_missed FROM analytics_documents WHERE doc = ANY($1::text[])";

/// The latest run of each (doc, author) pair of the batch.
const READ_LATEST_RUNS: &str = "SELECT DISTINCT ON (r.doc, r.author) r.doc, r.author, r.started_at, \
     r.last_edit_at, r.ops, r.chars_inserted, r.chars_deleted, r.first_version, r.last_version \
     FROM analytics_edit_runs r \
     JOIN unnest($1::text[], $2::text[]) AS p(doc, author) ON r.doc = p.doc AND r.author = p.author \
     ORDER BY r.doc, r.author, r.started_at DESC";

const READ_DELETIONS: &str = r#"SELECT doc, last_version, author, deleted_at, "partition", through_offset
     FROM analytics_deletions WHERE doc = ANY($1::text[])"#;

const WRITE_OFFSETS: &str = r#"INSERT INTO analytics_offsets (topic, "partition", next_offset)
     SELECT $1::text, u.p, u.o FROM unnest($2::int[], $3::bigint[]) AS u(p, o)
     ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"#;

const READ_OFFSETS: &str = r#"SELECT "partition", next_offset FROM analytics_offsets
     WHERE topic = $1 AND "partition" = ANY($2::int[])"#;

/// What one batch read: its edits and tombstones in topic order, and where each partition it read
/// resumes after it.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub records: Vec<Record>,
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
    /// Edits of a history a deletion purged (read again from before the tombstone, or late copies).
    pub deleted_history: u64,
    /// Documents purged by a tombstone.
    pub purged: u64,
    /// Tombstones applied before: read again, or copies published again.
    pub tombstones_repeated: u64,
}

impl Summary {
    fn add(&mut self, edit: &crate::record::Edit, applied: Applied) {
        match applied {
            Applied::Counted => self.counted += 1,
            Applied::CountedAfterGap(missed) => {
                self.counted += 1;
                self.versions_missed += missed;
                tracing::warn!(
                    doc = %edit.doc,
                    version = edit.version,
                    missed,
                    "versions missing on the events topic before this one; counted without them"
                );
            }
            Applied::Duplicate => self.duplicates += 1,
            Applied::DeletedHistory => self.deleted_history += 1,
        }
    }
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

        let mut docs: Vec<&str> = batch.records.iter().map(Record::doc).collect();
        docs.sort_unstable();
        docs.dedup();
        let mut pairs: Vec<(&str, &str)> = batch
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Edit(e) => Some((e.doc.as_str(), e.author.as_str())),
                Record::Tombstone(_) => None,
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut summary = Summary::default();
        if !batch.records.is_empty() {
            let statement = tx.prepare_cached(READ_DOCUMENTS).await.context("prepare the documents read")?;
            let rows = tx.query(&statement, &[&docs]).await.context("read the documents")?;
            let documents = rows.iter().map(write::document_row).collect::<anyhow::Result<Vec<_>>>()?;
            let statement = tx.prepare_cached(READ_DELETIONS).await.context("prepare the deletions read")?;
            let rows = tx.query(&statement, &[&docs]).await.context("read the deletions")?;
            let deletions = rows.iter().map(write::deletion_row).collect::<anyhow::Result<Vec<_>>>()?;
            let (pair_docs, pair_authors): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
            let statement = tx.prepare_cached(READ_LATEST_RUNS).await.context("prepare the runs read")?;
            let rows = tx.query(&statement, &[&pair_docs, &pair_authors]).await.context("read the runs")?;
            let runs = rows.iter().map(write::run_row).collect::<anyhow::Result<Vec<_>>>()?;

            let mut tally = Tally::new(run_gap_ms, documents, runs, deletions);
            for record in &batch.records {
                match record {
                    Record::Edit(edit) => summary.add(edit, tally.apply(edit)),
                    Record::Tombstone(tombstone) => match tally.delete(tombstone) {
                        Deleted::Purged => {
                            summary.purged += 1;
                            tracing::info!(
                                doc = %tombstone.doc,
                                last_version = tombstone.last_version,
                                "document deleted: its rows are purged"
                            );
                        }
                        Deleted::ReadAgain | Deleted::Copy => summary.tombstones_repeated += 1,
                    },
                }
            }
            write::write_changes(&tx, tally.into_changes()).await?;
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
