//! Checks the vectors shared with the JavaScript client: every vector holds for the Rust code, and
//! the checked-in file is exactly what the generator writes.

#[path = "common/vectors.rs"]
mod vectors;

use serde_json::Value;
use tandem_ot::Operation;
use vectors::{error_code, generate, render, vectors_path};

fn load() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn section<'a>(vectors: &'a Value, name: &str) -> &'a [Value] {
    vectors[name].as_array().unwrap_or_else(|| panic!("section {name} is missing"))
}

fn op(value: &Value) -> Operation {
    Operation::from_json(value).unwrap_or_else(|e| panic!("{value} is not a valid op: {e}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a string"))
}

#[test]
fn the_file_is_what_the_generator_writes() {
    let expected = render(&generate());
    let actual = std::fs::read_to_string(vectors_path()).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date: run `cargo run -p tandem-ot --example gen-vectors`",
        vectors_path().display()
    );
}

#[test]
fn there_are_enough_vectors() {
    let vectors = load();
    let total: usize = ["apply", "compose", "transform", "transform_index", "invert", "invalid"]
        .iter()
        .map(|name| section(&vectors, name).len())
        .sum();
    assert!(total >= 250, "only {total} vectors");
}

#[test]
fn apply_vectors_hold() {
    for v in section(&load(), "apply") {
        let result = op(&v["op"]).apply(text(&v["text"]));
        assert_eq!(result.as_deref(), Ok(text(&v["result"])), "{v}");
    }
}

#[test]
fn compose_vectors_hold() {
    for v in section(&load(), "compose") {
        let (a, b) = (op(&v["a"]), op(&v["b"]));
        let composed = a.compose(&b).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(composed.to_json(), v["result"], "{v}");
        let stepwise = a.apply(text(&v["text"])).and_then(|t| b.apply(&t));
        assert_eq!(composed.apply(text(&v["text"])), stepwise, "{v}");
    }
}

#[test]
fn transform_vectors_hold() {
    for v in section(&load(), "transform") {
        let (a, b) = (op(&v["a"]), op(&v["b"]));
        let (a_prime, b_prime) = Operation::transform(&a, &b).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(
            (a_prime.to_json(), b_prime.to_json()),
            (v["a_prime"].clone(), v["b_prime"].clone()),
            "{v}"
        );
        let base = text(&v["text"]);
        let via_a = a.apply(base).and_then(|t| b_prime.apply(&t));
        let via_b = b.apply(base).and_then(|t| a_prime.apply(&t));
        assert!(via_a.is_ok() && via_a == via_b, "{v}: {via_a:?} != {via_b:?}");
    }
}

#[test]
fn transform_index_vectors_hold() {
    for v in section(&load(), "transform_index") {
        let index = v["index"].as_u64().expect("index is a count") as usize;
        let result = v["result"].as_u64().expect("result is a count") as usize;
        assert_eq!(op(&v["op"]).transform_index(index), result, "{v}");
    }
}

#[test]
fn invert_vectors_hold() {
    for v in section(&load(), "invert") {
        let (o, base) = (op(&v["op"]), text(&v["text"]));
        let inverse = o.invert(base).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(inverse.to_json(), v["result"], "{v}");
        let back = o.apply(base).and_then(|t| inverse.apply(&t));
        assert_eq!(back.as_deref(), Ok(base), "{v}");
    }
}

#[test]
fn invalid_vectors_fail_as_stated() {
    for v in section(&load(), "invalid") {
        let outcome = Operation::from_json(&v["op"]).and_then(|o| o.apply(text(&v["text"])));
        let error = outcome.expect_err(&format!("{v} should fail"));
        assert_eq!(error_code(&error), v["error"], "{v}: {error}");
    }
}
