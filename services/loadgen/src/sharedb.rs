//! Just enough of ShareDB's client protocol (JSON over WebSocket, ShareDB 7, protocol 1.2) for the
//! typing presets to run against a ShareDB server (`--server sharedb`; `deploy/sharedb.sh run PORT`
//! serves one in memory): the handshake, subscribe, create, op submit and fetch, with documents of
//! the `ot-text-unicode` type ([`crate::text_unicode`]), whose positions count Unicode code points
//! like Tandem's.
//!
//! The conversation, as `sharedb/lib/agent.js` and `client/doc.js` have it:
//!
//! - the server opens with `{"a":"init",…}`; the client answers `{"a":"hs","id":ID}` (the id becomes
//!   the `src` of its ops, so the load generator's own client ids name the authors) and gets `hs`;
//! - `{"a":"s","c","d"}` subscribes and answers `{"a":"s","data":{"v","data","type"}}` (no `type`
//!   while the document does not exist);
//! - `{"a":"op","c","d","v","src","seq","op"|"create"}` submits at version `v`; the server
//!   transforms it (its `'left'` side wins ties, as the later op), sends the submitter any op it
//!   missed, then acknowledges with the same message without `op`, `v` the version it was applied
//!   at. Every other subscriber gets the op with that `v`; its own ops are not echoed;
//! - `{"a":"f","c","d"}` fetches a snapshot; a failed request comes back with `error`.

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::text_unicode::Op;

/// The type documents are created with (its URI, as `ot-text-unicode` registers it).
pub const TEXT_TYPE: &str = "http://sharejs.org/types/text-unicode";
/// The collection of every document the load generator writes.
pub const COLLECTION: &str = "loadgen";
/// The socket's read buffer, as the Tandem client has it (tungstenite zero-fills it on every read).
const READ_BUFFER: usize = 4 << 10;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A message from the server, with the fields the load generator reads.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    pub a: String,
    #[serde(default)]
    pub d: Option<String>,
    #[serde(default)]
    pub v: Option<u64>,
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub op: Option<Value>,
    #[serde(default)]
    pub data: Option<Snapshot>,
    #[serde(default)]
    pub error: Option<ServerError>,
}

/// A document as `s` and `f` answer it.
#[derive(Debug, Deserialize)]
pub struct Snapshot {
    pub v: u64,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ServerError {
    #[serde(default)]
    pub code: Value,
    #[serde(default)]
    pub message: String,
}

impl ServerError {
    /// The code alone, as the report counts errors by code.
    pub fn code(&self) -> String {
        self.code.as_str().map_or_else(|| self.code.to_string(), str::to_owned)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl Snapshot {
    /// The text; an empty one while the document does not exist.
    pub fn text(&self) -> anyhow::Result<String> {
        match (&self.kind, &self.data) {
            (None, _) => Ok(String::new()),
            (Some(kind), Some(Value::String(text))) if kind == TEXT_TYPE => Ok(text.clone()),
            (kind, data) => bail!("not a text-unicode document: type {kind:?}, data {data:?}"),
        }
    }
}

/// Connects to `url` and shakes hands as `id`: the `src` of this connection's ops.
pub async fn connect(url: &str, id: &str) -> anyhow::Result<Ws> {
    // Nagle off, as the Tandem client has it: each op is a small frame the server should see now.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connect to {url}"))?;
    let hello = json!({"a": "hs", "id": id, "protocol": 1, "protocolMinor": 2});
    let answer = request(&mut ws, &hello, "hs", None).await.context("handshake")?;
    if let Some(error) = answer.error {
        bail!("the server refused the handshake: {error}");
    }
    Ok(ws)
}

/// Reads text frames until one with action `a` (and document `d`, if given) arrives; fails when
/// the connection ends first.
pub async fn read_until(ws: &mut Ws, a: &str, d: Option<&str>) -> anyhow::Result<Incoming> {
    while let Some(frame) = ws.next().await {
        if let Message::Text(text) = frame.context("read")? {
            let message: Incoming =
                serde_json::from_str(&text).with_context(|| format!("unreadable message {text}"))?;
            if message.a == a && (d.is_none() || message.d.as_deref() == d) {
                return Ok(message);
            }
        }
    }
    bail!("the connection closed while waiting for {a:?}")
}

/// Sends `message` and waits for its answer (see [`read_until`]).
async fn request(ws: &mut Ws, message: &Value, a: &str, d: Option<&str>) -> anyhow::Result<Incoming> {
    ws.send(Message::text(message.to_string())).await.context("send")?;
    read_until(ws, a, d).await
}

/// Subscribes to `doc`; returns its version and text.
pub async fn subscribe(ws: &mut Ws, doc: &str) -> anyhow::Result<(u64, String)> {
    let answer = request(ws, &json!({"a": "s", "c": COLLECTION, "d": doc}), "s", Some(doc)).await?;
    if let Some(error) = answer.error {
        bail!("subscribe to {doc}: {error}");
    }
    let snapshot = answer.data.with_context(|| format!("subscribe to {doc}: no snapshot"))?;
    Ok((snapshot.v, snapshot.text()?))
}

/// Creates `doc` (empty text) as op `seq` of `src`, at version 0; returns once it is acknowledged.
pub async fn create(ws: &mut Ws, doc: &str, src: &str, seq: u64) -> anyhow::Result<()> {
    let create = json!({
        "a": "op", "c": COLLECTION, "d": doc, "v": 0, "src": src, "seq": seq,
        "create": {"type": TEXT_TYPE, "data": ""},
    });
    let answer = request(ws, &create, "op", Some(doc)).await?;
    match answer.error {
        Some(error) => bail!("create {doc}: {error}"),
        None => Ok(()),
    }
}

/// The frame that submits `op` on `doc` at version `v` as op `seq` of `src`.
pub fn op_frame(doc: &str, v: u64, src: &str, seq: u64, op: &Op) -> Message {
    let frame =
        json!({"a": "op", "c": COLLECTION, "d": doc, "v": v, "src": src, "seq": seq, "op": op.to_wire()});
    Message::text(frame.to_string())
}

/// Fetches every document of `docs` on a fresh connection to `url`: (version, text) or why not, in
/// the order of `docs`.
pub async fn fetch_all(url: &str, docs: &[String]) -> Vec<Result<(u64, String), String>> {
    let fetched = async {
        let mut ws = connect(url, "loadgen-reader").await?;
        for doc in docs {
            let fetch = json!({"a": "f", "c": COLLECTION, "d": doc});
            ws.feed(Message::text(fetch.to_string())).await.context("send")?;
        }
        ws.flush().await.context("send")?;
        let mut answers: std::collections::HashMap<String, Result<(u64, String), String>> =
            std::collections::HashMap::new();
        while answers.len() < docs.len() {
            let answer = read_until(&mut ws, "f", None).await?;
            let doc = answer.d.clone().unwrap_or_default();
            let result = match (answer.error, answer.data) {
                (Some(error), _) => Err(error.to_string()),
                (None, Some(snapshot)) => {
                    snapshot.text().map(|t| (snapshot.v, t)).map_err(|e| format!("{e:#}"))
                }
                (None, None) => Err("no snapshot in the answer".to_owned()),
            };
            answers.insert(doc, result);
        }
        let _ = ws.close(None).await;
        anyhow::Ok(answers)
    };
    match fetched.await {
        Ok(mut answers) => {
            docs.iter().map(|d| answers.remove(d).unwrap_or_else(|| Err("no answer".to_owned()))).collect()
        }
        Err(e) => docs.iter().map(|_| Err(format!("{e:#}"))).collect(),
    }
}
