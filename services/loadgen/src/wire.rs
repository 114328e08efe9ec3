//! The bare protocol, for presets that time or hold connections without the client library in the
//! way (`stalled-readers`, `history`): the upgrade request and reading until a message type.

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The upgrade request for `url`, with the bearer token if there is one.
pub fn request(url: &str, token: Option<&str>) -> anyhow::Result<Request> {
    let mut request = url.into_client_request().with_context(|| format!("url {url:?}"))?;
    if let Some(token) = token {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a header value")?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// Reads frames until one of type `kind` and returns it; an `error`, a close or the end fails.
pub async fn read_until<S>(ws: &mut WebSocketStream<S>, kind: &str) -> anyhow::Result<Value>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = ws.next().await {
        let text = match frame.context("the connection failed")? {
            Message::Text(text) => text,
            Message::Close(close) => {
                anyhow::bail!("the gateway closed the connection before {kind}: {close:?}")
            }
            _ => continue,
        };
        let value: Value = serde_json::from_str(&text).context("a frame that is not JSON")?;
        match value["type"].as_str() {
            Some(t) if t == kind => return Ok(value),
            Some("error") => anyhow::bail!("expected {kind}, got {value}"),
            _ => {}
        }
    }
    anyhow::bail!("the connection ended before {kind}")
}
