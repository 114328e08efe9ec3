//! What the Documents API (`crate::documents`) asks of a document's task.
//!
//! - The outcome of an op (or a deletion) it submitted: [`Hubs::expect_outcome`] registers the wait
//!   *before* the submission, so the record, which can only follow the submission, always finds
//!   it. The task is loaded while anyone waits, so a record shed on the way is repaired from the
//!   store like any other and the outcome is still found.
//! - A live feed of committed versions: [`Hubs::watch`] registers a watcher at the version the task
//!   has fanned out; every later version goes to the watcher's bounded queue, in order, each once,
//!   from the same place that feeds the WebSocket subscribers. A watcher whose queue is full is
//!   dropped ([`WatchEnd::Overloaded`]) rather than waited for; a deleted document ends every watcher
//!   ([`WatchEnd::Deleted`]).
//!
//! Both are typed: the API never parses WebSocket frames back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_protocol::records::{CommittedEvent, DocumentDeleted};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::StoreError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Command, Hubs};

/// What became of an op or a deletion the Documents API submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// Committed now, as this event.
    Committed(CommittedEvent),
    /// Committed before (a retry): as the event at `version`, which the store has.
    Reacknowledged { version: u64 },
    /// Refused by the sequencer.
    Rejected { code: ErrorCode, message: String },
    /// The document was deleted (the outcome of a deletion).
    Deleted(DocumentDeleted),
}

/// A wait for the outcome of (client, seq), or of a deletion by (client, seq).
pub(crate) struct Waiter {
    client: ClientId,
    seq: u64,
    deletion: bool,
    outcome: oneshot::Sender<OpOutcome>,
}

/// A committed version as a watcher receives it.
#[derive(Debug)]
pub struct WatchedEvent {
    pub event: CommittedEvent,
    /// When this gateway's document task delivered it, milliseconds since the Unix epoch: the
    /// commit time give or take the trip through the record stream.
    pub delivered_at_ms: i64,
}

/// Why the document task stopped feeding a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// Its queue was full: it read too slowly.
    Overloaded,
    /// The document was deleted.
    Deleted(DocumentDeleted),
}

pub(crate) struct Watcher {
    events: mpsc::Sender<Arc<WatchedEvent>>,
    end: Arc<OnceLock<WatchEnd>>,
}

/// The Documents API's calls and watchers on one document task.
pub(crate) struct ApiSubscribers {
    ops: HashMap<(ClientId, u64), Vec<oneshot::Sender<OpOutcome>>>,
    /// Deletions: answered by the next tombstone, or by a rejection of their (client, seq).
    deletions: Vec<Waiter>,
    watchers: HashMap<u64, Watcher>,
    /// How long the task stays after the API's last use ([`crate::GatewayConfig::api_linger`]).
    linger_for: Duration,
    /// Until when.
    linger: Option<Instant>,
}

impl ApiSubscribers {
    pub fn new(linger_for: Duration) -> Self {
        Self {
            ops: HashMap::new(),
            deletions: Vec::new(),
            watchers: HashMap::new(),
            linger_for,
            linger: None,
        }
    }

    /// Nothing of the API keeps the task: no call waits, no watcher, and the linger is over.
    pub fn is_idle(&self) -> bool {
        self.is_empty() && self.linger.is_none_or(|until| until <= Instant::now())
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.deletions.is_empty() && self.watchers.is_empty()
    }

    /// When the linger ends, while nothing else of the API keeps the task.
    pub fn linger_until(&self) -> Option<Instant> {
        self.linger.filter(|_| self.is_empty())
    }

    fn used(&mut self) {
        self.linger = Some(Instant::now() + self.linger_for);
    }

    pub fn has_waiters(&self) -> bool {
        !self.ops.is_empty() || !self.deletions.is_empty()
    }

    pub fn wait(&mut self, waiter: Waiter) {
        self.used();
        if waiter.deletion {
            self.deletions.push(waiter);
        } else {
            self.ops.entry((waiter.client, waiter.seq)).or_default().push(waiter.outcome);
        }
    }

    pub fn watch(&mut self, id: u64, watcher: Watcher) {
        self.used();
        self.watchers.insert(id, watcher);
    }

    pub fn unwatch(&mut self, id: u64) {
        self.used();
        self.watchers.remove(&id);
    }

    /// Lets go of calls that stopped waiting and watchers whose stream ended.
    pub fn prune(&mut self) {
        self.ops.retain(|_, waiters| {
            waiters.retain(|w| !w.is_closed());
            !waiters.is_empty()
        });
        self.deletions.retain(|w| !w.outcome.is_closed());
        self.watchers.retain(|_, w| !w.events.is_closed());
    }

    /// Answers the waits for (client, seq) with `outcome`: a re-acknowledgement or a rejection.
    pub fn resolve(&mut self, client: &ClientId, seq: u64, outcome: impl Fn() -> OpOutcome) {
        if let Some(waiters) = self.take(client, seq) {
            for waiter in waiters {
                let _ = waiter.send(outcome());
            }
        }
        let rejected = matches!(outcome(), OpOutcome::Rejected { .. });
        if rejected && !self.deletions.is_empty() {
            let (refused, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.deletions)
                .into_iter()
                .partition(|w| &w.client == client && w.seq == seq);
            self.deletions = waiting;
            for waiter in refused {
                let _ = waiter.outcome.send(outcome());
            }
        }
    }

    /// A version was delivered: answers its op's waits and queues it for every watcher. A watcher
    /// whose queue is full is dropped as overloaded.
    pub fn delivered(&mut self, event: &CommittedEvent) {
        if let Some(waiters) = self.take(&event.client, event.seq) {
            for waiter in waiters {
                let _ = waiter.send(OpOutcome::Committed(event.clone()));
            }
        }
        if self.watchers.is_empty() {
            return;
        }
        let watched = Arc::new(WatchedEvent { event: event.clone(), delivered_at_ms: unix_ms() });
        self.watchers.retain(|_, watcher| match watcher.events.try_send(watched.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("tandem_gateway_api_watchers_overloaded_total").increment(1);
                let _ = watcher.end.set(WatchEnd::Overloaded);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// The document was deleted: every deletion waiting is answered and every watcher ends.
    pub fn deleted(&mut self, deleted: &DocumentDeleted) {
        for waiter in self.deletions.drain(..) {
            let _ = waiter.outcome.send(OpOutcome::Deleted(deleted.clone()));
        }
        for (_, watcher) in self.watchers.drain() {
            let _ = watcher.end.set(WatchEnd::Deleted(deleted.clone()));
        }
    }

    fn take(&mut self, client: &ClientId, seq: u64) -> Option<Vec<oneshot::Sender<OpOutcome>>> {
        if self.ops.is_empty() {
            return None;
        }
        self.ops.remove(&(client.clone(), seq))
    }
}

/// A registered wait for an outcome (see [`Hubs::expect_outcome`]).
pub struct AwaitedOutcome {
    outcome: oneshot::Receiver<OpOutcome>,
    task: mpsc::Sender<Command>,
}

impl AwaitedOutcome {
    /// The outcome, or `None` when `limit` passes first (or the document's task went away).
    pub async fn wait(mut self, limit: Duration) -> Option<OpOutcome> {
        tokio::time::timeout(limit, &mut self.outcome).await.ok()?.ok()
    }
}

impl Drop for AwaitedOutcome {
    /// Tells the task to let go of this wait (it may be the last thing keeping the task).
    fn drop(&mut self) {
        self.outcome.close();
        let _ = self.task.try_send(Command::Wake);
    }
}

/// A registered watcher (see [`Hubs::watch`]). Dropping it unregisters it.
pub struct Watch {
    /// The version the watcher was registered at: `events` starts after it.
    pub version: u64,
    pub events: mpsc::Receiver<Arc<WatchedEvent>>,
    end: Arc<OnceLock<WatchEnd>>,
    id: u64,
    task: mpsc::Sender<Command>,
}

impl Watch {
    /// Why the task stopped feeding this watcher, once `events` has ended; `None` when the task
    /// itself went away (the gateway is stopping).
    pub fn end(&self) -> Option<&WatchEnd> {
        self.end.get()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // If the queue is full, the task finds the watcher's queue closed when it next prunes.
        let _ = self.task.try_send(Command::Unwatch { id: self.id });
    }
}

/// Watcher ids, unique in the process.
static NEXT_WATCHER: AtomicU64 = AtomicU64::new(1);

/// How many times a registration is tried: a task that is just ending may drop a command
/// unanswered, and the next attempt starts a fresh task.
const ATTEMPTS: usize = 5;

impl Hubs {
    /// Registers a wait for the outcome of (`client`, `seq`) on `doc`: its commit, its
    /// re-acknowledgement or its rejection; with `deletion`, the document's next tombstone (or the
    /// rejection of (`client`, `seq`)). Call before submitting. Fails when the document cannot be
    /// loaded from the store.
    pub async fn expect_outcome(
        self: &Arc<Self>,
        doc: &DocId,
        client: ClientId,
        seq: u64,
        deletion: bool,
    ) -> Result<AwaitedOutcome, StoreError> {
        for _ in 0..ATTEMPTS {
            let (outcome_tx, outcome) = oneshot::channel();
            let (registered, answer) = oneshot::channel();
            let waiter = Waiter { client: client.clone(), seq, deletion, outcome: outcome_tx };
            let task = self.handle(doc);
            if task.send(Command::Await { waiter, registered }).await.is_err() {
                continue;
            }
            match answer.await {
                Err(_) => continue,
                Ok(result) => return result.map(|()| AwaitedOutcome { outcome, task }),
            }
        }
        Err(task_gone(doc))
    }

    /// Registers a watcher of `doc` with a queue of `capacity` versions: it receives every version
    /// after [`Watch::version`] (the version this gateway has fanned out, at least the store's
    /// latest when called). Fails when the document cannot be loaded from the store.
    pub async fn watch(self: &Arc<Self>, doc: &DocId, capacity: usize) -> Result<Watch, StoreError> {
        for _ in 0..ATTEMPTS {
            let id = NEXT_WATCHER.fetch_add(1, Ordering::Relaxed);
            let (events_tx, events) = mpsc::channel(capacity.max(1));
            let end = Arc::new(OnceLock::new());
            let watcher = Watcher { events: events_tx, end: end.clone() };
            let (reply, answer) = oneshot::channel();
            let task = self.handle(doc);
            if task.send(Command::Watch { id, watcher, reply }).await.is_err() {
                continue;
            }
            match answer.await {
                Err(_) => continue,
                Ok(result) => return result.map(|version| Watch { version, events, end, id, task }),
            }
        }
        Err(task_gone(doc))
    }
}

fn task_gone(doc: &DocId) -> StoreError {
    StoreError::Unavailable(format!("the task of document {doc} did not answer; try again"))
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
#[path = "hub_api_tests.rs"]
mod tests;
