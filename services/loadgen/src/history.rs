//! The `history` preset: how long it takes to open a document with a long history.
//!
//! A document of `--ops` versions (default 1,000,000) is written straight into the cluster's
//! Postgres event log, through the sequencer's own document state machine and the store's commit, as
//! a partition owner would have written it: a typist's keystrokes (85 % one-character inserts near
//! the previous position, 15 % deletes), the same events, and the sequencer's snapshots. Typing a
//! million ops through the gateways would take the cluster many minutes and measure nothing this
//! preset is about. The newest snapshot is left `--snapshot-every` versions behind the head (one
//! more than the sequencer's snapshot rule lets a reader meet), so every open reads the snapshot
//! and a full interval of events after it.
//!
//! Then, `--opens` times, a fresh connection to the next gateway sends `open` and the time until the
//! `snapshot` arrives is recorded; the connection closes before the next one, so each open finds
//! the document unloaded at its gateway and reads it from Postgres (a cold open); the connection's
//! close is complete (the gateway answered it) before the next open. Each snapshot must
//! hold the last version and the expected text. Last, one op is submitted on the document and its
//! ack timed: the partition owner loads the document cold as well.
//!
//! The seeding commits under a partition number of its own ([`SEED_PARTITION`], outside any
//! cluster's range), claimed like an owner would, so it never fences the sequencer that owns the
//! document's real partition; the store fences by partition and does not tie documents to them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_client::{ClientId, DocId, Operation};
use tandem_protocol::records::Submission;
use tandem_sequencer::{Decision, DocumentState, Fetched, Limits};
use tandem_store::postgres::{PostgresConfig, PostgresStore};
use tandem_store::{CommitBatch, EventStore};
use tokio_tungstenite::tungstenite::Message;

use crate::converge::Convergence;
use crate::driver::Session;
use crate::recorder;
use crate::report::{Edits, Latency, Params, Report};
use crate::wire;
use crate::RunConfig;

/// The partition the seeding commits under: far above any cluster's partition count.
pub const SEED_PARTITION: u32 = 1_000_000_000;
/// Longest wait for one answer of the server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The preset's parameters; validated (see [`crate::cli::HistoryArgs::validate`]).
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    pub run: RunConfig,
    /// The cluster's event log.
    pub postgres_url: String,
    /// Versions of history written before the opens.
    pub ops: u64,
    /// Timed opens.
    pub opens: usize,
    /// The sequencer's snapshot interval (`--snapshot-every` of `tandem-sequencer`).
    pub snapshot_every: u64,
    /// Events per seeding commit.
    pub batch: usize,
}

/// What only the `history` preset measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryReport {
    pub doc: String,
    /// Versions in the document's history.
    pub ops: u64,
    /// The version of its newest snapshot, and the events after it every open reads.
    pub snapshot_version: u64,
    pub tail_events: u64,
    /// Characters of the document's text.
    pub text_chars: usize,
    /// Time to write the history into the event log.
    pub seed_secs: f64,
    /// From sending `open` to receiving the whole `snapshot`, per open.
    pub open_ms: Latency,
    /// Every open, in order, in milliseconds.
    pub opens_ms: Vec<f64>,
    /// Snapshots that did not hold the last version or the expected text.
    pub wrong_snapshots: usize,
    /// From submitting one op on the document to its ack (the owner loads the document cold).
    pub first_op_ack_ms: Option<f64>,
}

impl HistoryReport {
    pub fn is_clean(&self) -> bool {
        self.wrong_snapshots == 0 && !self.opens_ms.is_empty() && self.first_op_ack_ms.is_some()
    }

    pub fn table(&self, out: &mut String) {
        let l = &self.open_ms;
        let _ = writeln!(
            out,
            "{:<16}{}: {} versions, {} characters, newest snapshot at {} ({} events after it); \
             written in {:.1} s",
            "history",
            self.doc,
            self.ops,
            self.text_chars,
            self.snapshot_version,
            self.tail_events,
            self.seed_secs
        );
        let _ = writeln!(
            out,
            "{:<16}{} cold opens, open → snapshot ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  \
             wrong snapshots {}",
            "opens", l.count, l.p50, l.p90, l.p99, l.max, self.wrong_snapshots
        );
        match self.first_op_ack_ms {
            Some(ms) => {
                let _ = writeln!(out, "{:<16}first op after the opens acknowledged in {ms:.2} ms", "");
            }
            None => {
                let _ = writeln!(out, "{:<16}the op after the opens was NOT acknowledged", "");
            }
        }
    }
}

pub async fn run(config: &HistoryConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let mut session = Session::start(run, "history", 1)?;
    let doc =
        DocId::parse(&format!("loadgen/{}/history", session.run_id)).context("build the document id")?;
    let mut report = HistoryReport { doc: doc.to_string(), ops: config.ops, ..HistoryReport::default() };

    let t0 = Instant::now();
    let seeded = seed(config, &doc, session.run_id.as_str()).await.context("write the history")?;
    report.seed_secs = t0.elapsed().as_secs_f64();
    report.snapshot_version = seeded.snapshot_version;
    report.tail_events = config.ops - seeded.snapshot_version;
    report.text_chars = seeded.text.chars().count();
    if run.progress {
        eprintln!(
            "history: {} versions written in {:.1} s ({} characters); opening it {} times",
            config.ops, report.seed_secs, report.text_chars, config.opens
        );
    }

    session.begin(Duration::ZERO, run.duration);
    let mut latency = recorder::histogram();
    for i in 0..config.opens {
        let url = &run.urls[i % run.urls.len()];
        let client = format!("lg-{}-open-{i}", session.run_id);
        let mut socket = Socket::connect(url, run.token.as_deref(), &client).await?;
        let (took, snapshot) = socket.open(&doc).await?;
        socket.close().await;
        latency.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        report.opens_ms.push(took.as_secs_f64() * 1000.0);
        let right = snapshot.version == config.ops && snapshot.text == seeded.text;
        if !right {
            report.wrong_snapshots += 1;
            eprintln!(
                "history: open {i} answered version {} with {} characters; expected {} with {}",
                snapshot.version,
                snapshot.text.chars().count(),
                config.ops,
                report.text_chars
            );
        }
    }
    // Microseconds recorded; the report is in milliseconds.
    report.open_ms = Latency::of(&latency);
    report.first_op_ack_ms = first_op(run, &doc, &session.run_id, config.ops).await?;

    let params =
        Params { docs: 1, clients_per_doc: 1, rate_per_client: 0.0, duration_secs: 0.0, warmup_secs: 0.0 };
    let convergence = Convergence {
        converged: report.wrong_snapshots == 0,
        documents: 1,
        clients: config.opens,
        diverged: report.wrong_snapshots,
        ..Convergence::default()
    };
    let mut out = session.finish(params, Duration::ZERO, Edits::default(), convergence).await?;
    out.workload = format!("{} cold opens of a document with {} versions", config.opens, config.ops);
    out.history = Some(report);
    Ok(out)
}

/// The document as seeded.
struct Seeded {
    snapshot_version: u64,
    text: String,
}

/// Writes `config.ops` versions of `doc` into the event log, as its partition owner would.
async fn seed(config: &HistoryConfig, doc: &DocId, run_id: &str) -> anyhow::Result<Seeded> {
    let store = PostgresStore::connect(PostgresConfig::new(&config.postgres_url))
        .await
        .context("connect to Postgres")?;
    // The services migrate at start; the preset may run first against a fresh database.
    store.migrate().await.context("migrate the event log")?;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let claim = store.claim_partition(SEED_PARTITION).await.context("claim the seeding partition")?;
    let limits = Limits::default();
    let mut state = DocumentState::new(doc.clone());
    let client = ClientId::parse(&format!("lg-{run_id}-history")).context("build the client id")?;
    let mut rng = SmallRng::seed_from_u64(config.run.seed);
    let mut cursor = 0usize;
    let mut commit = claim.last_commit;
    // The newest snapshot the sequencer's rule would leave a full interval behind the head.
    let last_snapshot = config
        .ops
        .saturating_sub(1)
        .checked_div(config.snapshot_every)
        .map_or(0, |intervals| intervals * config.snapshot_every);
    let mut seq = 0u64;
    while state.version() < config.ops {
        let mut events = Vec::with_capacity(config.batch);
        let batch_end = (state.version() + config.batch as u64).min(config.ops);
        while state.version() < batch_end {
            let len = state.text().len_chars();
            cursor = cursor.min(len);
            let op = if len > 0 && rng.gen_bool(0.15) && cursor > 0 {
                cursor -= 1;
                Operation::from_patch(len, cursor, 1, "")
            } else {
                let letter = char::from(b'a' + rng.gen_range(0..26u8));
                cursor += 1;
                Operation::from_patch(len, cursor - 1, 0, &letter.to_string())
            }
            .context("build a keystroke")?;
            seq += 1;
            let sub = Submission {
                author: String::new(),
                delete_document: false,
                doc: doc.clone(),
                client: client.clone(),
                seq,
                base: state.version(),
                op,
            };
            match state.decide(&sub, &limits, Fetched::Nothing) {
                Decision::Commit(event) => events.push(event),
                other => bail!("the state machine did not commit keystroke {seq}: {other:?}"),
            }
            if state.version() == last_snapshot {
                // The snapshot is written after the commit that makes it durable, below.
                break;
            }
        }
        commit += 1;
        let batch = CommitBatch {
            deletions: Vec::new(),
            partition: SEED_PARTITION,
            epoch: claim.epoch,
            next_offset: None,
            events,
            rejections: Vec::new(),
            // Nobody reads the seeding partition's outbox: mark every earlier commit published.
            published_through: Some(commit - 1),
            expected_commit: Some(commit),
        };
        store.commit(&batch).await.context("commit a batch of history")?;
        state.mark_durable(state.version(), &limits);
        if state.version() == last_snapshot && last_snapshot > 0 {
            // Every interval's snapshot would be replaced by the next; only the newest is kept.
            let snapshot = state.snapshot_due(1).context("a snapshot is due at the head")?;
            store.write_snapshot(&snapshot).await.context("write the snapshot")?;
        }
    }
    store.mark_published(SEED_PARTITION, claim.epoch, commit).await.context("mark the history published")?;
    Ok(Seeded { snapshot_version: last_snapshot, text: state.text().to_string() })
}

/// A snapshot as the gateway sent it.
struct SnapshotMessage {
    version: u64,
    text: String,
}

/// A bare protocol connection: the opens are timed without a client library in the way.
struct Socket {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Socket {
    async fn connect(url: &str, token: Option<&str>, client: &str) -> anyhow::Result<Self> {
        let request = wire::request(url, token)?;
        let (ws, _) = tokio::time::timeout(ANSWER_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .with_context(|| format!("connect to {url}: no answer"))?
            .with_context(|| format!("connect to {url}"))?;
        let mut socket = Self { ws };
        socket.send(json!({"type": "hello", "protocol": 1, "client": client})).await?;
        socket.expect("welcome").await?;
        Ok(socket)
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(message.to_string())).await.context("send a message")
    }

    /// The next message of type `kind`, failing on an `error`, the end of the connection, or
    /// [`ANSWER_TIMEOUT`] without it.
    async fn expect(&mut self, kind: &str) -> anyhow::Result<Value> {
        tokio::time::timeout(ANSWER_TIMEOUT, wire::read_until(&mut self.ws, kind))
            .await
            .with_context(|| format!("no {kind} within {ANSWER_TIMEOUT:?}"))?
    }

    /// Opens `doc`: the time from sending `open` to having the whole snapshot.
    async fn open(&mut self, doc: &DocId) -> anyhow::Result<(Duration, SnapshotMessage)> {
        let start = Instant::now();
        self.send(json!({"type": "open", "doc": doc.as_str()})).await?;
        let snapshot = self.expect("snapshot").await?;
        let took = start.elapsed();
        let version = snapshot["version"].as_u64().context("a snapshot without a version")?;
        let text = snapshot["text"].as_str().context("a snapshot without a text")?.to_owned();
        Ok((took, SnapshotMessage { version, text }))
    }

    /// Closes and waits for the gateway's side of the close, so the next open finds the document
    /// unsubscribed (and, with no other reader, unloaded).
    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(ANSWER_TIMEOUT, self.ws.next()).await {}
    }
}

/// Submits one op at the end of the document and times its ack; `None` if it was not acknowledged.
async fn first_op(run: &RunConfig, doc: &DocId, run_id: &str, version: u64) -> anyhow::Result<Option<f64>> {
    let mut socket =
        Socket::connect(&run.urls[0], run.token.as_deref(), &format!("lg-{run_id}-writer")).await?;
    let (_, snapshot) = socket.open(doc).await?;
    let len = snapshot.text.chars().count();
    let op = Operation::from_patch(len, len, 0, "!").context("build the op")?;
    let start = Instant::now();
    socket.send(json!({"type": "op", "doc": doc.as_str(), "seq": 1, "base": version, "op": op})).await?;
    let acked = match socket.expect("ack").await {
        Ok(_) => Some(start.elapsed().as_secs_f64() * 1000.0),
        Err(e) => {
            eprintln!("history: the op after the opens: {e:#}");
            None
        }
    };
    socket.close().await;
    Ok(acked)
}
