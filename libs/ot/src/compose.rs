//! Composing two consecutive operations into one.

use crate::walk::{pieces, rest_count, rest_insert, split_chars, Piece};
use crate::{Operation, OtError};

impl Operation {
    /// Returns one operation with the effect of applying `self` and then `next`.
    ///
    /// Clients use it to merge their pending edits into a single buffered op, and the server to
    /// squash history; `apply(apply(s, self), next) == apply(s, self.compose(next))` for every text
    /// `s` that `self` applies to. `next` must apply to what `self` produces, otherwise
    /// [`OtError::ComposeLengthMismatch`]. The algorithm is ot.js `TextOperation.compose`; the result
    /// is normalised.
    pub fn compose(&self, next: &Operation) -> Result<Operation, OtError> {
        let mismatch =
            OtError::ComposeLengthMismatch { first_target: self.target_len(), second_base: next.base_len() };
        if self.target_len() != next.base_len() {
            return Err(mismatch);
        }
        let mut out = Operation::new();
        let mut first = pieces(self);
        let mut second = pieces(next);
        let mut a = first.next();
        let mut b = second.next();
        loop {
            match (a, b) {
                (None, None) => break,
                // What `self` deleted is gone before `next` sees the text.
                (Some(Piece::Delete(n)), _) => {
                    out.delete(n);
                    a = first.next();
                }
                // What `next` inserts does not depend on `self`.
                (_, Some(Piece::Insert(s, _))) => {
                    out.insert(s);
                    b = second.next();
                }
                (Some(Piece::Retain(x)), Some(Piece::Retain(y))) => {
                    let m = x.min(y);
                    out.retain(m);
                    a = rest_count(x, m, Piece::Retain, &mut first);
                    b = rest_count(y, m, Piece::Retain, &mut second);
                }
                // `next` deletes text that `self` inserted: neither appears in the result.
                (Some(Piece::Insert(s, len)), Some(Piece::Delete(y))) => {
                    let m = len.min(y);
                    a = rest_insert(s, len, m, &mut first);
                    b = rest_count(y, m, Piece::Delete, &mut second);
                }
                (Some(Piece::Insert(s, len)), Some(Piece::Retain(y))) => {
                    let m = len.min(y);
                    out.insert(split_chars(s, m).0);
                    a = rest_insert(s, len, m, &mut first);
                    b = rest_count(y, m, Piece::Retain, &mut second);
                }
                (Some(Piece::Retain(x)), Some(Piece::Delete(y))) => {
                    let m = x.min(y);
                    out.delete(m);
                    a = rest_count(x, m, Piece::Retain, &mut first);
                    b = rest_count(y, m, Piece::Delete, &mut second);
                }
                // One side ran out early. The length check above rules this out, because an
                // operation's lengths always match its components; refuse rather than panic.
                (None, Some(_)) | (Some(_), None) => return Err(mismatch),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("test operations are valid")
    }

    fn check(text: &str, a: serde_json::Value, b: serde_json::Value, expected: serde_json::Value) {
        let (a, b) = (op(a), op(b));
        let ab = a.compose(&b).expect("lengths match");
        assert_eq!(ab.to_json(), expected, "compose({a}, {b})");
        let stepwise = b.apply(&a.apply(text).expect("a fits")).expect("b fits");
        assert_eq!(ab.apply(text).expect("composition fits"), stepwise);
    }

    #[test]
    fn protocol_examples_compose() {
        check("hello", json!([5, " world"]), json!([1, -10, "ey"]), json!([1, "ey", -4]));
        check("hello", json!([1, -4, "ey"]), json!([3, "!"]), json!([1, "ey!", -4]));
    }

    #[test]
    fn insert_then_delete_cancels() {
        check("ab", json!([1, "xyz", 1]), json!([2, -2, 1]), json!([1, "x", 1]));
        check("", json!(["abc"]), json!([-3]), json!([]));
        check("ab", json!(["😀👍🏽", 2]), json!([1, -2, 2]), json!(["😀", 2]));
    }

    #[test]
    fn splits_inserts_by_scalar_values() {
        check("", json!(["e\u{301}😀中"]), json!([1, "x", 1, -1, 1]), json!(["ex\u{301}中"]));
        check("ab", json!([1, "😀😀😀", 1]), json!([2, "|", 3]), json!([1, "😀|😀😀", 1]));
    }

    #[test]
    fn delete_over_delete() {
        check("abcdef", json!([1, -2, 3]), json!([1, -2, 1]), json!([1, -4, 1]));
        check("abcdef", json!([-6]), json!(["z"]), json!(["z", -6]));
    }

    #[test]
    fn identity_is_neutral() {
        let a = op(json!([2, "x", -1, 1]));
        assert_eq!(Operation::identity(4).compose(&a), Ok(a.clone()));
        assert_eq!(a.compose(&Operation::identity(4)), Ok(a.clone()));
        assert_eq!(Operation::new().compose(&Operation::new()), Ok(Operation::new()));
    }

    #[test]
    fn length_mismatch() {
        let a = op(json!([5, " world"]));
        assert_eq!(
            a.compose(&Operation::identity(5)),
            Err(OtError::ComposeLengthMismatch { first_target: 11, second_base: 5 })
        );
        assert_eq!(
            Operation::new().compose(&op(json!([-1]))),
            Err(OtError::ComposeLengthMismatch { first_target: 0, second_base: 1 })
        );
    }
}
