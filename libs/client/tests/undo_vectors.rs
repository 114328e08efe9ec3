//! The undo test vectors shared with the JavaScript client (`libs/client/vectors/undo-vectors.json`,
//! format in `libs/client/vectors/README.md`): scripts of local edits, other clients' ops, acks,
//! undo, redo, breaks and resets on one document, with what the client must answer after each step.
//!
//! The file is generated here from the scripts of `undo_vectors/scripts.rs`: hand-written ones, each
//! with the texts that the undo rules of the crate docs give, worked out by hand and asserted while
//! generating; then random ones from a fixed seed against a model server. `the_file_is_what_the_generator_writes` fails when the file
//! differs from the generator's output; `TANDEM_UPDATE_VECTORS=1 cargo test -p tandem-client --test
//! undo_vectors the_file` rewrites it (review the diff). `the_vectors_hold` replays the file as it is.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tandem_client::{DocId, DocumentClient, Operation, OutgoingOp, UndoOptions};

#[path = "undo_vectors/scripts.rs"]
mod scripts;

fn vectors_path() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("vectors/undo-vectors.json")
}

fn op(value: &Value) -> Operation {
    Operation::from_json(value).unwrap_or_else(|e| panic!("{value} is not a valid op: {e}"))
}

fn sent(out: Option<OutgoingOp>) -> Value {
    out.map_or(Value::Null, |o| json!({"seq": o.seq, "base": o.base, "op": o.op}))
}

/// Runs a scenario's steps (their inputs) through a [`DocumentClient`] and returns each step with its
/// outputs filled in: `sent`, `applied`, `text`, `can_undo`, `can_redo`.
fn replay(scenario: &Value) -> Vec<Value> {
    let start = Instant::now();
    let options = UndoOptions {
        depth: scenario["depth"].as_u64().expect("depth") as usize,
        group_window: Duration::from_millis(scenario["window_ms"].as_u64().expect("window_ms")),
    };
    let version = scenario["version"].as_u64().expect("version");
    let text = scenario["text"].as_str().expect("text");
    let mut c =
        DocumentClient::new(DocId::parse("d").expect("valid id"), version, text).with_undo_options(options);
    let mut out = Vec::new();
    for step in scenario["steps"].as_array().expect("steps") {
        let what = |e: &dyn std::fmt::Display| format!("{} at {step}: {e}", scenario["name"]);
        let (to_send, applied) = match step["do"].as_str().expect("do") {
            "edit" => {
                let at = start + Duration::from_millis(step["at"].as_u64().expect("at"));
                (c.local_edit_at(op(&step["op"]), at).unwrap_or_else(|e| panic!("{}", what(&e))), None)
            }
            "remote" => {
                let version = step["version"].as_u64().expect("version");
                (
                    None,
                    Some(
                        c.on_remote_op(version, &op(&step["op"])).unwrap_or_else(|e| panic!("{}", what(&e))),
                    ),
                )
            }
            "ack" => {
                let (seq, version) =
                    (step["seq"].as_u64().expect("seq"), step["version"].as_u64().expect("version"));
                (c.on_ack(seq, version).unwrap_or_else(|e| panic!("{}", what(&e))), None)
            }
            kind @ ("undo" | "redo") => {
                let edit = if kind == "undo" { c.undo() } else { c.redo() };
                match edit.unwrap_or_else(|e| panic!("{}", what(&e))) {
                    Some(edit) => (edit.outgoing, Some(edit.op)),
                    None => (None, None),
                }
            }
            "break" => {
                c.break_undo_group();
                (None, None)
            }
            "reset" => {
                c.reset(step["version"].as_u64().expect("version"), step["text"].as_str().expect("text"));
                (None, None)
            }
            other => panic!("unknown step {other}"),
        };
        let mut step = step.clone();
        let fields = step.as_object_mut().expect("a step is an object");
        fields.insert("sent".into(), sent(to_send));
        fields.insert("applied".into(), applied.map_or(Value::Null, |o| o.to_json()));
        fields.insert("text".into(), c.text().into());
        fields.insert("can_undo".into(), c.can_undo().into());
        fields.insert("can_redo".into(), c.can_redo().into());
        out.push(Value::Object(fields.clone()));
    }
    out
}

fn generate() -> Vec<Value> {
    let mut scenarios = Vec::new();
    for script in scripts::hand_written() {
        let scenario = script.scenario();
        let steps = replay(&scenario);
        for (index, text) in &script.expected {
            assert_eq!(steps[*index]["text"], *text, "{}: step {index} ({})", script.name, steps[*index]);
        }
        scenarios.push(with_steps(scenario, steps));
    }
    let mut rng = StdRng::seed_from_u64(scripts::SEED);
    for index in 0..30 {
        scenarios.push(scripts::random_script(&mut rng, index));
    }
    scenarios
}

fn with_steps(mut scenario: Value, steps: Vec<Value>) -> Value {
    scenario["steps"] = Value::Array(steps);
    scenario
}

/// Keys come in this order (inputs, then outputs), whatever map serde_json was built with.
const KEY_ORDER: &[&str] = &[
    "name",
    "do",
    "version",
    "seq",
    "base",
    "op",
    "at",
    "depth",
    "window_ms",
    "sent",
    "applied",
    "text",
    "can_undo",
    "can_redo",
];

/// The file's text: one scenario header per line, then one step per line; every non-ASCII character
/// escaped as `\uXXXX`, as in the OT vectors.
fn render(scenarios: &[Value]) -> String {
    let mut out = String::from("{\n  \"scenarios\": [\n");
    for (i, scenario) in scenarios.iter().enumerate() {
        let mut header = scenario.clone();
        header.as_object_mut().expect("a scenario is an object").remove("steps");
        let header = compact(&header);
        out.push_str(&format!("    {},\n      \"steps\": [\n", &header[..header.len() - 1]));
        let steps = scenario["steps"].as_array().expect("steps");
        for (j, step) in steps.iter().enumerate() {
            out.push_str(&format!(
                "        {}{}\n",
                compact(step),
                if j + 1 < steps.len() { "," } else { "" }
            ));
        }
        out.push_str(if i + 1 < scenarios.len() { "      ]},\n" } else { "      ]}\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

fn compact(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| (KEY_ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX), k.as_str()));
            let fields: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!("{}:{}", ascii_only(&Value::from(k.as_str()).to_string()), compact(&map[*k]))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(compact).collect::<Vec<_>>().join(",")),
        other => ascii_only(&other.to_string()),
    }
}

/// Escapes every non-ASCII character; in serde_json's output they only occur inside strings.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[test]
fn the_file_is_what_the_generator_writes() {
    let expected = render(&generate());
    if std::env::var_os("TANDEM_UPDATE_VECTORS").is_some() {
        std::fs::write(vectors_path(), &expected).expect("write the vectors file");
    }
    let actual = std::fs::read_to_string(vectors_path()).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date: run `TANDEM_UPDATE_VECTORS=1 cargo test -p tandem-client --test undo_vectors the_file`",
        vectors_path().display()
    );
}

#[test]
fn the_vectors_hold() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let scenarios = file["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 40, "only {} scenarios", scenarios.len());
    for scenario in scenarios {
        let steps = scenario["steps"].as_array().expect("steps");
        assert_eq!(&replay(scenario), steps, "{}", scenario["name"]);
    }
}
