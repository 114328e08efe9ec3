//! W3C trace context (`traceparent`) of the op being handled, across the gRPC hop and the op log.
//!
//! Tandem's tracing is plain `tracing` today, whose spans carry no W3C trace ids. So the trace
//! context of an op is held explicitly: whoever knows it (the gateway, from an incoming request or
//! its own root span) runs the submission inside [`scope`]; tandem-rpc's `GrpcSubmitter` reads it
//! with [`current`] and sends it along with the op (`SubmitRequest.traceparents`); the ingress
//! scopes each submission to the context it arrived with, so the op log below it (tandem-bus's
//! `KafkaOpSubmitter`) reads it with [`current`] again and writes it as the record's `traceparent`
//! header, where the partition owner finds it.
//!
//! It lives here, not in tandem-rpc, because tandem-rpc depends on tandem-bus and the Kafka bus
//! must read it too; tandem-rpc adds the gRPC metadata half (`inject`, `extract`).
//!
//! This module is the one seam to change when an OpenTelemetry layer arrives: [`current`] would then
//! fall back to the current span's context.

use std::fmt;
use std::future::Future;

/// The metadata key and Kafka header name of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A validated W3C `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything malformed, which the W3C spec says to
    /// ignore rather than fail the request over.
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace_id, parent_id, flags, ..] = parts.as_slice() else {
            return None;
        };
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        // Version ff is forbidden; version 00 has exactly four fields; later versions may add more.
        let ok = hex(version, 2)
            && *version != "ff"
            && (*version != "00" || parts.len() == 4)
            && hex(trace_id, 32)
            && nonzero(trace_id)
            && hex(parent_id, 16)
            && nonzero(parent_id)
            && hex(flags, 2);
        ok.then(|| Self(value.trim().to_owned()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id, shared by every span of the trace.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

tokio::task_local! {
    static CURRENT: Option<TraceParent>;
}

/// Runs `future` with `traceparent` as the trace context that [`current`] returns inside it.
pub async fn scope<F: Future>(traceparent: Option<TraceParent>, future: F) -> F::Output {
    CURRENT.scope(traceparent, future).await
}

/// The trace context of the running task, if one was set with [`scope`].
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|tp| tp.clone()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_w3c_examples() {
        let tp = TraceParent::parse(GOOD).expect("the W3C example is valid");
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
        assert!(TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse(&format!("{GOOD}-extra")).is_none());
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        assert!(TraceParent::parse("").is_none());
    }

    #[tokio::test]
    async fn scope_sets_current() {
        assert_eq!(current(), None);
        let tp = TraceParent::parse(GOOD);
        let seen = scope(tp.clone(), async { current() }).await;
        assert_eq!(seen, tp);
    }
}
