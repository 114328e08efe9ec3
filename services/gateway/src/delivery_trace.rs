//! A gateway's part of an op's trace (docs/TRACING.md, "Spans"): `deliver`, the fan-out of the
//! op's version to this gateway's subscribers of the document, child of the partition owner's
//! `publish` span (whose context the record carries); and `ack`, child of `deliver`, on the
//! gateway where the op's author is connected. Every gateway delivers, so a trace has one
//! `deliver` per gateway with the document open, and one `ack`.
//!
//! Only records whose trace is sampled get spans: the fan-out of the others costs no span.

use tandem_protocol::records::CommittedEvent;
use tandem_telemetry::propagation::{self, OpenTelemetrySpanExt};
use tracing::{info_span, Span};

/// The `deliver` span of `event`, when the record came with a sampled trace context.
pub(crate) fn deliver_span(
    event: &CommittedEvent,
    traceparent: Option<&str>,
    subscribers: usize,
) -> Option<Span> {
    let parent = traceparent.and_then(propagation::sampled)?;
    let span = info_span!(
        parent: None,
        "deliver",
        document = %event.doc,
        version = event.version,
        subscribers,
    );
    let _ = span.set_parent(parent);
    Some(span)
}

/// The `ack` span, under `deliver`, of sending the author its acknowledgement.
pub(crate) fn ack_span(deliver: &Span, event: &CommittedEvent) -> Span {
    info_span!(
        parent: deliver,
        "ack",
        document = %event.doc,
        version = event.version,
        client = %event.client,
        seq = event.seq,
    )
}
