//! The demo's history routes through the real gateway (JWT authentication on, a real sequencer and
//! store behind it): `GET /v1/docs/{doc}/versions/{version}` and `GET /v1/docs/{doc}/checkpoints`,
//! authenticated like the WebSocket upgrade (bearer header or session cookie with its `Origin`
//! check), read permission on the document, `Cache-Control: no-store`, JSON errors naming the
//! problem.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{gateway, Backend};
use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, Verifier, VerifierConfig};
use tandem_gateway::{Authentication, GatewayConfig, GatewayDeps};
use tandem_protocol::DocId;
use tandem_store::{Checkpoint, EventStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);
const SECRET: &[u8] = b"history-http-test-secret-of-32-bytes!";

fn token(user: &str, read: &[&str], write: &[&str]) -> String {
    mint(&MintKey::Hs256(SECRET.to_vec()), &MintRequest::new(user, read, write)).unwrap()
}

/// A GET with extra headers: the status, the headers (lowercased) and the body.
async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A GET whose answer must be JSON and never cached.
async fn get_json(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, head, body) = get(address, path, headers).await;
    assert!(head.contains("cache-control: no-store"), "{path}: {head}");
    assert!(head.contains("content-type: application/json"), "{path}: {head}");
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// Commits `ops` to `doc`, one version each, over an authenticated WebSocket.
async fn write_versions(address: SocketAddr, bearer: &str, doc: &str, ops: &[Value]) {
    let mut request = format!("ws://{address}/v1/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(json!({"type": "hello", "protocol": 1, "client": "w"}).to_string())).await.unwrap();
    ws.send(Message::text(json!({"type": "open", "doc": doc}).to_string())).await.unwrap();
    for (i, op) in ops.iter().enumerate() {
        let version = i as u64;
        let frame = json!({"type": "op", "doc": doc, "seq": version + 1, "base": version, "op": op});
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    // welcome, snapshot and opened come first; then one ack per op.
    let mut acked = 0;
    while acked < ops.len() {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time").unwrap().unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "ack" {
            acked += 1;
        }
    }
}

#[tokio::test]
async fn versions_and_checkpoints_are_served_to_readers_of_the_document_only() {
    let backend = Backend::start();
    let deps = GatewayDeps {
        submitter: Arc::new(backend.submitter.clone()),
        events: Arc::new(backend.subscriber.clone()),
        store: backend.store.clone(),
        extra_routes: axum::Router::new(),
    };
    let verifier = Verifier::new(VerifierConfig::new(KeyAlgorithm::Hs256, vec![SECRET.to_vec()])).unwrap();
    let config = GatewayConfig { auth: Authentication::Jwt(Arc::new(verifier)), ..GatewayConfig::default() };
    let (address, running) = gateway(config, deps, &backend.shutdown).await;

    let writer = token("wendy", &["notes/*"], &["notes/*"]);
    write_versions(
        address,
        &writer,
        "notes/a",
        &[json!(["hello"]), json!([5, " world"]), json!([-1, "H", 10])],
    )
    .await;
    let reader = token("rita", &["notes/a"], &[]);
    let bearer = format!("Bearer {reader}");
    let auth = [("authorization", bearer.as_str())];

    // Any version, `latest`, and the id percent-encoded.
    let (status, body) = get_json(address, "/v1/docs/notes/a/versions/1", &auth).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"doc": "notes/a", "version": 1, "text": "hello", "latest_version": 3}));
    let (_, body) = get_json(address, "/v1/docs/notes/a/versions/0", &auth).await;
    assert_eq!(body["text"], "");
    let (_, body) = get_json(address, "/v1/docs/notes/a/versions/latest", &auth).await;
    assert_eq!(body, json!({"doc": "notes/a", "version": 3, "text": "Hello world", "latest_version": 3}));
    let (status, body) = get_json(address, "/v1/docs/notes%2Fa/versions/2", &auth).await;
    assert_eq!((status, body["text"].clone()), (200, json!("hello world")));

    // Errors: JSON naming the problem.
    let (status, body) = get_json(address, "/v1/docs/notes/a/versions/4", &auth).await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")), "{body}");
    assert_eq!(body["message"], "document notes/a has no version 4: its latest version is 3");
    let (status, body) = get_json(address, "/v1/docs/notes/a/versions/two", &auth).await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("\"two\""), "{body}");
    let (status, body) = get_json(address, "/v1/docs/notes%20a/versions/1", &auth).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("document id"), "{body}");

    // Authentication as for the upgrade.
    let (status, head, body) = get(address, "/v1/docs/notes/a/versions/1", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("no token"), "{body}");
    let (status, body) =
        get_json(address, "/v1/docs/notes/a/versions/1", &[("authorization", "Bearer not.a.jwt")]).await;
    assert_eq!((status, body["code"].clone()), (401, json!("unauthorized")), "{body}");
    // A valid token without read permission on this document.
    let other = format!("Bearer {}", token("olga", &["notes/b"], &["notes/b"]));
    let (status, body) =
        get_json(address, "/v1/docs/notes/a/checkpoints", &[("authorization", &other)]).await;
    assert_eq!((status, body["code"].clone()), (403, json!("forbidden")), "{body}");
    assert_eq!(body["message"], "user \"olga\" may not read document notes/a");
    // The session cookie, from this server's own page; from another site it is refused.
    let cookie = format!("tandem_token={reader}");
    let own = format!("http://{address}");
    let (status, body) =
        get_json(address, "/v1/docs/notes/a/versions/3", &[("cookie", &cookie), ("origin", &own)]).await;
    assert_eq!((status, body["text"].clone()), (200, json!("Hello world")));
    let evil = [("cookie", cookie.as_str()), ("origin", "https://evil.example")];
    let (status, body) = get_json(address, "/v1/docs/notes/a/versions/3", &evil).await;
    assert_eq!((status, body["code"].clone()), (403, json!("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("evil.example"), "{body}");

    // Checkpoints, oldest version first.
    let (status, body) = get_json(address, "/v1/docs/notes/a/checkpoints", &auth).await;
    assert_eq!((status, body), (200, json!({"checkpoints": []})));
    let doc = DocId::parse("notes/a").unwrap();
    for (name, version) in [("final", 3), ("draft", 1)] {
        let checkpoint = Checkpoint {
            doc: doc.clone(),
            name: name.into(),
            version,
            author: "wendy".into(),
            created_at_ms: 0,
        };
        backend.store.create_checkpoint(&checkpoint).await.unwrap();
    }
    let (status, body) = get_json(address, "/v1/docs/notes/a/checkpoints", &auth).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["checkpoints"].as_array().unwrap();
    let names: Vec<_> =
        listed.iter().map(|c| (c["name"].clone(), c["version"].clone(), c["author"].clone())).collect();
    assert_eq!(
        names,
        [(json!("draft"), json!(1), json!("wendy")), (json!("final"), json!(3), json!("wendy"))]
    );
    assert!(listed.iter().all(|c| c["created_at_ms"].as_i64().unwrap() > 1_600_000_000_000), "{body}");
    backend.stop(running).await;
}
