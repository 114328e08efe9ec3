//! The event store of the distributed mode: PostgreSQL, shared by every sequencer and gateway.
//!
//! Why Postgres: the event log is the source of truth and an op is acknowledged only once it is
//! committed, so it needs a durable, replicated, transactional store that several sequencer
//! instances write at once, each fenced by its partition's epoch inside its commit transaction.
//!
//! Group commit is one transaction with a fixed number of statements whatever the batch size: the
//! batch travels as array parameters and is inserted with `INSERT ... SELECT * FROM unnest(...)`
//! (see the `commit` module). Every statement is prepared once per pooled connection
//! (deadpool-postgres's `prepare_cached`), so steady-state work is binds and executes only.
//!
//! Numbers follow the embedded store: Postgres integers are signed, versions, epochs and offsets
//! are checked on the way in and out, and `seq` (any `u64`, chosen by clients) is stored
//! bit-for-bit as a `bigint`. Partition ids are `u32`, so their column is a `bigint` too.
//!
//! Connections are plain TCP (`NoTls`): the store talks to a database inside the cluster network
//! or on the same machine.

mod codec;
mod commit;
mod deletion;
mod history;
mod migrate;
mod queries;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tandem_protocol::records::{CommittedEvent, Outcome};
use tandem_protocol::{ClientId, DocId};
use tokio_postgres::NoTls;

use crate::{
    Checkpoint, ClientRecord, CommitBatch, EventStore, HistoryEntry, PartitionClaim, PartitionId, Snapshot,
    StoreError, StoredDocument, UnpublishedCommit,
};
use codec::pool_error;

/// Where the store connects and how many connections it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// A libpq-style URL, e.g. `postgres://postgres@127.0.0.1:5432/tandem` (key=value strings
    /// such as `host=... dbname=...` work too).
    pub url: String,
    /// The most connections the store opens. A sequencer commits one batch per partition at a time
    /// and gateways read in short queries, so a handful serves a process; each connection is a
    /// server process on the database side.
    pub pool_size: usize,
    /// How long an operation waits to connect or for a free connection before it fails with
    /// [`StoreError::Unavailable`] instead of hanging while the database is down or saturated.
    pub timeout: Duration,
    /// The server ends a session that sits idle inside a transaction this long. A sequencer frozen
    /// mid-commit (a long pause, SIGSTOP, a hung host) keeps its connection open; without this it
    /// would hold its partition's row lock forever and the next owner's claim could never proceed.
    pub idle_in_transaction_timeout: Duration,
    /// The longest a statement waits for a row lock before it fails (and is retried by the caller).
    pub lock_timeout: Duration,
}

impl PostgresConfig {
    /// A config for `url` with the default pool size (8) and timeout (5 s).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(15),
        }
    }
}

/// The [`EventStore`] of the distributed mode.
///
/// Cheap to clone: clones share one connection pool. Any number of stores, in any number of
/// processes, may use the same database: fencing and keys are enforced by the database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Builds the pool and opens one connection, so that a wrong URL or an unreachable server is
    /// reported at startup ([`StoreError::Unavailable`]) rather than on the first commit.
    ///
    /// It does not touch the schema: call [`PostgresStore::migrate`] (every starter may; it is
    /// idempotent and serialised) before serving.
    pub async fn connect(config: PostgresConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|e| StoreError::Unavailable(format!("invalid postgres url: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("tandem");
        }
        let session = format!(
            "-c idle_in_transaction_session_timeout={} -c lock_timeout={}",
            config.idle_in_transaction_timeout.as_millis(),
            config.lock_timeout.as_millis()
        );
        let options = match pg.get_options() {
            Some(given) => format!("{given} {session}"),
            None => session,
        };
        pg.options(&options);
        let server = describe(&pg);
        // `Fast` recycling trusts a connection that is not closed: a broken one fails its next
        // statement with `Unavailable` and is dropped, instead of every checkout paying a probe.
        let manager =
            Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the postgres pool: {e}")))?;
        let store = Self { pool };
        match store.client().await {
            Ok(client) => drop(client),
            Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(format!("{server}: {e}"))),
            Err(e) => return Err(e),
        }
        tracing::debug!(pool_size = config.pool_size, "postgres event store connected");
        Ok(store)
    }

    /// Brings the schema up to date and returns how many migrations it applied (0 when it was).
    /// Fails with [`StoreError::Corrupt`] when the database was migrated by a newer build.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        migrate::migrate(&mut self.client().await?).await
    }

    /// One round trip to the server (`SELECT 1`): whether the event log answers now (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(|e| StoreError::Unavailable(format!("ping: {e}")))?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Where a config points, for error messages: hosts, ports, database and user, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "postgres at {} (database {}, user {})",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        queries::claim_partition(&self.client().await?, partition).await
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<u64, StoreError> {
        commit::commit(&mut self.client().await?, batch).await
    }

    async fn mark_published(
        &self,
        partition: PartitionId,
        epoch: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        queries::mark_published(&mut self.client().await?, partition, epoch, through).await
    }

    async fn unpublished(
        &self,
        partition: PartitionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnpublishedCommit>, StoreError> {
        queries::unpublished(&mut self.client().await?, partition, after, limit).await
    }

    async fn latest_version(&self, doc: &DocId) -> Result<u64, StoreError> {
        queries::latest_version(&self.client().await?, doc).await
    }

    async fn read_events(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent>, StoreError> {
        queries::read_events(&self.client().await?, doc, after, up_to, limit).await
    }

    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError> {
        queries::load_document(&mut self.client().await?, doc).await
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        history::write_snapshot(&mut self.client().await?, snapshot).await
    }

    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError> {
        queries::find_outcome(&self.client().await?, doc, client, seq).await
    }

    async fn last_outcome(&self, doc: &DocId, client: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        queries::last_outcome(&self.client().await?, doc, client).await
    }

    async fn read_history(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        history::read_history(&self.client().await?, doc, after, up_to, limit).await
    }

    async fn snapshot_at_or_before(&self, doc: &DocId, version: u64) -> Result<Option<Snapshot>, StoreError> {
        history::snapshot_at_or_before(&self.client().await?, doc, version).await
    }

    async fn create_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, StoreError> {
        history::create_checkpoint(&mut self.client().await?, checkpoint).await
    }

    async fn list_checkpoints(&self, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError> {
        history::list_checkpoints(&self.client().await?, doc).await
    }
}
