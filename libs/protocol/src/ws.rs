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
                let doc = parse_doc(&m.doc)?;
                check_safe("seq", m.seq).map_err(|e| e.with_doc(doc.clone()))?;
                check_safe("base", m.base).map_err(|e| e.with_doc(doc.clone()).with_seq(m.seq))?;
                let op = Operation::from_json(&m.op).map_err(|e| {
                    ProtocolError::bad_request(format!("field `op`: {e}"))
                        .with_doc(doc.clone())
                        .with_seq(m.seq)
                })?;
                Ok(ClientMessage::Op { doc, seq: m.seq, base: m.base, op })
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
mod tests {
    use super::*;

    fn err(frame: &str) -> String {
        let e = ClientMessage::parse(frame).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        e.message
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"hello","protocol":1,"client":"c1","extra":true}"#).unwrap(),
            ClientMessage::Hello { protocol: 1, client: ClientId::parse("c1").unwrap() }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"open","doc":"d","since":3}"#).unwrap(),
            ClientMessage::Open { doc: DocId::parse("d").unwrap(), since: Some(3), presence: false }
        );
        let op = ClientMessage::parse(r#"{"type":"op","doc":"d","seq":1,"base":0,"op":["hi"]}"#).unwrap();
        let ClientMessage::Op { seq: 1, base: 0, op, .. } = op else { panic!("{op:?}") };
        assert_eq!(op.to_json(), serde_json::json!(["hi"]));
        assert_eq!(ClientMessage::parse(r#"{"type":"ping"}"#).unwrap(), ClientMessage::Ping);
        let auth = ClientMessage::parse(r#"{"type":"auth","token":"secret-token"}"#).unwrap();
        assert_eq!(auth, ClientMessage::Auth { token: BearerToken::new("secret-token") });
        assert!(!format!("{auth:?}").contains("secret-token"), "the token must not reach a log");
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"close","doc":"d"}"#),
            Ok(ClientMessage::Close { .. })
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(err("not json").contains("not valid JSON"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"doc":"d"}"#).contains("no `type`"));
        assert!(err(r#"{"type":"dance"}"#).contains("unknown message type \"dance\""));
        assert!(err(r#"{"type":"open"}"#).contains("missing field `doc`"));
        assert!(err(r#"{"type":"auth"}"#).contains("missing field `token`"));
        assert!(err(r#"{"type":"auth","token":""}"#).contains("`token` is empty"));
        assert!(err(r#"{"type":"open","doc":"a b"}"#).contains("field `doc`"));
        assert!(err(r#"{"type":"op","doc":"d","seq":"1","base":0,"op":[]}"#).contains("invalid type"));
        let e = ClientMessage::parse(r#"{"type":"op","doc":"d","seq":4,"base":0,"op":[1.5]}"#).unwrap_err();
        assert!(e.message.contains("field `op`"), "{}", e.message);
        assert_eq!(e.seq, Some(4));
        assert!(err(r#"{"type":"op","doc":"d","seq":9007199254740992,"base":0,"op":[]}"#)
            .contains("the limit is 9007199254740991"));
        assert!(err(r#"{"type":"open","doc":"d","since":18446744073709551615}"#).contains("field `since`"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(err(&deep).contains("recursion limit"));
    }

    #[test]
    fn server_messages_match_the_protocol() {
        let doc = DocId::parse("d").unwrap();
        let m = ServerMessage::Ack { doc: doc.clone(), seq: 2, version: 7 };
        assert_eq!(m.to_json(), r#"{"type":"ack","doc":"d","seq":2,"version":7}"#);
        let e: ServerMessage = ProtocolError::bad_request("x").into();
        assert_eq!(e.to_json(), r#"{"type":"error","code":"bad_request","message":"x"}"#);
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
        let authed = ServerMessage::Authed { user: "alice".to_owned(), expires: 1_767_225_600 };
        assert_eq!(authed.to_json(), r#"{"type":"authed","user":"alice","expires":1767225600}"#);
    }
}
