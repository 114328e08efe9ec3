//! The sequencer: the one writer of every document.
//!
//! - [`document`]: the pure document state machine, (state, op) → (state, decision);
//! - [`partition`]: the loop that owns a partition of the op log, runs the state machine on each
//!   batch, group-commits to the event store and publishes what it committed;
//! - `op_trace`: the owner's spans of a traced op (`decide`, `commit`, `publish`).
//!
//! The single-process mode runs [`partition::run_partition`] over the in-process bus and the embedded
//! store; the distributed mode runs the same function over Kafka and Postgres.

pub mod document;
mod op_trace;
pub mod partition;

pub use document::{Decision, DocumentState, Fetched, Limits};
pub use partition::{run_partition, PartitionConfig, PartitionError};
