//! A TCP proxy on loopback that a test can turn into a bad network: it forwards connections to an
//! upstream address, and on demand drops them all (and refuses new ones at once) or stalls them
//! (bytes stop moving both ways, connections stay open), until it is told to pass again.
//!
//! ```no_run
//! # use tandem_integration_tests::proxy::{LoopbackProxy, ProxyMode};
//! let proxy = LoopbackProxy::start("127.0.0.1:5432");
//! let url = format!("postgres://postgres@{}/tandem", proxy.address());
//! proxy.set_mode(ProxyMode::Stall);
//! proxy.set_mode(ProxyMode::Pass);
//! ```
//!
//! Plain threads (two per connection), no runtime: it works under blocking test code and async
//! code alike. Everything stops when it is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Pass,
    /// Closes every open connection (both sides see the peer go away) and every new one at once.
    Drop,
    /// Holds every byte: open connections hang, new ones are accepted but not connected upstream.
    Stall,
}

impl ProxyMode {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Drop,
            2 => Self::Stall,
            _ => Self::Pass,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Drop => 1,
            Self::Stall => 2,
        }
    }
}

/// How often waiting threads look at the mode and the stop flag.
const POLL: Duration = Duration::from_millis(20);

struct Shared {
    upstream: String,
    mode: AtomicU8,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Both sockets of every forwarded connection, to cut them on [`ProxyMode::Drop`].
    connections: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    /// Connections accepted since the start (for the report).
    accepted: AtomicU64,
}

impl Shared {
    fn mode(&self) -> ProxyMode {
        ProxyMode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    fn cut_all(&self) {
        let connections = std::mem::take(&mut *self.connections.lock().expect("proxy lock"));
        for (_, client, server) in connections {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    fn forget(&self, id: u64) {
        let mut connections = self.connections.lock().expect("proxy lock");
        if let Some(i) = connections.iter().position(|(c, _, _)| *c == id) {
            let (_, client, server) = connections.swap_remove(i);
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; stopped (every connection cut) when dropped.
pub struct LoopbackProxy {
    address: String,
    shared: Arc<Shared>,
}

impl LoopbackProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`HOST:PORT`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a loopback port");
        let address = listener.local_addr().expect("the proxy's address").to_string();
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            mode: AtomicU8::new(ProxyMode::Pass.to_u8()),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || accept_loop(&listener, &accept_shared));
        Self { address, shared }
    }

    /// `127.0.0.1:PORT` to connect to instead of the upstream.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Switches the mode; [`ProxyMode::Drop`] cuts every open connection at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
        if mode == ProxyMode::Drop {
            self.shared.cut_all();
        }
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, &shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One accepted connection: waits out a stall, then connects upstream and pumps both ways.
fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match shared.mode() {
            ProxyMode::Pass => break,
            ProxyMode::Drop => return, // dropping `client` closes it
            ProxyMode::Stall => std::thread::sleep(POLL),
        }
    }
    let Ok(upstream_address) = shared.upstream.parse() else { return };
    let Ok(server) = TcpStream::connect_timeout(&upstream_address, Duration::from_secs(5)) else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
    let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else { return };
    shared.connections.lock().expect("proxy lock").push((id, c1, s1));
    // A mode switched to Drop between the check above and the registration would miss this one.
    if shared.mode() == ProxyMode::Drop {
        shared.forget(id);
        return;
    }
    let back = shared.clone();
    let upstream_to_client = std::thread::spawn(move || pump(s2, c2, &back, id));
    pump(client, server, shared, id);
    let _ = upstream_to_client.join();
}

/// Copies `from` → `to` until either side ends, the proxy drops, or stops; holds the bytes while
/// stalled. Ending one direction ends the connection.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 16 * 1024];
    'connection: loop {
        if shared.stop.load(Ordering::SeqCst) || shared.mode() == ProxyMode::Drop {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                break 'connection;
            }
            match shared.mode() {
                ProxyMode::Pass => break,
                ProxyMode::Drop => break 'connection,
                ProxyMode::Stall => std::thread::sleep(POLL),
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    shared.forget(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        address
    }

    fn roundtrip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut got = vec![0u8; text.len()];
        stream.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_stalls_and_drops() {
        let proxy = LoopbackProxy::start(&echo_server());
        let mut conn = TcpStream::connect(proxy.address()).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(roundtrip(&mut conn, b"hello").unwrap(), b"hello");

        proxy.set_mode(ProxyMode::Stall);
        assert!(roundtrip(&mut conn, b"stalled").is_err(), "nothing comes back while stalled");
        proxy.set_mode(ProxyMode::Pass);
        let mut late = vec![0u8; 7];
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.read_exact(&mut late).unwrap();
        assert_eq!(late, b"stalled", "held bytes flow once the stall ends");

        proxy.set_mode(ProxyMode::Drop);
        let mut byte = [0u8; 1];
        assert!(matches!(conn.read(&mut byte), Ok(0) | Err(_)), "a dropped connection ends");
        proxy.set_mode(ProxyMode::Pass);
        let mut again = TcpStream::connect(proxy.address()).unwrap();
        again.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(roundtrip(&mut again, b"back").unwrap(), b"back");
    }
}
