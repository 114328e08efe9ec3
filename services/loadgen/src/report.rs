//! The report of a run: built from what the recorder, the typists and the clients counted; printed as
//! a table for people and written as JSON for scripts; and the medians of several runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tandem_client::{Client, ErrorSource};

use crate::api::ApiReport;
use crate::connections::ConnectReport;
use crate::converge::Convergence;
use crate::history::HistoryReport;
use crate::monitor::{Observed, Second};
use crate::procstat::ProcessReport;
use crate::recorder::Matching;
use crate::replay::ReplayReport;
use crate::stalled::StalledReport;
use crate::RunConfig;

/// Everything one run measured. The JSON file is this struct.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub preset: String,
    pub label: Option<String>,
    /// Names the run's documents (`loadgen/RUN/…`) and clients (`lg-RUN-…`).
    pub run_id: String,
    pub seed: u64,
    pub urls: Vec<String>,
    pub loadgen_version: String,
    pub params: Params,
    /// The load in words, e.g. `100 docs × 5 clients @ 5 ops/s`.
    #[serde(default)]
    pub workload: String,
    /// The measuring window, in seconds since the run started (its first connection).
    #[serde(default)]
    pub window: Window,
    /// Per second of the measuring window.
    pub rates: Rates,
    pub edits: Edits,
    pub ack_latency_ms: Latency,
    pub remote_latency_ms: Latency,
    pub matching: Matching,
    pub errors: Errors,
    pub connections: Connections,
    pub convergence: Convergence,
    /// The watched processes (the load generator first), sampled every 500 ms.
    #[serde(default)]
    pub processes: Vec<ProcessReport>,
    /// The run second by second, warm-up and settling included.
    #[serde(default)]
    pub timeline: Vec<Second>,
    /// The measured latency distributions, for charts.
    #[serde(default)]
    pub histograms: Histograms,
    /// What only the `connections` preset measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectReport>,
    /// What only the `replay` preset checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayReport>,
    /// What only the `stalled-readers` preset measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_readers: Option<StalledReport>,
    /// What only the `history` preset measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReport>,
    /// What only the `api` preset measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start_secs: f64,
    pub end_secs: f64,
}

/// Latency distributions as counts in logarithmic buckets, ten per decade.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    pub ack: Vec<Bucket>,
    pub remote: Vec<Bucket>,
}

/// Samples above the previous bucket's bound and at most `le_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Buckets per decade of [`Histograms`].
const BUCKETS_PER_DECADE: f64 = 10.0;

/// The buckets of `h` (microseconds) from the first to the last non-empty one.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    // Bucket k holds (10^((k-1)/10), 10^(k/10)] microseconds.
    let index = |micros: u64| ((micros.max(1) as f64).log10() * BUCKETS_PER_DECADE).ceil().max(0.0) as usize;
    let mut counts: Vec<u64> = Vec::new();
    for value in h.iter_recorded() {
        let k = index(h.highest_equivalent(value.value_iterated_to()));
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += value.count_since_last_iteration();
    }
    let first = counts.iter().position(|&c| c > 0).unwrap_or(counts.len());
    counts
        .iter()
        .enumerate()
        .skip(first)
        .map(|(k, &count)| Bucket { le_ms: 10f64.powf(k as f64 / BUCKETS_PER_DECADE) / 1000.0, count })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub docs: usize,
    pub clients_per_doc: usize,
    pub rate_per_client: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
}

/// Rates over the measuring window, per second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rates {
    /// Length of the measuring window: the preset's duration, or less when the load ended sooner
    /// (a replay that finished its traces).
    #[serde(default)]
    pub window_secs: f64,
    /// What the preset asks for: clients × rate.
    pub offered: f64,
    /// Keystrokes made (below `offered` when the load generator could not keep up).
    pub submitted: f64,
    /// Keystrokes made in the window whose ack was taken (during the window or while settling).
    pub acked: f64,
    /// Acknowledged ops carrying those keystrokes (fewer when keystrokes were composed).
    pub committed_ops: f64,
}

/// Keystrokes made in the measuring window, and what became of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Edits {
    pub submitted: u64,
    /// Never acknowledged: their op was rejected, or its ack event was dropped.
    pub lost: u64,
    /// Still waiting for their ack when the run ended.
    pub unacked: u64,
    /// Keystrokes the client refused, by reason (not sent at all).
    pub refused: BTreeMap<String, u64>,
    /// Records the typists could not hand to the recorder (its channel was full).
    pub records_dropped: u64,
}

impl Edits {
    /// Adds another editor's counts.
    pub fn add(&mut self, other: &Edits) {
        self.submitted += other.submitted;
        self.lost += other.lost;
        self.unacked += other.unacked;
        self.records_dropped += other.records_dropped;
        for (kind, n) in &other.refused {
            *self.refused.entry(kind.clone()).or_default() += n;
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Errors the clients recorded over the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    /// By protocol code; `protocol_violation` for what a client found the server doing wrong.
    pub by_code: BTreeMap<String, u64>,
    /// The first few, in words.
    pub first: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    pub clients: usize,
    pub reconnects: u64,
    pub failovers: u64,
    pub resubmissions: u64,
    /// Documents reloaded after a rejected op or a protocol violation.
    pub resyncs: u64,
    /// Client events dropped because a typist did not take them in time.
    pub events_dropped: u64,
}

/// What a finished run hands to [`Report::build`].
pub struct Outcome<'a> {
    pub preset: &'a str,
    pub run: &'a RunConfig,
    pub run_id: &'a str,
    pub params: Params,
    /// Length of the measuring window the rates are over.
    pub measured: std::time::Duration,
    /// The measuring window in seconds since the start, if the load began.
    pub window: Option<(f64, f64)>,
    pub edits: Edits,
    pub observed: Observed,
    pub clients: &'a [Client],
    pub convergence: Convergence,
    pub processes: Vec<ProcessReport>,
}

impl Report {
    /// The process's CPU time per committed op over the measuring window, in µs: its mean CPU (a
    /// share of one core) divided by the committed ops per second. A figure that holds on a busy
    /// machine, where latencies do not. `None` when nothing was committed.
    pub fn cpu_us_per_committed_op(&self, process: &ProcessReport) -> Option<f64> {
        (self.rates.committed_ops > 0.0)
            .then(|| process.cpu_mean_pct / 100.0 * 1e6 / self.rates.committed_ops)
    }

    /// Gathers the figures of a finished run; the preset adds its own section afterwards.
    pub fn build(outcome: Outcome<'_>) -> Self {
        let Outcome {
            preset,
            run,
            run_id,
            params,
            measured,
            window,
            edits,
            observed,
            clients,
            convergence,
            processes,
        } = outcome;
        let recorded = observed.recorded;
        let secs = measured.as_secs_f64().max(1e-9);
        let rates = Rates {
            window_secs: measured.as_secs_f64(),
            offered: (params.docs * params.clients_per_doc) as f64 * params.rate_per_client,
            submitted: edits.submitted as f64 / secs,
            acked: recorded.matching.acked as f64 / secs,
            committed_ops: recorded.matching.committed_ops as f64 / secs,
        };
        let mut errors = Errors::default();
        let mut connections = Connections { clients: clients.len(), ..Connections::default() };
        for client in clients {
            let stats = client.stats();
            errors.total += stats.errors;
            connections.reconnects += stats.reconnects;
            connections.failovers += stats.failovers;
            connections.resubmissions += stats.resubmissions;
            connections.resyncs += stats.resyncs;
            connections.events_dropped += stats.events_dropped;
            for record in client.errors() {
                let code = match record.source {
                    ErrorSource::Server => record.code.to_string(),
                    ErrorSource::Client => "protocol_violation".to_owned(),
                };
                if errors.first.len() < 10 {
                    let doc = record.doc.map(|d| d.to_string()).unwrap_or_default();
                    errors.first.push(format!("{} {code} {doc}: {}", client.client_id(), record.message));
                }
                *errors.by_code.entry(code).or_default() += 1;
            }
        }
        let workload = if params.rate_per_client > 0.0 {
            format!(
                "{} docs × {} clients @ {} ops/s",
                params.docs, params.clients_per_doc, params.rate_per_client
            )
        } else {
            format!("{} docs × {} clients", params.docs, params.clients_per_doc)
        };
        Self {
            preset: preset.to_owned(),
            label: run.label.clone(),
            run_id: run_id.to_owned(),
            seed: run.seed,
            urls: run.urls.clone(),
            loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
            params,
            workload,
            window: window.map(|(start_secs, end_secs)| Window { start_secs, end_secs }).unwrap_or_default(),
            rates,
            edits,
            ack_latency_ms: Latency::of(&recorded.ack),
            remote_latency_ms: Latency::of(&recorded.remote),
            histograms: Histograms { ack: buckets(&recorded.ack), remote: buckets(&recorded.remote) },
            matching: recorded.matching,
            errors,
            connections,
            convergence,
            processes,
            timeline: observed.timeline,
            connect: None,
            replay: None,
            stalled_readers: None,
            history: None,
            api: None,
        }
    }

    /// Converged, no error, no delivery naming the wrong author, something was acknowledged, and
    /// what the preset checks itself held.
    pub fn is_clean(&self) -> bool {
        // The connections and history presets type nothing; every other one must have edits
        // acknowledged.
        let edited = self.connect.is_some() || self.history.is_some() || self.matching.acked > 0;
        self.convergence.converged
            && self.errors.total == 0
            && self.matching.author_mismatches == 0
            && edited
            && self.connect.as_ref().is_none_or(ConnectReport::is_clean)
            && self.replay.as_ref().is_none_or(ReplayReport::is_clean)
            && self.history.as_ref().is_none_or(HistoryReport::is_clean)
            && self.api.as_ref().is_none_or(ApiReport::is_clean)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialise the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))
    }

    pub fn read_json(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse the report {}", path.display()))
    }

    /// The human table.
    pub fn table(&self) -> String {
        let p = &self.params;
        let mut out = String::new();
        let label = self.label.as_deref().map(|l| format!("  [{l}]")).unwrap_or_default();
        let workload = if self.workload.is_empty() {
            format!("{} docs × {} clients @ {} ops/s", p.docs, p.clients_per_doc, p.rate_per_client)
        } else {
            self.workload.clone()
        };
        let _ = writeln!(
            out,
            "{} — {workload}, {:.1} s measured after {} s warm-up{label}",
            self.preset, self.rates.window_secs, p.warmup_secs
        );
        let _ = writeln!(out, "run {}  seed {}  {}", self.run_id, self.seed, self.urls.join(" "));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "samples", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, l) in [("ack", &self.ack_latency_ms), ("remote", &self.remote_latency_ms)] {
            let _ = writeln!(
                out,
                "{name:<16}{:>9}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        let r = &self.rates;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16}offered {:.1}  submitted {:.1}  acked {:.1}  (in {:.1} committed ops/s)",
            "ops/s", r.offered, r.submitted, r.acked, r.committed_ops
        );
        let e = &self.edits;
        let refused: u64 = e.refused.values().sum();
        let _ = writeln!(
            out,
            "{:<16}submitted {}  acked {}  lost {}  unacked {}  refused {}  records dropped {}",
            "keystrokes", e.submitted, self.matching.acked, e.lost, e.unacked, refused, e.records_dropped
        );
        let m = &self.matching;
        let _ = writeln!(
            out,
            "{:<16}matched {}  missing {}  orphaned {}  wrong author {}",
            "deliveries", m.deliveries, m.deliveries_missing, m.deliveries_orphaned, m.author_mismatches
        );
        let by_code: Vec<String> = self.errors.by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let by_code = if by_code.is_empty() { String::new() } else { format!("  ({})", by_code.join(", ")) };
        let _ = writeln!(out, "{:<16}{}{by_code}", "errors", self.errors.total);
        for first in &self.errors.first {
            let _ = writeln!(out, "{:<16}{first}", "");
        }
        let c = &self.connections;
        let _ = writeln!(
            out,
            "{:<16}{}  reconnects {}  failovers {}  resubmissions {}  resyncs {}  events dropped {}",
            "clients", c.clients, c.reconnects, c.failovers, c.resubmissions, c.resyncs, c.events_dropped
        );
        let v = &self.convergence;
        let verdict = if v.converged { "converged" } else { "NOT CONVERGED" };
        let _ = writeln!(
            out,
            "{:<16}{verdict}: {} documents, {} clients (unsynced {}, unreadable {}, diverged {})",
            "convergence", v.documents, v.clients, v.unsynced, v.unreadable, v.diverged
        );
        for problem in &v.problems {
            let _ = writeln!(out, "{:<16}{problem}", "");
        }
        for p in &self.processes {
            let gone = if p.gone { "  (ended during the run)" } else { "" };
            let per_op =
                self.cpu_us_per_committed_op(p).map_or_else(String::new, |us| format!(" ({us:.1} µs/op)"));
            let _ = writeln!(
                out,
                "{:<16}pid {}  cpu mean {:.0} %{per_op} max {:.0} %  rss first {:.1} peak {:.1} last {:.1} MiB  \
                 send queues peak {:.1} MiB{gone}",
                p.name,
                p.pid,
                p.cpu_mean_pct,
                p.cpu_max_pct,
                p.rss_first_mib,
                p.rss_peak_mib,
                p.rss_last_mib,
                p.send_queue_peak_mib
            );
        }
        if let Some(connect) = &self.connect {
            connect.table(&mut out);
        }
        if let Some(replay) = &self.replay {
            replay.table(&mut out);
        }
        if let Some(stalled) = &self.stalled_readers {
            stalled.table(&mut out);
        }
        if let Some(history) = &self.history {
            history.table(&mut out);
        }
        if let Some(api) = &self.api {
            api.table(&mut out);
        }
        out
    }
}

/// The median of one figure over the reports (0 for none).
fn median_of(reports: &[Report], f: &dyn Fn(&Report) -> f64) -> f64 {
    let mut values: Vec<f64> = reports.iter().map(f).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The `history` preset's figures: the medians of its opens over the runs.
fn summarize_history(reports: &[Report], out: &mut String) {
    let median = |f: &dyn Fn(&Report) -> f64| median_of(reports, f);
    fn history(r: &Report) -> &HistoryReport {
        r.history.as_ref().expect("summarize checked that every report has one")
    }
    let _ = writeln!(
        out,
        "| runs | versions | events after the snapshot | open p50 ms | open p90 ms | open max ms | first op ack ms | wrong snapshots |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let wrong: usize = reports.iter().map(|r| history(r).wrong_snapshots).sum();
    let _ = writeln!(
        out,
        "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {wrong} |",
        reports.len(),
        median(&|r| history(r).ops as f64),
        median(&|r| history(r).tail_events as f64),
        median(&|r| history(r).open_ms.p50),
        median(&|r| history(r).open_ms.p90),
        median(&|r| history(r).open_ms.max),
        median(&|r| history(r).first_op_ack_ms.unwrap_or(f64::NAN)),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "medians of {} runs; wrong snapshots are summed", reports.len());
    for r in reports {
        let h = history(r);
        let _ = writeln!(
            out,
            "  run {} ({}): {} cold opens p50/p90/max {:.2}/{:.2}/{:.2} ms, written in {:.1} s",
            r.run_id,
            r.label.as_deref().unwrap_or("-"),
            h.open_ms.count,
            h.open_ms.p50,
            h.open_ms.p90,
            h.open_ms.max,
            h.seed_secs
        );
    }
}

/// "standalone 41.3 µs" for each watched process of the first report: the median over the reports of
/// its CPU time per committed op.
fn cpu_per_op_medians(reports: &[Report]) -> Vec<String> {
    let Some(first) = reports.first() else { return Vec::new() };
    first
        .processes
        .iter()
        .filter_map(|p| {
            let of = |r: &Report| {
                let same = r.processes.iter().find(|q| q.name == p.name)?;
                r.cpu_us_per_committed_op(same)
            };
            let values: Vec<f64> = reports.iter().filter_map(of).collect();
            (values.len() == reports.len())
                .then(|| format!("{} {:.1} µs", p.name, median_of(reports, &|r| of(r).unwrap_or(0.0))))
        })
        .collect()
}

/// The median of each headline figure over several reports, as a Markdown table.
pub fn summarize(reports: &[Report]) -> String {
    let median = |f: &dyn Fn(&Report) -> f64| median_of(reports, f);
    let mut out = String::new();
    if !reports.is_empty() && reports.iter().all(|r| r.history.is_some()) {
        summarize_history(reports, &mut out);
        return out;
    }
    let _ = writeln!(
        out,
        "| runs | ack p50 ms | ack p99 ms | remote p50 ms | remote p99 ms | offered ops/s | acked ops/s | committed ops/s | errors | converged |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let errors: Vec<String> = reports.iter().map(|r| r.errors.total.to_string()).collect();
    let converged = reports.iter().filter(|r| r.convergence.converged).count();
    let _ = writeln!(
        out,
        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} | {} | {converged}/{} |",
        reports.len(),
        median(&|r| r.ack_latency_ms.p50),
        median(&|r| r.ack_latency_ms.p99),
        median(&|r| r.remote_latency_ms.p50),
        median(&|r| r.remote_latency_ms.p99),
        median(&|r| r.rates.offered),
        median(&|r| r.rates.acked),
        median(&|r| r.rates.committed_ops),
        errors.join(" / "),
        reports.len(),
    );
    let _ = writeln!(out);
    let per_op = cpu_per_op_medians(reports);
    if !per_op.is_empty() {
        let _ = writeln!(out, "CPU per committed op (medians): {}", per_op.join(", "));
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "medians of {} runs; errors are listed per run", reports.len());
    for r in reports {
        let _ = writeln!(
            out,
            "  run {} ({}): ack p50/p99 {:.2}/{:.2} ms, remote p50/p99 {:.2}/{:.2} ms, acked {:.1} ops/s",
            r.run_id,
            r.label.as_deref().unwrap_or("-"),
            r.ack_latency_ms.p50,
            r.ack_latency_ms.p99,
            r.remote_latency_ms.p50,
            r.remote_latency_ms.p99,
            r.rates.acked
        );
    }
    out
}
