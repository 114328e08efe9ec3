//! CPU and memory of the processes under test, sampled from `/proc` while a run goes on.
//!
//! A process is named on the command line (`--watch gateway=PID`, or `--watch gateway=listen:PORT`
//! for the process listening on that TCP port of this machine). Every [`SAMPLE_PERIOD`] the watcher
//! reads `/proc/PID/stat` (user + system CPU time, summed over the threads) and `/proc/PID/status`
//! (`VmRSS`); CPU is reported as a percentage of one core over the last period, so a process using
//! both cores of this machine shows 200 %. The load generator watches itself too (`loadgen`), since
//! a starved generator explains odd figures.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time between two samples.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(500);
/// How often the machine's TCP send queues are read again (see [`Sample::send_queue_mib`]).
const SEND_QUEUES_PERIOD: Duration = Duration::from_secs(2);
/// How often the sockets of a watched process are listed again (see [`Sample::send_queue_mib`]).
const SOCKETS_REFRESH: Duration = Duration::from_secs(5);
/// Clock ticks per second of the CPU times in `/proc/PID/stat`: the kernel's `USER_HZ`, which is 100
/// on every architecture this runs on (and which `unsafe_code = "forbid"` keeps us from asking
/// `sysconf` for).
const TICKS_PER_SEC: f64 = 100.0;
/// Most samples kept per process (a day at two per second); later ones thin the series by half.
const MAX_SAMPLES: usize = 172_800;

/// Which process a `--watch` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// The process that listens on this TCP port here.
    Listener(u16),
}

/// `NAME=PID` or `NAME=listen:PORT`; a trailing `+` counts the process's children too (a
/// PostgreSQL server's CPU is in the backends its postmaster forks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub name: String,
    pub target: Target,
    pub with_children: bool,
}

/// A process being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// Its children's CPU and RSS are added to its own.
    pub with_children: bool,
}

impl FromStr for WatchSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, target) =
            s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=PID or NAME=listen:PORT"))?;
        let (target, with_children) = match target.strip_suffix('+') {
            Some(target) => (target, true),
            None => (target, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("{s:?}: the name must be letters, digits, '-', '_' or '.'"));
        }
        let target = match target.strip_prefix("listen:") {
            Some(port) => {
                Target::Listener(port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port"))?)
            }
            None => {
                Target::Pid(target.parse().map_err(|_| format!("{s:?}: {target:?} is not a process id"))?)
            }
        };
        Ok(Self { name: name.to_owned(), target, with_children })
    }
}

impl fmt::Display for WatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Target::Pid(pid) => write!(f, "{}={pid}", self.name)?,
            Target::Listener(port) => write!(f, "{}=listen:{port}", self.name)?,
        }
        if self.with_children {
            write!(f, "+")?;
        }
        Ok(())
    }
}

impl WatchSpec {
    /// The process to watch, looking up a listener in `/proc` if need be.
    pub fn resolve(&self) -> anyhow::Result<Watched> {
        let pid = match self.target {
            Target::Pid(pid) => pid,
            Target::Listener(port) => pid_listening_on(port)?.ok_or_else(|| {
                anyhow::anyhow!("--watch {self}: no process of this machine listens on port {port}")
            })?,
        };
        read(pid, false).map_err(|e| anyhow::anyhow!("--watch {self}: cannot read /proc/{pid}: {e}"))?;
        Ok(Watched { name: self.name.clone(), pid, with_children: self.with_children })
    }
}

/// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy)]
struct TcpSocket {
    local_port: u16,
    listening: bool,
    /// Bytes written by the owner and not yet acknowledged by the peer: what the kernel holds for
    /// a reader that does not read.
    send_queue: u64,
    inode: u64,
}

/// Every TCP socket of this network namespace.
fn tcp_sockets() -> Vec<TcpSocket> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(4), fields.get(9))
            else {
                continue;
            };
            let hex = |s: Option<&str>| s.and_then(|s| u64::from_str_radix(s, 16).ok());
            let (Some(port), Some(send_queue), Ok(inode)) =
                (hex(local.rsplit(':').next()), hex(queues.split(':').next()), inode.parse())
            else {
                continue;
            };
            let Ok(local_port) = u16::try_from(port) else { continue };
            sockets.push(TcpSocket { local_port, listening: *state == "0A", send_queue, inode });
        }
    }
    sockets
}

/// The inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The process listening on TCP `port` (any address, IPv4 or IPv6), found through the socket inode
/// in `/proc/net/tcp*` and the descriptors in `/proc/*/fd`.
pub fn pid_listening_on(port: u16) -> std::io::Result<Option<u32>> {
    let inodes: Vec<u64> =
        tcp_sockets().into_iter().filter(|s| s.listening && s.local_port == port).map(|s| s.inode).collect();
    if inodes.is_empty() {
        return Ok(None);
    }
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if socket_inodes(pid).iter().any(|i| inodes.contains(i)) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// What one read of `/proc` gives.
#[derive(Debug, Clone, Copy)]
struct Reading {
    cpu_ticks: u64,
    rss_kib: u64,
}

/// The process's CPU time and RSS, with those of its children when `with_children`.
fn read(pid: u32, with_children: bool) -> std::io::Result<Reading> {
    let mut reading = read_one(pid)?;
    if with_children {
        for child in children_of(pid) {
            // A child that ended between the listing and the read is simply not counted.
            if let Ok(child) = read_one(child) {
                reading.cpu_ticks += child.cpu_ticks;
                reading.rss_kib += child.rss_kib;
            }
        }
    }
    Ok(reading)
}

/// The processes whose parent is `pid`. A child that ends during the run takes its CPU time with
/// it, so this suits servers whose children live long (database backends on pooled connections).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { return false };
            // Field 4, the parent, is the second after the command name's closing parenthesis.
            stat.rsplit_once(')').and_then(|(_, after)| after.split_whitespace().nth(1)?.parse().ok())
                == Some(pid)
        })
        .collect()
}

fn read_one(pid: u32) -> std::io::Result<Reading> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unreadable {what}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    let after = stat.rsplit_once(')').ok_or_else(|| bad("stat"))?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or_else(|| bad("stat"));
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| bad("status"))?;
    Ok(Reading { cpu_ticks, rss_kib })
}

/// One sample of one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// CPU over the last period, in % of one core.
    pub cpu_pct: f64,
    pub rss_mib: f64,
    /// Bytes waiting in the send queues of the process's TCP connections: memory a slow reader
    /// costs in the kernel, which RSS does not show.
    #[serde(default)]
    pub send_queue_mib: f64,
}

/// A watched process over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub name: String,
    pub pid: u32,
    /// Mean and highest CPU (% of one core) over the measuring window (the whole run if it had none).
    pub cpu_mean_pct: f64,
    pub cpu_max_pct: f64,
    pub rss_first_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_last_mib: f64,
    #[serde(default)]
    pub send_queue_peak_mib: f64,
    /// The process ended (or became unreadable) during the run.
    pub gone: bool,
    pub samples: Vec<Sample>,
}

impl ProcessReport {
    /// Fills the summary figures from the samples; `window` (seconds since the start) bounds the CPU
    /// figures.
    fn summarize(&mut self, window: Option<(f64, f64)>) {
        let Some(first) = self.samples.first() else { return };
        self.rss_first_mib = first.rss_mib;
        self.rss_last_mib = self.samples.last().map_or(0.0, |s| s.rss_mib);
        self.rss_peak_mib = self.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
        self.send_queue_peak_mib = self.samples.iter().map(|s| s.send_queue_mib).fold(0.0, f64::max);
        // The first sample has no CPU figure (there is no earlier reading to compare with).
        let cpu_of = |in_window: &dyn Fn(f64) -> bool| -> Vec<f64> {
            self.samples.iter().skip(1).filter(|s| in_window(s.t)).map(|s| s.cpu_pct).collect()
        };
        let mut cpu = cpu_of(&|t| window.is_none_or(|(from, to)| t >= from && t <= to));
        if cpu.is_empty() {
            cpu = cpu_of(&|_| true);
        }
        self.cpu_mean_pct = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
        self.cpu_max_pct = cpu.iter().copied().fold(0.0, f64::max);
    }
}

/// The latest sample of each watched process, for the progress line.
pub type Latest = Arc<Mutex<Vec<(String, Option<Sample>)>>>;

/// The sampling task.
pub struct Watcher {
    latest: Latest,
    stop: CancellationToken,
    task: JoinHandle<Vec<ProcessReport>>,
}

impl Watcher {
    /// Starts sampling `processes` at once; times are counted from `t0`.
    pub fn start(processes: Vec<Watched>, t0: Instant) -> Self {
        let latest: Latest = Arc::new(Mutex::new(processes.iter().map(|w| (w.name.clone(), None)).collect()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample(processes, t0, Arc::clone(&latest), stop.clone()));
        Self { latest, stop, task }
    }

    pub fn latest(&self) -> Latest {
        Arc::clone(&self.latest)
    }

    /// Stops sampling and returns the series, summarised over `window` (seconds since `t0`).
    pub async fn finish(self, window: Option<(f64, f64)>) -> Vec<ProcessReport> {
        self.stop.cancel();
        let mut reports = self.task.await.unwrap_or_default();
        for report in &mut reports {
            report.summarize(window);
        }
        reports
    }
}

async fn sample(
    processes: Vec<Watched>,
    t0: Instant,
    latest: Latest,
    stop: CancellationToken,
) -> Vec<ProcessReport> {
    let mut reports: Vec<ProcessReport> = processes
        .iter()
        .map(|w| ProcessReport { name: w.name.clone(), pid: w.pid, ..Default::default() })
        .collect();
    let with_children: Vec<bool> = processes.iter().map(|w| w.with_children).collect();
    let mut last: Vec<Option<(Instant, u64)>> = vec![None; processes.len()];
    // Each process's sockets, listed again every SOCKETS_REFRESH: with thousands of connections a
    // listing is thousands of readlink calls.
    let mut sockets: Vec<(Option<Instant>, Vec<u64>)> = vec![(None, Vec::new()); processes.len()];
    // The machine's TCP table, read again every SEND_QUEUES_PERIOD: parsing it costs the load
    // generator as much CPU as a few thousand ops.
    let (mut send_queues, mut queues_read) = (HashMap::<u64, u64>::new(), None::<Instant>);
    let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        if queues_read.is_none_or(|at| now.saturating_duration_since(at) >= SEND_QUEUES_PERIOD) {
            send_queues =
                tcp_sockets().into_iter().filter(|s| !s.listening).map(|s| (s.inode, s.send_queue)).collect();
            queues_read = Some(now);
        }
        let mut shown = latest.lock().unwrap_or_else(|e| e.into_inner());
        for (i, report) in reports.iter_mut().enumerate() {
            if report.gone {
                continue;
            }
            let Ok(reading) = read(report.pid, with_children[i]) else {
                report.gone = true;
                shown[i].1 = None;
                continue;
            };
            let cpu_pct = match last[i] {
                Some((at, ticks)) => {
                    let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
                    reading.cpu_ticks.saturating_sub(ticks) as f64 / TICKS_PER_SEC / secs * 100.0
                }
                None => 0.0,
            };
            last[i] = Some((now, reading.cpu_ticks));
            let sample = Sample {
                t: now.saturating_duration_since(t0).as_secs_f64(),
                cpu_pct,
                rss_mib: reading.rss_kib as f64 / 1024.0,
                send_queue_mib: {
                    let (listed, inodes) = &mut sockets[i];
                    if listed.is_none_or(|at| now.saturating_duration_since(at) >= SOCKETS_REFRESH) {
                        *inodes = socket_inodes(report.pid);
                        *listed = Some(now);
                    }
                    inodes.iter().filter_map(|i| send_queues.get(i)).sum::<u64>() as f64 / (1024.0 * 1024.0)
                },
            };
            if report.samples.len() >= MAX_SAMPLES {
                let kept: Vec<Sample> = report.samples.iter().step_by(2).copied().collect();
                report.samples = kept;
            }
            // The first reading has no CPU figure yet; it still gives the RSS before the load.
            report.samples.push(sample);
            shown[i].1 = Some(sample);
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_specs_parse() {
        assert_eq!(
            "gateway=42".parse::<WatchSpec>().unwrap(),
            WatchSpec { name: "gateway".into(), target: Target::Pid(42), with_children: false }
        );
        assert_eq!(
            "postgres=listen:5432+".parse::<WatchSpec>().unwrap(),
            WatchSpec { name: "postgres".into(), target: Target::Listener(5432), with_children: true }
        );
        assert_eq!(
            "seq-a=listen:50051".parse::<WatchSpec>().unwrap(),
            WatchSpec { name: "seq-a".into(), target: Target::Listener(50051), with_children: false }
        );
        for bad in ["gateway", "=1", "gateway=x", "gateway=listen:99999", "a b=1"] {
            assert!(bad.parse::<WatchSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_can_be_read() {
        let reading = read(std::process::id(), false).unwrap();
        assert!(reading.rss_kib > 0);
    }

    #[test]
    fn a_watch_with_children_adds_their_cpu_and_memory() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id();
        let found = children_of(me).contains(&child.id());
        let (alone, with) = (read(me, false).unwrap(), read(me, true).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "the child {} is listed", child.id());
        assert!(
            with.rss_kib > alone.rss_kib,
            "{} KiB with the child, {} KiB alone",
            with.rss_kib,
            alone.rss_kib
        );
    }

    #[test]
    fn bytes_a_peer_does_not_read_show_in_the_send_queue() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        // Write until the peer's receive buffer and our send buffer are full.
        client.set_nonblocking(true).unwrap();
        let chunk = [0u8; 65536];
        while client.write(&chunk).is_ok() {}
        let port = client.local_addr().unwrap().port();
        let mine = socket_inodes(std::process::id());
        let queued: u64 = tcp_sockets()
            .iter()
            .filter(|s| s.local_port == port && mine.contains(&s.inode))
            .map(|s| s.send_queue)
            .sum();
        assert!(queued > 0, "the client's unacknowledged bytes");
    }

    #[test]
    fn a_listener_is_found_by_its_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port).unwrap(), Some(std::process::id()));
        drop(listener);
        assert_eq!(pid_listening_on(port).unwrap(), None);
    }

    #[test]
    fn summaries_use_the_window_for_cpu() {
        let sample = |t, cpu_pct, rss_mib| Sample { t, cpu_pct, rss_mib, send_queue_mib: 0.0 };
        let mut r = ProcessReport {
            samples: vec![sample(0.0, 0.0, 10.0), sample(1.0, 50.0, 30.0), sample(2.0, 100.0, 20.0)],
            ..Default::default()
        };
        r.summarize(Some((0.5, 1.5)));
        assert_eq!((r.cpu_mean_pct, r.cpu_max_pct), (50.0, 50.0));
        assert_eq!((r.rss_first_mib, r.rss_peak_mib, r.rss_last_mib), (10.0, 30.0, 20.0));
    }
}
