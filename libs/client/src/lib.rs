//! The Rust client of Tandem.
//!
//! - [`DocumentClient`]: the pure client state machine of PROTOCOL.md for one document (no I/O), used
//!   directly by simulations and underneath the connection;
//! - [`Client`] and [`DocHandle`]: a WebSocket connection with handshake, reconnect with `since` and
//!   resubmission (to the same gateway or, with [`ClientOptions::fallback_urls`], to the next one), and
//!   reload after `invalid_op`, for integration tests and the load generator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tandem_client::ClientError> {
//! use std::time::Duration;
//! use tandem_client::{Client, ClientOptions, DocId};
//!
//! let options = ClientOptions { token: Some("dev-token".into()), ..ClientOptions::default() };
//! let client = Client::connect("ws://127.0.0.1:8080/v1/ws", options).await?;
//! let doc = client.open(&DocId::parse("notes/today").expect("valid id")).await?;
//! doc.insert(0, "hello")?; // applied locally at once, sent by the background task
//! doc.wait_synced(Duration::from_secs(5)).await?; // acknowledged by the server
//! assert!(client.errors().is_empty());
//! # Ok(())
//! # }
//! ```

mod connection;
mod document;
mod error;

pub use connection::{
    Client, ClientEvent, ClientOptions, DocHandle, ErrorRecord, ErrorSource, Stats, MAX_ERROR_RECORDS,
};
pub use document::{DocumentClient, OutgoingOp};
pub use error::ClientError;
/// Re-exported so that users of the client need not name the crates it is built on.
pub use tandem_ot::Operation;
pub use tandem_protocol::{ClientId, DocId, ErrorCode};
