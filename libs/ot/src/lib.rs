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
//! What an operation can do, one module each: [`Operation::apply`] and [`Operation::apply_to_rope`]
//! change a text; [`Operation::compose`] merges consecutive ops; [`Operation::transform`] merges
//! concurrent ones; [`Operation::invert`] undoes one; [`Operation::transform_index`] moves a cursor;
//! [`Operation::from_patch`] builds an op from "at `pos`, delete `n`, insert `s`". Every operation
//! these return is in normal form.
//!
//! `vectors/ot-vectors.json` holds test vectors shared with the JavaScript client (see
//! `vectors/README.md`); `tests/traces.rs` replays real editing histories.
//!
//! This crate is pure: no I/O, no async.

mod apply;
mod compose;
mod cursor;
mod error;
mod invert;
mod operation;
mod transform;
mod walk;

pub use error::OtError;
pub use operation::{Component, Operation, MAX_COUNT};
