//! The embedded, durable event store of the single-process mode: SQLite in a data folder.
//!
//! Why SQLite: the single-process mode must keep the same promise as production (nothing
//! acknowledged is ever lost) without asking anyone to run a database server. SQLite in WAL mode
//! gives durable, atomic transactions in one file, concurrent readers next to one writer, and keys
//! that enforce the same uniqueness as the Postgres schema's, so the same contract suite holds for
//! both.
//!
//! rusqlite is blocking, so no call ever runs on the async runtime's threads. Writes go to one
//! writer thread that owns the writer connection (SQLite allows one writer at a time anyway; see
//! `writer`); reads move to `tokio::task::spawn_blocking` with one of a few reader connections,
//! which WAL lets read while the writer writes. A third thread checkpoints the WAL back into the
//! database file, so no commit waits for it (see `checkpointer`).
//!
//! The schema is laid out so that a commit dirties few pages whatever documents it touches (see
//! `migrations`): the cost of a commit is the pages it writes to the WAL and fsyncs. Numbers
//! follow the shared `codec`: SQLite integers are `i64`, and `seq` is stored bit-for-bit.

mod checkpointer;
mod codec;
mod commit;
mod history;
mod ids;
mod migrations;
mod pool;
mod queries;
mod schema;
mod tiers;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tandem_protocol::records::{CommittedEvent, Outcome};
use tandem_protocol::{ClientId, DocId};

use crate::{
    Checkpoint, ClientRecord, CommitBatch, EventStore, HistoryEntry, PartitionClaim, PartitionId, Snapshot,
    StoreError, StoredDocument, UnpublishedCommit,
};
use pool::ReaderPool;
use writer::{Writer, WriterState};

/// The database file inside the data folder. Its `-wal` and `-shm` companions live next to it and
/// belong to it: copy or delete the three together.
pub const DATABASE_FILE: &str = "tandem.sqlite3";

/// How many reader connections a store keeps. Reads are short (an index range scan), so a few
/// connections serve many concurrent readers; more would only hold more file handles and caches.
const READER_CONNECTIONS: usize = 4;

/// How long a connection waits for a lock held by another connection (another store on the same
/// folder, or a checkpoint) before giving up with [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the embedded store trades write latency for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `true` (the default): `PRAGMA synchronous=FULL`, every commit is flushed to the disk before
    /// it returns, so an acknowledged op survives a power loss or an OS crash. `false`:
    /// `synchronous=NORMAL`, commits survive a killed process but the last ones may be lost on
    /// power loss; for development machines and tests, where fsync latency dominates.
    pub synchronous_full: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { synchronous_full: true }
    }
}

/// Knobs of the embedded store that trade memory and latency spikes for CPU and bytes written;
/// the defaults are what the `commit_load` example measured best (see issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// How many events the recent tier of keys takes before the writer folds it into the main
    /// tier. Larger: fewer folds (each writes about a page per document written since the last),
    /// but a larger recent tier, all of whose few pages a commit tends to dirty.
    pub fold_after: u64,
    /// About how many keys one step of a fold moves, in one transaction (whole documents, so more
    /// when one document has more). Smaller: a commit that arrives during a fold waits less, for
    /// a few more transactions per fold.
    pub fold_step: u64,
    /// The page cache of each connection, in KiB.
    pub cache_kib: u32,
    /// After how many writes (commits, snapshots, claims) a thread of the store checkpoints the
    /// write-ahead log, off the commit path (see `checkpointer`); `None`: SQLite checkpoints inside
    /// the commit that takes the log past 1,000 pages.
    pub checkpoint_after: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { fold_after: 4096, fold_step: 512, cache_kib: 8192, checkpoint_after: Some(128) }
    }
}

/// The [`EventStore`] of the single-process mode, durable in a data folder.
///
/// Cheap to clone: clones share the same connections. Several stores (or processes) may open the
/// same folder; SQLite serialises their writes and each sees the others' commits.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The thread of the only connection that writes: SQLite admits one writer at a time, so a
    /// second writer connection would only wait on the file lock.
    writer: Writer,
    readers: ReaderPool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store in `dir`, creating the folder and [`DATABASE_FILE`] if needed and bringing
    /// the schema up to date, so a store that opens is ready for every operation.
    ///
    /// This blocks on file I/O: call it at startup, before serving, or from `spawn_blocking`.
    /// Fails with [`StoreError::Corrupt`] when the file is not a database or was written by a newer
    /// build (a schema this build does not know), and [`StoreError::Unavailable`] on I/O errors.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::open_tuned(dir, options, Tuning::default())
    }

    /// [`SqliteStore::open`] with other [`Tuning`] than the default: for benchmarks, and for tests
    /// that fold often.
    pub fn open_tuned(dir: &Path, options: SqliteOptions, tuning: Tuning) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data folder {}: {e}", dir.display()))
        })?;
        let path = dir.join(DATABASE_FILE);
        let mut conn = schema::open_writer(&path, options, tuning)?;
        schema::migrate(&mut conn)?;
        let recent = tiers::recent_count(&conn)?;
        let readers =
            (0..READER_CONNECTIONS).map(|_| schema::open_reader(&path)).collect::<Result<Vec<_>, _>>()?;
        let checkpointer = match tuning.checkpoint_after {
            Some(_) => Some(checkpointer::spawn(&path, options)?),
            None => None,
        };
        let state = WriterState { conn, tuning, recent, ids: Default::default(), checkpointer, writes: 0 };
        let writer = Writer::spawn(state)?;
        tracing::debug!(path = %path.display(), synchronous_full = options.synchronous_full, "event store opened");
        Ok(Self { inner: Arc::new(Inner { path, writer, readers: ReaderPool::new(readers) }) })
    }

    /// The database file, for logs and for tools that inspect it.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the writer connection, on the writer thread. If the caller stops awaiting,
    /// the work still runs to its end (see `writer`).
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.run(move |state| work(&mut state.conn)).await
    }

    /// Runs `work` on a reader connection on a blocking thread.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.readers.with(work)).await
    }
}

/// Moves `work` off the async runtime.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task did not finish: {e}")))?
}

/// Maps a SQLite error that is not a key conflict: damaged files and undecodable values are
/// `Corrupt` (retrying cannot help), everything else (I/O, locks held too long, full disk) is
/// `Unavailable`.
fn sqlite_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as Code;
    match &err {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, Code::DatabaseCorrupt | Code::NotADatabase | Code::TypeMismatch) =>
        {
            StoreError::Corrupt(err.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(_) => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Unavailable(err.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        sqlite_error(err)
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        self.write(move |conn| commit::claim_partition(conn, partition)).await
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<u64, StoreError> {
        // The batch is copied once so the writer thread owns it; encoding it there keeps the JSON
        // work off the runtime too.
        let batch = batch.clone();
        let run = move |state: &mut WriterState| {
            let number = commit::commit(&mut state.conn, &mut state.ids, &batch)?;
            state.recent += batch.events.len() as u64;
            Ok(number)
        };
        self.inner.writer.run(run).await
    }

    async fn mark_published(
        &self,
        partition: PartitionId,
        epoch: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| commit::mark_published(conn, partition, epoch, through)).await
    }

    async fn unpublished(
        &self,
        partition: PartitionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnpublishedCommit>, StoreError> {
        self.read(move |conn| queries::unpublished(conn, partition, after, limit)).await
    }

    async fn latest_version(&self, doc: &DocId) -> Result<u64, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| queries::latest_version(conn, &doc)).await
    }

    async fn read_events(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent>, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| queries::read_events(conn, &doc, after, up_to, limit)).await
    }

    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| queries::load_document(conn, &doc)).await
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let snapshot = snapshot.clone();
        self.write(move |conn| history::write_snapshot(conn, &snapshot)).await
    }

    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError> {
        let (doc, client) = (doc.clone(), client.clone());
        self.read(move |conn| queries::find_outcome(conn, &doc, &client, seq)).await
    }

    async fn last_outcome(&self, doc: &DocId, client: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        let (doc, client) = (doc.clone(), client.clone());
        self.read(move |conn| queries::last_outcome(conn, &doc, &client)).await
    }

    async fn read_history(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| queries::read_history(conn, &doc, after, up_to, limit)).await
    }

    async fn snapshot_at_or_before(&self, doc: &DocId, version: u64) -> Result<Option<Snapshot>, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| history::snapshot_at_or_before(conn, &doc, version)).await
    }

    async fn create_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, StoreError> {
        let checkpoint = checkpoint.clone();
        self.write(move |conn| history::create_checkpoint(conn, &checkpoint)).await
    }

    async fn list_checkpoints(&self, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError> {
        let doc = doc.clone();
        self.read(move |conn| history::list_checkpoints(conn, &doc)).await
    }
}
