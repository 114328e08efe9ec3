//! W3C trace context across the gRPC hop, through tandem-telemetry's propagator.
//!
//! Two carriers, because one `Submit` stream carries the ops of many traces: the call as a whole
//! carries the caller's context in metadata ([`MetadataInjector`] / [`MetadataExtractor`]), and
//! each op carries its own `traceparent` in `SubmitRequest.traceparents`, which the ingress makes
//! the parent of that op's `ingress append` span.

use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

pub use tandem_telemetry::propagation::{
    current_traceparent, extract, inject_current, traceparent_of, Context, TRACEPARENT,
};
use tandem_telemetry::propagation::{Extractor, Injector};

/// Writes trace context into gRPC metadata; a pair that is not valid ASCII metadata is dropped.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value))
        {
            self.0.insert(key, value);
        }
    }
}

/// Reads trace context from gRPC metadata (ASCII entries only; binary ones never hold it).
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(key, _) => Some(key.as_str()),
                KeyAndValueRef::Binary(..) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_telemetry::propagation::{from_traceparent, inject_context};

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn span_context(cx: &Context) -> opentelemetry::trace::SpanContext {
        use opentelemetry::trace::TraceContextExt;
        cx.span().span_context().clone()
    }

    #[test]
    fn metadata_round_trip() {
        let sent = from_traceparent(GOOD);
        let mut metadata = MetadataMap::new();
        inject_context(&sent, &mut MetadataInjector(&mut metadata));
        assert_eq!(metadata.get(TRACEPARENT).and_then(|v| v.to_str().ok()), Some(GOOD));
        let received = extract(&MetadataExtractor(&metadata));
        assert_eq!(span_context(&received), span_context(&sent));
        assert!(span_context(&received).is_remote());
        assert!(!span_context(&extract(&MetadataExtractor(&MetadataMap::new()))).is_valid());
        let mut malformed = MetadataMap::new();
        malformed.insert(TRACEPARENT, MetadataValue::from_static("00-not-a-trace-01"));
        assert!(!span_context(&extract(&MetadataExtractor(&malformed))).is_valid());
    }
}
