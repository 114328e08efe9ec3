//! Tests of [`DocumentClient`]: the transitions one by one, then a seeded randomized run of three
//! clients against a model of the sequencer with lost connections, resubmissions and rejected ops.

use super::*;
use tandem_ot::Operation;

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

#[test]
fn first_edit_is_sent_with_seq_1_on_the_snapshot_version() {
    let mut c = DocumentClient::new(doc(), 7, "hello");
    assert!(c.is_synced());
    let out = c.local_edit(ins(5, 5, " world")).unwrap().expect("sent at once");
    assert_eq!((out.seq, out.base), (1, 7));
    assert_eq!(out.op.to_json(), serde_json::json!([5, " world"]));
    assert_eq!(c.text(), "hello world");
    assert!(!c.is_synced());
    assert_eq!(c.in_flight_seq(), Some(1));
    assert_eq!(c.resubmission(), Some(out.clone()));
    assert_eq!(c.on_ack(1, 8).unwrap(), None);
    assert!(c.is_synced());
    assert_eq!((c.version(), c.next_seq()), (8, 2));
}

#[test]
fn edits_during_flight_are_composed_and_sent_after_the_ack() {
    let mut c = DocumentClient::new(doc(), 0, "");
    let first = c.local_edit(ins(0, 0, "a")).unwrap().expect("sent");
    assert_eq!(first.seq, 1);
    assert_eq!(c.local_edit(ins(1, 1, "b")).unwrap(), None);
    assert_eq!(c.local_edit(ins(2, 2, "c")).unwrap(), None);
    assert_eq!(c.text(), "abc");
    let next = c.on_ack(1, 1).unwrap().expect("buffer goes out");
    assert_eq!((next.seq, next.base), (2, 1));
    assert_eq!(next.op.to_json(), serde_json::json!([1, "bc"]));
    assert_eq!(c.resubmission(), Some(next));
    assert_eq!(c.on_ack(2, 2).unwrap(), None);
    assert!(c.is_synced());
    assert_eq!(c.text(), "abc");
}

#[test]
fn remote_op_when_synced_applies_unchanged() {
    let mut c = DocumentClient::new(doc(), 3, "hello");
    let op = del(5, 0, 1);
    assert_eq!(c.on_remote_op(4, &op).unwrap(), op);
    assert_eq!(c.text(), "ello");
    assert_eq!(c.version(), 4);
}

#[test]
fn remote_op_is_transformed_past_pending_and_buffer() {
    let mut c = DocumentClient::new(doc(), 0, "abc");
    let sent = c.local_edit(ins(3, 0, "X")).unwrap().expect("sent"); // Xabc
    assert_eq!(c.local_edit(ins(4, 4, "Y")).unwrap(), None); // XabcY
                                                             // Another client deleted "b" at version 1.
    let applied = c.on_remote_op(1, &del(3, 1, 1)).unwrap();
    assert_eq!(applied.to_json(), serde_json::json!([2, -1, 2]));
    assert_eq!(c.text(), "XacY");
    assert_eq!(c.version(), 1);
    // The resubmission is the op as sent, not the transformed one.
    assert_eq!(c.resubmission(), Some(sent));
    // The ack commits X as version 2; the buffer follows, rebased on version 2 (text "Xac").
    let next = c.on_ack(1, 2).unwrap().expect("buffer");
    assert_eq!((next.seq, next.base), (2, 2));
    assert_eq!(next.op.to_json(), serde_json::json!([3, "Y"]));
}

#[test]
fn own_pending_insert_goes_left_of_a_concurrent_one_at_the_same_place() {
    // PROTOCOL.md: the later-sequenced insert ends up first. The received op was sequenced before
    // ours, so ours (pending) must stay left of it; the server computes the same for our op.
    let mut c = DocumentClient::new(doc(), 0, "ab");
    c.local_edit(ins(2, 1, "M")).unwrap();
    c.on_remote_op(1, &ins(2, 1, "T")).unwrap();
    assert_eq!(c.text(), "aMTb");
}

#[test]
fn version_gap_and_duplicates_are_refused_without_change() {
    let mut c = DocumentClient::new(doc(), 5, "x");
    let err = c.on_remote_op(7, &ins(1, 0, "a")).unwrap_err();
    assert!(matches!(err, ClientError::VersionGap { expected: 6, got: 7, .. }), "{err}");
    let err = c.on_remote_op(5, &ins(1, 0, "a")).unwrap_err();
    assert!(matches!(err, ClientError::VersionGap { expected: 6, got: 5, .. }), "{err}");
    assert_eq!((c.text().as_str(), c.version()), ("x", 5));

    c.local_edit(ins(1, 1, "y")).unwrap();
    let err = c.on_ack(1, 8).unwrap_err();
    assert!(matches!(err, ClientError::VersionGap { expected: 6, got: 8, .. }), "{err}");
    assert_eq!(c.in_flight_seq(), Some(1));
    assert_eq!(c.version(), 5);
}

#[test]
fn unexpected_acks_are_refused() {
    let mut c = DocumentClient::new(doc(), 0, "");
    let err = c.on_ack(1, 1).unwrap_err();
    assert!(matches!(err, ClientError::UnexpectedAck { seq: 1, in_flight: None, .. }), "{err}");
    c.local_edit(ins(0, 0, "a")).unwrap();
    let err = c.on_ack(2, 1).unwrap_err();
    assert!(matches!(err, ClientError::UnexpectedAck { seq: 2, in_flight: Some(1), .. }), "{err}");
    assert_eq!(c.version(), 0);
}

#[test]
fn edits_that_do_not_fit_change_nothing() {
    let mut c = DocumentClient::new(doc(), 0, "abc");
    assert!(matches!(c.local_edit(ins(2, 0, "x")), Err(ClientError::Ot(_))));
    assert!(c.is_synced());
    c.local_edit(ins(3, 0, "x")).unwrap();
    c.local_edit(ins(4, 0, "y")).unwrap();
    // Wrong length with a buffer: compose fails.
    assert!(matches!(c.local_edit(ins(4, 0, "z")), Err(ClientError::Ot(_))));
    // Wrong length for a received op: transform fails, nothing changes.
    assert!(matches!(c.on_remote_op(1, &ins(9, 0, "z")), Err(ClientError::Ot(_))));
    assert_eq!((c.text().as_str(), c.version()), ("yxabc", 0));
    let mut synced = DocumentClient::new(doc(), 0, "abc");
    assert!(matches!(synced.on_remote_op(1, &ins(9, 0, "z")), Err(ClientError::Ot(_))));
    assert_eq!((synced.text().as_str(), synced.version()), ("abc", 0));
}

#[test]
fn characters_are_unicode_scalar_values() {
    let mut c = DocumentClient::new(doc(), 0, "😀é");
    assert_eq!(c.len_chars(), 2);
    let out = c.local_edit(ins(2, 1, "ü")).unwrap().expect("sent");
    assert_eq!(out.op.to_json(), serde_json::json!([1, "ü", 1]));
    c.on_remote_op(1, &del(2, 0, 1)).unwrap();
    assert_eq!(c.text(), "üé");
}

#[test]
fn reset_discards_pending_work_but_keeps_seq() {
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit(ins(0, 0, "a")).unwrap();
    c.local_edit(ins(1, 1, "b")).unwrap();
    c.reset(4, "server");
    assert!(c.is_synced());
    assert_eq!(c.resubmission(), None);
    assert_eq!((c.text().as_str(), c.version()), ("server", 4));
    let out = c.local_edit(ins(6, 6, "!")).unwrap().expect("sent");
    assert_eq!((out.seq, out.base), (2, 4));
}

#[test]
fn a_forbidden_op_gives_its_seq_to_the_next_op() {
    let mut c = DocumentClient::new(doc(), 0, "");
    c.local_edit(ins(0, 0, "a")).unwrap();
    c.local_edit(ins(1, 1, "b")).unwrap(); // buffered behind seq 1: takes no seq yet
    c.reuse_in_flight_seq();
    c.reset(0, "");
    let out = c.local_edit(ins(0, 0, "x")).unwrap().expect("sent");
    assert_eq!((out.seq, out.base), (1, 0), "seq 1 never reached the document");
}

#[test]
fn outgoing_op_serialises_as_the_protocol_shows() {
    let out = OutgoingOp { doc: doc(), seq: 3, base: 9, op: del(4, 1, 2) };
    let parsed = ClientMessage::parse(&out.to_json()).expect("valid client message");
    assert_eq!(parsed, out.to_message());
    let v: serde_json::Value = serde_json::from_str(&out.to_json()).unwrap();
    assert_eq!(v, serde_json::json!({"type": "op", "doc": "d", "seq": 3, "base": 9, "op": [1, -2, 1]}));
}

#[path = "document_sim.rs"]
mod sim;
