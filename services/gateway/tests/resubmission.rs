//! A submission lost after the sequencer service accepted it (and before it was committed) heals
//! without the client: the gateway submits it again when its record does not come back. The lossy
//! hop is a test double in front of the real in-process op log; the gateway, the partition loop and
//! the store are real.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem_bus::in_process::{in_process, InProcessConfig, InProcessSubmitter};
use tandem_bus::{BusError, OpSubmitter};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_protocol::records::Submission;
use tandem_sequencer::{run_partition, PartitionConfig};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Says "accepted" to the first copy of every (client, seq) but drops it.
struct LosesFirstCopies {
    inner: InProcessSubmitter,
    seen: Mutex<HashSet<(String, u64)>>,
}

#[async_trait]
impl OpSubmitter for LosesFirstCopies {
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let first = self.seen.lock().unwrap().insert((submission.client.to_string(), submission.seq));
        if first {
            return Ok(());
        }
        self.inner.submit(submission).await
    }
}

#[tokio::test]
async fn a_lost_submission_is_resubmitted_by_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).unwrap());
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let shutdown = CancellationToken::new();
    let sequencer = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let lossy = LosesFirstCopies { inner: submitter, seen: Mutex::new(HashSet::new()) };
    let deps = GatewayDeps {
        submitter: Arc::new(lossy),
        events: Arc::new(subscriber),
        store,
        extra_routes: axum::Router::new(),
    };
    let config = GatewayConfig {
        resubmit_after: Duration::from_millis(200),
        // Stopped with its client connected: no drain grace to wait out.
        drain_grace: Duration::ZERO,
        ..GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let gateway = tokio::spawn(tandem_gateway::run(config, listener, deps, shutdown.clone()));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws")).await.unwrap();
    for message in [
        json!({"type": "hello", "protocol": 1, "client": "c"}),
        json!({"type": "open", "doc": "d"}),
        json!({"type": "op", "doc": "d", "seq": 1, "base": 0, "op": ["healed"]}),
    ] {
        ws.send(Message::text(message.to_string())).await.unwrap();
    }
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let frame =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame").unwrap().unwrap();
        if let Message::Text(text) = frame {
            frames.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    assert_eq!(frames[1]["type"], "snapshot");
    assert_eq!(
        frames[2],
        json!({"type": "ack", "doc": "d", "seq": 1, "version": 1}),
        "the client never resent"
    );
    shutdown.cancel();
    gateway.await.unwrap().unwrap();
    sequencer.await.unwrap().unwrap();
}
