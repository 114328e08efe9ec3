//! The test vectors shared with the JavaScript client (`libs/ot/vectors/ot-vectors.json`).
//!
//! Included with `#[path]` by `examples/gen-vectors.rs`, which writes the file, and by
//! `tests/vectors.rs`, which checks every vector and that the file is exactly what [`render`]
//! produces, so the checked-in file can never drift from this generator. The format is described in
//! `libs/ot/vectors/README.md`.
//!
//! Hand-picked vectors carry expected results written out by hand (the test checks the Rust code
//! against them); generated vectors carry what the Rust code computes from a fixed seed.

// Each target that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tandem_ot::{Operation, OtError};

/// The seed of the generated vectors; changing it rewrites the file.
pub const SEED: u64 = 0x7a4d_0001;

/// Where the vectors file lives.
pub fn vectors_path() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("vectors/ot-vectors.json")
}

#[derive(Debug, Serialize)]
pub struct ApplyVector {
    pub text: String,
    pub op: Value,
    pub result: String,
}

#[derive(Debug, Serialize)]
pub struct ComposeVector {
    pub text: String,
    pub a: Value,
    pub b: Value,
    pub result: Value,
}

#[derive(Debug, Serialize)]
pub struct TransformVector {
    pub text: String,
    pub a: Value,
    pub b: Value,
    pub a_prime: Value,
    pub b_prime: Value,
}

#[derive(Debug, Serialize)]
pub struct IndexVector {
    pub op: Value,
    pub index: usize,
    pub result: usize,
}

#[derive(Debug, Serialize)]
pub struct InvertVector {
    pub text: String,
    pub op: Value,
    pub result: Value,
}

#[derive(Debug, Serialize)]
pub struct InvalidVector {
    pub text: String,
    pub op: Value,
    pub error: &'static str,
}

/// All vectors, in the order they appear in the file.
#[derive(Debug, Default)]
pub struct Vectors {
    pub apply: Vec<ApplyVector>,
    pub compose: Vec<ComposeVector>,
    pub transform: Vec<TransformVector>,
    pub transform_index: Vec<IndexVector>,
    pub invert: Vec<InvertVector>,
    pub invalid: Vec<InvalidVector>,
}

/// The `error` string of an `invalid` vector for an error from parsing or applying the wire form.
pub fn error_code(error: &OtError) -> &'static str {
    match error {
        OtError::NotAnArray => "not_an_array",
        OtError::BadComponent { .. } => "bad_component",
        OtError::BaseLengthMismatch { .. } => "base_length_mismatch",
        other => panic!("no vector error code for {other:?}"),
    }
}

/// Builds every vector: the hand-picked ones, then the generated ones.
pub fn generate() -> Vectors {
    let mut v = Vectors::default();
    hand_picked(&mut v);
    let mut rng = StdRng::seed_from_u64(SEED);
    for _ in 0..40 {
        let text = random_text(&mut rng, 0..10);
        let op = random_op(&mut rng, &text);
        let result = op.apply(&text).expect("generated op fits");
        v.apply.push(ApplyVector { text, op: op.to_json(), result });
    }
    for _ in 0..50 {
        let text = random_text(&mut rng, 0..10);
        let a = random_op(&mut rng, &text);
        let b = random_op(&mut rng, &a.apply(&text).expect("generated op fits"));
        let result = a.compose(&b).expect("b follows a").to_json();
        v.compose.push(ComposeVector { text, a: a.to_json(), b: b.to_json(), result });
    }
    for _ in 0..80 {
        let text = random_text(&mut rng, 0..8);
        let a = random_op(&mut rng, &text);
        let b = random_op(&mut rng, &text);
        let (a_prime, b_prime) = Operation::transform(&a, &b).expect("same base");
        v.transform.push(TransformVector {
            text,
            a: a.to_json(),
            b: b.to_json(),
            a_prime: a_prime.to_json(),
            b_prime: b_prime.to_json(),
        });
    }
    for _ in 0..40 {
        let text = random_text(&mut rng, 0..8);
        let op = random_op(&mut rng, &text);
        let index = rng.gen_range(0..=op.base_len());
        v.transform_index.push(IndexVector { op: op.to_json(), index, result: op.transform_index(index) });
    }
    // Drawn after the others, so that adding this section left the earlier vectors as they were.
    for _ in 0..30 {
        let text = random_text(&mut rng, 0..8);
        let op = random_op(&mut rng, &text);
        let result = op.invert(&text).expect("generated op fits").to_json();
        v.invert.push(InvertVector { text, op: op.to_json(), result });
    }
    v
}

/// Pieces of random text: ASCII, multi-byte letters, an emoji outside the BMP, an emoji with a
/// skin-tone modifier, a letter with a combining accent, a lone combining mark, CJK. The
/// non-ASCII ones catch a client that counts UTF-16 units or bytes instead of code points.
const PIECES: &[&str] = &["a", "b", "c", "x", " ", "\n", "é", "e\u{301}", "\u{301}", "😀", "👍🏽", "中", "文"];

fn random_text(rng: &mut StdRng, pieces: std::ops::Range<usize>) -> String {
    let count = rng.gen_range(pieces);
    (0..count).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect()
}

/// A random operation on `text`: a few retains, deletes and inserts at random places, with short
/// counts so that small texts often see inserts at the same position and overlapping deletes.
fn random_op(rng: &mut StdRng, text: &str) -> Operation {
    let mut left = text.chars().count();
    let mut op = Operation::new();
    for _ in 0..rng.gen_range(1..5) {
        match rng.gen_range(0..3) {
            0 => {
                let n = rng.gen_range(0..=left.min(3));
                op.retain(n);
                left -= n;
            }
            1 => {
                let n = rng.gen_range(0..=left.min(3));
                op.delete(n);
                left -= n;
            }
            _ => {
                let insert = random_text(rng, 1..3);
                op.insert(&insert);
            }
        }
    }
    op.retain(left);
    op
}

fn apply(v: &mut Vectors, text: &str, op: Value, result: &str) {
    v.apply.push(ApplyVector { text: text.into(), op, result: result.into() });
}

fn compose(v: &mut Vectors, text: &str, a: Value, b: Value, result: Value) {
    v.compose.push(ComposeVector { text: text.into(), a, b, result });
}

fn transform(v: &mut Vectors, text: &str, a: Value, b: Value, a_prime: Value, b_prime: Value) {
    v.transform.push(TransformVector { text: text.into(), a, b, a_prime, b_prime });
}

fn index(v: &mut Vectors, op: Value, index: usize, result: usize) {
    v.transform_index.push(IndexVector { op, index, result });
}

fn invert(v: &mut Vectors, text: &str, op: Value, result: Value) {
    v.invert.push(InvertVector { text: text.into(), op, result });
}

fn invalid(v: &mut Vectors, text: &str, op: Value, error: &'static str) {
    v.invalid.push(InvalidVector { text: text.into(), op, error });
}

/// Edge cases, with results worked out by hand.
fn hand_picked(v: &mut Vectors) {
    // apply: the protocol examples, empty texts, code-point counting, unnormalised input.
    apply(v, "hello", json!([5, " world"]), "hello world");
    apply(v, "hello", json!([1, -4, "ey"]), "hey");
    apply(v, "", json!([]), "");
    apply(v, "", json!(["abc"]), "abc");
    apply(v, "abc", json!([-3]), "");
    apply(v, "abc", json!([3]), "abc");
    apply(v, "😀a", json!([1, "b", 1]), "😀ba");
    apply(v, "👍🏽!", json!([1, -1, 1]), "👍!");
    apply(v, "e\u{301}x", json!([1, -1, "\u{300}", 1]), "e\u{300}x");
    apply(v, "中文", json!([-1, 1, "字"]), "文字");
    apply(v, "ab", json!([0, 1, "", 1, 0, "c"]), "abc");
    apply(v, "abcd", json!([1, -1, "x", -1, "y", 1]), "axyd");

    // compose
    compose(v, "hello", json!([5, " world"]), json!([1, -10, "ey"]), json!([1, "ey", -4]));
    compose(v, "ab", json!([1, "xyz", 1]), json!([2, -2, 1]), json!([1, "x", 1]));
    compose(v, "", json!(["abc"]), json!([-3]), json!([]));
    compose(v, "abcdef", json!([1, -2, 3]), json!([1, -2, 1]), json!([1, -4, 1]));
    compose(v, "ab", json!([1, "😀😀😀", 1]), json!([2, "|", 3]), json!([1, "😀|😀😀", 1]));
    compose(v, "", json!(["e\u{301}😀中"]), json!([1, "x", 1, -1, 1]), json!(["ex\u{301}中"]));
    compose(v, "ab", json!(["😀👍🏽", 2]), json!([1, -2, 2]), json!(["😀", 2]));
    compose(v, "abc", json!([-3]), json!(["xyz"]), json!(["xyz", -3]));

    // transform: same-position inserts put `a` first.
    transform(v, "ab", json!([1, "X", 1]), json!([1, "Y", 1]), json!([1, "X", 2]), json!([2, "Y", 1]));
    transform(v, "", json!(["a"]), json!(["b"]), json!(["a", 1]), json!([1, "b"]));
    transform(v, "", json!(["😀"]), json!(["👍🏽"]), json!(["😀", 2]), json!([1, "👍🏽"]));
    transform(v, "ab", json!([2, "X"]), json!([2, "YZ"]), json!([2, "X", 2]), json!([3, "YZ"]));
    // Overlapping, equal and nested deletes.
    transform(v, "abcdef", json!([1, -3, 2]), json!([2, -3, 1]), json!([1, -1, 1]), json!([1, -1, 1]));
    transform(v, "abc", json!([-3]), json!([-3]), json!([]), json!([]));
    transform(v, "abc", json!([-3]), json!([1, -1, 1]), json!([-2]), json!([]));
    // An insert inside a deleted range survives the delete.
    transform(v, "abcd", json!([-4]), json!([2, "X", 2]), json!([-2, 1, -2]), json!(["X"]));
    transform(v, "abcd", json!([2, "X", 2]), json!([-4]), json!(["X"]), json!([-2, 1, -2]));
    // Inserts at the edges of a deleted range.
    transform(v, "abcd", json!([1, -2, 1]), json!([1, "X", 3]), json!([2, -2, 1]), json!([1, "X", 1]));
    transform(v, "abcd", json!([1, -2, 1]), json!([3, "X", 1]), json!([1, -2, 2]), json!([1, "X", 1]));
    // Replacements of the same range: both inserts stay, `a`'s first.
    transform(
        v,
        "abc",
        json!([1, "Z", -1, 1]),
        json!([1, "Y", -1, 1]),
        json!([1, "Z", 2]),
        json!([2, "Y", 1]),
    );
    transform(
        v,
        "abc",
        json!([1, "Z", -1, 1]),
        json!([1, "Y", 2]),
        json!([1, "Z", 1, -1, 1]),
        json!([2, "Y", 1]),
    );
    // Code points: an emoji with a skin tone is two, a combining accent is its own character.
    transform(v, "👍🏽", json!([1, -1]), json!([2, "!"]), json!([1, -1, 1]), json!([1, "!"]));
    transform(v, "e\u{301}", json!([-1, 1]), json!([2, "x"]), json!([-1, 2]), json!([1, "x"]));
    transform(v, "a😀b", json!([2, "X", 1]), json!([1, -1, 1]), json!([1, "X", 1]), json!([1, -1, 2]));
    // Against a no-op.
    transform(v, "abc", json!([3]), json!([1, "x", -1, 1]), json!([3]), json!([1, "x", -1, 1]));

    // transform_index: an insert at the cursor pushes it right; a delete pulls it to its start.
    index(v, json!([2, "xy", 3]), 2, 4);
    index(v, json!([2, "xy", 3]), 1, 1);
    index(v, json!([2, "xy", 3]), 3, 5);
    index(v, json!(["😀👍🏽"]), 0, 3);
    index(v, json!([3, "!"]), 3, 4);
    index(v, json!([1, -3, 2]), 3, 1);
    index(v, json!([1, -3, 2]), 4, 1);
    index(v, json!([1, -3, 2]), 5, 2);
    index(v, json!([1, "ab", -2, 1]), 1, 3);
    index(v, json!([1, "ab", -2, 1]), 2, 3);
    index(v, json!([1, "ab", -2, 1]), 4, 4);
    index(v, json!([]), 0, 0);

    // invert: inserts become deletes, deletes become inserts of the text they removed.
    invert(v, "hello", json!([5, " world"]), json!([5, -6]));
    invert(v, "hello", json!([1, -4, "ey"]), json!([1, "ello", -2]));
    invert(v, "", json!([]), json!([]));
    invert(v, "", json!(["abc"]), json!([-3]));
    invert(v, "abc", json!([-3]), json!(["abc"]));
    invert(v, "a😀👍🏽e\u{301}", json!([1, -3, 1, -1]), json!([1, "😀👍🏽", 1, "\u{301}"]));
    invert(v, "👍🏽", json!([1, "x", -1]), json!([1, "\u{1F3FD}", -1]));
    invert(v, "中文", json!([-1, "字", 1]), json!(["中", -1, 1]));

    // invalid: the op is not an array, a component is neither integer nor string, or the lengths do
    // not fit the text (counted in code points, not UTF-16 units).
    invalid(v, "abc", json!({"retain": 3}), "not_an_array");
    invalid(v, "abc", json!("abc"), "not_an_array");
    invalid(v, "abc", json!(3), "not_an_array");
    invalid(v, "abc", json!(null), "not_an_array");
    invalid(v, "abc", json!([3, null]), "bad_component");
    invalid(v, "abc", json!([1.5, 1.5]), "bad_component");
    invalid(v, "abc", json!([true]), "bad_component");
    invalid(v, "abc", json!([[3]]), "bad_component");
    invalid(v, "abc", json!([{"retain": 3}]), "bad_component");
    invalid(v, "abc", json!([4]), "base_length_mismatch");
    invalid(v, "abc", json!([2, "x"]), "base_length_mismatch");
    invalid(v, "", json!([-1]), "base_length_mismatch");
    invalid(v, "a", json!(["x"]), "base_length_mismatch");
    invalid(v, "😀a", json!([3]), "base_length_mismatch");
    invalid(v, "😀👍🏽", json!([-6]), "base_length_mismatch");
    invalid(v, "e\u{301}", json!([1]), "base_length_mismatch");
}

/// The file's text: one vector per line, sections in a fixed order, every non-ASCII character
/// escaped as `\uXXXX` (UTF-16, as JSON defines it) so that combining marks and skin tones are
/// visible and the bytes do not depend on an editor's normalisation.
pub fn render(v: &Vectors) -> String {
    let mut out = String::from("{\n");
    section(&mut out, "apply", &v.apply, false);
    section(&mut out, "compose", &v.compose, false);
    section(&mut out, "transform", &v.transform, false);
    section(&mut out, "transform_index", &v.transform_index, false);
    section(&mut out, "invert", &v.invert, false);
    section(&mut out, "invalid", &v.invalid, true);
    out.push_str("}\n");
    out
}

fn section<T: Serialize>(out: &mut String, name: &str, items: &[T], last: bool) {
    out.push_str(&format!("  \"{name}\": [\n"));
    for (i, item) in items.iter().enumerate() {
        let line = serde_json::to_string(item).expect("vectors serialise");
        out.push_str("    ");
        out.push_str(&ascii_only(&line));
        out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
    }
    out.push_str(if last { "  ]\n" } else { "  ],\n" });
}

/// Escapes every non-ASCII character; in serde_json's output they only occur inside strings.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
