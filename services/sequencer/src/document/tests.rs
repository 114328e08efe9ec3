//! Unit tests of the document state machine: every decision, without any I/O.

use std::collections::BTreeMap;

use serde_json::json;
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::{ClientRecord, Snapshot, StoredDocument};

use super::{Decision, DocumentState, Fetched, Limits};

fn doc() -> DocId {
    DocId::parse("doc").unwrap()
}

fn op(v: serde_json::Value) -> Operation {
    Operation::from_json(&v).unwrap()
}

fn sub(client: &str, seq: u64, base: u64, o: serde_json::Value) -> Submission {
    Submission {
        author: String::new(),
        delete_document: false,
        doc: doc(),
        client: ClientId::parse(client).unwrap(),
        seq,
        base,
        op: op(o),
    }
}

fn limits() -> Limits {
    Limits {
        max_document_chars: 20,
        max_op_insert_chars: 10,
        history_window: 1000,
        max_base_lag: 100,
        max_clients: 1_000,
    }
}

fn commit(state: &mut DocumentState, s: &Submission) -> CommittedEvent {
    match state.decide(s, &limits(), Fetched::Nothing) {
        Decision::Commit(event) => event,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn rejection(state: &mut DocumentState, s: &Submission, limits: &Limits) -> (Rejection, bool) {
    match state.decide(s, limits, Fetched::Nothing) {
        Decision::Reject { rejection, new } => (rejection, new),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn sequential_ops_get_consecutive_versions() {
    let mut state = DocumentState::new(doc());
    let e1 = commit(&mut state, &sub("a", 1, 0, json!(["hello"])));
    let e2 = commit(&mut state, &sub("a", 2, 1, json!([5, " world"])));
    assert_eq!((e1.version, e2.version), (1, 2));
    assert_eq!(state.text().to_string(), "hello world");
    assert_eq!(e2.op, op(json!([5, " world"])));
}

#[test]
fn concurrent_ops_are_transformed_and_later_sequenced_insert_goes_left() {
    let mut state = DocumentState::new(doc());
    commit(&mut state, &sub("a", 1, 0, json!(["ac"])));
    commit(&mut state, &sub("a", 2, 1, json!([1, "X", 1])));
    // b edited version 1 too: its insert at the same place is sequenced later and ends up first.
    let e = commit(&mut state, &sub("b", 1, 1, json!([1, "Y", 1])));
    assert_eq!(e.op, op(json!([1, "Y", 2])));
    assert_eq!(state.text().to_string(), "aYXc");
    // A delete of a range partly deleted meanwhile deletes only what is left.
    commit(&mut state, &sub("a", 3, 3, json!([1, -2, 1])));
    let e = commit(&mut state, &sub("b", 2, 3, json!([2, -2])));
    assert_eq!(e.op, op(json!([1, -1])));
    assert_eq!(state.text().to_string(), "a");
}

#[test]
fn resubmission_is_acknowledged_again_and_changes_nothing() {
    let mut state = DocumentState::new(doc());
    let s = sub("a", 1, 0, json!(["x"]));
    commit(&mut state, &s);
    assert_eq!(state.decide(&s, &limits(), Fetched::Nothing), Decision::Duplicate { version: 1 });
    assert_eq!((state.version(), state.text().to_string()), (1, "x".to_owned()));
    // An older seq found in the window is re-acknowledged as well.
    commit(&mut state, &sub("a", 2, 1, json!([1, "y"])));
    assert_eq!(state.decide(&s, &limits(), Fetched::Nothing), Decision::Duplicate { version: 1 });
}

#[test]
fn seq_gap_is_invalid_and_uses_the_seq_up() {
    let mut state = DocumentState::new(doc());
    let (r, new) = rejection(&mut state, &sub("a", 3, 0, json!(["x"])), &limits());
    assert!(new);
    assert_eq!(r.code, ErrorCode::InvalidOp);
    assert!(
        r.message.contains("seq 3 skips ahead (expected 1); it is used up now, so the next seq is 4"),
        "{}",
        r.message
    );
    assert_eq!(state.version(), 0);
    commit(&mut state, &sub("a", 4, 0, json!(["x"])));
}

#[test]
fn seq_zero_base_ahead_and_length_mismatch_are_invalid_and_change_nothing() {
    let mut state = DocumentState::new(doc());
    commit(&mut state, &sub("a", 1, 0, json!(["abc"])));
    let (r, _) = rejection(&mut state, &sub("b", 0, 1, json!([3])), &limits());
    assert!(r.message.contains("seq must start at 1"));
    let (r, _) = rejection(&mut state, &sub("b", 1, 5, json!([3])), &limits());
    assert!(r.message.contains("base 5 is ahead of the document, which is at version 1"), "{}", r.message);
    let (r, _) = rejection(&mut state, &sub("b", 2, 1, json!([2, "x"])), &limits());
    assert!(r.message.contains("spans 2 characters but version 1 has 3"), "{}", r.message);
    let (r, _) = rejection(&mut state, &sub("b", 3, 0, json!([1, "x"])), &limits());
    assert!(r.message.contains("spans 1 characters but version 0 has 0"), "{}", r.message);
    assert_eq!((state.version(), state.text().to_string()), (1, "abc".to_owned()));
}

#[test]
fn seq_zero_is_refused_every_time_without_being_stored() {
    let mut state = DocumentState::new(doc());
    for _ in 0..2 {
        let (r, new) = rejection(&mut state, &sub("a", 0, 0, json!(["x"])), &limits());
        assert!(!new, "nothing to store for seq 0");
        assert!(r.message.contains("seq must start at 1"));
    }
    commit(&mut state, &sub("a", 1, 0, json!(["x"])));
}

#[test]
fn the_largest_seq_does_not_overflow() {
    let mut state = DocumentState::new(doc());
    let (r, _) = rejection(&mut state, &sub("a", u64::MAX, 0, json!(["x"])), &limits());
    assert!(r.message.contains("skips ahead"), "{}", r.message);
    // Every later seq is now a resubmission of an older one: refused, never a panic.
    let five = sub("a", 5, 0, json!(["x"]));
    assert_eq!(state.decide(&five, &limits(), Fetched::Nothing), Decision::NeedOutcome);
    let Decision::Reject { rejection: r, new } = state.decide(&five, &limits(), Fetched::Outcome(None))
    else {
        panic!("expected a rejection")
    };
    assert!(!new);
    assert!(r.message.contains("already used"), "{}", r.message);
}

#[test]
fn a_base_too_far_behind_is_refused() {
    let mut state = DocumentState::new(doc());
    let lax = Limits { max_document_chars: 1000, ..limits() };
    for seq in 1..=101u64 {
        let s = sub("a", seq, seq - 1, json!([seq as usize - 1, "a"]));
        assert!(matches!(state.decide(&s, &lax, Fetched::Nothing), Decision::Commit(_)));
    }
    let (r, _) = rejection(&mut state, &sub("b", 1, 0, json!(["b"])), &lax);
    assert!(
        r.message.contains("base 0 is 101 versions behind the document; the limit is 100"),
        "{}",
        r.message
    );
}

#[test]
fn limits_give_too_large() {
    let mut state = DocumentState::new(doc());
    let (r, _) = rejection(&mut state, &sub("a", 1, 0, json!(["x".repeat(11)])), &limits());
    assert_eq!(r.code, ErrorCode::TooLarge);
    assert!(r.message.contains("inserts 11 characters; the limit is 10"), "{}", r.message);
    commit(&mut state, &sub("a", 2, 0, json!(["x".repeat(10)])));
    commit(&mut state, &sub("a", 3, 1, json!([10, "y".repeat(10)])));
    let (r, _) = rejection(&mut state, &sub("a", 4, 2, json!([20, "z"])), &limits());
    assert_eq!(r.code, ErrorCode::TooLarge);
    assert!(r.message.contains("would have 21 characters; the limit is 20"), "{}", r.message);
    assert_eq!(state.version(), 2);
}

#[test]
fn rejected_resubmission_gets_the_same_error_without_storing_it_again() {
    let mut state = DocumentState::new(doc());
    let bad = sub("a", 1, 0, json!([4]));
    let (first, new) = rejection(&mut state, &bad, &limits());
    assert!(new);
    let (again, new) = rejection(&mut state, &bad, &limits());
    assert!(!new);
    assert_eq!((again.code, again.message), (first.code, first.message));
}

#[test]
fn base_older_than_the_window_is_served_from_history() {
    let small = Limits { history_window: 2, ..limits() };
    let mut full = DocumentState::new(doc());
    let mut windowed = DocumentState::new(doc());
    let mut log = Vec::new();
    for seq in 1..=5u64 {
        let s = sub("a", seq, seq - 1, json!([seq as usize - 1, "a"]));
        log.push(commit(&mut full, &s));
        let Decision::Commit(_) = windowed.decide(&s, &small, Fetched::Nothing) else { panic!() };
        windowed.mark_durable(seq, &small);
    }
    let late = sub("b", 1, 1, json!(["b", 1]));
    let Decision::NeedHistory { after, up_to } = windowed.decide(&late, &small, Fetched::Nothing) else {
        panic!("expected a request for history")
    };
    assert_eq!((after, up_to), (1, 3));
    let history: Vec<_> = log.iter().filter(|e| e.version > after && e.version <= up_to).cloned().collect();
    let from_history = windowed.decide(&late, &small, Fetched::History(&history));
    assert_eq!(from_history, full.decide(&late, &limits(), Fetched::Nothing));
    assert_eq!(windowed.text(), full.text());
}

#[test]
fn uncommitted_ops_stay_in_the_window_until_durable() {
    let small = Limits { history_window: 1, ..limits() };
    let mut state = DocumentState::new(doc());
    for seq in 1..=3u64 {
        let Decision::Commit(_) =
            state.decide(&sub("a", seq, seq - 1, json!([seq as usize - 1, "a"])), &small, Fetched::Nothing)
        else {
            panic!()
        };
    }
    // Nothing is durable yet, so a late op still transforms from memory.
    let late = sub("b", 1, 0, json!(["b"]));
    assert!(matches!(state.decide(&late, &small, Fetched::Nothing), Decision::Commit(_)));
}

#[test]
fn old_seq_outside_the_window_asks_for_its_outcome() {
    let small = Limits { history_window: 1, ..limits() };
    let mut state = DocumentState::new(doc());
    for seq in 1..=3u64 {
        let s = sub("a", seq, seq - 1, json!([seq as usize - 1, "a"]));
        let Decision::Commit(_) = state.decide(&s, &small, Fetched::Nothing) else { panic!() };
        state.mark_durable(seq, &small);
    }
    let old = sub("a", 1, 0, json!(["a"]));
    assert_eq!(state.decide(&old, &small, Fetched::Nothing), Decision::NeedOutcome);
    let outcome = Outcome::Committed { version: 1 };
    assert_eq!(
        state.decide(&old, &small, Fetched::Outcome(Some(&outcome))),
        Decision::Duplicate { version: 1 }
    );
}

#[test]
fn load_restores_text_version_and_client_seqs() {
    let client = ClientId::parse("a").unwrap();
    let mut clients = BTreeMap::new();
    clients.insert(client.clone(), ClientRecord { seq: 1, outcome: Outcome::Committed { version: 1 } });
    let stored = StoredDocument {
        snapshot: Some(Snapshot { doc: doc(), version: 1, text: "x".into(), clients }),
        events: vec![CommittedEvent {
            author: String::new(),
            doc: doc(),
            version: 2,
            client: client.clone(),
            seq: 2,
            op: op(json!([1, "y"])),
        }],
        rejections: vec![Rejection {
            doc: doc(),
            client: client.clone(),
            seq: 3,
            code: ErrorCode::InvalidOp,
            message: "nope".into(),
            at_version: 2,
        }],
    };
    let mut state = DocumentState::load(doc(), stored, &limits()).unwrap();
    assert_eq!((state.version(), state.text().to_string()), (2, "xy".to_owned()));
    let (r, new) = rejection(&mut state, &sub("a", 3, 2, json!([2])), &limits());
    assert_eq!((r.message.as_str(), new), ("nope", false));
    assert_eq!(
        state.decide(&sub("a", 2, 1, json!([1])), &limits(), Fetched::Nothing),
        Decision::Duplicate { version: 2 }
    );
    commit(&mut state, &sub("a", 4, 2, json!([2, "z"])));
}

#[test]
fn load_refuses_a_history_with_a_gap() {
    let client = ClientId::parse("a").unwrap();
    let stored = StoredDocument {
        snapshot: None,
        events: vec![CommittedEvent {
            author: String::new(),
            doc: doc(),
            version: 2,
            client,
            seq: 1,
            op: op(json!(["y"])),
        }],
        rejections: vec![],
    };
    let err = DocumentState::load(doc(), stored, &limits()).unwrap_err();
    assert!(err.0.contains("jumps from version 0 to 2"), "{err}");
}

#[test]
fn snapshots_are_due_every_n_durable_versions() {
    let mut state = DocumentState::new(doc());
    commit(&mut state, &sub("a", 1, 0, json!(["a"])));
    assert!(state.snapshot_due(2).is_none());
    commit(&mut state, &sub("a", 2, 1, json!([1, "b"])));
    assert!(state.snapshot_due(2).is_none(), "not durable yet");
    state.mark_durable(2, &limits());
    let snapshot = state.snapshot_due(2).expect("due");
    assert_eq!((snapshot.version, snapshot.text.as_str()), (2, "ab"));
    assert_eq!(snapshot.clients[&ClientId::parse("a").unwrap()].seq, 2);
    assert!(state.snapshot_due(2).is_none());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn arbitrary_op() -> impl Strategy<Value = serde_json::Value> {
        let component = prop_oneof![
            (0u64..8).prop_map(|n| json!(n)),
            (1i64..8).prop_map(|n| json!(-n)),
            "[a-z😀é]{0,3}".prop_map(|s| json!(s)),
        ];
        proptest::collection::vec(component, 0..5).prop_map(serde_json::Value::Array)
    }

    proptest! {
        /// Arbitrary, mostly invalid submissions never panic, and a rejection never changes the text
        /// or the version.
        #[test]
        fn arbitrary_submissions_never_panic_and_rejections_change_nothing(
            steps in proptest::collection::vec((0usize..3, 0u64..6, 0u64..8, arbitrary_op()), 1..40)
        ) {
            let limits = Limits { max_document_chars: 30, max_op_insert_chars: 6, history_window: 3, max_base_lag: 5, max_clients: 1_000 };
            let mut state = DocumentState::new(doc());
            for (client, seq, base, o) in steps {
                let s = Submission { author: String::new(), delete_document: false,
                    doc: doc(),
                    client: ClientId::parse(&format!("c{client}")).unwrap(),
                    seq,
                    base,
                    op: op(o),
                };
                let (version, text) = (state.version(), state.text().to_string());
                let decision = match state.decide(&s, &limits, Fetched::Nothing) {
                    Decision::NeedHistory { .. } | Decision::NeedOutcome => {
                        state.decide(&s, &limits, Fetched::Outcome(None))
                    }
                    d => d,
                };
                match decision {
                    Decision::Commit(event) => {
                        prop_assert_eq!(event.version, version + 1);
                        prop_assert!(state.text().len_chars() <= 30);
                        state.mark_durable(event.version, &limits);
                    }
                    _ => {
                        prop_assert_eq!(state.version(), version);
                        prop_assert_eq!(state.text().to_string(), text);
                    }
                }
            }
        }
    }
}

/// Issue "one stale op stalls a partition": the default lag bound is what one op may cost the
/// partition, and an op past it is refused before any history is read.
#[test]
fn the_default_lag_bound_refuses_a_far_stale_op_before_reading_history() {
    let limits = Limits { max_document_chars: 100_000, ..Limits::default() };
    let mut state = DocumentState::new(doc());
    for seq in 1..=20_001u64 {
        let len = seq as usize - 1;
        let s = Submission {
            author: String::new(),
            delete_document: false,
            doc: doc(),
            client: ClientId::parse("busy").unwrap(),
            seq,
            base: seq - 1,
            op: Operation::from_patch(len, len, 0, "a").unwrap(),
        };
        assert!(matches!(state.decide(&s, &limits, Fetched::Nothing), Decision::Commit(_)));
        state.mark_durable(seq, &limits);
    }
    let stale = sub("late", 1, 0, json!(["b"]));
    match state.decide(&stale, &limits, Fetched::Nothing) {
        Decision::Reject { rejection, new } => {
            assert!(new);
            assert_eq!(rejection.code, ErrorCode::InvalidOp);
            assert!(rejection.message.contains("reload the document"), "{}", rejection.message);
        }
        other => panic!("expected invalid_op before reading any history, got {other:?}"),
    }
}

/// A late op reads its history a window's worth at a time, never all of it at once, and the
/// result is the same as transforming against the whole history.
#[test]
fn a_late_op_asks_for_its_history_one_window_at_a_time() {
    let small = Limits { history_window: 2, ..limits() };
    let mut full = DocumentState::new(doc());
    let mut windowed = DocumentState::new(doc());
    let mut log = Vec::new();
    for seq in 1..=9u64 {
        let s = sub("a", seq, seq - 1, json!([seq as usize - 1, "a"]));
        log.push(commit(&mut full, &s));
        let Decision::Commit(_) = windowed.decide(&s, &small, Fetched::Nothing) else { panic!() };
        windowed.mark_durable(seq, &small);
    }
    let late = sub("b", 1, 1, json!(["b", 1]));
    let mut fetched: Option<Vec<CommittedEvent>> = None;
    let mut asked = Vec::new();
    let decision = loop {
        let given = fetched.as_deref().map_or(Fetched::Nothing, Fetched::History);
        match windowed.decide(&late, &small, given) {
            Decision::NeedHistory { after, up_to } => {
                asked.push((after, up_to));
                assert!(asked.len() < 10, "no progress: {asked:?}");
                fetched =
                    Some(log.iter().filter(|e| e.version > after && e.version <= up_to).cloned().collect());
            }
            decision => break decision,
        }
    };
    assert_eq!(asked, [(1, 3), (3, 5), (5, 7)], "pages of at most the window's length");
    assert_eq!(decision, full.decide(&late, &limits(), Fetched::Nothing));
    assert_eq!(windowed.text(), full.text());
}
