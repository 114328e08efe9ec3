//! Applying an operation to a text, as a `&str` or as a rope.

use ropey::Rope;

use crate::walk::byte_offset;
use crate::{Component, Operation, OtError};

impl Operation {
    /// Returns the text this operation produces from `text`.
    ///
    /// The operation must walk exactly the whole text: a base length that differs from the text's
    /// length (in Unicode scalar values) means the operation was made for another version, and
    /// applying it anyway would corrupt the document, so it is refused with
    /// [`OtError::BaseLengthMismatch`].
    pub fn apply(&self, text: &str) -> Result<String, OtError> {
        self.check_base(text.chars().count())?;
        let inserted_bytes: usize =
            self.components().iter().map(|c| if let Component::Insert(s) = c { s.len() } else { 0 }).sum();
        let mut out = String::with_capacity(text.len() + inserted_bytes);
        let mut rest = text;
        for component in self.components() {
            match component {
                Component::Retain(n) => {
                    let (kept, tail) = rest.split_at(byte_offset(rest, *n));
                    out.push_str(kept);
                    rest = tail;
                }
                Component::Insert(s) => out.push_str(s),
                Component::Delete(n) => rest = &rest[byte_offset(rest, *n)..],
            }
        }
        Ok(out)
    }

    /// Applies this operation to `rope` in place.
    ///
    /// This is what a server holding a large document uses: it edits the rope where the operation
    /// changes it, in time proportional to the number of components (times a logarithm), without
    /// copying the whole text. On error the rope is left unchanged.
    pub fn apply_to_rope(&self, rope: &mut Rope) -> Result<(), OtError> {
        self.check_base(rope.len_chars())?;
        let mut pos = 0;
        for component in self.components() {
            match component {
                Component::Retain(n) => pos += n,
                Component::Insert(s) => {
                    rope.insert(pos, s);
                    pos += s.chars().count();
                }
                Component::Delete(n) => rope.remove(pos..pos + n),
            }
        }
        Ok(())
    }

    /// Refuses a text whose length is not this operation's base length.
    pub(crate) fn check_base(&self, actual: usize) -> Result<(), OtError> {
        if self.base_len() == actual {
            Ok(())
        } else {
            Err(OtError::BaseLengthMismatch { expected: self.base_len(), actual })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("test operations are valid")
    }

    fn both(o: &Operation, text: &str) -> Result<String, OtError> {
        let on_str = o.apply(text);
        let mut rope = Rope::from_str(text);
        let on_rope = o.apply_to_rope(&mut rope).map(|()| rope.to_string());
        assert_eq!(on_str, on_rope, "str and rope disagree for {o} on {text:?}");
        if on_str.is_err() {
            assert_eq!(rope.to_string(), text, "a failed apply must leave the rope alone");
        }
        on_str
    }

    #[test]
    fn protocol_examples() {
        assert_eq!(both(&op(json!([5, " world"])), "hello").as_deref(), Ok("hello world"));
        assert_eq!(both(&op(json!([1, -4, "ey"])), "hello").as_deref(), Ok("hey"));
    }

    #[test]
    fn empty_text_and_empty_op() {
        assert_eq!(both(&Operation::new(), "").as_deref(), Ok(""));
        assert_eq!(both(&op(json!(["abc"])), "").as_deref(), Ok("abc"));
        assert_eq!(both(&op(json!([-3])), "abc").as_deref(), Ok(""));
        assert_eq!(both(&Operation::identity(3), "abc").as_deref(), Ok("abc"));
    }

    #[test]
    fn counts_scalar_values_not_bytes() {
        // "👍🏽" is two scalar values (thumbs up + skin tone); "é" here is e + combining acute.
        let text = "a😀👍🏽e\u{301}中";
        assert_eq!(text.chars().count(), 7);
        assert_eq!(both(&op(json!([1, -1, "x", 5])), text).as_deref(), Ok("ax👍🏽e\u{301}中"));
        assert_eq!(both(&op(json!([3, -1, 3])), text).as_deref(), Ok("a😀👍e\u{301}中"));
        assert_eq!(both(&op(json!([5, -1, "\u{300}", 1])), text).as_deref(), Ok("a😀👍🏽e\u{300}中"));
        assert_eq!(both(&op(json!([6, "文", 1, "!"])), text).as_deref(), Ok("a😀👍🏽e\u{301}文中!"));
    }

    #[test]
    fn base_length_mismatch() {
        let err = OtError::BaseLengthMismatch { expected: 5, actual: 4 };
        assert_eq!(both(&op(json!([5, "!"])), "hell"), Err(err));
        let err = OtError::BaseLengthMismatch { expected: 5, actual: 6 };
        assert_eq!(both(&op(json!([5, "!"])), "hello!"), Err(err));
        // Five bytes but two characters: lengths are never bytes.
        let err = OtError::BaseLengthMismatch { expected: 5, actual: 2 };
        assert_eq!(both(&op(json!([-5])), "a😀"), Err(err));
        let err = OtError::BaseLengthMismatch { expected: 0, actual: 1 };
        assert_eq!(both(&Operation::new(), "a"), Err(err));
    }
}
