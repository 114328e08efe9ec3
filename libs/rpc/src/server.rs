//! The sequencer's gRPC ingress: takes batches of submissions from gateways and appends them to the
//! op log through an [`OpSubmitter`] (Kafka in production, the in-process bus in tests and the
//! single-process mode).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tandem_bus::OpSubmitter;
use tandem_protocol::records::Submission;
use tandem_protocol::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn, Instrument};

use crate::convert::ConvertError;
use crate::proto::sequencer_server::{Sequencer, SequencerServer};
use crate::proto::{self, submit_response, SubmitRequest, SubmitResponse};
use crate::trace_context::{self, TraceParent};
use crate::RpcError;

/// Requests one stream may have in progress before the ingress stops reading it: backpressure
/// reaches the gateway through HTTP/2 flow control instead of growing memory here.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Most submissions one request may carry.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// The `Sequencer` gRPC service: validates each submission and appends it to the op log.
///
/// A request is answered `accepted` only when the op log took every one of its submissions; any
/// failure answers `unavailable` with the reason, and the gateway's clients resubmit (the sequencer
/// applies a (doc, client, seq) once, so ops of the batch that were taken anyway do no harm).
pub struct SequencerIngress {
    submitter: Arc<dyn OpSubmitter>,
    max_in_flight: usize,
    max_batch: usize,
    /// Cancelled on shutdown: every stream stops reading, answers what it has read, and ends, so a
    /// graceful server shutdown is not held up by gateways' long-lived streams.
    shutdown: CancellationToken,
}

impl SequencerIngress {
    /// An ingress appending to `submitter`, with the default limits.
    pub fn new(submitter: Arc<dyn OpSubmitter>) -> Self {
        Self {
            submitter,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_batch: DEFAULT_MAX_BATCH,
            shutdown: CancellationToken::new(),
        }
    }

    /// Sets how many requests one stream may have in progress, and how many submissions one
    /// request may carry (a larger request is answered `bad_request`).
    pub fn with_limits(mut self, max_in_flight: usize, max_batch: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self.max_batch = max_batch.max(1);
        self
    }

    /// A token that, once cancelled, makes every open stream finish its requests and end. [`serve`]
    /// cancels it when its shutdown future completes; a caller serving the ingress another way
    /// cancels it before shutting its server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

#[tonic::async_trait]
impl Sequencer for SequencerIngress {
    type SubmitStream = ReceiverStream<Result<SubmitResponse, Status>>;

    async fn submit(
        &self,
        request: Request<Streaming<SubmitRequest>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let call_trace = trace_context::extract(request.metadata());
        let remote = request.remote_addr();
        // Each request in progress holds one permit and answers through `responses`, whose room
        // matches the permits, so answering never waits on a slow reader for long.
        let (responses, rx) = mpsc::channel(self.max_in_flight);
        let stream = StreamTask {
            inbound: request.into_inner(),
            responses,
            permits: Arc::new(Semaphore::new(self.max_in_flight)),
            submitter: self.submitter.clone(),
            max_batch: self.max_batch,
            shutdown: self.shutdown.clone(),
        };
        let span = tracing::debug_span!(
            "submit_stream",
            remote = ?remote,
            trace_id = call_trace.as_ref().map(|tp| tp.trace_id().to_owned()),
        );
        tokio::spawn(stream.run().instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One gateway's Submit stream: reads requests and answers each from its own task.
struct StreamTask {
    inbound: Streaming<SubmitRequest>,
    responses: mpsc::Sender<Result<SubmitResponse, Status>>,
    permits: Arc<Semaphore>,
    submitter: Arc<dyn OpSubmitter>,
    max_batch: usize,
    shutdown: CancellationToken,
}

impl StreamTask {
    async fn run(mut self) {
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let message = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                message = self.inbound.message() => message,
            };
            match message {
                Ok(Some(request)) => {
                    let submitter = self.submitter.clone();
                    let responses = self.responses.clone();
                    let max_batch = self.max_batch;
                    tokio::spawn(
                        async move {
                            let response = answer(submitter.as_ref(), request, max_batch).await;
                            // A send fails only when the gateway went away; nobody is left to tell.
                            let _ = responses.send(Ok(response)).await;
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
                Ok(None) => break,
                Err(status) => {
                    debug!(%status, "submit stream broke");
                    break;
                }
            }
        }
        // Dropping our sender ends the response stream once every request in progress answered.
    }
}

/// Answers one request: validates every submission, appends them all concurrently, and reports
/// `accepted` only if the op log took every one.
pub async fn answer(submitter: &dyn OpSubmitter, request: SubmitRequest, max_batch: usize) -> SubmitResponse {
    let request_id = request.request_id;
    let (submissions, traces) = match validate(request, max_batch) {
        Ok(valid) => valid,
        Err(error) => {
            debug!(request_id, %error, "refused a malformed submit request");
            return refusal(request_id, ErrorCode::BadRequest, error.to_string());
        }
    };
    let results = join_all(
        submissions
            .iter()
            .zip(traces)
            .map(|(submission, trace)| trace_context::scope(trace, submitter.submit(submission.clone()))),
    )
    .await;
    let failures: Vec<String> = results
        .into_iter()
        .zip(&submissions)
        .filter_map(|(result, s)| {
            result.err().map(|e| format!("doc {} client {} seq {}: {e}", s.doc, s.client, s.seq))
        })
        .collect();
    if let Some(first) = failures.first() {
        warn!(request_id, failed = failures.len(), of = submissions.len(), error = %first, "op log refused submissions");
        let more = match failures.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return refusal(request_id, ErrorCode::Unavailable, format!("{first}{more}"));
    }
    SubmitResponse { request_id, result: Some(submit_response::Result::Accepted(proto::Accepted {})) }
}

type Validated = (Vec<Submission>, Vec<Option<TraceParent>>);

fn validate(request: SubmitRequest, max_batch: usize) -> Result<Validated, ConvertError> {
    let count = request.submissions.len();
    if count == 0 {
        return Err(ConvertError::Invalid {
            field: "submissions".to_owned(),
            reason: "a request carries at least one submission".to_owned(),
        });
    }
    if count > max_batch {
        return Err(ConvertError::Invalid {
            field: "submissions".to_owned(),
            reason: format!("a request carries at most {max_batch} submissions, got {count}"),
        });
    }
    let traces = match request.traceparents.len() {
        0 => vec![None; count],
        n if n == count => request.traceparents.iter().map(|tp| TraceParent::parse(tp)).collect(),
        n => {
            return Err(ConvertError::Invalid {
                field: "traceparents".to_owned(),
                reason: format!("has {n} entries for {count} submissions; send none or one per submission"),
            })
        }
    };
    let submissions = request
        .submissions
        .into_iter()
        .enumerate()
        .map(|(i, s)| Submission::try_from(s).map_err(|e| e.within(&format!("submissions[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((submissions, traces))
}

fn refusal(request_id: u64, code: ErrorCode, message: String) -> SubmitResponse {
    SubmitResponse {
        request_id,
        result: Some(submit_response::Result::Error(proto::SubmitError {
            code: proto::ErrorCode::from(code).into(),
            message,
        })),
    }
}

/// The ingress's authentication when a shared service token is configured: every call must carry
/// `authorization: Bearer <token>`, or it fails with `UNAUTHENTICATED` before reaching the service.
/// Without a token every call passes (development, or a deployment that relies on mTLS).
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<Arc<[u8]>>,
}

impl TokenCheck {
    /// Checks for `token`; `None` lets every call through.
    pub fn new(token: Option<String>) -> Self {
        Self { expected: token.map(|t| Arc::from(t.into_bytes())) }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        if constant_time_eq(presented.as_bytes(), expected) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the bearer token is not valid"))
        }
    }
}

/// The token of an `authorization` value `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// Compares without an early exit on the first differing byte, so the time taken does not tell an
/// attacker how much of a guessed token was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `ingress` on `listener` until `shutdown` completes, then ends every open stream (after
/// answering what it has read) and waits for the connections to close.
///
/// With `token`, only calls carrying `authorization: Bearer <token>` are served ([`TokenCheck`]).
pub async fn serve(
    listener: TcpListener,
    ingress: SequencerIngress,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RpcError> {
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(RpcError::Config("the service token is empty".to_owned()));
    }
    let stop_streams = ingress.shutdown_token();
    let service = SequencerServer::with_interceptor(ingress, TokenCheck::new(token));
    tonic::transport::Server::builder()
        // Detects gateways that vanished without closing their connection.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.await;
            stop_streams.cancel();
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn token_check() {
        let mut check = TokenCheck::new(Some("s3cret".to_owned()));
        let with = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("authorization", value.parse().expect("ascii"));
            request
        };
        assert!(check.call(with("Bearer s3cret")).is_ok());
        let refused = check.call(with("Bearer nope")).expect_err("wrong token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(check.call(Request::new(())).is_err());
        assert!(TokenCheck::new(None).call(Request::new(())).is_ok());
    }
}
