//! A local OpenTelemetry pipeline for tests: spans get real trace and span ids (so propagation can
//! be checked across a hop) and are exported nowhere.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

/// Installs, for the current thread until the guard drops, a subscriber whose spans carry
/// OpenTelemetry contexts. Use with a current-thread runtime (`#[tokio::test]`'s default).
pub fn traced() -> tracing::subscriber::DefaultGuard {
    let tracer = SdkTracerProvider::builder().build().tracer("tandem-test");
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::set_default(subscriber)
}
