//! WebSocket messages of PROTOCOL.md: one JSON object per text frame, tagged by `"type"`.
//!
//! [`ClientMessage::parse`] turns a frame into a validated message or a [`ProtocolError`] naming the
//! problem; [`ServerMessage`] serialises to exactly what PROTOCOL.md shows.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_ot::Operation;

use crate::presence::PresenceUpdate;
use crate::{ClientId, DocId, ErrorCode, ProtocolError};

/// A message from a client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Hello {
        protocol: u64,
        client: ClientId,
    },
    Open {
        doc: DocId,
        since: Option<u64>,
        /// Take part in the document's presence from the start: the answer to the `open` is followed
        /// by the current presences (docs/PROTOCOL.md, "Presence"). Optional, false by default.
        presence: bool,
    },
    Op {
        doc: DocId,
        seq: u64,
        base: u64,
        op: Operation,
    },
    Close {
        doc: DocId,
    },
    Ping,
    /// A fresh token for this session, before the current one expires.
    Auth {
        token: BearerToken,
    },
    /// Where this session's selection is in an open document (see [`crate::presence`]).
    Presence(PresenceUpdate),
}

/// A token as it travels in an `auth` message. Its `Debug` output is redacted, so a logged message
/// never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the verifier.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl ClientMessage {
    /// Parses one text frame. Unknown fields are ignored; an unknown `type`, a missing or ill-typed
    /// field, or a bad id is a `bad_request` whose message names the field.
    pub fn parse(frame: &str) -> Result<Self, ProtocolError> {
        // The frame of nearly every message a server reads, parsed straight into its fields. Anything
        // else (another type, a field missing or of the wrong type, a duplicate key) takes the
        // general path below, which names the problem; for a well-formed `op` both give the same.
        if let Ok(op) = serde_json::from_str::<raw::TypedOp<'_>>(frame) {
            if op.kind == "op" {
                return op_message(&op.doc, op.seq, op.base, &op.op);
            }
        }
        let value: Value = serde_json::from_str(frame)
            .map_err(|e| ProtocolError::bad_request(format!("message is not valid JSON: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(ProtocolError::bad_request("message must be a JSON object"));
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(ProtocolError::bad_request("field `type` must be a string")),
            None => return Err(ProtocolError::bad_request("message has no `type` field")),
        };
        let value = Value::Object(fields);
        match kind.as_str() {
            "hello" => {
                let m: raw::Hello = field_errors(value)?;
                let client = ClientId::parse(&m.client)
                    .map_err(|e| ProtocolError::bad_request(format!("field `client`: {e}")))?;
                Ok(ClientMessage::Hello { protocol: m.protocol, client })
            }
            "open" => {
                let m: raw::Open = field_errors(value)?;
                let doc = parse_doc(&m.doc)?;
                if let Some(since) = m.since {
                    check_safe("since", since).map_err(|e| e.with_doc(doc.clone()))?;
                }
                Ok(ClientMessage::Open { doc, since: m.since, presence: m.presence })
            }
            "op" => {
                let m: raw::Op = field_errors(value)?;
                op_message(&m.doc, m.seq, m.base, &m.op)
            }
            "close" => {
                let m: raw::Close = field_errors(value)?;
                Ok(ClientMessage::Close { doc: parse_doc(&m.doc)? })
            }
            "ping" => Ok(ClientMessage::Ping),
            "auth" => {
                let m: raw::Auth = field_errors(value)?;
                if m.token.is_empty() {
                    return Err(ProtocolError::bad_request("field `token` is empty"));
                }
                Ok(ClientMessage::Auth { token: BearerToken(m.token) })
            }
            "presence" => {
                let Value::Object(fields) = value else { unreachable!("the message was an object") };
                Ok(ClientMessage::Presence(PresenceUpdate::from_fields(fields)?))
            }
            other => Err(ProtocolError::bad_request(format!(
                "unknown message type {other:?}; expected hello, open, op, close, ping, auth or presence"
            ))),
        }
    }
}

/// The largest integer every JSON client reads exactly (2^53 - 1, JavaScript's `MAX_SAFE_INTEGER`).
/// Versions, `seq` and `since` above it could not be echoed back faithfully, so they are refused.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn check_safe(field: &str, value: u64) -> Result<(), ProtocolError> {
    if value > MAX_SAFE_INTEGER {
        return Err(ProtocolError::bad_request(format!(
            "field `{field}` is {value}; the limit is {MAX_SAFE_INTEGER} (2^53 - 1)"
        )));
    }
    Ok(())
}

fn field_errors<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, ProtocolError> {
    serde_json::from_value(value).map_err(|e| ProtocolError::bad_request(format!("bad message: {e}")))
}

/// An `op` message from its fields, checked.
fn op_message(doc: &str, seq: u64, base: u64, op: &Value) -> Result<ClientMessage, ProtocolError> {
    let doc = parse_doc(doc)?;
    check_safe("seq", seq).map_err(|e| e.with_doc(doc.clone()))?;
    check_safe("base", base).map_err(|e| e.with_doc(doc.clone()).with_seq(seq))?;
    let op = Operation::from_json(op).map_err(|e| {
        ProtocolError::bad_request(format!("field `op`: {e}")).with_doc(doc.clone()).with_seq(seq)
    })?;
    Ok(ClientMessage::Op { doc, seq, base, op })
}

fn parse_doc(doc: &str) -> Result<DocId, ProtocolError> {
    DocId::parse(doc).map_err(|e| ProtocolError::bad_request(format!("field `doc`: {e}")))
}

/// The shapes of the client messages before validation.
mod raw {
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct Hello {
        pub protocol: u64,
        pub client: String,
    }

    #[derive(Deserialize)]
    pub struct Open {
        pub doc: String,
        pub since: Option<u64>,
        #[serde(default)]
        pub presence: bool,
    }

    /// The fields of the server's `ack` and `op` frames (see [`super::ServerMessage::parse`]).
    #[derive(Deserialize)]
    pub struct LiveFrame<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: std::borrow::Cow<'a, str>,
        pub doc: crate::DocId,
        pub version: u64,
        pub seq: Option<u64>,
        pub client: Option<crate::ClientId>,
        pub op: Option<tandem_ot::Operation>,
    }

    /// An `op` frame with its `type`, borrowing the strings that need no unescaping.
    #[derive(Deserialize)]
    pub struct TypedOp<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        pub doc: std::borrow::Cow<'a, str>,
        pub seq: u64,
        pub base: u64,
        pub op: Value,
    }

    #[derive(Deserialize)]
    pub struct Op {
        pub doc: String,
        pub seq: u64,
        pub base: u64,
        pub op: Value,
    }

    #[derive(Deserialize)]
    pub struct Close {
        pub doc: String,
    }

    #[derive(Deserialize)]
    pub struct Auth {
        pub token: String,
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        protocol: u64,
        /// The id the client chose in `hello`.
        client: ClientId,
        user: String,
        /// The id this session's ops carry as `client` in other clients' `op` frames: the chosen id
        /// scoped by the user. `None` from a server older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<ClientId>,
    },
    Snapshot {
        doc: DocId,
        version: u64,
        text: String,
    },
    Opened {
        doc: DocId,
        version: u64,
    },
    Op {
        doc: DocId,
        version: u64,
        client: ClientId,
        op: Operation,
    },
    Ack {
        doc: DocId,
        seq: u64,
        version: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        doc: Option<DocId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Pong,
    /// The answer to `auth`: the session now runs on the new token, until `expires` (Unix seconds).
    Authed {
        user: String,
        expires: u64,
    },
}

impl ServerMessage {
    /// Parses one frame from the server. `ack` and `op`, nearly every frame a client reads, are read
    /// straight into their fields; every other frame, or one of these that does not fit (a field
    /// missing or of the wrong type, a duplicate key), goes through the tagged enum, which buffers
    /// the whole frame first and names the problem. Both accept and refuse the same frames.
    pub fn parse(frame: &str) -> serde_json::Result<Self> {
        if let Ok(m) = serde_json::from_str::<raw::LiveFrame<'_>>(frame) {
            match (m.kind.as_ref(), m.seq, m.client, m.op) {
                ("ack", Some(seq), _, _) => {
                    return Ok(ServerMessage::Ack { doc: m.doc, seq, version: m.version })
                }
                ("op", _, Some(client), Some(op)) => {
                    return Ok(ServerMessage::Op { doc: m.doc, version: m.version, client, op })
                }
                _ => {}
            }
        }
        serde_json::from_str(frame)
    }

    /// The JSON text of the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages contain only serialisable values")
    }
}

impl From<ProtocolError> for ServerMessage {
    fn from(e: ProtocolError) -> Self {
        ServerMessage::Error { code: e.code, message: e.message, doc: e.doc, seq: e.seq }
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
