//! Tests of [`DocumentClient::to_saved`] and [`DocumentClient::from_saved`]: a client written down
//! and read back (through JSON, as the state folder does) carries on exactly as the original, and a
//! saved state that does not fit together is refused with the reason. The seeded simulation
//! (`document_sim.rs`) also restarts clients from their saved state at random points.

use super::*;
use tandem_ot::Operation;

fn doc() -> DocId {
    DocId::parse("notes/saved").expect("valid id")
}

fn ins(len: usize, pos: usize, s: &str) -> Operation {
    Operation::from_patch(len, pos, 0, s).expect("insert fits")
}

/// Through JSON and back, as a file would.
fn reload(c: &DocumentClient) -> DocumentClient {
    let json = serde_json::to_string(&c.to_saved()).expect("serialisable");
    let saved: SavedDocument = serde_json::from_str(&json).expect("reads back");
    assert_eq!(saved, c.to_saved());
    DocumentClient::from_saved(saved).expect("a saved state fits together")
}

fn same(a: &DocumentClient, b: &DocumentClient) {
    assert_eq!(
        (a.text(), a.version(), a.next_seq(), a.pending_edits(), a.resubmission()),
        (b.text(), b.version(), b.next_seq(), b.pending_edits(), b.resubmission())
    );
}

#[test]
fn pending_edits_count_the_local_edits_not_yet_acknowledged() {
    let mut c = DocumentClient::new(doc(), 0, "");
    assert_eq!(c.pending_edits(), 0);
    c.local_edit(ins(0, 0, "a")).unwrap();
    assert_eq!(c.pending_edits(), 1);
    c.local_edit(ins(1, 1, "b")).unwrap();
    c.local_edit(ins(2, 2, "c")).unwrap();
    c.undo().unwrap().expect("a step to undo"); // an undo is an edit too
    assert_eq!(c.pending_edits(), 4);
    c.on_ack(1, 1).unwrap().expect("the buffer goes out");
    assert_eq!(c.pending_edits(), 3, "the buffer's three edits are in flight now");
    c.on_ack(2, 2).unwrap();
    assert_eq!(c.pending_edits(), 0);
    c.local_edit(ins(c.len_chars(), 0, "x")).unwrap();
    c.local_edit(ins(c.len_chars(), 0, "y")).unwrap();
    assert_eq!(c.pending_edits(), 2);
    c.reset(5, "fresh");
    assert_eq!(c.pending_edits(), 0, "a reset drops them");
}

#[test]
fn a_saved_client_carries_on_exactly_as_the_original_in_every_state() {
    // Synced.
    let mut c = DocumentClient::new(doc(), 3, "héllo 😀");
    same(&c, &reload(&c));
    // Awaiting an ack.
    let sent = c.local_edit(ins(7, 7, "!")).unwrap().expect("sent");
    let mut r = reload(&c);
    same(&c, &r);
    assert_eq!(r.resubmission(), Some(sent.clone()), "the op in flight exactly as sent");
    // Awaiting with a buffer, after a remote op transformed what is pending.
    c.local_edit(ins(8, 0, ">")).unwrap();
    c.on_remote_op(4, &ins(7, 1, "R")).unwrap();
    r = reload(&c);
    same(&c, &r);
    let saved = r.to_saved();
    let in_flight = saved.in_flight.expect("in flight");
    assert_eq!((in_flight.seq, in_flight.base, &in_flight.sent), (1, 3, &sent.op));
    assert_ne!(in_flight.pending, in_flight.sent, "transformed past the remote op");
    assert_eq!((saved.in_flight_edits, saved.buffer_edits), (1, 1));
    // Both go on identically: another remote op, the ack, the buffer sent with the next seq.
    for client in [&mut c, &mut r] {
        client.on_remote_op(5, &ins(8, 8, "Z")).unwrap();
        let next = client.on_ack(1, 6).unwrap().expect("buffer");
        assert_eq!((next.seq, next.base), (2, 6));
    }
    same(&c, &r);
    assert_eq!(r.text(), ">hRéllo 😀!Z");
    assert!(c.can_undo() && !r.can_undo(), "the undo history is not kept");
}

#[test]
fn the_saved_form_names_its_fields() {
    let mut c = DocumentClient::new(doc(), 2, "ab");
    c.local_edit(ins(2, 2, "c")).unwrap();
    c.local_edit(ins(3, 0, "d")).unwrap();
    let json = serde_json::to_value(c.to_saved()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "doc": "notes/saved", "text": "dabc", "version": 2, "next_seq": 2,
            "in_flight": {"seq": 1, "base": 2, "sent": [2, "c"], "pending": [2, "c"]},
            "buffer": ["d", 3], "in_flight_edits": 1, "buffer_edits": 1,
        })
    );
}

/// A consistent state with an op in flight and a buffer, to break one field at a time.
fn awaiting_with_buffer() -> SavedDocument {
    let mut c = DocumentClient::new(doc(), 4, "abc");
    c.local_edit(ins(3, 3, "d")).unwrap();
    c.local_edit(ins(4, 0, "e")).unwrap();
    c.to_saved()
}

fn refused(saved: SavedDocument) -> String {
    match DocumentClient::from_saved(saved) {
        Err(ClientError::SavedState { doc: d, problem }) => {
            assert_eq!(d, doc());
            problem
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn saved_states_that_do_not_fit_together_are_refused_with_the_reason() {
    assert!(DocumentClient::from_saved(awaiting_with_buffer()).is_ok());
    type Break = Box<dyn Fn(&mut SavedDocument)>;
    let cases: Vec<(&str, Break)> = vec![
        ("buffer without an op in flight", Box::new(|s| s.in_flight = None)),
        ("next_seq is 0", Box::new(|s| s.next_seq = 0)),
        (
            "has seq 2, but seqs start at 1 and next_seq is 2",
            Box::new(|s| s.in_flight.as_mut().unwrap().seq = 2),
        ),
        ("has seq 0", Box::new(|s| s.in_flight.as_mut().unwrap().seq = 0)),
        ("based on version 5 after version 4", Box::new(|s| s.in_flight.as_mut().unwrap().base = 5)),
        (
            "the pending op differs from the sent one",
            Box::new(|s| s.in_flight.as_mut().unwrap().pending = ins(3, 0, "d")),
        ),
        (
            "the buffer makes a text of 5 characters, but the text has 4",
            Box::new(|s| s.text.pop().map(drop).unwrap()),
        ),
        (
            "the pending op makes a text of 5 characters, but 4 are needed",
            Box::new(|s| {
                let f = s.in_flight.as_mut().unwrap();
                (f.sent, f.pending) = (ins(3, 0, "xy"), ins(3, 0, "xy"));
            }),
        ),
        ("an op in flight that carries no edit", Box::new(|s| s.in_flight_edits = 0)),
        ("buffer_edits is 0 for a buffer", Box::new(|s| s.buffer_edits = 0)),
        (
            "buffer_edits is 2 for no buffer",
            Box::new(|s| {
                s.buffer = None;
                s.text = "abcd".into();
                s.buffer_edits = 2;
            }),
        ),
        (
            "nothing in flight, but 1 + 0 edits counted as pending",
            Box::new(|s| {
                (s.in_flight, s.buffer, s.buffer_edits) = (None, None, 0);
            }),
        ),
    ];
    for (reason, break_it) in cases {
        let mut saved = awaiting_with_buffer();
        break_it(&mut saved);
        let problem = refused(saved);
        assert!(problem.contains(reason), "{problem:?} should say {reason:?}");
    }
}

#[test]
fn the_error_names_the_document_and_the_problem() {
    let mut saved = awaiting_with_buffer();
    saved.in_flight = None;
    let err = DocumentClient::from_saved(saved).unwrap_err();
    assert_eq!(
        err.to_string(),
        "saved state of document notes/saved refused: a buffer without an op in flight (edits are \
         buffered only behind one)"
    );
}
