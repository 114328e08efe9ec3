//! Offline edits kept across a restart ([`ClientOptions::state_dir`]) against a REAL single-process
//! server (the `tandem-standalone` binary, built first: `cargo build -p tandem-standalone`, or set
//! `TANDEM_BIN`), reached through a TCP proxy this test controls: an op reaches the server but its
//! ack is held and then lost with the connection, more edits are made offline, the process stops,
//! and the next one on the same folder must get every edit applied exactly once.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_client::{Client, ClientOptions, DocHandle, DocId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const WAIT: Duration = Duration::from_secs(20);

/// `tandem-standalone` on a free port with a data folder of its own; killed when dropped.
struct Server {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let program = std::env::var_os("TANDEM_BIN").map(PathBuf::from).unwrap_or_else(|| {
            // target/<profile>/deps/<this test> → target/<profile>/tandem-standalone
            let exe = std::env::current_exe().expect("the test binary has a path");
            let dir =
                exe.parent().and_then(|d| d.parent()).expect("test binaries live in target/<profile>/deps");
            dir.join("tandem-standalone")
        });
        assert!(
            program.exists(),
            "{} is missing: run `cargo build -p tandem-standalone` first (make test does), or set TANDEM_BIN",
            program.display()
        );
        let data = tempfile::tempdir().expect("a data folder");
        let mut child = Command::new(&program)
            .args(["--listen", "127.0.0.1:0", "--insecure-no-auth", "--data-dir"])
            .arg(data.path().join("store"))
            .env("TANDEM_LOG", std::env::var("TANDEM_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = Server { child, address: String::new(), _data: data };
        let (tx, rx) = std::sync::mpsc::channel();
        // Drained for the server's whole life: a closed pipe would make its next print fail.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    let _ = tx.send(rest.trim_end_matches('/').to_owned());
                }
            }
        });
        server.address = rx.recv_timeout(Duration::from_secs(60)).expect("the server says where it listens");
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to the server that the test turns into a bad network: `hold_acks` stops every byte
/// from the server (the client's ops still go through), `cut` drops every connection and refuses new
/// ones, `restore` passes again.
struct Proxy {
    address: String,
    hold_down: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("bound").to_string();
        let hold_down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (hold, refuse, conns) = (Arc::clone(&hold_down), Arc::clone(&cut), Arc::clone(&connections));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close at once
                }
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, None));
                let down = tokio::spawn(pipe(server_read, client_write, Some(Arc::clone(&hold))));
                conns.lock().unwrap().extend([up.abort_handle(), down.abort_handle()]);
            }
        })
        .abort_handle();
        Proxy { address, hold_down, cut, connections, accept }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.address)
    }

    fn hold_down(&self, hold: bool) {
        self.hold_down.store(hold, Ordering::SeqCst);
    }

    /// Every connection is dropped, with whatever the proxy held; new ones are refused.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.hold_down(false);
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies bytes one way; while `hold` is set, what was read waits in the proxy.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hold: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while hold.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn eventually(what: impl Fn() -> String, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {}", what());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn options(dir: &std::path::Path) -> ClientOptions {
    ClientOptions {
        state_dir: Some(dir.to_owned()),
        reconnect_min_delay: Duration::from_millis(20),
        reconnect_max_delay: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_whose_ack_was_lost_and_edits_made_offline_are_applied_exactly_once_after_a_restart() {
    let server = Server::start();
    let proxy = Proxy::start(server.address.clone()).await;
    let dir = tempfile::tempdir().expect("a state folder");
    let doc = DocId::parse(&format!("offline-{}", std::process::id())).unwrap();
    let reader = Client::connect(&format!("ws://{}/v1/ws", server.address), ClientOptions::default())
        .await
        .expect("the reader connects directly");
    let seen: DocHandle = reader.open(&doc).await.unwrap();

    let page =
        Client::connect(&proxy.ws_url(), options(dir.path())).await.expect("connects through the proxy");
    let id = page.client_id().clone();
    let h = page.open(&doc).await.unwrap();
    h.insert(0, "one ").unwrap();
    h.wait_synced(WAIT).await.unwrap();
    // The next op reaches the log, but its ack is held in the proxy and then lost with the network.
    proxy.hold_down(true);
    h.insert(4, "two ").unwrap();
    eventually(|| format!("reader has {:?}", seen.text()), || seen.text() == "one two ").await;
    proxy.cut();
    eventually(|| "the page to notice".into(), || !page.is_connected()).await;
    h.insert(8, "three ").unwrap();
    h.insert(14, "xyz").unwrap();
    assert_eq!(h.pending_edits(), 3);
    let typed = h.text();
    drop((h, page)); // the process stops while offline

    proxy.restore();
    let page = Client::connect(&proxy.ws_url(), options(dir.path())).await.expect("reconnects");
    assert_eq!(page.client_id(), &id, "the stored session is taken over");
    proxy.hold_down(true); // so that the state read from the folder can be seen before any answer
    let h = page.open(&doc).await.unwrap();
    assert_eq!((h.text(), h.version(), h.pending_edits()), (typed.clone(), 1, 3));
    proxy.hold_down(false);
    h.wait_synced(WAIT).await.unwrap();
    eventually(|| format!("reader {:?}, page {typed:?}", seen.text()), || seen.text() == typed).await;
    assert_eq!(seen.text().matches("two ").count(), 1, "the op whose ack was lost is applied once");
    assert_eq!(h.version(), 3, "three commits: one, two, and the buffer of the offline edits");
    assert_eq!(seen.version(), 3);
    assert!(page.errors().is_empty(), "{:?}", page.errors());
    assert!(reader.errors().is_empty(), "{:?}", reader.errors());
}
