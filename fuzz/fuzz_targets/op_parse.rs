//! An operation read from JSON by `Operation::from_json` (what the protocol uses for `op.op`):
//! never a panic; what parses is normalised, within the wire limits, round-trips through its wire
//! form, agrees with the `Deserialize` impl, and applies to a text of its base length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tandem_fuzz::{
    apply_both, assert_json_round_trip, assert_normal, assert_within_wire_limits, text_of_len,
};
use tandem_ot::Operation;

/// Longest base text the target builds to apply a parsed op to.
const MAX_APPLY_LEN: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let parsed = Operation::from_json(&value);
    // The `Deserialize` impl (used for records and server messages) reads the same wire form.
    let via_serde = serde_json::from_slice::<Operation>(data);
    match (&parsed, &via_serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "from_json and Deserialize disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!("from_json {parsed:?} and Deserialize {via_serde:?} disagree"),
    }
    let Ok(op) = parsed else {
        return;
    };
    assert_normal(&op);
    assert_within_wire_limits(&op);
    assert_json_round_trip(&op);
    let shown = op.to_string();
    let reread: Operation = serde_json::from_str(&shown).expect("Display is the wire form");
    assert_eq!(reread, op, "Display is the wire form");

    // Lengths must be honest: the op applies to a text of its base length and to no other.
    if op.base_len() <= MAX_APPLY_LEN && op.target_len() <= 16 * MAX_APPLY_LEN {
        let text = text_of_len(op.base_len());
        let out = apply_both(&op, &text).expect("op applies to a text of its base length");
        let inverse = op.invert(&text).expect("op inverts on a text of its base length");
        assert_eq!(inverse.apply(&out).as_deref(), Ok(text.as_str()), "invert undoes {op}");
        let longer = format!("{text}x");
        assert!(apply_both(&op, &longer).is_err());
        if !text.is_empty() {
            let shorter: String = text.chars().skip(1).collect();
            assert!(apply_both(&op, &shorter).is_err());
        }
    }
});
