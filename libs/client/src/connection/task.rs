//! The background task of a [`Client`](super::Client): owns the socket, applies what arrives to the
//! documents, writes what they want sent, and reconnects.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tandem_protocol::ws::{BearerToken, ClientMessage, ServerMessage};
use tandem_protocol::{DocId, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use super::persist::Restored;
use super::socket::{self, encode, Ws, CLOSE_UNAUTHORIZED};
use super::{
    backoff, is_fatal, ClientEvent, ClientOptions, Command, DocEntry, ErrorRecord, ErrorSource, Phase,
    Shared, State,
};
use crate::{ClientError, DocumentClient};

/// Starts the task on the already handshaken socket, connected to `urls[current]`.
pub(super) fn spawn(
    urls: Vec<String>,
    current: usize,
    options: Arc<ClientOptions>,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    ws: Ws,
) {
    let task = Task {
        urls,
        current,
        next: current,
        token: options.token.clone(),
        options,
        shared,
        commands,
        opening: HashMap::new(),
        resends: Vec::new(),
        last_write: Instant::now(),
    };
    tokio::spawn(task.run(ws));
}

struct Task {
    /// The URL given to `connect`, then the fallbacks; never empty.
    urls: Vec<String>,
    /// Index in `urls` of the current connection, or of the last one while reconnecting.
    current: usize,
    /// Index in `urls` of the next connection attempt.
    next: usize,
    options: Arc<ClientOptions>,
    /// The token for the next connection: the options' one until [`Command::Authenticate`] replaces it.
    token: Option<String>,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    /// `open` requests waiting for their snapshot.
    opening: HashMap<DocId, oneshot::Sender<Result<(), ClientError>>>,
    /// Ops refused as `rate_limited` or `unavailable`, to send again at the given time. At most one
    /// per document (only the op in flight can be refused).
    resends: Vec<(Instant, DocId, u64)>,
    /// When a frame was last written: a connection silent for `keepalive` sends a `ping`, so the
    /// server's idle timeout never closes a client that is merely reading.
    last_write: Instant,
}

/// What to do after an event.
enum Flow {
    Continue,
    /// The socket is gone; reconnect if allowed.
    Lost(String),
    /// The client ends, for the given reason.
    End(String),
}

enum Event {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Command(Option<Command>),
    Outbox,
    Resend,
    Keepalive,
}

impl Task {
    async fn run(mut self, ws: Ws) {
        let reason = self.serve(ws).await;
        debug!(client = %self.shared.client_id, reason, "client task ends");
        {
            let mut state = self.shared.lock();
            state.closed = Some(reason.clone());
            state.connected = false;
        }
        for (_, reply) in self.opening.drain() {
            let _ = reply.send(Err(ClientError::Closed(reason.clone())));
        }
        self.shared.notify_changed();
    }

    /// Runs until the client ends; returns why.
    ///
    /// Reconnecting walks the URLs round robin from the one after the lost connection's. The URLs of a
    /// round follow each other without delay; the backoff is waited before the first attempt (its
    /// jitter spreads the clients of a failed gateway) and after each round in which every URL
    /// failed, growing per failed round. With one URL this is the plain backoff per attempt.
    async fn serve(&mut self, ws: Ws) -> String {
        let mut ws = Some(ws);
        // Failed attempts since the connection was lost; `failed / urls.len()` rounds have failed.
        let mut failed: usize = 0;
        let mut retry_at = Instant::now();
        loop {
            let flow = match ws.as_mut() {
                Some(socket) => self.step(socket).await,
                None => {
                    tokio::select! {
                        command = self.commands.recv() => self.on_command(command, false, &mut Vec::new()),
                        () = tokio::time::sleep_until(retry_at) => {
                            match self.reconnect().await {
                                Ok(socket) => {
                                    failed = 0;
                                    ws = Some(socket);
                                    Flow::Continue
                                }
                                Err(e) if is_fatal(&e) => Flow::End(e.to_string()),
                                Err(e) => {
                                    let url = &self.urls[self.next];
                                    warn!(client = %self.shared.client_id, failed, url, error = %e, "reconnect failed");
                                    self.next = (self.next + 1) % self.urls.len();
                                    failed = failed.saturating_add(1);
                                    retry_at = if failed % self.urls.len() == 0 {
                                        let rounds = u32::try_from(failed / self.urls.len()).unwrap_or(u32::MAX);
                                        Instant::now() + backoff(&self.options, rounds)
                                    } else {
                                        Instant::now()
                                    };
                                    Flow::Continue
                                }
                            }
                        }
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Lost(reason) => {
                    debug!(client = %self.shared.client_id, reason, "connection lost");
                    ws = None;
                    self.on_disconnect();
                    if !self.options.reconnect {
                        return format!("connection lost and reconnect is off: {reason}");
                    }
                    self.next = (self.current + 1) % self.urls.len();
                    retry_at = Instant::now() + backoff(&self.options, 0);
                }
                Flow::End(reason) => {
                    if let Some(mut socket) = ws.take() {
                        let _ = socket.close(None).await;
                    }
                    return reason;
                }
            }
        }
    }

    /// Waits for one event on a live connection, handles it, and writes what is due.
    async fn step(&mut self, ws: &mut Ws) -> Flow {
        let resend_at = self.resends.iter().map(|(at, _, _)| *at).min();
        let event = tokio::select! {
            frame = ws.next() => Event::Frame(frame),
            command = self.commands.recv() => Event::Command(command),
            () = self.shared.outbox_ready.notified() => Event::Outbox,
            () = tokio::time::sleep_until(resend_at.unwrap_or_else(Instant::now)), if resend_at.is_some() => {
                Event::Resend
            }
            () = tokio::time::sleep_until(self.last_write + self.options.keepalive) => Event::Keepalive,
        };
        let mut out = Vec::new();
        let flow = match event {
            Event::Frame(frame) => self.on_frame(frame, &mut out),
            Event::Command(command) => self.on_command(command, true, &mut out),
            Event::Outbox => Flow::Continue,
            Event::Resend => {
                self.fire_resends();
                Flow::Continue
            }
            Event::Keepalive => {
                out.push(encode(&ClientMessage::Ping));
                Flow::Continue
            }
        };
        if !matches!(flow, Flow::Continue) {
            return flow;
        }
        self.collect_outbox(&mut out);
        if out.is_empty() {
            return Flow::Continue;
        }
        self.last_write = Instant::now();
        match write_all(ws, out).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Lost(format!("write failed: {e}")),
        }
    }

    fn on_command(&mut self, command: Option<Command>, connected: bool, out: &mut Vec<String>) -> Flow {
        let Some(command) = command else {
            return Flow::End("every Client and DocHandle was dropped".into());
        };
        match command {
            Command::Open { doc, reply, restored } => {
                let open = self.shared.lock().docs.get(&doc).is_some_and(|e| e.phase != Phase::Closed);
                if open || self.opening.contains_key(&doc) {
                    let _ = reply.send(Err(ClientError::AlreadyOpen(doc)));
                    return Flow::Continue;
                }
                match restored.map(|r| *r) {
                    Some(Restored::Editing(client)) => {
                        self.open_restored(doc, client, connected, out);
                        let _ = reply.send(Ok(()));
                        self.shared.notify_changed();
                        return Flow::Continue;
                    }
                    Some(Restored::Fresh(client)) => {
                        // A closed entry is what a snapshot reopens with its `seq` continuing.
                        let entry =
                            DocEntry { doc: client, phase: Phase::Closed, unsent: false, last_sent_seq: 0 };
                        self.shared.lock().docs.insert(doc.clone(), entry);
                    }
                    None => {}
                }
                if connected {
                    out.push(encode(&ClientMessage::Open { doc: doc.clone(), since: None, presence: false }));
                }
                self.opening.insert(doc, reply);
                Flow::Continue
            }
            Command::Close { doc } => {
                let mut state = self.shared.lock();
                if let Some(entry) = state.docs.get_mut(&doc) {
                    if entry.phase != Phase::Closed {
                        entry.phase = Phase::Closed;
                        entry.unsent = false;
                        if connected {
                            out.push(encode(&ClientMessage::Close { doc: doc.clone() }));
                        }
                    }
                }
                self.resends.retain(|(_, d, _)| *d != doc);
                drop(state);
                self.shared.notify_changed();
                Flow::Continue
            }
            Command::Authenticate { token } => {
                if connected {
                    out.push(encode(&ClientMessage::Auth { token: BearerToken::new(token.clone()) }));
                }
                self.token = Some(token);
                Flow::Continue
            }
            Command::DropConnection { done } => {
                self.shared.lock().connected = false;
                let _ = done.send(());
                if connected {
                    Flow::Lost("dropped by drop_connection".into())
                } else {
                    Flow::Continue
                }
            }
            Command::Shutdown => Flow::End("shut down by the application".into()),
        }
    }

    /// Takes a document's stored state over: readable at once, reopened with `since` (now, or by the
    /// next reconnect), its op in flight written again after `opened` as after any reconnect.
    fn open_restored(&mut self, doc: DocId, client: DocumentClient, connected: bool, out: &mut Vec<String>) {
        let since = client.version();
        let in_flight = client.in_flight_seq();
        // Every seq below next_seq may have reached the server from the process before.
        let last_sent_seq = client.next_seq() - 1;
        if connected {
            out.push(encode(&ClientMessage::Open { doc: doc.clone(), since: Some(since), presence: false }));
        }
        let entry =
            DocEntry { doc: client, phase: Phase::CatchingUp, unsent: in_flight.is_some(), last_sent_seq };
        self.shared.lock().docs.insert(doc, entry);
    }

    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
        out: &mut Vec<String>,
    ) -> Flow {
        match frame {
            None => Flow::Lost("the server closed the stream".into()),
            Some(Err(e)) => Flow::Lost(format!("read failed: {e}")),
            Some(Ok(Message::Text(text))) => {
                match ServerMessage::parse(text.as_str()) {
                    Ok(message) => self.on_message(message, out),
                    Err(e) => {
                        let shown: String = text.as_str().chars().take(200).collect();
                        let mut state = self.shared.lock();
                        violation(&mut state, None, None, format!("unreadable frame ({e}): {shown}"));
                    }
                }
                Flow::Continue
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or_default();
                if code == CLOSE_UNAUTHORIZED {
                    Flow::End(ClientError::Unauthorized(reason).to_string())
                } else {
                    Flow::Lost(format!("the server closed the connection (code {code}): {reason}"))
                }
            }
            Some(Ok(Message::Binary(_))) => {
                let mut state = self.shared.lock();
                violation(&mut state, None, None, "binary frame; the protocol uses text frames".into());
                Flow::Continue
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Flow::Continue,
        }
    }

    fn on_message(&mut self, message: ServerMessage, out: &mut Vec<String>) {
        let about = match &message {
            ServerMessage::Snapshot { doc, .. }
            | ServerMessage::Opened { doc, .. }
            | ServerMessage::Op { doc, .. }
            | ServerMessage::Ack { doc, .. } => Some(doc.clone()),
            ServerMessage::Error { doc, .. } => doc.clone(),
            // Nothing else changes a document's state.
            _ => None,
        };
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        self.apply_message(&mut state, message, out);
        // Before `step` writes what the message made due (the buffer after an ack): on disk first.
        if let Some(doc) = about {
            shared.persist(&mut state, &doc);
        }
        drop(state);
        self.shared.notify_changed();
    }

    fn apply_message(&mut self, state: &mut State, message: ServerMessage, out: &mut Vec<String>) {
        match message {
            ServerMessage::Welcome { .. } | ServerMessage::Pong | ServerMessage::Authed { .. } => {}
            ServerMessage::Snapshot { doc, version, text } => {
                if let Some(reply) = self.opening.remove(&doc) {
                    if reply.is_closed() {
                        // The caller gave up waiting; do not keep a subscription nobody reads.
                        out.push(encode(&ClientMessage::Close { doc }));
                    } else {
                        match state.docs.get_mut(&doc) {
                            // Opened again after close: the seq continues.
                            Some(entry) => {
                                entry.doc.reset(version, &text);
                                entry.phase = Phase::Open;
                                entry.unsent = false;
                            }
                            None => {
                                let client = DocumentClient::new(doc.clone(), version, &text)
                                    .with_undo_options(self.options.undo);
                                let entry = DocEntry {
                                    doc: client,
                                    phase: Phase::Open,
                                    unsent: false,
                                    last_sent_seq: 0,
                                };
                                state.docs.insert(doc, entry);
                            }
                        }
                        let _ = reply.send(Ok(()));
                    }
                } else if let Some(entry) = state.docs.get_mut(&doc).filter(|e| e.phase == Phase::Resyncing) {
                    entry.doc.reset(version, &text);
                    entry.phase = Phase::Open;
                    entry.unsent = false;
                } else if let Some(entry) = state.docs.get_mut(&doc).filter(|e| e.phase == Phase::CatchingUp)
                {
                    // A reopen further behind than the server's catch-up limit: the whole document
                    // instead of every version since, then `opened` at its version (PROTOCOL.md,
                    // "Reconnect"). Start over from it as after `invalid_op`: unacknowledged edits
                    // are dropped, not resent, and `seq` continues.
                    entry.doc.reset(version, &text);
                    entry.unsent = false;
                }
            }
            ServerMessage::Opened { doc, version } => {
                let Some(entry) = state.docs.get_mut(&doc).filter(|e| e.phase == Phase::CatchingUp) else {
                    return;
                };
                if version != entry.doc.version() {
                    let have = entry.doc.version();
                    violation(
                        state,
                        Some(&doc),
                        None,
                        format!("opened at version {version}, but version {have} was the last delivered"),
                    );
                    resync(state, &doc, out);
                    return;
                }
                entry.phase = Phase::Open;
                if entry.doc.resubmission().is_some() {
                    entry.unsent = true;
                    state.outbox.insert(doc);
                }
            }
            ServerMessage::Op { doc, version, client, op } => {
                let at = std::time::Instant::now();
                let own = client == state.author;
                let Some(entry) = live_entry(state, &doc) else { return };
                let have = entry.doc.version();
                let result = if own {
                    Err(format!("own op delivered as op at version {version} instead of ack"))
                } else if version <= have {
                    Err(format!("version {version} delivered again (have {have}); ignored"))
                } else {
                    entry.doc.on_remote_op(version, &op).map(|_| ()).map_err(|e| e.to_string())
                };
                match result {
                    Ok(()) => {
                        state.stats.remote_ops += 1;
                        self.emit(state, || ClientEvent::RemoteOp { doc, version, author: client, at });
                    }
                    Err(message) => {
                        violation(state, Some(&doc), None, message);
                        if version > have {
                            resync(state, &doc, out);
                        }
                    }
                }
            }
            ServerMessage::Ack { doc, seq, version } => {
                let at = std::time::Instant::now();
                let Some(entry) = live_entry(state, &doc) else { return };
                let have = entry.doc.version();
                if version <= have {
                    let message = format!(
                        "ack of seq {seq} at version {version} delivered again (have {have}); ignored"
                    );
                    violation(state, Some(&doc), Some(seq), message);
                    return;
                }
                match entry.doc.on_ack(seq, version) {
                    Ok(next) => {
                        state.stats.acks += 1;
                        if next.is_some() {
                            state.mark_unsent(&doc);
                        }
                        self.emit(state, || ClientEvent::Acked { doc, seq, version, at });
                    }
                    Err(e) => {
                        violation(state, Some(&doc), Some(seq), e.to_string());
                        resync(state, &doc, out);
                    }
                }
            }
            ServerMessage::Error { code, message, doc, seq } => {
                warn!(client = %self.shared.client_id, %code, message, doc = ?doc, seq, "server error");
                let record = ErrorRecord {
                    source: ErrorSource::Server,
                    code,
                    message: message.clone(),
                    doc: doc.clone(),
                    seq,
                };
                state.record(record);
                if let Some(doc) = doc {
                    self.on_doc_error(state, code, message, doc, seq, out);
                }
            }
        }
    }

    /// Reports an event to the observer, if there is one, without ever waiting for it.
    fn emit(&self, state: &mut State, event: impl FnOnce() -> ClientEvent) {
        if let Some(events) = &self.options.events {
            if events.try_send(event()).is_err() {
                state.stats.events_dropped += 1;
            }
        }
    }

    /// An `error` about a document: fail its `open`, reload it, or schedule a resend.
    fn on_doc_error(
        &mut self,
        state: &mut State,
        code: ErrorCode,
        message: String,
        doc: DocId,
        seq: Option<u64>,
        out: &mut Vec<String>,
    ) {
        if seq.is_none() {
            if let Some(reply) = self.opening.remove(&doc) {
                let _ = reply.send(Err(ClientError::Server { code, message }));
                return;
            }
        }
        let Some(entry) = state.docs.get_mut(&doc) else { return };
        match (seq, entry.phase) {
            (_, Phase::Closed) => {}
            (Some(seq), phase) if entry.doc.in_flight_seq() == Some(seq) => {
                if matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable) {
                    // Not processed: the same op goes again later (after `opened`, if we reconnect first).
                    if phase == Phase::Open {
                        self.resends.retain(|(_, d, _)| *d != doc);
                        self.resends.push((Instant::now() + backoff(&self.options, 1), doc, seq));
                    }
                } else {
                    // Rejected (invalid_op, forbidden, too_large…): its edits are lost; reload as
                    // PROTOCOL.md prescribes for invalid_op. A forbidden op never reached the
                    // document, so its seq is not used up.
                    if code == ErrorCode::Forbidden {
                        entry.doc.reuse_in_flight_seq();
                    }
                    resync(state, &doc, out);
                }
            }
            (Some(_), _) => {}
            (None, _) if code == ErrorCode::InvalidOp => resync(state, &doc, out),
            (None, Phase::CatchingUp | Phase::Resyncing) if code == ErrorCode::Forbidden => {
                // Access was withdrawn while we were away.
                entry.phase = Phase::Closed;
                entry.unsent = false;
            }
            (None, Phase::CatchingUp) if code == ErrorCode::BadRequest => {
                // The reopen with `since` was refused (say, `since` ahead of the document): start over.
                resync(state, &doc, out);
            }
            (None, _) => {}
        }
    }

    fn fire_resends(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.resends.drain(..).partition(|(at, _, _)| *at <= now);
        self.resends = later;
        let mut state = self.shared.lock();
        for (_, doc, seq) in due {
            let current =
                state.docs.get(&doc).filter(|e| e.phase == Phase::Open).and_then(|e| e.doc.in_flight_seq());
            if current == Some(seq) {
                state.mark_unsent(&doc);
            }
        }
    }

    /// Takes the ops due for writing from the outbox.
    fn collect_outbox(&mut self, out: &mut Vec<String>) {
        let mut state = self.shared.lock();
        if state.outbox.is_empty() {
            return;
        }
        let state = &mut *state;
        for doc in std::mem::take(&mut state.outbox) {
            let Some(entry) = state.docs.get_mut(&doc) else { continue };
            if entry.phase != Phase::Open || !entry.unsent {
                continue; // written after `opened` or the snapshot
            }
            entry.unsent = false;
            let Some(op) = entry.doc.resubmission() else { continue };
            if op.seq <= entry.last_sent_seq {
                state.stats.resubmissions += 1;
            }
            entry.last_sent_seq = entry.last_sent_seq.max(op.seq);
            state.stats.ops_sent += 1;
            out.push(op.to_json());
        }
    }

    /// The socket is gone: every document must be reopened with `since`, and every op in flight may
    /// have been lost, so it is written again after `opened`.
    fn on_disconnect(&mut self) {
        self.resends.clear();
        let mut state = self.shared.lock();
        state.connected = false;
        for entry in state.docs.values_mut() {
            if entry.phase == Phase::Open {
                entry.phase = Phase::CatchingUp;
            }
            entry.unsent = entry.doc.in_flight_seq().is_some();
        }
        drop(state);
        self.shared.notify_changed();
    }

    /// Connects again to `urls[next]` with the same token and client id and reopens every document.
    async fn reconnect(&mut self) -> Result<Ws, ClientError> {
        let options = &self.options;
        let url = &self.urls[self.next];
        let (mut ws, author) =
            socket::connect(url, self.token.as_deref(), &self.shared.client_id, options.connect_timeout)
                .await?;
        self.opening.retain(|_, reply| !reply.is_closed());
        let mut out: Vec<String> = self
            .opening
            .keys()
            .map(|doc| encode(&ClientMessage::Open { doc: doc.clone(), since: None, presence: false }))
            .collect();
        {
            let mut state = self.shared.lock();
            state.author = author;
            for (doc, entry) in &mut state.docs {
                let since = match entry.phase {
                    Phase::Closed => continue,
                    Phase::Resyncing => None,
                    Phase::Open | Phase::CatchingUp => {
                        entry.phase = Phase::CatchingUp;
                        Some(entry.doc.version())
                    }
                };
                out.push(encode(&ClientMessage::Open { doc: doc.clone(), since, presence: false }));
            }
        }
        write_all(&mut ws, out).await?;
        let failover = self.urls[self.current] != *url;
        {
            let mut state = self.shared.lock();
            state.connected = true;
            state.stats.reconnects += 1;
            if failover {
                state.stats.failovers += 1;
                state.stats.current_url.clone_from(url);
            }
        }
        self.current = self.next;
        self.shared.notify_changed();
        debug!(client = %self.shared.client_id, url, failover, "reconnected");
        Ok(ws)
    }
}

/// The entry of a document that takes versions now (open or catching up), if any.
fn live_entry<'a>(state: &'a mut State, doc: &DocId) -> Option<&'a mut DocEntry> {
    state.docs.get_mut(doc).filter(|e| matches!(e.phase, Phase::Open | Phase::CatchingUp))
}

/// Records a protocol violation found by the client.
fn violation(state: &mut State, doc: Option<&DocId>, seq: Option<u64>, message: String) {
    warn!(doc = ?doc, seq, message, "protocol violation");
    state.record(ErrorRecord {
        source: ErrorSource::Client,
        code: ErrorCode::Internal,
        message,
        doc: doc.cloned(),
        seq,
    });
}

/// Drops the document's unacknowledged edits and reloads it: `close`, then `open` without `since`.
/// Everything for it is ignored until the snapshot; `seq` continues.
fn resync(state: &mut State, doc: &DocId, out: &mut Vec<String>) {
    let Some(entry) = state.docs.get_mut(doc) else { return };
    if matches!(entry.phase, Phase::Resyncing | Phase::Closed) {
        return;
    }
    entry.phase = Phase::Resyncing;
    entry.unsent = false;
    state.stats.resyncs += 1;
    out.push(encode(&ClientMessage::Close { doc: doc.clone() }));
    out.push(encode(&ClientMessage::Open { doc: doc.clone(), since: None, presence: false }));
}

async fn write_all(ws: &mut Ws, frames: Vec<String>) -> Result<(), tungstenite::Error> {
    for frame in frames {
        ws.feed(Message::text(frame)).await?;
    }
    ws.flush().await
}
