//! The `replay` preset: real editing histories (the traces of `testdata/editing-traces`, format in
//! its README) typed into fresh documents, one client per document, as fast as the server
//! acknowledges: [`Pace::PerAck`], each ack letting the next `burst` patches through, which the
//! client composes into the op it sends after the next ack. At the end every document must hold the
//! trace's final text (or, with `--max-patches`, the text after that many patches), at the client
//! and on the server.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ropey::Rope;
use serde::{Deserialize, Serialize};
use tandem_client::{ClientError, DocHandle, Operation};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::converge;
use crate::driver::{self, Editor, Pace, Script, Session};
use crate::report::{Params, Report};
use crate::RunConfig;

/// The traces shipped with the repository.
pub const DEFAULT_TRACES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/editing-traces");

/// The preset's parameters; validated (see [`crate::cli::ReplayArgs::validate`]).
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub run: RunConfig,
    /// Trace files (`.json.gz` or `.json`).
    pub traces: Vec<PathBuf>,
    /// Documents each trace is typed into, at the same time.
    pub copies: usize,
    /// Patches typed per ack.
    pub burst: usize,
    /// Replay only the first patches of each trace.
    pub max_patches: Option<usize>,
}

/// One edit of a trace: `[position, deleted count, inserted text]`, positions in Unicode scalar
/// values.
#[derive(Debug, Clone, Deserialize)]
pub struct Patch(pub usize, pub usize, pub String);

/// A trace ready to type.
#[derive(Debug)]
pub struct Trace {
    pub name: String,
    /// Every patch in order; a non-empty start text is the first (an insert at 0).
    pub patches: Vec<Patch>,
    /// The text after the last patch.
    pub expected: String,
}

/// The file format, as published in `josephg/editing-traces`.
#[derive(Deserialize)]
struct TraceFile {
    #[serde(rename = "startContent")]
    start_content: String,
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    patches: Vec<Patch>,
}

impl Trace {
    /// Reads a trace (gzipped if the name ends in `.gz`); keeps the first `max_patches` patches if
    /// given, computing the text they lead to.
    pub fn load(path: &Path, max_patches: Option<usize>) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("open the trace {}", path.display()))?;
        let mut json = String::new();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(file).read_to_string(&mut json)
        } else {
            std::io::BufReader::new(file).read_to_string(&mut json)
        }
        .with_context(|| format!("read the trace {}", path.display()))?;
        let file: TraceFile =
            serde_json::from_str(&json).with_context(|| format!("parse the trace {}", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("trace");
        let name = name.trim_end_matches(".gz").trim_end_matches(".json").to_owned();
        let start = (!file.start_content.is_empty()).then(|| Patch(0, 0, file.start_content.clone()));
        let mut patches: Vec<Patch> =
            start.into_iter().chain(file.txns.into_iter().flat_map(|t| t.patches)).collect();
        let expected = match max_patches {
            Some(max) if max < patches.len() => {
                patches.truncate(max);
                replay_locally(&patches).with_context(|| format!("replay {name} locally"))?
            }
            _ => file.end_content,
        };
        Ok(Self { name, patches, expected })
    }
}

/// The text the patches lead to from the empty text.
fn replay_locally(patches: &[Patch]) -> anyhow::Result<String> {
    let mut rope = Rope::new();
    for (i, Patch(pos, deleted, inserted)) in patches.iter().enumerate() {
        let op = Operation::from_patch(rope.len_chars(), *pos, *deleted, inserted)
            .with_context(|| format!("patch {i} does not fit"))?;
        op.apply_to_rope(&mut rope).with_context(|| format!("apply patch {i}"))?;
    }
    Ok(rope.to_string())
}

/// The trace files of a folder (`*.json.gz`, `*.json`), sorted.
pub fn traces_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("list the traces in {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".json.gz") || s.ends_with(".json")))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Types a trace's patches in order.
struct Patches {
    trace: Arc<Trace>,
    next: usize,
}

impl Script for Patches {
    fn edit(&mut self, doc: &DocHandle) -> Option<Result<u64, ClientError>> {
        let Patch(pos, deleted, inserted) = self.trace.patches.get(self.next)?;
        self.next += 1;
        Some(doc.splice(*pos, *deleted, inserted))
    }
}

/// What the preset checks besides the common figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub burst: usize,
    pub traces: Vec<TraceResult>,
}

/// One trace, over its copies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceResult {
    pub name: String,
    pub patches: usize,
    pub expected_chars: usize,
    pub copies: usize,
    /// Copies that typed every patch within the time limit.
    pub finished: usize,
    /// Copies whose final text is the expected one.
    pub matched: usize,
    /// Time the slowest finished copy took to type every patch.
    pub secs: f64,
    /// Patches per second of one copy (the slowest).
    pub patches_per_sec: f64,
}

impl ReplayReport {
    /// Every copy of every trace typed completely and ended at the expected text.
    pub fn is_clean(&self) -> bool {
        self.traces.iter().all(|t| t.finished == t.copies && t.matched == t.copies)
    }

    pub fn table(&self, out: &mut String) {
        for t in &self.traces {
            let _ = writeln!(
                out,
                "{:<16}{}: {} patches → {} chars, {}/{} typed, {}/{} match the trace, {:.1} s ({:.0} patches/s)",
                "replay", t.name, t.patches, t.expected_chars, t.finished, t.copies, t.matched, t.copies, t.secs,
                t.patches_per_sec
            );
        }
    }
}

/// Runs the preset. Fails when a trace cannot be read or a client cannot connect.
pub async fn run(config: &ReplayConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let traces: Vec<Arc<Trace>> = config
        .traces
        .iter()
        .map(|path| Trace::load(path, config.max_patches).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let mut session = Session::start(run, "replay", 1)?;
    // Document `t * copies + k` is copy `k` of trace `t`.
    let docs = session.doc_ids(traces.len() * config.copies)?;
    let sims = session.connect_all(&docs, 1, true).await?;
    let members = driver::members(&sims, docs.len());
    let n = sims.len();

    let schedule = session.begin(run.warmup, run.duration);
    let stop = CancellationToken::new();
    let (done, mut done_rx) = mpsc::channel(n.max(1));
    let editors: Vec<_> = sims
        .into_iter()
        .map(|sim| {
            let trace = Arc::clone(&traces[sim.doc as usize / config.copies]);
            Editor {
                doc: sim.doc,
                author: sim.client.author_id(),
                handle: sim.handle,
                events: sim.events,
                records: session.records(),
                schedule,
                pace: Pace::PerAck(config.burst),
                phase: 0.0,
                script: Patches { trace, next: 0 },
                done: done.clone(),
            }
            .spawn(stop.clone())
        })
        .collect();
    let finished = driver::typing_done(&mut done_rx, n, schedule.measure_end).await;
    let convergence =
        converge::check(&run.urls, run.token.as_deref(), &docs, &members, run.settle_timeout).await;
    stop.cancel();
    let edits = driver::join_editors(editors).await?;

    let mut report = ReplayReport { burst: config.burst, traces: Vec::new() };
    for (t, trace) in traces.iter().enumerate() {
        let copies = t * config.copies..(t + 1) * config.copies;
        let times: Vec<Duration> = finished
            .iter()
            .filter(|(doc, at)| copies.contains(&(*doc as usize)) && *at < schedule.measure_end)
            .map(|(_, at)| at.saturating_duration_since(schedule.start))
            .collect();
        let matched = members[copies.clone()].iter().flatten().filter(|h| h.text() == trace.expected).count();
        let secs = times.iter().max().copied().unwrap_or_default().as_secs_f64();
        report.traces.push(TraceResult {
            name: trace.name.clone(),
            patches: trace.patches.len(),
            expected_chars: trace.expected.chars().count(),
            copies: config.copies,
            finished: times.len(),
            matched,
            secs,
            patches_per_sec: if secs > 0.0 { trace.patches.len() as f64 / secs } else { 0.0 },
        });
    }
    // The rates are over the time it took to type everything (or the whole limit if it ran out).
    let all_done = finished.len() == n && finished.iter().all(|(_, at)| *at < schedule.measure_end);
    let last = finished.iter().map(|(_, at)| *at).max().unwrap_or(schedule.measure_end);
    let measured =
        if all_done { last.saturating_duration_since(schedule.measure_start) } else { run.duration };

    let params = Params {
        docs: docs.len(),
        clients_per_doc: 1,
        rate_per_client: 0.0,
        duration_secs: run.duration.as_secs_f64(),
        warmup_secs: run.warmup.as_secs_f64(),
    };
    let mut out = session.finish(params, measured, edits, convergence).await?;
    let names: Vec<&str> = traces.iter().map(|t| t.name.as_str()).collect();
    out.workload =
        format!("{} × {} copies, {} patches per ack", names.join(", "), config.copies, config.burst);
    out.replay = Some(report);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_trace_expects_the_text_of_its_patches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.json");
        let json = r#"{"startContent": "ab", "endContent": "xaéb!",
            "txns": [{"time": "t", "patches": [[1, 0, "é"], [0, 0, "x"]]}, {"patches": [[4, 0, "!"]]}]}"#;
        std::fs::write(&path, json).unwrap();
        let full = Trace::load(&path, None).unwrap();
        assert_eq!((full.name.as_str(), full.patches.len(), full.expected.as_str()), ("tiny", 4, "xaéb!"));
        assert_eq!(replay_locally(&full.patches).unwrap(), full.expected, "the shape is read right");
        let cut = Trace::load(&path, Some(2)).unwrap();
        assert_eq!((cut.patches.len(), cut.expected.as_str()), (2, "aéb"));
        assert_eq!(traces_in(dir.path()).unwrap(), vec![path]);
    }

    #[test]
    fn the_shipped_traces_are_found() {
        let traces = traces_in(Path::new(DEFAULT_TRACES_DIR)).unwrap();
        assert!(traces.iter().any(|p| p.ends_with("sveltecomponent.json.gz")), "{traces:?}");
    }
}
