//! The value of a `tandem.presence` record (`tandem.v1.PresenceRecord`) and its conversion to and
//! from [`tandem_protocol::presence::PresenceRecord`], validated like a client's `presence` message.

use prost::Message;
use tandem_protocol::presence::{PresenceRecord, PresenceState, Selection, MAX_NAME_CHARS};
use tandem_protocol::{ClientId, DocId};

use crate::proto;
use crate::ConvertError;

/// Longest user id or gateway id accepted in a presence record, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The value of a `tandem.presence` record.
pub fn encode_presence(record: &PresenceRecord) -> Vec<u8> {
    let state = record.state.as_ref().map(|state| proto::PresenceState {
        selection: state.selection.map(|s| proto::PresenceSelection {
            version: s.version,
            anchor: s.anchor,
            head: s.head,
        }),
        name: state.name.clone().unwrap_or_default(),
        colour: state.colour.clone().unwrap_or_default(),
    });
    proto::PresenceRecord {
        doc: record.doc.as_str().to_owned(),
        client: record.client.as_str().to_owned(),
        user: record.user.clone(),
        gateway: record.gateway.clone(),
        connection: record.connection,
        sent_at_ms: record.sent_at_ms,
        state,
    }
    .encode_to_vec()
}

/// Reads the value of a `tandem.presence` record back, validated: a record no gateway would write
/// (bad ids, an oversized name) is an error naming the field, never a frame sent to clients.
pub fn decode_presence(bytes: &[u8]) -> Result<PresenceRecord, ConvertError> {
    let wire = proto::PresenceRecord::decode(bytes)
        .map_err(|e| ConvertError::Decode { message: "tandem.v1.PresenceRecord", reason: e.to_string() })?;
    let doc = DocId::parse(&wire.doc)
        .map_err(|e| ConvertError::InvalidId { field: "doc".into(), reason: e.to_string() })?;
    let client = ClientId::parse(&wire.client)
        .map_err(|e| ConvertError::InvalidId { field: "client".into(), reason: e.to_string() })?;
    let user = bounded("user", wire.user)?;
    let gateway = bounded("gateway", wire.gateway)?;
    let state = match wire.state {
        None => None,
        Some(state) => {
            let name = optional(state.name);
            if let Some(name) = &name {
                let chars = name.chars().count();
                if chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                    return Err(ConvertError::Invalid {
                        field: "state.name".into(),
                        reason: format!(
                            "must be 1 to {MAX_NAME_CHARS} characters without control characters"
                        ),
                    });
                }
            }
            let colour = optional(state.colour);
            if colour.as_ref().is_some_and(|c| c.len() > 7) {
                return Err(ConvertError::Invalid {
                    field: "state.colour".into(),
                    reason: "must be #rgb or #rrggbb".into(),
                });
            }
            let selection =
                state.selection.map(|s| Selection { version: s.version, anchor: s.anchor, head: s.head });
            Some(PresenceState { selection, name, colour })
        }
    };
    Ok(PresenceRecord {
        doc,
        client,
        user,
        gateway,
        connection: wire.connection,
        sent_at_ms: wire.sent_at_ms,
        state,
    })
}

fn bounded(field: &str, value: String) -> Result<String, ConvertError> {
    if value.len() > MAX_ID_BYTES {
        return Err(ConvertError::Invalid {
            field: field.to_owned(),
            reason: format!("{} bytes is over the maximum of {MAX_ID_BYTES}", value.len()),
        });
    }
    Ok(value)
}

fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: Option<PresenceState>) -> PresenceRecord {
        PresenceRecord {
            doc: DocId::parse("team/notes").unwrap(),
            client: ClientId::parse("c-1").unwrap(),
            user: "ann".into(),
            gateway: "gw-1".into(),
            connection: 7,
            sent_at_ms: 1_767_225_600_000,
            state,
        }
    }

    #[test]
    fn records_round_trip() {
        let full = PresenceState {
            selection: Some(Selection { version: 12, anchor: 3, head: 9 }),
            name: Some("Ann Ó".into()),
            colour: Some("#a0b1c2".into()),
        };
        for state in [None, Some(PresenceState::default()), Some(full)] {
            let r = record(state);
            assert_eq!(decode_presence(&encode_presence(&r)).unwrap(), r);
        }
    }

    #[test]
    fn malformed_records_name_the_field() {
        let mut wire = proto::PresenceRecord::decode(&*encode_presence(&record(None))).unwrap();
        wire.client = "not a client id".into();
        let e = decode_presence(&wire.encode_to_vec()).unwrap_err();
        assert_eq!(e.field(), Some("client"));
        wire.client = "c".into();
        wire.state = Some(proto::PresenceState { name: "x".repeat(65), ..Default::default() });
        assert_eq!(decode_presence(&wire.encode_to_vec()).unwrap_err().field(), Some("state.name"));
        assert!(matches!(decode_presence(b"\xff\xff"), Err(ConvertError::Decode { .. })));
    }
}
