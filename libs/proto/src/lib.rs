//! Tandem's protobuf schemas (`proto/tandem/v1`) and the code every crate speaking them shares.
//!
//! - [`proto`]: the generated types of package `tandem.v1`: the Kafka record messages, the gRPC
//!   request and response messages, and, with feature `grpc`, the gRPC client and server;
//! - [`convert`]: conversions between those wire types and the domain types of
//!   [`tandem_protocol::records`], with validation at the edge, and the byte encodings of the Kafka
//!   record values ([`encode_submission`] for `tandem.ops`, [`encode_record`] for `tandem.events`).
//!
//! W3C trace context travels beside these messages (gRPC metadata, Kafka record headers) and is
//! handled by `tandem_telemetry::propagation`; the one message field for it is
//! `SubmitRequest.traceparents`, since one Submit stream carries the ops of many traces.
//!
//! This crate sits below both tandem-bus (whose Kafka implementation writes and reads the record
//! values) and tandem-rpc (the gRPC edge, which itself depends on tandem-bus for `OpSubmitter`):
//! it depends on neither, so each can use it without a cycle.

pub mod convert;
/// The `tandem.presence` record value (ephemeral presence between gateways).
pub mod presence;

/// Generated from `proto/tandem/v1/*.proto`. Wire types: code past the edge uses the domain types
/// that [`convert`] produces.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/tandem.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/tandem/v1/*.proto`, for gRPC server
/// reflection (the gateway serves it next to the Documents API).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));

pub use convert::{decode_record, decode_submission, encode_record, encode_submission, ConvertError};
