//! Tests of undo and redo on [`DocumentClient`]: grouping, sending, and the rules for other clients'
//! edits, each case worked out by hand; then the seeded randomized run of `undo_sim.rs`.

use std::time::Duration;

use serde_json::json;
use tandem_ot::Operation;

use super::*;

fn doc() -> DocId {
    DocId::parse("d").expect("valid id")
}

/// `[retain pos, insert s, retain rest]` on a text of `len` characters.
fn ins(len: usize, pos: usize, s: &str) -> Operation {
    Operation::from_patch(len, pos, 0, s).expect("insert fits")
}

/// `[retain pos, delete n, retain rest]` on a text of `len` characters.
fn del(len: usize, pos: usize, n: usize) -> Operation {
    Operation::from_patch(len, pos, n, "").expect("delete fits")
}

fn op(value: serde_json::Value) -> Operation {
    Operation::from_json(&value).expect("test operations are valid")
}

/// A clock for the tests: `at(ms)` is `ms` milliseconds after a fixed start.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn undo(c: &mut DocumentClient) -> HistoryEdit {
    c.undo().expect("undo fits").expect("something to undo")
}

fn redo(c: &mut DocumentClient) -> HistoryEdit {
    c.redo().expect("redo fits").expect("something to redo")
}

#[test]
fn a_typing_run_is_one_step_and_redo_brings_it_back() {
    let t = Clock::new();
    let mut c = DocumentClient::new(doc(), 0, "ab");
    assert!(!c.can_undo() && !c.can_redo());
    assert!(c.local_edit_at(ins(2, 2, "c"), t.at(0)).unwrap().is_some());
    c.local_edit_at(ins(3, 3, "d"), t.at(300)).unwrap();
    c.local_edit_at(ins(4, 4, "e"), t.at(600)).unwrap();
    assert_eq!(c.undo_len(), 1);
    let undone = undo(&mut c);
    assert_eq!((c.text().as_str(), undone.op.to_json()), ("ab", json!([2, -3])));
    assert_eq!(undone.outgoing, None, "an op is in flight: the undo waits in the buffer");
    assert!(!c.can_undo() && c.can_redo());
    let redone = redo(&mut c);
    assert_eq!((c.text().as_str(), redone.op.to_json()), ("abcde", json!([2, "cde"])));
    assert!(c.can_undo() && !c.can_redo());
    undo(&mut c);
    c.local_edit_at(ins(2, 0, "x"), t.at(700)).unwrap();
    assert_eq!(c.text(), "xab");
    assert!(!c.can_redo(), "a new edit clears the redo stack");
    assert_eq!(c.redo().unwrap(), None);
}

#[test]
fn a_pause_a_break_or_an_edit_elsewhere_starts_a_new_step() {
    let t = Clock::new();
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit_at(ins(0, 0, "a"), t.at(0)).unwrap();
    c.local_edit_at(ins(1, 1, "b"), t.at(1001)).unwrap();
    assert_eq!(c.undo_len(), 2, "more than 1 s between the edits");
    c.local_edit_at(ins(2, 2, "c"), t.at(1002)).unwrap();
    c.break_undo_group();
    c.local_edit_at(ins(3, 3, "d"), t.at(1003)).unwrap();
    assert_eq!(c.undo_len(), 3);
    c.local_edit_at(ins(4, 0, "e"), t.at(1004)).unwrap();
    assert_eq!(c.undo_len(), 4, "not where the run's text ends");
    let texts: Vec<String> = (0..4).map(|_| (undo(&mut c), c.text()).1).collect();
    assert_eq!(texts, ["abcd", "abc", "a", ""]);
    assert_eq!(c.undo().unwrap(), None);
}

#[test]
fn backspace_and_delete_runs_are_one_step_each() {
    let t = Clock::new();
    let mut c = DocumentClient::new(doc(), 0, "hello");
    c.local_edit_at(del(5, 4, 1), t.at(0)).unwrap(); // Backspace at the end
    c.local_edit_at(del(4, 3, 1), t.at(100)).unwrap();
    assert_eq!((c.text().as_str(), c.undo_len()), ("hel", 1));
    c.local_edit_at(del(3, 0, 1), t.at(200)).unwrap(); // Delete at the start
    c.local_edit_at(del(2, 0, 1), t.at(300)).unwrap();
    assert_eq!((c.text().as_str(), c.undo_len()), ("l", 2));
    c.local_edit_at(ins(1, 0, "p"), t.at(400)).unwrap(); // typing after deleting
    assert_eq!(c.undo_len(), 3);
    let texts: Vec<String> = (0..3).map(|_| (undo(&mut c), c.text()).1).collect();
    assert_eq!(texts, ["l", "hel", "hello"]);
}

#[test]
fn undo_and_redo_are_sent_like_any_edit() {
    let mut c = DocumentClient::new(doc(), 3, "ab");
    assert_eq!(c.local_edit(ins(2, 2, "c")).unwrap().map(|o| (o.seq, o.base)), Some((1, 3)));
    c.on_ack(1, 4).unwrap();
    let out = undo(&mut c).outgoing.expect("nothing in flight: sent at once");
    assert_eq!((out.seq, out.base, out.op.to_json()), (2, 4, json!([2, -1])));
    c.on_ack(2, 5).unwrap();
    let out = redo(&mut c).outgoing.expect("sent at once");
    assert_eq!((out.seq, out.base, out.op.to_json()), (3, 5, json!([2, "c"])));
    assert_eq!(c.text(), "abc");
}

#[test]
fn undoing_an_insert_keeps_what_another_client_typed_inside_it() {
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit(ins(0, 0, "hello")).unwrap();
    c.on_ack(1, 1).unwrap();
    c.on_remote_op(2, &op(json!([2, "X", 3]))).unwrap();
    assert_eq!(undo(&mut c).op.to_json(), json!([-2, 1, -3]));
    assert_eq!(c.text(), "X");
}

#[test]
fn undoing_an_insert_does_not_delete_twice() {
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit(ins(0, 0, "hello")).unwrap();
    c.on_remote_op(1, &op(json!([]))).unwrap(); // a version that changes nothing, while in flight
    c.on_ack(1, 2).unwrap();
    c.on_remote_op(3, &op(json!([1, -3, 1]))).unwrap(); // "ho"
    assert_eq!(undo(&mut c).op.to_json(), json!([-2]));
    assert_eq!(c.text(), "");
}

#[test]
fn undoing_a_delete_puts_the_text_back_ahead_of_an_insert_at_the_same_place() {
    let mut c = DocumentClient::new(doc(), 0, "abcd");
    c.local_edit(del(4, 1, 2)).unwrap(); // "ad"
    c.on_ack(1, 1).unwrap();
    c.on_remote_op(2, &op(json!([1, "X", 1]))).unwrap(); // "aXd"
    undo(&mut c);
    assert_eq!(c.text(), "abcXd");
}

#[test]
fn text_another_client_removed_does_not_come_back() {
    let mut c = DocumentClient::new(doc(), 0, "abc");
    c.local_edit(del(3, 0, 1)).unwrap(); // "bc"
    c.on_ack(1, 1).unwrap();
    c.on_remote_op(2, &op(json!([-1, 1]))).unwrap(); // another client deletes "b": "c"
    undo(&mut c);
    assert_eq!(c.text(), "ac");
}

#[test]
fn text_deleted_concurrently_by_both_comes_back_on_undo() {
    // Another client's delete of "b" is committed first (version 1) while ours of "abc" is in flight:
    // it reaches us as a no-op, since "b" is already gone here, so "b" was removed by our own edit.
    let mut c = DocumentClient::new(doc(), 0, "abc");
    c.local_edit(del(3, 0, 3)).unwrap();
    assert_eq!(c.on_remote_op(1, &op(json!([1, -1, 1]))).unwrap().to_json(), json!([]));
    c.on_ack(1, 2).unwrap();
    let out = undo(&mut c).outgoing.expect("sent");
    assert_eq!((out.base, out.op.to_json()), (2, json!(["abc"])));
    assert_eq!(c.text(), "abc");
    // The same when ours is committed first and theirs, concurrent, is transformed to nothing.
    let mut c = DocumentClient::new(doc(), 0, "abc");
    c.local_edit(del(3, 0, 3)).unwrap();
    c.on_ack(1, 1).unwrap();
    c.on_remote_op(2, &op(json!([]))).unwrap();
    undo(&mut c);
    assert_eq!(c.text(), "abc");
}

#[test]
fn the_redo_stack_follows_remote_ops_too() {
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit(ins(0, 0, "ab")).unwrap();
    c.on_ack(1, 1).unwrap();
    undo(&mut c);
    c.on_ack(2, 2).unwrap();
    c.on_remote_op(3, &op(json!(["X"]))).unwrap();
    assert_eq!(redo(&mut c).op.to_json(), json!(["ab", 1]));
    assert_eq!(c.text(), "abX");
}

#[test]
fn a_step_that_remote_ops_left_without_effect_is_dropped() {
    let mut c = DocumentClient::new(doc(), 0, "x");
    c.local_edit(ins(1, 1, "ab")).unwrap();
    c.on_ack(1, 1).unwrap();
    c.on_remote_op(2, &op(json!([1, -2]))).unwrap();
    assert!(!c.can_undo());
    assert_eq!(c.text(), "x");
}

#[test]
fn depth_and_reset_bound_the_history() {
    let options = UndoOptions { depth: 2, ..UndoOptions::default() };
    let mut c = DocumentClient::new(doc(), 0, "").with_undo_options(options);
    assert_eq!(c.undo_options(), options);
    for (i, s) in ["a", "b", "c"].into_iter().enumerate() {
        c.break_undo_group();
        c.local_edit(ins(i, i, s)).unwrap();
    }
    undo(&mut c);
    undo(&mut c);
    assert_eq!((c.text().as_str(), c.can_undo()), ("a", false));
    c.reset(7, "fresh");
    assert!(!c.can_undo() && !c.can_redo(), "a snapshot clears the history");
    let mut off = DocumentClient::new(doc(), 0, "").with_undo_options(UndoOptions { depth: 0, ..options });
    off.local_edit(ins(0, 0, "a")).unwrap();
    assert!(!off.can_undo());
}

#[path = "undo_sim.rs"]
mod sim;
