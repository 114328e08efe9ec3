//! The Documents gRPC API (docs/DOCUMENTS.md) against real processes, in both modes: one
//! `tandem-standalone`, and a cluster (Apache Kafka, Postgres, a sequencer, a gateway). Each mode
//! runs every scenario on one server, started authenticated (JWTs and the service token) with
//! small limits so the limits can be reached: snapshots every 5 versions, 8 versions queued per
//! watcher, 64 KiB per message. Each scenario uses documents of its own.
//!
//! Scenarios, one module per concern: `reads` (GetDocument before and after snapshots,
//! ReadHistory pages, Diff, TransformPosition, checkpoints), `edits` (ApplyEdit idempotency, a
//! stale base transformed, refusals, permissions), `watch` (catch-up, live, the end on lag),
//! `deletion` (purge, tombstone, subscribers told, the id used again), `service` (health,
//! reflection, the shared port).

#[path = "documents_api/deletion.rs"]
mod deletion;
#[path = "documents_api/edits.rs"]
mod edits;
#[path = "documents_api/harness.rs"]
mod harness;
#[path = "documents_api/reads.rs"]
mod reads;
#[path = "documents_api/service.rs"]
mod service;
#[path = "documents_api/watch.rs"]
mod watch;

use harness::{edit, insert, Mode, Server};
use tandem_proto::proto::ReadHistoryRequest;

/// Flags of the sequencer (or the standalone's embedded one).
const SEQUENCER_ARGS: &[&str] = &["--snapshot-every", "5"];
/// Flags of the gateway (or the standalone's edge).
const EDGE_ARGS: &[&str] = &["--watch-queue", "8", "--max-frame-bytes", "65536"];

async fn every_scenario(mode: Mode) {
    let server = Server::start(mode, SEQUENCER_ARGS, EDGE_ARGS);
    macro_rules! run {
        ($scenario:path) => {{
            eprintln!("{mode:?}: {}", stringify!($scenario));
            $scenario(&server).await;
        }};
    }
    run!(service::health_and_reflection_answer_on_the_http_port);
    run!(reads::every_version_reads_the_same_before_and_after_snapshots);
    run!(reads::history_comes_in_pages_with_authors_and_times);
    run!(reads::diffs_and_positions);
    run!(reads::checkpoints_are_named_once);
    run!(edits::a_retried_edit_commits_once);
    run!(edits::an_edit_on_a_stale_base_is_transformed);
    run!(edits::bad_requests_name_the_problem);
    run!(edits::permissions_are_the_websockets);
    run!(watch::a_watch_catches_up_then_goes_live);
    run!(watch::a_watch_that_reads_too_slowly_ends_overloaded);
    run!(watch::a_watch_ends_when_its_token_expires);
    run!(deletion::a_deleted_document_is_purged_and_everyone_is_told);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_in_the_single_process_mode() {
    every_scenario(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_in_the_distributed_mode() {
    every_scenario(Mode::Cluster).await;
}

/// A server run with `--insecure-no-auth` asks for no token: every caller is `anonymous`, the
/// author of its edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_every_caller_is_anonymous() {
    let server = tandem_integration_tests::Standalone::start();
    let endpoint = server.ws_url().trim_start_matches("ws://").trim_end_matches("/v1/ws").to_owned();
    let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .expect("a URL")
        .connect()
        .await
        .expect("connected");
    let mut api = tandem_proto::proto::documents_client::DocumentsClient::with_interceptor(
        channel,
        harness::Metadata::new(Vec::new()),
    );
    let answer = edit(&mut api, "open/doc", 0, vec![insert("hi")]).await;
    assert_eq!(answer.version, 1);
    let history = api
        .read_history(ReadHistoryRequest { doc: "open/doc".into(), ..Default::default() })
        .await
        .expect("ReadHistory")
        .into_inner();
    assert_eq!(history.events[0].author, "anonymous");
}

/// A gateway told to stop (SIGTERM) reports NOT_SERVING at once, like `/readyz`, and when its drain
/// grace ends its watches end with UNAVAILABLE `unavailable`, naming the last version sent, before
/// the process exits. (The standalone's gateway is the cluster's gateway code.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_reports_not_serving_and_ends_its_watches() {
    use std::time::Duration;

    use tandem_proto::proto::WatchDocumentRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut server =
        tandem_integration_tests::Standalone::builder().arg("--drain-grace-seconds").arg("3").start();
    let endpoint = server.ws_url().trim_start_matches("ws://").trim_end_matches("/v1/ws").to_owned();
    let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .expect("a URL")
        .connect()
        .await
        .expect("connected");
    let mut api = tandem_proto::proto::documents_client::DocumentsClient::with_interceptor(
        channel.clone(),
        harness::Metadata::new(Vec::new()),
    );
    edit(&mut api, "stop/doc", 0, vec![insert("hi")]).await;
    let mut stream = api
        .watch_document(WatchDocumentRequest { doc: "stop/doc".into(), from_version: 0 })
        .await
        .expect("watching")
        .into_inner();
    for _ in 0..2 {
        stream.message().await.expect("the catch-up").expect("goes on");
    }
    let mut health = HealthClient::new(channel);
    server.request_stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let status = health.check(HealthCheckRequest { service: "tandem.v1.Documents".into() }).await;
        if status.expect("health answers while draining").into_inner().status
            == ServingStatus::NotServing as i32
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still SERVING 2 s into the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends with the drain grace")
        .expect_err("with an error");
    assert_eq!(harness::api_error(&end, tonic::Code::Unavailable).code, "unavailable");
    assert!(end.message().contains("from_version 1"), "{end:?}");
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(true), "a clean exit");
}
