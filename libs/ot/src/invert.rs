//! Inverting an operation: the undo of a change.

use ropey::Rope;

use crate::walk::byte_offset;
use crate::{Component, Operation, OtError};

impl Operation {
    /// Returns the operation that undoes this one: `inverse.apply(self.apply(base_text)) ==
    /// base_text`.
    ///
    /// An operation does not carry the text it deletes, so the base text it was applied to is
    /// needed to restore it. The base must have this operation's base length, otherwise
    /// [`OtError::BaseLengthMismatch`]. As in ot.js `TextOperation.invert`, retains stay, inserts
    /// become deletes and deletes become inserts of the deleted text; the result is normalised.
    pub fn invert(&self, base_text: &str) -> Result<Operation, OtError> {
        self.check_base(base_text.chars().count())?;
        let mut inverse = Operation::new();
        let mut rest = base_text;
        for component in self.components() {
            match component {
                Component::Retain(n) => {
                    rest = &rest[byte_offset(rest, *n)..];
                    inverse.retain(*n);
                }
                Component::Insert(s) => {
                    inverse.delete(s.chars().count());
                }
                Component::Delete(n) => {
                    let (deleted, tail) = rest.split_at(byte_offset(rest, *n));
                    inverse.insert(deleted);
                    rest = tail;
                }
            }
        }
        Ok(inverse)
    }

    /// Like [`Operation::invert`], reading the deleted text from a rope, so that the server can
    /// build an undo for a large document without copying it to a string.
    pub fn invert_rope(&self, base: &Rope) -> Result<Operation, OtError> {
        self.check_base(base.len_chars())?;
        let mut inverse = Operation::new();
        let mut pos = 0;
        for component in self.components() {
            match component {
                Component::Retain(n) => {
                    inverse.retain(*n);
                    pos += n;
                }
                Component::Insert(s) => {
                    inverse.delete(s.chars().count());
                }
                Component::Delete(n) => {
                    inverse.insert(&String::from(base.slice(pos..pos + n)));
                    pos += n;
                }
            }
        }
        Ok(inverse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("test operations are valid")
    }

    fn check(text: &str, o: serde_json::Value, expected: serde_json::Value) {
        let o = op(o);
        let inverse = o.invert(text).expect("op fits");
        assert_eq!(inverse.to_json(), expected, "invert({o}) on {text:?}");
        assert_eq!(o.invert_rope(&Rope::from_str(text)).as_ref(), Ok(&inverse));
        let changed = o.apply(text).expect("op fits");
        assert_eq!(inverse.apply(&changed).as_deref(), Ok(text));
    }

    #[test]
    fn protocol_examples_invert() {
        check("hello", json!([5, " world"]), json!([5, -6]));
        check("hello", json!([1, -4, "ey"]), json!([1, "ello", -2]));
    }

    #[test]
    fn restores_emoji_and_combining_marks() {
        check("a😀👍🏽e\u{301}", json!([1, -3, 1, -1]), json!([1, "😀👍🏽", 1, "\u{301}"]));
        check("👍🏽", json!([1, "x", -1]), json!([1, "\u{1F3FD}", -1]));
        check("", json!([]), json!([]));
        check("", json!(["abc"]), json!([-3]));
    }

    #[test]
    fn base_length_mismatch() {
        let o = op(json!([2, -1]));
        let err = Err(OtError::BaseLengthMismatch { expected: 3, actual: 2 });
        assert_eq!(o.invert("ab"), err);
        assert_eq!(o.invert_rope(&Rope::from_str("😀😀")), err);
    }
}
