//! Apache Kafka for the tests, from `deploy/kafka.sh`.
//!
//! One JVM per test would not fit two cores, so tests share one broker where they can:
//! [`Broker::shared`] is the broker `make test` starts for the whole run (`deploy/kafka.sh with`,
//! its address in `TANDEM_TEST_BROKERS`), and each test makes its topics and consumer groups unique
//! ([`Namespace`]). A test that kills or restarts the broker starts its own with [`Broker::start`].
//! Run outside `make test` (a bare `cargo test`), a shared broker is started for the test alone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

/// A Kafka broker a test talks to.
pub struct Broker {
    address: String,
    /// The broker process when this test owns it; `None` for the run's shared broker.
    own: Option<OwnBroker>,
}

struct OwnBroker {
    child: Option<Child>,
    port: u16,
    controller_port: u16,
    /// Data, configuration and log: kept across [`Broker::restart`], removed on drop.
    dir: tempfile::TempDir,
}

/// How long a broker may take to answer its first metadata request (a cold JVM on a busy
/// two-core machine takes several seconds).
const START_TIMEOUT: Duration = Duration::from_secs(90);

impl Broker {
    /// The broker of the test run (`TANDEM_TEST_BROKERS`), or one of this test's own when the
    /// tests run without `make test`.
    pub fn shared() -> Self {
        match std::env::var("TANDEM_TEST_BROKERS") {
            Ok(address) if !address.is_empty() => Self { address, own: None },
            _ => Self::start(),
        }
    }

    /// A broker of this test's own, on free loopback ports and a fresh data folder; killed on drop.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("tandem-kafka-").tempdir().expect("a broker folder");
        let own = OwnBroker { child: None, port: free_port(), controller_port: free_port(), dir };
        let mut broker = Self { address: format!("127.0.0.1:{}", own.port), own: Some(own) };
        broker.restart();
        broker
    }

    /// `127.0.0.1:PORT`, for `--brokers`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    fn own(&mut self) -> &mut OwnBroker {
        self.own.as_mut().expect("only a broker started with Broker::start can be killed or restarted")
    }

    /// SIGKILL: the broker dies mid-request, as in a crash; its data folder stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.own().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker (again) on the same ports and data folder and waits until it answers a
    /// metadata request; after [`kill`](Self::kill), that is a broker restart after a crash.
    pub fn restart(&mut self) {
        self.kill();
        let own = self.own();
        let script = crate::manifest_dir().join("../deploy/kafka.sh");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(own.dir.path().join("broker.log"))
            .expect("the broker's log file");
        let child = Command::new("bash")
            .arg(&script)
            .arg("run")
            .arg(own.dir.path())
            .args(["--port", &own.port.to_string(), "--controller-port", &own.controller_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second handle of the log"))
            .stderr(log)
            // `run` execs the JVM: this child is the broker itself, so kill() kills the broker.
            .spawn()
            .expect("run deploy/kafka.sh");
        own.child = Some(child);
        let port = own.port;
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_metadata(port) {
            if let Some(status) = self.own().child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the Kafka broker exited at start ({status}); its log:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not answer within 90 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of the broker's log (own brokers only).
    pub fn log_tail(&self) -> String {
        let Some(own) = &self.own else { return String::new() };
        let log = std::fs::read_to_string(own.dir.path().join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.own.is_some() {
            self.kill();
        }
    }
}

/// Whether a broker on 127.0.0.1:`port` answers a Metadata request (v4, all topics) listing at least
/// one broker: it has registered with its controller and serves clients. The same check as
/// `deploy/kafka.sh ready`.
pub fn answers_metadata(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // size 20 | api key 3 | version 4 | correlation id 1 | client id "probe" | topics null | no auto-create
    let request = b"\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x01\x00\x05probe\xff\xff\xff\xff\x00";
    let mut header = [0u8; 16];
    if stream.write_all(request).is_err() || stream.read_exact(&mut header).is_err() {
        return false;
    }
    let correlation = i32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    let brokers = i32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
    correlation == 1 && brokers >= 1
}

/// Names of topics and consumer groups unique to one test, so tests can share a broker.
#[derive(Debug, Clone)]
pub struct Namespace(String);

impl Namespace {
    /// `NAME-xxxxxxxx`: the test's name (for reading broker logs) and a random part (a test run
    /// twice on one broker starts empty).
    pub fn new(name: &str) -> Self {
        Self(format!("{name}-{:08x}", rand::random::<u32>()))
    }

    /// For `--kafka-namespace`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
