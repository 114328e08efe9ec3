//! The one error type of the client crate.

use tandem_ot::OtError;
use tandem_protocol::{DocId, ErrorCode};

/// Everything that can go wrong in the client, split so that callers (tests, the load generator) can
/// tell a bad local edit from a misbehaving server from a lost connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An operation does not fit the text it is applied to or cannot be composed or transformed. For a
    /// local edit this is the caller's mistake; for a received op it means the server broke the protocol.
    #[error(transparent)]
    Ot(#[from] OtError),

    /// A version arrived out of order. PROTOCOL.md promises every version exactly once, in order, so
    /// this is a delivery-guarantee violation by the server.
    #[error("document {doc}: expected version {expected}, received {got}")]
    VersionGap { doc: DocId, expected: u64, got: u64 },

    /// An `ack` that does not name the op in flight (or arrives when nothing is in flight): the server
    /// broke the protocol.
    #[error("document {doc}: ack for seq {seq}, but the op in flight is {in_flight:?}")]
    UnexpectedAck { doc: DocId, seq: u64, in_flight: Option<u64> },

    /// The document is not open in this client (never opened, closed, or dropped after an error).
    #[error("document {0} is not open")]
    NotOpen(DocId),

    /// The document is already open in this client; one client holds one subscription per document.
    #[error("document {0} is already open")]
    AlreadyOpen(DocId),

    /// The document is being reloaded after the server rejected an op (`invalid_op`) or a delivery
    /// violation; edits are refused until the fresh snapshot arrives, since they would be discarded.
    #[error("document {0} is being reloaded after a rejected op; retry the edit once it is open")]
    Resyncing(DocId),

    /// The server answered a request with an `error`.
    #[error("server error {code}: {message}")]
    Server { code: ErrorCode, message: String },

    /// The server does not speak this client's protocol version.
    #[error("the server does not support protocol version {version}: {0}", version = tandem_protocol::PROTOCOL_VERSION)]
    UnsupportedProtocol(String),

    /// The token was refused (HTTP 401 on the upgrade, or close code 4401 during the session).
    #[error("unauthorized: {0}")]
    Unauthorized(String),

    /// The server did not complete the `hello`/`welcome` handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),

    /// The URL or an option cannot be used to connect.
    #[error("invalid connection setting: {0}")]
    InvalidConfig(String),

    /// The WebSocket failed (connect, read or write). Boxed: the error carries a whole HTTP response.
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),

    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// A saved document state ([`crate::SavedDocument`]) that does not fit together, or a state file
    /// that cannot be read as one: refused rather than guessed at, because resending a wrong op under
    /// a `seq` the server already knows would lose or garble edits.
    #[error("saved state of document {doc} refused: {problem}")]
    SavedState { doc: DocId, problem: String },

    /// The state folder ([`crate::ClientOptions::state_dir`]) cannot be used: not writable, a file
    /// that cannot be read, or held by another client.
    #[error("state dir {}: {problem}", path.display())]
    StateDir { path: std::path::PathBuf, problem: String },

    /// The connection is gone for good: reconnect is off, the server refused us, or the client was shut
    /// down. The text says why.
    #[error("client closed: {0}")]
    Closed(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}
