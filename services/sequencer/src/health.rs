//! The sequencer service's health (a module of the binary, not of the library).
//!
//! - `GET /healthz` (liveness): the process answers. A failure here means restart it.
//! - `GET /readyz` (readiness) and `grpc.health.v1` on the gRPC port: the ingress can take ops now —
//!   the process is not shutting down, the event log in Postgres answers, and a Kafka broker knows
//!   the ops topic. Not ready means send no submissions here for now, not restart.
//!
//! The checks run once a second in one task, whatever the probe rate; probes read the last answer,
//! so a probe never waits on a slow dependency or multiplies its load.

use std::sync::Arc;
use std::time::Duration;

use tandem_bus::kafka::KafkaOpSubmitter;
use tandem_rpc::health::HealthReporter;
use tandem_store::postgres::PostgresStore;
pub use tandem_telemetry::health::routes;
use tandem_telemetry::health::HealthReport;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often the checks run.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest one dependency may take to answer before it counts as not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness looks at.
pub struct Readiness {
    pub store: Arc<PostgresStore>,
    pub ops: Arc<KafkaOpSubmitter>,
    /// Cancelled when the process starts shutting down.
    pub shutdown: CancellationToken,
}

impl Readiness {
    async fn report(&self) -> HealthReport {
        let mut report = HealthReport::default();
        if self.shutdown.is_cancelled() {
            report.check("shutting_down", Err("the sequencer is leaving the group".to_owned()));
        }
        let store = match tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("Postgres did not answer within {} s", CHECK_TIMEOUT.as_secs())),
        };
        report.check("store", store);
        report.check("kafka", self.ops.check_broker(CHECK_TIMEOUT).await.map_err(|e| e.to_string()));
        report
    }

    /// Checks every second until shutdown, publishing each answer to `/readyz` (through the returned
    /// receiver) and to the gRPC health service.
    pub fn start(self, grpc: HealthReporter) -> watch::Receiver<HealthReport> {
        let mut first = HealthReport::default();
        first.check("started", Err("the first check has not run yet".to_owned()));
        let (tx, rx) = watch::channel(first);
        metrics::gauge!("tandem_sequencer_ready").set(0.0);
        tokio::spawn(async move {
            let mut was_ready = false;
            loop {
                let report = self.report().await;
                let ready = report.is_ready();
                if ready != was_ready {
                    info!(ready, report = report.body().trim_end(), "readiness changed");
                    tandem_rpc::health::set_serving(&grpc, ready).await;
                    was_ready = ready;
                }
                metrics::gauge!("tandem_sequencer_ready").set(if ready { 1.0 } else { 0.0 });
                let _ = tx.send(report);
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                    _ = self.shutdown.cancelled(), if !self.shutdown.is_cancelled() => {}
                }
            }
        });
        rx
    }
}
