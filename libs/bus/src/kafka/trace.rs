//! W3C trace context in Kafka record headers, through tandem-telemetry's propagator.
//!
//! records.proto keeps trace context out of the messages: it travels in record headers
//! (`traceparent`, `tracestate`), so analytics consumers that ignore tracing never see it in the
//! schema, and a tracing-aware consumer reads it without decoding the value.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use tandem_telemetry::propagation::{self, Context, Extractor, Injector};

/// Collects the injected pairs as record headers.
#[derive(Default)]
struct HeaderInjector(Option<OwnedHeaders>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let headers = self.0.take().unwrap_or_else(|| OwnedHeaders::new_with_capacity(2));
        self.0 = Some(headers.insert(Header { key, value: Some(&value) }));
    }
}

/// Reads trace context from a record's headers.
struct HeaderExtractor<'a, H>(&'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        let header = self.0.iter().find(|header| header.key == key)?;
        std::str::from_utf8(header.value?).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

/// The headers carrying `cx`; `None` when it holds no span, so such a record carries no header
/// block at all.
pub(super) fn headers_of(cx: &Context) -> Option<OwnedHeaders> {
    let mut injector = HeaderInjector::default();
    propagation::inject_context(cx, &mut injector);
    injector.0
}

/// The headers carrying one `traceparent` (`None` when it is not a valid one).
pub(super) fn headers_of_traceparent(traceparent: &str) -> Option<OwnedHeaders> {
    headers_of(&propagation::from_traceparent(traceparent))
}

/// The headers carrying the current span's context (see [`headers_of`]).
pub(super) fn current_headers() -> Option<OwnedHeaders> {
    headers_of(&tracing_current())
}

fn tracing_current() -> Context {
    use propagation::OpenTelemetrySpanExt;
    tracing::Span::current().context()
}

/// The trace context among a record's headers: empty when missing or malformed (the W3C spec says
/// to ignore a bad trace context, never to fail the record over it).
pub(super) fn context(headers: Option<&impl Headers>) -> Context {
    match headers {
        Some(headers) => propagation::extract(&HeaderExtractor(headers)),
        None => Context::new(),
    }
}

/// The record's `traceparent`, when it carries a valid one.
pub(super) fn traceparent(headers: Option<&impl Headers>) -> Option<String> {
    let mut map = std::collections::HashMap::new();
    propagation::inject_context(&context(headers), &mut map);
    map.remove(propagation::TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_and_ignores_what_is_not_a_traceparent() {
        let headers = headers_of(&propagation::from_traceparent(GOOD));
        assert_eq!(traceparent(headers.as_ref()).as_deref(), Some(GOOD));
        assert!(headers_of(&Context::new()).is_none());
        assert_eq!(traceparent(None::<&OwnedHeaders>), None);
        let other = OwnedHeaders::new().insert(Header { key: "tracestate", value: Some("k=v") });
        assert_eq!(traceparent(Some(&other)), None);
        let malformed = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some("00-zz-01") });
        assert_eq!(traceparent(Some(&malformed)), None);
        let empty = OwnedHeaders::new().insert(Header::<&str> { key: "traceparent", value: None });
        assert_eq!(traceparent(Some(&empty)), None);
    }
}
