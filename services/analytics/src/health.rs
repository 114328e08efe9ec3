//! Liveness and readiness, as the sequencers answer them.
//!
//! - `GET /healthz`: the process answers.
//! - `GET /readyz`: the consumer can count now: not shutting down, the analytics tables answer
//!   (`SELECT 1` within 2 s), a broker knows the events topic, and the member has subscribed.
//!   Not ready means look at why (one line per component), not restart: a consumer whose Postgres
//!   is down keeps its place and resumes.
//!
//! The checks run once a second in one task, whatever the probe rate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
pub use tandem_telemetry::health::routes;
use tandem_telemetry::health::HealthReport;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::consumer::Status;
use crate::store::AnalyticsStore;

const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness looks at.
pub struct Readiness {
    pub store: AnalyticsStore,
    /// A client of its own for metadata requests (no group), so a check never waits on the
    /// consumer's thread.
    metadata: Arc<BaseConsumer>,
    topic: String,
    pub status: Arc<Status>,
    pub shutdown: CancellationToken,
}

impl Readiness {
    pub fn new(
        store: AnalyticsStore,
        brokers: &str,
        topic: String,
        status: Arc<Status>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metadata: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "analytics-readiness")
            .create()
            .context("create the readiness client")?;
        Ok(Self { store, metadata: Arc::new(metadata), topic, status, shutdown })
    }

    async fn report(&self) -> HealthReport {
        let mut report = HealthReport::default();
        if self.shutdown.is_cancelled() {
            report.check("shutting_down", Err("the consumer is leaving the group".to_owned()));
        }
        let store = match tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()).await {
            Ok(result) => result.map_err(|e| format!("{e:#}")),
            Err(_) => Err(format!("Postgres did not answer within {} s", CHECK_TIMEOUT.as_secs())),
        };
        report.check("store", store);
        report.check("kafka", self.topic_known().await);
        let subscribed = self.status.subscribed.load(Ordering::Relaxed);
        report.check(
            "consumer",
            if subscribed { Ok(()) } else { Err(format!("waiting for topic {}", self.topic)) },
        );
        report
    }

    async fn topic_known(&self) -> Result<(), String> {
        let metadata = Arc::clone(&self.metadata);
        let topic = self.topic.clone();
        // A metadata request blocks a thread for a round trip: keep it off the runtime.
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = metadata.fetch_metadata(Some(&topic), CHECK_TIMEOUT).map_err(|e| e.to_string())?;
            match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(format!("no broker knows topic {topic}")),
            }
        })
        .await;
        answer.unwrap_or_else(|e| Err(format!("the check failed: {e}")))
    }

    /// Checks every second until the process ends, publishing each answer for `/readyz`.
    pub fn start(self) -> watch::Receiver<HealthReport> {
        let mut first = HealthReport::default();
        first.check("started", Err("the first check has not run yet".to_owned()));
        let (tx, rx) = watch::channel(first);
        metrics::gauge!("tandem_analytics_ready").set(0.0);
        tokio::spawn(async move {
            let mut was_ready = false;
            loop {
                let report = self.report().await;
                let ready = report.is_ready();
                if ready != was_ready {
                    info!(ready, report = report.body().trim_end(), "readiness changed");
                    was_ready = ready;
                }
                metrics::gauge!("tandem_analytics_ready").set(if ready { 1.0 } else { 0.0 });
                if tx.send(report).is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                    _ = self.shutdown.cancelled(), if !self.shutdown.is_cancelled() => {}
                }
            }
        });
        rx
    }
}
