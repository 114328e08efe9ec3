//! The partition owner's part of an op's trace (docs/TRACING.md, "Spans").
//!
//! For each op whose trace is sampled (its op-log record came with a sampled `traceparent`):
//!
//! - `decide`, child of the ingress's `ingress append`: the document state machine's work on the
//!   op, store reads included, with the outcome and the version it got;
//! - `commit`, child of `decide`: the store transaction of the op's batch;
//! - `publish`, child of `commit`: the publishing of the records of one or more batches; the op's
//!   record goes out with this span's context, which each gateway's `deliver` span continues.
//!
//! Each span is parented through its parent's OpenTelemetry context, not as a `tracing` child: a
//! `tracing` parent stays open until its last child closes, and `decide` would then seem to last
//! until the publish. A batch commits many ops in one transaction. Each traced op of it gets its own `commit` span
//! over the same interval, with the batch's size: one span linked to many traces (OpenTelemetry's
//! other way) would leave the commit out of every op's own trace. Ops outside the sample get no
//! span here at all, so the owner's cost does not grow with the sampling of other processes.

use tandem_bus::{Published, SubmissionRecord};
use tandem_protocol::records::SequencedRecord;
use tandem_telemetry::propagation::{self, Context, OpenTelemetrySpanExt};
use tracing::field::Empty;
use tracing::{info_span, Span};

use crate::document::Decision;

/// The `decide` span of `record`'s op, when its trace is sampled.
pub(crate) fn decide_span(record: &SubmissionRecord) -> Option<Span> {
    let parent = record.traceparent.as_deref().and_then(propagation::sampled)?;
    let sub = &record.submission;
    let span = info_span!(
        parent: None,
        "decide",
        document = %sub.doc,
        client = %sub.client,
        seq = sub.seq,
        base_version = sub.base,
        partition = record.partition,
        offset = record.offset,
        outcome = Empty,
        version = Empty,
    );
    let _ = span.set_parent(parent);
    Some(span)
}

/// Records on the `decide` span what was decided, closes it, and returns its context.
pub(crate) fn close_decide(span: Span, decision: &Decision) -> Context {
    let (outcome, version) = match decision {
        Decision::Commit(event) => ("committed", Some(event.version)),
        Decision::Duplicate { version } => ("duplicate", Some(*version)),
        Decision::Reject { rejection, .. } => ("rejected", Some(rejection.at_version)),
        Decision::Delete(deleted) => ("deleted", Some(deleted.last_version)),
        Decision::NeedHistory { .. } | Decision::NeedOutcome | Decision::NeedClient => ("incomplete", None),
    };
    span.record("outcome", outcome);
    if let Some(version) = version {
        span.record("version", version);
    }
    span.context()
}

/// The `commit` spans of one batch's traced ops, open while the batch commits.
pub(crate) struct CommitSpans(Vec<(usize, Span)>);

impl CommitSpans {
    /// Opens a `commit` span under each `decide` span; `decided` pairs each traced op's index in
    /// the batch's `records` (one per op) with its `decide` span's context.
    pub(crate) fn open(decided: Vec<(usize, Context)>, records: &[SequencedRecord]) -> Self {
        let batch_size = records.len();
        Self(
            decided
                .into_iter()
                .map(|(index, decide)| {
                    let record = &records[index];
                    let span = info_span!(
                        parent: None,
                        "commit",
                        document = %record.doc(),
                        version = version_of(record),
                        batch_size,
                    );
                    let _ = span.set_parent(decide);
                    (index, span)
                })
                .collect(),
        )
    }

    /// Closes the spans and pairs each record with the context its `publish` span continues.
    pub(crate) fn close(self, records: Vec<SequencedRecord>) -> Vec<Outgoing> {
        let mut outgoing: Vec<Outgoing> = records.into_iter().map(Outgoing::untraced).collect();
        for (index, span) in self.0 {
            outgoing[index].commit = Some(span.context());
        }
        outgoing
    }
}

/// A committed record on its way to the publishing task.
pub(crate) struct Outgoing {
    pub(crate) record: SequencedRecord,
    /// The op's `commit` span, when its trace is sampled.
    commit: Option<Context>,
}

impl Outgoing {
    pub(crate) fn untraced(record: SequencedRecord) -> Self {
        Self { record, commit: None }
    }
}

/// Opens a `publish` span for each traced record (closed when the returned spans drop) and gives
/// each record the trace context it is published with.
pub(crate) fn publish_spans(records: Vec<Outgoing>) -> (Vec<Published>, Vec<Span>) {
    let batch_size = records.len();
    let mut spans = Vec::new();
    let published = records
        .into_iter()
        .map(|Outgoing { record, commit }| {
            let traceparent = commit.map(|commit| {
                let span = info_span!(
                    parent: None,
                    "publish",
                    document = %record.doc(),
                    version = version_of(&record),
                    batch_size,
                );
                let _ = span.set_parent(commit);
                let traceparent = propagation::traceparent_of(&span);
                spans.push(span);
                traceparent
            });
            Published { record, traceparent: traceparent.flatten() }
        })
        .collect();
    (published, spans)
}

/// The version a record is about: the one committed, the one acknowledged again, or the one a
/// refusal was decided at.
fn version_of(record: &SequencedRecord) -> u64 {
    match record {
        SequencedRecord::Committed(event) => event.version,
        SequencedRecord::Reacknowledged { version, .. } => *version,
        SequencedRecord::Rejected(rejection) => rejection.at_version,
        SequencedRecord::Deleted(deleted) => deleted.last_version,
    }
}
