//! The typing presets (`typing`, `hot-doc`, `max`) against ShareDB (`--server sharedb`), for a
//! side-by-side with Tandem (`services/loadgen/sharedb-bench.sh`): the same keystrokes
//! ([`Keystrokes`], same seeds), the same schedule and records, so the same report and the same
//! convergence check, through a client of ShareDB's own protocol ([`crate::sharedb`]).
//!
//! Each simulated client is one task owning one WebSocket and one [`Replica`] of its document, which
//! behaves as ShareDB's browser client (`client/doc.js`): one op in flight, the keystrokes made
//! meanwhile composed into one pending op, incoming ops transformed against both with the client's
//! own ops on the left of a tie (`transformX`), with ops of ShareDB's own op type
//! ([`crate::text_unicode`], a port of `ot-text-unicode`). Latency is measured as for Tandem:
//! from a keystroke to the ack of the op that carries it, and to that op's arrival at the
//! document's other clients, matched by (document, version, author) in the
//! [recorder](crate::recorder).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use tandem_client::ClientId;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::converge::Convergence;
use crate::driver::{self, Session};
use crate::monitor::Counters;
use crate::recorder::Record;
use crate::report::{Edits, Report};
use crate::sharedb::{self, Incoming, Ws};
use crate::sharedb_replica::{Outcome, Replica};
use crate::typing::{Keystrokes, TypingConfig};
use crate::Schedule;

/// Documents set up at once (each: its clients connect and subscribe one after the other).
const CONNECT_CONCURRENCY: usize = 16;
/// Every settling wait gets at least this long (as in [`crate::converge`]).
const MIN_WAIT: Duration = Duration::from_secs(2);
/// Problems described in the report; further ones are only counted.
const MAX_PROBLEMS: usize = 10;
/// Errors described in the report; further ones are only counted.
const MAX_ERRORS_SHOWN: usize = 10;

/// A client connected and subscribed, before typing.
struct Conn {
    doc: u32,
    /// The document's ShareDB id.
    name: String,
    author: ClientId,
    ws: Ws,
    replica: Replica,
    /// Its ops and errors, for the progress line and the timeline.
    counters: Arc<Counters>,
}

/// What a client's task tells the convergence check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Status {
    version: u64,
    synced: bool,
}

/// What a client's task returns.
struct Finished {
    doc: u32,
    version: u64,
    text: String,
    edits: Edits,
    /// (code, message) of every error.
    errors: Vec<(String, String)>,
}

/// One simulated editor: types on its schedule, submits, takes the server's messages.
struct Editor {
    conn: Conn,
    keys: Keystrokes,
    records: mpsc::Sender<Record>,
    schedule: Schedule,
    period: Duration,
    phase: f64,
    status: watch::Sender<Status>,
    done: mpsc::Sender<(u32, Instant)>,
    edits: Edits,
    errors: Vec<(String, String)>,
}

impl Editor {
    async fn run(mut self, stop: CancellationToken) -> Finished {
        let first = self.schedule.start + self.period.mul_f64(self.phase.clamp(0.0, 1.0));
        let mut ticks = tokio::time::interval_at(first.into(), self.period);
        // As the Tandem editor: a starved load generator skips keystrokes rather than bursting.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (mut typing, mut open) = (true, true);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                frame = self.conn.ws.next(), if open => {
                    let at = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => self.on_text(&text, at),
                        Some(Ok(Message::Close(_))) | None => {
                            open = false;
                            self.error("connection_closed", "the server closed the connection".into());
                        }
                        Some(Err(e)) => {
                            open = false;
                            self.error("connection_closed", e.to_string());
                        }
                        Some(Ok(_)) => {}
                    }
                },
                _ = ticks.tick(), if typing => typing = self.type_one(),
            }
            if open {
                if let Some((seq, v, op)) = self.conn.replica.next_submit() {
                    let frame = sharedb::op_frame(&self.conn.name, v, self.conn.author.as_str(), seq, op);
                    self.conn.counters.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.conn.ws.send(frame).await {
                        open = false;
                        self.error("connection_closed", e.to_string());
                    }
                }
            }
            let now = Status { version: self.conn.replica.version, synced: self.conn.replica.is_synced() };
            self.status.send_if_modified(|s| std::mem::replace(s, now) != now);
        }
        let schedule = self.schedule;
        self.edits.unacked +=
            self.conn.replica.waiting_keys().filter(|at| schedule.measures(**at)).count() as u64;
        let _ = self.conn.ws.close(None).await;
        Finished {
            doc: self.conn.doc,
            version: self.conn.replica.version,
            text: self.conn.replica.text.to_string(),
            edits: self.edits,
            errors: self.errors,
        }
    }

    /// One keystroke, or false once the measuring window is over (reported on `done`).
    fn type_one(&mut self) -> bool {
        let at = Instant::now();
        if at >= self.schedule.measure_end {
            let _ = self.done.try_send((self.conn.doc, at));
            return false;
        }
        let key = self.keys.next_key(self.conn.replica.text.len_chars());
        match self.conn.replica.type_key(&key, at) {
            Ok(()) => {
                self.keys.typed(&key);
                self.edits.submitted += u64::from(self.schedule.measures(at));
            }
            Err(_) => *self.edits.refused.entry("other".to_owned()).or_default() += 1,
        }
        true
    }

    fn on_text(&mut self, text: &str, at: Instant) {
        let message: Incoming = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => return self.error("protocol_violation", format!("unreadable message: {e}")),
        };
        let (doc, author) = (self.conn.doc, self.conn.author.clone());
        for outcome in self.conn.replica.on_message(message, author.as_str()) {
            let record = match outcome {
                Outcome::Acked { version, keys } => {
                    Record::Commit { doc, version, author: author.clone(), submits: keys, acked_at: at }
                }
                Outcome::Remote { version, author } => match ClientId::parse(&author) {
                    Ok(author) => Record::Arrival { doc, version, author, at },
                    Err(e) => {
                        self.error(
                            "protocol_violation",
                            format!("op of version {version} from {author:?}: {e}"),
                        );
                        continue;
                    }
                },
                Outcome::Error { code, message, lost } => {
                    let schedule = self.schedule;
                    self.edits.lost += lost.iter().filter(|at| schedule.measures(**at)).count() as u64;
                    self.error(&code, message);
                    continue;
                }
            };
            if self.records.try_send(record).is_err() {
                self.edits.records_dropped += 1;
            }
        }
    }

    fn error(&mut self, code: &str, message: String) {
        self.conn.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.errors.push((code.to_owned(), format!("{} {}: {message}", self.conn.author, self.conn.name)));
    }
}

/// Connects the `clients` clients of document `d` one after the other: the first subscribes and
/// creates the document, the others subscribe to it once it exists (so no two creates race).
async fn connect_doc(session: &Session, d: usize, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let urls = &session.run.urls;
    let name = format!("{}/{d}", session.run_id);
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        let author = session.client_id(d, c)?;
        let url = &urls[(d * clients + c) % urls.len()];
        let mut ws =
            sharedb::connect(url, author.as_str()).await.with_context(|| format!("client {author}"))?;
        let (mut version, text) = sharedb::subscribe(&mut ws, &name).await?;
        let mut seq = 0;
        if c == 0 && version == 0 {
            seq = 1;
            sharedb::create(&mut ws, &name, author.as_str(), seq).await?;
            version = 1;
        }
        let doc = u32::try_from(d).context("document index")?;
        let replica = Replica::new(version, &text, seq);
        conns.push(Conn { doc, name: name.clone(), author, ws, replica, counters: session.register_other() });
    }
    Ok(conns)
}

/// Runs a typing preset against ShareDB servers (`--url ws://HOST:PORT`) and returns its report.
pub async fn run(config: &TypingConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let mut session = Session::start(run, config.preset, config.clients)?;
    let mut conns = Vec::with_capacity(config.docs * config.clients);
    {
        let mut connecting = std::pin::pin!(futures::stream::iter(0..config.docs)
            .map(|d| connect_doc(&session, d, config.clients))
            .buffered(CONNECT_CONCURRENCY));
        while let Some(doc) = connecting.next().await {
            conns.extend(doc?);
        }
    }
    let names: Vec<String> = (0..config.docs).map(|d| format!("{}/{d}", session.run_id)).collect();
    let n = conns.len();

    let schedule = session.begin(run.warmup, run.duration);
    let stop = CancellationToken::new();
    let (done, mut done_rx) = mpsc::channel(n.max(1));
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let mut statuses = Vec::with_capacity(n);
    let editors: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            // The same scripts as the Tandem run of the same seed.
            let mut keys = Keystrokes::new(run.seed.wrapping_add(i as u64));
            let phase = keys.phase();
            let (status, status_rx) = watch::channel(Status::default());
            statuses.push((conn.doc, status_rx));
            let editor = Editor {
                conn,
                keys,
                records: session.records(),
                schedule,
                period,
                phase,
                status,
                done: done.clone(),
                edits: Edits::default(),
                errors: Vec::new(),
            };
            tokio::spawn(editor.run(stop.clone()))
        })
        .collect();
    driver::typing_done(&mut done_rx, n, schedule.measure_end).await;

    let deadline = tokio::time::Instant::now() + run.settle_timeout;
    let (mut convergence, snapshots) = settle(&run.urls[0], &names, &mut statuses, deadline).await;
    stop.cancel();
    let mut finished = Vec::with_capacity(n);
    for editor in editors {
        finished.push(editor.await.context("an editor task panicked")?);
    }
    compare(&mut convergence, &names, &snapshots, &finished);

    let mut edits = Edits::default();
    for f in &finished {
        edits.add(&f.edits);
    }
    let mut report = session.finish(config.params(), run.duration, edits, convergence).await?;
    report.connections.clients = n;
    for (code, message) in finished.into_iter().flat_map(|f| f.errors) {
        report.errors.total += 1;
        if report.errors.first.len() < MAX_ERRORS_SHOWN {
            report.errors.first.push(format!("{code} {message}"));
        }
        *report.errors.by_code.entry(code).or_default() += 1;
    }
    Ok(report)
}

/// Waits for every client to be synced, fetches each document from a fresh connection, and waits for
/// every client to reach its document's version; returns what failed so far and the snapshots.
async fn settle(
    url: &str,
    names: &[String],
    statuses: &mut [(u32, watch::Receiver<Status>)],
    deadline: tokio::time::Instant,
) -> (Convergence, Vec<Result<(u64, String), String>>) {
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_WAIT);
    let mut result =
        Convergence { documents: names.len(), clients: statuses.len(), ..Convergence::default() };
    let synced = join_all(statuses.iter_mut().map(|(doc, rx)| async move {
        (*doc, tokio::time::timeout(left(), rx.wait_for(|s| s.synced)).await.map(|r| r.is_ok()))
    }))
    .await;
    for (doc, ok) in synced {
        if ok != Ok(true) {
            result.unsynced += 1;
            problem(&mut result, format!("{}: not synced", names[doc as usize]));
        }
    }
    let snapshots = tokio::time::timeout(left(), sharedb::fetch_all(url, names))
        .await
        .unwrap_or_else(|_| names.iter().map(|_| Err("the fetch timed out".to_owned())).collect());
    // Only a client's own task changes its replica: once each reached the fetched version, what it
    // returns after the stop is that version's text.
    let snapshots_ref = &snapshots;
    join_all(statuses.iter_mut().map(|(doc, rx)| async move {
        if let Ok((version, _)) = &snapshots_ref[*doc as usize] {
            let _ = tokio::time::timeout(left(), rx.wait_for(|s| s.version >= *version)).await;
        }
    }))
    .await;
    (result, snapshots)
}

/// Compares every client's final replica with its document's snapshot.
fn compare(
    result: &mut Convergence,
    names: &[String],
    snapshots: &[Result<(u64, String), String>],
    finished: &[Finished],
) {
    for (name, snapshot) in names.iter().zip(snapshots) {
        if let Err(e) = snapshot {
            result.unreadable += 1;
            problem(result, format!("{name}: no snapshot: {e}"));
        }
    }
    for f in finished {
        let name = &names[f.doc as usize];
        let Ok((version, text)) = &snapshots[f.doc as usize] else { continue };
        let diverged = if f.version != *version {
            Some(format!("{name}: at version {}, the server at {version}", f.version))
        } else if f.text != *text {
            Some(format!("{name}: {}", crate::converge::text_difference(*version, &f.text, text)))
        } else {
            None
        };
        if let Some(diverged) = diverged {
            result.diverged += 1;
            problem(result, diverged);
        }
    }
    result.converged = result.unsynced == 0 && result.unreadable == 0 && result.diverged == 0;
}

fn problem(result: &mut Convergence, text: String) {
    if result.problems.len() < MAX_PROBLEMS {
        result.problems.push(text);
    }
}
