//! What every preset shares: the [`Session`] of a run (its id, the monitor with the recorder, the
//! process watcher, the registry of clients, connecting them) and the [`Editor`], the task that
//! edits one document through one client on a [`Pace`], with a [`Script`] saying what to type.
//!
//! A preset builds on these: it starts a session, connects its clients, calls [`Session::begin`],
//! spawns editors (or not), waits, checks convergence, and turns everything into a report with
//! [`Session::finish`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{Stream, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_client::{
    Client, ClientError, ClientEvent, ClientId, ClientOptions, DocHandle, DocId, UndoOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::converge::Convergence;
use crate::monitor::{self, Clients, Counters, Monitor, Observed};
use crate::procstat::{Watched, Watcher};
use crate::recorder::{Record, RECORD_CAPACITY};
use crate::report::{Edits, Params, Report};
use crate::{RunConfig, Schedule};

/// Capacity of each client's event channel (see [`ClientOptions::events`]).
const EVENT_CAPACITY: usize = 4096;
/// Keystrokes one editor keeps waiting for their ack; older ones are counted as lost.
const MAX_PENDING_EDITS: usize = 100_000;
/// Time between the last connection and the first keystroke.
const START_DELAY: Duration = Duration::from_millis(200);
/// Longest wait for a client to shut down politely at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an editor paced by acks checks that its pipeline has not stalled (an op rejected, an
/// ack event dropped): when nothing is in flight, it types again.
const STALL_CHECK: Duration = Duration::from_millis(50);
/// Most keystrokes of a fixed pace typed at once when the editor is late: more were skipped.
const MAX_CATCH_UP: u32 = 64;

/// One run of a preset, from before the first connection to the report.
pub struct Session {
    /// The preset's name, for the report.
    pub preset: String,
    pub run: RunConfig,
    /// Names the run's documents (`loadgen/RUN/…`) and clients (`lg-RUN-…`), so that runs against
    /// one server never share a document.
    pub run_id: String,
    t0: Instant,
    clients: Clients,
    records: mpsc::Sender<Record>,
    begin: Option<oneshot::Sender<Schedule>>,
    schedule: Option<Schedule>,
    monitor: JoinHandle<Observed>,
    watcher: Watcher,
}

/// A connected client with its one open document.
pub struct Sim {
    /// Index of the document among the run's.
    pub doc: u32,
    pub client: Client,
    pub handle: DocHandle,
    /// The client's events, when asked for.
    pub events: Option<mpsc::Receiver<ClientEvent>>,
}

impl Session {
    /// Resolves the processes to watch and starts the watcher and the monitor. `clients_per_doc`
    /// counts the clients that edit a document together (each commit expects a delivery at every
    /// other one).
    pub fn start(run: &RunConfig, preset: &str, clients_per_doc: usize) -> anyhow::Result<Self> {
        let run_id: String = {
            let mut rng = SmallRng::seed_from_u64(run.seed ^ u64::from(std::process::id()));
            (0..8).map(|_| char::from(b'a' + rng.gen_range(0..26))).collect()
        };
        let mut processes =
            vec![Watched { name: "loadgen".to_owned(), pid: std::process::id(), with_children: false }];
        for spec in &run.watch {
            processes.push(spec.resolve()?);
        }
        if run.progress {
            let watched: Vec<String> = processes.iter().map(|w| format!("{}={}", w.name, w.pid)).collect();
            eprintln!(
                "{preset} run {run_id}, seed {}: {}; watching {}",
                run.seed,
                run.urls.join(" "),
                watched.join(" ")
            );
        }
        let t0 = Instant::now();
        let watcher = Watcher::start(processes, t0);
        let clients = Clients::default();
        let (records, records_rx) = mpsc::channel(RECORD_CAPACITY);
        let (begin, begin_rx) = oneshot::channel();
        let monitor = tokio::spawn(monitor::run(
            records_rx,
            begin_rx,
            Monitor {
                t0,
                clients: clients.clone(),
                processes: watcher.latest(),
                progress: run.progress,
                clients_per_doc,
            },
        ));
        Ok(Self {
            preset: preset.to_owned(),
            run: run.clone(),
            run_id,
            t0,
            clients,
            records,
            begin: Some(begin),
            schedule: None,
            monitor,
            watcher,
        })
    }

    /// `n` document ids of this run.
    pub fn doc_ids(&self, n: usize) -> anyhow::Result<Vec<DocId>> {
        (0..n)
            .map(|d| DocId::parse(&format!("loadgen/{}/{d}", self.run_id)).context("build a document id"))
            .collect()
    }

    /// The client id of client `c` of document `d` (stable, so the server sees resubmissions).
    pub fn client_id(&self, d: usize, c: usize) -> anyhow::Result<ClientId> {
        ClientId::parse(&format!("lg-{}-{d}-{c}", self.run_id)).context("build a client id")
    }

    /// Connects client `i` and opens its document: `per_doc` clients per document, client `i`
    /// editing document `i / per_doc` through gateway `i mod G` (so the clients of a document sit on
    /// different gateways whenever there are several), the other gateways as its failover list.
    pub async fn connect_one(
        &self,
        docs: &[DocId],
        per_doc: usize,
        i: usize,
        events: bool,
    ) -> anyhow::Result<Sim> {
        let urls = &self.run.urls;
        let d = i / per_doc;
        let first = i % urls.len();
        let url = &urls[first];
        let (events, rx) = if events {
            let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let options = ClientOptions {
            client_id: Some(self.client_id(d, i % per_doc)?),
            token: self.run.token.clone(),
            fallback_urls: (1..urls.len()).map(|k| urls[(first + k) % urls.len()].clone()).collect(),
            events,
            // The load generator measures the server: no undo history to transform on every op.
            undo: UndoOptions { depth: 0, ..UndoOptions::default() },
            ..ClientOptions::default()
        };
        let client = Client::connect(url, options)
            .await
            .with_context(|| format!("connect client {i} to {url}"))
            .map_err(explain_refusal)?;
        self.clients.push(client.clone());
        let handle = client.open(&docs[d]).await.with_context(|| format!("open {} on {url}", docs[d]))?;
        Ok(Sim { doc: u32::try_from(d).context("document index")?, client, handle, events: rx })
    }

    /// Connects `per_doc` clients to each of `docs`, `concurrency` at a time, in order; yields each
    /// one's outcome and how long it took.
    pub fn connect_each<'a>(
        &'a self,
        docs: &'a [DocId],
        per_doc: usize,
        events: bool,
        concurrency: usize,
    ) -> impl Stream<Item = (anyhow::Result<Sim>, Duration)> + 'a {
        futures::stream::iter(0..docs.len() * per_doc)
            .map(move |i| async move {
                let started = Instant::now();
                (self.connect_one(docs, per_doc, i, events).await, started.elapsed())
            })
            .buffered(concurrency.max(1))
    }

    /// Connects every client or fails with the first error: for presets whose load needs them all.
    pub async fn connect_all(
        &self,
        docs: &[DocId],
        per_doc: usize,
        events: bool,
    ) -> anyhow::Result<Vec<Sim>> {
        /// Clients connecting at once.
        const CONCURRENCY: usize = 32;
        let mut sims = Vec::with_capacity(docs.len() * per_doc);
        let mut stream = std::pin::pin!(self.connect_each(docs, per_doc, events, CONCURRENCY));
        while let Some((sim, _)) = stream.next().await {
            sims.push(sim?);
        }
        Ok(sims)
    }

    /// Starts the load: the warm-up begins shortly, then `duration` of measuring. Call once.
    pub fn begin(&mut self, warmup: Duration, duration: Duration) -> Schedule {
        let schedule = Schedule::new(Instant::now() + START_DELAY, warmup, duration);
        if let Some(begin) = self.begin.take() {
            let _ = begin.send(schedule);
        }
        self.schedule = Some(schedule);
        schedule
    }

    /// Seconds since the session started: the time axis of the report.
    pub fn elapsed_secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Where editors report.
    pub fn records(&self) -> mpsc::Sender<Record> {
        self.records.clone()
    }

    /// Every client connected so far.
    pub fn clients(&self) -> Vec<Client> {
        self.clients.all()
    }

    /// Registers a connected client that is not a Tandem [`Client`] (a ShareDB editor): the
    /// progress line and the timeline count it, with what it counts on the returned counters.
    pub fn register_other(&self) -> Arc<Counters> {
        self.clients.push_other()
    }

    /// Ends the run: stops the monitor and the watcher, builds the report, and shuts the clients
    /// down. `measured` is the length of the measuring window that the rates are computed over.
    pub async fn finish(
        self,
        params: Params,
        measured: Duration,
        edits: Edits,
        convergence: Convergence,
    ) -> anyhow::Result<Report> {
        let Session { preset, run, run_id, t0, clients, records, begin, schedule, monitor, watcher } = self;
        drop((records, begin));
        let observed = monitor.await.context("the monitor task panicked")?;
        let secs = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
        let window = schedule.map(|s| (secs(s.measure_start), secs(s.measure_start + measured)));
        let processes = watcher.finish(window).await;
        let clients = clients.all();
        let report = Report::build(crate::report::Outcome {
            preset: &preset,
            run: &run,
            run_id: &run_id,
            params,
            measured,
            window,
            edits,
            observed,
            clients: &clients,
            convergence,
            processes,
        });
        futures::future::join_all(
            clients.iter().map(|c| tokio::time::timeout(SHUTDOWN_TIMEOUT, c.shutdown())),
        )
        .await;
        Ok(report)
    }
}

/// Adds what to do about an upgrade refused with HTTP 429: every simulated client connects from
/// this machine, so the gateway's per-address connection limit counts them all.
pub fn explain_refusal(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("429") {
        e.context(
            "the gateway refused a connection (too many): raise its --max-connections-per-ip \
             (TANDEM_MAX_CONNECTIONS_PER_IP) for a load test from one machine",
        )
    } else {
        e
    }
}

/// What an editor types, one edit at a time.
pub trait Script: Send + 'static {
    /// Makes the next edit on `doc` and returns the `seq` of the op that carries it (see
    /// [`DocHandle::splice`]), or `None` once there is nothing left to type.
    fn edit(&mut self, doc: &DocHandle) -> Option<Result<u64, ClientError>>;

    /// Makes `n` edits that fell due together and returns what became of each, in order (fewer once
    /// there is nothing left to type). A script that can should compose them into one op, as an
    /// editor composes keystrokes while an op is in flight; the default makes them one by one.
    fn edit_many(&mut self, doc: &DocHandle, n: usize) -> Vec<Result<u64, ClientError>> {
        (0..n).map_while(|_| self.edit(doc)).collect()
    }
}

/// When an editor types.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// One edit every period, on a fixed schedule, whatever the server does: a slow server shows as
    /// latency, not as a lower offered rate; edits made while an op is in flight are composed by the
    /// client, as in an editor.
    Every(Duration),
    /// `n` edits each time an ack of this client comes back (and at the start): as fast as the server
    /// goes, each op carrying the `n` edits composed while the one before it was in flight.
    PerAck(usize),
}

/// One simulated editor: edits on its pace until the script or the measuring window ends, and
/// reports its client's events to the recorder until stopped.
pub struct Editor<S> {
    pub doc: u32,
    /// The id the other clients see on this editor's ops ([`Client::author_id`]).
    pub author: ClientId,
    pub handle: DocHandle,
    /// The client's events (see [`Sim::events`]); without them nothing is recorded.
    pub events: Option<mpsc::Receiver<ClientEvent>>,
    pub records: mpsc::Sender<Record>,
    pub schedule: Schedule,
    pub pace: Pace,
    /// Where in its period the first edit falls, as a fraction (so clients do not type in step).
    pub phase: f64,
    pub script: S,
    /// Told (this editor's document, the instant) when it stops typing.
    pub done: mpsc::Sender<(u32, Instant)>,
}

/// When a fixed-pace editor's next keystroke is due.
struct KeyClock {
    next: Instant,
    period: Duration,
}

/// The instant a fixed-pace keystroke's latency counts from.
#[derive(Clone, Copy)]
enum Stamp {
    /// When it fell due: it waited for an op in flight, which is the server's time.
    Due,
    /// When the editor typed it: its timer fired late, which is the load generator's time.
    Now,
}

/// What an editor tracks while it runs.
#[derive(Default)]
struct Progress {
    /// Keystrokes waiting for their ack: the `seq` that carries each, and when it was made.
    pending: VecDeque<(u64, Instant)>,
    edits: Edits,
}

impl<S: Script> Editor<S> {
    /// Spawns the editor; its task returns what became of the edits made in the measuring window.
    pub fn spawn(self, stop: CancellationToken) -> JoinHandle<Edits> {
        tokio::spawn(self.run(stop))
    }

    async fn run(mut self, stop: CancellationToken) -> Edits {
        let mut state = Progress::default();
        let (mut typing, mut events_open) = (true, self.events.is_some());
        match self.pace {
            Pace::Every(period) => {
                let first = self.schedule.start + period.mul_f64(self.phase.clamp(0.0, 1.0));
                let mut clock = KeyClock { next: first, period };
                loop {
                    // While an op is in flight, keystrokes are only composed into the buffer, which
                    // leaves with the ack: they are typed then, each stamped with the instant it was
                    // due, instead of waking this task once per keystroke (40,000 wake-ups a second
                    // at `max`). A lost ack event still lets typing resume after STALL_CHECK.
                    let wake = if self.handle.is_synced() { clock.next } else { clock.next + STALL_CHECK };
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        event = recv(&mut self.events), if events_open => match event {
                            Some(event) => {
                                if self.took_ack(&mut state, event) && typing {
                                    typing = self.type_due(&mut state, &mut clock, Stamp::Due);
                                }
                            }
                            None => events_open = false,
                        },
                        () = tokio::time::sleep_until(wake.into()), if typing => {
                            // Idle, the editor types when its timer fires: the timer's lateness
                            // (tokio's are rounded up to the millisecond) is the load generator's,
                            // not the server's, and the ShareDB editor stamps its keystrokes the
                            // same way. Keystrokes that fell due while an op was in flight waited
                            // on the server: they keep their due instant.
                            let stamp = if self.handle.is_synced() { Stamp::Now } else { Stamp::Due };
                            typing = self.type_due(&mut state, &mut clock, stamp);
                        }
                    }
                }
            }
            Pace::PerAck(n) => {
                let mut ticks = tokio::time::interval_at(self.schedule.start.into(), STALL_CHECK);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        event = recv(&mut self.events), if events_open => match event {
                            Some(event) => {
                                if self.took_ack(&mut state, event) && typing {
                                    typing = self.type_some(&mut state, n, None);
                                }
                            }
                            None => events_open = false,
                        },
                        _ = ticks.tick(), if typing => {
                            if self.handle.is_synced() {
                                typing = self.type_some(&mut state, n, None);
                            }
                        }
                    }
                }
            }
        }
        while let Some(Ok(event)) = self.events.as_mut().map(mpsc::Receiver::try_recv) {
            self.on_event(&mut state, event);
        }
        let schedule = self.schedule;
        state.edits.unacked += state.pending.iter().filter(|(_, at)| schedule.measures(*at)).count() as u64;
        state.edits
    }

    /// Types every keystroke of a fixed pace that is due by now, each stamped as `stamp` says.
    /// One that fell more than a period behind (the load generator was starved) is skipped rather
    /// than typed in a burst; the report shows it as submitted below offered.
    fn type_due(&mut self, state: &mut Progress, clock: &mut KeyClock, stamp: Stamp) -> bool {
        let now = Instant::now();
        if clock.next + clock.period * MAX_CATCH_UP < now {
            let behind =
                now.saturating_duration_since(clock.next).as_nanos() / clock.period.as_nanos().max(1);
            clock.next +=
                clock.period * u32::try_from(behind).unwrap_or(u32::MAX).saturating_sub(MAX_CATCH_UP);
        }
        let mut due = Vec::new();
        while clock.next <= now && clock.next < self.schedule.measure_end {
            due.push(clock.next);
            clock.next += clock.period;
        }
        // Composed into one op: typed one by one, the first would leave alone and the others wait
        // for its ack, a round trip more than an editor typing them as they fall due.
        let wanted = due.len();
        let results = if due.is_empty() { Vec::new() } else { self.script.edit_many(&self.handle, wanted) };
        let script_done = results.len() < wanted;
        for (due, result) in due.into_iter().zip(results) {
            let at = match stamp {
                Stamp::Due => due,
                Stamp::Now => now,
            };
            self.record_edit(state, at, result);
        }
        if script_done || clock.next >= self.schedule.measure_end {
            let _ = self.done.try_send((self.doc, now));
            return false;
        }
        true
    }

    /// Makes up to `n` edits, stamped `at` (now when `None`); false once typing is over (script done
    /// or window closed), which it reports on `done`.
    fn type_some(&mut self, state: &mut Progress, n: usize, at: Option<Instant>) -> bool {
        for _ in 0..n {
            let at = at.unwrap_or_else(Instant::now);
            let result = if at >= self.schedule.measure_end { None } else { self.script.edit(&self.handle) };
            let Some(result) = result else {
                let _ = self.done.try_send((self.doc, at));
                return false;
            };
            self.record_edit(state, at, result);
        }
        true
    }

    /// Books one edit made at `at`: pending until its ack, or refused.
    fn record_edit(&mut self, state: &mut Progress, at: Instant, result: Result<u64, ClientError>) {
        let measured = self.schedule.measures(at);
        match result {
            Ok(seq) => {
                if state.pending.len() >= MAX_PENDING_EDITS {
                    if let Some((_, old)) = state.pending.pop_front() {
                        state.edits.lost += u64::from(self.schedule.measures(old));
                    }
                }
                state.pending.push_back((seq, at));
                state.edits.submitted += u64::from(measured);
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
                *state.edits.refused.entry(kind.to_owned()).or_default() += 1;
            }
        }
    }

    /// Takes a client event; true when it was an ack, after which an editor types.
    fn took_ack(&mut self, state: &mut Progress, event: ClientEvent) -> bool {
        let acked = matches!(event, ClientEvent::Acked { .. });
        self.on_event(state, event);
        acked
    }

    fn on_event(&mut self, state: &mut Progress, event: ClientEvent) {
        match event {
            ClientEvent::Acked { seq, version, at, .. } => {
                let mut submits = Vec::new();
                while let Some(&(s, made)) = state.pending.front() {
                    if s > seq {
                        break;
                    }
                    state.pending.pop_front();
                    if s == seq {
                        submits.push(made);
                    } else {
                        // Its op was rejected (or its ack event dropped): never acknowledged.
                        state.edits.lost += u64::from(self.schedule.measures(made));
                    }
                }
                let author = self.author.clone();
                self.send(state, Record::Commit { doc: self.doc, version, author, submits, acked_at: at });
            }
            ClientEvent::RemoteOp { version, author, at, .. } => {
                self.send(state, Record::Arrival { doc: self.doc, version, author, at });
            }
        }
    }

    fn send(&self, state: &mut Progress, record: Record) {
        if self.records.try_send(record).is_err() {
            state.edits.records_dropped += 1;
        }
    }
}

/// Waits until `n` editors reported that they stopped typing, or until `deadline`; returns the
/// reports received.
pub async fn typing_done(
    done: &mut mpsc::Receiver<(u32, Instant)>,
    n: usize,
    deadline: Instant,
) -> Vec<(u32, Instant)> {
    let mut reports = Vec::with_capacity(n);
    while reports.len() < n {
        match tokio::time::timeout_at(deadline.into(), done.recv()).await {
            Ok(Some(report)) => reports.push(report),
            Ok(None) | Err(_) => break,
        }
    }
    reports
}

/// Collects what every editor returns once `stop` was cancelled.
pub async fn join_editors(editors: Vec<JoinHandle<Edits>>) -> anyhow::Result<Edits> {
    let mut edits = Edits::default();
    for editor in editors {
        edits.add(&editor.await.context("an editor task panicked")?);
    }
    Ok(edits)
}

/// The members of each document: the handles of its clients, for the convergence check.
pub fn members(sims: &[Sim], docs: usize) -> Vec<Vec<DocHandle>> {
    let mut members: Vec<Vec<DocHandle>> = vec![Vec::new(); docs];
    for sim in sims {
        members[sim.doc as usize].push(sim.handle.clone());
    }
    members
}

async fn recv(events: &mut Option<mpsc::Receiver<ClientEvent>>) -> Option<ClientEvent> {
    match events {
        Some(events) => events.recv().await,
        None => None,
    }
}
