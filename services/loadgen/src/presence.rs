//! The `presence` preset: how long a caret takes from one gateway to another, next to how long an op
//! takes, under the same typing load, measured on the same clients.
//!
//! D documents, each with two editors on different gateways (the first on `--url` i, the second on
//! the next one). Each editor types R keystrokes a second at the end of the text and, with every
//! keystroke, announces its caret (`presence`, in the text of its server version). Both the op and
//! the presence carry a marker the other editor recognises: each keystroke's inserted character (one
//! code point unique in the document per keystroke) and the presence's `name`. The other editor
//! records, per keystroke, the time from the keystroke to its arrival: the op's remote latency
//! (through the sequencer, Kafka, Postgres and back out; a keystroke typed while the editor's
//! previous op is unacknowledged waits for that ack, as in the `typing` preset) and the caret's
//! (gateway → `tandem.presence` → gateway). Everything is sent and received in this process, on
//! one clock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::CommonArgs;
use crate::wire;

/// How long the last keystrokes get to arrive once the typing stops.
const DRAIN: Duration = Duration::from_secs(3);
/// Code points of the markers: CJK Extension B, 42,000 of them, one per keystroke of a document.
const MARKER_BASE: u32 = 0x20000;
const MARKERS: u64 = 42_000;

#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Documents (D), each with two editors on two gateways.
    #[arg(long, default_value_t = 50)]
    pub docs: usize,
    /// Keystrokes per second of each editor (R); each announces the caret too.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
}

/// Latencies of one kind, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Sent while measuring but never seen by the other editor.
    pub lost: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceReport {
    pub urls: Vec<String>,
    pub docs: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub label: Option<String>,
    /// Remote latency of ops: sent by one editor, received as `op` by the other.
    pub op: Latency,
    /// Latency of carets: `presence` sent by one editor, received by the other.
    pub presence: Latency,
    /// presence p99 − op p99 (target: at most 10 ms).
    pub p99_gap_ms: f64,
    /// The slowest op and caret sent in each second of the measuring time, ms.
    pub op_slowest_by_second_ms: Vec<f64>,
    pub presence_slowest_by_second_ms: Vec<f64>,
    pub errors: Vec<String>,
}

impl PresenceReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "presence: {} documents × 2 editors, {} keystrokes/s each, {:.0} s measured, gateways {}",
            self.docs,
            self.rate,
            self.duration_s,
            self.urls.join(" ")
        );
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "lost"
        );
        for (name, l) in [("op", &self.op), ("presence", &self.presence)] {
            let _ = writeln!(
                out,
                "{name:<10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6}",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.lost
            );
        }
        let slowest =
            |by_second: &[f64]| by_second.iter().map(|ms| format!("{ms:.0}")).collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "slowest op per second (ms):     {}", slowest(&self.op_slowest_by_second_ms));
        let _ =
            writeln!(out, "slowest caret per second (ms):  {}", slowest(&self.presence_slowest_by_second_ms));
        let verdict = if self.p99_gap_ms <= 10.0 { "within" } else { "NOT within" };
        let _ =
            writeln!(out, "presence p99 − op p99 = {:+.2} ms ({verdict} the 10 ms target)", self.p99_gap_ms);
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}

/// What one editor sent while measuring, by marker, for the other to look up.
#[derive(Default)]
struct Sent {
    ops: HashMap<char, Instant>,
    presences: HashMap<String, Instant>,
}

/// What both editors of all documents observed.
struct Observed {
    op: Histogram<u64>,
    presence: Histogram<u64>,
    /// The slowest sample sent in each second of the measuring time, µs: where the tail comes from.
    op_by_second: Vec<u64>,
    presence_by_second: Vec<u64>,
    errors: Vec<String>,
}

impl Observed {
    fn record(&mut self, op: bool, sent: Instant, from: Instant, micros: u64) {
        let (histogram, by_second) = if op {
            (&mut self.op, &mut self.op_by_second)
        } else {
            (&mut self.presence, &mut self.presence_by_second)
        };
        let _ = histogram.record(micros.max(1));
        let second = sent.saturating_duration_since(from).as_secs() as usize;
        if let Some(slowest) = by_second.get_mut(second) {
            *slowest = (*slowest).max(micros);
        }
    }
}

struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }
}

/// Runs the preset from the command line: the table on stdout, `--json` if asked; exit 2 when
/// something was lost or an error came, or the gap missed the target.
pub fn run_cli(args: &PresenceArgs, workers: usize) -> ExitCode {
    if args.docs == 0 || !(args.rate > 0.0 && args.rate <= 20.0) {
        eprintln!("tandem-loadgen: --docs must be at least 1 and --rate above 0 and at most 20 (the presence limit)");
        return ExitCode::from(64);
    }
    let report = match crate::cli::runtime(workers).block_on(run(args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tandem-loadgen: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = &args.common.json {
        let json = serde_json::to_string_pretty(&report).expect("a report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("tandem-loadgen: write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let clean = report.errors.is_empty() && report.op.lost == 0 && report.presence.lost == 0;
    if clean && report.p99_gap_ms <= 10.0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

pub async fn run(args: &PresenceArgs) -> anyhow::Result<PresenceReport> {
    let common = &args.common;
    let started = Instant::now();
    let window =
        Arc::new(Window { from: started + common.warmup, until: started + common.warmup + common.duration });
    let observed = Arc::new(Mutex::new(Observed {
        op: Histogram::new(3).expect("a histogram"),
        presence: Histogram::new(3).expect("a histogram"),
        op_by_second: vec![0; common.duration.as_secs() as usize + 1],
        presence_by_second: vec![0; common.duration.as_secs() as usize + 1],
        errors: Vec::new(),
    }));
    let run_id = format!("{:x}", rand::random::<u32>());
    let mut sent_all = Vec::new();
    let mut tasks = Vec::new();
    for d in 0..args.docs {
        let doc = format!("presence-{run_id}-{d}");
        let sent = [Arc::new(Mutex::new(Sent::default())), Arc::new(Mutex::new(Sent::default()))];
        for me in 0..2 {
            let editor = Editor {
                url: common.urls[(d + me) % common.urls.len()].clone(),
                token: common.token.clone(),
                doc: doc.clone(),
                me,
                rate: args.rate,
                mine: sent[me].clone(),
                theirs: sent[1 - me].clone(),
                window: window.clone(),
                observed: observed.clone(),
            };
            tasks.push(tokio::spawn(editor.run()));
        }
        sent_all.push(sent);
    }
    if !common.quiet {
        eprintln!(
            "{} editors typing; measuring after {:?} for {:?}",
            tasks.len(),
            common.warmup,
            common.duration
        );
    }
    for task in tasks {
        if let Err(e) = task.await.context("an editor task")? {
            observed.lock().expect("observed lock").errors.push(format!("{e:#}"));
        }
    }
    // What is still in the maps was sent while measuring and never arrived.
    let (mut ops_lost, mut presences_lost) = (0, 0);
    for pair in &sent_all {
        for sent in pair {
            let sent = sent.lock().expect("sent lock");
            ops_lost += sent.ops.values().filter(|at| window.contains(**at)).count() as u64;
            presences_lost += sent.presences.values().filter(|at| window.contains(**at)).count() as u64;
        }
    }
    let observed = observed.lock().expect("observed lock");
    let op = latency(&observed.op, ops_lost);
    let presence = latency(&observed.presence, presences_lost);
    Ok(PresenceReport {
        urls: common.urls.clone(),
        docs: args.docs,
        rate: args.rate,
        duration_s: common.duration.as_secs_f64(),
        label: common.label.clone(),
        p99_gap_ms: presence.p99_ms - op.p99_ms,
        op_slowest_by_second_ms: observed.op_by_second.iter().map(|m| *m as f64 / 1000.0).collect(),
        presence_slowest_by_second_ms: observed
            .presence_by_second
            .iter()
            .map(|m| *m as f64 / 1000.0)
            .collect(),
        op,
        presence,
        errors: observed.errors.clone(),
    })
}

fn latency(histogram: &Histogram<u64>, lost: u64) -> Latency {
    let ms = |micros: u64| micros as f64 / 1000.0;
    Latency {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        lost,
    }
}

struct Editor {
    url: String,
    token: Option<String>,
    doc: String,
    me: usize,
    rate: f64,
    mine: Arc<Mutex<Sent>>,
    theirs: Arc<Mutex<Sent>>,
    window: Arc<Window>,
    observed: Arc<Mutex<Observed>>,
}

impl Editor {
    async fn run(self) -> anyhow::Result<()> {
        let request = wire::request(&self.url, self.token.as_deref())?;
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("connect {}", self.url))?;
        let client = format!("presence-{}-{}", self.doc.rsplit('-').next().unwrap_or("0"), self.me);
        ws.send(Message::text(json!({"type": "hello", "protocol": 1, "client": client}).to_string())).await?;
        wire::read_until(&mut ws, "welcome").await?;
        ws.send(Message::text(json!({"type": "open", "doc": self.doc}).to_string())).await?;
        let snapshot = wire::read_until(&mut ws, "snapshot").await?;
        let mut version = snapshot["version"].as_u64().unwrap_or(0);
        let mut len = snapshot["text"].as_str().map_or(0, |t| t.chars().count() as u64);
        // Join the document's presence, so the other editor's carets come here.
        ws.send(Message::text(json!({"type": "presence", "doc": self.doc}).to_string())).await?;

        let period = Duration::from_secs_f64(1.0 / self.rate);
        // Editors start out of step, as people do.
        let phase = period.mul_f64(rand::random::<f64>());
        let mut keystrokes = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        keystrokes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut seq, mut count) = (0u64, 0u64);
        // Characters typed while an op is in flight, sent together after its ack.
        let mut waiting = String::new();
        let mut in_flight: Option<u64> = None; // characters of the op in flight
        let stop = self.window.until;
        let end = stop + DRAIN;
        loop {
            tokio::select! {
                _ = keystrokes.tick(), if Instant::now() < stop => {
                    count += 1;
                    // Markers of the two editors never collide: even and odd.
                    let index = (count * 2 + self.me as u64) % MARKERS;
                    let marker = char::from_u32(MARKER_BASE + index as u32).expect("a CJK Extension B character");
                    let now = Instant::now();
                    // Timed from the keystroke, as the typing preset does: one typed while an op is
                    // in flight waits for its ack, and that wait is part of what the other editor sees.
                    self.mine.lock().expect("sent lock").ops.insert(marker, now);
                    waiting.push(marker);
                    if in_flight.is_none() {
                        seq += 1;
                        self.send_op(&mut ws, seq, version, len, &mut waiting, &mut in_flight).await?;
                    }
                    let name = format!("k{count}");
                    self.mine.lock().expect("sent lock").presences.insert(name.clone(), now);
                    // The caret at the end of the text of the server version: where its own
                    // unacknowledged typing starts.
                    let presence = json!({"type": "presence", "doc": self.doc, "version": version,
                        "anchor": len, "head": len, "name": name});
                    ws.send(Message::text(presence.to_string())).await?;
                }
                frame = tokio::time::timeout_at(end.into(), ws.next()) => {
                    let Ok(frame) = frame else { break };
                    let Some(frame) = frame else { anyhow::bail!("{}: the gateway closed the connection", self.doc) };
                    let Message::Text(text) = frame? else { continue };
                    let received = Instant::now();
                    let value: Value = serde_json::from_str(&text).context("a frame that is not JSON")?;
                    match value["type"].as_str() {
                        Some("op") => {
                            version = value["version"].as_u64().unwrap_or(version);
                            let (inserted, deleted) = shape(&value["op"]);
                            len = len + inserted.chars().count() as u64 - deleted;
                            for marker in inserted.chars() {
                                self.arrived_op(marker, received);
                            }
                        }
                        Some("ack") => {
                            version = value["version"].as_u64().unwrap_or(version);
                            len += in_flight.take().unwrap_or(0);
                            if !waiting.is_empty() {
                                seq += 1;
                                self.send_op(&mut ws, seq, version, len, &mut waiting, &mut in_flight).await?;
                            }
                        }
                        Some("presence") => {
                            if let Some(name) = value["name"].as_str() {
                                self.arrived_presence(name, received);
                            }
                        }
                        Some("error") => anyhow::bail!("{}: {value}", self.doc),
                        _ => {}
                    }
                }
            }
        }
        let _ = ws.close(None).await;
        Ok(())
    }

    /// Sends what was typed as one op at the end of the text of `version`.
    async fn send_op<S>(
        &self,
        ws: &mut S,
        seq: u64,
        version: u64,
        len: u64,
        waiting: &mut String,
        in_flight: &mut Option<u64>,
    ) -> anyhow::Result<()>
    where
        S: SinkExt<Message> + Unpin,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        let typed = std::mem::take(waiting);
        *in_flight = Some(typed.chars().count() as u64);
        let op = if len == 0 { json!([typed]) } else { json!([len, typed]) };
        let message = json!({"type": "op", "doc": self.doc, "seq": seq, "base": version, "op": op});
        ws.send(Message::text(message.to_string())).await?;
        Ok(())
    }

    fn arrived_op(&self, marker: char, at: Instant) {
        let Some(sent) = self.theirs.lock().expect("sent lock").ops.remove(&marker) else { return };
        if self.window.contains(sent) {
            let micros = at.saturating_duration_since(sent).as_micros() as u64;
            self.observed.lock().expect("observed lock").record(true, sent, self.window.from, micros);
        }
    }

    fn arrived_presence(&self, name: &str, at: Instant) {
        let Some(sent) = self.theirs.lock().expect("sent lock").presences.remove(name) else { return };
        if self.window.contains(sent) {
            let micros = at.saturating_duration_since(sent).as_micros() as u64;
            self.observed.lock().expect("observed lock").record(false, sent, self.window.from, micros);
        }
    }
}

/// What an op inserts, and how many characters it deletes.
fn shape(op: &Value) -> (String, u64) {
    let (mut inserted, mut deleted) = (String::new(), 0);
    for component in op.as_array().into_iter().flatten() {
        if let Some(text) = component.as_str() {
            inserted.push_str(text);
        } else if let Some(n) = component.as_i64().filter(|n| *n < 0) {
            deleted += n.unsigned_abs();
        }
    }
    (inserted, deleted)
}
