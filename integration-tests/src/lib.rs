//! Harness for tests that run real Tandem processes on real sockets.
//!
//! [`process::ServiceProcess`] is the building block: a service started, awaited until it prints
//! its address, and always killed when dropped.
//!
//! [`Standalone`] starts the `tandem-standalone` binary on a free port with its own data folder, can
//! SIGKILL and restart it on the same port and data, and always kills it when dropped, also when a
//! test fails. [`RawConn`] speaks the protocol frame by frame, for tests of exact wire behaviour.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// This crate's folder (`integration-tests/`) in the clone the test runs in. Found at run time from
/// `CARGO_MANIFEST_DIR`, which cargo and nextest set for every test process to the folder of the
/// package whose test it is (tests of other packages use this library too), by walking up to the
/// workspace root (the folder with `Cargo.lock`). The compile-time path is only a fallback: the target
/// folder is shared between clones, and cargo reuses an unchanged test binary built in another one.
pub fn manifest_dir() -> std::path::PathBuf {
    let start = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    match start.ancestors().find(|dir| dir.join("Cargo.lock").is_file()) {
        Some(root) => root.join("integration-tests"),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

pub mod auth;
pub mod chaos;
pub mod cluster;
pub mod jaeger;
pub mod kafka;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod typists;

pub use process::{binary, ServiceProcess, ServiceSpec};

/// The seed of a randomized test: `TANDEM_SEED` to replay one, else a random one. Printed either way.
pub fn seed() -> u64 {
    let seed = match std::env::var("TANDEM_SEED") {
        Ok(s) => s.parse().expect("TANDEM_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("seed {seed} (replay with TANDEM_SEED={seed})");
    seed
}

/// A plain HTTP/1.1 GET to `address` (`HOST:PORT`): the status and the body; `None` when the
/// server does not answer.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(address).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    Some((status, if chunked { unchunk(body)? } else { body.to_owned() }))
}

/// The body of a `Transfer-Encoding: chunked` response.
fn unchunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// How long a test waits for one expected frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Standalone`].
#[derive(Debug, Default)]
pub struct StandaloneBuilder {
    args: Vec<String>,
    /// `--jwt-key-file` of the server; without one it runs with `--insecure-no-auth`.
    jwt_key_file: Option<std::path::PathBuf>,
    env: Vec<(String, String)>,
    log: Option<std::path::PathBuf>,
    /// The data folder to use instead of a fresh one.
    data_dir: Option<std::path::PathBuf>,
}

impl StandaloneBuilder {
    /// Adds a command-line flag, e.g. `.arg("--max-op-chars").arg("10")`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Requires HS256 tokens signed with the secret in `file` (see [`auth::DevKeys`]).
    pub fn jwt_key_file(mut self, file: &std::path::Path) -> Self {
        self.jwt_key_file = Some(file.to_owned());
        self
    }

    /// Sets an environment variable of the server, e.g. `TANDEM_LOG`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Writes the server's log (stderr) to `file` (see [`Standalone::log`]).
    pub fn log_to(mut self, file: &std::path::Path) -> Self {
        self.log = Some(file.to_owned());
        self
    }

    /// Uses `dir` as the data folder, e.g. another server's [`Standalone::data_dir`].
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub fn start(self) -> Standalone {
        let data = tempfile::tempdir().expect("a temporary data folder");
        let data_dir = self.data_dir.unwrap_or_else(|| data.path().join("store"));
        let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into()];
        args.push(data_dir.display().to_string());
        match &self.jwt_key_file {
            Some(file) => args.extend(["--jwt-key-file".into(), file.display().to_string()]),
            None => args.push("--insecure-no-auth".into()),
        }
        args.extend(self.args);
        let spec = ServiceSpec {
            program: binary("tandem-standalone", "TANDEM_BIN"),
            args,
            env: self.env,
            ready_marker: "listening on http://".into(),
            log: self.log,
        };
        let mut process = ServiceProcess::start(spec);
        // Restarts keep the port, so clients reconnect to the same URL.
        let address = process.address().to_owned();
        process.set_arg("--listen", &address);
        Standalone { process, data_dir, _data: data }
    }
}

/// A running single-process Tandem with its own data folder (removed when dropped).
pub struct Standalone {
    process: ServiceProcess,
    data_dir: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Standalone {
    pub fn builder() -> StandaloneBuilder {
        StandaloneBuilder::default()
    }

    pub fn start() -> Self {
        Self::builder().start()
    }

    /// `ws://127.0.0.1:PORT/v1/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.process.address())
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Everything the server logged so far (with [`StandaloneBuilder::log_to`]).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The operating-system process id (to read its memory use from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGTERM, then waits for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        self.process.terminate()
    }

    /// SIGTERM without waiting: the test watches what the server does while it drains and stops.
    pub fn request_stop(&self) {
        self.process.request_stop();
    }

    /// Waits up to `limit` for the server to exit on its own: whether it exited successfully, `None`
    /// while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        self.process.wait_exit(limit)
    }

    /// The server's data folder (`--data-dir`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Starts again on the same port and data folder.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket speaking the protocol frame by frame.
pub struct RawConn {
    ws: Socket,
    /// The close code the server sent, once it closed.
    close_code: Option<u16>,
}

/// An upgrade the server refused: its HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl RawConn {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket upgrade");
        Self { ws, close_code: None }
    }

    /// Upgrades with extra request headers (a token, a cookie, an `Origin`…); a refusal returns the
    /// server's status and message instead of failing the test.
    pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<Self, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Self { ws, close_code: None }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .trim()
                    .to_owned(),
            }),
            Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
        }
    }

    /// Connects with `Authorization: Bearer <token>` and completes the handshake as `client`.
    pub async fn hello_with_token(url: &str, client: &str, token: &str) -> Self {
        let bearer = format!("Bearer {token}");
        let mut conn =
            Self::upgrade(url, &[("authorization", &bearer)]).await.expect("the token is accepted");
        conn.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
        let welcome = conn.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        conn
    }

    /// Connects and completes the handshake as `client`.
    pub async fn hello(url: &str, client: &str) -> Self {
        let mut conn = Self::connect(url).await;
        conn.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
        let welcome = conn.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        conn
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_frame(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The next JSON frame; fails the test on a close or after [`FRAME_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("the connection is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame, or `None` once the connection has ended (see [`RawConn::close_code`]).
    pub async fn recv_any(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The close code the server sent, if it has closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The next frame of the given type, skipping none: fails if another type comes first.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "expected {kind}, got {message}");
        message
    }

    /// The next `error`, asserting its code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let message = self.expect("error").await;
        assert_eq!(message["code"], code, "{message}");
        message
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(FRAME_TIMEOUT, self.ws.next()).await.expect("close within the timeout")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Ping → pong: proves the connection still works.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Ping → pong on a connection that may also be receiving `op` frames of an open document:
    /// those are skipped, anything else fails.
    pub async fn assert_alive_among_ops(&mut self) {
        self.send(json!({"type": "ping"})).await;
        loop {
            let message = self.recv().await;
            match message["type"].as_str() {
                Some("pong") => return,
                Some("op") => continue,
                _ => panic!("expected pong (or op), got {message}"),
            }
        }
    }

    /// Asserts that no frame arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected no frame, got {message:?}");
        }
    }
}
