//! A slow op log does not hold up the connection that submitted to it: its pings are answered and
//! other documents' versions reach it while its op waits, its ops still go in the order they came,
//! and past the per-connection queue an op is answered `unavailable` at once. The slow hop is a test
//! double in front of the real in-process op log; the gateway, the partition loop and the store are
//! real.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use support::{Backend, Client};
use tandem_bus::in_process::InProcessSubmitter;
use tandem_bus::{BusError, OpSubmitter};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_protocol::records::Submission;
use tandem_protocol::ClientId;
use tokio::sync::Semaphore;

/// The id the op log and other clients see for client `id` (no authentication: user "anonymous").
fn scoped(id: &str) -> String {
    tandem_auth::Principal::anonymous().scoped_client(&ClientId::parse(id).unwrap()).to_string()
}

/// Holds every op of document `slow` until the test releases it; records the order in which ops
/// reach the op log.
struct Slow {
    inner: InProcessSubmitter,
    release: Semaphore,
    waiting: Mutex<usize>,
    order: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl OpSubmitter for Slow {
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        if submission.doc.as_str() == "slow" {
            *self.waiting.lock().unwrap() += 1;
            self.release.acquire().await.unwrap().forget();
        }
        self.order.lock().unwrap().push((submission.client.to_string(), submission.doc.to_string()));
        self.inner.submit(submission).await
    }
}

async fn start(
    config: GatewayConfig,
) -> (Backend, Arc<Slow>, std::net::SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let backend = Backend::start();
    let slow = Arc::new(Slow {
        inner: backend.submitter.clone(),
        release: Semaphore::new(0),
        waiting: Mutex::new(0),
        order: Mutex::new(Vec::new()),
    });
    let deps = GatewayDeps {
        submitter: slow.clone(),
        events: Arc::new(backend.subscriber.clone()),
        store: backend.store.clone(),
        extra_routes: axum::Router::new(),
    };
    let (address, gateway) = support::gateway(config, deps, &backend.shutdown).await;
    (backend, slow, address, gateway)
}

async fn open(client: &mut Client, doc: &str) {
    client.send(json!({"type": "open", "doc": doc})).await;
    assert_eq!(client.next(Duration::from_secs(5)).await["type"], "snapshot");
}

/// Waits until `n` ops of `slow` are held.
async fn held(slow: &Slow, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while *slow.waiting.lock().unwrap() < n {
        assert!(tokio::time::Instant::now() < deadline, "the op did not reach the submitter");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next `n` messages, in any order.
async fn next_set(client: &mut Client, n: usize) -> HashSet<String> {
    let mut set = HashSet::new();
    for _ in 0..n {
        set.insert(client.next(Duration::from_secs(5)).await.to_string());
    }
    set
}

fn set(messages: &[Value]) -> HashSet<String> {
    messages.iter().map(Value::to_string).collect()
}

#[tokio::test]
async fn a_slow_submit_holds_up_neither_pings_nor_other_documents_nor_the_order_of_ops() {
    let (backend, slow, address, gateway) = start(GatewayConfig::default()).await;
    let prompt = Duration::from_secs(1);
    let mut a = Client::connect(address, "a").await;
    let mut b = Client::connect(address, "b").await;
    open(&mut a, "slow").await;
    open(&mut a, "fast").await;
    open(&mut b, "fast").await;

    a.send(json!({"type": "op", "doc": "slow", "seq": 1, "base": 0, "op": ["s"]})).await;
    held(&slow, 1).await;
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.next(prompt).await, json!({"type": "pong"}), "a ping waits for nobody's submit");

    b.send(json!({"type": "op", "doc": "fast", "seq": 1, "base": 0, "op": ["b"]})).await;
    assert_eq!(b.next(prompt).await, json!({"type": "ack", "doc": "fast", "seq": 1, "version": 1}));
    assert_eq!(
        a.next(prompt).await,
        json!({"type": "op", "doc": "fast", "version": 1, "client": scoped("b"), "op": ["b"]}),
        "another document's version reaches the connection while its op waits"
    );

    // The connection's ops go in the order they came: this one waits behind the slow one.
    a.send(json!({"type": "op", "doc": "fast", "seq": 1, "base": 1, "op": [1, "a"]})).await;
    assert_eq!(a.try_next(Duration::from_millis(300)).await, None);
    slow.release.add_permits(1);
    assert_eq!(
        next_set(&mut a, 2).await,
        set(&[
            json!({"type": "ack", "doc": "slow", "seq": 1, "version": 1}),
            json!({"type": "ack", "doc": "fast", "seq": 1, "version": 2}),
        ])
    );
    let order = slow.order.lock().unwrap().clone();
    let expected = [("b", "fast"), ("a", "slow"), ("a", "fast")].map(|(c, d)| (scoped(c), d.to_owned()));
    assert_eq!(order, expected);
    backend.stop(gateway).await;
}

#[tokio::test]
async fn past_the_submit_queue_an_op_is_unavailable_at_once() {
    let (backend, slow, address, gateway) =
        start(GatewayConfig { submit_queue: 1, ..GatewayConfig::default() }).await;
    let mut a = Client::connect(address, "a").await;
    for doc in ["slow", "second", "third"] {
        open(&mut a, doc).await;
    }
    a.send(json!({"type": "op", "doc": "slow", "seq": 1, "base": 0, "op": ["s"]})).await;
    held(&slow, 1).await;
    a.send(json!({"type": "op", "doc": "second", "seq": 1, "base": 0, "op": ["2"]})).await;
    a.send(json!({"type": "op", "doc": "third", "seq": 1, "base": 0, "op": ["3"]})).await;
    let refused = a.next(Duration::from_secs(1)).await;
    assert_eq!(
        (refused["code"].as_str(), refused["doc"].as_str(), refused["seq"].as_u64()),
        (Some("unavailable"), Some("third"), Some(1)),
        "{refused}"
    );
    assert!(refused["message"].as_str().unwrap().contains("resend"), "{refused}");

    slow.release.add_permits(1);
    assert_eq!(
        next_set(&mut a, 2).await,
        set(&[
            json!({"type": "ack", "doc": "slow", "seq": 1, "version": 1}),
            json!({"type": "ack", "doc": "second", "seq": 1, "version": 1}),
        ])
    );
    backend.stop(gateway).await;
}
