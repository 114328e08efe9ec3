//! Presence (docs/PROTOCOL.md, "Presence"): who is in a document and where their selection is.
//!
//! Ephemeral by design: nothing here is stored, nothing enters the event log. The pieces:
//!
//! - [`PresenceOutlet`] (`outlet`), one per connection: takes the connection's `presence` messages,
//!   coalesces them (the latest per document wins) and hands at most
//!   [`PresenceConfig::updates_per_second`] a second to the document's task;
//! - the document task (`doc`), one per document with a participant on this gateway: checks each
//!   selection against the text of the version it names, keeps every presence moved to the newest
//!   version it has seen, tells the document's other participants here, and announces its own
//!   participants to the other gateways (on every change, and again every heartbeat). It learns
//!   the document's versions as one more subscriber of the document's hub task
//!   ([`crate::hub::Hubs::subscribe`]), so it sees each version exactly when the clients do;
//! - `link`: reads the other gateways' announcements ([`PresenceBus`]) and hands them to the
//!   document tasks; presences of documents nobody here has open wait in a small map until
//!   someone does, or until they time out.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_bus::presence::PresenceBus;
use tandem_protocol::presence::PresenceRecord;
use tandem_protocol::{ClientId, DocId};
use tandem_store::EventStore;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::{ConnId, Hubs};
use crate::outbound::Outbound;
use crate::GatewayConfig;

#[cfg(feature = "cli")]
mod args;
mod doc;
mod link;
mod outlet;
mod window;

#[cfg(feature = "cli")]
pub use args::PresenceArgs;
pub(crate) use outlet::PresenceOutlet;

use doc::{DocCommand, DocTask};

/// Commands a document task may have waiting; remote announcements past it are dropped (the next
/// heartbeat brings them again), local ones wait for room.
const DOC_QUEUE: usize = 1024;
/// Most documents nobody here has open whose presences from other gateways are kept.
const MAX_DORMANT_DOCS: usize = 100_000;
/// Hub subscriptions of document tasks use connection ids from here up, far above real ones.
const HUB_CONN_BASE: ConnId = 1 << 62;

/// Presence limits and timing; each is a server setting (see [`PresenceArgs`]) and documented in
/// docs/PROTOCOL.md.
#[derive(Clone)]
pub struct PresenceConfig {
    /// Presence updates of one connection relayed per second at most; between relays, the latest
    /// update of each document replaces the earlier ones.
    pub updates_per_second: u32,
    /// How often a gateway re-announces each of its live presences to the other gateways.
    pub heartbeat: Duration,
    /// A presence from another gateway that is not re-announced for this long is gone (its gateway
    /// died or lost its way to the bus); should be a few heartbeats.
    pub timeout: Duration,
    /// How many versions behind the document a selection's `version` may be.
    pub max_version_lag: u64,
    /// The channel to the other gateways; `None`: this gateway is alone (the single process).
    pub bus: Option<Arc<dyn PresenceBus>>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            updates_per_second: 20,
            heartbeat: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_version_lag: 1000,
            bus: None,
        }
    }
}

impl fmt::Debug for PresenceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceConfig")
            .field("updates_per_second", &self.updates_per_second)
            .field("heartbeat", &self.heartbeat)
            .field("timeout", &self.timeout)
            .field("max_version_lag", &self.max_version_lag)
            .field("bus", &self.bus.as_ref().map(|_| "connected"))
            .finish()
    }
}

/// A presence of another gateway, and when it is gone unless announced again.
pub(crate) type RemotePresence = (PresenceRecord, Instant);

struct TaskHandle {
    id: u64,
    tx: mpsc::Sender<DocCommand>,
}

/// Every document task on this gateway, and what they share.
pub(crate) struct Presences {
    docs: Mutex<HashMap<DocId, TaskHandle>>,
    /// Presences of other gateways for documents without a task here.
    dormant: Mutex<HashMap<DocId, HashMap<ClientId, RemotePresence>>>,
    next_task: AtomicU64,
    hubs: Arc<Hubs>,
    store: Arc<dyn EventStore>,
    config: PresenceConfig,
    gateway_config: GatewayConfig,
    /// This gateway's name in its announcements, unique to this run of the process: its own records
    /// coming back from the bus are skipped, and a restarted gateway is another gateway.
    gateway: String,
}

impl Presences {
    /// Starts presence for a gateway: the reader of other gateways' announcements (with a bus) and
    /// the sweeper of timed-out ones, both until `shutdown`.
    pub(crate) fn start(
        hubs: Arc<Hubs>,
        store: Arc<dyn EventStore>,
        gateway_config: &GatewayConfig,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let presences = Arc::new(Self {
            docs: Mutex::new(HashMap::new()),
            dormant: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(0),
            hubs,
            store,
            config: gateway_config.presence.clone(),
            gateway_config: gateway_config.clone(),
            gateway: gateway_id(),
        });
        tokio::spawn(link::run(presences.clone(), shutdown));
        presences
    }

    /// The outlet of one connection's presence messages.
    pub(crate) fn outlet(
        self: &Arc<Self>,
        conn: ConnId,
        client: ClientId,
        user: String,
        outbound: Outbound,
    ) -> PresenceOutlet {
        PresenceOutlet::start(self.clone(), conn, client, user, outbound)
    }

    /// Hands a local command to its document's task, starting one if needed (not for a leave: a
    /// document without a task has nobody to leave).
    async fn send(self: &Arc<Self>, doc: &DocId, mut command: DocCommand) {
        let start = !matches!(command, DocCommand::Leave { .. });
        // A task that is just retiring refuses the command; the next attempt finds or starts another.
        for _ in 0..5 {
            let Some(tx) = self.task(doc, start) else { return };
            match tx.send(command).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => command = back,
            }
        }
        tracing::warn!(%doc, "a presence command found no document task; dropped");
    }

    /// The document's task; with `start`, a new one when there is none.
    fn task(self: &Arc<Self>, doc: &DocId, start: bool) -> Option<mpsc::Sender<DocCommand>> {
        let mut docs = self.docs.lock().expect("presence registry lock");
        if let Some(handle) = docs.get(doc).filter(|h| !h.tx.is_closed()) {
            return Some(handle.tx.clone());
        }
        if !start {
            return None;
        }
        let (tx, rx) = mpsc::channel(DOC_QUEUE);
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        // Taken under the registry lock, so an announcement read meanwhile lands in one place or
        // the other, never in neither.
        let waiting = self.dormant.lock().expect("dormant presence lock").remove(doc).unwrap_or_default();
        let task = DocTask::new(self.clone(), doc.clone(), id, HUB_CONN_BASE + id);
        tokio::spawn(task.run(rx, waiting.into_values().collect()));
        docs.insert(doc.clone(), TaskHandle { id, tx: tx.clone() });
        Some(tx)
    }

    /// A document task with no participant left ends: it leaves the registry and hands its remote
    /// presences back to wait.
    fn retire(&self, doc: &DocId, id: u64, remotes: Vec<RemotePresence>) {
        let mut docs = self.docs.lock().expect("presence registry lock");
        if docs.get(doc).is_some_and(|h| h.id == id) {
            docs.remove(doc);
        }
        if !remotes.is_empty() {
            let mut dormant = self.dormant.lock().expect("dormant presence lock");
            let entry = dormant.entry(doc.clone()).or_default();
            for (record, expires) in remotes {
                entry.insert(record.client.clone(), (record, expires));
            }
        }
    }

    /// Hands another gateway's announcement to its document's task, or keeps it (a leave: drops
    /// it) until someone here opens the document. Never waits: a task with a full queue misses it,
    /// and the next heartbeat brings it again.
    fn route_remote(&self, (record, expires): RemotePresence) {
        let docs = self.docs.lock().expect("presence registry lock");
        if let Some(handle) = docs.get(&record.doc).filter(|h| !h.tx.is_closed()) {
            if handle.tx.try_send(DocCommand::Remote((record, expires))).is_err() {
                metrics::counter!("tandem_gateway_presence_dropped_total").increment(1);
            }
            return;
        }
        let mut dormant = self.dormant.lock().expect("dormant presence lock");
        match record.state {
            None => {
                if let Some(waiting) = dormant.get_mut(&record.doc) {
                    let owned = waiting.get(&record.client).is_some_and(|(r, _)| {
                        r.gateway == record.gateway && r.connection == record.connection
                    });
                    if owned {
                        waiting.remove(&record.client);
                    }
                    if waiting.is_empty() {
                        dormant.remove(&record.doc);
                    }
                }
            }
            Some(_) => {
                if !dormant.contains_key(&record.doc) && dormant.len() >= MAX_DORMANT_DOCS {
                    metrics::counter!("tandem_gateway_presence_dropped_total").increment(1);
                    return;
                }
                let doc = record.doc.clone();
                dormant.entry(doc).or_default().insert(record.client.clone(), (record, expires));
            }
        }
    }

    /// Forgets waiting presences that timed out.
    fn sweep(&self, now: Instant) {
        let mut dormant = self.dormant.lock().expect("dormant presence lock");
        dormant.retain(|_, waiting| {
            waiting.retain(|_, (_, expires)| now < *expires);
            !waiting.is_empty()
        });
    }

    /// Announces a record to the other gateways, if there are any.
    fn publish(&self, record: PresenceRecord) {
        if let Some(bus) = &self.config.bus {
            metrics::counter!("tandem_gateway_presence_announced_total").increment(1);
            bus.publish(record);
        }
    }
}

/// Unix milliseconds now.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A name for this run of the gateway: the process id and the start time.
fn gateway_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("gw-{}-{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests;
