//! The OT algebra on a base text and operations built by `arbitrary`: mostly operations that fit the
//! text, sometimes ones that do not (wrong lengths, counts up to `MAX_COUNT`). Checks the laws the
//! crate documents — apply on `&str` and on a rope agree, TP1, compose, invert, cursor transform,
//! `from_patch` — and that every misfit is an error, never a panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ropey::Rope;
use tandem_fuzz::{apply_both, assert_json_round_trip, assert_normal, len, PIECES};
use tandem_ot::{Component, Operation, OtError, MAX_COUNT};

/// One piece of text.
#[derive(Debug, Arbitrary)]
enum Chunk {
    /// One of the tricky [`PIECES`].
    Piece(u8),
    /// Any Unicode scalar value.
    Char(char),
    /// Printable ASCII.
    Ascii(u8),
}

fn make_text(chunks: &[Chunk]) -> String {
    let mut out = String::new();
    for chunk in chunks {
        match chunk {
            Chunk::Piece(i) => out.push_str(PIECES[*i as usize % PIECES.len()]),
            Chunk::Char(c) => out.push(*c),
            Chunk::Ascii(b) => out.push(char::from(b' ' + b % 95)),
        }
    }
    out
}

#[derive(Debug, Arbitrary)]
enum Step {
    Retain(u8),
    Delete(u8),
    Insert(Vec<Chunk>),
    /// A count near the wire limit: retain when true, delete when false.
    Huge(bool, u8),
}

#[derive(Debug, Arbitrary)]
struct OpSpec {
    steps: Vec<Step>,
    /// Fitted to the text unless this is a multiple of 8: then the counts are taken as they are.
    fit: u8,
}

impl OpSpec {
    /// Builds the operation for a text of `len` characters. A fitted op cuts each count to what is
    /// left and retains the rest; a raw one ignores `len`.
    fn build(&self, len: usize) -> Operation {
        let fitted = !self.fit.is_multiple_of(8);
        let mut op = Operation::new();
        let mut left = len;
        for step in &self.steps {
            let (n, retain) = match step {
                Step::Retain(n) => (usize::from(*n), true),
                Step::Delete(n) => (usize::from(*n), false),
                Step::Huge(retain, n) => (MAX_COUNT as usize - usize::from(*n), *retain),
                Step::Insert(chunks) => {
                    op.insert(&make_text(chunks));
                    continue;
                }
            };
            let n = if fitted { n.min(left) } else { n };
            left = left.saturating_sub(n);
            if retain {
                op.retain(n);
            } else {
                op.delete(n);
            }
        }
        if fitted {
            op.retain(left);
        }
        op
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    text: Vec<Chunk>,
    a: OpSpec,
    b: OpSpec,
    /// Applied after `a`.
    c: OpSpec,
    cursor: u16,
    patch: (u16, u16, Vec<Chunk>),
}

fuzz_target!(|input: Input| {
    let text = make_text(&input.text);
    let n = len(&text);
    let a = input.a.build(n);
    let b = input.b.build(n);
    for op in [&a, &b] {
        assert_normal(op);
        if op.base_len() as u64 <= MAX_COUNT && op.target_len() as u64 <= MAX_COUNT {
            assert_json_round_trip(op);
        }
    }
    let after_a = apply_both(&a, &text);
    let after_b = apply_both(&b, &text);

    // Transform: TP1, and both paths are the same operation.
    match Operation::transform(&a, &b) {
        Ok((a_prime, b_prime)) => {
            assert_eq!(a.base_len(), b.base_len());
            assert_normal(&a_prime);
            assert_normal(&b_prime);
            assert_eq!(a_prime.base_len(), b.target_len());
            assert_eq!(b_prime.base_len(), a.target_len());
            assert_eq!(a_prime.target_len(), b_prime.target_len());
            let via_a = a.compose(&b_prime).expect("b' follows a");
            let via_b = b.compose(&a_prime).expect("a' follows b");
            assert_eq!(via_a, via_b, "a·b' != b·a' for {a} and {b}");
            if let (Ok(ta), Ok(tb)) = (&after_a, &after_b) {
                let converged = apply_both(&b_prime, ta).expect("b' applies after a");
                assert_eq!(
                    apply_both(&a_prime, tb).as_ref(),
                    Ok(&converged),
                    "TP1 for {a} and {b} on {text:?}"
                );
                assert_eq!(apply_both(&via_a, &text).as_ref(), Ok(&converged));
            }
        }
        Err(e) => {
            assert_ne!(a.base_len(), b.base_len(), "{e}");
            assert_eq!(e, OtError::TransformLengthMismatch { a_base: a.base_len(), b_base: b.base_len() });
        }
    }

    // Compose with an op made for a's result.
    let c = input.c.build(after_a.as_deref().map_or(a.target_len(), len));
    assert_normal(&c);
    match a.compose(&c) {
        Ok(ac) => {
            assert_eq!(a.target_len(), c.base_len());
            assert_normal(&ac);
            assert_eq!((ac.base_len(), ac.target_len()), (a.base_len(), c.target_len()));
            if let Ok(ta) = &after_a {
                let stepwise = apply_both(&c, ta).expect("c fits a's result");
                assert_eq!(apply_both(&ac, &text).as_ref(), Ok(&stepwise), "compose({a}, {c}) on {text:?}");
            }
        }
        Err(e) => {
            assert_ne!(a.target_len(), c.base_len(), "{e}");
            assert_eq!(
                e,
                OtError::ComposeLengthMismatch { first_target: a.target_len(), second_base: c.base_len() }
            );
        }
    }

    // Invert, from a string and from a rope.
    let inverse = a.invert(&text);
    assert_eq!(a.invert_rope(&Rope::from_str(&text)), inverse, "invert and invert_rope disagree");
    match (&inverse, &after_a) {
        (Ok(inverse), Ok(ta)) => {
            assert_normal(inverse);
            assert_eq!(apply_both(inverse, ta).as_deref(), Ok(text.as_str()), "invert({a}) on {text:?}");
            assert_eq!(inverse.invert(ta).as_ref(), Ok(&a));
        }
        (Err(e), Err(_)) => assert_eq!(e, &OtError::BaseLengthMismatch { expected: a.base_len(), actual: n }),
        _ => panic!("invert {inverse:?} and apply {after_a:?} disagree on whether {a} fits"),
    }

    // Cursor transform: in bounds, monotone, and where transform moves an insert that loses ties.
    let index = usize::from(input.cursor);
    let moved = a.transform_index(index);
    assert!(moved <= a.target_len(), "{a} moved {index} to {moved}");
    assert!(a.transform_index(index + 1) >= moved, "{a} is not monotone at {index}");
    if index <= a.base_len() {
        let marker = Operation::from_patch(a.base_len(), index, 0, "\u{0}").expect("in range");
        let (_, moved_marker) = Operation::transform(&a, &marker).expect("same base");
        let moved_at = match moved_marker.components().first() {
            Some(Component::Retain(k)) => *k,
            _ => 0,
        };
        assert_eq!(moved, moved_at, "transform_index({a}, {index})");
    }

    // from_patch: refused exactly when the range leaves the text.
    let (pos, delete, insert) =
        (usize::from(input.patch.0), usize::from(input.patch.1), make_text(&input.patch.2));
    match Operation::from_patch(n, pos, delete, &insert) {
        Ok(patch) => {
            assert!(pos + delete <= n);
            assert_normal(&patch);
            let mut expected: String = text.chars().take(pos).collect();
            expected.push_str(&insert);
            expected.extend(text.chars().skip(pos + delete));
            assert_eq!(apply_both(&patch, &text), Ok(expected));
        }
        Err(e) => {
            assert!(pos + delete > n);
            assert_eq!(e, OtError::PatchOutOfRange { pos, delete, doc_len: n });
        }
    }
});
