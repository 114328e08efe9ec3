//! Health and drain on real processes (docs/OPERATIONS.md, "Probes" and "Draining a gateway"):
//!
//! - the sequencer answers liveness and readiness over HTTP and `grpc.health.v1` on its gRPC port,
//!   and turns not ready (not dead) while its Postgres is down;
//! - a gateway told to stop turns not ready, refuses new clients, keeps serving the connected ones
//!   for its grace, closes them with 1012, and exits; its clients resume on the other gateway with
//!   nothing lost.
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::time::{Duration, Instant};

use tandem_integration_tests::cluster::{Cluster, TestDatabase};
use tandem_integration_tests::typists::{assert_everything_converged, type_with};
use tandem_integration_tests::{http_get, seed, RawConn};
use tandem_protocol::DocId;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Polls `GET path` until it answers `status`; the body then. Panics after `limit`.
async fn wait_for_http(address: &str, path: &str, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (now, body) = http_get(address, path).unwrap_or((0, String::new()));
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{address}{path} stayed {now} (wanted {status}): {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gRPC health status of `service` on `address`.
async fn grpc_health(address: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connect to the gRPC port");
    let request = HealthCheckRequest { service: service.to_owned() };
    HealthClient::new(channel).check(request).await.expect("health check answered").into_inner().status()
}

/// Polls the gRPC health of the ingress until it is `status`. Panics after `limit`.
async fn wait_for_grpc(address: &str, status: ServingStatus, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = grpc_health(address, tandem_rpc::health::SEQUENCER_SERVICE).await;
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "gRPC health of {address} stayed {now:?} (wanted {status:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencer_is_not_ready_while_postgres_is_down_and_stays_alive() {
    let mut cluster = Cluster::builder().gateways(0).sequencers(1).partitions(1).private_postgres().start();
    let http = cluster.sequencer_http_address(0).to_owned();
    let grpc = cluster.sequencer(0).address().to_owned();
    assert_eq!(http_get(&http, "/healthz"), Some((200, "ok\n".to_owned())));
    let ready = wait_for_http(&http, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(ready, "store: ok\nkafka: ok\n");
    wait_for_grpc(&grpc, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert_eq!(grpc_health(&grpc, "").await, ServingStatus::Serving, "the whole server");
    let metrics = http_get(&http, "/metrics").expect("metrics served");
    assert!(metrics.1.contains("tandem_sequencer_ready 1"), "{}", metrics.1);

    cluster.postgres().crash();
    let not_ready = wait_for_http(&http, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(not_ready.contains("store: not ready: ") && not_ready.contains("kafka: ok"), "{not_ready}");
    wait_for_grpc(&grpc, ServingStatus::NotServing, Duration::from_secs(5)).await;
    // Not ready is not dead: liveness stays up, so Kubernetes does not restart it for Postgres.
    assert_eq!(http_get(&http, "/healthz").map(|r| r.0), Some(200));

    cluster.postgres().start_again();
    wait_for_http(&http, "/readyz", 200, Duration::from_secs(30)).await;
    wait_for_grpc(&grpc, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert!(cluster.sequencer(0).terminate(), "SIGTERM ends the sequencer with success");
}

/// The latest version of `doc` in the event log.
fn latest_version(db: &TestDatabase, doc: &DocId) -> u64 {
    let rows = db.query(&format!("SELECT coalesce(max(version), 0) FROM events WHERE doc = '{doc}'"));
    rows[0].parse().expect("a version")
}

/// Reads `conn`'s frames until an `op` of a version above `after` arrives; panics on a close or
/// after `limit`.
async fn expect_op_after(conn: &mut RawConn, after: u64, limit: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.recv_any())
            .await
            .unwrap_or_else(|_| panic!("no op past version {after} within {limit:?}"))
            .unwrap_or_else(|| panic!("closed ({:?}) before an op past version {after}", conn.close_code()));
        let version = frame["version"].as_u64().unwrap_or(0);
        if frame["type"] == "op" && version > after {
            return version;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_draining_gateway_are_served_through_the_grace_then_resume_on_the_other() {
    const GRACE: Duration = Duration::from_secs(4);
    let seed = seed();
    let mut cluster = Cluster::builder()
        .gateways(2)
        .sequencers(1)
        .partitions(2)
        .gateway_arg("--drain-grace-seconds")
        .gateway_arg(GRACE.as_secs().to_string())
        .start();
    let urls = [cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let draining = cluster.gateway(0).address().to_owned();
    let docs: Vec<DocId> = (0..4).map(|i| DocId::parse(&format!("draining-{i}")).unwrap()).collect();
    // Every typist connects to gateway 0 and lists gateway 1 as its fallback.
    let typing = type_with(&urls, &docs, &['d', 'e', 'f'], seed, Duration::from_secs(12), true);
    let drain = async {
        // A reader of the first document on the draining gateway, to see what it still delivers.
        let mut watcher = RawConn::hello(&urls[0], "drain-watcher").await;
        watcher.send(serde_json::json!({"type": "open", "doc": docs[0].as_str()})).await;
        watcher.expect("snapshot").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(http_get(&draining, "/readyz").map(|r| r.0), Some(200), "ready before the stop");
        let stopped_at = Instant::now();
        cluster.gateway(0).request_stop();
        // At once: not ready, saying why, and new clients are sent away.
        let body = wait_for_http(&draining, "/readyz", 503, Duration::from_secs(1)).await;
        assert!(body.starts_with("draining: not ready: the gateway is shutting down"), "{body}");
        let refused = RawConn::upgrade(&urls[0], &[]).await.err().expect("a new client is refused");
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(refused.body.contains("shutting down"), "{refused:?}");
        // Meanwhile its connected clients are still served: the watcher gets versions committed
        // after the stop, and answers pings, before its connection is closed.
        let at_stop = latest_version(cluster.database(), &docs[0]);
        expect_op_after(&mut watcher, at_stop, GRACE / 2).await;
        watcher.assert_alive_among_ops().await;
        assert!(stopped_at.elapsed() < GRACE, "the grace ran out before the checks of its middle");
        // After the grace: closed with 1012 (service restart), and the process exits, with success.
        let frame = watcher.expect_close().await.expect("a close frame");
        assert_eq!(u16::from(frame.code), 1012, "{frame:?}");
        let closed_after = stopped_at.elapsed();
        assert!(closed_after >= GRACE, "closed after {closed_after:?}, before the {GRACE:?} grace");
        let exited = tokio::task::block_in_place(|| cluster.gateway(0).wait_exit(Duration::from_secs(10)));
        assert_eq!(exited, Some(true), "the gateway exits with success soon after the grace");
        stopped_at.elapsed()
    };
    let (typists, exited_after) = tokio::join!(typing, drain);
    eprintln!("seed {seed}: the draining gateway exited {exited_after:?} after SIGTERM (grace {GRACE:?})");
    assert_everything_converged(&typists, cluster.database(), &docs, seed).await;
    for (client, _, _) in &typists.clients {
        let stats = client.stats();
        assert_eq!(stats.current_url, urls[1], "seed {seed}: {} did not move: {stats:?}", client.client_id());
    }
}
