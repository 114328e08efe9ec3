//! Shared machinery for walking operations piece by piece.
//!
//! Compose and transform consume two operations at different rates, splitting components as they
//! go. A [`Piece`] is a component that may have been partly consumed; inserts carry their character
//! count so that splitting a long insert many times stays linear instead of recounting each time.

use crate::{Component, Operation};

/// A component, or what is left of it after part was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Keep this many characters.
    Retain(usize),
    /// Insert this text, which has this many characters.
    Insert(&'a str, usize),
    /// Remove this many characters.
    Delete(usize),
}

/// Iterates over an operation's components as [`Piece`]s.
pub(crate) fn pieces(op: &Operation) -> impl Iterator<Item = Piece<'_>> {
    op.components().iter().map(|c| match c {
        Component::Retain(n) => Piece::Retain(*n),
        Component::Insert(s) => Piece::Insert(s, s.chars().count()),
        Component::Delete(n) => Piece::Delete(*n),
    })
}

/// The byte offset of the `n`-th character of `s`, or `s.len()` when `s` has `n` characters or
/// fewer. Callers check lengths beforehand, so the clamp is only a guard against panics.
pub(crate) fn byte_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// Splits `s` after its first `n` characters.
pub(crate) fn split_chars(s: &str, n: usize) -> (&str, &str) {
    s.split_at(byte_offset(s, n))
}

/// What remains of a count after `used` of it was consumed, or the next piece when nothing remains.
pub(crate) fn rest_count<'a>(
    n: usize,
    used: usize,
    make: fn(usize) -> Piece<'a>,
    next: &mut impl Iterator<Item = Piece<'a>>,
) -> Option<Piece<'a>> {
    if n > used {
        Some(make(n - used))
    } else {
        next.next()
    }
}

/// What remains of an insert after its first `used` characters were consumed, or the next piece.
pub(crate) fn rest_insert<'a>(
    s: &'a str,
    len: usize,
    used: usize,
    next: &mut impl Iterator<Item = Piece<'a>>,
) -> Option<Piece<'a>> {
    if len > used {
        Some(Piece::Insert(split_chars(s, used).1, len - used))
    } else {
        next.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts_scalar_values() {
        assert_eq!(split_chars("a😀e\u{301}b", 2), ("a😀", "e\u{301}b"));
        assert_eq!(split_chars("a😀e\u{301}b", 3), ("a😀e", "\u{301}b"));
        assert_eq!(split_chars("ab", 5), ("ab", ""));
        assert_eq!(split_chars("", 0), ("", ""));
    }
}
