//! The recent versions of one document as presence needs them: the length of each version's text,
//! and how to move a position from an older version to the newest. Ops are kept as their shape
//! (counts only, no inserted text), so a window of a thousand versions costs a few tens of KiB
//! whatever was typed.

use std::collections::VecDeque;

use tandem_ot::{Component, Operation};

/// An op reduced to what moving a position needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    steps: Vec<Step>,
    base_len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Retain(u64),
    Insert(u64),
    Delete(u64),
}

impl Shape {
    pub(crate) fn of(op: &Operation) -> Self {
        let steps = op
            .components()
            .iter()
            .map(|c| match c {
                Component::Retain(n) => Step::Retain(*n as u64),
                Component::Insert(s) => Step::Insert(s.chars().count() as u64),
                Component::Delete(n) => Step::Delete(*n as u64),
            })
            .collect();
        Self { steps, base_len: op.base_len() as u64 }
    }

    /// [`Operation::transform_index`] on the shape: an insert at the position pushes it right, a
    /// delete over it pulls it to the start of the deleted range.
    pub(crate) fn transform_index(&self, index: u64) -> u64 {
        let mut remaining = index.min(self.base_len);
        let mut moved = remaining;
        for step in &self.steps {
            match *step {
                Step::Retain(n) => {
                    if n > remaining {
                        break;
                    }
                    remaining -= n;
                }
                Step::Insert(n) => moved += n,
                Step::Delete(n) => {
                    moved -= remaining.min(n);
                    if n > remaining {
                        break;
                    }
                    remaining -= n;
                }
            }
        }
        moved
    }
}

/// The versions after `first` up to `last`, each with the shape of the op that made it, and the
/// length of every text in between.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// The oldest version whose length is known (the version before the oldest kept op).
    first: u64,
    first_len: u64,
    /// Shapes of versions `first + 1 ..= last`, oldest first.
    ops: VecDeque<Shape>,
    last_len: u64,
    /// Most ops kept; older ones are dropped.
    capacity: usize,
}

impl Window {
    /// A window at `version`, whose text is `len` characters, keeping up to `capacity` ops.
    pub(crate) fn new(version: u64, len: u64, capacity: usize) -> Self {
        Self { first: version, first_len: len, ops: VecDeque::new(), last_len: len, capacity }
    }

    /// The newest version.
    pub(crate) fn last(&self) -> u64 {
        self.first + self.ops.len() as u64
    }

    /// The oldest version this window can move a position from.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Adds the next version. `target_len` is its text's length.
    pub(crate) fn push(&mut self, shape: Shape, target_len: u64) {
        self.ops.push_back(shape);
        self.last_len = target_len;
        while self.ops.len() > self.capacity {
            self.ops.pop_front();
            self.first += 1;
            self.first_len = self.ops.front().map_or(self.last_len, |next| next.base_len);
        }
    }

    /// Adds older versions in front: `shapes` made versions `first - shapes.len() + 1 ..= first`,
    /// oldest first. Past the capacity nothing more is kept.
    pub(crate) fn prepend(&mut self, shapes: Vec<Shape>) {
        let room = self.capacity.saturating_sub(self.ops.len());
        let skip = shapes.len().saturating_sub(room);
        for shape in shapes.into_iter().skip(skip).rev() {
            self.first -= 1;
            self.first_len = shape.base_len;
            self.ops.push_front(shape);
        }
    }

    /// The length of the text of `version`, if the window covers it.
    pub(crate) fn len_at(&self, version: u64) -> Option<u64> {
        if version < self.first || version > self.last() {
            return None;
        }
        if version == self.last() {
            return Some(self.last_len);
        }
        if version == self.first {
            return Some(self.first_len);
        }
        // The text of `version` is the base text of the op that made `version + 1`.
        Some(self.ops[(version - self.first) as usize].base_len)
    }

    /// Moves `index` in the text of `version` to the newest version; `None` if the window does not
    /// cover `version`.
    pub(crate) fn to_last(&self, version: u64, index: u64) -> Option<u64> {
        if version < self.first || version > self.last() {
            return None;
        }
        let skip = (version - self.first) as usize;
        Some(self.ops.iter().skip(skip).fold(index, |index, shape| shape.transform_index(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: enough randomness for shapes, without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        }
    }

    fn random_op(rng: &mut Rng, len: usize) -> Operation {
        let mut op = Operation::new();
        let mut at = 0;
        loop {
            match rng.below(3) {
                0 if at < len => {
                    let n = 1 + rng.below(len - at);
                    op.retain(n);
                    at += n;
                }
                1 if at < len => {
                    let n = 1 + rng.below(len - at);
                    op.delete(n);
                    at += n;
                }
                _ => {
                    op.insert(&"é".repeat(1 + rng.below(3)));
                }
            }
            if at >= len && rng.below(2) == 0 {
                return op;
            }
        }
    }

    #[test]
    fn shapes_move_positions_like_the_ot_crate() {
        let seed = std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }) | 1;
        println!("seed {seed} (replay with TANDEM_SEED={seed})");
        let mut rng = Rng(seed);
        for _ in 0..2000 {
            let len = rng.below(12);
            let op = random_op(&mut rng, len);
            let shape = Shape::of(&op);
            for index in 0..=len + 1 {
                assert_eq!(
                    shape.transform_index(index as u64),
                    op.transform_index(index) as u64,
                    "{op:?} at {index}, seed {seed}"
                );
            }
        }
    }

    #[test]
    fn a_window_knows_lengths_and_moves_positions_to_the_newest_version() {
        // Version 3: "abc"; 4: "abXc"; 5: "Xc".
        let mut window = Window::new(3, 3, 2);
        let v4 = Operation::from_json(&serde_json::json!([2, "X", 1])).unwrap();
        let v5 = Operation::from_json(&serde_json::json!([-2, 2])).unwrap();
        window.push(Shape::of(&v4), 4);
        window.push(Shape::of(&v5), 2);
        assert_eq!((window.first(), window.last()), (3, 5));
        assert_eq!([3, 4, 5].map(|v| window.len_at(v)), [Some(3), Some(4), Some(2)]);
        assert_eq!(window.len_at(6), None);
        assert_eq!(window.to_last(3, 3), Some(2), "the end of abc is the end of Xc");
        assert_eq!(window.to_last(3, 2), Some(1), "an insert at the caret pushes it right");
        assert_eq!(window.to_last(5, 1), Some(1));
        assert_eq!(window.to_last(2, 0), None);
        // A third op pushes the oldest out.
        window.push(Shape::of(&Operation::identity(2)), 2);
        assert_eq!((window.first(), window.last()), (4, 6));
        assert_eq!(window.len_at(4), Some(4));
        // Older versions read from the store go in front, up to the capacity.
        let mut window = Window::new(4, 4, 3);
        let v3 = Operation::from_json(&serde_json::json!([2, "c"])).unwrap();
        window.prepend(vec![Shape::of(&v3), Shape::of(&v4)]);
        assert_eq!((window.first(), window.len_at(2), window.len_at(3)), (2, Some(2), Some(3)));
        assert_eq!(window.to_last(2, 2), Some(4), "both inserts land at the caret and push it");
        window.prepend(vec![Shape::of(&Operation::identity(2))]);
        assert_eq!((window.first(), window.len_at(1)), (1, Some(2)));
        window.prepend(vec![Shape::of(&Operation::identity(2))]);
        assert_eq!(window.first(), 1, "nothing past the capacity is kept");
    }
}
