//! Per-document fan-out: one task per document open on this gateway.
//!
//! The task is the only place that decides what a subscriber of its document receives, so the
//! snapshot or catch-up of a new subscriber and the live records can never interleave wrongly: each
//! subscriber gets every version after its starting point exactly once, in order. The task keeps the
//! document's current text (so opening a document already open here reads one version number from the
//! store, never its history) and the
//! version it has fanned out; a record that skips ahead, a shed record or a lagging stream makes it
//! read the missing versions from the event store before delivering anything after them.
//!
//! The task never waits for one subscriber. An `open` with `since` is answered from the task only
//! with its starting point: the task registers the subscriber at the version it has fanned out and
//! holds back the live frames for it, while the opening connection reads the versions from `since`
//! up to that point from the store in its own task, queues them, then takes the held frames until
//! none is left and the subscriber is live (`Command::Release`). An `open` further behind than
//! [`GatewayConfig::catch_up_limit`] gets a `snapshot` from the task's text instead.
//!
//! Nothing the hub spawns is unbounded: a rejection that finds its document's queue full waits in a
//! task of its own only up to [`GatewayConfig::max_spilled_rejections`] over the gateway (past it,
//! its author is closed as `overloaded`, reconnects and resends), resubmissions in flight are
//! limited by [`GatewayConfig::max_resubmissions_in_flight`], and a failed gap repair is retried
//! by the task's own timer.
//!
//! The Documents API (`crate::documents`) uses the same tasks (see the `api` submodule): it waits here
//! for the outcome of an op or a deletion it submitted, and its watchers get each committed version
//! from the task, in the same order as every WebSocket subscriber.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use ropey::Rope;
use tandem_bus::OpSubmitter;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord, Submission};
use tandem_protocol::ws::ServerMessage;
use tandem_protocol::{ClientId, DocId, ErrorCode, ProtocolError};
use tandem_store::{EventStore, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn, Span};

use crate::delivery_trace;
use crate::outbound::Outbound;
use crate::pending::PendingOps;
use crate::GatewayConfig;

/// Identifies one WebSocket connection within this gateway.
pub type ConnId = u64;

/// The pause before a failed gap repair is tried again.
const REPAIR_RETRY: Duration = Duration::from_millis(200);

/// What a document task is asked to do.
enum Command {
    Subscribe {
        conn: ConnId,
        client: ClientId,
        outbound: Outbound,
        since: Option<u64>,
        reply: oneshot::Sender<Result<Opening, ProtocolError>>,
    },
    /// The connection has queued its catch-up: hand it the live frames held back meanwhile, or,
    /// when none is left, make the subscriber live. `None`: the subscriber is gone (overloaded).
    Release {
        conn: ConnId,
        reply: oneshot::Sender<Option<Vec<Utf8Bytes>>>,
    },
    Unsubscribe {
        conn: ConnId,
    },
    /// A record from the stream, with the trace context it was published with.
    Record(Arc<SequencedRecord>, Option<Arc<str>>),
    /// An op of a subscriber is being handed to the sequencer: wait for its record.
    Track(Submission),
    /// Handing it over failed and the client was told to resend it: stop waiting.
    Untrack {
        client: ClientId,
        seq: u64,
    },
    /// Records may have been lost: compare with the store. Also sent when a Documents API call
    /// stops waiting, so the task lets go of it (and ends if nothing else is left).
    Wake,
    /// The Documents API waits for the outcome of an op or deletion it is about to submit.
    Await {
        waiter: api::Waiter,
        registered: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A Documents API watcher: every version after the one answered goes to it.
    Watch {
        id: u64,
        watcher: api::Watcher,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Unwatch {
        id: u64,
    },
}

/// How a subscription starts, as the document task answers it.
enum Opening {
    /// The `snapshot` (or `opened`) is queued; the subscriber is live.
    Done,
    /// The subscriber is registered at `up_to`, its live frames held back: the connection queues
    /// the versions after `after` up to `up_to` from the store, then `opened`, then releases it.
    CatchUp { after: u64, up_to: u64 },
}

/// Authors of rejections that could neither be queued for their document nor wait for room (see
/// [`GatewayConfig::max_spilled_rejections`]): the document task closes their connections as
/// `overloaded`. At most `capacity` authors are remembered; past that, every subscriber is closed.
struct LostRejections {
    any: AtomicBool,
    authors: Mutex<(HashSet<ClientId>, bool)>,
    capacity: usize,
}

impl LostRejections {
    fn new(capacity: usize) -> Self {
        Self { any: AtomicBool::new(false), authors: Mutex::new((HashSet::new(), false)), capacity }
    }

    fn record(&self, author: &ClientId) {
        let mut authors = self.authors.lock().expect("lost rejections lock");
        if authors.0.len() < self.capacity {
            authors.0.insert(author.clone());
        } else {
            authors.1 = true;
        }
        self.any.store(true, Ordering::Release);
    }

    /// The authors recorded since the last call, and whether some could not be named.
    fn take(&self) -> Option<(HashSet<ClientId>, bool)> {
        if !self.any.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut authors = self.authors.lock().expect("lost rejections lock");
        Some(std::mem::take(&mut *authors))
    }
}

struct Handle {
    tx: mpsc::Sender<Command>,
    /// Set when a record for this document was shed; the task repairs from the store.
    lagged: Arc<AtomicBool>,
    lost: Arc<LostRejections>,
}

/// The registry of document tasks on this gateway.
pub struct Hubs {
    docs: Mutex<HashMap<DocId, Handle>>,
    store: Arc<dyn EventStore>,
    submitter: Arc<dyn OpSubmitter>,
    config: GatewayConfig,
    /// Room for rejections waiting for their document's queue, over the gateway.
    spilled_rejections: Arc<Semaphore>,
    /// Room for resubmissions in flight, over the gateway.
    resubmissions: Arc<Semaphore>,
}

impl Hubs {
    pub fn new(
        store: Arc<dyn EventStore>,
        submitter: Arc<dyn OpSubmitter>,
        config: GatewayConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            docs: Mutex::new(HashMap::new()),
            store,
            submitter,
            spilled_rejections: Arc::new(Semaphore::new(config.max_spilled_rejections)),
            resubmissions: Arc::new(Semaphore::new(config.max_resubmissions_in_flight)),
            config,
        })
    }

    /// Waits for the record of an op about to be submitted and submits it again if it does not come
    /// (see [`crate::pending`]). Called before the submit, so the record (which can only follow it)
    /// always finds the op tracked. Never waits: if the document's queue is full, the op is not
    /// tracked and the client's own resubmission after a reconnect remains the remedy.
    pub fn track(&self, submission: Submission) {
        let docs = self.docs.lock().expect("hub registry lock");
        if let Some(handle) = docs.get(&submission.doc) {
            let _ = handle.tx.try_send(Command::Track(submission));
        }
    }

    /// The submit of a tracked op failed and its client resends it: the gateway does not. Never
    /// waits either; an op left tracked is only submitted once more, which deduplication makes safe.
    pub fn untrack(&self, submission: &Submission) {
        let docs = self.docs.lock().expect("hub registry lock");
        if let Some(handle) = docs.get(&submission.doc) {
            let command = Command::Untrack { client: submission.client.clone(), seq: submission.seq };
            let _ = handle.tx.try_send(command);
        }
    }

    /// Subscribes a connection to a document: the document's task sends the `snapshot` (or, with
    /// `since`, registers the subscriber and this caller queues the catch-up and `opened`), then
    /// every later version. The catch-up is read from the store here, in the caller's task (the
    /// connection's), never in the document's task, which goes on delivering to everyone else.
    pub async fn subscribe(
        self: &Arc<Self>,
        doc: &DocId,
        conn: ConnId,
        client: ClientId,
        outbound: Outbound,
        since: Option<u64>,
    ) -> Result<(), ProtocolError> {
        // A task that is just ending may refuse the command or drop it unanswered; the next attempt
        // starts a fresh task. A few attempts suffice: a new task serves the command before it can end.
        for _ in 0..5 {
            let (reply, answer) = oneshot::channel();
            let command =
                Command::Subscribe { conn, client: client.clone(), outbound: outbound.clone(), since, reply };
            let tx = self.handle(doc);
            if tx.send(command).await.is_err() {
                continue;
            }
            match answer.await {
                Err(_) => continue,
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Opening::Done)) => return Ok(()),
                Ok(Ok(Opening::CatchUp { after, up_to })) => {
                    let caught_up = self.catch_up(doc, conn, &client, &outbound, &tx, after, up_to).await;
                    if caught_up.is_err() {
                        let _ = tx.send(Command::Unsubscribe { conn }).await;
                    }
                    return caught_up;
                }
            }
        }
        Err(could_not_open(doc))
    }

    /// Queues the versions after `after` up to `up_to` (read from the store), then `opened`, then
    /// the live frames the document task held back meanwhile, until the subscriber is live.
    #[allow(clippy::too_many_arguments)]
    async fn catch_up(
        &self,
        doc: &DocId,
        conn: ConnId,
        client: &ClientId,
        outbound: &Outbound,
        tx: &mpsc::Sender<Command>,
        after: u64,
        up_to: u64,
    ) -> Result<(), ProtocolError> {
        let timeout = self.config.catch_up_send_timeout;
        let unavailable = |e: StoreError| {
            warn!(%doc, error = %e, "catch-up failed");
            ProtocolError::new(ErrorCode::Unavailable, "the document cannot be read now; try again")
                .with_doc(doc.clone())
        };
        let mut next = after;
        while next < up_to {
            let events = self
                .store
                .read_events(doc, next, up_to, self.config.catch_up_page)
                .await
                .map_err(unavailable)?;
            if events.is_empty() {
                return Err(unavailable(StoreError::Corrupt(format!("versions after {next} are missing"))));
            }
            for event in &events {
                if event.version != next + 1 {
                    let why = format!("version {} follows {next}", event.version);
                    return Err(unavailable(StoreError::Corrupt(why)));
                }
                next = event.version;
                let message = if &event.client == client { ack(event) } else { op(event) };
                outbound.push_waiting(frame(&message), timeout).await.map_err(|_| overloaded(doc))?;
            }
        }
        let opened = ServerMessage::Opened { doc: doc.clone(), version: up_to };
        outbound.push_waiting(frame(&opened), timeout).await.map_err(|_| overloaded(doc))?;
        loop {
            let (reply, answer) = oneshot::channel();
            tx.send(Command::Release { conn, reply }).await.map_err(|_| could_not_open(doc))?;
            let held = answer.await.map_err(|_| could_not_open(doc))?.ok_or_else(|| overloaded(doc))?;
            if held.is_empty() {
                return Ok(());
            }
            for frame in held {
                outbound.push_waiting(frame, timeout).await.map_err(|_| overloaded(doc))?;
            }
        }
    }

    pub async fn unsubscribe(&self, doc: &DocId, conn: ConnId) {
        let tx = self.docs.lock().expect("hub registry lock").get(doc).map(|h| h.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(Command::Unsubscribe { conn }).await;
        }
    }

    /// Routes one record from the stream to its document's task, if the document is open here.
    /// Never waits: a full task queue sheds the record and flags the task to repair from the store.
    /// A rejection cannot be repaired from the store's events: it waits for room in a task of its
    /// own, up to [`GatewayConfig::max_spilled_rejections`] of them; past that its author is closed
    /// as `overloaded` (it reconnects, resends the op and hears the rejection then).
    pub fn dispatch(&self, record: Arc<SequencedRecord>, traceparent: Option<Arc<str>>) {
        let docs = self.docs.lock().expect("hub registry lock");
        let Some(handle) = docs.get(record.doc()) else { return };
        let Err(mpsc::error::TrySendError::Full(command)) =
            handle.tx.try_send(Command::Record(record, traceparent))
        else {
            return;
        };
        let Command::Record(record, _) = &command else { unreachable!("a record was sent") };
        let SequencedRecord::Rejected(rejection) = &**record else {
            handle.lagged.store(true, Ordering::Release);
            return;
        };
        match self.spilled_rejections.clone().try_acquire_owned() {
            Ok(permit) => {
                let tx = handle.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(command).await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("tandem_gateway_rejections_lost_total").increment(1);
                debug!(doc = %rejection.doc, client = %rejection.client, seq = rejection.seq,
                    "rejection could not wait for its document; closing its author as overloaded");
                handle.lost.record(&rejection.client);
                // The queue is full, so the task is busy and looks at `lost` after its next command;
                // if it has emptied meanwhile, this wakes it.
                let _ = handle.tx.try_send(Command::Wake);
            }
        }
    }

    /// The stream lost records: every open document may have a gap.
    pub fn mark_all_lagged(&self) {
        let docs = self.docs.lock().expect("hub registry lock");
        for handle in docs.values() {
            handle.lagged.store(true, Ordering::Release);
            let _ = handle.tx.try_send(Command::Wake);
        }
    }

    /// Number of documents open on this gateway.
    pub fn open_documents(&self) -> usize {
        self.docs.lock().expect("hub registry lock").len()
    }

    fn handle(self: &Arc<Self>, doc: &DocId) -> mpsc::Sender<Command> {
        let mut docs = self.docs.lock().expect("hub registry lock");
        if let Some(handle) = docs.get(doc).filter(|h| !h.tx.is_closed()) {
            return handle.tx.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.document_queue);
        let lagged = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(LostRejections::new(self.config.document_queue));
        docs.insert(doc.clone(), Handle { tx: tx.clone(), lagged: lagged.clone(), lost: lost.clone() });
        let task = DocTask {
            doc: doc.clone(),
            hubs: self.clone(),
            loaded: None,
            subscribers: HashMap::new(),
            lagged,
            lost,
            repair_due: None,
            pending: self.pending_ops(),
            api: api::ApiSubscribers::new(self.config.api_linger),
        };
        tokio::spawn(task.run(rx));
        tx
    }

    fn pending_ops(&self) -> PendingOps {
        PendingOps::new(self.config.resubmit_after, self.config.max_resubmissions, self.config.document_queue)
    }
}

struct Subscriber {
    client: ClientId,
    outbound: Outbound,
    /// Live frames held back while the connection queues its catch-up; `None` once it is live.
    held: Option<Held>,
}

#[derive(Default)]
struct Held {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
}

impl Subscriber {
    /// Queues a frame for the subscriber, or holds it back while it catches up. False when the
    /// connection is gone or overloaded (its queue full, or more held back than its queue holds):
    /// the subscriber is dropped, its connection closed, and the client catches up by version.
    fn send(&mut self, frame: Utf8Bytes, config: &GatewayConfig) -> bool {
        let Some(held) = self.held.as_mut() else { return self.outbound.push(frame).is_ok() };
        if self.outbound.is_closed() {
            return false;
        }
        if held.frames.len() >= config.outbound_queue
            || (held.bytes + frame.len() > config.outbound_queue_bytes && !held.frames.is_empty())
        {
            self.outbound.overload();
            return false;
        }
        held.bytes += frame.len();
        held.frames.push_back(frame);
        true
    }
}

/// The document as this gateway has fanned it out.
struct Loaded {
    version: u64,
    text: Rope,
}

struct DocTask {
    doc: DocId,
    hubs: Arc<Hubs>,
    /// Loaded on the first subscription.
    loaded: Option<Loaded>,
    subscribers: HashMap<ConnId, Subscriber>,
    lagged: Arc<AtomicBool>,
    lost: Arc<LostRejections>,
    /// When a failed repair is tried again (the store was down).
    repair_due: Option<Instant>,
    /// Ops of this document's subscribers on their way through the sequencer.
    pending: PendingOps,
    /// Documents API calls waiting for outcomes, and its watchers.
    api: api::ApiSubscribers,
}

impl DocTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let next_due = self.pending.next_due();
            let repair_due = self.repair_due;
            let linger = self.api.linger_until().filter(|_| self.subscribers.is_empty());
            let command = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                    self.resubmit_due();
                    continue;
                }
                _ = tokio::time::sleep_until(repair_due.unwrap_or_else(Instant::now)), if repair_due.is_some() => {
                    self.repair_due = None;
                    self.lagged.store(true, Ordering::Release);
                    Command::Wake
                }
                // Only to look again whether the task may end.
                _ = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now)), if linger.is_some() => Command::Wake,
            };
            self.handle(command).await;
            if self.lagged.swap(false, Ordering::AcqRel) {
                metrics::counter!("tandem_gateway_gap_repairs_total").increment(1);
                if let Err(e) = self.catch_up_with_store(None).await {
                    warn!(doc = %self.doc, error = %e, "gap repair failed; retrying");
                    // Retried by this task's own timer: nothing is spawned per failure.
                    self.repair_due.get_or_insert_with(|| Instant::now() + REPAIR_RETRY);
                }
            }
            if let Some((authors, unnamed)) = self.lost.take() {
                // Their rejection was lost: closed as overloaded, they reconnect and resend the op.
                self.subscribers.retain(|_, sub| {
                    let lost = unnamed || authors.contains(&sub.client);
                    if lost {
                        sub.outbound.overload();
                    }
                    !lost
                });
            }
            self.api.prune();
            if self.subscribers.is_empty() && self.api.is_idle() {
                // Leave the registry only if nothing is queued: a command sent meanwhile must be served.
                let mut docs = self.hubs.docs.lock().expect("hub registry lock");
                if rx.is_empty() {
                    docs.remove(&self.doc);
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe { conn, client, outbound, since, reply } => {
                let result = self.subscribe(conn, client, outbound, since).await;
                let _ = reply.send(result);
            }
            Command::Release { conn, reply } => {
                let held = self.subscribers.get_mut(&conn).map(|sub| match sub.held.as_mut() {
                    Some(held) if !held.frames.is_empty() => {
                        held.bytes = 0;
                        held.frames.drain(..).collect()
                    }
                    _ => {
                        sub.held = None;
                        Vec::new()
                    }
                });
                let _ = reply.send(held);
            }
            Command::Unsubscribe { conn } => {
                self.subscribers.remove(&conn);
            }
            Command::Record(record, traceparent) => {
                if let Err(e) = self.on_record(&record, traceparent.as_deref()).await {
                    warn!(doc = %self.doc, error = %e, "cannot deliver record; will repair from the store");
                    self.lagged.store(true, Ordering::Release);
                }
            }
            Command::Track(submission) => self.pending.track(submission, Instant::now()),
            Command::Untrack { client, seq } => self.pending.resolve(&client, seq),
            Command::Wake => {}
            Command::Await { waiter, registered } => {
                // Loaded (and kept up to date) while anyone waits: a shed record of the op is then
                // repaired from the store like any other, and the outcome still found.
                let loaded = self.catch_up_with_store(None).await;
                if loaded.is_ok() {
                    self.api.wait(waiter);
                }
                let _ = registered.send(loaded);
            }
            Command::Watch { id, watcher, reply } => {
                let loaded = self.catch_up_with_store(None).await;
                let answer = loaded.map(|()| {
                    self.api.watch(id, watcher);
                    self.loaded.as_ref().map_or(0, |l| l.version)
                });
                let _ = reply.send(answer);
            }
            Command::Unwatch { id } => self.api.unwatch(id),
        }
    }

    /// Submits again the ops whose records did not come back in time, as many as there is room for
    /// ([`GatewayConfig::max_resubmissions_in_flight`] over the gateway). One without room is not
    /// submitted this time; it stays tracked and is tried again at its next due time.
    fn resubmit_due(&mut self) {
        for submission in self.pending.take_due(Instant::now()) {
            let Ok(permit) = self.hubs.resubmissions.clone().try_acquire_owned() else {
                metrics::counter!("tandem_gateway_resubmissions_deferred_total").increment(1);
                debug!(doc = %submission.doc, client = %submission.client, seq = submission.seq,
                    "too many resubmissions in flight; this one waits for its next turn");
                continue;
            };
            debug!(doc = %submission.doc, client = %submission.client, seq = submission.seq, "resubmitting");
            metrics::counter!("tandem_gateway_resubmissions_total").increment(1);
            let submitter = self.hubs.submitter.clone();
            tokio::spawn(async move {
                if let Err(e) = submitter.submit(submission).await {
                    debug!(error = %e, "resubmission failed; will try again");
                }
                drop(permit);
            });
        }
    }

    /// Starts a subscription. Without `since`, or with one further behind than the catch-up limit,
    /// the `snapshot` (then, with `since`, `opened`) is queued from the text in memory. With a
    /// nearer `since`, the subscriber is registered with its live frames held back and the caller
    /// is told what to read (see [`Hubs::subscribe`]): the task reads nothing for it.
    async fn subscribe(
        &mut self,
        conn: ConnId,
        client: ClientId,
        outbound: Outbound,
        since: Option<u64>,
    ) -> Result<Opening, ProtocolError> {
        let doc = self.doc.clone();
        let unavailable = |e: StoreError| {
            warn!(doc = %doc, error = %e, "open failed");
            ProtocolError::new(ErrorCode::Unavailable, "the document cannot be read now; try again")
                .with_doc(doc.clone())
        };
        self.catch_up_with_store(None).await.map_err(unavailable)?;
        let loaded = self.loaded.as_ref().expect("caught up above");
        let version = loaded.version;
        let snapshot =
            || ServerMessage::Snapshot { doc: self.doc.clone(), version, text: loaded.text.to_string() };
        let opened = ServerMessage::Opened { doc: self.doc.clone(), version };
        let mut held = None;
        match since {
            None => outbound.push(frame(&snapshot())).map_err(|_| overloaded(&self.doc))?,
            Some(since) if since > version => {
                return Err(ProtocolError::bad_request(format!(
                    "since {since} is ahead of the document, which is at version {version}"
                ))
                .with_doc(self.doc.clone()));
            }
            Some(since) if version - since > self.hubs.config.catch_up_limit => {
                metrics::counter!("tandem_gateway_catch_up_snapshots_total").increment(1);
                debug!(doc = %self.doc, since, version, "too far behind for a catch-up; sending a snapshot");
                outbound.push(frame(&snapshot())).map_err(|_| overloaded(&self.doc))?;
                outbound.push(frame(&opened)).map_err(|_| overloaded(&self.doc))?;
            }
            Some(since) if since == version => {
                outbound.push(frame(&opened)).map_err(|_| overloaded(&self.doc))?;
            }
            Some(since) => held = Some((since, Held::default())),
        }
        let opening = match &held {
            Some((after, _)) => Opening::CatchUp { after: *after, up_to: version },
            None => Opening::Done,
        };
        self.subscribers.insert(conn, Subscriber { client, outbound, held: held.map(|(_, held)| held) });
        Ok(opening)
    }

    async fn on_record(
        &mut self,
        record: &SequencedRecord,
        traceparent: Option<&str>,
    ) -> Result<(), StoreError> {
        if !well_formed(record) {
            return Ok(());
        }
        if let SequencedRecord::Deleted(deleted) = record {
            self.on_deleted(deleted);
            return Ok(());
        }
        if self.loaded.is_none() {
            // Nobody has opened the document yet; the first subscription loads it from the store.
            return Ok(());
        }
        match record {
            SequencedRecord::Committed(event) => self.pending.resolve(&event.client, event.seq),
            SequencedRecord::Reacknowledged { client, seq, .. } => self.pending.resolve(client, *seq),
            SequencedRecord::Rejected(rejection) => self.pending.resolve(&rejection.client, rejection.seq),
            SequencedRecord::Deleted(_) => {}
        }
        match record {
            SequencedRecord::Committed(event) => {
                self.catch_up_with_store(Some(event.version - 1)).await?;
                let current = self.loaded.as_ref().map_or(0, |l| l.version);
                if event.version == current + 1 {
                    let span = delivery_trace::deliver_span(event, traceparent, self.subscribers.len());
                    let _in_span = span.as_ref().map(Span::enter);
                    self.deliver(event, span.as_ref())?;
                }
            }
            SequencedRecord::Reacknowledged { client, seq, version, .. } => {
                // Every subscriber has received every version up to ours (snapshot, catch-up or live),
                // so the author has its ack already once we are at `version`.
                self.catch_up_with_store(Some(*version)).await?;
                self.api.resolve(client, *seq, || api::OpOutcome::Reacknowledged { version: *version });
            }
            SequencedRecord::Rejected(rejection) => {
                // Versions committed before the refusal come first.
                self.catch_up_with_store(Some(rejection.at_version)).await?;
                self.reject(rejection);
                let (code, message) = (rejection.code, &rejection.message);
                self.api.resolve(&rejection.client, rejection.seq, || api::OpOutcome::Rejected {
                    code,
                    message: message.clone(),
                });
            }
            SequencedRecord::Deleted(_) => unreachable!("handled above"),
        }
        Ok(())
    }

    /// The document was deleted: its events are purged and its versions start again from 0.
    ///
    /// Every WebSocket subscriber gets an `error` with code `invalid_op` about the document and no
    /// `seq` (docs/PROTOCOL.md, "Deleted documents"), which makes a client do what it does after any
    /// `invalid_op`: drop its pending edits and reopen the document (now at version 0); and it is
    /// unsubscribed here. Watchers of the Documents API get the tombstone and their streams end; a
    /// DeleteDocument waiting here is answered. The cached text goes, and so do the ops tracked for
    /// resubmission: resubmitted now, they would land in the new document.
    fn on_deleted(&mut self, deleted: &DocumentDeleted) {
        debug!(doc = %self.doc, last_version = deleted.last_version, "document deleted");
        let message = ServerMessage::Error {
            code: ErrorCode::InvalidOp,
            message: format!(
                "document {} was deleted (its last version was {}); it is closed: open it again to start \
                 from version 0",
                deleted.doc, deleted.last_version
            ),
            doc: Some(self.doc.clone()),
            seq: None,
        };
        let frame = frame(&message);
        for (_, sub) in self.subscribers.drain() {
            crate::error_counts::count(&message);
            // A full queue marks the connection overloaded: it reconnects and finds the document gone.
            let _ = sub.outbound.push(frame.clone());
        }
        self.api.deleted(deleted);
        self.loaded = None;
        self.pending = self.hubs.pending_ops();
        if self.api.has_waiters() {
            // Ops still awaited commit to the new document: load it (from the store) to see them.
            self.lagged.store(true, Ordering::Release);
        }
    }

    /// Brings the fanned-out version up to `target` (or the store's latest), delivering each missing
    /// version from the store in order.
    async fn catch_up_with_store(&mut self, target: Option<u64>) -> Result<(), StoreError> {
        let store = self.hubs.store.clone();
        if self.loaded.is_none() {
            let stored = store.load_document(&self.doc).await?;
            let (version, text) = replay(stored)?;
            debug!(doc = %self.doc, version, "document loaded");
            self.loaded = Some(Loaded { version, text });
        }
        let current = self.loaded.as_ref().map_or(0, |l| l.version);
        let target = match target {
            Some(target) if target <= current => return Ok(()),
            Some(target) => target,
            None => store.latest_version(&self.doc).await?,
        };
        let mut after = current;
        while after < target {
            let events = store.read_events(&self.doc, after, target, self.hubs.config.catch_up_page).await?;
            let Some(last) = events.last() else { break };
            after = last.version;
            for event in &events {
                self.deliver(event, None)?;
            }
        }
        Ok(())
    }

    /// Applies the next version and sends it to every subscriber: `ack` to its author, one shared
    /// `op` frame to everyone else. `trace`: the `deliver` span of a traced op, under which the
    /// author's `ack` is traced.
    fn deliver(&mut self, event: &CommittedEvent, trace: Option<&Span>) -> Result<(), StoreError> {
        let loaded = self.loaded.as_mut().expect("delivery happens only on a loaded document");
        if event.version != loaded.version + 1 {
            return Err(StoreError::Corrupt(format!(
                "version {} delivered after {} for document {}",
                event.version, loaded.version, self.doc
            )));
        }
        event.op.apply_to_rope(&mut loaded.text).map_err(|e| {
            StoreError::Corrupt(format!("version {} of {} does not apply: {e}", event.version, self.doc))
        })?;
        loaded.version = event.version;
        self.pending.resolve(&event.client, event.seq);
        let mut shared_op: Option<Utf8Bytes> = None;
        let config = &self.hubs.config;
        self.subscribers.retain(|_, sub| {
            // A full queue marks the connection overloaded; it is closed and catches up by version.
            if sub.client == event.client {
                let _ack = trace.map(|deliver| delivery_trace::ack_span(deliver, event).entered());
                sub.send(frame(&ack(event)), config)
            } else {
                sub.send(shared_op.get_or_insert_with(|| frame(&op(event))).clone(), config)
            }
        });
        self.api.delivered(event);
        Ok(())
    }

    fn reject(&mut self, rejection: &Rejection) {
        let message = ServerMessage::Error {
            code: rejection.code,
            message: rejection.message.clone(),
            doc: Some(rejection.doc.clone()),
            seq: Some(rejection.seq),
        };
        crate::error_counts::count(&message);
        let frame = frame(&message);
        let config = &self.hubs.config;
        self.subscribers.retain(|_, sub| sub.client != rejection.client || sub.send(frame.clone(), config));
    }
}

/// Whether a record from the stream can be used; one that cannot is logged, counted like any
/// record the gateway cannot read (`tandem_bus_events_skipped_total`) and skipped. Versions count
/// from 1, so a committed version 0 is no version at all (a producer's bug or a damaged record): its
/// "previous version" does not exist, and nothing of it (not even its client and seq) is trusted.
/// Its op stays tracked, so if it was committed its resubmission is re-acknowledged with the real
/// version, which is then read from the store.
fn well_formed(record: &SequencedRecord) -> bool {
    match record {
        SequencedRecord::Committed(event) if event.version == 0 => {
            metrics::counter!("tandem_bus_events_skipped_total").increment(1);
            let (doc, client, seq) = (&event.doc, &event.client, event.seq);
            warn!(%doc, %client, seq, "skipped a committed record with version 0");
            false
        }
        _ => true,
    }
}

/// Rebuilds the current text from what the store has.
fn replay(stored: tandem_store::StoredDocument) -> Result<(u64, Rope), StoreError> {
    let (mut version, mut text) = match stored.snapshot {
        Some(s) => (s.version, Rope::from_str(&s.text)),
        None => (0, Rope::new()),
    };
    for event in stored.events {
        if event.version != version + 1 {
            return Err(StoreError::Corrupt(format!("version {} follows {version}", event.version)));
        }
        event.op.apply_to_rope(&mut text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        version = event.version;
    }
    Ok((version, text))
}

fn frame(message: &ServerMessage) -> Utf8Bytes {
    Utf8Bytes::from(message.to_json())
}

fn ack(event: &CommittedEvent) -> ServerMessage {
    ServerMessage::Ack { doc: event.doc.clone(), seq: event.seq, version: event.version }
}

fn op(event: &CommittedEvent) -> ServerMessage {
    ServerMessage::Op {
        doc: event.doc.clone(),
        version: event.version,
        client: event.client.clone(),
        op: event.op.clone(),
    }
}

fn overloaded(doc: &DocId) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Overloaded,
        "the connection's outbound queue is full (see the server's outbound queue limits); reconnect and open with since",
    )
        .with_doc(doc.clone())
}

fn could_not_open(doc: &DocId) -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal, "the document could not be opened; try again")
        .with_doc(doc.clone())
}

#[path = "hub_api.rs"]
pub mod api;

#[cfg(test)]
#[path = "hub_tests.rs"]
mod bound_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tandem_bus::in_process::{in_process, InProcessConfig};
    use tandem_ot::Operation;
    use tandem_store::embedded::{SqliteOptions, SqliteStore};

    use super::*;
    use crate::outbound::Inbound;

    fn committed(doc: &DocId, version: u64, text: &str) -> Arc<SequencedRecord> {
        let mut op = Operation::new();
        op.insert(text);
        let client = ClientId::parse("writer").expect("valid client id");
        Arc::new(SequencedRecord::Committed(CommittedEvent {
            author: String::new(),
            doc: doc.clone(),
            version,
            client,
            seq: version,
            op,
        }))
    }

    /// The next frame queued for the connection; `None` once nothing can queue one any more.
    async fn next_frame(inbound: &mut Inbound) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(5), inbound.frames.recv()).await;
        frame.expect("a frame within 5 s").map(|f| f.to_string())
    }

    /// A committed record with version 0 (none exists: versions count from 1) is skipped; the
    /// document's task lives on and delivers the next record.
    #[tokio::test]
    async fn a_committed_record_with_version_0_is_skipped() {
        let data = tempfile::tempdir().expect("a temporary folder");
        let store = SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store");
        let (submitter, _consumers, _, _) = in_process(&InProcessConfig::default());
        let hubs = Hubs::new(Arc::new(store), Arc::new(submitter), GatewayConfig::default());
        let doc = DocId::parse("d").expect("valid doc id");
        let (outbound, mut inbound) = Outbound::new(16, 1 << 20);
        let reader = ClientId::parse("reader").expect("valid client id");
        hubs.subscribe(&doc, 1, reader, outbound, None).await.expect("subscribed");
        let snapshot = next_frame(&mut inbound).await.expect("the snapshot");
        assert!(snapshot.contains(r#""type":"snapshot""#), "{snapshot}");

        hubs.dispatch(committed(&doc, 0, "bogus"), None);
        hubs.dispatch(committed(&doc, 1, "real"), None);
        let frame =
            next_frame(&mut inbound).await.expect("the document task survived the record with version 0");
        assert!(frame.contains(r#""type":"op""#) && frame.contains(r#""version":1"#), "{frame}");
        assert!(!frame.contains("bogus"), "{frame}");
    }
}
