//! Tandem's gRPC edge between gateway and sequencer.
//!
//! - [`proto`]: the generated protobuf types, gRPC client and server of package `tandem.v1`;
//! - [`convert`]: conversions between those wire types and the domain types of
//!   [`tandem_protocol::records`], with validation at the edge, and the byte encodings of the Kafka
//!   record values;
//! - [`client`]: [`GrpcSubmitter`], the gateway's [`tandem_bus::OpSubmitter`] that hands ops to the
//!   sequencer service over long-lived gRPC streams;
//! - [`server`]: [`SequencerIngress`], the sequencer's gRPC service that appends the ops it receives
//!   to the op log, and [`serve`];
//! - [`trace_context`]: W3C trace context carried in gRPC metadata and request fields.
//!
//! [`proto`] and [`convert`] are defined in tandem-proto and re-exported here: the Kafka bus needs
//! them too, and this crate depends on tandem-bus (for `OpSubmitter`), so they cannot live here.

pub mod client;
mod error;
pub mod health;
pub mod server;
pub mod trace_context;

pub use tandem_proto::{convert, proto};

pub use client::{GrpcSubmitter, SubmitterOptions};
pub use convert::{decode_record, decode_submission, encode_record, encode_submission, ConvertError};
pub use error::RpcError;
pub use server::{serve, Caller, CallerAuth, CallerCheck, SequencerIngress};
