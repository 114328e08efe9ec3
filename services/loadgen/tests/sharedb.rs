//! The typing presets against a real ShareDB 7 server (`deploy/sharedb.sh run 0`, installed by the
//! same script: `npm ci` into a cache outside the clone), and the load generator's port of
//! `ot-text-unicode` ([`tandem_loadgen::text_unicode`]) against `ot-text-unicode` itself. Skipped,
//! saying so, only when Node.js is not installed. Asserts convergence, no error, every keystroke
//! acknowledged and delivered, identical ops; nothing about timing.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tandem_loadgen::report::Report;
use tandem_loadgen::text_unicode::{Op, Side};
use tandem_loadgen::typing::TypingConfig;
use tandem_loadgen::{sharedb_editor, RunConfig};

/// The clone's root, found at run time: the target folder is shared between clones, and cargo may
/// reuse this test binary built in another one (see `tandem_integration_tests::manifest_dir`).
fn root() -> PathBuf {
    tandem_integration_tests::manifest_dir().join("..")
}

/// These tests are the only check of the load generator's ShareDB client against the JavaScript
/// it must match: without Node.js they fail, saying how to get it, rather than pass unseen.
fn require_node() {
    let found =
        Command::new("node").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(
        found,
        "node is not installed: deploy/install-browser-test-deps.sh installs it (`make test` runs it)"
    );
}

/// Installs ShareDB's packages once per test process (two `npm ci` at once would collide).
fn install() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*installed {
        let status = Command::new("bash")
            .arg(root().join("deploy/sharedb.sh"))
            .arg("install")
            .stdout(Stdio::null())
            .status()
            .expect("run deploy/sharedb.sh install");
        assert!(status.success(), "deploy/sharedb.sh install failed");
        *installed = true;
    }
}

/// A ShareDB server on a free port, stopped (SIGTERM, then SIGKILL) when dropped.
struct ShareDb {
    child: Child,
    url: String,
}

impl ShareDb {
    fn start() -> Self {
        install();
        let mut child = Command::new("bash")
            .arg(root().join("deploy/sharedb.sh"))
            .args(["run", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start deploy/sharedb.sh run 0");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Self { child, url },
            Err(_) => {
                let _ = child.kill();
                panic!("ShareDB did not say where it listens within 120 s");
            }
        }
    }
}

impl Drop for ShareDb {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(preset: &'static str, url: &str, docs: usize, clients: usize, rate: f64) -> TypingConfig {
    TypingConfig {
        preset,
        run: RunConfig {
            urls: vec![url.to_owned()],
            token: None,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            settle_timeout: Duration::from_secs(20),
            seed: tandem_integration_tests::seed(),
            label: Some("sharedb test".into()),
            progress: false,
            watch: Vec::new(),
        },
        docs,
        clients,
        rate,
    }
}

/// What must hold after any clean run: converged, nothing lost, every delivery matched, and the
/// timeline (the progress line's figures) counting the run's clients and their ops.
fn assert_clean(report: &Report, clients_per_doc: u64) {
    println!("{}", report.table());
    let clients = report.timeline.iter().map(|s| s.clients).max();
    assert_eq!(clients, Some(report.convergence.clients), "the timeline counts every client");
    assert!(report.timeline.iter().map(|s| s.sent).sum::<u64>() > 0, "the timeline counts the ops sent");
    assert!(report.convergence.converged, "{:?}", report.convergence);
    assert_eq!(report.errors.total, 0, "{:?}", report.errors);
    assert!(report.edits.submitted > 0);
    assert_eq!((report.edits.lost, report.edits.unacked, report.edits.records_dropped), (0, 0, 0));
    assert_eq!(report.matching.acked, report.edits.submitted, "every measured keystroke acknowledged");
    let m = &report.matching;
    assert_eq!((m.deliveries_missing, m.deliveries_orphaned, m.author_mismatches), (0, 0, 0), "{m:?}");
    assert_eq!(
        report.remote_latency_ms.count,
        (clients_per_doc - 1) * m.acked,
        "a sample per keystroke and receiver"
    );
    assert!(report.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_max_converge_against_sharedb() {
    require_node();
    let server = ShareDb::start();
    let typing = sharedb_editor::run(&config("typing", &server.url, 4, 3, 20.0)).await.expect("typing runs");
    assert_clean(&typing, 3);
    assert_eq!(typing.convergence.clients, 12);
    let max = sharedb_editor::run(&config("max", &server.url, 4, 2, 200.0)).await.expect("max runs");
    assert_clean(&max, 2);
    // One document, many clients: concurrent ops transformed at every replica.
    let hot = sharedb_editor::run(&config("hot-doc", &server.url, 1, 8, 30.0)).await.expect("hot-doc runs");
    assert_clean(&hot, 8);
}

/// Runs `script` in node from deploy/sharedb (so it finds ShareDB's packages) with `input` as JSON on
/// its stdin; returns what it prints, as JSON.
fn node(script: &str, input: &Value) -> Value {
    let mut node = Command::new("node")
        .args(["-e", script])
        .current_dir(root().join("deploy/sharedb"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().expect("piped stdin");
    stdin.write_all(input.to_string().as_bytes()).expect("write the input");
    drop(stdin);
    let output = node.wait_with_output().expect("node runs");
    assert!(output.status.success(), "node failed");
    serde_json::from_slice(&output.stdout).expect("node's answer")
}

/// A random `ot-text-unicode` op on `text` in wire form, and the length of the text it leaves:
/// skips, inserts (astral characters too) and deletes (counted or spelled out) in any order, so
/// delete-then-insert as well as insert-then-delete, neighbouring inserts or deletes left apart
/// (valid, not normalized); now and then an op `ot-text-unicode` refuses or cannot apply, a delete
/// past the end of the text or a spelled-out delete that does not match it.
fn random_op(rng: &mut SmallRng, text: &[char]) -> (Value, usize) {
    let (len, mut op, mut at, mut after) = (text.len(), Vec::new(), 0, text.len());
    while rng.gen_bool(0.75) {
        let n = rng.gen_range(1..=3).min(len.saturating_sub(at));
        match rng.gen_range(0..4) {
            0 if n > 0 && !op.last().is_some_and(Value::is_number) => op.push(json!(n)),
            1 | 2 if n > 0 => {
                // Now and then a spelled-out delete that does not match the text.
                let spelled: String =
                    if rng.gen_bool(0.05) { "q".repeat(n) } else { text[at..at + n].iter().collect() };
                op.push(json!({"d": if rng.gen_bool(0.5) { json!(n) } else { json!(spelled) }}));
                after -= n;
            }
            _ => {
                let insert = ["a", "é", "xy", "🙂", "b🙂"][rng.gen_range(0..5)];
                op.push(json!(insert));
                after += insert.chars().count();
                continue;
            }
        }
        at += n;
    }
    if op.last().is_some_and(Value::is_number) {
        op.pop();
    }
    if rng.gen_bool(0.03) {
        match rng.gen_range(0..8) {
            0 => op.push(json!(1)),
            1 => op.insert(0, json!(0)),
            2 => op.push(json!("")),
            3 => op.push(json!({"d": 0})),
            4 => op.push(json!({"d": ""})),
            5 => op.push(json!({"d": len + 2})),
            6 => op.push(json!({"d": "qq"})),
            _ => op.extend([json!(len + 1), json!("!")]),
        }
    }
    (Value::Array(op), after)
}

/// Where `op` inserts (code points of the text it applies to), and where of those right after a
/// delete: such an insert tied with another op's insert is the case Tandem's `Operation` got wrong.
fn inserts(op: &Value) -> (Vec<u64>, Vec<u64>) {
    let (mut at, mut inserts, mut after_delete, mut deleting) = (0, Vec::new(), Vec::new(), false);
    for c in op.as_array().into_iter().flatten() {
        match c {
            Value::String(_) => {
                inserts.push(at);
                if deleting {
                    after_delete.push(at);
                }
            }
            Value::Number(n) => at += n.as_u64().unwrap_or(0),
            _ => {
                let d = &c["d"];
                at += d.as_u64().unwrap_or_else(|| d.as_str().map_or(0, |s| s.chars().count() as u64));
            }
        }
        deleting = c.is_object();
    }
    (inserts, after_delete)
}

/// What `ot-text-unicode` gives for each case `[text, a, b, c]` (`a` and `b` on `text`, `c` on `a`'s
/// result): its normalize, apply, transform on both sides both ways, compose; an error's message.
const OT_TEXT_UNICODE: &str = r#"
    const { type } = require('ot-text-unicode');
    const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    // normalize changes the deletes of its argument: every call gets its own copy.
    const copy = x => JSON.parse(JSON.stringify(x));
    const run = f => { try { return f(); } catch (e) { return { error: e.message }; } };
    console.log(JSON.stringify(cases.map(([text, a, b, c]) => ({
        normalize: run(() => type.normalize(copy(a))),
        apply: run(() => type.apply(text, copy(a))),
        a_left: run(() => type.transform(copy(a), copy(b), 'left')),
        a_right: run(() => type.transform(copy(a), copy(b), 'right')),
        b_left: run(() => type.transform(copy(b), copy(a), 'left')),
        b_right: run(() => type.transform(copy(b), copy(a), 'right')),
        compose: run(() => type.compose(copy(a), copy(c))),
    }))));
"#;

/// The same through the load generator's port ([`tandem_loadgen::text_unicode`]).
fn port(text: &str, a: &Value, b: &Value, c: &Value) -> Value {
    let [a, b, c] = [a, b, c].map(|op| Op::from_wire(op).expect("a well-formed op"));
    let error = |e: anyhow::Error| json!({"error": e.to_string()});
    let wire = |op: anyhow::Result<Op>| op.map_or_else(error, |op| op.to_wire());
    json!({
        "normalize": a.normalize().to_wire(),
        "apply": a.apply(text).map_or_else(error, Value::from),
        "a_left": wire(a.transform(&b, Side::Left)),
        "a_right": wire(a.transform(&b, Side::Right)),
        "b_left": wire(b.transform(&a, Side::Left)),
        "b_right": wire(b.transform(&a, Side::Right)),
        "compose": wire(a.compose(&c)),
    })
}

/// The load generator's port of `ot-text-unicode` ([`tandem_loadgen::text_unicode`], what its
/// ShareDB replicas keep ops as) gives exactly what `ot-text-unicode` gives, on random ops:
/// normalize, apply, transform (both sides, both ways) and compose, component for component,
/// errors included. Replay a seed with `TANDEM_SEED`.
#[test]
fn text_unicode_matches_ot_text_unicode() {
    require_node();
    install();
    let seed = tandem_integration_tests::seed();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cases = Vec::new();
    let mut ties = 0;
    for _ in 0..4000 {
        let text: Vec<char> =
            (0..rng.gen_range(0..8)).map(|_| ['a', 'b', 'ü', '🙂'][rng.gen_range(0..4)]).collect();
        // Now and then `b` was made on a text of another length: ops that do not fit each other.
        let b_text = if rng.gen_bool(0.1) { text[..text.len() / 2].to_vec() } else { text.clone() };
        let ((a, a_len), (b, _)) = (random_op(&mut rng, &text), random_op(&mut rng, &b_text));
        let c_text: Vec<char> = (0..a_len).map(|_| 'c').collect();
        let (c, _) = random_op(&mut rng, &c_text);
        let ((a_inserts, a_tied), (b_inserts, b_tied)) = (inserts(&a), inserts(&b));
        if a_tied.iter().any(|at| b_inserts.contains(at)) || b_tied.iter().any(|at| a_inserts.contains(at)) {
            ties += 1;
        }
        cases.push(json!([text.iter().collect::<String>(), a, b, c]));
    }
    // The tie that used to diverge, as it came: the committed op first, the op in flight second.
    cases.push(json!(["abcdefgh", [5, {"d": 1}, "x"], [6, "y"], [5, {"d": 1}]]));
    eprintln!("{} cases, {ties} with a delete-then-insert tied with an insert of the other op", cases.len());
    assert!(ties > 50, "seed {seed}: the cases cover the tie ({ties})");
    let answers = node(OT_TEXT_UNICODE, &Value::Array(cases.clone()));
    let answers = answers.as_array().expect("an answer per case");
    assert_eq!(answers.len(), cases.len());
    let refused = answers.iter().filter(|a| a["a_left"].get("error").is_some()).count();
    eprintln!("{refused} with an op ot-text-unicode refuses");
    for (case, answer) in cases.iter().zip(answers) {
        let text = case[0].as_str().expect("the text");
        let ours = port(text, &case[1], &case[2], &case[3]);
        assert_eq!(&ours, answer, "seed {seed}: the port (left) and ot-text-unicode (right) on {case}");
    }
}

/// The tie that made about one ShareDB `max` run in eight end with a replica of the server's length
/// but not its text: the server commits an op that deletes "f" then inserts "x" while a client's op
/// inserting "y" right after the "f" is in flight. The server transforms the client's op on the
/// left, the client the committed op on the right; Tandem's `Operation` (insert before delete)
/// gave the client the other text (`abcdexygh`), the port gives it the server's.
#[test]
fn the_delete_then_insert_tie_resolves_as_at_the_server() {
    require_node();
    install();
    let (text, committed, own) = ("abcdefgh", json!([5, {"d": 1}, "x"]), json!([6, "y"]));
    let script = r#"
        const { type } = require('ot-text-unicode');
        const [text, committed, own] = JSON.parse(require('fs').readFileSync(0, 'utf8'));
        const server = type.apply(type.apply(text, committed), type.transform(own, committed, 'left'));
        const client = type.apply(type.apply(text, own), type.transform(committed, own, 'right'));
        console.log(JSON.stringify([server, client]));
    "#;
    let answer = node(script, &json!([text, committed, own]));
    let (server, client) = (answer[0].as_str().expect("a text"), answer[1].as_str().expect("a text"));
    assert_eq!(client, server, "ot-text-unicode converges");

    let (committed, own) = (Op::from_wire(&committed).unwrap(), Op::from_wire(&own).unwrap());
    let after = committed.transform(&own, Side::Right).unwrap();
    assert_eq!(after.apply(&own.apply(text).unwrap()).unwrap(), server, "the port, at the client");
    let own_after = own.transform(&committed, Side::Left).unwrap();
    assert_eq!(own_after.apply(&committed.apply(text).unwrap()).unwrap(), server, "the port, at the server");
}
