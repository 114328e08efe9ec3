//! One client connection: the `hello` handshake, then requests from the client and frames queued by
//! the document tasks, until either side ends it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use tandem_bus::BusError;
use tandem_protocol::records::Submission;
use tandem_protocol::ws::{ClientMessage, ServerMessage};
use tandem_protocol::{ClientId, DocId, ErrorCode, ProtocolError, PROTOCOL_VERSION};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::hub::ConnId;
use crate::outbound::Outbound;
use crate::GatewayState;

/// WebSocket close codes used by the protocol.
mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const OVERLOADED: u16 = 4408;
}

/// Most queued frames written before flushing the socket.
const WRITE_BATCH: usize = 256;

/// Serves one upgraded socket to the end.
pub(crate) async fn serve(mut socket: WebSocket, state: Arc<GatewayState>) {
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let Some(client) = handshake(&mut socket, &state).await else { return };
    debug!(conn, client = %client, "connection open");
    let (outbound, frames, overloaded) = Outbound::new(state.config.outbound_queue);
    let mut session = Session { conn, client, outbound, open: HashSet::new(), state: state.clone() };
    let end = session.run(&mut socket, frames, overloaded).await;
    for doc in &session.open {
        state.hubs.unsubscribe(doc, conn).await;
    }
    if let Some((code, reason)) = end {
        let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
    debug!(conn, "connection closed");
}

/// Waits for `hello` and answers `welcome`; on anything else, says why and closes.
async fn handshake(socket: &mut WebSocket, state: &GatewayState) -> Option<ClientId> {
    let deadline = Instant::now() + state.config.handshake_timeout;
    let text = loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let message =
                    format!("no hello within {} s of connecting", state.config.handshake_timeout.as_secs());
                refuse(socket, ProtocolError::bad_request(message), close_code::POLICY).await;
                return None;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Err(e))) => {
                read_error(socket, e, state).await;
                return None;
            }
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Binary(_)))) => {
                refuse(socket, binary_frame(), close_code::POLICY).await;
                return None;
            }
            Ok(Some(Ok(_))) => continue, // WebSocket-level ping and pong
        }
    };
    match ClientMessage::parse(&text) {
        Ok(ClientMessage::Hello { protocol, client }) if protocol == PROTOCOL_VERSION => {
            let welcome =
                ServerMessage::Welcome { protocol, client: client.clone(), user: "anonymous".to_owned() };
            socket.send(Message::Text(welcome.to_json().into())).await.ok()?;
            Some(client)
        }
        Ok(ClientMessage::Hello { protocol, .. }) => {
            let message = format!(
                "protocol version {protocol} is not supported; this server speaks {PROTOCOL_VERSION}"
            );
            refuse(
                socket,
                ProtocolError::new(ErrorCode::UnsupportedProtocol, message),
                close_code::PROTOCOL_ERROR,
            )
            .await;
            None
        }
        Ok(_) => {
            refuse(socket, ProtocolError::bad_request("the first message must be hello"), close_code::POLICY)
                .await;
            None
        }
        Err(e) => {
            let e = ProtocolError::bad_request(format!("the first message must be hello: {}", e.message));
            refuse(socket, e, close_code::POLICY).await;
            None
        }
    }
}

/// Sends an error, then closes with `code`.
async fn refuse(socket: &mut WebSocket, error: ProtocolError, code: u16) {
    let reason = error.code.as_str();
    let _ = socket.send(Message::Text(ServerMessage::from(error.clone()).to_json().into())).await;
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// A read failed: when the frame was over the limit, say so (`too_large`, 1009) before closing.
async fn read_error(socket: &mut WebSocket, error: axum::Error, state: &GatewayState) {
    let text = error.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("limit exceeded") {
        let message = format!("the frame is larger than the limit of {} bytes", state.config.max_frame_bytes);
        refuse(socket, ProtocolError::new(ErrorCode::TooLarge, message), close_code::TOO_BIG).await;
    } else {
        debug!(error = %text, "socket read failed");
    }
}

fn binary_frame() -> ProtocolError {
    ProtocolError::bad_request("binary frames are not supported; send JSON in text frames")
}

struct Session {
    conn: ConnId,
    client: ClientId,
    outbound: Outbound,
    open: HashSet<DocId>,
    state: Arc<GatewayState>,
}

impl Session {
    /// The connection's main loop. Returns the close frame to send, if any.
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        mut frames: tokio::sync::mpsc::Receiver<Utf8Bytes>,
        overloaded: tokio_util::sync::CancellationToken,
    ) -> Option<(u16, &'static str)> {
        let idle = self.state.config.idle_timeout;
        let mut idle_deadline = Instant::now() + idle;
        loop {
            tokio::select! {
                biased;
                _ = overloaded.cancelled() => {
                    let error = ProtocolError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "the connection fell {} messages behind; reconnect and open with since",
                            self.state.config.outbound_queue
                        ),
                    );
                    let _ = socket.send(Message::Text(ServerMessage::from(error).to_json().into())).await;
                    return Some((close_code::OVERLOADED, "overloaded"));
                }
                _ = self.state.shutdown.cancelled() => return Some((close_code::GOING_AWAY, "server shutting down")),
                Some(frame) = frames.recv() => {
                    if write_batch(socket, frame, &mut frames).await.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    let error = ProtocolError::bad_request(format!("no message for {} s; closing", idle.as_secs()));
                    let _ = socket.send(Message::Text(ServerMessage::from(error).to_json().into())).await;
                    return Some((close_code::POLICY, "idle"));
                }
                message = socket.recv() => {
                    idle_deadline = Instant::now() + idle;
                    match message {
                        None | Some(Ok(Message::Close(_))) => return None,
                        Some(Err(e)) => {
                            read_error(socket, e, &self.state).await;
                            return None;
                        }
                        Some(Ok(Message::Text(text))) => {
                            if let Some(reply) = self.on_text(&text).await {
                                if socket.send(Message::Text(reply.to_json().into())).await.is_err() {
                                    return None;
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let reply = ServerMessage::from(binary_frame());
                            if socket.send(Message::Text(reply.to_json().into())).await.is_err() {
                                return None;
                            }
                        }
                        Some(Ok(_)) => {} // WebSocket-level ping and pong
                    }
                }
            }
        }
    }

    /// Handles one client message; returns the direct reply, if any.
    async fn on_text(&mut self, text: &str) -> Option<ServerMessage> {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(e) => return Some(e.into()),
        };
        match message {
            ClientMessage::Hello { .. } => {
                Some(ProtocolError::bad_request("hello was already received").into())
            }
            ClientMessage::Ping => Some(ServerMessage::Pong),
            ClientMessage::Open { doc, since } => self.open(doc, since).await.err().map(Into::into),
            ClientMessage::Close { doc } => {
                if self.open.remove(&doc) {
                    self.state.hubs.unsubscribe(&doc, self.conn).await;
                }
                None
            }
            ClientMessage::Op { doc, seq, base, op } => {
                if !self.open.contains(&doc) {
                    let e =
                        ProtocolError::bad_request(format!("document {doc} is not open on this connection"));
                    return Some(e.with_doc(doc).with_seq(seq).into());
                }
                let submission = Submission { doc: doc.clone(), client: self.client.clone(), seq, base, op };
                match self.state.submitter.submit(submission).await {
                    Ok(()) => None,
                    Err(e) => {
                        warn!(doc = %doc, seq, error = %e, "submit failed");
                        let message = match e {
                            BusError::Unavailable(_) => {
                                "the server is busy and cannot take the op now; resend it"
                            }
                            BusError::Closed => {
                                "the server is shutting down; resend the op after reconnecting"
                            }
                        };
                        Some(
                            ProtocolError::new(ErrorCode::Unavailable, message)
                                .with_doc(doc)
                                .with_seq(seq)
                                .into(),
                        )
                    }
                }
            }
        }
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

/// Writes `first` and whatever else is queued (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    frames: &mut tokio::sync::mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..WRITE_BATCH {
        match frames.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}
