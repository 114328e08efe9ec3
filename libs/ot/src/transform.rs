//! Transforming two concurrent operations against each other.

use crate::walk::{pieces, rest_count, Piece};
use crate::{Operation, OtError};

impl Operation {
    /// Returns `(a', b')` such that applying `a` then `b'` gives the same text as applying `b` then
    /// `a'` (TP1): the heart of merging concurrent edits.
    ///
    /// Both operations must apply to the same text, otherwise
    /// [`OtError::TransformLengthMismatch`]. The algorithm and tie-break are those of ot.js
    /// `TextOperation.transform`: when `a` and `b` insert at the same position, `a`'s text ends up
    /// first (to the left). The server calls `transform(incoming, committed)` and a client calls
    /// `transform(own_pending, received)`, so on a tie the later-sequenced insert lands left on both
    /// sides. Both results are normalised.
    pub fn transform(a: &Operation, b: &Operation) -> Result<(Operation, Operation), OtError> {
        let mismatch = OtError::TransformLengthMismatch { a_base: a.base_len(), b_base: b.base_len() };
        if a.base_len() != b.base_len() {
            return Err(mismatch);
        }
        let mut a_prime = Operation::new();
        let mut b_prime = Operation::new();
        let mut a_pieces = pieces(a);
        let mut b_pieces = pieces(b);
        let mut x = a_pieces.next();
        let mut y = b_pieces.next();
        loop {
            match (x, y) {
                (None, None) => break,
                // `a`'s insert is looked at first, which is what puts it left of `b`'s on a tie.
                (Some(Piece::Insert(s, len)), _) => {
                    a_prime.insert(s);
                    b_prime.retain(len);
                    x = a_pieces.next();
                }
                (_, Some(Piece::Insert(s, len))) => {
                    a_prime.retain(len);
                    b_prime.insert(s);
                    y = b_pieces.next();
                }
                (Some(Piece::Retain(m)), Some(Piece::Retain(n))) => {
                    let k = m.min(n);
                    a_prime.retain(k);
                    b_prime.retain(k);
                    x = rest_count(m, k, Piece::Retain, &mut a_pieces);
                    y = rest_count(n, k, Piece::Retain, &mut b_pieces);
                }
                // Both deleted the same characters: nothing is left for either to do.
                (Some(Piece::Delete(m)), Some(Piece::Delete(n))) => {
                    let k = m.min(n);
                    x = rest_count(m, k, Piece::Delete, &mut a_pieces);
                    y = rest_count(n, k, Piece::Delete, &mut b_pieces);
                }
                (Some(Piece::Delete(m)), Some(Piece::Retain(n))) => {
                    let k = m.min(n);
                    a_prime.delete(k);
                    x = rest_count(m, k, Piece::Delete, &mut a_pieces);
                    y = rest_count(n, k, Piece::Retain, &mut b_pieces);
                }
                (Some(Piece::Retain(m)), Some(Piece::Delete(n))) => {
                    let k = m.min(n);
                    b_prime.delete(k);
                    x = rest_count(m, k, Piece::Retain, &mut a_pieces);
                    y = rest_count(n, k, Piece::Delete, &mut b_pieces);
                }
                // One side ran out early. The length check above rules this out, because an
                // operation's lengths always match its components; refuse rather than panic.
                (None, Some(_)) | (Some(_), None) => return Err(mismatch),
            }
        }
        Ok((a_prime, b_prime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("test operations are valid")
    }

    /// Transforms, checks TP1 on `text`, and returns the converged text.
    fn converge(
        text: &str,
        a: serde_json::Value,
        b: serde_json::Value,
        a_prime: serde_json::Value,
        b_prime: serde_json::Value,
    ) -> String {
        let (a, b) = (op(a), op(b));
        let (ap, bp) = Operation::transform(&a, &b).expect("same base");
        assert_eq!((ap.to_json(), bp.to_json()), (a_prime, b_prime), "transform({a}, {b})");
        let ab = bp.apply(&a.apply(text).expect("a fits")).expect("b' fits");
        let ba = ap.apply(&b.apply(text).expect("b fits")).expect("a' fits");
        assert_eq!(ab, ba, "TP1 for transform({a}, {b}) on {text:?}");
        ab
    }

    #[test]
    fn same_position_inserts_put_a_first() {
        let out =
            converge("ab", json!([1, "X", 1]), json!([1, "Y", 1]), json!([1, "X", 2]), json!([2, "Y", 1]));
        assert_eq!(out, "aXYb");
        let out =
            converge("ab", json!([1, "Y", 1]), json!([1, "X", 1]), json!([1, "Y", 2]), json!([2, "X", 1]));
        assert_eq!(out, "aYXb");
        assert_eq!(converge("", json!(["😀"]), json!(["👍🏽"]), json!(["😀", 2]), json!([1, "👍🏽"])), "😀👍🏽");
    }

    #[test]
    fn overlapping_deletes() {
        let out =
            converge("abcdef", json!([1, -3, 2]), json!([2, -3, 1]), json!([1, -1, 1]), json!([1, -1, 1]));
        assert_eq!(out, "af");
        assert_eq!(converge("abc", json!([-3]), json!([-3]), json!([]), json!([])), "");
        assert_eq!(converge("abc", json!([-3]), json!([1, -1, 1]), json!([-2]), json!([])), "");
    }

    #[test]
    fn insert_inside_a_deleted_range_survives() {
        let out = converge("abcd", json!([-4]), json!([2, "X", 2]), json!([-2, 1, -2]), json!(["X"]));
        assert_eq!(out, "X");
        let out = converge("abcd", json!([2, "X", 2]), json!([-4]), json!(["X"]), json!([-2, 1, -2]));
        assert_eq!(out, "X");
    }

    #[test]
    fn insert_next_to_delete() {
        // `a` replaces "b" with "Z" and `b` inserts "Y" before "b": both insert at position 1, so
        // `a`'s text goes left, and `b`'s insert survives `a`'s delete.
        let out = converge(
            "abc",
            json!([1, "Z", -1, 1]),
            json!([1, "Y", 2]),
            json!([1, "Z", 1, -1, 1]),
            json!([2, "Y", 1]),
        );
        assert_eq!(out, "aZYc");
    }

    #[test]
    fn combining_marks_are_separate_characters() {
        // "e\u{301}": deleting the base letter keeps the accent, which then combines with the insert.
        let out = converge("e\u{301}", json!([-1, 1]), json!([2, "x"]), json!([-1, 2]), json!([1, "x"]));
        assert_eq!(out, "\u{301}x");
    }

    #[test]
    fn length_mismatch() {
        assert_eq!(
            Operation::transform(&op(json!([3])), &op(json!([2, "x"]))),
            Err(OtError::TransformLengthMismatch { a_base: 3, b_base: 2 })
        );
        assert_eq!(
            Operation::transform(&Operation::new(), &Operation::new()),
            Ok((Operation::new(), Operation::new()))
        );
    }
}
