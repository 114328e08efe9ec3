//! Validation of request fields, and the wire form of what the API answers with. Every refusal is a
//! `bad_request` that names the field and the rule.

use tandem_auth::scoped_client_id;
use tandem_proto::convert::operation_to_proto;
use tandem_proto::proto::{self, HistoryEvent};
use tandem_protocol::records::CommittedEvent;
use tandem_protocol::{ClientId, DocId};
use tonic::Status;

use super::errors::bad_request;

/// Longest checkpoint name, in characters.
pub const MAX_CHECKPOINT_NAME_CHARS: usize = 128;

pub fn doc(value: &str) -> Result<DocId, Status> {
    DocId::parse(value).map_err(|e| bad_request(format!("field `doc`: {e}")))
}

/// A request id: 1 to 64 characters of `[A-Za-z0-9._~-]` (the grammar of a client id).
pub fn request_id(value: &str) -> Result<ClientId, Status> {
    ClientId::parse(value).map_err(|_| {
        bad_request(format!(
            "field `request_id` must be 1 to {} characters of A-Z a-z 0-9 . _ ~ - (a UUID does), got {:?}",
            tandem_protocol::ids::MAX_CLIENT_ID_CHARS,
            truncated(value)
        ))
    })
}

/// A checkpoint name: 1 to 128 characters, none of them a control character.
pub fn checkpoint_name(value: &str) -> Result<String, Status> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_CHECKPOINT_NAME_CHARS {
        return Err(bad_request(format!(
            "field `name` must be 1 to {MAX_CHECKPOINT_NAME_CHARS} characters, got {chars}"
        )));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(bad_request(format!("field `name` may not contain control characters, found {bad:?}")));
    }
    Ok(value.to_owned())
}

/// The client id of an ApplyEdit: one per (author, request id), so a retry of the same request is
/// the same (client, seq 1), which the sequencer applies at most once.
///
/// It is [`scoped_client_id`] of a user part that is the author followed by a NUL and `api`. No
/// token's user can contain a NUL (the verifier refuses control characters in `sub`), so no
/// WebSocket session, which is scoped by its bare user, can ever arrive at the id of an API request,
/// whatever ids either chooses; and two authors never share one (the user part is length-prefixed).
pub fn edit_client(author: &str, request_id: &ClientId) -> ClientId {
    scoped_client_id(&format!("{author}\0api"), request_id)
}

/// The client id a DeleteDocument is submitted under (deletions are not deduplicated; the id only
/// says where it came from), in a namespace of its own like [`edit_client`]'s.
pub fn delete_client(author: &str) -> ClientId {
    let chosen = ClientId::parse("delete").expect("a valid client id");
    scoped_client_id(&format!("{author}\0api-delete"), &chosen)
}

/// An event as the API shows it.
pub fn history_event(event: &CommittedEvent, committed_at_ms: i64) -> HistoryEvent {
    HistoryEvent {
        version: event.version,
        author: event.author.clone(),
        client: event.client.to_string(),
        seq: event.seq,
        committed_at_ms,
        op: operation_to_proto(&event.op),
    }
}

pub fn checkpoint(checkpoint: tandem_store::Checkpoint) -> proto::Checkpoint {
    proto::Checkpoint {
        doc: checkpoint.doc.to_string(),
        name: checkpoint.name,
        version: checkpoint.version,
        author: checkpoint.author,
        created_at_ms: checkpoint.created_at_ms,
    }
}

/// At most 80 characters of a refused value, for a message.
fn truncated(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_follow_the_client_id_grammar() {
        assert!(request_id("0b9e2f0c-5a4e-4c1e-9d7a-3f1b2c4d5e6f").is_ok());
        assert!(request_id(&"a".repeat(64)).is_ok());
        for bad in ["", &"a".repeat(65), "has space", "slash/no", "é"] {
            let refused = request_id(bad).expect_err(bad);
            assert!(
                refused.message().contains("request_id") && refused.message().contains("64"),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn checkpoint_names_are_1_to_128_characters_without_control_characters() {
        assert_eq!(checkpoint_name("v1.0 — shipped ✓").expect("valid"), "v1.0 — shipped ✓");
        assert!(checkpoint_name(&"é".repeat(128)).is_ok(), "characters, not bytes");
        assert!(checkpoint_name("").is_err());
        assert!(checkpoint_name(&"x".repeat(129)).unwrap_err().message().contains("128"));
        assert!(checkpoint_name("tab\there").unwrap_err().message().contains("control"));
    }

    /// Decision 5: an API request can never share a client id with a WebSocket session (which is
    /// scoped by its bare user), nor with another author's request of the same id.
    #[test]
    fn edit_clients_are_apart_from_sessions_and_from_other_authors() {
        let id = ClientId::parse("r1").expect("id");
        let alice = edit_client("alice", &id);
        assert_eq!(alice, edit_client("alice", &id), "a retry is the same client");
        assert_ne!(alice, edit_client("bob", &id));
        assert_ne!(alice, edit_client("alice", &ClientId::parse("r2").expect("id")));
        assert_ne!(alice, scoped_client_id("alice", &id), "a WebSocket session of alice that chose r1");
        assert_ne!(alice, delete_client("alice"));
        assert_eq!(alice.as_str().len(), 43);
    }
}
