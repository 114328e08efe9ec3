//! One client connection: the `hello` handshake, then requests from the client and frames queued by
//! the document tasks, until either side ends it.
//!
//! Every write to the socket is bounded in time: a client that stops reading is closed as
//! `overloaded` instead of holding the gateway's memory.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use tandem_auth::{Access, Principal};
use tandem_protocol::presence::{PresenceState, PresenceUpdate};
use tandem_protocol::records::Submission;
use tandem_protocol::ws::{BearerToken, ClientMessage, ServerMessage};
use tandem_protocol::{ClientId, DocId, ErrorCode, ProtocolError, PROTOCOL_VERSION};
use tokio::time::Instant;
use tracing::debug;

use crate::admission::{unix_now, Authentication};
use crate::hub::ConnId;
use crate::limits::{ConnectionSlot, TokenBucket};
use crate::outbound::{Inbound, Outbound};
use crate::presence::PresenceOutlet;
use crate::submit_queue::SubmitQueue;
use crate::GatewayState;

/// WebSocket close codes used by the protocol.
mod close_code {
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    /// The gateway drains for a restart: reconnect (elsewhere) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const OVERLOADED: u16 = 4408;
}

/// Most queued frames written before flushing the socket.
const WRITE_BATCH: usize = 256;
/// How long a closing connection waits for the client's close frame, so the close code arrives
/// instead of a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Why a connection ends, and the close frame to send.
type End = Option<(u16, &'static str)>;

/// Serves one upgraded socket to the end. `_slot` holds the connection's place in the per-user and
/// per-address limits until then.
pub(crate) async fn serve(
    mut socket: WebSocket,
    state: Arc<GatewayState>,
    principal: Principal,
    _slot: ConnectionSlot,
) {
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let Some((chosen, client)) = handshake(&mut socket, &state, &principal).await else { return };
    metrics::gauge!("tandem_gateway_connections").increment(1.0);
    debug!(conn, client = %chosen, scoped = %client, user = %principal.user, "connection open");
    let (outbound, mut inbound) =
        Outbound::new(state.config.outbound_queue, state.config.outbound_queue_bytes);
    let submits = SubmitQueue::start(
        state.config.submit_queue,
        state.submitter.clone(),
        state.hubs.clone(),
        outbound.clone(),
    );
    let presence = state.presences.outlet(conn, client.clone(), principal.user.clone(), outbound.clone());
    let mut session = Session {
        conn,
        client,
        expiry: expiry_deadline(&state.config.auth, &principal),
        principal,
        ops: TokenBucket::new(state.config.ops_per_second, state.config.ops_burst),
        outbound,
        submits,
        open: HashSet::new(),
        opening: None,
        presence,
        state: state.clone(),
    };
    let end = session.run(&mut socket, &mut inbound).await;
    for doc in session.open.iter().chain(&session.opening) {
        state.hubs.unsubscribe(doc, conn).await;
    }
    if let Some((code, reason)) = end {
        close(&mut socket, code, reason, state.config.write_timeout).await;
    }
    metrics::gauge!("tandem_gateway_connections").decrement(1.0);
    debug!(conn, "connection closed");
}

/// Waits for `hello` and answers `welcome`; on anything else, says why and closes. Returns the id the
/// client chose and that id scoped by its user (see [`Principal::scoped_client`]): the id its ops are
/// submitted, deduplicated and shown to others under, so no user can pass for another's session.
/// The client still sees the id it chose in `welcome`, and its acks name only its `seq`.
async fn handshake(
    socket: &mut WebSocket,
    state: &GatewayState,
    principal: &Principal,
) -> Option<(ClientId, ClientId)> {
    let deadline = Instant::now() + state.config.handshake_timeout;
    let timeout = state.config.write_timeout;
    let text = loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let message =
                    format!("no hello within {} s of connecting", state.config.handshake_timeout.as_secs());
                refuse(socket, ProtocolError::bad_request(message), close_code::POLICY, timeout).await;
                return None;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Err(e))) => {
                read_error(socket, e, state).await;
                return None;
            }
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Binary(_)))) => {
                refuse(socket, binary_frame(), close_code::POLICY, timeout).await;
                return None;
            }
            Ok(Some(Ok(_))) => continue, // WebSocket-level ping and pong
        }
    };
    match ClientMessage::parse(&text) {
        Ok(ClientMessage::Hello { protocol, client }) if protocol == PROTOCOL_VERSION => {
            let scoped = principal.scoped_client(&client);
            let welcome = ServerMessage::Welcome {
                protocol,
                client: client.clone(),
                user: principal.user.clone(),
                author: Some(scoped.clone()),
            };
            send(socket, &welcome, timeout).await.ok()?;
            Some((client, scoped))
        }
        Ok(ClientMessage::Hello { protocol, .. }) => {
            let message = format!(
                "protocol version {protocol} is not supported; this server speaks {PROTOCOL_VERSION}"
            );
            let error = ProtocolError::new(ErrorCode::UnsupportedProtocol, message);
            refuse(socket, error, close_code::PROTOCOL_ERROR, timeout).await;
            None
        }
        Ok(_) => {
            let error = ProtocolError::bad_request("the first message must be hello");
            refuse(socket, error, close_code::POLICY, timeout).await;
            None
        }
        Err(e) => {
            let e = ProtocolError::bad_request(format!("the first message must be hello: {}", e.message));
            refuse(socket, e, close_code::POLICY, timeout).await;
            None
        }
    }
}

/// Sends one message, giving up after `timeout` (a client that does not read).
async fn send(socket: &mut WebSocket, message: &ServerMessage, timeout: Duration) -> Result<(), ()> {
    crate::error_counts::count(message);
    match tokio::time::timeout(timeout, socket.send(Message::Text(message.to_json().into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends an error, then closes with `code`.
async fn refuse(socket: &mut WebSocket, error: ProtocolError, code: u16, timeout: Duration) {
    let reason = error.code.as_str();
    let _ = send(socket, &ServerMessage::from(error), timeout).await;
    close(socket, code, reason, timeout).await;
}

/// Sends the close frame, then reads (and drops) what the client still sends until its own close
/// frame: dropping a socket with unread input resets the connection, and the client would see 1006
/// instead of the close code.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, timeout: Duration) {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    if tokio::time::timeout(timeout, socket.send(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {}
                // Unreadable (the rest of an oversized frame): give the client time to read the close.
                Some(Err(_)) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

/// A read failed: when the frame was over the limit, say so (`too_large`, 1009) before closing.
async fn read_error(socket: &mut WebSocket, error: axum::Error, state: &GatewayState) {
    let text = error.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("limit exceeded") {
        let message = format!("the frame is larger than the limit of {} bytes", state.config.max_frame_bytes);
        let error = ProtocolError::new(ErrorCode::TooLarge, message);
        refuse(socket, error, close_code::TOO_BIG, state.config.write_timeout).await;
        // The rest of the frame cannot be read through the WebSocket any more, and dropping the socket
        // with it unread resets the connection: keep it open until the client has read the close.
        tokio::time::sleep(CLOSE_LINGER).await;
    } else if text.to_ascii_lowercase().contains("utf-8") {
        // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection with 1007.
        let error = ProtocolError::bad_request("a text frame was not valid UTF-8");
        refuse(socket, error, close_code::INVALID_PAYLOAD, state.config.write_timeout).await;
    } else {
        debug!(error = %text, "socket read failed");
    }
}

fn binary_frame() -> ProtocolError {
    ProtocolError::bad_request("binary frames are not supported; send JSON in text frames")
}

/// When a session's token runs out: its `exp` plus the verifier's leeway, as a deadline.
fn expiry_deadline(auth: &Authentication, principal: &Principal) -> Option<Instant> {
    let Authentication::Jwt(verifier) = auth else { return None };
    let ends = principal.expires_at?.saturating_add(verifier.leeway_secs());
    Some(Instant::now() + Duration::from_secs(ends.saturating_sub(unix_now())))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct Session {
    conn: ConnId,
    /// The client's id scoped by its user: never the bare id it chose.
    client: ClientId,
    principal: Principal,
    /// When the session's token expires, unless an `auth` message brings a fresh one.
    expiry: Option<Instant>,
    /// `op` and `open` messages allowed.
    ops: TokenBucket,
    outbound: Outbound,
    /// This connection's ops on their way to the sequencer, in order.
    submits: SubmitQueue,
    open: HashSet<DocId>,
    /// The document being opened, while the connection ends in the middle of its catch-up: its
    /// subscription is registered already and must be ended too.
    opening: Option<DocId>,
    /// This session's `presence` messages on their way to the documents; dropped with the session,
    /// which then leaves every document it was present in.
    presence: PresenceOutlet,
    state: Arc<GatewayState>,
}

impl Session {
    /// The connection's main loop. Returns the close frame to send, if any.
    async fn run(&mut self, socket: &mut WebSocket, inbound: &mut Inbound) -> End {
        let idle = self.state.config.idle_timeout;
        let mut idle_deadline = Instant::now() + idle;
        loop {
            // Not biased: neither a flood of outgoing frames nor of incoming messages starves the other.
            tokio::select! {
                _ = inbound.overloaded.cancelled() => return self.overloaded(socket).await,
                _ = self.state.drain.closing().cancelled() => {
                    return Some((close_code::SERVICE_RESTART, "the gateway is restarting; reconnect"));
                }
                _ = sleep_until(self.expiry) => {
                    let error = ProtocolError::new(
                        ErrorCode::Unauthorized,
                        "the token expired; send `auth` with a fresh token before it does, or reconnect with one",
                    );
                    return self.unauthorized(socket, error).await;
                }
                Some(frame) = inbound.frames.recv() => {
                    if let Some(end) = self.write_queued(socket, inbound, frame).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    let error = ProtocolError::bad_request(format!("no message for {} s; closing", idle.as_secs()));
                    let _ = send(socket, &error.into(), self.state.config.write_timeout).await;
                    return Some((close_code::POLICY, "idle"));
                }
                message = socket.recv() => {
                    idle_deadline = Instant::now() + idle;
                    let reply = match message {
                        None | Some(Ok(Message::Close(_))) => return None,
                        Some(Err(e)) => {
                            read_error(socket, e, &self.state).await;
                            return None;
                        }
                        Some(Ok(Message::Text(text))) => match ClientMessage::parse(&text) {
                            Ok(ClientMessage::Open { doc, since, presence }) => match self.admit_open(&doc) {
                                Err(refusal) => Some(refusal.into()),
                                Ok(()) => match self.open_while_writing(socket, inbound, doc.clone(), since).await {
                                    Ok(reply) => {
                                        self.take_part_on_open(&doc, presence);
                                        reply
                                    }
                                    Err(end) => return end,
                                },
                            },
                            Ok(ClientMessage::Auth { token }) => match self.reauthenticate(&token).await {
                                Ok(reply) => Some(reply),
                                Err(error) => return self.unauthorized(socket, error).await,
                            },
                            Ok(message) => self.on_message(message).await,
                            Err(e) => Some(e.into()),
                        },
                        Some(Ok(Message::Binary(_))) => Some(binary_frame().into()),
                        Some(Ok(_)) => None, // WebSocket-level ping and pong
                    };
                    // Replies take the same queue as everything else, so they never overtake a
                    // snapshot, catch-up or live version queued before them.
                    if let Some(reply) = reply {
                        crate::error_counts::count(&reply);
                        if self.outbound.push(reply.to_json().into()).is_err() {
                            return self.overloaded(socket).await;
                        }
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes, all within the
    /// write timeout: a client that does not read is overloaded.
    async fn write_queued(
        &self,
        socket: &mut WebSocket,
        inbound: &mut Inbound,
        first: Utf8Bytes,
    ) -> Option<End> {
        let write = async {
            inbound.written(&first);
            socket.feed(Message::Text(first)).await?;
            let mut frames = 1;
            for _ in 1..WRITE_BATCH {
                let Ok(frame) = inbound.frames.try_recv() else { break };
                inbound.written(&frame);
                socket.feed(Message::Text(frame)).await?;
                frames += 1;
            }
            metrics::counter!("tandem_gateway_frames_sent_total").increment(frames);
            socket.flush().await
        };
        match tokio::time::timeout(self.state.config.write_timeout, write).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(None),
            Err(_) => Some(self.overloaded(socket).await),
        }
    }

    async fn overloaded(&self, socket: &mut WebSocket) -> End {
        metrics::counter!("tandem_gateway_overloaded_total").increment(1);
        let error = ProtocolError::new(
            ErrorCode::Overloaded,
            format!(
                "the connection fell behind by more than {} messages or {} bytes; reconnect and open with since",
                self.state.config.outbound_queue, self.state.config.outbound_queue_bytes
            ),
        );
        let _ = send(socket, &error.into(), self.state.config.write_timeout).await;
        Some((close_code::OVERLOADED, "overloaded"))
    }

    /// Opens a document while still writing queued frames: the catch-up of a long history is read
    /// from the store in this task (see [`crate::hub::Hubs::subscribe`]) and goes through this
    /// connection's own queue, which must keep draining for the open to finish.
    async fn open_while_writing(
        &mut self,
        socket: &mut WebSocket,
        inbound: &mut Inbound,
        doc: DocId,
        since: Option<u64>,
    ) -> Result<Option<ServerMessage>, End> {
        let write_timeout = self.state.config.write_timeout;
        self.opening = Some(doc.clone());
        let result = self.open_writing(socket, inbound, doc, since, write_timeout).await;
        if result.is_ok() {
            self.opening = None;
        }
        result
    }

    async fn open_writing(
        &mut self,
        socket: &mut WebSocket,
        inbound: &mut Inbound,
        doc: DocId,
        since: Option<u64>,
        write_timeout: Duration,
    ) -> Result<Option<ServerMessage>, End> {
        let open = self.open(doc, since);
        tokio::pin!(open);
        loop {
            tokio::select! {
                result = &mut open => return Ok(result.err().map(Into::into)),
                Some(frame) = inbound.frames.recv() => {
                    let written = tokio::time::timeout(write_timeout, async {
                        inbound.written(&frame);
                        socket.send(Message::Text(frame)).await
                    });
                    match written.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(None),
                        Err(_) => return Err(Some((close_code::OVERLOADED, "overloaded"))),
                    }
                }
            }
        }
    }

    /// An `open` with `presence: true` that succeeded takes part in the document's presence at once,
    /// as a `presence` without a selection would: the current presences follow the open's answer.
    fn take_part_on_open(&mut self, doc: &DocId, wanted: bool) {
        if wanted && self.open.contains(doc) {
            self.presence.update(PresenceUpdate { doc: doc.clone(), state: PresenceState::default() });
        }
    }

    /// Handles one client message other than `open`; returns the direct reply, if any.
    async fn on_message(&mut self, message: ClientMessage) -> Option<ServerMessage> {
        match message {
            ClientMessage::Hello { .. } => {
                Some(ProtocolError::bad_request("hello was already received").into())
            }
            ClientMessage::Ping => Some(ServerMessage::Pong),
            ClientMessage::Open { doc, since, presence } => match self.admit_open(&doc) {
                Ok(()) => {
                    let reply = self.open(doc.clone(), since).await.err().map(Into::into);
                    self.take_part_on_open(&doc, presence);
                    reply
                }
                Err(refusal) => Some(refusal.into()),
            },
            ClientMessage::Auth { .. } => unreachable!("auth is handled by the connection loop"),
            ClientMessage::Close { doc } => {
                if self.open.remove(&doc) {
                    self.state.hubs.unsubscribe(&doc, self.conn).await;
                    self.presence.leave(&doc);
                }
                None
            }
            ClientMessage::Presence(update) => {
                if !self.open.contains(&update.doc) {
                    let e = ProtocolError::bad_request(format!(
                        "document {} is not open on this connection; open it before sending presence",
                        update.doc
                    ));
                    return Some(e.with_doc(update.doc).into());
                }
                // Checked and relayed by the document's presence task, which answers a refusal.
                self.presence.update(update);
                None
            }
            ClientMessage::Op { doc, seq, base, op } => {
                if !self.open.contains(&doc) {
                    let e =
                        ProtocolError::bad_request(format!("document {doc} is not open on this connection"));
                    return Some(e.with_doc(doc).with_seq(seq).into());
                }
                if !self.principal.allows(Access::Write, &doc) {
                    metrics::counter!("tandem_gateway_forbidden_total").increment(1);
                    let message = format!(
                        "user {:?} may not write document {doc}; the op was dropped and its seq is not used",
                        self.principal.user
                    );
                    return Some(
                        ProtocolError::new(ErrorCode::Forbidden, message).with_doc(doc).with_seq(seq).into(),
                    );
                }
                if !self.ops.try_take() {
                    return Some(self.rate_limited().with_doc(doc).with_seq(seq).into());
                }
                // Queued, not awaited: the loop goes on writing and reading while the op log takes
                // its time (see [`crate::submit_queue`]).
                let submission = Submission {
                    // The op's author: the connection's user ("anonymous" without authentication).
                    author: self.principal.user.clone(),
                    delete_document: false,
                    doc,
                    client: self.client.clone(),
                    seq,
                    base,
                    op,
                };
                self.submits.push(submission).err().map(Into::into)
            }
        }
    }

    /// The checks before an `open` costs anything: read permission and the message rate.
    fn admit_open(&mut self, doc: &DocId) -> Result<(), ProtocolError> {
        if !self.principal.allows(Access::Read, doc) {
            metrics::counter!("tandem_gateway_forbidden_total").increment(1);
            let message = format!("user {:?} may not read document {doc}", self.principal.user);
            return Err(ProtocolError::new(ErrorCode::Forbidden, message).with_doc(doc.clone()));
        }
        if !self.ops.try_take() {
            return Err(self.rate_limited().with_doc(doc.clone()));
        }
        Ok(())
    }

    fn rate_limited(&self) -> ProtocolError {
        metrics::counter!("tandem_gateway_rate_limited_total").increment(1);
        let (rate, burst) = (self.state.config.ops_per_second, self.state.config.ops_burst);
        ProtocolError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {rate} ops and opens per second (bursts of {burst}) on this connection; \
                 the message was dropped: send it again later"
            ),
        )
    }

    /// `auth`: the session continues on a fresh token of the same user. A token that does not verify
    /// (or names another user) ends the session; documents the new token may not read are closed.
    async fn reauthenticate(&mut self, token: &BearerToken) -> Result<ServerMessage, ProtocolError> {
        let Authentication::Jwt(verifier) = &self.state.config.auth else {
            return Ok(ProtocolError::bad_request(
                "this server runs without authentication; `auth` is not needed",
            )
            .into());
        };
        let principal = verifier.verify(token.expose()).map_err(|e| {
            metrics::counter!("tandem_gateway_auth_failures_total").increment(1);
            ProtocolError::new(ErrorCode::Unauthorized, format!("the token of `auth` was refused: {e}"))
        })?;
        if principal.user != self.principal.user {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("the token of `auth` is for another user than {:?}", self.principal.user),
            ));
        }
        self.expiry = expiry_deadline(&self.state.config.auth, &principal);
        self.principal = principal;
        let withdrawn: Vec<DocId> =
            self.open.iter().filter(|doc| !self.principal.allows(Access::Read, doc)).cloned().collect();
        for doc in withdrawn {
            self.open.remove(&doc);
            self.state.hubs.unsubscribe(&doc, self.conn).await;
            self.presence.leave(&doc);
            let message = format!("the new token does not allow reading document {doc}; it was closed");
            let error = ServerMessage::from(ProtocolError::new(ErrorCode::Forbidden, message).with_doc(doc));
            crate::error_counts::count(&error);
            if self.outbound.push(error.to_json().into()).is_err() {
                break; // the connection is overloaded and ends anyway
            }
        }
        let expires = self.principal.expires_at.unwrap_or_default();
        Ok(ServerMessage::Authed { user: self.principal.user.clone(), expires })
    }

    /// Ends the session as `unauthorized` (4401).
    async fn unauthorized(&self, socket: &mut WebSocket, error: ProtocolError) -> End {
        debug!(conn = self.conn, user = %self.principal.user, reason = %error.message, "session unauthorized");
        let _ = send(socket, &error.into(), self.state.config.write_timeout).await;
        Some((close_code::UNAUTHORIZED, "unauthorized"))
    }

    async fn open(&mut self, doc: DocId, since: Option<u64>) -> Result<(), ProtocolError> {
        if self.open.contains(&doc) {
            return Err(ProtocolError::bad_request(format!(
                "document {doc} is already open; close it first"
            ))
            .with_doc(doc));
        }
        let limit = self.state.config.max_open_documents;
        if self.open.len() >= limit {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("this connection has {limit} documents open; the limit is {limit}"),
            )
            .with_doc(doc));
        }
        self.state.hubs.subscribe(&doc, self.conn, self.client.clone(), self.outbound.clone(), since).await?;
        self.open.insert(doc);
        Ok(())
    }
}
