//! Unit tests of the state machine's authors and deletes (issue 12, DESIGN.md decisions 1 and 6):
//! an event names the user who submitted its op, and a delete is decided at once and leaves the
//! empty document at version 0 that knows nothing of its past.

use std::collections::BTreeMap;

use serde_json::json;
use tandem_ot::Operation;
use tandem_protocol::records::{DocumentDeleted, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::{ClientRecord, Snapshot, StoredDocument};

use super::{Decision, DocumentState, Fetched, Limits};

fn doc() -> DocId {
    DocId::parse("doc").unwrap()
}

fn sub(author: &str, client: &str, seq: u64, base: u64, op: serde_json::Value) -> Submission {
    Submission {
        author: author.to_owned(),
        delete_document: false,
        doc: doc(),
        client: ClientId::parse(client).unwrap(),
        seq,
        base,
        op: Operation::from_json(&op).unwrap(),
    }
}

/// A delete as the gateway sends it: no op, seq and base 0.
fn delete(author: &str, client: &str) -> Submission {
    Submission { delete_document: true, ..sub(author, client, 0, 0, json!([])) }
}

fn limits() -> Limits {
    Limits { history_window: 4, ..Limits::default() }
}

fn decide(state: &mut DocumentState, s: &Submission) -> Decision {
    state.decide(s, &limits(), Fetched::Nothing)
}

fn deleted(last_version: u64, author: &str) -> Decision {
    Decision::Delete(DocumentDeleted { doc: doc(), last_version, author: author.to_owned() })
}

/// Writes "abc" as client `a` (seqs 1 to 3, versions 1 to 3), all of it durable.
fn three_versions(state: &mut DocumentState) {
    for (i, letter) in ["a", "b", "c"].into_iter().enumerate() {
        let i = i as u64;
        let op = if i == 0 { json!([letter]) } else { json!([i, letter]) };
        assert!(matches!(decide(state, &sub("ann", "a", i + 1, i, op)), Decision::Commit(_)));
    }
    state.all_durable(&limits());
}

#[test]
fn the_event_names_the_submissions_author() {
    let mut state = DocumentState::new(doc());
    let Decision::Commit(first) = decide(&mut state, &sub("ann", "a", 1, 0, json!(["x"]))) else {
        panic!("not committed")
    };
    // A concurrent op, transformed: still its own author's.
    let Decision::Commit(second) = decide(&mut state, &sub("bob", "b", 1, 0, json!(["y"]))) else {
        panic!("not committed")
    };
    assert_eq!((first.author.as_str(), second.author.as_str()), ("ann", "bob"));
    assert_eq!(second.version, 2);
}

#[test]
fn a_delete_names_the_last_version_and_its_author_and_starts_over_at_version_0() {
    let mut state = DocumentState::new(doc());
    three_versions(&mut state);
    assert_eq!(decide(&mut state, &delete("root", "admin")), deleted(3, "root"));
    assert_eq!((state.version(), state.text().to_string()), (0, String::new()));
    assert_eq!(state.memory_chars(), 0, "nothing of the old document is kept");
    // The next op is based on version 0, and gets version 1.
    let Decision::Commit(event) = decide(&mut state, &sub("bob", "b", 1, 0, json!(["new"]))) else {
        panic!("not committed")
    };
    assert_eq!((event.version, event.author.as_str()), (1, "bob"));
    assert_eq!(state.text().to_string(), "new");
}

#[test]
fn a_delete_of_a_document_never_written_names_version_0() {
    let mut state = DocumentState::new(doc());
    assert_eq!(decide(&mut state, &delete("root", "admin")), deleted(0, "root"));
}

#[test]
fn a_delete_is_not_deduplicated_by_client_and_seq() {
    let mut state = DocumentState::new(doc());
    three_versions(&mut state);
    let first = delete("root", "admin");
    assert_eq!(decide(&mut state, &first), deleted(3, "root"));
    assert!(matches!(decide(&mut state, &sub("bob", "b", 1, 0, json!(["z"]))), Decision::Commit(_)));
    // The same (client, seq) again: a delete of what the document holds now.
    assert_eq!(decide(&mut state, &first), deleted(1, "root"));
    assert_eq!(state.version(), 0);
}

/// The rule for ops from before a delete (PROTOCOL.md: a client's history of a deleted document is
/// gone): judged like ops of a client never seen, never re-acknowledged with a purged version.
#[test]
fn an_op_resubmitted_after_a_delete_is_judged_anew_not_reacknowledged() {
    let mut state = DocumentState::new(doc());
    three_versions(&mut state);
    decide(&mut state, &delete("root", "admin"));
    // Seq 2 of `a` was committed as version 2 before the delete.
    let Decision::Reject { rejection, new } = decide(&mut state, &sub("ann", "a", 2, 1, json!([1, "b"])))
    else {
        panic!("not refused")
    };
    assert!(new, "it uses its seq up, as any refused op");
    assert_eq!(rejection.code, ErrorCode::InvalidOp);
    assert!(rejection.message.contains("seq 2 skips ahead (expected 1)"), "{}", rejection.message);
    assert_eq!(rejection.at_version, 0);
    // A first op based on a purged version is ahead of the new document.
    let Decision::Reject { rejection, .. } = decide(&mut state, &sub("cat", "c", 1, 3, json!([3, "!"])))
    else {
        panic!("not refused")
    };
    assert!(
        rejection.message.contains("base 3 is ahead of the document, which is at version 0"),
        "{rejection:?}"
    );
    assert_eq!(state.version(), 0);
}

#[test]
fn a_late_op_in_progress_is_forgotten_by_a_delete() {
    let mut state = DocumentState::new(doc());
    for seq in 1..=10 {
        let op = if seq == 1 { json!(["x"]) } else { json!([seq - 1, "x"]) };
        decide(&mut state, &sub("ann", "a", seq, seq - 1, op));
    }
    state.all_durable(&limits());
    let late = sub("bob", "b", 1, 1, json!([1, "y"]));
    assert!(matches!(decide(&mut state, &late), Decision::NeedHistory { .. }));
    assert_eq!(decide(&mut state, &delete("root", "admin")), deleted(10, "root"));
    // Its progress went with the document: it is judged against the new one.
    let Decision::Reject { rejection, .. } = decide(&mut state, &late) else { panic!("not refused") };
    assert!(rejection.message.contains("base 1 is ahead"), "{}", rejection.message);
}

#[test]
fn the_snapshot_counter_starts_over_after_a_delete() {
    let mut state = DocumentState::new(doc());
    three_versions(&mut state);
    assert_eq!(state.snapshot_due(3).map(|s| s.version), Some(3));
    decide(&mut state, &delete("root", "admin"));
    for seq in 1..=3 {
        let op = if seq == 1 { json!(["n"]) } else { json!([seq - 1, "n"]) };
        assert!(matches!(decide(&mut state, &sub("bob", "b", seq, seq - 1, op)), Decision::Commit(_)));
    }
    state.all_durable(&limits());
    let snapshot = state.snapshot_due(3).expect("due three versions after the start over");
    assert_eq!((snapshot.version, snapshot.text.as_str()), (3, "nnn"));
    assert_eq!(
        snapshot.clients.keys().map(ClientId::as_str).collect::<Vec<_>>(),
        ["b"],
        "only the new client"
    );
}

/// A document loaded from a snapshot does not know every client (it asks the store about one it
/// does not know); after a delete it knows all of them: none.
#[test]
fn after_a_delete_no_client_is_looked_up_in_the_store() {
    let clients = BTreeMap::from([(
        ClientId::parse("a").unwrap(),
        ClientRecord { seq: 7, outcome: tandem_protocol::records::Outcome::Committed { version: 5 } },
    )]);
    let snapshot = Snapshot { doc: doc(), version: 5, text: "hello".to_owned(), clients };
    let stored = StoredDocument { snapshot: Some(snapshot), events: Vec::new(), rejections: Vec::new() };
    let mut state = DocumentState::load(doc(), stored, &limits()).unwrap();
    assert_eq!(decide(&mut state, &sub("bob", "b", 1, 5, json!([5, "!"]))), Decision::NeedClient);
    assert_eq!(decide(&mut state, &delete("root", "admin")), deleted(5, "root"));
    assert!(matches!(decide(&mut state, &sub("ann", "a", 8, 0, json!(["x"]))), Decision::Reject { .. }));
    assert!(matches!(decide(&mut state, &sub("bob", "b", 1, 0, json!(["y"]))), Decision::Commit(_)));
}
