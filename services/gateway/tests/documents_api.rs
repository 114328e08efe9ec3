//! The Documents API when the op log misbehaves: an op log that takes an edit and never sequences
//! it (the wait's timeout), one that is unavailable (submitted again until the wait is over), one
//! that refuses the edit for good. The op logs are test doubles of the bus (the real ones cannot be
//! made to do this deterministically); the gateway, its gRPC port and the store are real. The real
//! processes are in integration-tests/tests/documents_api.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::Message;
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::{BusError, OpSubmitter};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_proto::proto::component::Kind;
use tandem_proto::proto::documents_client::DocumentsClient;
use tandem_proto::proto::{ApiError, ApplyEditRequest, Component, DeleteDocumentRequest};
use tandem_protocol::records::Submission;
use tandem_protocol::ErrorCode;
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// Answers every submit with `answer` (`None`: takes it, and nothing ever comes of it).
struct OpLog {
    answer: Option<BusError>,
    submits: AtomicUsize,
}

#[async_trait]
impl OpSubmitter for OpLog {
    async fn submit(&self, _: Submission) -> Result<(), BusError> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        self.answer.clone().map_or(Ok(()), Err)
    }
}

const WAIT: Duration = Duration::from_millis(600);

/// A gateway over `op_log` that waits [`WAIT`] for outcomes; one ApplyEdit's error through it, and
/// how long the call took.
async fn failed_edit(op_log: Arc<OpLog>, delete: bool) -> (tonic::Status, ApiError, Duration) {
    let data = tempfile::tempdir().expect("a folder");
    let store = SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store");
    let (_, _consumers, _, subscriber) = in_process(&InProcessConfig::default());
    let deps = GatewayDeps {
        submitter: op_log,
        events: Arc::new(subscriber),
        store: Arc::new(store),
        extra_routes: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let config = GatewayConfig { api_wait: WAIT, drain_grace: Duration::ZERO, ..GatewayConfig::default() };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tandem_gateway::run(config, listener, deps, shutdown.clone()));
    let mut api = DocumentsClient::connect(format!("http://{address}")).await.expect("connected");
    let started = Instant::now();
    let status = if delete {
        api.delete_document(DeleteDocumentRequest { doc: "d".into() }).await.expect_err("no deletion")
    } else {
        let op = vec![Component { kind: Some(Kind::Insert("x".into())) }];
        let request = ApplyEditRequest { doc: "d".into(), base_version: 0, op, request_id: "r1".into() };
        api.apply_edit(request).await.expect_err("no outcome")
    };
    let took = started.elapsed();
    shutdown.cancel();
    server.await.expect("the gateway task").expect("the gateway");
    let error = ApiError::decode(status.details()).expect("an ApiError");
    (status, error, took)
}

#[tokio::test]
async fn an_edit_never_sequenced_is_unavailable_after_the_wait() {
    let op_log = Arc::new(OpLog { answer: None, submits: AtomicUsize::new(0) });
    let (status, error, took) = failed_edit(op_log.clone(), false).await;
    assert_eq!((status.code(), error.code.as_str()), (Code::Unavailable, "unavailable"));
    assert!(error.message.contains("same request_id"), "says how to retry: {}", error.message);
    assert!(took >= WAIT && took < WAIT * 4, "answered after the wait: {took:?}");
    assert_eq!(op_log.submits.load(Ordering::SeqCst), 1);

    let (status, error, _) = failed_edit(op_log, true).await;
    assert_eq!((status.code(), error.code.as_str()), (Code::Unavailable, "unavailable"), "a deletion too");
}

#[tokio::test]
async fn an_unavailable_op_log_is_tried_again_until_the_wait_is_over() {
    let op_log = Arc::new(OpLog {
        answer: Some(BusError::Unavailable("partition 0 is full".into())),
        submits: AtomicUsize::new(0),
    });
    let (status, error, took) = failed_edit(op_log.clone(), false).await;
    assert_eq!((status.code(), error.code.as_str()), (Code::Unavailable, "unavailable"));
    assert!(error.message.contains("partition 0 is full"), "{}", error.message);
    assert!(took < WAIT * 4, "{took:?}");
    assert!(
        op_log.submits.load(Ordering::SeqCst) >= 3,
        "submitted again: {}",
        op_log.submits.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_refusal_of_the_op_log_is_final_and_keeps_its_code() {
    let refusal = BusError::Refused {
        code: ErrorCode::Forbidden,
        message: "caller \"x\" may not write document d".into(),
    };
    let op_log = Arc::new(OpLog { answer: Some(refusal), submits: AtomicUsize::new(0) });
    let (status, error, _) = failed_edit(op_log.clone(), false).await;
    assert_eq!((status.code(), error.code.as_str()), (Code::PermissionDenied, "forbidden"));
    assert!(error.message.contains("may not write document d"), "{}", error.message);
    assert_eq!(op_log.submits.load(Ordering::SeqCst), 1, "not submitted again");
}
