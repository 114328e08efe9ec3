//! The `api` preset: the Documents gRPC API (proto/tandem/v1/documents.proto) under load. D
//! documents, each with one writer submitting one-character edits with ApplyEdit at R edits/s and
//! W watchers following it with WatchDocument, each caller on a gRPC connection of its own to the
//! gateway's port (the same port as the WebSocket; watchers on other gateways than their writer
//! when there are several). A writer's next edit waits for the previous answer, so above the round
//! trip it runs closed-loop and the edits/s is the API's throughput.
//!
//! Measured, in the report's usual places: **ack latency** is an ApplyEdit's round trip (sent →
//! answered, the commit included), **remote latency** is from sending the ApplyEdit to each
//! watcher receiving the version. Only here: **commit → watcher**, from the event's
//! `committed_at_ms` (the time the gateway took the committed event, whole milliseconds, so each
//! sample is up to 1 ms long) to the watcher's receipt, by the wall clock of this machine; and the
//! **CPU per edit** of every watched process (its mean CPU over the window ÷ edits/s).
//!
//! At the end every watcher must hold, rebuilt from the events it received once each and in
//! order, the text and version GetDocument answers for its document.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tandem_client::ClientId;
use tandem_proto::proto::GetDocumentRequest;
use tokio_util::sync::CancellationToken;

use crate::api_tasks::{self, Watcher, WatcherState, Writer, WriterOutcome};
use crate::converge::Convergence;
use crate::driver::Session;
use crate::report::{Edits, Latency, Params, Report};
use crate::RunConfig;

/// The preset's parameters; validated (see [`crate::cli::ApiArgs::validate`]).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub run: RunConfig,
    /// The gateways' gRPC endpoints, `http://HOST:PORT`, in the order of `run.urls`.
    pub grpc_urls: Vec<String>,
    pub docs: usize,
    /// Watchers per document.
    pub watchers: usize,
    /// Edits per second of each writer.
    pub rate: f64,
}

/// What only the `api` preset measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiReport {
    pub docs: usize,
    pub watchers_per_doc: usize,
    /// ApplyEdits answered per second of the measuring window.
    pub edits_per_sec: f64,
    /// From the event's `committed_at_ms` to the watcher's receipt.
    pub commit_to_watch_ms: Latency,
    /// Versions a watcher received out of order, twice, or whose op did not apply.
    pub out_of_order: u64,
    /// ApplyEdits answered as a retry, though every request id was fresh.
    pub duplicates: u64,
    /// Watch streams the server ended during the run.
    pub watches_ended: usize,
    /// CPU time per answered edit of each watched process, in microseconds.
    pub cpu_per_edit_us: Vec<(String, f64)>,
}

impl ApiReport {
    pub fn is_clean(&self) -> bool {
        self.out_of_order == 0 && self.duplicates == 0 && self.watches_ended == 0 && self.edits_per_sec > 0.0
    }

    pub fn table(&self, out: &mut String) {
        let l = &self.commit_to_watch_ms;
        let _ = writeln!(
            out,
            "{:<16}{} docs × 1 writer + {} watchers: {:.1} edits/s answered; commit → watcher ms: p50 {:.2}  \
             p99 {:.2}  max {:.2} ({} samples, whole-ms commit times)",
            "api", self.docs, self.watchers_per_doc, self.edits_per_sec, l.p50, l.p99, l.max, l.count
        );
        let cpu: Vec<String> = self.cpu_per_edit_us.iter().map(|(n, us)| format!("{n} {us:.0} µs")).collect();
        let _ = writeln!(
            out,
            "{:<16}cpu per edit: {}; out of order {}, duplicates {}, watches ended {}",
            "",
            cpu.join(", "),
            self.out_of_order,
            self.duplicates,
            self.watches_ended
        );
    }
}

/// The author both sides of the recorder's matching use: the API's events name the caller's user,
/// not a session the load generator could know, so versions are matched by (document, version).
fn author() -> ClientId {
    ClientId::parse("api").expect("a valid client id")
}

pub async fn run(config: &ApiConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let mut session = Session::start(run, "api", config.watchers + 1)?;
    let docs: Vec<String> = session.doc_ids(config.docs)?.iter().map(ToString::to_string).collect();
    let urls = &config.grpc_urls;
    let token = run.token.as_deref();

    // Watchers first, each caught up, so every edit of the run reaches them live.
    let mut streams = Vec::new();
    let mut states = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        for w in 0..config.watchers {
            let mut api = api_tasks::connect(&urls[(d + 1 + w) % urls.len()], token).await?;
            streams.push((d, api_tasks::watch(&mut api, doc).await?));
            states.push((d, Arc::new(Mutex::new(WatcherState::default()))));
        }
    }
    let mut writers = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        writers.push((d, doc.clone(), api_tasks::connect(&urls[d % urls.len()], token).await?));
    }

    let schedule = session.begin(run.warmup, run.duration);
    let stop = CancellationToken::new();
    let commit_to_watch = api_tasks::commit_histogram();
    let mut watcher_tasks = Vec::new();
    for ((d, stream), (_, state)) in streams.into_iter().zip(&states) {
        let watcher = Watcher {
            stream,
            index: d as u32,
            records: session.records(),
            author: author(),
            schedule,
            state: state.clone(),
            commit_to_watch: commit_to_watch.clone(),
        };
        watcher_tasks.push(tokio::spawn(watcher.run(stop.clone())));
    }
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let writer_tasks: Vec<_> = writers
        .into_iter()
        .map(|(d, doc, api)| {
            let writer = Writer {
                api,
                doc,
                index: d as u32,
                run_id: session.run_id.clone(),
                period,
                seed: run.seed.wrapping_add(d as u64),
                schedule,
                records: session.records(),
                author: author(),
            };
            tokio::spawn(writer.run())
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in writer_tasks {
        outcomes.push(task.await.context("a writer panicked")?);
    }

    let convergence = settle(config, &docs, &outcomes, &states).await?;
    stop.cancel();
    for task in watcher_tasks {
        task.await.context("a watcher panicked")?;
    }
    let mut api = ApiReport { docs: config.docs, watchers_per_doc: config.watchers, ..ApiReport::default() };
    let mut edits = Edits::default();
    for o in &outcomes {
        edits.submitted += o.submitted;
        edits.lost += o.failed;
        api.duplicates += o.duplicates;
    }
    for (_, state) in &states {
        let state = state.lock().unwrap_or_else(|e| e.into_inner());
        api.out_of_order += state.out_of_order;
        api.watches_ended += usize::from(state.ended.is_some());
    }
    api.commit_to_watch_ms = Latency::of(&commit_to_watch.lock().unwrap_or_else(|e| e.into_inner()));

    let params = Params {
        docs: config.docs,
        clients_per_doc: 1 + config.watchers,
        rate_per_client: config.rate,
        duration_secs: run.duration.as_secs_f64(),
        warmup_secs: run.warmup.as_secs_f64(),
    };
    let mut report = session.finish(params, run.duration, edits, convergence).await?;
    report.workload = format!(
        "{} docs × 1 writer @ {} edits/s + {} watchers each",
        config.docs, config.rate, config.watchers
    );
    report.rates.offered = config.docs as f64 * config.rate;
    for o in &outcomes {
        report.errors.total += o.errors.values().sum::<u64>();
        for (code, n) in &o.errors {
            *report.errors.by_code.entry(code.clone()).or_default() += n;
        }
        for first in &o.first_errors {
            if report.errors.first.len() < 10 {
                report.errors.first.push(first.clone());
            }
        }
    }
    api.edits_per_sec = report.rates.acked;
    if api.edits_per_sec > 0.0 {
        api.cpu_per_edit_us = report
            .processes
            .iter()
            .map(|p| (p.name.clone(), p.cpu_mean_pct / 100.0 * 1e6 / api.edits_per_sec))
            .collect();
    }
    report.api = Some(api);
    Ok(report)
}

/// Waits until every watcher holds its writer's last version (or the settle time is over), then
/// checks each one's text and version against GetDocument.
async fn settle(
    config: &ApiConfig,
    docs: &[String],
    outcomes: &[WriterOutcome],
    states: &[(usize, Arc<Mutex<WatcherState>>)],
) -> anyhow::Result<Convergence> {
    let snapshot = |s: &Arc<Mutex<WatcherState>>| s.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + config.run.settle_timeout;
    while Instant::now() < deadline
        && states.iter().any(|(d, s)| {
            let s = snapshot(s);
            s.ended.is_none() && s.version < outcomes[*d].version
        })
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut result =
        Convergence { documents: docs.len(), clients: docs.len() + states.len(), ..Convergence::default() };
    let mut api = api_tasks::connect(&config.grpc_urls[0], config.run.token.as_deref()).await?;
    for (d, doc) in docs.iter().enumerate() {
        let request = GetDocumentRequest { doc: doc.clone(), version: None };
        let latest = match api.get_document(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                result.unreadable += 1;
                result.problems.push(format!("{doc}: GetDocument failed: {}", status.message()));
                continue;
            }
        };
        for (_, state) in states.iter().filter(|(w, _)| *w == d) {
            let s = snapshot(state);
            if s.version != latest.version || s.text != latest.text {
                result.diverged += 1;
                if result.problems.len() < 10 {
                    result.problems.push(format!(
                        "{doc}: a watcher holds version {} ({} characters), GetDocument {} ({}){}",
                        s.version,
                        s.text.chars().count(),
                        latest.version,
                        latest.text.chars().count(),
                        s.ended.map(|e| format!("; its stream ended: {e}")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    result.converged = result.diverged == 0 && result.unreadable == 0;
    Ok(result)
}
