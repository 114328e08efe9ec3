//! ApplyEdit and DeleteDocument: submitted through the gateway's op submitter, the way a WebSocket
//! client's ops are, then answered with their outcome, which the document's task reports (see
//! `crate::hub::api`).
//!
//! ApplyEdit is idempotent by (author, document, request id): the edit is submitted as `seq` 1 of a
//! client id derived from the author and the request id ([`fields::edit_client`]), so a retry is a
//! resubmission of the same (client, seq), which the sequencer applies at most once and answers
//! with the first outcome: re-acknowledged (the API then reads that commit from the store and says
//! `duplicate`), or the same rejection. No table of request ids is kept anywhere else.

use std::time::Duration;

use prost::Message;
use tandem_auth::Access;
use tandem_bus::BusError;
use tandem_ot::Operation;
use tandem_proto::convert::{operation_from_proto, operation_to_proto};
use tandem_proto::proto::{
    ApplyEditRequest, ApplyEditResponse, DeleteDocumentRequest, DeleteDocumentResponse,
};
use tandem_protocol::records::{CommittedEvent, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tokio::time::Instant;
use tonic::Status;
use tracing::debug;

use super::auth::ApiCaller;
use super::errors::{bad_request, status, store_error, unavailable};
use super::fields;
use crate::hub::api::OpOutcome;
use crate::GatewayState;

/// The first pause before a submit the op log refused as unavailable is tried again (doubling, up
/// to [`MAX_SUBMIT_PAUSE`], within the call's wait).
const FIRST_SUBMIT_PAUSE: Duration = Duration::from_millis(50);
const MAX_SUBMIT_PAUSE: Duration = Duration::from_secs(1);

pub async fn apply_edit(
    state: &GatewayState,
    caller: &ApiCaller,
    request: ApplyEditRequest,
) -> Result<ApplyEditResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Write, &doc)?;
    let request_id = fields::request_id(&request.request_id)?;
    // The WebSocket's limit on one message bounds an op the same way here; what the sequencer
    // checks (characters inserted, document length) it checks for both.
    let (size, max) = (request.encoded_len(), state.config.max_frame_bytes);
    if size > max {
        return Err(status(
            ErrorCode::TooLarge,
            format!(
                "the request is {size} bytes; the limit is {max} bytes (the server's message size limit)"
            ),
        ));
    }
    let op = operation_from_proto(request.op).map_err(|e| bad_request(format!("field {e}")))?;
    let client = fields::edit_client(&caller.author, &request_id);
    let submission = Submission {
        doc: doc.clone(),
        client: client.clone(),
        seq: 1,
        base: request.base_version,
        op,
        author: caller.author.clone(),
        delete_document: false,
    };
    let deadline = Instant::now() + state.config.api_wait;
    let awaited =
        state.hubs.expect_outcome(&doc, client.clone(), 1, false).await.map_err(|e| store_error(&doc, e))?;
    // Tracked like a WebSocket op: submitted again by the document's task if its record does not
    // come back in time (the sequencer deduplicates).
    state.hubs.track(submission.clone());
    if let Err(refused) = submit(state, &submission, deadline).await {
        state.hubs.untrack(&submission);
        return Err(refused);
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    match awaited.wait(wait).await {
        Some(OpOutcome::Committed(event)) => Ok(answer(&event, false)),
        Some(OpOutcome::Reacknowledged { version }) => {
            let event = committed(state, &doc, &client, version).await?;
            Ok(answer(&event, true))
        }
        Some(OpOutcome::Rejected { code, message }) => Err(status(code, message)),
        Some(OpOutcome::Deleted(_)) => {
            Err(status(ErrorCode::Internal, "an edit was answered by a deletion (a bug)"))
        }
        None => {
            Err(no_outcome(state, "edit", "retry with the same request_id: an edit is applied at most once"))
        }
    }
}

pub async fn delete_document(
    state: &GatewayState,
    caller: &ApiCaller,
    request: DeleteDocumentRequest,
) -> Result<DeleteDocumentResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Write, &doc)?;
    let client = fields::delete_client(&caller.author);
    let submission = Submission {
        doc: doc.clone(),
        client: client.clone(),
        seq: 0,
        base: 0,
        op: Operation::new(),
        author: caller.author.clone(),
        delete_document: true,
    };
    let deadline = Instant::now() + state.config.api_wait;
    let awaited = state.hubs.expect_outcome(&doc, client, 0, true).await.map_err(|e| store_error(&doc, e))?;
    // Not tracked for resubmission: a deletion is not deduplicated, and one repeated late would
    // delete what was written since.
    submit(state, &submission, deadline).await?;
    let wait = deadline.saturating_duration_since(Instant::now());
    match awaited.wait(wait).await {
        Some(OpOutcome::Deleted(deleted)) => {
            Ok(DeleteDocumentResponse { last_version: deleted.last_version })
        }
        Some(OpOutcome::Rejected { code, message }) => Err(status(code, message)),
        Some(other) => {
            Err(status(ErrorCode::Internal, format!("a deletion was answered by {other:?} (a bug)")))
        }
        None => {
            Err(no_outcome(state, "deletion", "retry: deleting a deleted document answers last_version 0"))
        }
    }
}

/// Hands `submission` to the op log, trying again while it answers `unavailable` until `deadline`.
/// A refusal of the op itself (`forbidden`, `bad_request`) is final.
async fn submit(state: &GatewayState, submission: &Submission, deadline: Instant) -> Result<(), Status> {
    let mut pause = FIRST_SUBMIT_PAUSE;
    loop {
        let error = match state.submitter.submit(submission.clone()).await {
            Ok(()) => return Ok(()),
            Err(BusError::Refused { code, message }) => {
                return Err(status(code, format!("the sequencer refused the request: {message}")))
            }
            Err(error) => error,
        };
        debug!(doc = %submission.doc, error = %error, "documents API: submit failed; trying again");
        if Instant::now() + pause > deadline {
            return Err(unavailable(format!("the op log cannot take the request now ({error}); retry")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_SUBMIT_PAUSE);
    }
}

/// The event a re-acknowledged edit was committed as, from the store.
async fn committed(
    state: &GatewayState,
    doc: &DocId,
    client: &ClientId,
    version: u64,
) -> Result<CommittedEvent, Status> {
    let events = state
        .store
        .read_events(doc, version.saturating_sub(1), version, 1)
        .await
        .map_err(|e| store_error(doc, e))?;
    events.into_iter().find(|e| e.version == version && &e.client == client).ok_or_else(|| {
        unavailable(format!(
            "the edit was committed as version {version} of document {doc}, which is not in the event log any \
             more (deleted since?)"
        ))
    })
}

fn answer(event: &CommittedEvent, duplicate: bool) -> ApplyEditResponse {
    ApplyEditResponse { version: event.version, op: operation_to_proto(&event.op), duplicate }
}

fn no_outcome(state: &GatewayState, what: &str, advice: &str) -> Status {
    metrics::counter!("tandem_gateway_api_waits_timed_out_total").increment(1);
    unavailable(format!(
        "no outcome of the {what} within {} s (the sequencer or the record stream is slow); {advice}",
        state.config.api_wait.as_secs_f64()
    ))
}
