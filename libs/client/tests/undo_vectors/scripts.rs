//! The scripts of the undo vectors: written by hand, one per rule, with the texts the rules give
//! worked out by hand; and random ones from a fixed seed against a model server.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tandem_client::{DocId, DocumentClient, Operation, OutgoingOp, UndoOptions};

use super::{op, replay, with_steps};

/// The seed of the random scripts; changing it rewrites the file.
pub const SEED: u64 = 0x7a4d_0002;

/// A hand-written script: inputs, and texts worked out by hand for some of its steps.
pub struct Script {
    pub name: &'static str,
    text: &'static str,
    version: u64,
    depth: usize,
    window_ms: u64,
    steps: Vec<Value>,
    /// Step index and the text after it, worked out by hand.
    pub expected: Vec<(usize, &'static str)>,
}

fn script(name: &'static str, text: &'static str) -> Script {
    Script {
        name,
        text,
        version: 0,
        depth: UndoOptions::DEFAULT_DEPTH,
        window_ms: UndoOptions::DEFAULT_GROUP_WINDOW.as_millis() as u64,
        steps: Vec::new(),
        expected: Vec::new(),
    }
}

impl Script {
    fn push(mut self, step: Value) -> Self {
        self.steps.push(step);
        self
    }
    fn edit(self, op: Value, at: u64) -> Self {
        self.push(json!({"do": "edit", "op": op, "at": at}))
    }
    fn remote(self, version: u64, op: Value) -> Self {
        self.push(json!({"do": "remote", "version": version, "op": op}))
    }
    fn ack(self, seq: u64, version: u64) -> Self {
        self.push(json!({"do": "ack", "seq": seq, "version": version}))
    }
    fn undo(self) -> Self {
        self.push(json!({"do": "undo"}))
    }
    fn redo(self) -> Self {
        self.push(json!({"do": "redo"}))
    }
    fn brk(self) -> Self {
        self.push(json!({"do": "break"}))
    }
    fn reset(self, version: u64, text: &str) -> Self {
        self.push(json!({"do": "reset", "version": version, "text": text}))
    }
    /// The text after the last step so far.
    fn then(mut self, text: &'static str) -> Self {
        self.expected.push((self.steps.len() - 1, text));
        self
    }

    pub fn scenario(&self) -> Value {
        json!({
            "name": self.name, "text": self.text, "version": self.version,
            "depth": self.depth, "window_ms": self.window_ms, "steps": self.steps,
        })
    }
}

pub fn hand_written() -> Vec<Script> {
    vec![
        script("a typing run is one step; redo brings it back; a new edit clears redo", "ab")
            .edit(json!([2, "c"]), 0)
            .edit(json!([3, "d"]), 300)
            .edit(json!([4, "e"]), 600)
            .undo()
            .then("ab")
            .redo()
            .then("abcde")
            .undo()
            .edit(json!(["x", 2]), 700)
            .then("xab")
            .redo()
            .then("xab"),
        script("a pause longer than the window, a break or an edit elsewhere starts a new step", "")
            .edit(json!(["a"]), 0)
            .edit(json!([1, "b"]), 1001)
            .edit(json!([2, "c"]), 1002)
            .brk()
            .edit(json!([3, "d"]), 1003)
            .edit(json!(["e", 4]), 1004)
            .undo()
            .then("abcd")
            .undo()
            .then("abc")
            .undo()
            .then("a")
            .undo()
            .then("")
            .undo()
            .then(""),
        script("Backspace and Delete runs are one step each; typing after deleting is another", "hello")
            .edit(json!([4, -1]), 0)
            .edit(json!([3, -1]), 100)
            .edit(json!([-1, 2]), 200)
            .edit(json!([-1, 1]), 300)
            .then("l")
            .edit(json!(["p", 1]), 400)
            .undo()
            .then("l")
            .undo()
            .then("hel")
            .undo()
            .then("hello"),
        script("undo and redo are sent like any edit, with the next seq", "ab")
            .edit(json!([2, "c"]), 0)
            .ack(1, 1)
            .undo()
            .then("ab")
            .ack(2, 2)
            .redo()
            .then("abc")
            .ack(3, 3),
        script("an undo while an op is in flight waits in the buffer", "ab")
            .edit(json!([2, "c"]), 0)
            .brk()
            .edit(json!([3, "d"]), 10)
            .undo()
            .then("abc")
            .ack(1, 1),
        script("undoing an insert keeps what another client typed inside it", "")
            .edit(json!(["hello"]), 0)
            .ack(1, 1)
            .remote(2, json!([2, "X", 3]))
            .undo()
            .then("X"),
        script("undoing an insert does not delete twice", "")
            .edit(json!(["hello"]), 0)
            .ack(1, 1)
            .remote(2, json!([1, -3, 1]))
            .undo()
            .then(""),
        script("undoing a delete puts the text back ahead of an insert at the same place", "abcd")
            .edit(json!([1, -2, 1]), 0)
            .ack(1, 1)
            .remote(2, json!([1, "X", 1]))
            .undo()
            .then("abcXd"),
        script("text typed concurrently inside a deleted range ends up after the restored text", "abc")
            .edit(json!([-3]), 0)
            .remote(1, json!([1, "Z", 2]))
            .then("Z")
            .ack(1, 2)
            .undo()
            .then("abcZ"),
        script("what another client's op removed does not come back", "abc")
            .edit(json!([-1, 2]), 0)
            .ack(1, 1)
            .remote(2, json!([-1, 1]))
            .undo()
            .then("ac"),
        script("what both deleted concurrently comes back (theirs committed first)", "abc")
            .edit(json!([-3]), 0)
            .remote(1, json!([1, -1, 1]))
            .ack(1, 2)
            .undo()
            .then("abc"),
        script("what both deleted concurrently comes back (ours committed first)", "abc")
            .edit(json!([-3]), 0)
            .ack(1, 1)
            .remote(2, json!([]))
            .undo()
            .then("abc"),
        script("remote ops while ours is in flight move the undo step too", "ab")
            .edit(json!([1, "X", 1]), 0)
            .remote(1, json!([1, "Y", 1]))
            .then("aXYb")
            .undo()
            .then("aYb")
            .ack(1, 2),
        script("the redo stack follows remote ops", "")
            .edit(json!(["ab"]), 0)
            .ack(1, 1)
            .undo()
            .ack(2, 2)
            .remote(3, json!(["X"]))
            .redo()
            .then("abX"),
        script("a step that remote ops left without effect is dropped", "x")
            .edit(json!([1, "ab"]), 0)
            .ack(1, 1)
            .remote(2, json!([1, -2]))
            .undo()
            .then("x"),
        Script { depth: 2, ..script("only the last depth steps are kept", "") }
            .edit(json!(["a"]), 0)
            .brk()
            .edit(json!([1, "b"]), 10)
            .brk()
            .edit(json!([2, "c"]), 20)
            .undo()
            .undo()
            .undo()
            .then("a"),
        Script { window_ms: 100, ..script("the grouping window is an option", "") }
            .edit(json!(["a"]), 0)
            .edit(json!([1, "b"]), 100)
            .edit(json!([2, "c"]), 201)
            .undo()
            .then("ab")
            .undo()
            .then(""),
        script("a snapshot clears the history", "ab")
            .edit(json!([2, "c"]), 0)
            .reset(5, "fresh")
            .undo()
            .then("fresh"),
        script("characters are code points", "e\u{301}")
            .edit(json!([2, "😀"]), 0)
            .edit(json!([3, "👍🏽"]), 10)
            .edit(json!([1, -1, 3]), 20)
            .then("e😀👍🏽")
            .undo()
            .then("e\u{301}😀👍🏽")
            .undo()
            .then("e\u{301}"),
    ]
}

/// Pieces of random text, as in the OT vectors: code points that UTF-16 and bytes count differently.
const PIECES: &[&str] = &["a", "b", " ", "é", "e\u{301}", "😀", "👍🏽", "中"];

/// A random script against a model server: ours edits (mostly typing runs at a caret), undoes and
/// redoes; other clients' ops are made on the server's latest text, concurrent with ours in flight.
pub fn random_script(rng: &mut StdRng, index: usize) -> Value {
    let initial: String = (0..rng.gen_range(0..5)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
    let start = Instant::now();
    let mut c = DocumentClient::new(DocId::parse("d").expect("valid id"), 0, &initial);
    let mut server = initial.clone();
    let mut committed: Vec<Operation> = Vec::new();
    let mut up: VecDeque<OutgoingOp> = VecDeque::new();
    let mut down: VecDeque<Value> = VecDeque::new();
    let mut steps = Vec::new();
    let (mut at, mut caret) = (0u64, 0usize);
    let piece = |rng: &mut StdRng| PIECES[rng.gen_range(0..PIECES.len())];
    while steps.len() < 24 {
        match rng.gen_range(0..100) {
            0..=39 => {
                let len = c.len_chars();
                caret = caret.min(len);
                let (pos, delete, insert) = match rng.gen_range(0..6) {
                    0..=2 => (caret, 0, piece(rng)),
                    3 if caret > 0 => (caret - 1, 1, ""),
                    _ => {
                        let pos = rng.gen_range(0..=len);
                        (
                            pos,
                            rng.gen_range(0..=(len - pos).min(2)),
                            if rng.gen_bool(0.5) { piece(rng) } else { "" },
                        )
                    }
                };
                if delete == 0 && insert.is_empty() {
                    continue;
                }
                at += rng.gen_range(0..1500);
                let op = Operation::from_patch(len, pos, delete, insert).expect("patch fits");
                up.extend(c.local_edit_at(op.clone(), start + Duration::from_millis(at)).expect("edit fits"));
                caret = pos + insert.chars().count();
                steps.push(json!({"do": "edit", "op": op, "at": at}));
            }
            40..=54 => {
                up.extend(c.undo().expect("undo fits").and_then(|e| e.outgoing));
                steps.push(json!({"do": "undo"}));
            }
            55..=61 => {
                up.extend(c.redo().expect("redo fits").and_then(|e| e.outgoing));
                steps.push(json!({"do": "redo"}));
            }
            62..=64 => {
                c.break_undo_group();
                steps.push(json!({"do": "break"}));
            }
            65..=76 => {
                let len = server.chars().count();
                let pos = rng.gen_range(0..=len);
                let delete = rng.gen_range(0..=(len - pos).min(2));
                let op = Operation::from_patch(len, pos, delete, piece(rng)).expect("patch fits");
                server = op.apply(&server).expect("op fits");
                committed.push(op.clone());
                down.push_back(json!({"do": "remote", "version": committed.len(), "op": op}));
            }
            77..=87 => {
                let Some(out) = up.pop_front() else { continue };
                let mut op = out.op;
                for other in &committed[out.base as usize..] {
                    op = Operation::transform(&op, other).expect("server transform").0;
                }
                server = op.apply(&server).expect("op fits");
                committed.push(op);
                down.push_back(json!({"do": "ack", "seq": out.seq, "version": committed.len()}));
            }
            _ => {
                let Some(step) = down.pop_front() else { continue };
                let version = step["version"].as_u64().expect("version");
                if step["do"] == "ack" {
                    up.extend(c.on_ack(step["seq"].as_u64().expect("seq"), version).expect("ack fits"));
                } else {
                    let applied = c.on_remote_op(version, &op(&step["op"])).expect("op fits");
                    caret = applied.transform_index(caret);
                }
                steps.push(step);
            }
        }
    }
    let scenario = json!({"name": format!("random {index}"), "text": initial, "version": 0,
        "depth": UndoOptions::DEFAULT_DEPTH, "window_ms": 1000, "steps": steps});
    let steps = replay(&scenario);
    with_steps(scenario, steps)
}
