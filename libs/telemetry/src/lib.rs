//! Tracing and metrics set-up shared by every Tandem service, so every process logs and counts the
//! same way. Libraries only use the `tracing` and `metrics` facades; a service installs what
//! records them here.

use std::future::Future;

pub mod health;
pub mod otel;
pub mod propagation;
pub mod service;
pub mod testing;

use axum::routing::get;
use axum::Router;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

/// Installs the global `tracing` subscriber: human-readable lines on stderr, filtered by `TANDEM_LOG`
/// (or `RUST_LOG`), `info` by default. Stdout stays free for what a service prints on purpose.
/// When the `OTEL_*` variables ask for it ([`otel`]), spans are exported over OTLP as well.
pub fn init() {
    install(None);
}

/// [`init`] for a service that names its process (`--instance`): the name is the traces'
/// `service.instance.id` (unless `OTEL_RESOURCE_ATTRIBUTES` sets one), so the spans of two
/// gateways are told apart.
pub fn init_instance(instance: &str) {
    install(Some(instance));
}

fn install(instance: Option<&str>) {
    let filter = std::env::var("TANDEM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(EnvFilter::new)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs written to files (make cluster, tests) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    // Each layer has its own filter: a quiet log (`TANDEM_LOG=warn`) must not drop the info-level
    // spans that make up an op's trace.
    let spans =
        otel::layer(instance).map(|layer| layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(spans).try_init();
}

/// Buckets of every `*_seconds` histogram: 100 µs to 10 s, where an op's stages live.
const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Buckets of the sequencer's batch sizes (ops per commit).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the global metrics recorder (Prometheus text format) and returns the handle that
/// renders it. `None` if a recorder is already installed (a second call in one process).
///
/// Histograms are exported as Prometheus histograms (`_bucket`, `_sum`, `_count`), not summaries,
/// so a dashboard can take quantiles over every replica (`histogram_quantile` of summed buckets).
pub fn metrics_recorder() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_ops".into()), BATCH_BUCKETS))
        .expect("the bucket lists are not empty")
        .install_recorder()
        .ok()
}

/// Routes `GET /metrics` to the recorder, for a service to merge into its own HTTP router.
pub fn metrics_routes<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Serves `GET /metrics` on its own listener (for services without an HTTP port of their own).
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_routes::<()>(handle)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_are_served_in_prometheus_text() {
        let handle = metrics_recorder().expect("the first recorder installs");
        metrics::counter!("tandem_test_total", "kind" => "x").increment(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_metrics(listener, handle, std::future::pending()));
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.contains("tandem_test_total{kind=\"x\"} 3"), "{response}");
        server.abort();
    }
}
