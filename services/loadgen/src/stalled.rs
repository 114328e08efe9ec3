//! The `stalled-readers` preset, for the promise that a slow reader cannot make the gateway's
//! memory grow without bound: one busy document that a few writers type into, plus N raw WebSocket
//! connections that say `hello`, open the document, take its snapshot, and never read again (with
//! a small socket receive buffer, so the backlog piles up at the gateway rather than in this
//! machine's kernel). They still `ping` inside the server's idle timeout: only reading stops.
//!
//! The watched processes' RSS is sampled throughout, and so are the bytes waiting in their TCP send
//! queues (where a backlog sits once the gateway has written it: kernel memory, not RSS); the
//! report gives each one's RSS before the load, and both figures' peak and value when the
//! measuring window ended. At the end every stalled reader
//! is drained to learn what the server did with it: closed it with 4408 `overloaded` (as PROTOCOL.md
//! says a reader that falls behind is), dropped it without a close frame (its close could not be
//! written either), closed it with another code, or kept it open — in which case it must deliver
//! every version up to the document's last, since nothing may be lost without a close.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_client::{DocHandle, DocId};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::converge;
use crate::driver::{self, Session};
use crate::procstat::{ProcessReport, Sample};
use crate::report::{Params, Report};
use crate::typing::spawn_typists;
use crate::wire;
use crate::RunConfig;

/// Close code of `overloaded` (PROTOCOL.md).
pub const CLOSE_OVERLOADED: u16 = 4408;
/// Stalled readers set up at once.
const CONNECT_CONCURRENCY: usize = 32;
/// Limit for one stalled reader's connect, handshake and snapshot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stalled reader pings this often, inside the server's 120 s idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// While draining, a reader silent this long before its last version is counted as behind.
const DRAIN_SILENCE: Duration = Duration::from_secs(5);
/// Receive buffer of a reader while it is drained. The small buffer of the stall would make the
/// drain crawl: a window that can never reach one segment (64 KiB on loopback) is not advertised
/// (silly-window avoidance), and the server then sends only on its persist timer.
const DRAIN_RECV_BUFFER: usize = 1 << 20;
/// Connection failures described in the report; further ones are only counted.
const MAX_ERRORS_SHOWN: usize = 10;
/// Readers drained at once.
const DRAIN_CONCURRENCY: usize = 64;

/// The preset's parameters; validated (see [`crate::cli::StalledArgs::validate`]).
#[derive(Debug, Clone)]
pub struct StalledConfig {
    pub run: RunConfig,
    /// Clients typing into the document.
    pub writers: usize,
    /// Ops per second of each writer.
    pub rate: f64,
    /// Connections that stop reading (N).
    pub readers: usize,
    /// Receive buffer asked for on each reader's socket, in bytes (the kernel may round it up).
    pub recv_buffer: u32,
}

/// What the preset measures besides the common figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StalledReport {
    /// Readers asked for (N).
    pub readers: usize,
    /// Readers set up (connected, opened, stalled); the outcomes below add up to this.
    pub connected: usize,
    /// Readers that could not be set up, and the first reasons.
    pub connect_failed: usize,
    pub connect_errors: Vec<String>,
    /// Closed with 4408 `overloaded`.
    pub closed_overloaded: usize,
    /// Dropped without a close frame (EOF or reset).
    pub dropped: usize,
    /// Closed with another code, by code.
    pub closed_other: BTreeMap<u16, usize>,
    /// Still open at the end, and delivered every version up to the document's last when drained.
    pub caught_up: usize,
    /// Still open at the end, but fell silent before the document's last version when drained:
    /// versions lost without a close, or a server too slow to send them.
    pub behind: usize,
    /// Readers that received an `error` frame with code `overloaded` before the end.
    pub told_overloaded: usize,
    /// Frames the readers took while being drained (what the server had kept for them, plus what
    /// their kernels held).
    pub frames_drained: u64,
    /// RSS of each watched process.
    pub memory: Vec<StalledMemory>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StalledMemory {
    pub name: String,
    /// RSS before the load, its peak, and the last sample of the measuring window.
    pub before_mib: f64,
    pub peak_mib: f64,
    pub final_mib: f64,
    /// The same for the bytes in the process's TCP send queues: where the backlog of a reader
    /// that does not read sits once the process has written it.
    pub send_queue_peak_mib: f64,
    pub send_queue_final_mib: f64,
}

impl StalledReport {
    /// Readers the server disconnected.
    pub fn disconnected(&self) -> usize {
        self.closed_overloaded + self.dropped + self.closed_other.values().sum::<usize>()
    }

    /// Readers the server kept.
    pub fn still_open(&self) -> usize {
        self.caught_up + self.behind
    }

    pub fn table(&self, out: &mut String) {
        let other: Vec<String> = self.closed_other.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(
            out,
            "{:<16}{} of {} disconnected by the server: closed 4408 {}, dropped {}, other closes {}; \
             still open {} (caught up {}, behind {})",
            "stalled readers",
            self.disconnected(),
            self.connected,
            self.closed_overloaded,
            self.dropped,
            if other.is_empty() { "0".to_owned() } else { other.join(", ") },
            self.still_open(),
            self.caught_up,
            self.behind
        );
        let _ = writeln!(
            out,
            "{:<16}set up {} of {} (failed {}), told overloaded {}, frames drained at the end {}",
            "", self.connected, self.readers, self.connect_failed, self.told_overloaded, self.frames_drained
        );
        for e in &self.connect_errors {
            let _ = writeln!(out, "{:<16}{e}", "");
        }
        for m in &self.memory {
            let _ = writeln!(
                out,
                "{:<16}{}: rss {:.1} MiB before, peak {:.1}, final {:.1}; TCP send queues peak {:.1}, final {:.1} MiB",
                "memory",
                m.name,
                m.before_mib,
                m.peak_mib,
                m.final_mib,
                m.send_queue_peak_mib,
                m.send_queue_final_mib
            );
        }
    }
}

fn memory(p: &ProcessReport, window_end: f64) -> StalledMemory {
    let in_run: Vec<&Sample> = p.samples.iter().filter(|s| s.t <= window_end).collect();
    let peak = |f: fn(&Sample) -> f64| in_run.iter().map(|s| f(s)).fold(0.0, f64::max);
    let last = in_run.last();
    StalledMemory {
        name: p.name.clone(),
        before_mib: p.samples.first().map_or(0.0, |s| s.rss_mib),
        peak_mib: peak(|s| s.rss_mib),
        final_mib: last.map_or(0.0, |s| s.rss_mib),
        send_queue_peak_mib: peak(|s| s.send_queue_mib),
        send_queue_final_mib: last.map_or(0.0, |s| s.send_queue_mib),
    }
}

type Socket = WebSocketStream<TcpStream>;

/// A connection that stopped reading.
struct Stalled {
    ws: Socket,
    /// It took an `error` `overloaded` (only possible while draining).
    told_overloaded: bool,
}

/// Connects, says hello, opens `doc`, reads until its snapshot, and stops reading.
async fn stall(
    url: &str,
    token: Option<&str>,
    client: &str,
    doc: &DocId,
    recv_buffer: u32,
) -> anyhow::Result<Stalled> {
    let request = wire::request(url, token)?;
    let uri = request.uri();
    anyhow::ensure!(uri.scheme_str() == Some("ws"), "stalled readers speak plain ws://, not {url}");
    let host =
        uri.host().context("no host in the url")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Before connecting, so the window offered in the handshake is already small.
    socket.set_recv_buffer_size(recv_buffer)?;
    let stream = socket.connect(addr).await?;
    let config = WebSocketConfig::default().read_buffer_size(recv_buffer as usize);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    ws.send(Message::text(json!({"type": "hello", "protocol": 1, "client": client}).to_string())).await?;
    wire::read_until(&mut ws, "welcome").await?;
    ws.send(Message::text(json!({"type": "open", "doc": doc}).to_string())).await?;
    wire::read_until(&mut ws, "snapshot").await?;
    Ok(Stalled { ws, told_overloaded: false })
}

/// Keeps the readers alive (pings, never reads) until `stop`, then hands them back.
async fn hold(mut readers: Vec<Stalled>, stop: CancellationToken) -> Vec<Stalled> {
    let mut ticks = tokio::time::interval(KEEPALIVE);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return readers,
            _ = ticks.tick() => {
                let ping = Message::text(json!({"type": "ping"}).to_string());
                for reader in &mut readers {
                    // A reader the server dropped fails here; the drain tells what happened.
                    let _ = tokio::time::timeout(Duration::from_secs(1), reader.ws.send(ping.clone())).await;
                }
            }
        }
    }
}

/// How a drained reader ended.
enum Outcome {
    Closed(u16),
    Dropped,
    CaughtUp,
    Behind,
}

/// Reads what the server sent until the connection ends or `last` (the document's last version)
/// arrives; returns how it ended and the frames read.
async fn drain(reader: &mut Stalled, last: u64) -> (Outcome, u64) {
    let _ = socket2::SockRef::from(reader.ws.get_ref()).set_recv_buffer_size(DRAIN_RECV_BUFFER);
    let mut frames = 0;
    loop {
        match tokio::time::timeout(DRAIN_SILENCE, reader.ws.next()).await {
            Err(_) => return (Outcome::Behind, frames),
            Ok(None | Some(Err(_))) => return (Outcome::Dropped, frames),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frame.map_or(Outcome::Dropped, |f| Outcome::Closed(u16::from(f.code))), frames)
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                frames += 1;
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                if frame["type"] == "error" && frame["code"] == "overloaded" {
                    reader.told_overloaded = true;
                }
                if frame["type"] == "op" && frame["version"].as_u64() >= Some(last) {
                    return (Outcome::CaughtUp, frames);
                }
            }
            Ok(Some(Ok(_))) => frames += 1,
        }
    }
}

/// Runs the preset. Fails when the writers or the readers cannot be set up.
pub async fn run(config: &StalledConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let mut session = Session::start(run, "stalled-readers", config.writers)?;
    let docs = session.doc_ids(1)?;
    let writers = session.connect_all(&docs, config.writers, true).await?;
    let members = driver::members(&writers, 1);
    let n = writers.len();

    if run.progress {
        eprintln!("connecting {} stalled readers", config.readers);
    }
    let url = &run.urls[0];
    let attempts: Vec<anyhow::Result<Stalled>> = futures::stream::iter(0..config.readers)
        .map(|i| {
            let client = format!("lg-{}-stalled-{i}", session.run_id);
            let (doc, token) = (&docs[0], run.token.as_deref());
            async move {
                tokio::time::timeout(CONNECT_TIMEOUT, stall(url, token, &client, doc, config.recv_buffer))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))
                    .and_then(|r| r)
                    .with_context(|| format!("stalled reader {i} on {url}"))
                    .map_err(driver::explain_refusal)
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut report = StalledReport { readers: config.readers, ..StalledReport::default() };
    let mut readers = Vec::with_capacity(config.readers);
    for attempt in attempts {
        match attempt {
            Ok(reader) => readers.push(reader),
            Err(e) if report.connect_errors.len() < MAX_ERRORS_SHOWN => {
                report.connect_failed += 1;
                report.connect_errors.push(format!("{e:#}"));
            }
            Err(_) => report.connect_failed += 1,
        }
    }
    report.connected = readers.len();
    if readers.is_empty() {
        anyhow::bail!("no stalled reader could be set up: {}", report.connect_errors.join("; "));
    }
    let stop_holding = CancellationToken::new();
    let holder = tokio::spawn(hold(readers, stop_holding.clone()));

    let schedule = session.begin(run.warmup, run.duration);
    let stop = CancellationToken::new();
    let (editors, mut done) =
        spawn_typists(writers, config.rate, run.seed, schedule, &session.records(), &stop);
    driver::typing_done(&mut done, n, schedule.measure_end).await;
    let window_end = session.elapsed_secs();
    let convergence =
        converge::check(&run.urls, run.token.as_deref(), &docs, &members, run.settle_timeout).await;
    stop.cancel();
    let edits = driver::join_editors(editors).await?;
    // Converged: every writer is at the document's last version.
    let last = members[0].iter().map(DocHandle::version).max().unwrap_or(0);

    stop_holding.cancel();
    let mut readers = holder.await.context("the task holding the stalled readers panicked")?;
    let outcomes: Vec<(Outcome, u64)> = futures::stream::iter(readers.iter_mut().map(|r| drain(r, last)))
        .buffer_unordered(DRAIN_CONCURRENCY)
        .collect()
        .await;
    for (outcome, frames) in outcomes {
        report.frames_drained += frames;
        match outcome {
            Outcome::Closed(CLOSE_OVERLOADED) => report.closed_overloaded += 1,
            Outcome::Closed(code) => *report.closed_other.entry(code).or_default() += 1,
            Outcome::Dropped => report.dropped += 1,
            Outcome::CaughtUp => report.caught_up += 1,
            Outcome::Behind => report.behind += 1,
        }
    }
    report.told_overloaded = readers.iter().filter(|r| r.told_overloaded).count();
    drop(readers);

    let params = Params {
        docs: 1,
        clients_per_doc: config.writers,
        rate_per_client: config.rate,
        duration_secs: run.duration.as_secs_f64(),
        warmup_secs: run.warmup.as_secs_f64(),
    };
    let mut out = session.finish(params, run.duration, edits, convergence).await?;
    report.memory = out.processes.iter().map(|p| memory(p, window_end)).collect();
    out.workload = format!(
        "1 doc × {} writers @ {} ops/s, {} stalled readers (receive buffer {} bytes)",
        config.writers, config.rate, config.readers, config.recv_buffer
    );
    out.stalled_readers = Some(report);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ends_with_the_measuring_window() {
        let sample = |t, rss_mib| Sample { t, cpu_pct: 0.0, rss_mib, send_queue_mib: 0.0 };
        let p = ProcessReport {
            name: "gateway".into(),
            samples: vec![sample(0.0, 10.0), sample(1.0, 50.0), sample(2.0, 40.0), sample(3.0, 80.0)],
            ..ProcessReport::default()
        };
        let m = memory(&p, 2.5);
        assert_eq!((m.before_mib, m.peak_mib, m.final_mib), (10.0, 50.0, 40.0));
    }
}
