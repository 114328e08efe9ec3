//! Just enough of ShareDB's client protocol (JSON over WebSocket, ShareDB 7, protocol 1.2) for the
//! typing presets to run against a ShareDB server (`--server sharedb`; `deploy/sharedb.sh run PORT`
//! serves one in memory): the handshake, subscribe, create, op submit and fetch, with documents of
//! the `ot-text-unicode` type, whose positions count Unicode code points like Tandem's.
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
use tandem_ot::Operation;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
pub fn op_frame(doc: &str, v: u64, src: &str, seq: u64, op: &Operation) -> Message {
    let frame =
        json!({"a": "op", "c": COLLECTION, "d": doc, "v": v, "src": src, "seq": seq, "op": to_wire(op)});
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

/// An `ot-text-unicode` op as a Tandem [`Operation`] on a text of `base_len` characters: numbers
/// retain, strings insert, `{"d": n}` (or `{"d": "text"}`) deletes, and the trailing retain that
/// `ot-text-unicode` leaves out is added back.
pub fn from_wire(op: &Value, base_len: usize) -> anyhow::Result<Operation> {
    let components = op.as_array().context("an op is an array")?;
    let mut out = Operation::new();
    let mut consumed = 0usize;
    for c in components {
        match c {
            Value::Number(n) => {
                let n = usize::try_from(n.as_u64().context("a skip is a positive integer")?)?;
                out.retain(n);
                consumed += n;
            }
            Value::String(s) => {
                out.insert(s);
            }
            Value::Object(d) => {
                let n = match d.get("d") {
                    Some(Value::Number(n)) => {
                        usize::try_from(n.as_u64().context("a delete counts characters")?)?
                    }
                    Some(Value::String(s)) => s.chars().count(),
                    _ => bail!("unknown component {c}"),
                };
                out.delete(n);
                consumed += n;
            }
            _ => bail!("unknown component {c}"),
        }
    }
    let Some(rest) = base_len.checked_sub(consumed) else {
        bail!("the op {op} spans {consumed} characters, the text has {base_len}");
    };
    out.retain(rest);
    Ok(out)
}

/// A Tandem [`Operation`] as an `ot-text-unicode` op: the same components without the trailing
/// retain, which `ot-text-unicode` refuses.
pub fn to_wire(op: &Operation) -> Value {
    let mut components: Vec<Value> = op
        .components()
        .iter()
        .map(|c| match c {
            tandem_ot::Component::Retain(n) => json!(n),
            tandem_ot::Component::Insert(s) => json!(s),
            tandem_ot::Component::Delete(n) => json!({"d": n}),
        })
        .collect();
    if components.last().is_some_and(Value::is_number) {
        components.pop();
    }
    Value::Array(components)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use tandem_integration_tests::seed;

    #[test]
    fn ops_convert_both_ways() {
        let op = from_wire(&json!([2, "hé", {"d": 1}, 1, {"d": "ab"}]), 7).unwrap();
        assert_eq!(op.base_len(), 7);
        assert_eq!(op.apply("xyzwvab!").ok(), None, "the base is 7 characters");
        assert_eq!(op.apply("xyzwvab").unwrap(), "xyhéwb");
        assert_eq!(to_wire(&op), json!([2, "hé", {"d": 1}, 1, {"d": 2}]));
        assert_eq!(to_wire(&from_wire(&json!([]), 3).unwrap()), json!([]));
        assert_eq!(to_wire(&from_wire(&json!(["é"]), 2).unwrap()), json!(["é"]));
        assert!(from_wire(&json!([4]), 3).is_err(), "longer than the text");
        assert!(from_wire(&json!([{"x": 1}]), 3).is_err());
    }

    /// A random op on a text of `len` characters, in wire form: what another ShareDB client sends.
    fn random_wire_op(rng: &mut SmallRng, len: usize) -> Value {
        let pos = rng.gen_range(0..=len);
        let mut op = Vec::new();
        if pos > 0 {
            op.push(json!(pos));
        }
        if pos < len && rng.gen_bool(0.4) {
            op.push(json!({"d": rng.gen_range(1..=(len - pos).min(3))}));
        } else {
            op.push(json!(["a", "é", "xy"][rng.gen_range(0..3)]));
        }
        Value::Array(op)
    }

    /// Two replicas that each make an op on the same text and take the other's as a ShareDB client
    /// does (its own op in flight transformed as the left side) end at the same text; and the
    /// server's side (the later op transformed as `'left'` against the committed one) agrees.
    #[test]
    fn concurrent_ops_converge_with_own_ops_winning_ties() {
        let seed = seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..2000 {
            let len = rng.gen_range(0..8);
            let text: String = (0..len).map(|i| ['a', 'b', 'ü', 'd'][i % 4]).collect();
            let committed = from_wire(&random_wire_op(&mut rng, len), len).unwrap();
            let own = from_wire(&random_wire_op(&mut rng, len), len).unwrap();
            // The client: its op in flight against the committed op it receives.
            let (own_after, committed_after) = Operation::transform(&own, &committed).unwrap();
            let client = committed_after.apply(&own.apply(&text).unwrap()).unwrap();
            // The server: the later op transformed against the committed one, then applied.
            let server = own_after.apply(&committed.apply(&text).unwrap()).unwrap();
            assert_eq!(client, server, "seed {seed}: {own} vs {committed} on {text:?}");
            let round_trip = from_wire(&to_wire(&own_after), committed.target_len()).unwrap();
            assert_eq!(round_trip, own_after, "seed {seed}");
        }
        // A tie: both insert at 1; the op in flight (own) lands left, as ShareDB's client has it.
        let own = from_wire(&json!([1, "O"]), 2).unwrap();
        let theirs = from_wire(&json!([1, "T"]), 2).unwrap();
        let (_, theirs_after) = Operation::transform(&own, &theirs).unwrap();
        assert_eq!(theirs_after.apply(&own.apply("ab").unwrap()).unwrap(), "aOTb");
    }
}
