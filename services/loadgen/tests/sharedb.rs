//! The typing presets against a real ShareDB 7 server (`deploy/sharedb.sh run 0`, installed by the
//! same script: `npm ci` into a cache outside the clone), and the load generator's text transform
//! against `ot-text-unicode`'s own. Skipped, saying so, only when Node.js is not installed.
//! Asserts convergence, no error, every keystroke acknowledged and delivered; nothing about timing.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tandem_loadgen::report::Report;
use tandem_loadgen::sharedb::{from_wire, to_wire};
use tandem_loadgen::typing::TypingConfig;
use tandem_loadgen::{sharedb_editor, RunConfig};

/// The clone's root, found at run time: the target folder is shared between clones, and cargo may
/// reuse this test binary built in another one (see `tandem_integration_tests::manifest_dir`).
fn root() -> PathBuf {
    tandem_integration_tests::manifest_dir().join("..")
}

fn node_missing() -> bool {
    let found =
        Command::new("node").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: node is not installed (deploy/install-browser-test-deps.sh installs it)");
    }
    !found
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
    if node_missing() {
        return;
    }
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

/// A random `ot-text-unicode` op on a text of `len` characters: skips, inserts and deletes.
fn random_op(rng: &mut SmallRng, len: usize) -> Value {
    let mut op = Vec::new();
    let mut at = 0;
    while at < len && rng.gen_bool(0.7) {
        let n = rng.gen_range(1..=(len - at).min(3));
        match rng.gen_range(0..3) {
            0 => op.push(json!(n)),
            1 => op.push(json!({"d": n})),
            _ => {
                op.push(json!(["a", "é", "xy", "🙂"][rng.gen_range(0..4)]));
                continue;
            }
        }
        at += n;
    }
    if rng.gen_bool(0.5) {
        op.push(json!("z"));
    }
    // ot-text-unicode refuses a trailing skip and adjacent skips: normalise through the conversion.
    to_wire(&from_wire(&Value::Array(op), len).expect("a valid op"))
}

/// Tandem's `transform(a, b)` (a's insert left of b's on a tie) gives the ops `ot-text-unicode` gives
/// for `transform(a, b, 'left')` and `transform(b, a, 'right')`: the sides ShareDB's server and
/// client use, so the load generator's replicas transform as ShareDB does.
#[test]
fn transform_matches_ot_text_unicode() {
    if node_missing() {
        return;
    }
    install();
    let seed = tandem_integration_tests::seed();
    let mut rng = SmallRng::seed_from_u64(seed);
    let cases: Vec<(usize, Value, Value)> = (0..3000)
        .map(|_| {
            let len = rng.gen_range(0..8);
            (len, random_op(&mut rng, len), random_op(&mut rng, len))
        })
        .collect();
    let script = r#"
        const { type } = require('ot-text-unicode');
        const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
        console.log(JSON.stringify(cases.map(([a, b]) => [type.transform(a, b, 'left'), type.transform(b, a, 'right')])));
    "#;
    let mut node = Command::new("node")
        .args(["-e", script])
        .current_dir(root().join("deploy/sharedb"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let input = Value::Array(cases.iter().map(|(_, a, b)| json!([a, b])).collect()).to_string();
    node.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("write the cases");
    let output = node.wait_with_output().expect("node runs");
    assert!(output.status.success(), "node failed");
    let answers: Vec<(Value, Value)> = serde_json::from_slice(&output.stdout).expect("node's answer");
    for ((len, a, b), (a_left, b_right)) in cases.iter().zip(answers) {
        let (a_op, b_op) = (from_wire(a, *len).unwrap(), from_wire(b, *len).unwrap());
        let (a_prime, b_prime) = tandem_ot::Operation::transform(&a_op, &b_op).unwrap();
        let context = format!("seed {seed}: a {a} b {b} on {len} characters");
        assert_eq!(from_wire(&a_left, b_op.target_len()).unwrap(), a_prime, "{context}");
        assert_eq!(from_wire(&b_right, a_op.target_len()).unwrap(), b_prime, "{context}");
    }
}
