//! Opening a WebSocket to the gateway and the `hello`/`welcome` handshake; the JSON of client messages.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tandem_protocol::ws::{ClientMessage, ServerMessage};
use tandem_protocol::{ClientId, ErrorCode, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;

/// The socket type the client runs on.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes read from the socket at a time. Frames larger than this are read in several reads; the
/// gateway uses the same size.
const READ_BUFFER: usize = 4 << 10;

/// Close code the server uses when the token expired during the session.
pub(crate) const CLOSE_UNAUTHORIZED: u16 = 4401;

/// The text frame of a client message. [`ClientMessage`] only parses (it is the server's input type),
/// so the client writes the JSON shapes of PROTOCOL.md here.
pub(crate) fn encode(msg: &ClientMessage) -> String {
    let value = match msg {
        ClientMessage::Hello { protocol, client } => {
            json!({"type": "hello", "protocol": protocol, "client": client})
        }
        ClientMessage::Open { doc, since: Some(since), .. } => {
            json!({"type": "open", "doc": doc, "since": since})
        }
        ClientMessage::Open { doc, since: None, .. } => json!({"type": "open", "doc": doc}),
        ClientMessage::Op { doc, seq, base, op } => {
            json!({"type": "op", "doc": doc, "seq": seq, "base": base, "op": op})
        }
        ClientMessage::Close { doc } => json!({"type": "close", "doc": doc}),
        ClientMessage::Ping => json!({"type": "ping"}),
        ClientMessage::Auth { token } => json!({"type": "auth", "token": token.expose()}),
        ClientMessage::Presence(update) => return update.to_json(),
    };
    value.to_string()
}

/// Refuses a URL that no connection attempt could use (not a URL, not `ws`/`wss`, no host), with the
/// error [`connect`] would give, so that fallback URLs are checked before they are needed.
pub(crate) fn check_url(url: &str) -> Result<(), ClientError> {
    let request =
        url.into_client_request().map_err(|e| ClientError::InvalidConfig(format!("url {url:?}: {e}")))?;
    let uri = request.uri();
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(ClientError::InvalidConfig(format!("url {url:?}: the scheme must be ws or wss")));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ClientError::InvalidConfig(format!("url {url:?}: no host")));
    }
    Ok(())
}

/// Connects, authenticates on the upgrade and completes the handshake, all within `timeout`. Returns
/// the socket and the id this client's ops carry in other clients' `op` frames (`welcome.author`: its
/// id scoped by its user; its own id from a server that does not say).
pub(crate) async fn connect(
    url: &str,
    token: Option<&str>,
    client: &ClientId,
    timeout: Duration,
) -> Result<(Ws, ClientId), ClientError> {
    tokio::time::timeout(timeout, connect_inner(url, token, client))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn connect_inner(
    url: &str,
    token: Option<&str>,
    client: &ClientId,
) -> Result<(Ws, ClientId), ClientError> {
    let mut request =
        url.into_client_request().map_err(|e| ClientError::InvalidConfig(format!("url {url:?}: {e}")))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidConfig("the token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    // Nagle off: an op is one small frame the server should see now, not after the previous
    // frame's ack. A small read buffer: tungstenite zero-fills the whole buffer before every read,
    // and its 128 KiB default made that memset the client's largest cost under load.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let connected = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await;
    let (mut ws, _response) = connected.map_err(|e| match e {
        tungstenite::Error::Http(response) if response.status() == StatusCode::UNAUTHORIZED => {
            ClientError::Unauthorized("the server refused the token (HTTP 401)".into())
        }
        tungstenite::Error::Url(e) => ClientError::InvalidConfig(format!("url {url:?}: {e}")),
        other => other.into(),
    })?;
    let hello = ClientMessage::Hello { protocol: PROTOCOL_VERSION, client: client.clone() };
    ws.send(Message::text(encode(&hello))).await?;
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| ClientError::Handshake("connection closed before welcome".into()))??;
        match frame {
            Message::Text(text) => {
                return match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Welcome { author, .. }) => {
                        Ok((ws, author.unwrap_or_else(|| client.clone())))
                    }
                    Ok(ServerMessage::Error { code: ErrorCode::UnsupportedProtocol, message, .. }) => {
                        Err(ClientError::UnsupportedProtocol(message))
                    }
                    Ok(ServerMessage::Error { code: ErrorCode::Unauthorized, message, .. }) => {
                        Err(ClientError::Unauthorized(message))
                    }
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        Err(ClientError::Handshake(format!("server answered hello with {code}: {message}")))
                    }
                    Ok(other) => Err(ClientError::Handshake(format!("expected welcome, got {other:?}"))),
                    Err(e) => Err(ClientError::Handshake(format!("unreadable answer to hello: {e}"))),
                };
            }
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or_default();
                return Err(match code {
                    CLOSE_UNAUTHORIZED => ClientError::Unauthorized(reason),
                    c if c == u16::from(CloseCode::Protocol) => ClientError::UnsupportedProtocol(reason),
                    _ => ClientError::Handshake(format!("closed before welcome (code {code}): {reason}")),
                });
            }
            Message::Binary(_) => {
                return Err(ClientError::Handshake("binary frame instead of welcome".into()))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_ot::Operation;
    use tandem_protocol::DocId;

    #[test]
    fn encoded_messages_parse_back() {
        let doc = DocId::parse("a/b").unwrap();
        let messages = [
            ClientMessage::Hello { protocol: 1, client: ClientId::parse("c1").unwrap() },
            ClientMessage::Open { doc: doc.clone(), since: Some(4), presence: false },
            ClientMessage::Open { doc: doc.clone(), since: None, presence: false },
            ClientMessage::Op {
                doc: doc.clone(),
                seq: 2,
                base: 3,
                op: Operation::from_patch(2, 1, 1, "é").unwrap(),
            },
            ClientMessage::Close { doc },
            ClientMessage::Ping,
        ];
        for m in messages {
            assert_eq!(ClientMessage::parse(&encode(&m)).unwrap(), m);
        }
        let open = ClientMessage::Open { doc: DocId::parse("d").unwrap(), since: None, presence: false };
        assert!(!encode(&open).contains("since"), "absent since is omitted, not null");
    }
}
