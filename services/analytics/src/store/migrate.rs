//! The analytics tables' migrations, embedded in the binary. Recorded in
//! `analytics_schema_migrations`, apart from the event store's `schema_migrations` (which refuses
//! versions it does not know), and serialised by an advisory lock of their own, so analytics
//! instances starting together apply each migration once and a failure leaves the previous schema
//! intact (Postgres DDL is transactional).

use anyhow::Context;
use deadpool_postgres::Client;

/// Every migration, in order: (version, name, SQL). A version, once released, never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "analytics", include_str!("../../migrations/0001_analytics.sql")),
    (2, "deletions_and_users", include_str!("../../migrations/0002_deletions_and_users.sql")),
];

/// The advisory lock that serialises these migrations ('TANA'); not the event store's.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(1413566017, 0)";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS analytics_schema_migrations ( \
     version    integer     PRIMARY KEY, \
     name       text        NOT NULL, \
     applied_at timestamptz NOT NULL DEFAULT now())";

/// Applies the migrations the database lacks; returns how many it applied.
pub(super) async fn migrate(client: &mut Client) -> anyhow::Result<usize> {
    let tx = client.transaction().await.context("begin migrating")?;
    tx.batch_execute(MIGRATION_LOCK).await.context("take the migration lock")?;
    tx.batch_execute(CREATE_TABLE).await.context("create analytics_schema_migrations")?;
    let rows = tx
        .query("SELECT version FROM analytics_schema_migrations ORDER BY version", &[])
        .await
        .context("read the applied migrations")?;
    let applied = rows.iter().map(|row| row.try_get::<_, i32>(0)).collect::<Result<Vec<_>, _>>()?;
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        anyhow::bail!(
            "the database has analytics migration {newer}, newer than this build's {known}; \
             use it with a newer tandem-analytics"
        );
    }
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.with_context(|| format!("apply migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO analytics_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .context("record a migration")?;
        tracing::info!(version, name, "analytics schema migrated");
        count += 1;
    }
    tx.commit().await.context("commit the migrations")?;
    Ok(count)
}
