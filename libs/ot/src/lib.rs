//! The operational-transformation algebra of Tandem.
//!
//! An [`Operation`] walks a whole base text from start to end with three kinds of [`Component`]:
//! retain `n` characters, insert a string, delete `n` characters. Characters are Unicode scalar
//! values (Rust `char`s), never bytes or UTF-16 units, so that every client counts the same way.
//!
//! The semantics follow ot.js `TextOperation`, including its tie-break: in `transform(a, b)`, when
//! both insert at the same position, `a`'s insert ends up first. The server transforms each incoming
//! op against each committed op after its base, one at a time (`incoming = transform(incoming,
//! committed).0`), and a client computes `transform(own_pending, received)`, so both sides agree.
//!
//! This crate is pure: no I/O, no async.

mod error;
mod operation;

pub use error::OtError;
pub use operation::{Component, Operation, MAX_COUNT};
