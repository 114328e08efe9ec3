//! Events a client reports to an observer ([`ClientOptions::events`](super::ClientOptions::events)).
//!
//! The load generator times the server with them: an edit's `seq` (from
//! [`DocHandle::splice`](super::DocHandle::splice)) meets its [`ClientEvent::Acked`], and the version
//! named there meets the [`ClientEvent::RemoteOp`] of the same version at the other clients of the
//! document. The instant is taken when the background task handles the frame, before anything
//! else is done with it, so the observer's own delays do not count.

use std::time::Instant;

use tandem_protocol::{ClientId, DocId};

/// Something a client took from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// This client's op `seq` on `doc` was acknowledged as committed at `version`.
    Acked {
        /// The document.
        doc: DocId,
        /// The acknowledged op's `seq`: every edit that `splice` reported with it is committed.
        seq: u64,
        /// The version the op was committed as.
        version: u64,
        /// When the client took the ack.
        at: Instant,
    },
    /// Another client's op, committed as `version` of `doc`, was applied to the local text.
    RemoteOp {
        /// The document.
        doc: DocId,
        /// The version the op was committed as: the author learns the same number from its ack.
        version: u64,
        /// The client that wrote the op, as the server names it: the author's client id scoped by its
        /// user (what the author's [`Client::author_id`](super::Client::author_id) returns).
        author: ClientId,
        /// When the client took the op.
        at: Instant,
    },
}
