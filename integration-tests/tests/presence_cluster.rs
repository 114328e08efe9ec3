//! Presence across gateways (docs/ARCHITECTURE.md, "Presence"): two gateways of a real cluster
//! (Kafka, Postgres, a sequencer), clients on each. A selection set on one gateway reaches the
//! other in the text of a version it has; a newcomer there gets it, also for a document nobody on
//! that gateway had open; a close crosses as a leave; and the presences of a gateway killed with
//! SIGKILL expire everywhere after the presence timeout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_integration_tests::cluster::Cluster;
use tandem_integration_tests::RawConn;

/// The presence timing of the test cluster: a heartbeat every 500 ms, gone after 2.5 s without one.
const HEARTBEAT_MS: u64 = 500;
const TIMEOUT_MS: u64 = 2500;

fn cluster() -> Cluster {
    Cluster::builder()
        .gateways(2)
        .sequencers(1)
        .partitions(2)
        .gateway_arg("--presence-heartbeat-ms")
        .gateway_arg(HEARTBEAT_MS.to_string())
        .gateway_arg("--presence-timeout-ms")
        .gateway_arg(TIMEOUT_MS.to_string())
        .start()
}

/// A connection with `doc` open; returns it and its `welcome.author`.
async fn join(url: &str, client: &str, doc: &str) -> (RawConn, String) {
    let mut conn = RawConn::connect(url).await;
    conn.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
    let welcome = conn.expect("welcome").await;
    conn.send(json!({"type": "open", "doc": doc})).await;
    conn.expect("snapshot").await;
    (conn, welcome["author"].as_str().expect("author").to_owned())
}

/// The next frame of type `kind` about `doc`, skipping `op`, `ack` and `pong` frames and any frame
/// about another document.
async fn next_in(conn: &mut RawConn, kind: &str, doc: &str) -> Value {
    loop {
        let frame = conn.recv().await;
        match frame["type"].as_str() {
            Some(k) if k == kind && frame["doc"] == doc => return frame,
            Some("op" | "ack" | "pong") => continue,
            _ if frame["doc"] != doc => continue,
            _ => panic!("expected {kind}, got {frame}"),
        }
    }
}

async fn next(conn: &mut RawConn, kind: &str) -> Value {
    next_in(conn, kind, "shared").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_gateways_and_expires_with_a_killed_gateway() {
    let mut cluster = cluster();
    let (one, two) = (cluster.gateway_ws_url(0), cluster.gateway_ws_url(1));
    let (mut ann, ann_author) = join(&one, "ann-tab", "shared").await;
    let (mut bob, bob_author) = join(&two, "bob-tab", "shared").await;
    ann.send(json!({"type": "op", "doc": "shared", "seq": 1, "base": 0, "op": ["hello"]})).await;
    ann.expect("ack").await;
    bob.send(json!({"type": "presence", "doc": "shared", "name": "Bob"})).await;
    ann.send(
        json!({"type": "presence", "doc": "shared", "version": 1, "anchor": 5, "head": 5, "name": "Ann"}),
    )
    .await;
    let seen = next(&mut bob, "presence").await;
    assert_eq!((seen["client"].clone(), seen["name"].clone()), (json!(ann_author), json!("Ann")));
    assert_eq!((seen["version"].clone(), seen["anchor"].clone()), (json!(1), json!(5)), "{seen}");
    let heard = next(&mut ann, "presence").await;
    assert_eq!(heard["client"], bob_author.as_str(), "and back: {heard}");

    // Bob types before Ann's caret; a newcomer on the other gateway gets the caret moved past it.
    bob.send(json!({"type": "op", "doc": "shared", "seq": 1, "base": 1, "op": ["¡", 5]})).await;
    bob.expect("ack").await;
    let (mut cat, _) = join(&two, "cat-tab", "shared").await;
    cat.send(json!({"type": "presence", "doc": "shared"})).await;
    let mut cat_saw = vec![next(&mut cat, "presence").await, next(&mut cat, "presence").await];
    cat_saw.retain(|f| f["client"] == ann_author.as_str());
    assert_eq!(cat_saw.len(), 1, "{cat_saw:?}");
    assert_eq!((cat_saw[0]["version"].clone(), cat_saw[0]["anchor"].clone()), (json!(2), json!(6)));

    // A document nobody on gateway two has open: Ann's presence waits there for a newcomer.
    ann.send(json!({"type": "open", "doc": "quiet"})).await;
    next_in(&mut ann, "snapshot", "quiet").await;
    ann.send(json!({"type": "presence", "doc": "quiet", "version": 0, "anchor": 0, "head": 0})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut dan, _) = join(&two, "dan-tab", "quiet").await;
    dan.send(json!({"type": "presence", "doc": "quiet"})).await;
    assert_eq!(next_in(&mut dan, "presence", "quiet").await["client"], ann_author.as_str());

    // A close crosses as a leave.
    ann.send(json!({"type": "close", "doc": "quiet"})).await;
    assert_eq!(next_in(&mut dan, "presence_left", "quiet").await["client"], ann_author.as_str());

    // Gateway one dies without a word: its presences expire on gateway two after the timeout,
    // and only then (heartbeats kept them alive until the kill).
    tokio::time::sleep(Duration::from_millis(2 * TIMEOUT_MS)).await;
    bob.send(json!({"type": "ping"})).await;
    cluster.gateway(0).kill();
    let killed = Instant::now();
    let left = loop {
        // Cat's presence reached Bob meanwhile; it stays (Cat's gateway lives).
        let frame = bob.recv().await;
        match frame["type"].as_str() {
            Some("presence_left") => break frame,
            Some("presence" | "pong" | "op") => continue,
            _ => panic!("unexpected {frame}"),
        }
    };
    let after = killed.elapsed();
    assert_eq!(left["client"], ann_author.as_str());
    let timeout = Duration::from_millis(TIMEOUT_MS);
    assert!(after >= timeout - Duration::from_millis(HEARTBEAT_MS + 300), "expired after {after:?}");
    assert!(after <= timeout + Duration::from_secs(2), "expired after {after:?}");
    drop(ann);
}
