//! A connection's ops on their way to the sequencer.
//!
//! Handing an op to the op log can take a while (a slow broker or sequencer; a full partition waits
//! before it answers `unavailable`). The connection's loop must not wait for it: it also writes the
//! acks and versions of every document the connection has open and answers pings, and while it waits
//! its outbound queue fills until the client is cut off as `overloaded`. So each connection hands its
//! ops to one task of its own through a bounded FIFO. One task keeps the connection's ops in the order
//! they arrived (per document and across documents, as the inline submit did), and the bound keeps a
//! client that sends faster than the backend takes from queueing without limit: a full queue answers
//! the op `unavailable` at once, as a refusing backend would.

use std::sync::Arc;

use tandem_bus::{BusError, OpSubmitter};
use tandem_protocol::records::Submission;
use tandem_protocol::ws::ServerMessage;
use tandem_protocol::{ErrorCode, ProtocolError};
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn, Instrument, Span};

use crate::hub::Hubs;
use crate::outbound::Outbound;

/// The sending side of one connection's queue. Dropping it ends the task once the op being
/// submitted, if any, is through.
pub(crate) struct SubmitQueue {
    /// Each op with its `receive` span, the root of the op's trace.
    tx: mpsc::Sender<(Submission, Span)>,
}

impl SubmitQueue {
    /// Starts the connection's submitting task: up to `capacity` ops wait, and a failed submit is
    /// answered through `outbound`, the connection's queue of frames.
    pub fn start(
        capacity: usize,
        submitter: Arc<dyn OpSubmitter>,
        hubs: Arc<Hubs>,
        outbound: Outbound,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(submit_in_order(rx, submitter, hubs, outbound));
        Self { tx }
    }

    /// Queues an op without waiting; when the queue is full, the error to answer it with.
    ///
    /// The op's trace starts here, where the connection hands the op frame on: a `receive` root
    /// span (no parent, not even the connection's span: one trace per op, not per connection),
    /// which lasts until the op log has taken the op.
    pub fn push(&self, submission: Submission) -> Result<(), ProtocolError> {
        let receive = info_span!(
            parent: None,
            "receive",
            document = %submission.doc,
            client = %submission.client,
            seq = submission.seq,
            base_version = submission.base,
        );
        self.tx.try_send((submission, receive)).map_err(|e| {
            // Closed only if the task panicked: refused the same way.
            let (submission, _receive) = e.into_inner();
            metrics::counter!("tandem_gateway_submit_queue_full_total").increment(1);
            let reason = format!("{} ops of this connection are waiting", self.tx.max_capacity());
            // Not a warning: a client that floods the connection would flood the log too.
            debug!(doc = %submission.doc, seq = submission.seq, reason, "op refused");
            refused(&submission, &BusError::Unavailable(reason))
        })
    }
}

/// The connection's submitting task.
async fn submit_in_order(
    mut rx: mpsc::Receiver<(Submission, Span)>,
    submitter: Arc<dyn OpSubmitter>,
    hubs: Arc<Hubs>,
    outbound: Outbound,
) {
    while let Some((submission, receive)) = rx.recv().await {
        if outbound.is_closed() {
            // The connection ended: nothing still queued was acknowledged, and the client resends it
            // after reconnecting.
            return;
        }
        // Tracked before it is submitted: its record can come back only after the submit, so it
        // always finds the op tracked. (Tracked after, a record faster than the submit's answer would
        // leave it tracked, and resubmitted for nothing.) A submit slower than `resubmit_after` may
        // be resubmitted meanwhile; the sequencer deduplicates.
        hubs.track(submission.clone());
        // The gRPC submitter sends this span's context with the op (SubmitRequest.traceparents).
        let submit = info_span!(parent: &receive, "submit", document = %submission.doc, seq = submission.seq);
        if let Err(e) = submitter.submit(submission.clone()).instrument(submit).await {
            // Untracked before the client hears of it, so its resend is tracked afresh.
            hubs.untrack(&submission);
            warn!(doc = %submission.doc, seq = submission.seq, error = %e, "submit failed");
            let error = refused(&submission, &e);
            // A full queue marks the connection overloaded: it ends and the client resends then.
            let error = ServerMessage::from(error);
            crate::error_counts::count(&error);
            let _ = outbound.push(error.to_json().into());
        }
    }
}

/// The answer to an op the op log did not take: `unavailable` (resend it) unless the op log refused
/// the op itself, whose code the client must hear, or it would resend the op forever.
fn refused(submission: &Submission, error: &BusError) -> ProtocolError {
    let error = match error {
        BusError::Unavailable(_) => ProtocolError::new(
            ErrorCode::Unavailable,
            "the server is busy and cannot take the op now; resend it",
        ),
        BusError::Closed => ProtocolError::new(
            ErrorCode::Unavailable,
            "the server is shutting down; resend the op after reconnecting",
        ),
        BusError::Refused { code, message } => {
            ProtocolError::new(*code, format!("the sequencer refused the op: {message}"))
        }
    };
    error.with_doc(submission.doc.clone()).with_seq(submission.seq)
}
