//! One connection's presence messages on their way to the document tasks, rate-limited and
//! coalesced: at most [`PresenceConfig::updates_per_second`] updates a second leave a connection, and
//! an update that arrives while the connection must wait replaces the one of the same document
//! still waiting (the latest wins: a caret's path does not matter, where it ends does). The first
//! update after a quiet spell goes at once, so a single move costs no delay.
//!
//! [`PresenceConfig::updates_per_second`]: super::PresenceConfig::updates_per_second

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_protocol::presence::{PresenceState, PresenceUpdate};
use tandem_protocol::{ClientId, DocId};
use tokio::sync::Notify;

use super::doc::DocCommand;
use super::Presences;
use crate::hub::ConnId;
use crate::outbound::Outbound;

/// What waits to leave for one document.
#[derive(Default)]
struct Waiting {
    /// The connection left the document (closed it): tell the task before any newer update.
    leave: bool,
    update: Option<PresenceState>,
}

#[derive(Default)]
struct Pending {
    docs: HashMap<DocId, Waiting>,
    /// The connection has ended: leave every document.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// The connection's side. Dropping it (the connection ends) makes the session leave every document
/// it was present in.
pub(crate) struct PresenceOutlet {
    shared: Arc<Shared>,
    /// The sending task, not started before the connection's first `presence` message: most
    /// connections of a load test (and of old clients) never send one.
    idle: Mutex<Option<(Sender, Duration)>>,
}

impl PresenceOutlet {
    pub(super) fn start(
        presences: Arc<Presences>,
        conn: ConnId,
        client: ClientId,
        user: String,
        outbound: Outbound,
    ) -> Self {
        let shared = Arc::new(Shared { pending: Mutex::default(), wake: Notify::new() });
        let per_second = presences.config.updates_per_second.max(1);
        let pause = Duration::from_secs(1) / per_second;
        let sender = Sender { presences, conn, client, user, outbound, joined: HashSet::new() };
        Self { shared, idle: Mutex::new(Some((sender, pause))) }
    }

    fn wake(&self) {
        if let Some((sender, pause)) = self.idle.lock().expect("presence outlet lock").take() {
            tokio::spawn(sender.run(self.shared.clone(), pause));
        }
        self.shared.wake.notify_one();
    }

    /// A `presence` message of the connection, for a document open on it. Never waits.
    pub(crate) fn update(&self, update: PresenceUpdate) {
        let mut pending = self.shared.pending.lock().expect("presence outlet lock");
        let waiting = pending.docs.entry(update.doc).or_default();
        if waiting.update.replace(update.state).is_some() {
            metrics::counter!("tandem_gateway_presence_coalesced_total").increment(1);
        }
        drop(pending);
        self.wake();
    }

    /// The connection closed the document (or may no longer read it).
    pub(crate) fn leave(&self, doc: &DocId) {
        if self.idle.lock().expect("presence outlet lock").is_some() {
            return; // never present anywhere
        }
        let mut pending = self.shared.pending.lock().expect("presence outlet lock");
        let waiting = pending.docs.entry(doc.clone()).or_default();
        waiting.leave = true;
        waiting.update = None;
        drop(pending);
        self.wake();
    }
}

impl Drop for PresenceOutlet {
    fn drop(&mut self) {
        self.shared.pending.lock().expect("presence outlet lock").closed = true;
        self.shared.wake.notify_one();
    }
}

/// The task's side: hands what waits to the document tasks.
struct Sender {
    presences: Arc<Presences>,
    conn: ConnId,
    client: ClientId,
    user: String,
    outbound: Outbound,
    /// Documents this connection is present in, as far as it has told their tasks.
    joined: HashSet<DocId>,
}

impl Sender {
    async fn run(mut self, shared: Arc<Shared>, pause: Duration) {
        loop {
            shared.wake.notified().await;
            loop {
                let (docs, closed) = {
                    let mut pending = shared.pending.lock().expect("presence outlet lock");
                    (std::mem::take(&mut pending.docs), pending.closed)
                };
                if docs.is_empty() && !closed {
                    break;
                }
                let mut sent = 0;
                for (doc, waiting) in docs {
                    if waiting.leave && self.joined.remove(&doc) {
                        self.presences.send(&doc, DocCommand::Leave { conn: self.conn }).await;
                    }
                    if let Some(state) = waiting.update {
                        self.joined.insert(doc.clone());
                        let command = DocCommand::Update {
                            conn: self.conn,
                            client: self.client.clone(),
                            user: self.user.clone(),
                            outbound: self.outbound.clone(),
                            state,
                        };
                        self.presences.send(&doc, command).await;
                        sent += 1;
                    }
                }
                if closed {
                    for doc in std::mem::take(&mut self.joined) {
                        self.presences.send(&doc, DocCommand::Leave { conn: self.conn }).await;
                    }
                    return;
                }
                // The rate limit: each relayed update costs one pause; what arrives meanwhile waits,
                // the latest per document replacing the rest.
                tokio::time::sleep(pause * sent).await;
            }
        }
    }
}
