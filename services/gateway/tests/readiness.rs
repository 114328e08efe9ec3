//! `/readyz` and the record stream ending: the gateway says it is not ready while no stream is open,
//! resubscribes, and the op committed meanwhile still reaches its author (the open documents repair
//! from the store). The subscriber whose streams end is a test double around the real in-process
//! bus; the gateway, the partition loop and the store are real.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use support::{http_get, Backend, Client};
use tandem_bus::in_process::InProcessSubscriber;
use tandem_bus::{Delivery, EventStream, EventSubscriber};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_protocol::DocId;
use tandem_store::EventStore;

/// The first stream ends after `first_stream_deliveries`; while `down`, opening the next one blocks,
/// as a Kafka reader's does while it cannot reach the broker.
struct EndingStreams {
    inner: InProcessSubscriber,
    first_stream_deliveries: usize,
    subscriptions: AtomicUsize,
    down: Arc<AtomicBool>,
}

impl EventSubscriber for EndingStreams {
    fn subscribe(&self) -> Box<dyn EventStream> {
        if self.subscriptions.fetch_add(1, Ordering::SeqCst) == 0 {
            return Box::new(Ending { inner: self.inner.subscribe(), left: self.first_stream_deliveries });
        }
        // Bounded, so that a failing test ends instead of waiting for this thread forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.down.load(Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return Box::new(Ending { inner: self.inner.subscribe(), left: 0 });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.inner.subscribe()
    }
}

struct Ending {
    inner: Box<dyn EventStream>,
    left: usize,
}

#[async_trait]
impl EventStream for Ending {
    async fn next(&mut self) -> Option<Delivery> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.inner.next().await
    }
}

/// Asks `/readyz` until its status is `status` (the router changes state on its own schedule).
async fn readyz_until(address: std::net::SocketAddr, status: u16) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (got, head, body) = http_get(address, "/readyz").await;
        if got == status {
            return (head, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz stayed {got}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_ended_record_stream_is_not_ready_then_resubscribed_and_the_missed_ack_arrives() {
    let backend = Backend::start();
    let down = Arc::new(AtomicBool::new(true));
    let events = EndingStreams {
        inner: backend.subscriber.clone(),
        first_stream_deliveries: 1,
        subscriptions: AtomicUsize::new(0),
        down: down.clone(),
    };
    let deps = GatewayDeps {
        submitter: Arc::new(backend.submitter.clone()),
        events: Arc::new(events),
        store: backend.store.clone(),
        extra_routes: axum::Router::new(),
    };
    // The gateway's own resubmission would also bring the ack once the stream is back; only the
    // repair may here.
    let config = GatewayConfig { resubmit_after: Duration::from_secs(600), ..GatewayConfig::default() };
    let (address, gateway) = support::gateway(config, deps, &backend.shutdown).await;

    let (status, head, body) = http_get(address, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "events: ok\nstore: ok\nsubmitter: ok\n"));
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(http_get(address, "/healthz").await.0, 200);

    let mut client = Client::connect(address, "c").await;
    let wait = Duration::from_secs(5);
    client.send(json!({"type": "open", "doc": "d"})).await;
    assert_eq!(client.next(wait).await["type"], "snapshot");
    client.send(json!({"type": "op", "doc": "d", "seq": 1, "base": 0, "op": ["a"]})).await;
    assert_eq!(client.next(wait).await, json!({"type": "ack", "doc": "d", "seq": 1, "version": 1}));

    // That was the first stream's only delivery: it has ended, and no new one opens while `down`
    // (a blocking `subscribe` on the test's single-threaded runtime would also stall the gateway).
    let (head, body) = readyz_until(address, 503).await;
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(body.contains("events: not ready: no record stream is open"), "{body}");
    assert!(body.contains("store: ok\n") && body.contains("submitter: ok\n"), "{body}");

    client.send(json!({"type": "op", "doc": "d", "seq": 2, "base": 1, "op": [1, "b"]})).await;
    let doc = DocId::parse("d").unwrap();
    let deadline = tokio::time::Instant::now() + wait;
    while backend.store.latest_version(&doc).await.unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the op was not committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.try_next(Duration::from_millis(200)).await, None, "no stream, no ack");

    down.store(false, Ordering::SeqCst);
    assert_eq!(
        client.next(Duration::from_secs(10)).await,
        json!({"type": "ack", "doc": "d", "seq": 2, "version": 2}),
        "the ack of the op committed while no stream was open"
    );
    let (_, body) = readyz_until(address, 200).await;
    assert_eq!(body, "events: ok\nstore: ok\nsubmitter: ok\n");
    backend.stop(gateway).await;
}
