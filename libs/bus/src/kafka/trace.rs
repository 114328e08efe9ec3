//! W3C trace context in Kafka record headers.
//!
//! records.proto keeps trace context out of the messages: it travels in a record header named
//! `traceparent`, so analytics consumers that ignore tracing never see it in the schema, and a
//! tracing-aware consumer reads it without decoding the value.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use tandem_proto::trace_context::{TraceParent, TRACEPARENT};

/// The headers of a record produced under `traceparent`; `None` without one, so such a record
/// carries no header block at all.
pub(super) fn headers(traceparent: Option<&TraceParent>) -> Option<OwnedHeaders> {
    let traceparent = traceparent?;
    Some(
        OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: TRACEPARENT, value: Some(traceparent.as_str()) }),
    )
}

/// The valid `traceparent` among a record's headers. A missing or malformed one is `None`: the W3C
/// spec says to ignore a bad trace context, never to fail the record over it.
pub(super) fn traceparent(headers: Option<&impl Headers>) -> Option<TraceParent> {
    let header = headers?.iter().find(|header| header.key == TRACEPARENT)?;
    std::str::from_utf8(header.value?).ok().and_then(TraceParent::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_what_is_not_a_traceparent() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(traceparent(headers(tp.as_ref()).as_ref()), tp);
        assert!(headers(None).is_none());
        assert_eq!(traceparent(None::<&OwnedHeaders>), None);
        let other = OwnedHeaders::new().insert(Header { key: "tracestate", value: Some("k=v") });
        assert_eq!(traceparent(Some(&other)), None);
        let malformed = OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some("00-zz-01") });
        assert_eq!(traceparent(Some(&malformed)), None);
        let empty = OwnedHeaders::new().insert(Header::<&str> { key: TRACEPARENT, value: None });
        assert_eq!(traceparent(Some(&empty)), None);
    }
}
