//! The `typing` preset: D documents × C clients, each typing R ops/s for the warm-up and then the
//! measuring time; 85 % one-character inserts at or near its previous position, 15 % one-character
//! deletes (a backspace).
//!
//! Each client is its own connection (spread round robin over the gateways, the others as its
//! failover list) with its own typist task. The typist types on a fixed schedule and never waits
//! for the server — edits made while an op is in flight are composed by the client, as in an editor —
//! so a slow server shows as latency, not as a lower offered rate. It also takes its client's
//! events: an ack turns the keystrokes it carried into a [`Record::Commit`], another client's op
//! into a [`Record::Arrival`], both sent to the [recorder](crate::recorder).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_client::{Client, ClientError, ClientEvent, ClientId, ClientOptions, DocHandle, DocId};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::converge;
use crate::recorder::{self, Record, Recorder, RECORD_CAPACITY};
use crate::report::{Edits, Params, Report};
use crate::{RunConfig, Schedule};

/// Share of keystrokes that are a backspace (when there is a character before the cursor).
const DELETE_SHARE: f64 = 0.15;
/// Share of keystrokes that first move the cursor by up to [`MAX_JUMP`] characters either way.
const JUMP_SHARE: f64 = 0.1;
const MAX_JUMP: i64 = 3;
/// What a typist types: letters, a space, and one character outside ASCII, since positions count
/// Unicode scalar values.
const ALPHABET: [&str; 28] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u",
    "v", "w", "x", "y", "z", " ", "é",
];
/// Capacity of each client's event channel (see [`ClientOptions::events`]).
const EVENT_CAPACITY: usize = 4096;
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 32;
/// Keystrokes one typist keeps waiting for their ack; older ones are counted as lost.
const MAX_PENDING_EDITS: usize = 100_000;
/// Time between the last connection and the first keystroke.
const START_DELAY: Duration = Duration::from_millis(200);
/// Longest wait for a client to shut down politely at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The preset's parameters; validated (see [`crate::cli::TypingArgs::validate`]).
#[derive(Debug, Clone)]
pub struct TypingConfig {
    pub run: RunConfig,
    /// Documents (D).
    pub docs: usize,
    /// Clients per document (C).
    pub clients: usize,
    /// Ops per second per client (R).
    pub rate: f64,
}

/// One simulated editor before it starts typing.
struct Sim {
    doc: u32,
    client: Client,
    handle: DocHandle,
    events: mpsc::Receiver<ClientEvent>,
}

/// Runs the preset against the gateways and returns its report. Fails only when the load cannot be
/// set up (a client cannot connect or open its document); what goes wrong under load is in the report.
pub async fn run(config: &TypingConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let run_id: String = {
        let mut rng = SmallRng::seed_from_u64(run.seed ^ u64::from(std::process::id()));
        (0..8).map(|_| char::from(b'a' + rng.gen_range(0..26))).collect()
    };
    let docs: Vec<DocId> = (0..config.docs)
        .map(|d| DocId::parse(&format!("loadgen/{run_id}/{d}")).context("build a document id"))
        .collect::<anyhow::Result<_>>()?;
    if run.progress {
        eprintln!(
            "run {run_id}, seed {}: connecting {} clients to {}",
            run.seed,
            config.docs * config.clients,
            run.urls.join(" ")
        );
    }
    let sims = connect_all(config, &run_id, &docs).await?;

    let schedule = Schedule::new(Instant::now() + START_DELAY, run.warmup, run.duration);
    let clients: Vec<Client> = sims.iter().map(|s| s.client.clone()).collect();
    let mut members: Vec<Vec<DocHandle>> = vec![Vec::new(); config.docs];
    for sim in &sims {
        members[sim.doc as usize].push(sim.handle.clone());
    }
    let (records, records_rx) = mpsc::channel(RECORD_CAPACITY);
    let recorder = tokio::spawn(recorder::collect(
        records_rx,
        Recorder::new(schedule, config.clients),
        run.progress.then(|| clients.clone()),
    ));
    let stop = CancellationToken::new();
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let typists: Vec<_> = sims
        .into_iter()
        .enumerate()
        .map(|(i, sim)| {
            let typist = Typist {
                doc: sim.doc,
                author: sim.client.client_id().clone(),
                handle: sim.handle,
                events: sim.events,
                records: records.clone(),
                schedule,
                period,
                rng: SmallRng::seed_from_u64(run.seed.wrapping_add(i as u64)),
                pos: 0,
                pending: VecDeque::new(),
                edits: Edits::default(),
            };
            tokio::spawn(typist.run(stop.clone()))
        })
        .collect();
    drop(records); // the recorder ends once every typist has

    tokio::time::sleep_until(schedule.measure_end.into()).await;
    let convergence =
        converge::check(&run.urls, run.token.as_deref(), &docs, &members, run.settle_timeout).await;
    stop.cancel();
    let mut edits = Edits::default();
    for typist in typists {
        edits.add(&typist.await.context("a typist task panicked")?);
    }
    let recorded = recorder.await.context("the recorder task panicked")?;

    let params = Params {
        docs: config.docs,
        clients_per_doc: config.clients,
        rate_per_client: config.rate,
        duration_secs: run.duration.as_secs_f64(),
        warmup_secs: run.warmup.as_secs_f64(),
    };
    let report = Report::build("typing", run, &run_id, params, edits, recorded, &clients, convergence);
    futures::future::join_all(clients.iter().map(|c| tokio::time::timeout(SHUTDOWN_TIMEOUT, c.shutdown())))
        .await;
    Ok(report)
}

/// Connects every client and opens its document, a bounded number at a time; client `i` edits
/// document `i / C` through gateway `i mod G`, so the clients of a document sit on different gateways
/// whenever there are several.
async fn connect_all(config: &TypingConfig, run_id: &str, docs: &[DocId]) -> anyhow::Result<Vec<Sim>> {
    let total = config.docs * config.clients;
    futures::stream::iter(0..total)
        .map(|i| connect_one(config, run_id, docs, i))
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

async fn connect_one(config: &TypingConfig, run_id: &str, docs: &[DocId], i: usize) -> anyhow::Result<Sim> {
    let urls = &config.run.urls;
    let (d, c) = (i / config.clients, i % config.clients);
    let first = i % urls.len();
    let url = &urls[first];
    let (events, rx) = mpsc::channel(EVENT_CAPACITY);
    let options = ClientOptions {
        client_id: Some(ClientId::parse(&format!("lg-{run_id}-{d}-{c}")).context("build a client id")?),
        token: config.run.token.clone(),
        fallback_urls: (1..urls.len()).map(|k| urls[(first + k) % urls.len()].clone()).collect(),
        events: Some(events),
        ..ClientOptions::default()
    };
    let client =
        Client::connect(url, options).await.with_context(|| format!("connect client {i} to {url}"))?;
    let handle = client.open(&docs[d]).await.with_context(|| format!("open {} on {url}", docs[d]))?;
    Ok(Sim { doc: u32::try_from(d).context("document index")?, client, handle, events: rx })
}

/// One simulated editor: types on schedule and reports its client's events.
struct Typist {
    doc: u32,
    author: ClientId,
    handle: DocHandle,
    events: mpsc::Receiver<ClientEvent>,
    records: mpsc::Sender<Record>,
    schedule: Schedule,
    period: Duration,
    rng: SmallRng,
    /// The cursor: where the last keystroke left it.
    pos: usize,
    /// Keystrokes waiting for their ack: the `seq` that carries each, and when it was made.
    pending: VecDeque<(u64, Instant)>,
    edits: Edits,
}

impl Typist {
    /// Types until the measuring window closes and reports events until `stop`.
    async fn run(mut self, stop: CancellationToken) -> Edits {
        // A random phase, so the clients do not all type in the same millisecond.
        let first = self.schedule.start + self.period.mul_f64(self.rng.gen::<f64>());
        let mut ticks = tokio::time::interval_at(first.into(), self.period);
        // A typist that fell behind (the load generator was starved) skips keystrokes rather than
        // bursting; the report shows it as submitted below offered.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (mut typing, mut events_open) = (true, true);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                event = self.events.recv(), if events_open => match event {
                    Some(event) => self.on_event(event),
                    None => events_open = false,
                },
                _ = ticks.tick(), if typing => {
                    if Instant::now() >= self.schedule.measure_end {
                        typing = false;
                    } else {
                        self.type_one();
                    }
                }
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.on_event(event);
        }
        let schedule = self.schedule;
        self.edits.unacked += self.pending.iter().filter(|(_, at)| schedule.measures(*at)).count() as u64;
        self.edits
    }

    fn type_one(&mut self) {
        let len = self.handle.len_chars();
        if self.rng.gen_bool(JUMP_SHARE) {
            let moved = self.pos as i64 + self.rng.gen_range(-MAX_JUMP..=MAX_JUMP);
            self.pos = usize::try_from(moved.max(0)).unwrap_or(0);
        }
        self.pos = self.pos.min(len);
        let backspace = self.pos > 0 && self.rng.gen_bool(DELETE_SHARE);
        let at = Instant::now();
        let result = if backspace {
            self.handle.splice(self.pos - 1, 1, "")
        } else {
            let ch = ALPHABET[self.rng.gen_range(0..ALPHABET.len())];
            self.handle.splice(self.pos, 0, ch)
        };
        let measured = self.schedule.measures(at);
        match result {
            Ok(seq) => {
                self.pos = if backspace { self.pos - 1 } else { self.pos + 1 };
                if self.pending.len() >= MAX_PENDING_EDITS {
                    if let Some((_, old)) = self.pending.pop_front() {
                        self.edits.lost += u64::from(self.schedule.measures(old));
                    }
                }
                self.pending.push_back((seq, at));
                self.edits.submitted += u64::from(measured);
            }
            Err(e) => {
                let kind = match e {
                    // Another client's op shortened the text between reading its length and the edit.
                    ClientError::Ot(_) => "raced_with_remote_op",
                    ClientError::Resyncing(_) => "document_reloading",
                    ClientError::NotOpen(_) => "document_not_open",
                    ClientError::Closed(_) => "client_closed",
                    _ => "other",
                };
                *self.edits.refused.entry(kind.to_owned()).or_default() += 1;
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Acked { seq, version, at, .. } => {
                let mut submits = Vec::new();
                while let Some(&(s, made)) = self.pending.front() {
                    if s > seq {
                        break;
                    }
                    self.pending.pop_front();
                    if s == seq {
                        submits.push(made);
                    } else {
                        // Its op was rejected (or its ack event dropped): never acknowledged.
                        self.edits.lost += u64::from(self.schedule.measures(made));
                    }
                }
                let author = self.author.clone();
                self.send(Record::Commit { doc: self.doc, version, author, submits, acked_at: at });
            }
            ClientEvent::RemoteOp { version, author, at, .. } => {
                self.send(Record::Arrival { doc: self.doc, version, author, at });
            }
        }
    }

    fn send(&mut self, record: Record) {
        if self.records.try_send(record).is_err() {
            self.edits.records_dropped += 1;
        }
    }
}

impl Edits {
    fn add(&mut self, other: &Edits) {
        self.submitted += other.submitted;
        self.lost += other.lost;
        self.unacked += other.unacked;
        self.records_dropped += other.records_dropped;
        for (kind, n) in &other.refused {
            *self.refused.entry(kind.clone()).or_default() += n;
        }
    }
}
