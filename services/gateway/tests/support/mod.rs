//! What the gateway's tests share: a real backend in-process (SQLite store, in-process bus, the
//! sequencer's partition loop), a gateway on port 0, a WebSocket client and a plain HTTP GET.

// Each test file uses a part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem_bus::in_process::{in_process, InProcessConfig, InProcessSubmitter, InProcessSubscriber};
use tandem_gateway::{GatewayConfig, GatewayDeps};
use tandem_sequencer::{run_partition, PartitionConfig};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The store, the bus and a sequencer owning its only partition.
pub struct Backend {
    pub store: Arc<SqliteStore>,
    pub submitter: InProcessSubmitter,
    pub subscriber: InProcessSubscriber,
    pub shutdown: CancellationToken,
    sequencer: JoinHandle<bool>,
    _data: tempfile::TempDir,
}

impl Backend {
    pub fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).unwrap());
        let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
        let shutdown = CancellationToken::new();
        let partition = run_partition(
            consumers.remove(0),
            store.clone(),
            Arc::new(publisher),
            PartitionConfig::default(),
            shutdown.clone(),
        );
        let sequencer = tokio::spawn(async move { partition.await.is_ok() });
        Self { store, submitter, subscriber, shutdown, sequencer, _data: data }
    }

    /// Stops the gateway (it shares the shutdown token) and the sequencer.
    pub async fn stop(self, gateway: JoinHandle<anyhow::Result<()>>) {
        self.shutdown.cancel();
        gateway.await.unwrap().unwrap();
        assert!(self.sequencer.await.unwrap(), "the sequencer failed");
    }
}

/// Starts a gateway on a free port.
pub async fn gateway(
    config: GatewayConfig,
    deps: GatewayDeps,
    shutdown: &CancellationToken,
) -> (SocketAddr, JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // These tests stop the gateway with clients still connected: no drain grace to wait out.
    let config = GatewayConfig { drain_grace: std::time::Duration::ZERO, ..config };
    (address, tokio::spawn(tandem_gateway::run(config, listener, deps, shutdown.clone())))
}

/// A WebSocket client past the handshake.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Client {
    pub async fn connect(address: SocketAddr, client: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws")).await.unwrap();
        let mut client_ = Self { ws };
        client_.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
        assert_eq!(client_.next(Duration::from_secs(5)).await["type"], "welcome");
        client_
    }

    pub async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.unwrap();
    }

    /// The next message, failing the test if none comes within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        self.try_next(timeout).await.unwrap_or_else(|| panic!("no message within {timeout:?}"))
    }

    /// The next message, or `None` if none comes within `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            if let Message::Text(text) = frame.expect("the connection is open").unwrap() {
                return Some(serde_json::from_str(&text).unwrap());
            }
        }
    }
}

/// A plain HTTP/1.1 GET: the status, the headers (lowercased) and the body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}
