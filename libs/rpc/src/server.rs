//! The sequencer's gRPC ingress: takes batches of submissions from gateways and appends them to the
//! op log through an [`OpSubmitter`] (Kafka in production, the in-process bus in tests and the
//! single-process mode).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tandem_auth::{Access, Principal, Verifier};
use tandem_bus::OpSubmitter;
use tandem_protocol::records::Submission;
use tandem_protocol::ErrorCode;
use tandem_telemetry::propagation::{from_traceparent, set_remote_parent};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn, Instrument};

use crate::convert::ConvertError;
use crate::health::HealthReporter;
use crate::proto::sequencer_server::{Sequencer, SequencerServer};
use crate::proto::{self, submit_response, SubmitRequest, SubmitResponse};
use crate::trace_context::{self, MetadataExtractor};
use crate::RpcError;

/// Requests one stream may have in progress before the ingress stops reading it: backpressure
/// reaches the gateway through HTTP/2 flow control instead of growing memory here.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Most submissions one request may carry.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// The `Sequencer` gRPC service: validates each submission and appends it to the op log.
///
/// A request is answered `accepted` only when the op log took every one of its submissions. A
/// malformed request is answered `bad_request`, one with a document the caller may not write
/// `forbidden`: both before anything is appended, and final. Any failure of the op log answers
/// `unavailable` with the reason, and the gateway's clients resubmit (the sequencer applies a (doc,
/// client, seq) once, so ops of the batch that were taken anyway do no harm).
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
        let call_trace = {
            use opentelemetry::trace::TraceContextExt;
            let cx = trace_context::extract(&MetadataExtractor(request.metadata()));
            let span = cx.span();
            span.span_context().is_valid().then(|| span.span_context().trace_id().to_string())
        };
        let remote = request.remote_addr();
        // Put there by [`CallerCheck`]; a service mounted without it trusts its callers fully.
        let caller = request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::trusted);
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
            caller: Arc::new(caller),
        };
        let span = tracing::debug_span!(
            "submit_stream",
            remote = ?remote,
            caller = %stream.caller.principal.user,
            trace_id = call_trace,
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
    caller: Arc<Caller>,
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
                Ok(Some(_)) if self.caller.expired() => {
                    let status =
                        Status::unauthenticated("the caller's token expired; reconnect with a fresh one");
                    let _ = self.responses.send(Err(status)).await;
                    break;
                }
                Ok(Some(request)) => {
                    let submitter = self.submitter.clone();
                    let responses = self.responses.clone();
                    let max_batch = self.max_batch;
                    let caller = self.caller.clone();
                    tokio::spawn(
                        async move {
                            let response = answer(submitter.as_ref(), request, max_batch, &caller).await;
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

/// Answers one request: validates every submission, checks the caller may write every document of
/// it, scopes the client ids of a user's submissions by that user (as the gateway does for its
/// users) and names that user their author, appends them all concurrently, and reports `accepted`
/// only if the op log took every one.
///
/// A delete (`delete_document`) is checked like an op: write permission on its document; its `seq`,
/// `base` and `op` are not used, so an empty op and seq 0 are fine.
pub async fn answer(
    submitter: &dyn OpSubmitter,
    request: SubmitRequest,
    max_batch: usize,
    caller: &Caller,
) -> SubmitResponse {
    let request_id = request.request_id;
    let (mut submissions, traces) = match validate(request, max_batch) {
        Ok(valid) => valid,
        Err(error) => {
            debug!(request_id, %error, "refused a malformed submit request");
            return refusal(request_id, ErrorCode::BadRequest, error.to_string());
        }
    };
    let principal = &caller.principal;
    if let Some(denied) = submissions.iter().find(|s| !principal.allows(Access::Write, &s.doc)) {
        let message = format!("caller {:?} may not write document {}", principal.user, denied.doc);
        debug!(request_id, %message, "refused a submit request");
        return refusal(request_id, ErrorCode::Forbidden, message);
    }
    if caller.user_token {
        // An internal client's ids are its user's own, like a WebSocket session's: it cannot pass for
        // another user's session (see `tandem_auth::scoped_client_id`), nor record another author.
        // A gateway (service token) stamps its own users as authors; without authentication, what
        // came is kept (a gateway without authentication stamps "anonymous").
        for submission in &mut submissions {
            submission.client = principal.scoped_client(&submission.client);
            submission.author.clone_from(&principal.user);
        }
    }
    let started = std::time::Instant::now();
    let results = join_all(submissions.iter().zip(traces).map(|(submission, trace)| {
        submitter.submit(submission.clone()).instrument(append_span(submission, trace))
    }))
    .await;
    metrics::histogram!("tandem_sequencer_ingress_append_seconds").record(started.elapsed().as_secs_f64());
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

/// The span of one op's append to the op log, child of the gateway's `submit` span when the op
/// came with a `traceparent`: the op log writes this span's context into the record's headers.
fn append_span(submission: &Submission, traceparent: Option<String>) -> tracing::Span {
    let span = tracing::info_span!(
        "ingress append",
        document = %submission.doc,
        client = %submission.client,
        seq = submission.seq,
        base_version = submission.base,
    );
    if let Some(traceparent) = traceparent {
        set_remote_parent(&span, from_traceparent(&traceparent));
    }
    span
}

type Validated = (Vec<Submission>, Vec<Option<String>>);

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
        // An empty entry is an op without trace context; a malformed one the propagator ignores.
        n if n == count => {
            request.traceparents.into_iter().map(|tp| Some(tp).filter(|tp| !tp.is_empty())).collect()
        }
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

/// Who is calling, as [`CallerCheck`] decided, and until when (Unix seconds, leeway included).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub valid_until: Option<u64>,
    /// The caller presented a user JWT (an internal client): its client ids are scoped by that user.
    /// A gateway (service token) sends ids it has already scoped by its own users.
    pub user_token: bool,
}

impl Caller {
    /// A caller of a service without authentication: may write every document.
    fn trusted() -> Self {
        Self { principal: Principal::service("unauthenticated"), valid_until: None, user_token: false }
    }

    fn expired(&self) -> bool {
        self.valid_until.is_some_and(|until| until < unix_now())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How the ingress authenticates its callers.
#[derive(Debug, Clone, Default)]
pub struct CallerAuth {
    /// The shared service token of the gateways: its bearer may write every document.
    pub service_token: Option<String>,
    /// User tokens (JWT) of internal clients: each may write only the documents its token allows.
    pub verifier: Option<Arc<Verifier>>,
}

/// The ingress's authentication: every call carries `authorization: Bearer <token>`, either the shared
/// service token (a gateway, which authorises its own users) or a user JWT (an internal client,
/// authorised per document like a user). A call without a valid token fails with `UNAUTHENTICATED`
/// before reaching the service. With neither configured every call passes (development).
#[derive(Clone)]
pub struct CallerCheck {
    service_token: Option<Arc<[u8]>>,
    verifier: Option<Arc<Verifier>>,
}

impl CallerCheck {
    pub fn new(auth: CallerAuth) -> Self {
        Self { service_token: auth.service_token.map(|t| Arc::from(t.into_bytes())), verifier: auth.verifier }
    }

    fn caller(&self, request: &Request<()>) -> Result<Caller, Status> {
        if self.service_token.is_none() && self.verifier.is_none() {
            return Ok(Caller::trusted());
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        if let Some(expected) = &self.service_token {
            if constant_time_eq(presented.as_bytes(), expected) {
                return Ok(Caller {
                    principal: Principal::service("gateway"),
                    valid_until: None,
                    user_token: false,
                });
            }
        }
        let Some(verifier) = &self.verifier else {
            return Err(Status::unauthenticated("the bearer token is not valid"));
        };
        let principal = verifier
            .verify(presented)
            .map_err(|e| Status::unauthenticated(format!("the bearer token is not valid: {e}")))?;
        let valid_until = principal.expires_at.map(|exp| exp.saturating_add(verifier.leeway_secs()));
        Ok(Caller { principal, valid_until, user_token: true })
    }
}

impl Interceptor for CallerCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.caller(&request)?;
        request.extensions_mut().insert(caller);
        Ok(request)
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
/// Calls are authenticated by [`CallerCheck`] with `auth`. The same port serves
/// `grpc.health.v1.Health` from `health` (see [`crate::health`]).
pub async fn serve(
    listener: TcpListener,
    ingress: SequencerIngress,
    auth: CallerAuth,
    health: &HealthReporter,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RpcError> {
    if auth.service_token.as_deref().is_some_and(str::is_empty) {
        return Err(RpcError::Config("the service token is empty".to_owned()));
    }
    let stop_streams = ingress.shutdown_token();
    let reporter = health.clone();
    let service = SequencerServer::with_interceptor(ingress, CallerCheck::new(auth));
    tonic::transport::Server::builder()
        // Detects gateways that vanished without closing their connection.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service)
        // Unauthenticated on purpose: probes carry no token, and the answer reveals nothing.
        .add_service(crate::health::service(health))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.await;
            crate::health::set_serving(&reporter, false).await;
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

    fn with(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert("authorization", value.parse().expect("ascii"));
        request
    }

    #[test]
    fn the_service_token_is_checked() {
        let mut check =
            CallerCheck::new(CallerAuth { service_token: Some("s3cret".to_owned()), verifier: None });
        let request = check.call(with("Bearer s3cret")).expect("the service token passes");
        assert_eq!(request.extensions().get::<Caller>().expect("caller").principal.user, "gateway");
        let refused = check.call(with("Bearer nope")).expect_err("wrong token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(check.call(Request::new(())).is_err());
        assert!(CallerCheck::new(CallerAuth::default()).call(Request::new(())).is_ok());
    }

    #[test]
    fn user_tokens_carry_their_permissions() {
        use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, VerifierConfig};
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let config = VerifierConfig {
            leeway_secs: 0,
            ..VerifierConfig::new(KeyAlgorithm::Hs256, vec![secret.clone()])
        };
        let verifier = Verifier::new(config).expect("verifier");
        let mut check = CallerCheck::new(CallerAuth {
            service_token: Some("s3cret".to_owned()),
            verifier: Some(Arc::new(verifier)),
        });
        let token = |ttl_secs| {
            let request = MintRequest { ttl_secs, ..MintRequest::new("indexer", &[], &["team-a/*"]) };
            mint(&MintKey::Hs256(secret.clone()), &request).expect("mint")
        };
        let request = check.call(with(&format!("Bearer {}", token(600)))).expect("a valid user token passes");
        let caller = request.extensions().get::<Caller>().expect("caller").clone();
        assert_eq!(caller.principal.user, "indexer");
        assert!(!caller.expired());
        let doc = |id| tandem_protocol::DocId::parse(id).expect("id");
        assert!(caller.principal.allows(Access::Write, &doc("team-a/x")));
        assert!(!caller.principal.allows(Access::Write, &doc("team-b/x")));
        let expired = check.call(with(&format!("Bearer {}", token(-60)))).expect_err("expired");
        assert!(expired.message().contains("expired"), "{}", expired.message());
        assert!(caller.user_token, "a user token's client ids are scoped by its user");
    }

    /// Keeps what it is given.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<Submission>>);

    #[tonic::async_trait]
    impl OpSubmitter for Kept {
        async fn submit(&self, submission: Submission) -> Result<(), tandem_bus::BusError> {
            self.0.lock().expect("not poisoned").push(submission);
            Ok(())
        }
    }

    #[tokio::test]
    async fn internal_clients_cannot_pass_for_another_users_session() {
        use tandem_protocol::{ClientId, DocId};
        let id = ClientId::parse("desk").expect("id");
        let mut op = tandem_ot::Operation::new();
        op.insert("x");
        let submission = Submission {
            author: "ann".to_owned(),
            delete_document: false,
            doc: DocId::parse("team-a/x").expect("id"),
            client: id.clone(),
            seq: 1,
            base: 0,
            op,
        };
        let request =
            || SubmitRequest { request_id: 1, submissions: vec![(&submission).into()], ..Default::default() };
        let indexer = Principal { user: "indexer".to_owned(), ..Principal::anonymous() };
        let callers = [
            Caller { principal: indexer.clone(), valid_until: None, user_token: true },
            Caller { principal: Principal::service("gateway"), valid_until: None, user_token: false },
            Caller::trusted(),
        ];
        let kept = Kept::default();
        for caller in &callers {
            let response = answer(&kept, request(), DEFAULT_MAX_BATCH, caller).await;
            assert!(matches!(response.result, Some(submit_response::Result::Accepted(_))), "{response:?}");
        }
        let kept = kept.0.lock().expect("not poisoned");
        let clients: Vec<ClientId> = kept.iter().map(|s| s.client.clone()).collect();
        // A user's ids are scoped by the user, exactly as the gateway scopes a WebSocket session's;
        // a gateway's (already scoped) and an unauthenticated deployment's pass as they are.
        assert_eq!(clients, [indexer.scoped_client(&id), id.clone(), id]);
        // Likewise the author: a user is its own; a gateway's stamp (or what came without
        // authentication) is kept.
        let authors: Vec<&str> = kept.iter().map(|s| s.author.as_str()).collect();
        assert_eq!(authors, ["indexer", "ann", "ann"]);
    }
}
