//! The vocabulary every Tandem component shares.
//!
//! - [`ids`]: validated document and client ids;
//! - [`ErrorCode`] and [`ProtocolError`]: the error codes of the client protocol (docs/PROTOCOL.md);
//! - [`ws`]: the WebSocket messages, parsed into validated domain types at the edge;
//! - [`records`]: what travels between the gateway, the bus, the sequencer and the store;
//! - [`presence`]: where other participants' selections are (ephemeral, never in the event log).

mod error;
pub mod ids;
pub mod presence;
pub mod records;
pub mod ws;

pub use error::{ErrorCode, ProtocolError};
pub use ids::{ClientId, DocId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;
