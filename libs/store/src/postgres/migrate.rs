//! The schema migrations, embedded in the binary so a deployed build always carries the schema it
//! reads and writes.
//!
//! Applied migrations are rows of `schema_migrations`. All pending ones run in one transaction that
//! first takes an advisory lock, so sequencers starting together apply each migration once (the
//! others wait, then find nothing left to do), and a failure leaves the previous schema intact
//! (Postgres DDL is transactional).

use deadpool_postgres::Client;

use super::codec::{column, pg_error};
use crate::StoreError;

/// Every migration, in order: (version, name, SQL). A version, once released, never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "event_log", include_str!("../../migrations/postgres/0001_event_log.sql")),
    (2, "outbox", include_str!("../../migrations/postgres/0002_outbox.sql")),
    (3, "history", include_str!("../../migrations/postgres/0003_history.sql")),
];

/// The advisory lock that serialises migrations ('TMIG'); its own class, apart from documents'.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(1414351175, 0)";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations ( \
     version    integer     PRIMARY KEY, \
     name       text        NOT NULL, \
     applied_at timestamptz NOT NULL DEFAULT now())";

/// Applies the migrations the database lacks; returns how many it applied.
pub(super) async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let fail = |doing: &'static str| move |e| pg_error(e, doing);
    let tx = client.transaction().await.map_err(fail("begin migrating"))?;
    tx.batch_execute(MIGRATION_LOCK).await.map_err(fail("take the migration lock"))?;
    tx.batch_execute(CREATE_TABLE).await.map_err(fail("create schema_migrations"))?;
    let rows = tx
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .map_err(fail("read applied migrations"))?;
    let applied =
        rows.iter().map(|row| column::<i32>(row, 0, "migration version")).collect::<Result<Vec<_>, _>>()?;
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(StoreError::Corrupt(format!(
            "the database has schema migration {newer}, newer than this build's {known}; \
             use it with a newer Tandem"
        )));
    }
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_error(e, &format!("apply migration {version} ({name})")))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await
            .map_err(fail("record a migration"))?;
        tracing::info!(version, name, "postgres schema migrated");
        count += 1;
    }
    tx.commit().await.map_err(fail("commit the migrations"))?;
    Ok(count)
}
