//! W3C trace context (`traceparent`) across the gRPC hop.
//!
//! The task-local context itself ([`TraceParent`], [`scope`], [`current`]) lives in
//! [`tandem_proto::trace_context`], so the Kafka op log (tandem-bus, which this crate depends on)
//! can read it as well; it is re-exported here unchanged. This module adds the gRPC half:
//! [`crate::GrpcSubmitter`] sends [`current`] along with each op (`SubmitRequest.traceparents`) and
//! [`inject`]s it into the metadata of a whole call; the ingress [`extract`]s it and scopes each
//! submission to the context it arrived with.

use tonic::metadata::{MetadataMap, MetadataValue};

pub use tandem_proto::trace_context::{current, scope, TraceParent, TRACEPARENT};

/// Writes `traceparent` into gRPC metadata (a no-op for `None`).
pub fn inject(metadata: &mut MetadataMap, traceparent: Option<&TraceParent>) {
    if let Some(value) = traceparent.and_then(|tp| MetadataValue::try_from(tp.as_str()).ok()) {
        metadata.insert(TRACEPARENT, value);
    }
}

/// Reads a valid `traceparent` from gRPC metadata; a missing or malformed one is `None`.
pub fn extract(metadata: &MetadataMap) -> Option<TraceParent> {
    metadata.get(TRACEPARENT)?.to_str().ok().and_then(TraceParent::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn metadata_round_trip() {
        let tp = TraceParent::parse(GOOD);
        let mut metadata = MetadataMap::new();
        inject(&mut metadata, tp.as_ref());
        assert_eq!(extract(&metadata), tp);
        assert_eq!(extract(&MetadataMap::new()), None);
        let mut malformed = MetadataMap::new();
        malformed.insert(TRACEPARENT, MetadataValue::from_static("00-not-a-trace-01"));
        assert_eq!(extract(&malformed), None);
    }
}
