//! The gRPC hop end to end: a real tonic server on 127.0.0.1 with the in-process bus behind it, and
//! the gateway's `GrpcSubmitter` in front.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tandem_bus::in_process::{in_process, InProcessConfig, InProcessConsumer};
use tandem_bus::{BusError, OpConsumer, OpSubmitter};
use tandem_ot::{Operation, MAX_COUNT};
use tandem_protocol::records::Submission;
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_rpc::health::HealthReporter;
use tandem_rpc::proto::sequencer_client::SequencerClient;
use tandem_rpc::proto::{self, submit_response, SubmitRequest};
use tandem_rpc::trace_context;
use tandem_rpc::{serve, CallerAuth, GrpcSubmitter, RpcError, SequencerIngress, SubmitterOptions};
use tandem_telemetry::propagation::{from_traceparent, set_remote_parent};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A running server that can be stopped; the port can be bound again for a restart.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RpcError>>,
    health: HealthReporter,
}

impl Server {
    async fn start(addr: SocketAddr, submitter: Arc<dyn OpSubmitter>, token: Option<&str>) -> Server {
        let auth = CallerAuth { service_token: token.map(str::to_owned), verifier: None };
        Self::start_with(addr, submitter, auth).await
    }

    async fn start_with(addr: SocketAddr, submitter: Arc<dyn OpSubmitter>, auth: CallerAuth) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind the test port");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let ingress = SequencerIngress::new(submitter);
        let health = tandem_rpc::health::reporter().await;
        let reporter = health.clone();
        let task = tokio::spawn(async move {
            serve(listener, ingress, auth, &reporter, async {
                let _ = stopped.await;
            })
            .await
        });
        Server { addr, stop, task, health }
    }

    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and checks that it shuts down promptly even with gateways' streams open.
    async fn stop(self) -> SocketAddr {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the server shuts down within 5 s despite open streams")
            .expect("the server task did not panic");
        result.expect("the server ran without error");
        self.addr
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

fn options() -> SubmitterOptions {
    SubmitterOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

fn submission(doc: &str, client: &str, seq: u64, text: &str) -> Submission {
    let mut op = Operation::new();
    op.insert(text);
    Submission {
        author: String::new(),
        delete_document: false,
        doc: DocId::parse(doc).expect("valid doc id"),
        client: ClientId::parse(client).expect("valid client id"),
        seq,
        base: 0,
        op,
    }
}

fn bus() -> (Arc<dyn OpSubmitter>, InProcessConsumer) {
    let (submitter, mut consumers, _, _) = in_process(&InProcessConfig::default());
    (Arc::new(submitter), consumers.remove(0))
}

/// Reads `n` ops from the partition, failing the test rather than waiting forever.
async fn read(consumer: &mut InProcessConsumer, n: usize) -> Vec<Submission> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(5), consumer.next_batch(n - out.len()))
            .await
            .expect("ops reach the partition within 5 s")
            .expect("the partition is open");
        out.extend(batch.into_iter().map(|record| record.submission));
    }
    out
}

/// Submits until one succeeds: the submitter connects in the background.
async fn until_accepted(submitter: &GrpcSubmitter, submission: Submission) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match submitter.submit(submission.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, BusError::Unavailable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("never accepted: {e}"),
        }
    }
}

fn unavailable_text(result: Result<(), BusError>) -> String {
    match result {
        Err(BusError::Unavailable(text)) => text,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// The code and message of an op the sequencer refused for good.
fn refusal(result: Result<(), BusError>) -> (ErrorCode, String) {
    match result {
        Err(BusError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal with its code, got {other:?}"),
    }
}

#[tokio::test]
async fn ops_reach_the_partition_in_order() {
    let (bus, mut consumer) = bus();
    let server = Server::start(local(), bus, None).await;
    let submitter = GrpcSubmitter::new(vec![server.uri()], options()).expect("valid options");

    until_accepted(&submitter, submission("doc-a", "c1", 1, "😀 héllo 👩‍👩‍👧")).await;
    for seq in 2..=50 {
        submitter.submit(submission("doc-a", "c1", seq, &format!("{seq}✓"))).await.expect("accepted");
    }
    let received = read(&mut consumer, 50).await;
    assert_eq!(received.iter().map(|s| s.seq).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
    assert_eq!(received[0], submission("doc-a", "c1", 1, "😀 héllo 👩‍👩‍👧"));
    server.stop().await;
}

#[tokio::test]
async fn many_concurrent_submits_from_several_tasks() {
    let (bus, mut consumer) = bus();
    let server = Server::start(local(), bus, None).await;
    let submitter = Arc::new(GrpcSubmitter::new(vec![server.uri()], options()).expect("valid options"));
    until_accepted(&submitter, submission("warm-up", "w", 1, "x")).await;

    const TASKS: usize = 8;
    const OPS: u64 = 100;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let submitter = submitter.clone();
        tasks.push(tokio::spawn(async move {
            let client = format!("client-{task}");
            for seq in 1..=OPS {
                let doc = format!("doc-{}", seq % 3);
                submitter.submit(submission(&doc, &client, seq, "é")).await.expect("accepted");
            }
        }));
    }
    for task in tasks {
        task.await.expect("submitting task did not panic");
    }
    let received = read(&mut consumer, 1 + TASKS * OPS as usize).await;
    for task in 0..TASKS {
        let client = format!("client-{task}");
        let seqs: Vec<u64> = received.iter().filter(|s| s.client.as_str() == client).map(|s| s.seq).collect();
        assert_eq!(seqs, (1..=OPS).collect::<Vec<_>>(), "{client}: each client's ops arrive once, in order");
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_submissions_are_refused_naming_the_field() {
    let (bus, _consumer) = bus();
    let server = Server::start(local(), bus, None).await;

    // A raw client can send what the domain types cannot express.
    let mut client = SequencerClient::connect(server.uri()).await.expect("connect");
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .submit(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("stream opens")
        .into_inner();
    let mut bad = proto::Submission::from(submission("doc-a", "c1", 1, "x"));
    bad.doc = "not a doc id".to_owned();
    let good = proto::Submission::from(submission("doc-a", "c1", 2, "y"));
    for (request_id, submissions) in [(1, vec![good.clone(), bad]), (2, vec![]), (3, vec![good])] {
        requests
            .send(SubmitRequest { request_id, submissions, traceparents: vec![] })
            .await
            .expect("stream open");
    }
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let response = responses.message().await.expect("stream healthy").expect("one response per request");
        answers.insert(response.request_id, response.result.expect("a result"));
    }
    let error = |id: u64| match &answers[&id] {
        submit_response::Result::Error(e) => e.clone(),
        other => panic!("request {id}: expected an error, got {other:?}"),
    };
    assert_eq!(error(1).code, proto::ErrorCode::BadRequest as i32);
    assert!(error(1).message.starts_with("submissions[1].doc: document id"), "{}", error(1).message);
    assert!(error(2).message.starts_with("submissions: "), "{}", error(2).message);
    assert!(matches!(answers[&3], submit_response::Result::Accepted(_)));

    // Through the gateway's submitter: an op the sequencer refuses comes back as bad_request with
    // the sequencer's reason.
    let submitter = GrpcSubmitter::new(vec![server.uri()], options()).expect("valid options");
    until_accepted(&submitter, submission("doc-b", "c1", 1, "x")).await;
    let (code, text) = refusal(submitter.submit(huge_retain(submission("doc-b", "c1", 2, ""))).await);
    assert_eq!(code, ErrorCode::BadRequest, "{text}");
    assert!(text.starts_with("submissions[0].op[0].retain: count"), "{text}");

    drop(requests);
    server.stop().await;
}

#[tokio::test]
async fn a_stopped_server_fails_submits_promptly_and_a_restart_is_picked_up() {
    let (bus, mut consumer) = bus();
    let server = Server::start(local(), bus.clone(), None).await;
    let options = options();
    let timeout = options.request_timeout;
    let submitter = GrpcSubmitter::new(vec![server.uri()], options).expect("valid options");
    until_accepted(&submitter, submission("doc-a", "c1", 1, "a")).await;

    let addr = server.stop().await;
    for seq in 2..=4 {
        let started = Instant::now();
        let result = submitter.submit(submission("doc-a", "c1", seq, "b")).await;
        assert!(started.elapsed() <= timeout + Duration::from_millis(500), "took {:?}", started.elapsed());
        unavailable_text(result);
    }

    let server = Server::start(addr, bus, None).await;
    until_accepted(&submitter, submission("doc-a", "c1", 5, "c")).await;
    submitter.submit(submission("doc-a", "c1", 6, "d")).await.expect("accepted after reconnecting");
    let seqs: Vec<u64> = read(&mut consumer, 3).await.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [1, 5, 6]);
    server.stop().await;
}

/// An op log that never answers: the submitter must give up at its timeout, not hang.
struct Stalled;

#[async_trait]
impl OpSubmitter for Stalled {
    async fn submit(&self, _submission: Submission) -> Result<(), BusError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let server = Server::start(local(), Arc::new(Stalled), None).await;
    let options = SubmitterOptions { request_timeout: Duration::from_millis(300), ..options() };
    let submitter = GrpcSubmitter::new(vec![server.uri()], options).expect("valid options");
    let started = Instant::now();
    let text = unavailable_text(submitter.submit(submission("doc-a", "c1", 1, "a")).await);
    assert!(text.contains("timed out after 300ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The stalled request holds the stream's response open; the server is dropped, not stopped.
    server.task.abort();
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_a_live_one() {
    let (bus, mut consumer) = bus();
    let server = Server::start(local(), bus, None).await;
    // A port that was just free: nothing listens there.
    let dead = {
        let listener = TcpListener::bind(local()).await.expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let submitter = GrpcSubmitter::new(vec![dead, server.uri()], options()).expect("valid options");
    until_accepted(&submitter, submission("doc-a", "c1", 1, "a")).await;
    for seq in 2..=20 {
        submitter.submit(submission("doc-a", "c1", seq, "b")).await.expect("routed to the live endpoint");
    }
    assert_eq!(read(&mut consumer, 20).await.len(), 20);
    server.stop().await;
}

/// Guards the promise of `GrpcSubmitter` (libs/rpc/src/client.rs): a connected sequencer that stops
/// answering (a frozen process) is passed over once silent for `stall_after`, so the gateway's ops
/// go to the sequencers that answer instead of half of them waiting out the request timeout.
#[tokio::test]
async fn a_silent_endpoint_is_passed_over_for_one_that_answers() {
    let (bus, mut consumer) = bus();
    let live = Server::start(local(), bus, None).await;
    let frozen = Server::start(local(), Arc::new(Stalled), None).await;
    let options = SubmitterOptions {
        request_timeout: Duration::from_millis(1500),
        stall_after: Duration::from_millis(200),
        ..options()
    };
    let submitter = GrpcSubmitter::new(vec![frozen.uri(), live.uri()], options).expect("valid options");
    until_accepted(&submitter, submission("doc-a", "c1", 1, "a")).await;
    // Both streams open; of two ops at once one goes to each (round-robin), so the frozen sequencer
    // has a request it never answers (unless an earlier attempt reached it already).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (first, second) = tokio::join!(
        submitter.submit(submission("doc-a", "c1", 2, "b")),
        submitter.submit(submission("doc-a", "c1", 3, "b")),
    );
    let primed = 1 + usize::from(first.is_ok()) + usize::from(second.is_ok());
    // Round-robin alone would send every other one of these to the frozen sequencer.
    for seq in 10..30 {
        submitter
            .submit(submission("doc-a", "c1", seq, "c"))
            .await
            .expect("routed to the sequencer that answers");
    }
    let seqs: Vec<u64> =
        read(&mut consumer, primed + 20).await.iter().map(|s| s.seq).filter(|&seq| seq >= 10).collect();
    assert_eq!(seqs, (10..30).collect::<Vec<u64>>());
    live.stop().await;
    frozen.task.abort();
}

#[tokio::test]
async fn the_service_token_is_required() {
    let (bus, mut consumer) = bus();
    let server = Server::start(local(), bus, Some("s3cret")).await;
    let with_token = |token: Option<&str>| SubmitterOptions { token: token.map(str::to_owned), ..options() };

    let anonymous = GrpcSubmitter::new(vec![server.uri()], with_token(None)).expect("valid options");
    let text = unavailable_text(anonymous.submit(submission("doc-a", "c1", 1, "a")).await);
    assert!(text.contains("bearer token is required"), "{text}");

    let wrong = GrpcSubmitter::new(vec![server.uri()], with_token(Some("guess"))).expect("valid options");
    let text = unavailable_text(wrong.submit(submission("doc-a", "c1", 1, "a")).await);
    assert!(text.contains("bearer token is not valid"), "{text}");

    let right = GrpcSubmitter::new(vec![server.uri()], with_token(Some("s3cret"))).expect("valid options");
    until_accepted(&right, submission("doc-a", "c1", 1, "a")).await;
    assert_eq!(read(&mut consumer, 1).await[0].seq, 1);
    server.stop().await;
}

#[tokio::test]
async fn internal_clients_are_authorised_per_document() {
    use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, Verifier, VerifierConfig};
    let secret = b"an-internal-test-secret-of-32-bytes-or-more".to_vec();
    let verifier =
        Verifier::new(VerifierConfig::new(KeyAlgorithm::Hs256, vec![secret.clone()])).expect("verifier");
    let (bus, mut consumer) = bus();
    let auth = CallerAuth { service_token: Some("s3cret".to_owned()), verifier: Some(Arc::new(verifier)) };
    let server = Server::start_with(local(), bus, auth).await;
    let token =
        mint(&MintKey::Hs256(secret), &MintRequest::new("indexer", &[], &["team-a/*"])).expect("mint");
    let indexer_options = SubmitterOptions { token: Some(token), ..options() };
    let indexer = GrpcSubmitter::new(vec![server.uri()], indexer_options).expect("valid options");
    until_accepted(&indexer, submission("team-a/notes", "indexer", 1, "a")).await;
    assert_eq!(read(&mut consumer, 1).await[0].doc.as_str(), "team-a/notes");
    let (code, text) = refusal(indexer.submit(submission("team-b/notes", "indexer", 1, "b")).await);
    assert_eq!(code, ErrorCode::Forbidden, "{text}");
    assert!(text.contains("may not write document team-b/notes"), "{text}");
    // The gateway's service token still writes everywhere.
    let gateway_options = SubmitterOptions { token: Some("s3cret".to_owned()), ..options() };
    let gateway = GrpcSubmitter::new(vec![server.uri()], gateway_options).expect("valid options");
    until_accepted(&gateway, submission("team-b/notes", "gw", 1, "c")).await;
    assert_eq!(read(&mut consumer, 1).await[0].doc.as_str(), "team-b/notes");
    server.stop().await;
}

/// Issue 12 (DESIGN.md decision 1): an event's author is the authenticated user. A caller with a
/// user token is named the author of its submissions whatever it sends, so it cannot record ops or
/// deletes as someone else's; the gateway (service token) stamps its own users and is believed.
/// A delete (no op, seq 0) passes the ingress like an op: with write permission on the document.
#[tokio::test]
async fn a_user_token_caller_cannot_forge_the_author_and_deletes_need_write_permission() {
    use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, Verifier, VerifierConfig};
    let secret = b"an-internal-test-secret-of-32-bytes-or-more".to_vec();
    let verifier =
        Verifier::new(VerifierConfig::new(KeyAlgorithm::Hs256, vec![secret.clone()])).expect("verifier");
    let (bus, mut consumer) = bus();
    let auth = CallerAuth { service_token: Some("s3cret".to_owned()), verifier: Some(Arc::new(verifier)) };
    let server = Server::start_with(local(), bus, auth).await;
    let as_user = |user: &str, read: &[&str], write: &[&str]| {
        let token =
            mint(&MintKey::Hs256(secret.clone()), &MintRequest::new(user, read, write)).expect("mint");
        let options = SubmitterOptions { token: Some(token), ..options() };
        GrpcSubmitter::new(vec![server.uri()], options).expect("valid options")
    };
    let forged = |mut submission: Submission| {
        submission.author = "mallory".to_owned();
        submission
    };
    let indexer = as_user("indexer", &[], &["team-a/*"]);
    until_accepted(&indexer, forged(submission("team-a/notes", "indexer", 1, "a"))).await;
    let delete = Submission {
        delete_document: true,
        seq: 0,
        op: Operation::new(),
        ..forged(submission("team-a/notes", "indexer", 0, "unused"))
    };
    until_accepted(&indexer, delete.clone()).await;
    let reached = read(&mut consumer, 2).await;
    assert_eq!(
        reached.iter().map(|s| (s.author.as_str(), s.delete_document)).collect::<Vec<_>>(),
        [("indexer", false), ("indexer", true)],
        "the caller's user is the author, whatever it sent"
    );
    assert_eq!((reached[1].seq, reached[1].op.is_noop()), (0, true), "{:?}", reached[1]);

    // Reading is not enough to delete.
    let reader = as_user("reader", &["team-b/*"], &[]);
    let delete_b = Submission { doc: DocId::parse("team-b/notes").expect("valid doc id"), ..delete };
    let (code, text) = loop {
        match reader.submit(delete_b.clone()).await {
            Err(BusError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            result => break refusal(result),
        }
    };
    assert_eq!(code, ErrorCode::Forbidden, "{text}");
    assert!(text.contains("may not write document team-b/notes"), "{text}");

    // The gateway's users are its to name.
    let gateway_options = SubmitterOptions { token: Some("s3cret".to_owned()), ..options() };
    let gateway = GrpcSubmitter::new(vec![server.uri()], gateway_options).expect("valid options");
    let mut stamped = submission("team-b/notes", "gw", 1, "c");
    stamped.author = "ann".to_owned();
    until_accepted(&gateway, stamped).await;
    assert_eq!(read(&mut consumer, 1).await[0].author, "ann");
    server.stop().await;
}

/// An op whose retain count is out of range: the domain type holds it, the ingress refuses it.
fn huge_retain(mut submission: Submission) -> Submission {
    submission.op = Operation::new();
    submission.op.retain(MAX_COUNT as usize + 1);
    submission
}

/// An op log that cannot take any op now.
struct Full;

#[async_trait]
impl OpSubmitter for Full {
    async fn submit(&self, _submission: Submission) -> Result<(), BusError> {
        Err(BusError::Unavailable("partition 0 is full".to_owned()))
    }
}

/// The submitter reports the sequencer's own code: only an op log that cannot take the op now is
/// `unavailable` ("resend"); `forbidden` and `bad_request` would be refused however often resent.
#[tokio::test]
async fn refusals_reach_the_submitter_with_their_code() {
    use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, Verifier, VerifierConfig};
    let secret = b"an-internal-test-secret-of-32-bytes-or-more".to_vec();
    let verifier =
        Verifier::new(VerifierConfig::new(KeyAlgorithm::Hs256, vec![secret.clone()])).expect("verifier");
    let (bus, _consumer) = bus();
    let auth = CallerAuth { service_token: None, verifier: Some(Arc::new(verifier)) };
    let server = Server::start_with(local(), bus, auth).await;
    let token =
        mint(&MintKey::Hs256(secret), &MintRequest::new("indexer", &[], &["team-a/*"])).expect("mint");
    let indexer = SubmitterOptions { token: Some(token), ..options() };
    let submitter = GrpcSubmitter::new(vec![server.uri()], indexer).expect("valid options");
    until_accepted(&submitter, submission("team-a/notes", "indexer", 1, "a")).await;

    let (code, text) = refusal(submitter.submit(submission("team-b/notes", "indexer", 1, "b")).await);
    assert_eq!(code, ErrorCode::Forbidden, "{text}");
    assert!(text.contains("may not write document team-b/notes"), "{text}");
    let (code, text) =
        refusal(submitter.submit(huge_retain(submission("team-a/notes", "indexer", 2, ""))).await);
    assert_eq!(code, ErrorCode::BadRequest, "{text}");
    assert!(text.contains("retain"), "{text}");
    server.stop().await;

    let server = Server::start(local(), Arc::new(Full), None).await;
    let submitter = GrpcSubmitter::new(vec![server.uri()], options()).expect("valid options");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until connected, ops fail as unavailable too: wait for the op log's own answer.
    let text = loop {
        let text = unavailable_text(submitter.submit(submission("doc-a", "c1", 1, "a")).await);
        if text.contains("partition 0 is full") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains("unavailable: doc doc-a client c1 seq 1") && text.contains("partition 0 is full"),
        "{text}"
    );
    server.stop().await;
}

/// Records the trace context each op is appended under (the ingress's `ingress append` span).
#[derive(Default)]
struct Recorder(Mutex<Vec<Option<String>>>);

#[async_trait]
impl OpSubmitter for Recorder {
    async fn submit(&self, _submission: Submission) -> Result<(), BusError> {
        self.0.lock().expect("not poisoned").push(trace_context::current_traceparent());
        Ok(())
    }
}

#[tokio::test]
async fn trace_context_travels_with_each_op() {
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(local(), recorder.clone(), None).await;
    let submitter = GrpcSubmitter::new(vec![server.uri()], options()).expect("valid options");
    until_accepted(&submitter, submission("doc-a", "c1", 1, "a")).await;

    // Server and client share this thread (a current-thread runtime), so one local pipeline gives
    // both sides' spans real ids.
    let _pipeline = tandem_telemetry::testing::traced();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let span = tracing::info_span!("submit");
    set_remote_parent(&span, from_traceparent(caller));
    let submit_span = trace_context::traceparent_of(&span).expect("the span has a context");
    submitter.submit(submission("doc-a", "c1", 2, "b")).instrument(span).await.expect("accepted");
    until_accepted(&submitter, submission("doc-a", "c1", 3, "c")).await;
    let seen = recorder.0.lock().expect("not poisoned").clone();
    let trace_of = |tp: &Option<String>| tp.as_deref().map(|tp| tp[3..35].to_owned());
    // The op sent under the caller's span is appended in the caller's trace, in a span of its own.
    let traced = &seen[seen.len() - 2];
    assert_eq!(trace_of(traced).as_deref(), Some(&caller[3..35]), "{seen:?}");
    assert_ne!(traced.as_deref(), Some(submit_span.as_str()), "the ingress opens its own span");
    // An op sent with no context is not put in the caller's trace.
    assert_ne!(trace_of(&seen[seen.len() - 1]), trace_of(traced), "{seen:?}");
    server.stop().await;
}

/// The health service answers unauthenticated probes (Kubernetes' `grpc` probe carries no token)
/// with what the process reports, for the server and for the ingress by name.
#[tokio::test]
async fn grpc_health_answers_probes_without_a_token() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (submitter, _consumer) = bus();
    let server = Server::start(local(), submitter, Some("secret")).await;
    let channel =
        tonic::transport::Endpoint::from_shared(server.uri()).unwrap().connect().await.expect("connect");
    let mut client = HealthClient::new(channel);
    let status = |client: &mut HealthClient<tonic::transport::Channel>, service: &str| {
        let request = HealthCheckRequest { service: service.to_owned() };
        let mut client = client.clone();
        async move { client.check(request).await.map(|r| r.into_inner().status()) }
    };
    for service in ["", tandem_rpc::health::SEQUENCER_SERVICE] {
        assert_eq!(status(&mut client, service).await.unwrap(), ServingStatus::NotServing, "{service:?}");
    }
    tandem_rpc::health::set_serving(&server.health, true).await;
    for service in ["", tandem_rpc::health::SEQUENCER_SERVICE] {
        assert_eq!(status(&mut client, service).await.unwrap(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = status(&mut client, "tandem.v1.Nothing").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await;
}
