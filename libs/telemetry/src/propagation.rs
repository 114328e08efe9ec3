//! W3C trace context (`traceparent`, `tracestate`) between processes, through OpenTelemetry's
//! `TraceContextPropagator`. The carriers (tonic metadata in tandem-rpc, Kafka record headers in
//! tandem-bus) only adapt their maps to [`Injector`] / [`Extractor`]; what goes in them is decided
//! here, once.
//!
//! The context injected is the current `tracing` span's. With tracing off (no OpenTelemetry layer)
//! spans have no OpenTelemetry context, so nothing is injected and an extracted parent is ignored:
//! off costs one empty map look-up per hop.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::propagation::{Extractor, Injector};
pub use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
pub use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header and metadata key.
pub const TRACEPARENT: &str = "traceparent";

/// Writes `cx` into a carrier.
pub fn inject_context(cx: &Context, injector: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, injector);
}

/// Writes the current span's context into a carrier (nothing when it has none).
pub fn inject_current(injector: &mut dyn Injector) {
    inject_context(&tracing::Span::current().context(), injector);
}

/// The context a carrier holds; an empty context when it holds none or a malformed one (the W3C
/// spec says to ignore a bad trace context, never to fail the request over it).
pub fn extract(extractor: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(extractor)
}

/// The current span's `traceparent`, for a carrier that holds one string per op
/// (`SubmitRequest.traceparents`).
pub fn current_traceparent() -> Option<String> {
    let mut map = HashMap::new();
    inject_current(&mut map);
    map.remove(TRACEPARENT)
}

/// The context of one `traceparent` string.
pub fn from_traceparent(traceparent: &str) -> Context {
    extract(&HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]))
}

/// The `traceparent` of `span` (none when it has no OpenTelemetry context).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut map = HashMap::new();
    inject_context(&span.context(), &mut map);
    map.remove(TRACEPARENT)
}

/// The context of `traceparent` when it is valid and its sampled flag is set; `None` otherwise.
///
/// Work done for many ops at once (the partition owner's batches, a gateway's fan-out) opens spans
/// only for the ops whose trace is sampled: an op outside the sample costs no span there at all.
pub fn sampled(traceparent: &str) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt;
    let cx = from_traceparent(traceparent);
    let span_context = cx.span().span_context().clone();
    (span_context.is_valid() && span_context.is_sampled()).then_some(cx)
}

/// Makes `cx` the parent of `span` when it holds a valid remote span; otherwise `span` keeps the
/// parent it has (a new root when it has none).
pub fn set_remote_parent(span: &tracing::Span, cx: Context) {
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_ignored() {
        let mut map = HashMap::new();
        inject_context(&from_traceparent(GOOD), &mut map);
        assert_eq!(map.get(TRACEPARENT).map(String::as_str), Some(GOOD));
        let mut empty = HashMap::new();
        inject_context(&from_traceparent("00-zz-01"), &mut empty);
        assert!(empty.is_empty(), "{empty:?}");
    }

    #[test]
    fn only_valid_sampled_contexts_are_sampled() {
        assert!(sampled(GOOD).is_some());
        assert!(sampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_none(), "not sampled");
        assert!(sampled("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none(), "invalid id");
        assert!(sampled("garbage").is_none());
    }
}
