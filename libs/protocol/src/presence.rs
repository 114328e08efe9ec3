//! Presence (docs/PROTOCOL.md, "Presence"): who is in a document and where their selection is.
//!
//! Presence is ephemeral: it never enters the event log. A client says where its selection is with
//! a `presence` message ([`PresenceUpdate`], parsed by [`crate::ws::ClientMessage::parse`]); the
//! gateway stamps the authenticated user and the scoped client id, and relays it to the document's
//! other participants as a [`PresenceFrame`]. Between gateways it travels as a [`PresenceRecord`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ws::MAX_SAFE_INTEGER;
use crate::{ClientId, DocId, ProtocolError};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A selection in the text of one version: `anchor` is where it started, `head` where the caret is
/// (equal for a plain caret). Both count Unicode scalar values and are at most the length of the
/// text of `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selection {
    pub version: u64,
    pub anchor: u64,
    pub head: u64,
}

/// What a participant shows of itself: where its selection is (none: it is in the document without
/// one, a reader say), and how others should draw it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PresenceState {
    pub selection: Option<Selection>,
    /// 1 to [`MAX_NAME_CHARS`] characters, no control characters.
    pub name: Option<String>,
    /// A CSS hex colour: `#rgb` or `#rrggbb`.
    pub colour: Option<String>,
}

/// A client's `presence` message, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub doc: DocId,
    pub state: PresenceState,
}

impl PresenceUpdate {
    /// Validates the fields of a `presence` message (its `type` already removed). Unknown fields,
    /// among them a `user` or `client` a client may try to claim, are ignored: the server stamps both.
    pub fn from_fields(mut fields: Map<String, Value>) -> Result<Self, ProtocolError> {
        let doc = match fields.remove("doc") {
            Some(Value::String(doc)) => {
                DocId::parse(&doc).map_err(|e| ProtocolError::bad_request(format!("field `doc`: {e}")))?
            }
            Some(_) => return Err(ProtocolError::bad_request("field `doc` must be a string")),
            None => return Err(ProtocolError::bad_request("bad message: missing field `doc`")),
        };
        let with_doc = |e: ProtocolError| e.with_doc(doc.clone());
        let version = count(&mut fields, "version").map_err(with_doc)?;
        let anchor = count(&mut fields, "anchor").map_err(with_doc)?;
        let head = count(&mut fields, "head").map_err(with_doc)?;
        let selection = match (version, anchor, head) {
            (Some(version), Some(anchor), Some(head)) => Some(Selection { version, anchor, head }),
            (None, None, None) => None,
            _ => return Err(with_doc(ProtocolError::bad_request(
                "fields `version`, `anchor` and `head` go together: give all three, or none for no selection",
            ))),
        };
        let name = text(&mut fields, "name").map_err(with_doc)?;
        if let Some(name) = &name {
            check_name(name).map_err(with_doc)?;
        }
        let colour = text(&mut fields, "colour").map_err(with_doc)?;
        if let Some(colour) = &colour {
            check_colour(colour).map_err(with_doc)?;
        }
        Ok(Self { doc, state: PresenceState { selection, name, colour } })
    }

    /// The JSON text of the message, as a client sends it.
    pub fn to_json(&self) -> String {
        let mut message = serde_json::json!({"type": "presence", "doc": self.doc});
        let fields = message.as_object_mut().expect("an object");
        if let Some(s) = self.state.selection {
            fields.insert("version".into(), s.version.into());
            fields.insert("anchor".into(), s.anchor.into());
            fields.insert("head".into(), s.head.into());
        }
        if let Some(name) = &self.state.name {
            fields.insert("name".into(), name.clone().into());
        }
        if let Some(colour) = &self.state.colour {
            fields.insert("colour".into(), colour.clone().into());
        }
        message.to_string()
    }
}

/// A non-negative integer field, at most 2^53 - 1; `None` when absent or `null`.
fn count(fields: &mut Map<String, Value>, name: &str) -> Result<Option<u64>, ProtocolError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(value) if value <= MAX_SAFE_INTEGER => Ok(Some(value)),
            _ => Err(ProtocolError::bad_request(format!(
                "field `{name}` is {n}; it must be an integer from 0 to {MAX_SAFE_INTEGER} (2^53 - 1)"
            ))),
        },
        Some(_) => Err(ProtocolError::bad_request(format!("field `{name}` must be an integer"))),
    }
}

fn text(fields: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ProtocolError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtocolError::bad_request(format!("field `{name}` must be a string"))),
    }
}

fn check_name(name: &str) -> Result<(), ProtocolError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ProtocolError::bad_request(format!(
            "field `name` must be 1 to {MAX_NAME_CHARS} characters, got {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ProtocolError::bad_request("field `name` may not contain control characters"));
    }
    Ok(())
}

fn check_colour(colour: &str) -> Result<(), ProtocolError> {
    let hex = colour.strip_prefix('#').unwrap_or("");
    if !matches!(hex.len(), 3 | 6) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ProtocolError::bad_request(format!(
            "field `colour` must be a CSS hex colour, #rgb or #rrggbb; got {:?}",
            colour.chars().take(16).collect::<String>()
        )));
    }
    Ok(())
}

/// What the server sends a participant about the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresenceFrame {
    /// `client` (another session's `welcome.author`, as `op` frames name it) of `user` is in the
    /// document, with its selection in the text of `version` (none: no selection).
    Presence {
        doc: DocId,
        client: ClientId,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        colour: Option<String>,
    },
    /// `client` left the document (closed it, disconnected, or its gateway went silent).
    PresenceLeft { doc: DocId, client: ClientId },
}

impl PresenceFrame {
    /// The frame telling others where `client` of `user` is.
    pub fn presence(doc: &DocId, client: &ClientId, user: &str, state: &PresenceState) -> Self {
        let selection = state.selection;
        PresenceFrame::Presence {
            doc: doc.clone(),
            client: client.clone(),
            user: user.to_owned(),
            version: selection.map(|s| s.version),
            anchor: selection.map(|s| s.anchor),
            head: selection.map(|s| s.head),
            name: state.name.clone(),
            colour: state.colour.clone(),
        }
    }

    /// The JSON text of the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("presence frames contain only serialisable values")
    }
}

/// One session's presence in a document as its gateway announces it to the other gateways (Kafka
/// topic `tandem.presence`; schema `tandem.v1.PresenceRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub doc: DocId,
    /// The scoped client id (`welcome.author`).
    pub client: ClientId,
    /// The authenticated user, stamped by the gateway.
    pub user: String,
    /// The announcing gateway's id, unique to one run of that process.
    pub gateway: String,
    /// The connection on that gateway: a session on two connections has one presence, and only the
    /// connection that set it can end it.
    pub connection: u64,
    /// When the gateway sent it (Unix milliseconds, its clock): how old a record read late is.
    pub sent_at_ms: u64,
    /// `None`: the session left the document.
    pub state: Option<PresenceState>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ws::ClientMessage;
    use crate::ErrorCode;

    fn parse(value: Value) -> Result<PresenceUpdate, ProtocolError> {
        match ClientMessage::parse(&value.to_string())? {
            ClientMessage::Presence(update) => Ok(update),
            other => panic!("not a presence message: {other:?}"),
        }
    }

    fn refusal(value: Value) -> String {
        let e = parse(value).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        e.message
    }

    #[test]
    fn a_presence_message_parses_and_ignores_a_claimed_user() {
        let update = parse(json!({"type": "presence", "doc": "d", "version": 3, "anchor": 1, "head": 4,
            "name": "Ann", "colour": "#a0b1c2", "user": "mallory", "client": "someone-else"}))
        .unwrap();
        assert_eq!(update.doc.as_str(), "d");
        assert_eq!(update.state.selection, Some(Selection { version: 3, anchor: 1, head: 4 }));
        assert_eq!(update.state.name.as_deref(), Some("Ann"));
        assert_eq!(update.state.colour.as_deref(), Some("#a0b1c2"));
        let bare = parse(json!({"type": "presence", "doc": "d"})).unwrap();
        assert_eq!(bare.state, PresenceState::default());
        assert_eq!(parse(serde_json::from_str(&update.to_json()).unwrap()).unwrap(), update);
    }

    #[test]
    fn bad_presence_fields_name_the_problem_and_the_limit() {
        assert!(refusal(json!({"type": "presence"})).contains("missing field `doc`"));
        assert!(
            refusal(json!({"type": "presence", "doc": "d", "anchor": 1, "head": 1})).contains("go together")
        );
        assert!(refusal(json!({"type": "presence", "doc": "d", "version": 1, "anchor": -1, "head": 0}))
            .contains("field `anchor`"));
        assert!(refusal(
            json!({"type": "presence", "doc": "d", "version": 9007199254740992u64, "anchor": 0, "head": 0})
        )
        .contains("9007199254740991"));
        assert!(refusal(json!({"type": "presence", "doc": "d", "name": "x".repeat(65)}))
            .contains("1 to 64 characters, got 65"));
        assert!(refusal(json!({"type": "presence", "doc": "d", "name": "a\u{7}"})).contains("control"));
        assert!(refusal(json!({"type": "presence", "doc": "d", "colour": "red"})).contains("#rrggbb"));
        let e = parse(json!({"type": "presence", "doc": "d", "colour": 5})).unwrap_err();
        assert_eq!(e.doc.map(|d| d.as_str().to_owned()).as_deref(), Some("d"));
    }

    #[test]
    fn frames_match_the_protocol() {
        let doc = DocId::parse("d").unwrap();
        let client = ClientId::parse("c").unwrap();
        let state = PresenceState {
            selection: Some(Selection { version: 2, anchor: 0, head: 1 }),
            name: Some("Ann".into()),
            colour: None,
        };
        assert_eq!(
            PresenceFrame::presence(&doc, &client, "ann", &state).to_json(),
            r#"{"type":"presence","doc":"d","client":"c","user":"ann","version":2,"anchor":0,"head":1,"name":"Ann"}"#
        );
        let left = PresenceFrame::PresenceLeft { doc, client };
        assert_eq!(left.to_json(), r#"{"type":"presence_left","doc":"d","client":"c"}"#);
    }
}
