//! A port of `ot-text-unicode` 4.0.0 (`dist/type.js`, the type its `index.js` exports), the op type
//! of the documents the load generator's ShareDB client edits ([`crate::sharedb_replica`]).
//!
//! It exists because the replica must transform, compose and apply exactly as the ShareDB server
//! does, and that server transforms with `ot-text-unicode`. Tandem's own [`tandem_ot::Operation`]
//! is a different type: it always puts an insert before a delete at the same position, whereas
//! `ot-text-unicode` keeps either order and transforms the two differently against an insert right
//! after the deleted text. A replica that kept Tandem's ops could take such a tie the other way
//! from the server and end with the server's length but not its text (the likely cause of the
//! rare ShareDB `max` runs that did, in BENCHMARKS.md).
//!
//! So this follows the JavaScript step by step (`makeAppend`, `makeTake`, `transform`, `compose`,
//! the string builder of `apply`), quirks included: components are kept in the order they come,
//! adjacent inserts or deletes are valid and not merged unless an op is built by appending, a
//! delete keeps its text (`{d: "str"}`) until merged with a counted one, and `apply` refuses a skip
//! past the end but lets a delete past the end remove what is left. Lengths count Unicode code
//! points, as `unicount` does; `tests/sharedb.rs` checks this port against the JavaScript on random
//! ops.

use anyhow::{bail, Context};
use ropey::Rope;
use serde_json::{json, Value};

/// What a delete removes: a count of code points (`{d: n}`), or the text itself (`{d: "str"}`,
/// which `ot-text-unicode` keeps so an op can be inverted; its content is not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Len(usize),
    Text(String),
}

impl Deleted {
    /// Its length in code points (`dlen`).
    pub fn len(&self) -> usize {
        match self {
            Deleted::Len(n) => *n,
            Deleted::Text(s) => s.chars().count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Code points `start..end` of it, to its end without `end` (`dslice`).
    fn slice(&self, start: usize, end: Option<usize>) -> Deleted {
        match self {
            Deleted::Len(n) => Deleted::Len(end.map_or(*n, |end| end.min(*n)).saturating_sub(start)),
            Deleted::Text(s) => {
                let rest = s.chars().skip(start);
                Deleted::Text(match end {
                    Some(end) => rest.take(end.saturating_sub(start)).collect(),
                    None => rest.collect(),
                })
            }
        }
    }
}

/// One component: skip `n` code points, insert a text, or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Skip(usize),
    Insert(String),
    Delete(Deleted),
}

impl Component {
    /// `componentLength`: code points skipped, inserted or deleted.
    fn len(&self) -> usize {
        match self {
            Component::Skip(n) => *n,
            Component::Insert(s) => s.chars().count(),
            Component::Delete(d) => d.len(),
        }
    }
}

/// Which op goes first when both insert at one position (`'left'` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// An `ot-text-unicode` op: its components in order, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Op(pub Vec<Component>);

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_wire())
    }
}

/// `makeAppend`: drops an empty component, merges it into the last one of the same kind (two
/// deletes keep their text only when both have one), else pushes it.
fn append(op: &mut Vec<Component>, c: Component) {
    if c.len() == 0 {
        return;
    }
    match (op.last_mut(), c) {
        // Saturating: counts come from the network, and no text is long enough to tell.
        (Some(Component::Skip(last)), Component::Skip(n)) => *last = last.saturating_add(n),
        (Some(Component::Insert(last)), Component::Insert(s)) => last.push_str(&s),
        (Some(Component::Delete(last)), Component::Delete(d)) => {
            *last = match (&*last, d) {
                (Deleted::Text(a), Deleted::Text(b)) => Deleted::Text(format!("{a}{b}")),
                (a, b) => Deleted::Len(a.len().saturating_add(b.len())),
            }
        }
        (_, c) => op.push(c),
    }
}

/// `trim`: drops a trailing skip.
fn trim(mut op: Vec<Component>) -> Op {
    if matches!(op.last(), Some(Component::Skip(_))) {
        op.pop();
    }
    Op(op)
}

/// Which components `take` hands out whole, however long (`indivisableField`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whole {
    Inserts,
    Deletes,
}

/// `makeTake`: reads an op front to back, a component or part of one at a time.
struct Take<'a> {
    op: &'a [Component],
    idx: usize,
    /// Into the current component: a byte offset in an insert, code points otherwise.
    offset: usize,
}

impl<'a> Take<'a> {
    fn new(op: &'a Op) -> Self {
        Self { op: &op.0, idx: 0, offset: 0 }
    }

    fn peek(&self) -> Option<&'a Component> {
        self.op.get(self.idx)
    }

    /// `take(-1)`: the rest of the next component; `None` at the end.
    fn rest(&mut self) -> Option<Component> {
        let c = self.peek()?;
        let offset = std::mem::take(&mut self.offset);
        self.idx += 1;
        Some(match c {
            Component::Skip(n) => Component::Skip(n - offset),
            Component::Insert(s) => Component::Insert(s[offset..].to_owned()),
            Component::Delete(d) => Component::Delete(d.slice(offset, None)),
        })
    }

    /// `take(n, whole)`: up to `n` code points of the next component (all of it if `whole` says
    /// so); past the end, the op skips forever.
    fn take(&mut self, n: usize, whole: Whole) -> Component {
        let Some(c) = self.peek() else { return Component::Skip(n) };
        match c {
            Component::Skip(len) if len - self.offset > n => {
                self.offset += n;
                Component::Skip(n)
            }
            Component::Insert(s) if whole != Whole::Inserts && s[self.offset..].chars().count() > n => {
                let rest = &s[self.offset..];
                let end = rest.char_indices().nth(n).map_or(rest.len(), |(at, _)| at);
                self.offset += end;
                Component::Insert(rest[..end].to_owned())
            }
            Component::Delete(d) if whole != Whole::Deletes && d.len() - self.offset > n => {
                let part = d.slice(self.offset, Some(self.offset + n));
                self.offset += n;
                Component::Delete(part)
            }
            _ => self.rest().expect("not at the end"),
        }
    }
}

impl Op {
    /// `checkOp`: the errors `ot-text-unicode` throws, with its messages.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut last: Option<&Component> = None;
        for c in &self.0 {
            match c {
                Component::Delete(d) if d.is_empty() => bail!("Deletes must not be empty"),
                Component::Insert(s) if s.is_empty() => bail!("Inserts cannot be empty"),
                Component::Skip(0) => bail!("Skip components must be >0"),
                Component::Skip(_) if matches!(last, Some(Component::Skip(_))) => {
                    bail!("Adjacent skip components should be combined")
                }
                _ => {}
            }
            last = Some(c);
        }
        if matches!(last, Some(Component::Skip(_))) {
            bail!("Op has a trailing skip");
        }
        Ok(())
    }

    /// `normalize`: every component appended in turn (empty ones dropped, neighbours of a kind
    /// merged), then trimmed. Checks nothing, as in JavaScript.
    pub fn normalize(&self) -> Op {
        let mut out = Vec::with_capacity(self.0.len());
        for c in &self.0 {
            append(&mut out, c.clone());
        }
        trim(out)
    }

    /// `apply` on a string.
    pub fn apply(&self, text: &str) -> anyhow::Result<String> {
        let mut rope = Rope::from_str(text);
        self.apply_to_rope(&mut rope)?;
        Ok(rope.to_string())
    }

    /// `apply`, in place; the rope is left as it was on an error.
    pub fn apply_to_rope(&self, rope: &mut Rope) -> anyhow::Result<()> {
        self.check()?;
        // The string builder throws on a skip past the end and cuts a delete past it short.
        let mut left = rope.len_chars();
        for c in &self.0 {
            match c {
                Component::Skip(n) if *n > left => bail!("The op is too long for this document"),
                Component::Skip(n) => left -= n,
                Component::Delete(d) => left -= d.len().min(left),
                Component::Insert(_) => {}
            }
        }
        let mut at = 0;
        for c in &self.0 {
            match c {
                Component::Skip(n) => at += n,
                Component::Insert(s) => {
                    rope.insert(at, s);
                    at += s.chars().count();
                }
                Component::Delete(d) => rope.remove(at..at.saturating_add(d.len()).min(rope.len_chars())),
            }
        }
        Ok(())
    }

    /// `transform(op, other, side)`: this op, made to apply after `other`; on a tie between two
    /// inserts, this op's goes first on the `Left` side.
    pub fn transform(&self, other: &Op, side: Side) -> anyhow::Result<Op> {
        self.check()?;
        other.check()?;
        let mut out = Vec::new();
        let mut take = Take::new(self);
        for c2 in &other.0 {
            match c2 {
                Component::Skip(n) => {
                    let mut length = *n;
                    while length > 0 {
                        let c1 = take.take(length, Whole::Inserts);
                        if !matches!(c1, Component::Insert(_)) {
                            length -= c1.len();
                        }
                        append(&mut out, c1);
                    }
                }
                Component::Insert(s) => {
                    // The left insert goes first; else (and after it) the other's text is skipped.
                    if side == Side::Left && matches!(take.peek(), Some(Component::Insert(_))) {
                        append(&mut out, take.rest().expect("peeked"));
                    }
                    append(&mut out, Component::Skip(s.chars().count()));
                }
                Component::Delete(d) => {
                    let mut length = d.len();
                    while length > 0 {
                        match take.take(length, Whole::Inserts) {
                            Component::Skip(n) => length -= n,
                            c1 @ Component::Insert(_) => append(&mut out, c1),
                            // Already deleted by the other op.
                            Component::Delete(d1) => length -= d1.len(),
                        }
                    }
                }
            }
        }
        while let Some(c) = take.rest() {
            append(&mut out, c);
        }
        Ok(trim(out))
    }

    /// `compose(op, next)`: one op doing this one, then `next`.
    pub fn compose(&self, next: &Op) -> anyhow::Result<Op> {
        self.check()?;
        next.check()?;
        let mut out = Vec::new();
        let mut take = Take::new(self);
        for c2 in &next.0 {
            match c2 {
                Component::Skip(n) => {
                    let mut length = *n;
                    while length > 0 {
                        let chunk = take.take(length, Whole::Deletes);
                        if !matches!(chunk, Component::Delete(_)) {
                            length -= chunk.len();
                        }
                        append(&mut out, chunk);
                    }
                }
                Component::Insert(s) => append(&mut out, Component::Insert(s.clone())),
                Component::Delete(d) => {
                    let (length, mut offset) = (d.len(), 0);
                    while offset < length {
                        match take.take(length - offset, Whole::Deletes) {
                            Component::Skip(n) => {
                                append(&mut out, Component::Delete(d.slice(offset, Some(offset + n))));
                                offset += n;
                            }
                            // Text this op inserted: the two cancel out.
                            Component::Insert(s) => offset += s.chars().count(),
                            chunk @ Component::Delete(_) => append(&mut out, chunk),
                        }
                    }
                }
            }
        }
        while let Some(c) = take.rest() {
            append(&mut out, c);
        }
        Ok(trim(out))
    }

    /// Reads the wire form: numbers skip, strings insert, `{"d": n}` or `{"d": "str"}` delete. The
    /// op is taken as it comes (see [`Op::check`]).
    pub fn from_wire(op: &Value) -> anyhow::Result<Op> {
        let components = op.as_array().with_context(|| format!("an op is an array, not {op}"))?;
        let parse = |c: &Value| {
            Some(match c {
                Value::Number(n) => Component::Skip(usize::try_from(n.as_u64()?).ok()?),
                Value::String(s) => Component::Insert(s.clone()),
                Value::Object(o) => Component::Delete(match o.get("d")? {
                    Value::Number(n) => Deleted::Len(usize::try_from(n.as_u64()?).ok()?),
                    Value::String(s) => Deleted::Text(s.clone()),
                    _ => return None,
                }),
                _ => return None,
            })
        };
        let parsed = components.iter().map(|c| parse(c).with_context(|| format!("unknown component {c}")));
        Ok(Op(parsed.collect::<anyhow::Result<_>>()?))
    }

    /// The wire form, component for component.
    pub fn to_wire(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|c| match c {
                    Component::Skip(n) => json!(n),
                    Component::Insert(s) => json!(s),
                    Component::Delete(Deleted::Len(n)) => json!({"d": n}),
                    Component::Delete(Deleted::Text(s)) => json!({"d": s}),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn op(wire: Value) -> Op {
        Op::from_wire(&wire).unwrap()
    }

    // The expected values below are what node gives with ot-text-unicode 4.0.0.

    #[test]
    fn normalize_drops_empty_components_merges_neighbours_and_trims() {
        let messy = op(json!([0, "", 3, 2, "a", "🙂", {"d": 0}, {"d": "🙂"}, {"d": "x"}, 4]));
        assert_eq!(messy.normalize().to_wire(), json!([5, "a🙂", {"d": "🙂x"}]));
        // A counted delete merged with a text one counts the text's code points, not its bytes.
        assert_eq!(op(json!([{"d": "🙂é"}, {"d": 2}, 1, 0])).normalize().to_wire(), json!([{"d": 4}]));
        assert_eq!(op(json!([0])).normalize(), Op::default());
    }

    #[test]
    fn apply_counts_code_points() {
        assert_eq!(op(json!([1, {"d": 1}, "é"])).apply("a🙂b").unwrap(), "aéb");
        assert_eq!(op(json!([2, "x"])).apply("a🙂b").unwrap(), "a🙂xb");
        assert_eq!(op(json!([3, "!"])).apply("a🙂b").unwrap(), "a🙂b!");
        let err = op(json!([4, "!"])).apply("a🙂b").unwrap_err();
        assert_eq!(err.to_string(), "The op is too long for this document");
        // A delete past the end removes what is left; a delete's text is not compared.
        assert_eq!(op(json!([1, {"d": 5}])).apply("a🙂b").unwrap(), "a");
        assert_eq!(op(json!([{"d": "zz"}])).apply("ab").unwrap(), "");
        let mut rope = Rope::from_str("ab");
        assert!(op(json!([{"d": 1}, 2, "x"])).apply_to_rope(&mut rope).is_err());
        assert_eq!(rope.to_string(), "ab", "untouched on an error");
    }

    /// Counts come from the network: one no text could hold neither wraps nor panics.
    #[test]
    fn huge_counts_saturate() {
        let huge = u64::MAX;
        assert_eq!(op(json!([1, {"d": huge}])).apply("abc").unwrap(), "a");
        assert_eq!(op(json!([{"d": huge}, {"d": 5}])).normalize().to_wire(), json!([{"d": huge}]));
        assert_eq!(
            op(json!([2, {"d": 1}])).apply("a").unwrap_err().to_string(),
            "The op is too long for this document"
        );
    }

    #[test]
    fn check_refuses_what_ot_text_unicode_refuses() {
        let refused = |wire: Value| op(wire).check().unwrap_err().to_string();
        assert_eq!(refused(json!([1])), "Op has a trailing skip");
        assert_eq!(refused(json!([1, 2, "a"])), "Adjacent skip components should be combined");
        assert_eq!(refused(json!([0, "a"])), "Skip components must be >0");
        assert_eq!(refused(json!([""])), "Inserts cannot be empty");
        assert_eq!(refused(json!([{"d": ""}])), "Deletes must not be empty");
        assert!(
            op(json!(["a", "b", {"d": 1}, {"d": "c"}])).check().is_ok(),
            "neighbours of a kind are valid"
        );
        assert!(Op::from_wire(&json!([{"x": 1}])).is_err());
        assert!(Op::from_wire(&json!([-1])).is_err());
    }

    #[test]
    fn compose_and_transform_split_at_code_points() {
        let compose = |a: Value, b: Value| op(a).compose(&op(b)).unwrap().to_wire();
        assert_eq!(compose(json!(["🙂é🙂"]), json!([1, {"d": 1}])), json!(["🙂🙂"]));
        assert_eq!(compose(json!([{"d": "a🙂b"}]), json!(["x"])), json!(["x", {"d": "a🙂b"}]));
        assert_eq!(
            compose(json!([1, "🙂"]), json!([{"d": "QR"}, 1, {"d": 1}])),
            json!([{"d": "Q"}, 1, {"d": 1}])
        );
        let transform = |a: Value, b: Value, side| op(a).transform(&op(b), side).unwrap().to_wire();
        let split = transform(json!([{"d": "a🙂b"}]), json!([2, "x"]), Side::Left);
        assert_eq!(split, json!([{"d": "a🙂"}, 1, {"d": "b"}]));
        assert_eq!(transform(json!([2, "🙂é"]), json!([1, {"d": 2}, "z"]), Side::Left), json!([1, "🙂é"]));
        assert_eq!(transform(json!([1, "a"]), json!([1, "b"]), Side::Left), json!([1, "a"]));
        assert_eq!(transform(json!([1, "a"]), json!([1, "b"]), Side::Right), json!([2, "a"]));
        // Only the first of two neighbouring inserts goes left of the other op's.
        assert_eq!(transform(json!(["a", "b"]), json!(["c"]), Side::Left), json!(["a", 1, "b"]));
    }

    /// The tie Tandem's `Operation` took the other way: a committed op that deletes "f" then inserts
    /// "x", against an op in flight inserting "y" just after the "f".
    #[test]
    fn delete_then_insert_keeps_its_order_against_an_insert_after_the_deleted_text() {
        let text = "abcdefgh";
        let (committed, own) = (op(json!([5, {"d": 1}, "x"])), op(json!([6, "y"])));
        let server = own.transform(&committed, Side::Left).unwrap();
        let client = committed.transform(&own, Side::Right).unwrap();
        assert_eq!(client.to_wire(), json!([5, {"d": 1}, 1, "x"]));
        assert_eq!(server.apply(&committed.apply(text).unwrap()).unwrap(), "abcdeyxgh");
        assert_eq!(client.apply(&own.apply(text).unwrap()).unwrap(), "abcdeyxgh");
        // The other order transforms to the other text (as ot-text-unicode has it too).
        let swapped = op(json!([5, "x", {"d": 1}])).transform(&own, Side::Right).unwrap();
        assert_eq!(swapped.apply(&own.apply(text).unwrap()).unwrap(), "abcdexygh");
    }

    /// A random normalized op on a text of `len` code points, and the length it leaves. (Not
    /// normalized, ops may diverge in ot-text-unicode itself: `["a", "b"]` and `["c"]`.)
    fn random_op(rng: &mut SmallRng, len: usize) -> (Op, usize) {
        let (mut out, mut at, mut after) = (Vec::new(), 0, len);
        while rng.gen_bool(0.75) {
            let n = rng.gen_range(1..=3);
            match rng.gen_range(0..3) {
                0 if at < len => {
                    let n = n.min(len - at);
                    append(&mut out, Component::Skip(n));
                    at += n;
                }
                1 if at < len => {
                    let n = n.min(len - at);
                    append(&mut out, Component::Delete(Deleted::Len(n)));
                    (at, after) = (at + n, after - n);
                }
                _ => {
                    let s = ["a", "é", "🙂x"][rng.gen_range(0..3)];
                    after += s.chars().count();
                    append(&mut out, Component::Insert(s.to_owned()));
                }
            }
        }
        (trim(out), after)
    }

    /// Both sides of a concurrent pair end at one text (the server transforms the later op on the
    /// left, a client its own op in flight), and composing is applying one op after the other.
    #[test]
    fn transform_converges_and_compose_applies_in_turn() {
        let seed = tandem_integration_tests::seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..3000 {
            let len = rng.gen_range(0..8);
            let text: String = (0..len).map(|i| ['a', 'b', 'ü', '🙂'][i % 4]).collect();
            let ((a, a_len), (b, _)) = (random_op(&mut rng, len), random_op(&mut rng, len));
            let context = format!("seed {seed}: {a} and {b} on {text:?}");
            let server = a.transform(&b, Side::Left).unwrap().apply(&b.apply(&text).unwrap()).unwrap();
            let client = b.transform(&a, Side::Right).unwrap().apply(&a.apply(&text).unwrap()).unwrap();
            assert_eq!(server, client, "{context}");
            let (c, _) = random_op(&mut rng, a_len);
            let in_turn = c.apply(&a.apply(&text).unwrap()).unwrap();
            assert_eq!(a.compose(&c).unwrap().apply(&text).unwrap(), in_turn, "{context} then {c}");
            assert_eq!(Op::from_wire(&a.to_wire()).unwrap(), a, "{context}");
        }
    }
}
