//! Replays real editing histories through `from_patch` and `apply_to_rope`, and through `compose`,
//! and checks that each ends at the recorded final text exactly.

#[path = "common/traces.rs"]
mod traces;

use ropey::Rope;
use tandem_ot::Operation;
use traces::{load, replay, trace_names, traces_dir, Patch, Trace};

/// Composes the patches of each transaction into one operation before applying it, which checks
/// `compose` on real multi-patch edits (including `from_patch` on lengths that change within the
/// transaction).
fn replay_composed(trace: &Trace) -> Rope {
    let mut rope = Rope::from_str(&trace.start_content);
    for txn in &trace.txns {
        let mut len = rope.len_chars();
        let mut combined = Operation::identity(len);
        for Patch(pos, deleted, inserted) in &txn.patches {
            let op = Operation::from_patch(len, *pos, *deleted, inserted).expect("patch in range");
            len = op.target_len();
            combined = combined.compose(&op).expect("patches follow each other");
        }
        combined.apply_to_rope(&mut rope).expect("transaction fits");
    }
    rope
}

/// The traces this test knows; one test each, so that they run in parallel and fail by name.
const TRACES: [&str; 4] = ["automerge-paper", "rustcode", "seph-blog1", "sveltecomponent"];

#[test]
fn every_trace_in_the_folder_is_replayed() {
    assert_eq!(trace_names(), TRACES, "add a test below for each trace in {}", traces_dir().display());
}

fn check(name: &str) {
    let trace = load(&traces_dir().join(format!("{name}.json.gz")));
    let rope = replay(&trace).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(rope == trace.end_content.as_str(), "{name}: replay does not end at endContent");
    let composed = replay_composed(&trace);
    assert!(composed == trace.end_content.as_str(), "{name}: composed replay does not end at endContent");
}

#[test]
fn automerge_paper() {
    check(TRACES[0]);
}

#[test]
fn rustcode() {
    check(TRACES[1]);
}

#[test]
fn seph_blog1() {
    check(TRACES[2]);
}

#[test]
fn sveltecomponent() {
    check(TRACES[3]);
}
