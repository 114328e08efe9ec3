//! One document's presence on this gateway: a task, started by the first participant here and
//! ended when the last one leaves.
//!
//! The task subscribes to the document like a connection does ([`Hubs::subscribe`], with a client
//! id no session can have), so it receives the `snapshot` and then every version's `op`, from the
//! same fan-out as the clients. That gives it the length of every recent version (to refuse a
//! selection outside its text) and the ops to move each selection to the newest version. Every
//! presence it holds is kept at that version, so a participant that joins gets them all in the
//! text it already has: the hub queued the joiner's `snapshot` after the ops the task takes in
//! before answering (see [`DocTask::drain`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tandem_protocol::presence::{PresenceFrame, PresenceRecord, PresenceState, Selection};
use tandem_protocol::ws::ServerMessage;
use tandem_protocol::{ClientId, DocId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::window::{Shape, Window};

mod remote;
mod versions;
use super::{unix_ms, Presences, RemotePresence};
use crate::hub::ConnId;
use crate::outbound::{Inbound, Outbound};

/// The client id of a document task's hub subscription. A `.` never appears in a scoped client id
/// (unpadded base64url), so no session's ops are ever delivered to the task as its `ack`.
static HUB_CLIENT: LazyLock<ClientId> =
    LazyLock::new(|| ClientId::parse("presence.gateway").expect("a valid client id"));

/// Longest pause between the task's rounds of re-announcing, expiring and retrying (half a
/// heartbeat when that is shorter).
const MAX_TICK: Duration = Duration::from_secs(1);

pub(crate) enum DocCommand {
    /// A participant here says where its selection is (and joins, the first time).
    Update { conn: ConnId, client: ClientId, user: String, outbound: Outbound, state: PresenceState },
    /// A participant here left.
    Leave { conn: ConnId },
    /// Another gateway's announcement, and when it is gone unless announced again.
    Remote(RemotePresence),
}

struct Local {
    client: ClientId,
    user: String,
    outbound: Outbound,
    /// Its selection at the window's newest version.
    state: PresenceState,
    announced: Instant,
}

struct Remote {
    record: PresenceRecord,
    /// Its selection at the window's newest version.
    state: PresenceState,
    expires: Instant,
}

pub(super) struct DocTask {
    presences: Arc<Presences>,
    doc: DocId,
    id: u64,
    hub_conn: ConnId,
    /// `None` until the hub's snapshot arrived (or after the subscription failed).
    window: Option<Window>,
    locals: HashMap<ConnId, Local>,
    remotes: HashMap<ClientId, Remote>,
    /// Remote selections in versions this gateway has not seen yet, waiting for them.
    parked: HashMap<ClientId, RemotePresence>,
    /// The hub subscription must start over (a gap, an error frame, an overload).
    resubscribe: bool,
}

impl DocTask {
    pub(super) fn new(presences: Arc<Presences>, doc: DocId, id: u64, hub_conn: ConnId) -> Self {
        Self {
            presences,
            doc,
            id,
            hub_conn,
            window: None,
            locals: HashMap::new(),
            remotes: HashMap::new(),
            parked: HashMap::new(),
            resubscribe: false,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<DocCommand>, waiting: Vec<RemotePresence>) {
        metrics::gauge!("tandem_gateway_presence_documents").increment(1.0);
        let mut hub = self.subscribe().await;
        for remote in waiting {
            self.on_remote(remote, &mut hub).await;
        }
        let every = (self.presences.config.heartbeat / 2).clamp(Duration::from_millis(20), MAX_TICK);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => self.on_command(command, &mut hub).await,
                    None => break,
                },
                Some(frame) = next_frame(&mut hub) => {
                    self.on_frame(&frame);
                    self.release_parked().await;
                }
                _ = tick.tick() => self.on_tick(&mut hub).await,
            }
            if self.locals.is_empty() {
                // Retire: leave the registry first, then take what was sent meanwhile elsewhere.
                let remotes = self.remotes.drain().map(|(_, r)| (r.record, r.expires)).collect();
                self.presences.retire(&self.doc, self.id, remotes);
                rx.close();
                while let Ok(command) = rx.try_recv() {
                    match command {
                        DocCommand::Remote(remote) => self.presences.route_remote(remote),
                        command => {
                            let (presences, doc) = (self.presences.clone(), self.doc.clone());
                            tokio::spawn(async move { presences.send(&doc, command).await });
                        }
                    }
                }
                break;
            }
        }
        if hub.is_some() {
            self.presences.hubs.unsubscribe(&self.doc, self.hub_conn).await;
        }
        metrics::gauge!("tandem_gateway_presence_documents").decrement(1.0);
    }

    /// Subscribes to the document's hub task (again, after a failure). With a window, from its newest
    /// version: the hub replays the versions after it (or, too far behind, sends a snapshot, and
    /// the window starts over). `None` when the document cannot be read now; the next tick tries
    /// again.
    async fn subscribe(&mut self) -> Option<Inbound> {
        let hubs = self.presences.hubs.clone();
        hubs.unsubscribe(&self.doc, self.hub_conn).await;
        self.resubscribe = false;
        let config = &self.presences.gateway_config;
        let (queue, bytes) = (config.outbound_queue, config.outbound_queue_bytes);
        let mut attempts = vec![None];
        if let Some(window) = &self.window {
            // A deleted and recreated document is behind `since`: then from a snapshot.
            attempts.insert(0, Some(window.last()));
        }
        for since in attempts {
            let (outbound, mut inbound) = Outbound::new(queue, bytes);
            // A replay is queued while the hub answers: keep taking it, or a long one would fill
            // the queue and never finish.
            let mut frames = Vec::new();
            let doc = self.doc.clone();
            let subscribed = {
                let subscribing = hubs.subscribe(&doc, self.hub_conn, HUB_CLIENT.clone(), outbound, since);
                tokio::pin!(subscribing);
                loop {
                    tokio::select! {
                        result = &mut subscribing => break result,
                        Some(frame) = inbound.frames.recv() => {
                            inbound.written(&frame);
                            frames.push(frame);
                        }
                    }
                }
            };
            match subscribed {
                Ok(()) => {
                    for frame in &frames {
                        self.on_frame(frame);
                    }
                    let mut hub = Some(inbound);
                    self.drain(&mut hub);
                    return hub;
                }
                Err(e) => {
                    debug!(doc = %self.doc, ?since, error = %e, "presence could not follow the document")
                }
            }
        }
        warn!(doc = %self.doc, "presence cannot follow the document now; retrying");
        self.window = None;
        None
    }

    /// Takes in every frame the hub has queued: afterwards the window is at least at the version of
    /// any `snapshot` or `op` the hub queued for a client before now.
    fn drain(&mut self, hub: &mut Option<Inbound>) {
        let Some(inbound) = hub else { return };
        while let Ok(frame) = inbound.frames.try_recv() {
            inbound.written(&frame);
            self.on_frame(&frame);
        }
        if inbound.overloaded.is_cancelled() {
            self.resubscribe = true;
        }
    }

    /// A selection may name the version its client was just acknowledged, before the hub's frame of
    /// that version has reached this task (the ack and the frame travel separately): waits for it up
    /// to [`VERSION_WAIT`] before the selection is judged ahead of the document.
    async fn await_version(&mut self, version: u64, hub: &mut Option<Inbound>) {
        let deadline = tokio::time::Instant::now() + VERSION_WAIT;
        while self.window.as_ref().is_some_and(|w| w.last() < version) {
            match tokio::time::timeout_at(deadline, next_frame(hub)).await {
                Ok(Some(frame)) => self.on_frame(&frame),
                _ => return,
            }
        }
    }

    fn on_frame(&mut self, frame: &Utf8Bytes) {
        match serde_json::from_str::<ServerMessage>(frame.as_str()) {
            Ok(ServerMessage::Snapshot { version, text, .. }) => {
                self.reset(version, text.chars().count() as u64)
            }
            Ok(ServerMessage::Op { version, op, .. }) => {
                let Some(window) = &mut self.window else { return };
                if version <= window.last() {
                    return;
                }
                if version != window.last() + 1 {
                    self.resubscribe = true;
                    return;
                }
                let shape = Shape::of(&op);
                for state in self
                    .locals
                    .values_mut()
                    .map(|l| &mut l.state)
                    .chain(self.remotes.values_mut().map(|r| &mut r.state))
                {
                    if let Some(s) = &mut state.selection {
                        *s = Selection {
                            version,
                            anchor: shape.transform_index(s.anchor),
                            head: shape.transform_index(s.head),
                        };
                    }
                }
                window.push(shape, op.target_len() as u64);
            }
            // The document was deleted (or the subscription overloaded): start over from a snapshot.
            Ok(ServerMessage::Error { code, .. }) => {
                debug!(doc = %self.doc, %code, "presence's hub subscription ended; starting over");
                self.resubscribe = true;
            }
            Ok(_) => {}
            Err(e) => warn!(doc = %self.doc, error = %e, "presence cannot read a hub frame"),
        }
    }

    /// The document at `version` from a snapshot. Selections in a version this task cannot move
    /// from (a deleted and recreated document, a replay too long for the hub) are clamped into the
    /// new text and sent again.
    fn reset(&mut self, version: u64, len: u64) {
        if self.window.as_ref().is_some_and(|w| w.last() == version) {
            return;
        }
        let had_window = self.window.is_some();
        self.window = Some(Window::new(version, len, self.presences.config.max_version_lag as usize));
        if !had_window {
            return;
        }
        let clamp = |s: &mut Selection| {
            *s = Selection { version, anchor: s.anchor.min(len), head: s.head.min(len) };
        };
        let mut frames = Vec::new();
        for (conn, local) in &mut self.locals {
            if let Some(s) = &mut local.state.selection {
                clamp(s);
                frames.push((
                    Some(*conn),
                    PresenceFrame::presence(&self.doc, &local.client, &local.user, &local.state),
                ));
            }
        }
        for remote in self.remotes.values_mut() {
            if let Some(s) = &mut remote.state.selection {
                clamp(s);
                let (client, user) = (&remote.record.client, &remote.record.user);
                frames.push((None, PresenceFrame::presence(&self.doc, client, user, &remote.state)));
            }
        }
        for (from, frame) in frames {
            self.relay(from, &frame);
        }
    }

    async fn on_command(&mut self, command: DocCommand, hub: &mut Option<Inbound>) {
        match command {
            DocCommand::Update { conn, client, user, outbound, state } => {
                self.drain(hub);
                if let Some(selection) = &state.selection {
                    self.await_version(selection.version, hub).await;
                }
                self.release_parked().await;
                self.on_update(conn, client, user, outbound, state).await;
            }
            DocCommand::Leave { conn } => {
                if let Some(local) = self.locals.remove(&conn) {
                    let left =
                        PresenceFrame::PresenceLeft { doc: self.doc.clone(), client: local.client.clone() };
                    self.relay(Some(conn), &left);
                    self.announce(conn, &local.client, &local.user, None);
                }
            }
            DocCommand::Remote(remote) => self.on_remote(remote, hub).await,
        }
    }

    async fn on_update(
        &mut self,
        conn: ConnId,
        client: ClientId,
        user: String,
        outbound: Outbound,
        mut state: PresenceState,
    ) {
        // Announced to the other gateways in the version the client named, not this gateway's
        // newest: they have that version already (the client had it), while this gateway's newest
        // may not have reached them yet, and they would hold the caret back until it has.
        let announced = state.clone();
        if let Some(selection) = state.selection {
            match self.moved_to_newest(selection).await {
                Ok(moved) => state.selection = Some(moved),
                Err(error) => {
                    metrics::counter!("tandem_gateway_presence_refused_total").increment(1);
                    let frame = ServerMessage::from(error.with_doc(self.doc.clone()));
                    crate::error_counts::count(&frame);
                    // Marked, so a client tells a refused presence from a refused op or open.
                    let mut json = serde_json::to_value(&frame).expect("server messages serialise");
                    json["presence"] = serde_json::Value::Bool(true);
                    let _ = outbound.push(json.to_string().into());
                    return;
                }
            }
        }
        let joining = !self.locals.contains_key(&conn);
        if joining {
            // The others, at a version the joiner has: its snapshot was queued before we drained.
            let others = self
                .locals
                .iter()
                .filter(|(c, _)| **c != conn)
                .map(|(_, l)| PresenceFrame::presence(&self.doc, &l.client, &l.user, &l.state));
            let remotes = self
                .remotes
                .values()
                .map(|r| PresenceFrame::presence(&self.doc, &r.record.client, &r.record.user, &r.state));
            for frame in others.chain(remotes).collect::<Vec<_>>() {
                let _ = outbound.push(frame.to_json().into());
            }
        }
        if !joining && self.locals.get(&conn).is_some_and(|l| l.state == state) {
            return;
        }
        let frame = PresenceFrame::presence(&self.doc, &client, &user, &state);
        self.relay(Some(conn), &frame);
        self.announce(conn, &client, &user, Some(announced));
        self.locals.insert(conn, Local { client, user, outbound, state, announced: Instant::now() });
    }

    async fn on_tick(&mut self, hub: &mut Option<Inbound>) {
        let now = Instant::now();
        if self.resubscribe || hub.is_none() {
            *hub = self.subscribe().await;
        }
        let heartbeat = self.presences.config.heartbeat;
        let due: Vec<ConnId> =
            self.locals.iter().filter(|(_, l)| now >= l.announced + heartbeat).map(|(c, _)| *c).collect();
        for conn in due {
            let local = self.locals.get_mut(&conn).expect("listed above");
            local.announced = now;
            let (client, user, state) = (local.client.clone(), local.user.clone(), local.state.clone());
            self.announce(conn, &client, &user, Some(state));
        }
        let expired: Vec<ClientId> =
            self.remotes.iter().filter(|(_, r)| now >= r.expires).map(|(c, _)| c.clone()).collect();
        for client in expired {
            self.remotes.remove(&client);
            metrics::counter!("tandem_gateway_presence_expired_total").increment(1);
            self.relay(None, &PresenceFrame::PresenceLeft { doc: self.doc.clone(), client });
        }
        self.parked.retain(|_, (_, expires)| now < *expires);
    }

    /// Sends a frame to every participant here but `except`.
    fn relay(&self, except: Option<ConnId>, frame: &PresenceFrame) {
        let frame = Utf8Bytes::from(frame.to_json());
        for (conn, local) in &self.locals {
            if Some(*conn) != except {
                metrics::counter!("tandem_gateway_presence_relayed_total").increment(1);
                // A full queue marks that connection overloaded; it is closed and leaves.
                let _ = local.outbound.push(frame.clone());
            }
        }
    }

    fn announce(&self, conn: ConnId, client: &ClientId, user: &str, state: Option<PresenceState>) {
        self.presences.publish(PresenceRecord {
            doc: self.doc.clone(),
            client: client.clone(),
            user: user.to_owned(),
            gateway: self.presences.gateway.clone(),
            connection: conn,
            sent_at_ms: unix_ms(),
            state,
        });
    }
}

/// The next frame of the hub subscription; never, without one. A subscription the hub ended (it
/// dropped an overloaded subscriber, or a deleted document's) becomes none: the next tick
/// subscribes again.
/// How long a selection naming a version this task has not seen yet waits for it.
const VERSION_WAIT: Duration = Duration::from_secs(1);

async fn next_frame(hub: &mut Option<Inbound>) -> Option<Utf8Bytes> {
    let Some(inbound) = hub else { return std::future::pending().await };
    match inbound.frames.recv().await {
        Some(frame) => {
            inbound.written(&frame);
            Some(frame)
        }
        None => {
            *hub = None;
            None
        }
    }
}
