//! The OpenTelemetry trace pipeline: OTLP export of the `tracing` spans, configured only by the
//! standard `OTEL_*` variables and off unless they ask for it.
//!
//! Off (the default) installs no layer at all, so spans cost what plain `tracing` spans cost and
//! nothing is exported. On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set or
//! `OTEL_TRACES_EXPORTER=otlp`, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
//! The SDK itself reads the rest: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio` and `0.1`),
//! the endpoint and `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT`.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The provider of this process, kept so [`shutdown`] can flush it on exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the `OTEL_*` variables turn tracing on (see the module comment).
pub fn enabled(var: impl Fn(&str) -> Option<String>) -> bool {
    let is = |name: &str, value: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return false;
    }
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        || is("OTEL_TRACES_EXPORTER", "otlp")
}

/// The layer that turns `tracing` spans into exported OpenTelemetry spans, or `None` when the
/// environment leaves tracing off or the exporter cannot be built (logged on stderr: the service
/// runs on without traces rather than refusing to start over them).
pub fn layer<S>(instance: Option<&str>) -> Option<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !enabled(|name| std::env::var(name).ok()) {
        return None;
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !protocol.is_empty() && protocol != "http/protobuf" {
        // gRPC export would need a tokio reactor on the SDK's export thread; HTTP needs none.
        eprintln!(
            "tandem-telemetry: OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported, using http/protobuf"
        );
    }
    let exporter = match SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("tandem-telemetry: OTLP exporter not built, tracing stays off: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(default_service_name());
    }
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    if let Some(instance) = instance.filter(|_| !attributes.contains("service.instance.id=")) {
        resource =
            resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance.to_owned()));
    }
    // The default config reads OTEL_TRACES_SAMPLER(_ARG); the batch processor exports off the
    // request path, from its own thread.
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("tandem");
    let _ = PROVIDER.set(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Exports what is still buffered and stops the exporter; a no-op when tracing is off. Called by
/// [`crate::service::run_service`] once the service's body has returned.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("tandem-telemetry: flushing traces on exit: {e}");
        }
    }
}

/// The binary's name (`tandem-gateway`, `tandem-sequencer`, ...), so each process is told apart in
/// the trace without any setting.
fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tandem".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn off_unless_an_endpoint_or_exporter_is_asked_for() {
        assert!(!enabled(env(&[])));
        assert!(!enabled(env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])));
        assert!(enabled(env(&[("OTEL_TRACES_EXPORTER", "otlp")])));
        assert!(!enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"), ("OTEL_SDK_DISABLED", "true")])));
        assert!(!enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
    }
}
