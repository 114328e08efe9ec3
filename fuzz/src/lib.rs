//! Checks shared by the fuzz targets.

use ropey::Rope;
use tandem_ot::{Component, Operation, OtError, MAX_COUNT};

/// Characters that make counting go wrong when a layer counts bytes, UTF-16 units or graphemes
/// (the same kinds as `libs/ot/tests/properties.rs`).
pub const PIECES: &[&str] = &[
    "a",
    "b",
    " ",
    "\n",
    "é",
    "e\u{301}",
    "\u{301}",
    "😀",
    "👍🏽",
    "\u{1F3FD}",
    "中",
    "ß",
    "\u{FEFF}",
    "\r\n",
];

/// Characters of a text, counted as every Tandem component counts them: Unicode scalar values.
pub fn len(text: &str) -> usize {
    text.chars().count()
}

/// Panics unless `op` is in normal form with cached lengths that match its components.
pub fn assert_normal(op: &Operation) {
    let (mut base, mut target) = (0usize, 0usize);
    let components = op.components();
    for (i, c) in components.iter().enumerate() {
        match c {
            Component::Retain(n) => {
                assert!(*n > 0, "zero retain in {op}");
                base += n;
                target += n;
            }
            Component::Insert(s) => {
                assert!(!s.is_empty(), "empty insert in {op}");
                target += len(s);
            }
            Component::Delete(n) => {
                assert!(*n > 0, "zero delete in {op}");
                base += n;
            }
        }
        if let Some(next) = components.get(i + 1) {
            assert_ne!(std::mem::discriminant(c), std::mem::discriminant(next), "unmerged {op}");
            let delete_then_insert = matches!((c, next), (Component::Delete(_), Component::Insert(_)));
            assert!(!delete_then_insert, "delete before insert in {op}");
        }
    }
    assert_eq!((op.base_len(), op.target_len()), (base, target), "cached lengths of {op}");
    assert_eq!(op.is_noop(), components.iter().all(|c| matches!(c, Component::Retain(_))));
    let inserted: usize =
        components.iter().map(|c| if let Component::Insert(s) = c { len(s) } else { 0 }).sum();
    assert_eq!(op.inserted_chars(), inserted, "inserted_chars of {op}");
}

/// Panics unless the wire form of `op` reads back as `op`, through both the value and the text form.
pub fn assert_json_round_trip(op: &Operation) {
    let json = op.to_json();
    assert_eq!(Operation::from_json(&json).as_ref(), Ok(op), "from_json(to_json) of {op}");
    assert_eq!(serde_json::to_value(op).expect("an operation serialises"), json, "Serialize vs to_json");
    let text = serde_json::to_string(op).expect("an operation serialises");
    let back: Operation = serde_json::from_str(&text).expect("serialised operation parses");
    assert_eq!(&back, op, "serde round trip of {op}");
}

/// Applies `op` to `text` as a string and as a rope, checks both agree (and that a failed rope apply
/// leaves the rope alone), checks the error is exactly the base-length mismatch when the lengths
/// differ, and returns the result.
pub fn apply_both(op: &Operation, text: &str) -> Result<String, OtError> {
    let on_str = op.apply(text);
    let mut rope = Rope::from_str(text);
    let on_rope = op.apply_to_rope(&mut rope).map(|()| rope.to_string());
    assert_eq!(on_str, on_rope, "str and rope disagree for {op} on {text:?}");
    let n = len(text);
    if op.base_len() == n {
        let out = on_str.as_ref().expect("an op of the text's length applies");
        assert_eq!(len(out), op.target_len(), "length of apply({op}, {text:?})");
    } else {
        assert_eq!(on_str, Err(OtError::BaseLengthMismatch { expected: op.base_len(), actual: n }));
        assert_eq!(rope.to_string(), text, "a failed apply must leave the rope alone");
    }
    on_str
}

/// Panics if `op` has a count the wire parser would refuse.
pub fn assert_within_wire_limits(op: &Operation) {
    assert!(op.base_len() as u64 <= MAX_COUNT && op.target_len() as u64 <= MAX_COUNT, "{op} is too long");
}

/// A text of `n` characters made of [`PIECES`], for applying an op parsed from the wire.
pub fn text_of_len(n: usize) -> String {
    PIECES.iter().flat_map(|p| p.chars()).cycle().take(n).collect()
}
