//! Seeded randomized run of undo and redo: one [`DocumentClient`] ("ours") against a model of the
//! server, with other clients' edits based on any of the last few versions (so some are concurrent
//! with ours and are transformed by the server), random delivery in both directions, typing runs,
//! undo, redo and group breaks; at the end ours undoes every step it has, then everything settles.
//!
//! Characters tell who made them: ours types only [`OURS`]; the initial text and the other clients'
//! inserts use characters that occur once in the whole run, so each of them can be followed.
//! Properties:
//!
//! 1. undo right after a step, with no remote op since the step began, restores the exact text from
//!    before the step;
//! 2. undo right after redo, or redo right after undo, restores the text from before the first;
//! 3. after undoing every step: none of our characters is left; every other character is there
//!    unless another client's op removed it from our text (so undo never removes another client's
//!    text and never resurrects what another client's op removed here; what our own edit removed
//!    comes back even if another client deleted it concurrently, which happens in these runs and is
//!    counted); characters that were in our text together keep their order;
//! 4. our text equals the server's whenever nothing is in flight, and at the end.
//!
//! Every run prints its seed; `TANDEM_SEED=<n> cargo test -p tandem-client undo_sim` replays one run.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_ot::{Component, Operation};

use super::*;

/// The characters ours types.
const OURS: &[char] = &['a', 'b', 'c', ' ', 'é', '😀'];

fn is_ours(c: char) -> bool {
    OURS.contains(&c)
}

/// What the server sends ours.
enum Down {
    Op { version: u64, op: Operation },
    Ack { seq: u64, version: u64 },
}

#[derive(Debug, Default)]
struct Coverage {
    undos: u64,
    redos: u64,
    /// How often properties 1 and 2 were checked.
    undos_after_a_step: u64,
    undo_redo_pairs: u64,
    joined_edits: u64,
    concurrent_remote_ops: u64,
    resurrected: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Undo,
    Redo,
}

struct Sim {
    rng: SmallRng,
    now: Instant,
    /// `texts[v]` is the server text at version `v`; `committed[v - 1]` the op of version `v`.
    texts: Vec<String>,
    committed: Vec<Operation>,
    ours: DocumentClient,
    up: VecDeque<OutgoingOp>,
    down: VecDeque<Down>,
    caret: usize,
    next_unique: u32,
    /// Every other character that was ever in our text, and those another client's op removed.
    seen: HashSet<char>,
    removed_by_others: HashSet<char>,
    /// Characters that another client's committed op removed from the server text.
    removed_on_server: HashSet<char>,
    /// The text before the top undo step began, while no remote op came since (property 1).
    step_start: Option<String>,
    /// The last undo or redo and the text before it, while nothing else happened since (property 2).
    last: Option<(Last, String)>,
    /// The other characters of our text after each step, in order (for the order of property 3).
    snapshots: Vec<Vec<char>>,
    /// Whether other clients edit at all in this run.
    others: bool,
    coverage: Coverage,
    seed: u64,
}

impl Sim {
    fn new(seed: u64, initial_len: usize, others: bool) -> Self {
        let rng = SmallRng::seed_from_u64(seed);
        let mut sim = Sim {
            rng,
            now: Instant::now(),
            texts: Vec::new(),
            committed: Vec::new(),
            ours: DocumentClient::new(DocId::parse("sim").expect("valid id"), 0, ""),
            up: VecDeque::new(),
            down: VecDeque::new(),
            caret: 0,
            next_unique: 0,
            seen: HashSet::new(),
            removed_by_others: HashSet::new(),
            removed_on_server: HashSet::new(),
            step_start: None,
            last: None,
            snapshots: Vec::new(),
            others,
            coverage: Coverage::default(),
            seed,
        };
        let initial = sim.unique_text(initial_len);
        sim.seen.extend(initial.chars());
        sim.ours.reset(0, &initial);
        sim.texts.push(initial);
        sim
    }

    fn version(&self) -> u64 {
        self.committed.len() as u64
    }

    fn server_text(&self) -> &str {
        self.texts.last().expect("the initial text is version 0")
    }

    /// `n` characters never used before: CJK, one in three outside the Basic Multilingual Plane.
    fn unique_text(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                let k = self.next_unique;
                self.next_unique += 1;
                let base = if k % 3 == 0 { 0x20000 } else { 0x4E00 };
                char::from_u32(base + k).expect("a valid scalar value")
            })
            .collect()
    }

    fn ours_text(&self) -> String {
        self.ours.text()
    }

    fn step(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=34 => self.local_edit(),
            35..=44 => self.undo(),
            45..=51 => self.redo(),
            52..=54 => self.ours.break_undo_group(),
            55..=66 if self.others => self.remote_edit(),
            55..=66 => self.deliver_down(),
            67..=81 => self.deliver_up(),
            _ => self.deliver_down(),
        }
        self.observe();
    }

    /// Typing at the caret, Backspace, Delete, or a replacement anywhere.
    fn local_edit(&mut self) {
        let len = self.ours.len_chars();
        self.caret = self.caret.min(len);
        let (pos, delete, insert) = match self.rng.gen_range(0..10) {
            0..=3 => (self.caret, 0, self.ours_chars(1..3)),
            4..=5 if self.caret > 0 => (self.caret - 1, 1, String::new()),
            6 if self.caret < len => (self.caret, 1, String::new()),
            _ => {
                let pos = self.rng.gen_range(0..=len);
                let delete = self.rng.gen_range(0..=(len - pos).min(3));
                (pos, delete, self.ours_chars(0..3))
            }
        };
        if delete == 0 && insert.is_empty() {
            return;
        }
        self.now += Duration::from_millis(self.rng.gen_range(0..1500));
        let before = self.ours_text();
        let steps = self.ours.undo_len();
        let op = Operation::from_patch(len, pos, delete, &insert).expect("patch fits");
        let out = self.ours.local_edit_at(op, self.now).expect("local edit fits");
        self.up.extend(out);
        self.caret = pos + insert.chars().count();
        assert!(
            self.ours.undo_len() < UndoOptions::DEFAULT_DEPTH,
            "seed {}: runs stay under the depth",
            self.seed
        );
        if self.ours.undo_len() > steps {
            self.step_start = Some(before);
        } else {
            self.coverage.joined_edits += 1;
        }
        assert!(!self.ours.can_redo(), "seed {}: a new edit clears the redo stack", self.seed);
        self.last = None;
    }

    fn ours_chars(&mut self, n: std::ops::Range<usize>) -> String {
        let n = self.rng.gen_range(n);
        (0..n).map(|_| OURS[self.rng.gen_range(0..OURS.len())]).collect()
    }

    fn undo(&mut self) {
        let before = self.ours_text();
        let Some(edit) = self.ours.undo().expect("undo fits") else { return };
        self.coverage.undos += 1;
        self.up.extend(edit.outgoing);
        let text = self.ours_text();
        if let Some(start) = self.step_start.take() {
            self.coverage.undos_after_a_step += 1;
            assert_eq!(text, start, "seed {}: property 1, undo right after a step", self.seed);
        }
        if let Some((Last::Redo, before_redo)) = &self.last {
            self.coverage.undo_redo_pairs += 1;
            assert_eq!(&text, before_redo, "seed {}: property 2, undo after redo", self.seed);
        }
        self.last = Some((Last::Undo, before));
    }

    fn redo(&mut self) {
        let before = self.ours_text();
        let Some(edit) = self.ours.redo().expect("redo fits") else { return };
        self.coverage.redos += 1;
        self.up.extend(edit.outgoing);
        if let Some((Last::Undo, before_undo)) = &self.last {
            self.coverage.undo_redo_pairs += 1;
            assert_eq!(&self.ours_text(), before_undo, "seed {}: property 2, redo after undo", self.seed);
        }
        self.step_start = None;
        self.last = Some((Last::Redo, before));
    }

    /// Another client's edit, made on one of the last few versions and transformed by the server
    /// against what was committed since, as the sequencer does.
    fn remote_edit(&mut self) {
        let version = self.version() as usize;
        let base = version - self.rng.gen_range(0..=version.min(3));
        let len = self.texts[base].chars().count();
        let pos = self.rng.gen_range(0..=len);
        let delete = self.rng.gen_range(0..=(len - pos).min(3));
        let count = self.rng.gen_range(0..3);
        let insert = self.unique_text(count);
        let mut op = Operation::from_patch(len, pos, delete, &insert).expect("patch fits");
        self.coverage.concurrent_remote_ops += u64::from(base < version);
        for committed in &self.committed[base..] {
            op = Operation::transform(&op, committed).expect("server transform").0;
        }
        self.removed_on_server.extend(deleted_chars(&op, self.server_text()));
        self.commit(op.clone());
        self.down.push_back(Down::Op { version: self.version(), op });
    }

    fn commit(&mut self, op: Operation) {
        let text = op.apply(self.server_text()).expect("committed op fits the server text");
        self.texts.push(text);
        self.committed.push(op);
    }

    /// The server takes our oldest op.
    fn deliver_up(&mut self) {
        let Some(out) = self.up.pop_front() else { return };
        let mut op = out.op;
        for committed in &self.committed[out.base as usize..] {
            op = Operation::transform(&op, committed).expect("server transform").0;
        }
        self.commit(op);
        self.down.push_back(Down::Ack { seq: out.seq, version: self.version() });
    }

    /// Ours takes the oldest message from the server.
    fn deliver_down(&mut self) {
        match self.down.pop_front() {
            None => {}
            Some(Down::Ack { seq, version }) => {
                let out = self.ours.on_ack(seq, version).expect("ack of the op in flight");
                self.up.extend(out);
            }
            Some(Down::Op { version, op }) => {
                let before = self.ours_text();
                let applied = self.ours.on_remote_op(version, &op).expect("in-order delivery");
                self.removed_by_others.extend(deleted_chars(&applied, &before));
                self.seen.extend(self.ours_text().chars().filter(|c| !is_ours(*c)));
                self.caret = applied.transform_index(self.caret);
                self.step_start = None;
                self.last = None;
            }
        }
    }

    /// Checks property 4 when nothing is under way and records the order of the other characters.
    fn observe(&mut self) {
        let text = self.ours_text();
        if self.ours.is_synced() && self.up.is_empty() && self.down.is_empty() {
            assert_eq!(text, self.server_text(), "seed {}: property 4, synced text", self.seed);
        }
        let others: Vec<char> = text.chars().filter(|c| !is_ours(*c)).collect();
        if self.snapshots.last() != Some(&others) {
            self.snapshots.push(others);
        }
    }

    /// Ours undoes every step it has, while messages and a few remote edits still come and go.
    fn undo_everything(&mut self) {
        let mut remote_budget = 10;
        while self.ours.can_undo() {
            match self.rng.gen_range(0..100) {
                0..=59 => self.undo(),
                60..=74 => self.deliver_up(),
                75..=94 => self.deliver_down(),
                _ if self.others && remote_budget > 0 => {
                    remote_budget -= 1;
                    self.remote_edit();
                }
                _ => {}
            }
            self.observe();
        }
    }

    fn settle(&mut self) {
        while !self.up.is_empty() || !self.down.is_empty() {
            self.deliver_up();
            self.deliver_down();
            self.observe();
        }
    }

    /// Properties 3 and 4 at the end.
    fn check_end(&mut self) {
        let seed = self.seed;
        assert!(self.ours.is_synced(), "seed {seed}: synced");
        assert_eq!(self.ours.version(), self.version(), "seed {seed}: version");
        let text = self.ours_text();
        assert_eq!(text, self.server_text(), "seed {seed}: property 4, text at the end");
        assert!(!text.chars().any(is_ours), "seed {seed}: property 3, our characters are left in {text:?}");
        let present: HashSet<char> = text.chars().collect();
        let expected: HashSet<char> = self.seen.difference(&self.removed_by_others).copied().collect();
        assert_eq!(present, expected, "seed {seed}: property 3, the other characters in {text:?}");
        let position: std::collections::HashMap<char, usize> =
            text.chars().enumerate().map(|(i, c)| (c, i)).collect();
        for snapshot in &self.snapshots {
            let kept: Vec<usize> = snapshot.iter().filter_map(|c| position.get(c).copied()).collect();
            assert!(
                kept.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: property 3, order of {snapshot:?} in {text:?}"
            );
        }
        self.coverage.resurrected += present.intersection(&self.removed_on_server).count() as u64;
    }
}

/// The characters of `text` that `op` deletes.
fn deleted_chars(op: &Operation, text: &str) -> Vec<char> {
    let mut chars = text.chars();
    let mut deleted = Vec::new();
    for component in op.components() {
        match component {
            Component::Retain(n) => {
                chars.by_ref().take(*n).for_each(drop);
            }
            Component::Delete(n) => deleted.extend(chars.by_ref().take(*n)),
            Component::Insert(_) => {}
        }
    }
    deleted
}

/// One run; every fifth seed has no other client, and then undoing everything must give back exactly
/// the initial text.
fn run(seed: u64, steps: usize) -> Coverage {
    eprintln!("undo simulation seed {seed} (replay with TANDEM_SEED={seed})");
    let others = seed % 5 != 0;
    let mut sim = Sim::new(seed, (seed % 7) as usize, others);
    let initial = sim.server_text().to_owned();
    for _ in 0..steps {
        sim.step();
    }
    sim.undo_everything();
    sim.settle();
    sim.check_end();
    if !others {
        assert_eq!(sim.ours_text(), initial, "seed {seed}: alone, undoing everything restores the start");
    }
    sim.coverage
}

#[test]
fn undo_and_redo_keep_their_properties_under_random_interleavings() {
    if let Some(seed) = std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed, 300);
        return;
    }
    let base: u64 = rand::random::<u32>().into();
    let mut total = Coverage::default();
    for i in 0..300 {
        let c = run(base + i, 300);
        total.undos += c.undos;
        total.redos += c.redos;
        total.undos_after_a_step += c.undos_after_a_step;
        total.undo_redo_pairs += c.undo_redo_pairs;
        total.joined_edits += c.joined_edits;
        total.concurrent_remote_ops += c.concurrent_remote_ops;
        total.resurrected += c.resurrected;
    }
    eprintln!("{total:?}");
    assert!(total.undos > 0 && total.redos > 0 && total.joined_edits > 0, "{total:?}");
    assert!(total.undos_after_a_step > 0 && total.undo_redo_pairs > 0, "{total:?}");
    assert!(total.concurrent_remote_ops > 0, "{total:?}");
    assert!(total.resurrected > 0, "concurrent deletes of the same text never came up: {total:?}");
}
