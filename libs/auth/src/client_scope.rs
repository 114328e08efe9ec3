//! Client ids scoped by their user.
//!
//! A client chooses its id in `hello`, and the sequencer deduplicates ops by (client, seq). Were that
//! id used as it is, any writer of a document could say `hello` with another user's id and send that
//! user's next `seq`: the victim would get the attacker's op as its own `ack`, and its real op would be
//! deduplicated away. So the id the sequencer and the event log see is never the chosen one but
//! [`scoped_client_id`] of (user, chosen id): the gateway scopes every session's id by the user its
//! token names, and the sequencer's gRPC ingress does the same for internal clients that call it with
//! a user token. Two users cannot arrive at the same id, whatever ids they choose.
//!
//! The scoped id is the SHA-256 of the user (length-prefixed, so no user name or id can borrow the
//! other's characters) and the chosen id, in unpadded base64url: 43 characters of the client-id
//! grammar, whatever the length of the user name, so it fits every place a client id goes. It is a
//! pure function of (user, chosen id): every gateway computes the same, so a session that reconnects
//! elsewhere with the same id is still deduplicated.

use base64::Engine;
use sha2::{Digest, Sha256};
use tandem_protocol::ClientId;

use crate::Principal;

/// Separates this use of SHA-256 from any other, and names the scheme's version.
const DOMAIN: &[u8] = b"tandem client id v1\0";

/// The id under which the ops of `user`'s session that chose `chosen` in `hello` are sequenced,
/// stored and shown to other clients.
pub fn scoped_client_id(user: &str, chosen: &ClientId) -> ClientId {
    let user_len = u64::try_from(user.len()).unwrap_or(u64::MAX);
    let digest = Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(user_len.to_be_bytes())
        .chain_update(user.as_bytes())
        .chain_update(chosen.as_str().as_bytes())
        .finalize();
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    ClientId::parse(&id).expect("43 characters of base64url are a valid client id")
}

impl Principal {
    /// [`scoped_client_id`] of this principal's user.
    pub fn scoped_client(&self, chosen: &ClientId) -> ClientId {
        scoped_client_id(&self.user, chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    #[test]
    fn the_same_user_and_id_always_give_the_same_scoped_id() {
        let a = scoped_client_id("alice", &id("desk"));
        assert_eq!(a, scoped_client_id("alice", &id("desk")));
        assert_eq!(a.as_str().len(), 43);
        assert_ne!(a, id("desk"));
        assert_eq!(
            Principal::anonymous().scoped_client(&id("desk")),
            scoped_client_id("anonymous", &id("desk"))
        );
    }

    #[test]
    fn users_and_ids_cannot_borrow_each_others_characters() {
        let pairs = [
            ("alice", "desk"),
            ("bob", "desk"),
            ("alice", "desk2"),
            ("alice.desk", "x"),
            ("alice", "desk.x"),
            ("alicedesk", "x"),
            ("alic", "edesk"),
            ("alice\0", "desk"),
            ("", "alicedesk"),
            ("alice-", "-desk"),
        ];
        let scoped: std::collections::HashSet<ClientId> =
            pairs.iter().map(|(user, chosen)| scoped_client_id(user, &id(chosen))).collect();
        assert_eq!(scoped.len(), pairs.len());
        // A long user name still gives an id of the usual length.
        assert_eq!(scoped_client_id(&"u".repeat(10_000), &id(&"c".repeat(64))).as_str().len(), 43);
    }
}
