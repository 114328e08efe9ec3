//! The gateway answers `unavailable` when the op log cannot take an op, the op log's own code when it
//! refuses the op for good, and the connection stays open. The refusing submitter is a test double of
//! the bus (the in-process bus only refuses under a load that cannot be produced deterministically);
//! the gateway, the store and the socket are real.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::{BusError, OpSubmitter};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_protocol::records::Submission;
use tandem_protocol::ErrorCode;
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Refuses every op with its error.
struct Refusing(BusError);

#[async_trait]
impl OpSubmitter for Refusing {
    async fn submit(&self, _: Submission) -> Result<(), BusError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn a_refused_submission_is_unavailable_and_the_connection_stays_open() {
    let refused = answer_to_an_op(BusError::Unavailable("partition 0 is full".into())).await;
    assert_eq!(
        (refused["code"].as_str(), refused["doc"].as_str(), refused["seq"].as_u64()),
        (Some("unavailable"), Some("d"), Some(1)),
        "{refused}"
    );
    assert!(refused["message"].as_str().unwrap().contains("resend"), "{refused}");
}

#[tokio::test]
async fn an_op_the_sequencer_forbids_is_forbidden_not_unavailable() {
    let error = BusError::Refused {
        code: ErrorCode::Forbidden,
        message: "caller \"indexer\" may not write document d".into(),
    };
    let refused = answer_to_an_op(error).await;
    assert_eq!(
        (refused["code"].as_str(), refused["doc"].as_str(), refused["seq"].as_u64()),
        (Some("forbidden"), Some("d"), Some(1)),
        "{refused}"
    );
    assert!(refused["message"].as_str().unwrap().contains("may not write document d"), "{refused}");
}

/// Sends one op through a gateway whose op log answers it with `error`; returns the `error` frame
/// the client got, having checked that the connection stayed open.
async fn answer_to_an_op(error: BusError) -> Value {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).unwrap());
    let (_, _consumers, _, subscriber) = in_process(&InProcessConfig::default());
    let deps = GatewayDeps {
        submitter: Arc::new(Refusing(error)),
        events: Arc::new(subscriber),
        store,
        extra_routes: axum::Router::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tandem_gateway::run(no_drain_grace(), listener, deps, shutdown.clone()));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws")).await.unwrap();
    for message in [
        json!({"type": "hello", "protocol": 1, "client": "c"}),
        json!({"type": "open", "doc": "d"}),
        json!({"type": "op", "doc": "d", "seq": 1, "base": 0, "op": ["x"]}),
        json!({"type": "ping"}),
    ] {
        ws.send(Message::text(message.to_string())).await.unwrap();
    }
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            frames.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[1]["type"], "snapshot");
    // The op's answer comes when the op log refuses it, which may be after the pong: the connection
    // does not wait for the op log (see `slow_submit.rs`).
    let (refused, pong) =
        if frames[2]["type"] == "pong" { (&frames[3], &frames[2]) } else { (&frames[2], &frames[3]) };
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(pong["type"], "pong", "the connection stays open");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    refused.clone()
}

/// The test stops the gateway with its client connected: no drain grace to wait out.
fn no_drain_grace() -> GatewayConfig {
    GatewayConfig { drain_grace: Duration::ZERO, ..GatewayConfig::default() }
}
