//! A server of either mode, authenticated, with the Documents API's clients and a view of its event
//! log, so every scenario runs the same against `tandem-standalone` and a cluster.

use std::time::Duration;

use prost::Message;
use serde_json::json;
use tandem_integration_tests::auth::DevKeys;
use tandem_integration_tests::cluster::Cluster;
use tandem_integration_tests::{RawConn, Standalone};
use tandem_proto::proto::component::Kind;
use tandem_proto::proto::documents_client::DocumentsClient;
use tandem_proto::proto::{ApiError, ApplyEditRequest, ApplyEditResponse, Component, GetDocumentRequest};
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Cluster,
}

/// The service token both modes are started with.
pub const SERVICE_TOKEN: &str = "documents-api-test-service-token";

enum Running {
    Standalone(Box<Standalone>),
    Cluster(Box<Cluster>),
}

/// A running server with JWT authentication and the service token.
pub struct Server {
    running: Running,
    pub keys: DevKeys,
}

impl Server {
    /// Starts a server of `mode`; `args` go to the process that owns each flag (`--snapshot-every`
    /// to the sequencers, the edge's flags to the gateways).
    pub fn start(mode: Mode, sequencer_args: &[&str], edge_args: &[&str]) -> Self {
        let keys = DevKeys::new();
        let running = match mode {
            Mode::Standalone => {
                let mut builder = Standalone::builder()
                    .jwt_key_file(&keys.key_file())
                    .env("TANDEM_SERVICE_TOKEN", SERVICE_TOKEN);
                for arg in sequencer_args.iter().chain(edge_args) {
                    builder = builder.arg(*arg);
                }
                Running::Standalone(Box::new(builder.start()))
            }
            Mode::Cluster => {
                let mut builder = Cluster::builder()
                    .gateways(1)
                    .sequencers(1)
                    .partitions(2)
                    .jwt_key_file(&keys.key_file())
                    .service_token(SERVICE_TOKEN);
                for arg in sequencer_args {
                    builder = builder.sequencer_arg(*arg);
                }
                for arg in edge_args {
                    builder = builder.gateway_arg(*arg);
                }
                Running::Cluster(Box::new(builder.start()))
            }
        };
        Self { running, keys }
    }

    /// `ws://HOST:PORT/v1/ws`
    pub fn ws_url(&self) -> String {
        match &self.running {
            Running::Standalone(s) => s.ws_url(),
            Running::Cluster(c) => c.gateway_ws_url(0),
        }
    }

    /// `http://HOST:PORT`: the gRPC endpoint, the port of the WebSocket.
    pub fn endpoint(&self) -> String {
        let ws = self.ws_url();
        let address = ws.trim_start_matches("ws://").trim_end_matches("/v1/ws");
        format!("http://{address}")
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.running {
            Running::Cluster(c) => Some(c),
            Running::Standalone(_) => None,
        }
    }

    /// A connection to the gRPC endpoint (HTTP/2, no token).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint()).expect("a URL").connect().await.expect("the gRPC port answers")
    }

    /// A client that presents `token` on every call (`None`: no token).
    pub async fn client_with(&self, token: Option<&str>, author: Option<&str>) -> Api {
        let mut metadata = Vec::new();
        if let Some(token) = token {
            metadata.push(("authorization", format!("Bearer {token}")));
        }
        if let Some(author) = author {
            metadata.push(("tandem-author", author.to_owned()));
        }
        DocumentsClient::with_interceptor(self.channel().await, Metadata(metadata))
            .max_decoding_message_size(64 << 20)
    }

    /// A client of `user` allowed to write every document.
    pub async fn client(&self, user: &str) -> Api {
        self.client_with(Some(&self.keys.token(user, &[], &["*"])), None).await
    }

    /// A WebSocket session of `user` (writer of everything) that said `hello` as `client`.
    pub async fn websocket(&self, user: &str, client: &str) -> RawConn {
        RawConn::hello_with_token(&self.ws_url(), client, &self.keys.token(user, &[], &["*"])).await
    }

    /// Rows of a query on the event log (Postgres or the standalone's SQLite file), fields joined
    /// by `|`.
    pub fn sql(&self, query: &str) -> Vec<String> {
        match &self.running {
            Running::Cluster(c) => c.database().query(query),
            Running::Standalone(s) => sqlite_rows(&s.data_dir().join("tandem.sqlite3"), query),
        }
    }

    /// One number from a query (`SELECT count(*) …`).
    pub fn count(&self, query: &str) -> u64 {
        let rows = self.sql(query);
        rows.first().and_then(|r| r.trim().parse().ok()).unwrap_or_else(|| panic!("{query}: {rows:?}"))
    }
}

/// Rows of `query` on the SQLite file of a running standalone (read only; the server keeps writing).
fn sqlite_rows(file: &std::path::Path, query: &str) -> Vec<String> {
    use rusqlite::types::Value;
    let db = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the standalone's database opens");
    db.busy_timeout(Duration::from_secs(5)).expect("a busy timeout");
    let mut statement = db.prepare(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        let fields = (0..columns)
            .map(|i| {
                Ok(match row.get::<_, Value>(i)? {
                    Value::Null => String::new(),
                    Value::Integer(n) => n.to_string(),
                    Value::Real(x) => x.to_string(),
                    Value::Text(t) => t,
                    Value::Blob(b) => format!("{b:?}"),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(fields.join("|"))
    });
    rows.and_then(Iterator::collect).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// The Documents client of the tests.
pub type Api = DocumentsClient<InterceptedService<Channel, Metadata>>;

/// Metadata added to every call.
#[derive(Clone)]
pub struct Metadata(Vec<(&'static str, String)>);

impl Metadata {
    pub fn new(pairs: Vec<(&'static str, String)>) -> Self {
        Self(pairs)
    }
}

impl Interceptor for Metadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        for (key, value) in &self.0 {
            let value: AsciiMetadataValue = value.parse().expect("ASCII metadata");
            request.metadata_mut().insert(MetadataKey::from_static(key), value);
        }
        Ok(request)
    }
}

/// The `ApiError` of a failed call, after checking its gRPC code.
pub fn api_error(status: &Status, code: Code) -> ApiError {
    assert_eq!(status.code(), code, "{status:?}");
    let error =
        ApiError::decode(status.details()).unwrap_or_else(|e| panic!("no ApiError in {status:?}: {e}"));
    assert_eq!(error.message, status.message());
    error
}

pub fn retain(n: u64) -> Component {
    Component { kind: Some(Kind::Retain(n)) }
}

pub fn insert(text: &str) -> Component {
    Component { kind: Some(Kind::Insert(text.to_owned())) }
}

pub fn delete(n: u64) -> Component {
    Component { kind: Some(Kind::Delete(n)) }
}

/// Applies a wire op to a text, as the spec says: positions count Unicode scalar values.
pub fn apply(text: &str, op: &[Component]) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (mut at, mut out) = (0, String::new());
    for component in op {
        match component.kind.as_ref().expect("a component") {
            Kind::Retain(n) => {
                out.extend(&chars[at..at + *n as usize]);
                at += *n as usize;
            }
            Kind::Insert(s) => out.push_str(s),
            Kind::Delete(n) => at += *n as usize,
        }
    }
    assert_eq!(at, chars.len(), "the op {op:?} does not span {text:?}");
    out
}

/// ApplyEdit with a fresh request id; panics on failure.
pub async fn edit(api: &mut Api, doc: &str, base: u64, op: Vec<Component>) -> ApplyEditResponse {
    let request_id = format!("req-{:016x}", rand::random::<u64>());
    let request = ApplyEditRequest { doc: doc.to_owned(), base_version: base, op, request_id };
    api.apply_edit(request).await.unwrap_or_else(|e| panic!("ApplyEdit on {doc}: {e:?}")).into_inner()
}

/// The latest text and version of `doc`.
pub async fn latest(api: &mut Api, doc: &str) -> (String, u64) {
    let response = api
        .get_document(GetDocumentRequest { doc: doc.to_owned(), version: None })
        .await
        .expect("GetDocument")
        .into_inner();
    assert_eq!(response.version, response.latest_version);
    (response.text, response.version)
}

/// Commits `op` through a WebSocket session (opens `doc`, sends the op, waits for its ack).
pub async fn websocket_edit(
    conn: &mut RawConn,
    doc: &str,
    seq: u64,
    base: u64,
    op: serde_json::Value,
) -> u64 {
    conn.send(json!({"type": "op", "doc": doc, "seq": seq, "base": base, "op": op})).await;
    loop {
        let frame = conn.recv().await;
        match frame["type"].as_str() {
            Some("ack") => return frame["version"].as_u64().expect("a version"),
            Some("op") => continue,
            _ => panic!("expected the ack of seq {seq}, got {frame}"),
        }
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
