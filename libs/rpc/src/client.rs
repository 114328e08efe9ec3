//! The gateway's side of the gRPC hop: [`GrpcSubmitter`] hands ops to the sequencer service.
//!
//! Each sequencer endpoint gets one worker task owning one long-lived bidirectional `Submit`
//! stream. `submit` queues its op to an endpoint (round-robin over the connected ones), and the
//! worker writes whatever is queued as one request, remembers the request id with the callers
//! waiting on it, and wakes them when the matching response arrives. When the stream or the
//! connection breaks, every unanswered caller gets [`BusError::Unavailable`] at once and the worker
//! reconnects with exponential backoff and jitter; while it is down it fails new ops at once rather
//! than holding them. A connected sequencer that stops answering (frozen, or its process paused)
//! is passed over once it has been silent with requests outstanding for
//! [`SubmitterOptions::stall_after`]: new ops go to the endpoints that answer, so one frozen
//! sequencer does not make every gateway wait out the request timeout on a share of its ops.
//! Nothing waits longer than [`SubmitterOptions::request_timeout`]: an op that
//! cannot be handed over is reported `unavailable`, never silently dropped. An op the sequencer
//! refuses for what it is (`forbidden`, `bad_request`) is reported as [`BusError::Refused`] with
//! that code, since resending it cannot help.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tandem_bus::{BusError, OpSubmitter};
use tandem_protocol::records::Submission;
use tandem_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tonic::Streaming;
use tracing::{debug, info, warn, Instrument};

use crate::proto::sequencer_client::SequencerClient;
use crate::proto::{self, submit_response, SubmitRequest, SubmitResponse};
use crate::{trace_context, RpcError};

/// Tuning of a [`GrpcSubmitter`]. The defaults suit a gateway in the same cluster as the sequencers.
#[derive(Clone)]
pub struct SubmitterOptions {
    /// The longest one `submit` may take, queueing and connecting included; past it the op is
    /// reported `unavailable` (it may still have been taken: resubmission is deduplicated).
    pub request_timeout: Duration,
    /// The longest a connection attempt (TCP, HTTP/2, and opening the stream) may take.
    pub connect_timeout: Duration,
    /// The wait before the first reconnection attempt; doubled after each failure.
    pub backoff_initial: Duration,
    /// The longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// Most submissions written as one request.
    pub max_batch: usize,
    /// Ops queued per endpoint before `submit` answers `unavailable` (backpressure).
    pub queue_capacity: usize,
    /// Requests written and not yet answered, per stream; past it, ops wait in the queue.
    pub max_in_flight: usize,
    /// HTTP/2 ping interval, to notice a sequencer that vanished without closing the connection.
    pub keepalive_interval: Duration,
    /// How long a stream may have requests outstanding without any answer before new ops prefer
    /// the other endpoints (it takes ops again with its next answer, or when no other endpoint
    /// is connected). Far above a healthy answer's latency (milliseconds: an append to Kafka),
    /// far below the keepalive's detection of a dead peer.
    pub stall_after: Duration,
    /// The shared service token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for SubmitterOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_batch: 256,
            queue_capacity: 4096,
            max_in_flight: 64,
            keepalive_interval: Duration::from_secs(10),
            stall_after: Duration::from_secs(1),
            token: None,
        }
    }
}

impl std::fmt::Debug for SubmitterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitterOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("max_batch", &self.max_batch)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_in_flight", &self.max_in_flight)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("stall_after", &self.stall_after)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

type Reply = oneshot::Sender<Result<(), BusError>>;

/// One op on its way to a worker.
struct Job {
    submission: proto::Submission,
    traceparent: String,
    reply: Reply,
}

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const DOWN: u8 = 2;
/// Connected, but silent with requests outstanding for longer than `stall_after`.
const STALLED: u8 = 3;

struct EndpointHandle {
    jobs: mpsc::Sender<Job>,
    state: Arc<AtomicU8>,
}

/// An [`OpSubmitter`] that hands ops to the sequencer service over gRPC; the gateway's op log in
/// the distributed mode. Its worker tasks end when it is dropped.
pub struct GrpcSubmitter {
    endpoints: Vec<EndpointHandle>,
    next: AtomicUsize,
    request_timeout: Duration,
    /// Stops the workers (and closes their streams) when the submitter is dropped, even while they
    /// wait on a sequencer.
    _stop: DropGuard,
}

impl GrpcSubmitter {
    /// Starts one worker per endpoint (`http://host:port`); they connect in the background, so this
    /// returns at once. Must be called within a Tokio runtime.
    pub fn new(endpoints: Vec<String>, options: SubmitterOptions) -> Result<Self, RpcError> {
        if endpoints.is_empty() {
            return Err(RpcError::Config("no sequencer endpoint given".to_owned()));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RpcError::Config("GrpcSubmitter::new must be called within a Tokio runtime".to_owned())
        })?;
        let auth =
            match &options.token {
                None => None,
                Some(token) if token.is_empty() => {
                    return Err(RpcError::Config("the service token is empty".to_owned()));
                }
                Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    RpcError::Config("the service token is not a valid header value".to_owned())
                })?),
            };
        let options = Arc::new(options);
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(endpoints.len());
        let mut workers = Vec::with_capacity(endpoints.len());
        for uri in endpoints {
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| RpcError::Config(format!("sequencer endpoint {uri:?}: {e}")))?
                .connect_timeout(options.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(options.keepalive_interval)
                .keep_alive_timeout(options.keepalive_interval)
                .keep_alive_while_idle(true);
            let (jobs_tx, jobs_rx) = mpsc::channel(options.queue_capacity.max(1));
            let state = Arc::new(AtomicU8::new(CONNECTING));
            handles.push(EndpointHandle { jobs: jobs_tx, state: state.clone() });
            workers.push(Worker {
                uri,
                endpoint,
                jobs: jobs_rx,
                state,
                options: options.clone(),
                auth: auth.clone(),
                stop: stop.clone(),
            });
        }
        // Spawned only once every endpoint parsed, so an error leaves no task behind.
        for worker in workers {
            let span = tracing::info_span!("sequencer_stream", endpoint = %worker.uri);
            runtime.spawn(worker.run().instrument(span));
        }
        Ok(Self {
            endpoints: handles,
            next: AtomicUsize::new(0),
            request_timeout: options.request_timeout,
            _stop: stop.drop_guard(),
        })
    }

    /// Queues `job` on a connected endpoint that answers, round-robin; on a stalled one only when
    /// none answers, and on a connecting or down one only when none is connected (that worker
    /// answers quickly: it either connects or fails the op).
    fn enqueue(&self, mut job: Job) -> Result<(), BusError> {
        let count = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order = (0..count).map(|i| &self.endpoints[(start + i) % count]);
        let in_state =
            |wanted: fn(u8) -> bool| order.clone().filter(move |e| wanted(e.state.load(Ordering::Relaxed)));
        let answering = in_state(|state| state == CONNECTED);
        let stalled = in_state(|state| state == STALLED);
        let others = in_state(|state| state != CONNECTED && state != STALLED);
        for endpoint in answering.chain(stalled).chain(others) {
            match endpoint.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back) | mpsc::error::TrySendError::Closed(back)) => {
                    job = back
                }
            }
        }
        Err(BusError::Unavailable("every sequencer connection has a full queue".to_owned()))
    }
}

#[async_trait]
impl OpSubmitter for GrpcSubmitter {
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let (reply, answer) = oneshot::channel();
        // This op's own context (the caller's current span), carried beside it in the request: the
        // stream's metadata holds only the context the stream was opened under.
        let traceparent = trace_context::current_traceparent().unwrap_or_default();
        self.enqueue(Job { submission: submission.into(), traceparent, reply })?;
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(self.request_timeout, answer).await;
        metrics::histogram!("tandem_gateway_submit_seconds").record(started.elapsed().as_secs_f64());
        match answered {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BusError::Unavailable("the sequencer connection dropped the op".to_owned())),
            Err(_) => Err(BusError::Unavailable(format!(
                "handing the op to the sequencer timed out after {:?}",
                self.request_timeout
            ))),
        }
    }
}

/// How a connected stream ended.
enum Ended {
    /// The submitter was dropped: the worker stops.
    Stopped,
    /// The stream or connection broke: the worker reconnects.
    Broken(String),
}

/// Owns one endpoint's connection and stream, reconnecting for as long as the submitter lives.
struct Worker {
    uri: String,
    endpoint: Endpoint,
    jobs: mpsc::Receiver<Job>,
    state: Arc<AtomicU8>,
    options: Arc<SubmitterOptions>,
    auth: Option<MetadataValue<Ascii>>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let stop = self.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => debug!("submitter dropped; worker stops"),
            _ = self.connect_loop() => {}
        }
    }

    async fn connect_loop(mut self) {
        let mut failures: u32 = 0;
        loop {
            self.state.store(CONNECTING, Ordering::Relaxed);
            let reason = match self.open().await {
                Ok((requests, responses)) => {
                    self.state.store(CONNECTED, Ordering::Relaxed);
                    failures = 0;
                    info!("connected to sequencer");
                    match self.pump(requests, responses).await {
                        Ended::Stopped => return,
                        Ended::Broken(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            self.state.store(DOWN, Ordering::Relaxed);
            failures = failures.saturating_add(1);
            let delay = backoff(&self.options, failures);
            warn!(error = %reason, retry_in = ?delay, "sequencer stream down");
            if !self.fail_until(delay, &reason).await {
                return;
            }
        }
    }

    /// Connects and opens the Submit stream, within the connect timeout.
    async fn open(&self) -> Result<(mpsc::Sender<SubmitRequest>, Streaming<SubmitResponse>), String> {
        let attempt = async {
            let channel =
                self.endpoint.connect().await.map_err(|e| format!("cannot connect: {}", source_chain(&e)))?;
            let (requests, outbound) = mpsc::channel(4);
            let mut request = tonic::Request::new(ReceiverStream::new(outbound));
            if let Some(auth) = &self.auth {
                request.metadata_mut().insert("authorization", auth.clone());
            }
            trace_context::inject_current(&mut trace_context::MetadataInjector(request.metadata_mut()));
            let responses = SequencerClient::new(channel)
                .submit(request)
                .await
                .map_err(|status| format!("the sequencer refused the stream: {status}"))?
                .into_inner();
            Ok((requests, responses))
        };
        tokio::time::timeout(self.options.connect_timeout, attempt)
            .await
            .map_err(|_| format!("connecting timed out after {:?}", self.options.connect_timeout))?
    }

    /// Writes queued ops as requests and routes responses to their callers until the stream breaks.
    async fn pump(
        &mut self,
        requests: mpsc::Sender<SubmitRequest>,
        mut responses: Streaming<SubmitResponse>,
    ) -> Ended {
        let mut pending: HashMap<u64, Vec<Reply>> = HashMap::new();
        let mut next_id: u64 = 0;
        let mut held: Option<Job> = None;
        let max_batch = self.options.max_batch.max(1);
        let max_in_flight = self.options.max_in_flight.max(1);
        // Callers give up after the request timeout; forget their entries so a request the
        // sequencer never answers cannot grow the map.
        let mut sweep = tokio::time::interval(self.options.request_timeout.max(Duration::from_millis(100)));
        let mut silence = Silence::new(self.options.stall_after);
        let mut check = tokio::time::interval((self.options.stall_after / 2).max(Duration::from_millis(10)));
        let ended = loop {
            tokio::select! {
                biased;
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        silence.answered();
                        self.state.store(silence.state(), Ordering::Relaxed);
                        resolve(&mut pending, response)
                    }
                    Ok(None) => break Ended::Broken("the sequencer ended the stream".to_owned()),
                    Err(status) => break Ended::Broken(format!("the stream failed: {status}")),
                },
                permit = requests.reserve(), if held.is_some() && pending.len() < max_in_flight => {
                    let Ok(permit) = permit else {
                        break Ended::Broken("the request stream closed".to_owned());
                    };
                    let first = held.take().expect("this branch runs only with a held job");
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match self.jobs.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    // Ops whose caller already gave up are not sent: nobody would learn the answer.
                    batch.retain(|job| !job.reply.is_closed());
                    if batch.is_empty() {
                        continue;
                    }
                    next_id += 1;
                    let mut request = SubmitRequest { request_id: next_id, ..Default::default() };
                    let mut replies = Vec::with_capacity(batch.len());
                    let traced = batch.iter().any(|job| !job.traceparent.is_empty());
                    for job in batch {
                        request.submissions.push(job.submission);
                        if traced {
                            request.traceparents.push(job.traceparent);
                        }
                        replies.push(job.reply);
                    }
                    debug!(request_id = next_id, ops = replies.len(), "submit request");
                    pending.insert(next_id, replies);
                    permit.send(request);
                    silence.sent();
                },
                job = self.jobs.recv(), if held.is_none() => match job {
                    Some(job) => held = Some(job),
                    None => break Ended::Stopped,
                },
                _ = sweep.tick() => pending.retain(|_, replies| {
                    replies.retain(|reply| !reply.is_closed());
                    !replies.is_empty()
                }),
                _ = check.tick() => self.state.store(silence.state(), Ordering::Relaxed),
            }
        };
        if let Ended::Broken(reason) = &ended {
            let error =
                BusError::Unavailable(format!("the sequencer connection broke before answering: {reason}"));
            for reply in pending.into_values().flatten().chain(held.map(|job| job.reply)) {
                let _ = reply.send(Err(error.clone()));
            }
        }
        ended
    }

    /// While down: waits `delay` before the next attempt, failing at once every op that arrives.
    /// Returns false when the submitter was dropped.
    async fn fail_until(&mut self, delay: Duration, reason: &str) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                job = self.jobs.recv() => match job {
                    Some(job) => {
                        let error = format!("the sequencer at {} is unreachable: {reason}", self.uri);
                        let _ = job.reply.send(Err(BusError::Unavailable(error)));
                    }
                    None => return false,
                },
            }
        }
    }
}

/// Whether a stream has gone silent: requests outstanding and no answer for `stall_after`. Counts
/// requests rather than reading `pending`, whose entries are swept once their callers give up: a
/// request nobody waits for any more is still one the sequencer has not answered.
struct Silence {
    stall_after: Duration,
    /// Requests sent and not answered (responses with unknown ids count as answers too).
    unanswered: u64,
    /// The last answer, or the send that made `unanswered` leave zero.
    since: std::time::Instant,
}

impl Silence {
    fn new(stall_after: Duration) -> Self {
        Self { stall_after, unanswered: 0, since: std::time::Instant::now() }
    }

    fn sent(&mut self) {
        if self.unanswered == 0 {
            self.since = std::time::Instant::now();
        }
        self.unanswered += 1;
    }

    fn answered(&mut self) {
        self.unanswered = self.unanswered.saturating_sub(1);
        self.since = std::time::Instant::now();
    }

    fn state(&self) -> u8 {
        if self.unanswered > 0 && self.since.elapsed() > self.stall_after {
            STALLED
        } else {
            CONNECTED
        }
    }
}

/// Wakes the callers of the request `response` answers.
fn resolve(pending: &mut HashMap<u64, Vec<Reply>>, response: SubmitResponse) {
    let Some(replies) = pending.remove(&response.request_id) else {
        // Its callers gave up and were swept, or the sequencer echoed a wrong id.
        debug!(request_id = response.request_id, "response to no waiting request");
        return;
    };
    let outcome = match response.result {
        Some(submit_response::Result::Accepted(_)) => Ok(()),
        Some(submit_response::Result::Error(error)) => Err(refusal(error)),
        None => Err(BusError::Unavailable("the sequencer answered without a result".to_owned())),
    };
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}

/// The error of a request the sequencer did not take, with the sequencer's code: only `unavailable`
/// means "resend later". A `forbidden` or `bad_request` op is refused again however often it is
/// resent, so its client must hear that code. A code this build does not know counts as
/// `unavailable`, the answer that loses nothing.
fn refusal(error: proto::SubmitError) -> BusError {
    match crate::convert::error_code_from_proto(error.code) {
        Ok(ErrorCode::Unavailable) => BusError::Unavailable(format!(
            "the sequencer did not take the ops: unavailable: {}",
            error.message
        )),
        Ok(code) => BusError::Refused { code, message: error.message },
        Err(_) => BusError::Unavailable(format!(
            "the sequencer did not take the ops: code {}: {}",
            error.code, error.message
        )),
    }
}

/// Exponential backoff with jitter: the `failures`-th wait is drawn from the upper half of
/// `initial · 2^(failures-1)`, capped at `max`, so gateways that lost the same sequencer do not
/// reconnect in lockstep.
fn backoff(options: &SubmitterOptions, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = options.backoff_initial.saturating_mul(1 << exponent).min(options.backoff_max);
    let floor = ceiling / 2;
    if ceiling <= floor {
        return ceiling;
    }
    rand::thread_rng().gen_range(floor..=ceiling)
}

/// An error with its sources, since tonic's transport errors say little at the top level.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let options = SubmitterOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..50 {
            let first = backoff(&options, 1);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first), "{first:?}");
            let third = backoff(&options, 3);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third), "{third:?}");
            assert!(backoff(&options, 1000) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn options_debug_hides_the_token() {
        let options = SubmitterOptions { token: Some("s3cret".to_owned()), ..Default::default() };
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn refuses_bad_configuration() {
        assert!(GrpcSubmitter::new(vec![], SubmitterOptions::default()).is_err());
        assert!(GrpcSubmitter::new(vec!["not a uri".to_owned()], SubmitterOptions::default()).is_err());
        let token = SubmitterOptions { token: Some("bad\ntoken".to_owned()), ..Default::default() };
        assert!(GrpcSubmitter::new(vec!["http://127.0.0.1:1".to_owned()], token).is_err());
    }
}
