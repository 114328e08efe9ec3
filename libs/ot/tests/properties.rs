//! Randomized checks of the OT laws on random Unicode text (ASCII, emoji with skin tones,
//! combining marks, CJK and arbitrary scalar values).
//!
//! proptest shrinks any failure to a minimal case, prints it with the seed, and records it under
//! `proptest-regressions/` so that the next run replays it first.

use proptest::prelude::*;
use ropey::Rope;
use tandem_ot::{Component, Operation};

/// Pieces that make counting go wrong when a layer counts bytes, UTF-16 units or graphemes:
/// multi-byte letters, an emoji outside the BMP, an emoji with a skin-tone modifier (two scalar
/// values), a letter with a combining accent (two scalar values), a lone combining mark, CJK.
const PIECES: &[&str] =
    &["a", "b", "z", " ", "\n", "é", "e\u{301}", "\u{301}", "😀", "👍🏽", "\u{1F3FD}", "中", "文", "ß"];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(PIECES).prop_map(str::to_owned),
        2 => "[a-z ]{1,3}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..16).prop_map(|pieces| pieces.concat())
}

/// A step of an operation before it is fitted to a text of a given length.
#[derive(Debug, Clone)]
enum Step {
    Retain(usize),
    Delete(usize),
    Insert(String),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        (1..8usize).prop_map(Step::Retain),
        (1..6usize).prop_map(Step::Delete),
        prop::collection::vec(piece(), 1..3).prop_map(|p| Step::Insert(p.concat())),
    ];
    prop::collection::vec(step, 0..8)
}

/// Turns steps into an operation on a text of `len` characters: counts are cut to what is left
/// and the rest of the text is retained at the end.
fn fit(len: usize, steps: &[Step]) -> Operation {
    let mut op = Operation::new();
    let mut left = len;
    for step in steps {
        match step {
            Step::Retain(n) => {
                let n = (*n).min(left);
                op.retain(n);
                left -= n;
            }
            Step::Delete(n) => {
                let n = (*n).min(left);
                op.delete(n);
                left -= n;
            }
            Step::Insert(s) => {
                op.insert(s);
            }
        }
    }
    op.retain(left);
    op
}

fn len(text: &str) -> usize {
    text.chars().count()
}

/// Checks the normal form and that the cached lengths match the components.
fn assert_normal(op: &Operation) -> Result<(), TestCaseError> {
    let (mut base, mut target) = (0, 0);
    for (i, c) in op.components().iter().enumerate() {
        match c {
            Component::Retain(n) => {
                prop_assert!(*n > 0, "zero retain in {op}");
                base += n;
                target += n;
            }
            Component::Insert(s) => {
                prop_assert!(!s.is_empty(), "empty insert in {op}");
                target += len(s);
            }
            Component::Delete(n) => {
                prop_assert!(*n > 0, "zero delete in {op}");
                base += n;
            }
        }
        if let Some(next) = op.components().get(i + 1) {
            prop_assert!(std::mem::discriminant(c) != std::mem::discriminant(next), "unmerged {op}");
            let delete_then_insert = matches!((c, next), (Component::Delete(_), Component::Insert(_)));
            prop_assert!(!delete_then_insert, "delete before insert in {op}");
        }
    }
    prop_assert_eq!((op.base_len(), op.target_len()), (base, target), "cached lengths of {}", op);
    Ok(())
}

fn apply_rope(op: &Operation, text: &str) -> String {
    let mut rope = Rope::from_str(text);
    op.apply_to_rope(&mut rope).expect("op fits the rope");
    rope.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fitted_ops_are_normal_and_apply_on_str_and_rope_alike(text in text(), steps in steps()) {
        let op = fit(len(&text), &steps);
        assert_normal(&op)?;
        let out = op.apply(&text).expect("fitted op applies");
        prop_assert_eq!(len(&out), op.target_len());
        prop_assert_eq!(apply_rope(&op, &text), out);
        // The wire form round-trips.
        prop_assert_eq!(Operation::from_json(&op.to_json()), Ok(op));
    }

    #[test]
    fn compose_then_apply_equals_apply_then_apply(text in text(), s1 in steps(), s2 in steps()) {
        let a = fit(len(&text), &s1);
        let middle = a.apply(&text).expect("a applies");
        let b = fit(len(&middle), &s2);
        let ab = a.compose(&b).expect("b follows a");
        assert_normal(&ab)?;
        prop_assert_eq!((ab.base_len(), ab.target_len()), (a.base_len(), b.target_len()));
        prop_assert_eq!(ab.apply(&text).expect("composition applies"), b.apply(&middle).expect("b applies"));
    }

    #[test]
    fn transform_converges(text in text(), s1 in steps(), s2 in steps()) {
        let a = fit(len(&text), &s1);
        let b = fit(len(&text), &s2);
        let (a_prime, b_prime) = Operation::transform(&a, &b).expect("same base");
        assert_normal(&a_prime)?;
        assert_normal(&b_prime)?;
        prop_assert_eq!(a_prime.base_len(), b.target_len());
        prop_assert_eq!(b_prime.base_len(), a.target_len());
        let via_a = b_prime.apply(&a.apply(&text).expect("a applies")).expect("b' applies");
        let via_b = a_prime.apply(&b.apply(&text).expect("b applies")).expect("a' applies");
        prop_assert_eq!(&via_a, &via_b);
        // The two paths are the same operation, not just the same result on this text.
        prop_assert_eq!(a.compose(&b_prime), b.compose(&a_prime));
    }

    #[test]
    fn transform_puts_a_first_on_ties(text in text(), pos in any::<prop::sample::Index>(), x in piece(), y in piece()) {
        let at = pos.index(len(&text) + 1);
        let a = Operation::from_patch(len(&text), at, 0, &x).expect("in range");
        let b = Operation::from_patch(len(&text), at, 0, &y).expect("in range");
        let (a_prime, _) = Operation::transform(&a, &b).expect("same base");
        let mut expected = text.chars().take(at).collect::<String>();
        expected.push_str(&x);
        expected.push_str(&y);
        expected.extend(text.chars().skip(at));
        prop_assert_eq!(a_prime.apply(&b.apply(&text).expect("b applies")).expect("a' applies"), expected);
    }

    #[test]
    fn invert_round_trips(text in text(), steps in steps()) {
        let op = fit(len(&text), &steps);
        let inverse = op.invert(&text).expect("op fits");
        assert_normal(&inverse)?;
        prop_assert_eq!(op.invert_rope(&Rope::from_str(&text)), Ok(inverse.clone()));
        let changed = op.apply(&text).expect("op applies");
        prop_assert_eq!(inverse.apply(&changed).expect("inverse applies"), text);
        prop_assert_eq!(inverse.invert(&changed), Ok(op));
    }

    #[test]
    fn transform_index_stays_in_bounds_and_agrees_with_transform(
        text in text(),
        steps in steps(),
        cursor in any::<prop::sample::Index>(),
    ) {
        let op = fit(len(&text), &steps);
        let mut previous = 0;
        for index in 0..=op.base_len() {
            let moved = op.transform_index(index);
            prop_assert!(moved <= op.target_len(), "{} moved {} to {}", op, index, moved);
            prop_assert!(moved >= previous, "{} is not monotone at {}", op, index);
            previous = moved;
        }
        // A cursor is an empty insert that loses ties: it moves where transform moves an insert.
        let index = cursor.index(op.base_len() + 1);
        let marker = Operation::from_patch(op.base_len(), index, 0, "\u{0}").expect("in range");
        let (_, moved_marker) = Operation::transform(&op, &marker).expect("same base");
        let moved_at = match moved_marker.components().first() {
            Some(Component::Retain(n)) => *n,
            _ => 0,
        };
        prop_assert_eq!(op.transform_index(index), moved_at);
    }

    #[test]
    fn from_patch_splices(text in text(), pos in any::<prop::sample::Index>(), del in 0..5usize, ins in text()) {
        let n = len(&text);
        let pos = pos.index(n + 1);
        let del = del.min(n - pos);
        let op = Operation::from_patch(n, pos, del, &ins).expect("in range");
        assert_normal(&op)?;
        let mut expected = text.chars().take(pos).collect::<String>();
        expected.push_str(&ins);
        expected.extend(text.chars().skip(pos + del));
        prop_assert_eq!(op.apply(&text).expect("patch applies"), expected);
        prop_assert!(Operation::from_patch(n, pos, n - pos + 1, &ins).is_err());
    }
}
