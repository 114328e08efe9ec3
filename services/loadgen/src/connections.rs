//! The `connections` preset: N idle connections (up to [`MAX_CONNECTIONS`]), each subscribed to one
//! of D documents, held for the measuring time. Reports how fast they connect (connect + `hello` +
//! `open` until the snapshot), how many fail, how many are still up at the end, and what they cost
//! the watched processes in memory (RSS before, after the ramp, per connection).
//!
//! Each connection is a full [`tandem_client::Client`] (which pings inside the server's idle
//! timeout), so the convergence check still applies: every client must end at the server's version
//! and text of its document.

use std::fmt::Write as _;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::converge;
use crate::driver::{self, Session};
use crate::procstat::ProcessReport;
use crate::report::{Edits, Latency, Params, Report};
use crate::RunConfig;

/// Most connections in one run; each costs a file descriptor here and one at the gateway.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Descriptors kept free for everything else the load generator opens.
const SPARE_FDS: u64 = 256;
/// Connection failures described in the report; further ones are only counted.
const MAX_FAILURES_SHOWN: usize = 10;

/// The preset's parameters; validated (see [`crate::cli::ConnectionsArgs::validate`]).
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    pub run: RunConfig,
    /// Connections (N).
    pub connections: usize,
    /// Documents they are spread over (D).
    pub docs: usize,
    /// Connections being set up at once.
    pub concurrency: usize,
}

/// What the preset measures besides the common figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectReport {
    pub target: usize,
    pub connected: usize,
    pub failed: usize,
    /// The first failures, in words.
    pub failures: Vec<String>,
    /// From the first attempt to the last connection set up.
    pub ramp_secs: f64,
    /// Connections set up per second over the ramp.
    pub rate_per_sec: f64,
    /// Connect + handshake + open until the snapshot, per connection.
    pub latency_ms: Latency,
    /// Clients connected when the hold ended.
    pub still_connected: usize,
    /// The file-descriptor limit of the load generator (soft, after raising it to the hard one).
    pub fd_limit: u64,
    /// What the connections cost each watched process.
    pub memory: Vec<ConnectionMemory>,
}

/// RSS of a watched process around the ramp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionMemory {
    pub name: String,
    pub before_mib: f64,
    pub after_ramp_mib: f64,
    pub peak_mib: f64,
    /// (after the ramp − before) / connections.
    pub per_connection_kib: f64,
}

impl ConnectReport {
    /// Every connection was set up and stayed up.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.connected == self.target && self.still_connected == self.connected
    }

    pub fn table(&self, out: &mut String) {
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "{:<16}{} of {} in {:.1} s ({:.0}/s), failed {}, still up at the end {}  (fd limit {})",
            "connections",
            self.connected,
            self.target,
            self.ramp_secs,
            self.rate_per_sec,
            self.failed,
            self.still_connected,
            self.fd_limit
        );
        let _ = writeln!(
            out,
            "{:<16}p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms",
            "connect time", l.p50, l.p90, l.p99, l.max
        );
        for failure in &self.failures {
            let _ = writeln!(out, "{:<16}{failure}", "");
        }
        for m in &self.memory {
            let _ = writeln!(
                out,
                "{:<16}{}: rss {:.1} → {:.1} MiB after the ramp (peak {:.1}), {:.1} KiB per connection",
                "memory", m.name, m.before_mib, m.after_ramp_mib, m.peak_mib, m.per_connection_kib
            );
        }
    }
}

/// RSS around the ramp, from a watched process's samples (`ramp_end` in seconds since the start).
fn memory(p: &ProcessReport, ramp_end: f64, connected: usize) -> ConnectionMemory {
    let before = p.samples.first().map_or(0.0, |s| s.rss_mib);
    // The first sample at or after the ramp's end: by then every connection is in.
    let after = p.samples.iter().find(|s| s.t >= ramp_end).or(p.samples.last()).map_or(0.0, |s| s.rss_mib);
    ConnectionMemory {
        name: p.name.clone(),
        before_mib: before,
        after_ramp_mib: after,
        peak_mib: p.rss_peak_mib,
        per_connection_kib: (after - before) * 1024.0 / connected.max(1) as f64,
    }
}

/// Runs the preset. Fails only when the load cannot be set up at all (the descriptor limit is too
/// low for N); connections that fail are counted in the report.
pub async fn run(config: &ConnectionsConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let (fd_limit, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let needed = config.connections as u64 + SPARE_FDS;
    if fd_limit < needed {
        anyhow::bail!(
            "{} connections need about {needed} file descriptors, the limit is {fd_limit}: raise the hard \
             limit (ulimit -Hn) or connect fewer",
            config.connections
        );
    }
    let mut session = Session::start(run, "connections", 1)?;
    let docs = session.doc_ids(config.docs.min(config.connections))?;
    let per_doc = config.connections.div_ceil(docs.len());

    let t0 = Instant::now();
    let mut latency = crate::recorder::histogram();
    let mut report = ConnectReport { target: config.connections, fd_limit, ..ConnectReport::default() };
    let mut sims = Vec::with_capacity(config.connections);
    {
        let mut connects = std::pin::pin!(session
            .connect_each(&docs, per_doc, false, config.concurrency)
            .take(config.connections));
        while let Some((sim, took)) = connects.next().await {
            match sim {
                Ok(sim) => {
                    latency.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                    sims.push(sim);
                }
                Err(e) => {
                    report.failed += 1;
                    if report.failures.len() < MAX_FAILURES_SHOWN {
                        report.failures.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    let ramp = t0.elapsed();
    let ramp_end = session.elapsed_secs();
    report.connected = sims.len();
    report.ramp_secs = ramp.as_secs_f64();
    report.rate_per_sec = sims.len() as f64 / ramp.as_secs_f64().max(1e-9);
    report.latency_ms = Latency::of(&latency);

    let schedule = session.begin(run.warmup, run.duration);
    tokio::time::sleep_until(schedule.measure_end.into()).await;
    report.still_connected = sims.iter().filter(|s| s.client.is_connected()).count();
    let members = driver::members(&sims, docs.len());
    let convergence =
        converge::check(&run.urls, run.token.as_deref(), &docs, &members, run.settle_timeout).await;

    let params = Params {
        docs: docs.len(),
        clients_per_doc: per_doc,
        rate_per_client: 0.0,
        duration_secs: run.duration.as_secs_f64(),
        warmup_secs: run.warmup.as_secs_f64(),
    };
    let mut out = session.finish(params, run.duration, Edits::default(), convergence).await?;
    report.memory = out.processes.iter().map(|p| memory(p, ramp_end, report.connected)).collect();
    out.workload = format!("{} idle connections on {} docs", config.connections, docs.len());
    out.connect = Some(report);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::Sample;

    #[test]
    fn memory_per_connection_is_taken_after_the_ramp() {
        let sample = |t, rss_mib| Sample { t, cpu_pct: 0.0, rss_mib, send_queue_mib: 0.0 };
        let p = ProcessReport {
            name: "gateway".into(),
            rss_peak_mib: 30.0,
            samples: vec![sample(0.0, 10.0), sample(0.5, 15.0), sample(1.0, 20.0), sample(1.5, 30.0)],
            ..ProcessReport::default()
        };
        let m = memory(&p, 0.9, 1024);
        assert_eq!((m.before_mib, m.after_ramp_mib, m.peak_mib), (10.0, 20.0, 30.0));
        assert_eq!(m.per_connection_kib, 10.0);
    }

    #[test]
    fn only_a_full_set_that_stayed_up_is_clean() {
        let full = ConnectReport { target: 3, connected: 3, still_connected: 3, ..ConnectReport::default() };
        assert!(full.is_clean());
        assert!(!ConnectReport { failed: 1, ..full.clone() }.is_clean());
        assert!(!ConnectReport { still_connected: 2, ..full }.is_clean());
    }
}
