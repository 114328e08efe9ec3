//! The report of a run: built from what the recorder, the typists and the clients counted; printed as
//! a table for people and written as JSON for scripts; and the medians of several runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tandem_client::{Client, ErrorSource};

use crate::converge::Convergence;
use crate::recorder::{Matching, Recorded};
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
    /// Per second of the measuring window.
    pub rates: Rates,
    pub edits: Edits,
    pub ack_latency_ms: Latency,
    pub remote_latency_ms: Latency,
    pub matching: Matching,
    pub errors: Errors,
    pub connections: Connections,
    pub convergence: Convergence,
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

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    fn of(h: &Histogram<u64>) -> Self {
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

impl Report {
    /// Gathers the figures of a finished run.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        preset: &str,
        run: &RunConfig,
        run_id: &str,
        params: Params,
        edits: Edits,
        recorded: Recorded,
        clients: &[Client],
        convergence: Convergence,
    ) -> Self {
        let secs = run.duration.as_secs_f64();
        let rates = Rates {
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
        Self {
            preset: preset.to_owned(),
            label: run.label.clone(),
            run_id: run_id.to_owned(),
            seed: run.seed,
            urls: run.urls.clone(),
            loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
            params,
            rates,
            edits,
            ack_latency_ms: Latency::of(&recorded.ack),
            remote_latency_ms: Latency::of(&recorded.remote),
            matching: recorded.matching,
            errors,
            connections,
            convergence,
        }
    }

    /// Converged, no error, no delivery naming the wrong author, and something was acknowledged.
    pub fn is_clean(&self) -> bool {
        self.convergence.converged
            && self.errors.total == 0
            && self.matching.author_mismatches == 0
            && self.matching.acked > 0
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
        let _ = writeln!(
            out,
            "{} — {} docs × {} clients @ {} ops/s, {} s measured after {} s warm-up{label}",
            self.preset, p.docs, p.clients_per_doc, p.rate_per_client, p.duration_secs, p.warmup_secs
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
        out
    }
}

/// The median of each headline figure over several reports, as a Markdown table.
pub fn summarize(reports: &[Report]) -> String {
    let median = |f: &dyn Fn(&Report) -> f64| {
        let mut values: Vec<f64> = reports.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| runs | ack p50 ms | ack p99 ms | remote p50 ms | remote p99 ms | offered ops/s | acked ops/s | errors | converged |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let errors: Vec<String> = reports.iter().map(|r| r.errors.total.to_string()).collect();
    let converged = reports.iter().filter(|r| r.convergence.converged).count();
    let _ = writeln!(
        out,
        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {converged}/{} |",
        reports.len(),
        median(&|r| r.ack_latency_ms.p50),
        median(&|r| r.ack_latency_ms.p99),
        median(&|r| r.remote_latency_ms.p50),
        median(&|r| r.remote_latency_ms.p99),
        median(&|r| r.rates.offered),
        median(&|r| r.rates.acked),
        errors.join(" / "),
        reports.len(),
    );
    let _ = writeln!(out);
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
