//! The run's report: per fault type, how many were injected, the ops acknowledged meanwhile, the
//! ops lost and the divergences (from the checker), and the time until the affected documents
//! committed again. Markdown, written as docs/RELIABILITY.md by `make chaos`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::faults::{Injected, RECOVERY_LIMIT};
use super::load::LoadSummary;
use super::recovery::percentiles;
use super::schedule::FaultKind;

/// What the independent checker said.
#[derive(Debug, Clone)]
pub enum Checker {
    /// Not run: why.
    Skipped(String),
    /// Run, but it failed or gave no readable result.
    Failed(String),
    /// Its result.json.
    Result(Value),
}

/// The checker's checks whose violations are acknowledged ops lost (or duplicated, or misplaced).
const LOST_CHECKS: [&str; 1] = ["acked_in_log"];
/// The checker's checks whose violations are divergences: a client's text or applied versions
/// disagree with the event log.
const DIVERGENCE_CHECKS: [&str; 3] = ["final_texts", "observer_order", "observed_in_log"];

impl Checker {
    /// The checks of its result, by name: (violations, checked).
    pub fn checks(&self) -> BTreeMap<String, (u64, u64)> {
        let Checker::Result(v) = self else { return BTreeMap::new() };
        let Some(checks) = v.get("checks").and_then(Value::as_object) else { return BTreeMap::new() };
        checks
            .iter()
            .map(|(name, c)| {
                let n = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
                (name.clone(), (n("count"), n("checked")))
            })
            .collect()
    }

    fn sum(&self, names: &[&str]) -> Option<u64> {
        let checks = self.checks();
        let found: Vec<u64> = names.iter().filter_map(|n| checks.get(*n)).map(|(count, _)| *count).collect();
        (!found.is_empty()).then(|| found.iter().sum())
    }

    /// The lost acknowledged ops it counted.
    pub fn lost(&self) -> Option<u64> {
        match self {
            Checker::Result(v) => {
                self.sum(&LOST_CHECKS).or_else(|| count(v, &["lost", "lost_acks", "ops_lost", "lost_ops"]))
            }
            _ => None,
        }
    }

    /// The divergences it counted.
    pub fn diverged(&self) -> Option<u64> {
        match self {
            Checker::Result(v) => self
                .sum(&DIVERGENCE_CHECKS)
                .or_else(|| count(v, &["diverged", "divergences", "divergent", "divergence"])),
            _ => None,
        }
    }

    /// Violations of its other checks (the log's versions, the events topic, snapshots).
    pub fn other_violations(&self) -> u64 {
        self.checks()
            .iter()
            .filter(|(name, _)| {
                !LOST_CHECKS.contains(&name.as_str()) && !DIVERGENCE_CHECKS.contains(&name.as_str())
            })
            .map(|(_, (count, _))| count)
            .sum()
    }

    /// Whether it passed: its `ok`/`passed` when it says, else no loss and no divergence.
    pub fn passed(&self) -> bool {
        match self {
            Checker::Result(v) => match v.get("ok").or_else(|| v.get("passed")).and_then(Value::as_bool) {
                Some(ok) => ok && self.lost().unwrap_or(0) == 0 && self.diverged().unwrap_or(0) == 0,
                None => self.lost() == Some(0) && self.diverged().unwrap_or(0) == 0,
            },
            _ => false,
        }
    }

    /// One line: the verdict and the counts.
    pub fn summary(&self) -> String {
        match self {
            Checker::Skipped(why) => format!("not run: {why}"),
            Checker::Failed(why) => format!("failed: {why}"),
            Checker::Result(v) => {
                let checks: Vec<String> = self
                    .checks()
                    .iter()
                    .map(|(name, (count, checked))| format!("`{name}` {count} of {checked}"))
                    .collect();
                format!(
                    "{}: {} lost, {} diverged, {} other violations{}{}",
                    if self.passed() { "passed" } else { "FAILED" },
                    opt(self.lost()),
                    opt(self.diverged()),
                    self.other_violations(),
                    v.get("error")
                        .and_then(Value::as_str)
                        .map(|e| format!(" (error: {e})"))
                        .unwrap_or_default(),
                    if checks.is_empty() {
                        String::new()
                    } else {
                        format!(" (violations of checked: {})", checks.join(", "))
                    }
                )
            }
        }
    }
}

/// A number under one of `keys`: the value itself, an array's length, or an object's `count`/`total`.
fn count(v: &Value, keys: &[&str]) -> Option<u64> {
    for key in keys {
        let Some(found) = v.get(*key).or_else(|| v.get("totals").and_then(|t| t.get(*key))) else { continue };
        let n = match found {
            Value::Number(n) => n.as_u64(),
            Value::Array(items) => Some(items.len() as u64),
            Value::Object(o) => o.get("count").or_else(|| o.get("total")).and_then(Value::as_u64),
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        };
        if n.is_some() {
            return n;
        }
    }
    None
}

/// The driver's own check, beside the checker's: every ack it recorded against the event log, and
/// every client's final text against the log's.
#[derive(Debug, Clone, Default)]
pub struct OwnCheck {
    /// Acks whose (doc, version) is missing from the log or holds another (client, seq).
    pub lost: Vec<LostAck>,
    /// (doc, client) whose final text differs from the log's.
    pub diverged: Vec<String>,
    /// Documents whose versions are not 1..N.
    pub nonlinear: Vec<String>,
    /// Why the check could not run to its end, if it could not.
    pub incomplete: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LostAck {
    pub doc: String,
    pub client: String,
    pub seq: u64,
    pub version: u64,
    pub at: Instant,
}

/// Everything the report says about the run.
pub struct Run<'a> {
    pub seed: u64,
    pub planned: usize,
    pub started_utc: String,
    pub length: Duration,
    pub machine: String,
    pub shape: String,
    pub load: &'a LoadSummary,
    pub injected: &'a [Injected],
    pub checker: &'a Checker,
    pub own: &'a OwnCheck,
    /// Why the run ended early or failed to settle, if it did.
    pub problems: &'a [String],
    pub replay: String,
    /// The run's folder (observations, manifest, checker result, faults, schedule, logs).
    pub folder: String,
}

/// Per fault kind: the table's rows, and `None` for the totals row.
fn rows<'a>(run: &Run<'a>) -> Vec<(Option<FaultKind>, Vec<&'a Injected>)> {
    let mut by_kind: BTreeMap<FaultKind, Vec<&'a Injected>> = BTreeMap::new();
    for injected in run.injected {
        by_kind.entry(injected.fault.kind).or_default().push(injected);
    }
    let mut rows: Vec<(Option<FaultKind>, Vec<&'a Injected>)> =
        by_kind.into_iter().map(|(k, v)| (Some(k), v)).collect();
    rows.push((None, run.injected.iter().collect()));
    rows
}

/// Attributes each lost ack to the last fault that began before it was acknowledged (`None`: before
/// the first fault).
fn lost_by_kind(run: &Run<'_>) -> BTreeMap<Option<FaultKind>, u64> {
    let mut lost = BTreeMap::new();
    for ack in &run.own.lost {
        let kind = run.injected.iter().rev().find(|i| i.started <= ack.at).map(|i| i.fault.kind);
        *lost.entry(kind).or_default() += 1;
    }
    lost
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// The table, in Markdown.
pub fn table(run: &Run<'_>) -> String {
    let lost = lost_by_kind(run);
    let checker_lost = run.checker.lost();
    let diverged = run.checker.diverged().unwrap_or(run.own.diverged.len() as u64);
    let mut out = String::new();
    out.push_str(
        "| fault | injected | ops acked meanwhile | acks/s meanwhile | ops lost | divergences | recovery p50 | p99 | max | not recovered |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (kind, faults) in rows(run) {
        let recoveries: Vec<Duration> = faults.iter().filter_map(|f| f.recovery).collect();
        let unrecovered = faults.len() - recoveries.len();
        let acked: u64 = faults.iter().map(|f| f.acks_meanwhile).sum();
        let recovering: f64 = recoveries.iter().map(Duration::as_secs_f64).sum();
        let rate =
            if recovering > 0.0 { format!("{:.0}", acked as f64 / recovering) } else { "–".to_owned() };
        let (p50, p99, max) = percentiles(&recoveries).map_or_else(
            || ("–".to_owned(), "–".to_owned(), "–".to_owned()),
            |(a, b, c)| (seconds(a), seconds(b), seconds(c)),
        );
        let name = kind.map_or_else(|| "**all**".to_owned(), |k| format!("`{}`", k.name()));
        let (lost_cell, diverged_cell) = match kind {
            Some(k) => (
                lost.get(&Some(k)).copied().unwrap_or(0).to_string(),
                if diverged == 0 { "0".to_owned() } else { "see all".to_owned() },
            ),
            None => {
                let own: u64 = lost.values().sum();
                (
                    checker_lost.map_or_else(|| format!("{own} (driver)"), |n| n.to_string()),
                    diverged.to_string(),
                )
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {acked} | {rate} | {lost_cell} | {diverged_cell} | {p50} | {p99} | {max} | {unrecovered} |",
            faults.len()
        );
    }
    out
}

/// The whole document.
pub fn markdown(run: &Run<'_>) -> String {
    let mut out = String::new();
    let injected = run.injected.len();
    let _ = writeln!(out, "# Reliability under injected faults\n");
    let _ = writeln!(
        out,
        "Produced by `make chaos` (`tandem-chaos`, integration-tests/src/chaos/) from the run below; do not edit \
         by hand, run it again. `make chaos-smoke` is the same with a few dozen faults.\n"
    );
    let _ = writeln!(out, "## The run\n");
    let _ = writeln!(out, "- seed **{}** (replay: `{}`)", run.seed, run.replay);
    let _ = writeln!(out, "- started {} UTC, length {}", run.started_utc, human(run.length));
    let _ = writeln!(out, "- faults injected: **{injected}** of {} scheduled", run.planned);
    let _ = writeln!(out, "- cluster: {}", run.shape);
    let _ = writeln!(
        out,
        "- run folder: `{}` (schedule.txt, faults.jsonl: every fault as applied, observations.jsonl, \
         manifest.json, result.json: the checker's, logs/)",
        run.folder
    );
    let _ = writeln!(out, "- machine: {}", run.machine);
    let _ = writeln!(
        out,
        "- load: {} edits, {} ops acknowledged, {} failovers between gateways, {} reconnects, {} resubmissions, {} \
         resyncs, {} server errors seen by clients (e.g. `unavailable` while the broker is down), {} protocol \
         violations found by clients, {} client events dropped",
        run.load.edits,
        run.load.acks,
        run.load.failovers,
        run.load.reconnects,
        run.load.resubmissions,
        run.load.resyncs,
        run.load.server_errors,
        run.load.client_errors,
        run.load.events_dropped
    );
    let _ =
        writeln!(out, "- independent checker (integration-tests/chaos/check.py): {}", run.checker.summary());
    let _ = writeln!(
        out,
        "- driver's own check: {} acknowledged ops missing from the event log, {} clients diverged from it, {} \
         documents with non-linear versions{}",
        run.own.lost.len(),
        run.own.diverged.len(),
        run.own.nonlinear.len(),
        run.own.incomplete.as_ref().map(|w| format!(" (incomplete: {w})")).unwrap_or_default()
    );
    for problem in run.problems {
        let _ = writeln!(out, "- problem: {problem}");
    }
    let unplanned: Vec<String> = run
        .injected
        .iter()
        .flat_map(|i| {
            i.unplanned_restarts
                .iter()
                .map(move |r| format!("{r} after #{} {}", i.fault.number, i.fault.kind))
        })
        .collect();
    let _ = writeln!(
        out,
        "- services that exited on their own and were restarted: {}",
        if unplanned.is_empty() { "none".to_owned() } else { unplanned.join("; ") }
    );
    let _ = writeln!(out, "\n## Per fault type\n");
    out.push_str(&table(run));
    let _ = writeln!(out, "\n## How to read it\n");
    for kind in FaultKind::ALL {
        if run.injected.iter().any(|i| i.fault.kind == kind) {
            let _ = writeln!(out, "- `{}`: {}", kind.name(), kind.description());
        }
    }
    let _ = writeln!(
        out,
        "\n- **recovery**: from the fault (the kill, the SIGSTOP, the shutdown, the cut) until every affected \
         document has had an op acknowledged to a client again at a version above the one it had committed \
         when the fault hit (an ack still on its way for an earlier commit does not count), measured with the \
         clients' acks; it includes \
         the time the process stays down or frozen (the schedule's hold, 0–8 s). Affected: for a sequencer fault \
         the documents of the partitions it owned (every document when it owned none), for a gateway every \
         document of every client connected to it (each such client must see an ack of each document), else \
         every document. A fault not recovered within its hold + {} s counts as not recovered; the next fault \
         then comes anyway.\n\
         - **ops acked meanwhile**: acks clients took, over all documents, between the fault and its recovery \
         (**acks/s**: that over the time to recover; the cluster took about {:.0} acks/s over the whole run, \
         faults included).\n\
         - **ops lost**: acknowledged ops the Postgres event log does not hold once at their acknowledged \
         version: the checker's `acked_in_log` violations (lost, duplicated, misplaced) in the total; per \
         type, the driver's own comparison of every ack with the log, attributed to the last fault before the \
         ack. **divergences**: the checker's `final_texts`, `observer_order` and `observed_in_log` violations \
         (a client's final text differs from the log's text at its version, a client applied versions out of \
         order or with a gap, or applied a version the log does not have); only a run-wide total can be \
         attributed. Both must be 0. The checker also checks the log's versions are 1..N, the events topic \
         matches the log, and the snapshots (its other violations, in the line above).\n\
         - Faults are spaced: the next one comes after the previous one's recovery (or timeout) and a seeded gap \
         of 0.2–1.5 s.",
        RECOVERY_LIMIT.as_secs(),
        run.load.acks as f64 / run.length.as_secs_f64().max(1.0)
    );
    out
}

/// `1 h 02 min 03 s`
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, s) => format!("{h} h {m:02} min {s:02} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_result_is_read_in_its_likely_shapes() {
        let v = serde_json::json!({"ok": true, "lost": [], "divergences": 0});
        let checker = Checker::Result(v);
        assert_eq!((checker.lost(), checker.diverged(), checker.passed()), (Some(0), Some(0), true));
        let v = serde_json::json!({"totals": {"lost": 2, "diverged": 0}});
        let checker = Checker::Result(v);
        assert_eq!((checker.lost(), checker.diverged(), checker.passed()), (Some(2), Some(0), false));
        let v = serde_json::json!({"ok": false, "checks": {
            "acked_in_log": {"count": 1, "checked": 10, "by_kind": {"lost": 1}},
            "final_texts": {"count": 2, "checked": 4},
            "observer_order": {"count": 0, "checked": 4},
            "kafka_events": {"count": 3, "checked": 10},
        }});
        let checker = Checker::Result(v);
        assert_eq!((checker.lost(), checker.diverged(), checker.other_violations()), (Some(1), Some(2), 3));
        assert!(!checker.passed());
        assert!(!Checker::Skipped("missing".into()).passed());
    }

    #[test]
    fn lengths_read_like_a_person_would_write_them() {
        assert_eq!(human(Duration::from_secs(59)), "59 s");
        assert_eq!(human(Duration::from_secs(125)), "2 min 05 s");
        assert_eq!(human(Duration::from_secs(3723)), "1 h 02 min 03 s");
    }
}
