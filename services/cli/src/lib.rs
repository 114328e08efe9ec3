//! `tandem`: the command-line client of Tandem's Documents API (`proto/tandem/v1/documents.proto`),
//! for people and scripts: read a document at any version, page through its history, apply an
//! edit, watch it live, name and list versions, diff two versions, export and import a history,
//! delete a document.
//!
//! - [`args`]: the command line (clap; the address and token also from `TANDEM_*` variables);
//! - [`connect`]: the gRPC channel, the bearer token, a time limit per answer;
//! - [`commands`]: what each subcommand does;
//! - [`edit`]: the op of `apply` (JSON as on the WebSocket, or a position and a text/length);
//! - [`output`]: text and JSON forms of events, watch lines and checkpoints;
//! - [`transfer`]: reading an export for `import`, and its request ids;
//! - [`error`]: failures, with the gRPC code and the server's `ApiError`, and their exit codes.

pub mod args;
pub mod commands;
pub mod connect;
pub mod edit;
pub mod error;
pub mod output;
pub mod transfer;
