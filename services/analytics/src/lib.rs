//! `tandem-analytics`: an example consumer of the events topic (docs/EVENTS.md) that keeps
//! per-document and per-author activity in Postgres tables of its own (docs/ANALYTICS.md),
//! exactly once in effect.
//!
//! - [`record`]: one record's bytes → an edit to count, a tombstone, or the reason to skip it (pure);
//! - [`tally`]: the counting rules, deduplication by (doc, version), edit runs, and the purge of
//!   deleted documents (pure);
//! - [`store`]: the analytics tables; one transaction per batch holds the counts, the purges and
//!   the offsets;
//! - [`consumer`]: the consumer group member that reads the topic and commits each poll's batch;
//! - [`health`]: `/healthz` and `/readyz`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_telemetry::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod config;
pub mod consumer;
pub mod health;
pub mod record;
pub mod store;
pub mod tally;

pub use config::Config;

/// How long a stop may take: the batch in hand is committed, then the member leaves the group.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Runs the consumer until `shutdown` resolves (or the consumer fails), serving `/metrics`,
/// `/healthz` and `/readyz` on `http` when given. `config.group()` must have been checked.
pub async fn run(
    config: Config,
    http: Option<TcpListener>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let group = config.group().map_err(anyhow::Error::msg)?;
    let topic = config.topic();
    let store = store::AnalyticsStore::connect(&config.postgres_url).await.context("connect to Postgres")?;
    store.migrate().await.context("migrate the analytics tables")?;
    for name in [
        "tandem_analytics_edits_counted_total",
        "tandem_analytics_duplicates_total",
        "tandem_analytics_versions_missed_total",
        "tandem_analytics_commit_retries_total",
        "tandem_analytics_deleted_history_total",
        "tandem_analytics_documents_purged_total",
        "tandem_analytics_tombstones_repeated_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    info!(kafka = %config.kafka.describe(), %topic, %group, "kafka settings");

    let stop = CancellationToken::new();
    let status = Arc::new(consumer::Status::default());
    let settings = consumer::Settings {
        topic: topic.clone(),
        group,
        instance: config.instance.clone(),
        kafka: config.kafka.clone(),
        max_batch: config.max_batch as usize,
        run_gap_ms: config.run_gap_ms(),
    };
    let events = consumer::EventsConsumer::new(settings, store.clone(), tokio::runtime::Handle::current())?;
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let (thread_status, thread_stop) = (status.clone(), stop.clone());
    // The consumer's own thread: the rebalance callback blocks on Postgres (see `consumer`).
    std::thread::Builder::new()
        .name("events-consumer".to_owned())
        .spawn(move || {
            let _ = done_tx.send(events.run(&thread_status, &thread_stop));
        })
        .context("start the consumer thread")?;

    let mut server = None;
    if let Some(listener) = http {
        let address = listener.local_addr().context("read the bound address")?;
        let readiness =
            health::Readiness::new(store, &config.kafka.brokers, topic, status, stop.clone())?.start();
        let routes = metrics
            .map(tandem_telemetry::metrics_routes)
            .unwrap_or_default()
            .merge(health::routes(readiness));
        let http_stop = stop.clone();
        server = Some(tokio::spawn(async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await
        }));
        println!("analytics {} http listening on {address}", config.instance);
    } else {
        println!("analytics {} started", config.instance);
    }

    tokio::select! {
        _ = shutdown => info!("shutting down: finishing the batch in hand, then leaving the group"),
        result = &mut done => {
            stop.cancel();
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the consumer stopped")),
                Ok(Err(e)) => Err(e.context("the consumer failed")),
                Err(_) => Err(anyhow::anyhow!("the consumer thread panicked")),
            };
        }
    }
    stop.cancel();
    match tokio::time::timeout(STOP_LIMIT, done).await {
        Ok(Ok(result)) => result.context("the consumer failed while stopping")?,
        Ok(Err(_)) => anyhow::bail!("the consumer thread panicked"),
        Err(_) => warn!("the consumer did not stop within {} s", STOP_LIMIT.as_secs()),
    }
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    info!("stopped");
    Ok(())
}
