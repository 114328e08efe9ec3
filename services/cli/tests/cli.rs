//! The `tandem` binary against a real `tandem-standalone` (built first: `cargo build -p
//! tandem-standalone`, or set `TANDEM_BIN`), authenticated with development JWTs: every subcommand,
//! its text and JSON output, and its exit codes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_integration_tests::auth::DevKeys;
use tandem_integration_tests::Standalone;
use tandem_ot::Operation;

/// How long a test waits for one line of a watch.
const LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// A server requiring tokens, and the CLI pointed at it as user `alice` (read and write `cli/*`).
struct Setup {
    _server: Standalone,
    keys: DevKeys,
    address: String,
    token: String,
}

impl Setup {
    fn start() -> Self {
        let keys = DevKeys::new();
        let server = Standalone::builder().jwt_key_file(&keys.key_file()).start();
        let address = grpc_address(&server);
        let token = keys.token("alice", &["cli/*"], &["cli/*"]);
        Self { _server: server, keys, address, token }
    }

    /// `tandem ARGS` with the address and token in the environment (TANDEM_ADDRESS, TANDEM_TOKEN).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(args)
            .env_remove("TANDEM_TOKEN_FILE")
            .env("TANDEM_ADDRESS", &self.address)
            .env("TANDEM_TOKEN", &self.token);
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "")
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tandem starts");
        child.stdin.take().unwrap().write_all(input.as_bytes()).expect("write stdin");
        Run::of(args, child.wait_with_output().expect("tandem runs"))
    }

    /// Runs and requires success; the stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout
    }

    /// Runs with `--json` and requires success; the one JSON object printed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("one JSON object")
    }
}

/// The gRPC address of the server: the Documents API is served on the gateway's HTTP port.
fn grpc_address(server: &Standalone) -> String {
    let ws = server.ws_url();
    ws.trim_start_matches("ws://").trim_end_matches("/v1/ws").to_owned()
}

#[derive(Debug)]
struct Run {
    /// The command line, shown by `Debug` in failure messages.
    #[allow(dead_code)]
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(args: &[&str], output: Output) -> Self {
        Self {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    /// Fails with `code`, and stderr names the gRPC and API codes.
    fn fails(&self, code: i32, grpc: &str, api: &str) {
        assert_eq!(self.code, code, "{self:?}");
        let named = format!("{grpc} ({api})");
        assert!(self.stderr.contains(&named), "stderr does not name {named}: {self:?}");
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn get_apply_history_diff_and_checkpoints_work_and_name_their_failures() {
    let s = Setup::start();
    let doc = "cli/notes";
    assert_eq!(s.ok(&["get", doc]), "", "a new document is the empty text");
    assert_eq!(s.json(&["get", doc])["version"], 0);

    let first = s.ok(&["apply", doc, "--base", "0", "--op", r#"["hello"]"#]);
    assert_eq!(first.trim(), r#"committed as version 1: ["hello"]"#);
    // The same request id again: the first result, nothing applied twice.
    let apply = ["apply", doc, "--base", "1", "--insert-at", "5", " world", "--request-id", "r-1"];
    assert_eq!(s.json(&apply)["version"], 2);
    let retry = s.json(&apply);
    assert_eq!((retry["version"].as_u64(), retry["duplicate"].as_bool()), (Some(2), Some(true)), "{retry}");
    assert!(s.ok(&apply).starts_with("already committed as version 2"));
    // A stale base: transformed past version 2 on the server.
    let stale = s.json(&["apply", doc, "--base", "1", "--delete-at", "0", "1"]);
    assert_eq!((stale["version"].as_u64(), &stale["op"]), (Some(3), &serde_json::json!([-1, 10])));
    assert_eq!(s.ok(&["get", doc]), "ello world");
    assert_eq!(s.ok(&["get", doc, "--version", "1"]), "hello");
    // A generated request id is printed so the edit can be retried.
    let generated = s.run(&["apply", doc, "--base", "3", "--op", r#"[10, "!"]"#]);
    assert_eq!(generated.code, 0, "{generated:?}");
    assert!(generated.stderr.contains("--request-id "), "{generated:?}");

    let history = s.ok(&["history", doc]);
    let rows: Vec<&str> = history.lines().collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(rows[0].starts_with("1  ") && rows[0].contains("  alice  [\"hello\"]"), "{history}");
    // Pages of one event: every event is still printed, once, in order.
    let paged = lines(&s.ok(&["history", doc, "--page-size", "1", "--json"]));
    let versions: Vec<u64> = paged.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert!(paged.iter().all(|e| e["author"] == "alice" && e["committed_at_ms"].as_i64() > Some(0)));
    let range = lines(&s.ok(&["history", doc, "--from", "1", "--to", "2", "--json"]));
    assert_eq!((range.len(), &range[0]["op"]), (1, &serde_json::json!([5, " world"])));

    // The diff turns version 1 into version 4.
    let diff = s.ok(&["diff", doc, "1", "4"]);
    let op = Operation::from_json(&serde_json::from_str(diff.trim()).unwrap()).unwrap();
    assert_eq!(op.apply("hello").unwrap(), "ello world!");

    let created = s.json(&["checkpoint", "create", doc, "first draft", "--version", "1"]);
    assert_eq!((created["name"].as_str(), created["version"].as_u64()), (Some("first draft"), Some(1)));
    assert!(s
        .ok(&["checkpoint", "create", doc, "first draft", "--version", "1"])
        .contains("names version 1"));
    s.ok(&["checkpoint", "create", doc, "latest"]);
    let listed = s.json(&["checkpoint", "list", doc]);
    let names: Vec<&str> =
        listed["checkpoints"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first draft", "latest"]);
    assert!(s.ok(&["checkpoint", "list", doc]).contains("1  first draft  alice  "));

    // Failures: the gRPC code, the API error and a distinct exit code.
    s.run(&["checkpoint", "create", doc, "first draft", "--version", "2"]).fails_with(9, "ALREADY_EXISTS");
    s.run(&["get", doc, "--version", "99"]).fails(6, "NOT_FOUND", "not_found");
    s.run(&["apply", doc, "--base", "0", "--op", "[3]"]).fails(8, "FAILED_PRECONDITION", "invalid_op");
    let bad_op = s.run(&["apply", doc, "--base", "0", "--op", "{\"x\": 1}"]);
    assert_eq!(bad_op.code, 2, "{bad_op:?}");
    assert!(bad_op.stderr.contains("--op: ") && bad_op.stderr.contains("JSON array"), "{bad_op:?}");
    let past_end = s.run(&["apply", doc, "--base", "1", "--insert-at", "6", "x"]);
    assert_eq!(past_end.code, 2, "{past_end:?}");
    assert!(past_end.stderr.contains("version 1 has 5 characters"), "{past_end:?}");
}

impl Run {
    /// Like [`Run::fails`], for statuses whose ApiError code the test does not pin.
    fn fails_with(&self, code: i32, grpc: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.contains(grpc), "stderr does not name {grpc}: {self:?}");
    }
}

#[test]
fn tokens_that_do_not_verify_or_allow_are_named_with_their_exit_codes() {
    let s = Setup::start();
    let forged = s.keys.forged_token("mallory", &["*"]);
    let mut wrong = s.command(&["get", "cli/a"]);
    let run = Run::of(&["get"], wrong.env("TANDEM_TOKEN", &forged).output().unwrap());
    run.fails(4, "UNAUTHENTICATED", "unauthorized");
    assert!(run.stderr.contains("hint: give a valid token"), "{run:?}");

    let json = Run::of(
        &["get"],
        s.command(&["get", "cli/a", "--json"]).env("TANDEM_TOKEN", &forged).output().unwrap(),
    );
    assert_eq!(json.code, 4);
    let error: Value = serde_json::from_str(json.stderr.trim()).expect("a JSON error on stderr");
    assert_eq!(
        (error["error"]["grpc_code"].as_str(), error["error"]["exit_code"].as_u64()),
        (Some("UNAUTHENTICATED"), Some(4))
    );

    // No token at all, against a server that requires one.
    let none = Run::of(&["get"], s.command(&["get", "cli/a"]).env_remove("TANDEM_TOKEN").output().unwrap());
    none.fails_with(4, "UNAUTHENTICATED");

    // A reader of cli/* who may not write, from a token file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reader.token");
    std::fs::write(&file, s.keys.token("reader", &["cli/*"], &[]) + "\n").unwrap();
    let reader = |args: &[&str]| {
        let output =
            s.command(args).env_remove("TANDEM_TOKEN").arg("--token-file").arg(&file).output().unwrap();
        Run::of(args, output)
    };
    assert_eq!(reader(&["get", "cli/a"]).code, 0);
    reader(&["apply", "cli/a", "--base", "0", "--op", "[\"x\"]"]).fails(5, "PERMISSION_DENIED", "forbidden");
    reader(&["get", "other/a"]).fails(5, "PERMISSION_DENIED", "forbidden");

    // Nobody listening there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut nobody = s.command(&["get", "cli/a"]);
    let run = Run::of(&["get"], nobody.env("TANDEM_ADDRESS", format!("127.0.0.1:{port}")).output().unwrap());
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("connect to http://127.0.0.1:"), "{run:?}");
}

/// A running `tandem watch`, its stdout read line by line on a thread.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(s: &Setup, args: &[&str]) -> Self {
        let mut child = s.command(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(LINE_TIMEOUT).expect("the watch prints a line in time");
        serde_json::from_str(&line).expect("a JSON line")
    }

    /// The exit code, once the process ends on its own.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the watch did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_catches_up_follows_live_edits_and_ends_on_ctrl_c_or_deletion() {
    let s = Setup::start();
    let doc = "cli/watched";
    s.ok(&["apply", doc, "--base", "0", "--op", r#"["ab"]"#]);
    s.ok(&["apply", doc, "--base", "1", "--op", r#"[2, "c"]"#]);

    let mut watch = Watch::start(&s, &["watch", doc, "--from", "1", "--json"]);
    let v2 = watch.next();
    assert_eq!(
        (v2["type"].as_str(), v2["version"].as_u64(), &v2["op"]),
        (Some("committed"), Some(2), &serde_json::json!([2, "c"]))
    );
    assert_eq!(watch.next(), serde_json::json!({"type": "caught_up", "version": 2}));
    s.ok(&["apply", doc, "--base", "2", "--op", r#"[3, "d"]"#]);
    let live = watch.next();
    assert_eq!((live["version"].as_u64(), live["author"].as_str()), (Some(3), Some("alice")));

    // A second watcher, stopped with Ctrl-C: exit 0.
    let mut interrupted = Watch::start(&s, &["watch", doc]);
    assert!(interrupted.lines.recv_timeout(LINE_TIMEOUT).unwrap().starts_with("1  "));
    let pid = interrupted.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    assert_eq!(interrupted.exit_code(), 0, "Ctrl-C ends a watch normally");

    // Deletion asks first; anything but yes keeps the document.
    let refused = s.run_with_input(&["delete", doc], "n\n");
    assert_eq!(refused.code, 11, "{refused:?}");
    assert!(refused.stderr.contains("not confirmed"), "{refused:?}");
    assert_eq!(s.ok(&["get", doc]), "abcd");
    let deleted = s.run_with_input(&["delete", doc], "yes\n");
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(deleted.stdout.contains("its last version was 3"), "{deleted:?}");

    assert_eq!(
        watch.next(),
        serde_json::json!({"type": "deleted", "doc": doc, "last_version": 3, "author": "alice"})
    );
    assert_eq!(watch.exit_code(), 0, "the watch ends with the document");
    assert_eq!(s.json(&["get", doc])["version"], 0, "the id starts again from version 0");
    assert_eq!(s.json(&["delete", doc, "--yes"])["last_version"], 0);
}

#[test]
fn export_then_import_reproduces_the_document_and_a_re_run_applies_nothing_twice() {
    let s = Setup::start();
    let source = "cli/source";
    let edits: [(&str, &str); 5] = [
        ("0", r#"["Grüße, "]"#),
        ("1", r#"[7, "wörld 😀"]"#),
        ("2", r#"[1, -1, "R", 12]"#),
        ("3", r#"[14, "\n"]"#),
        ("4", r#"[-3, 12]"#),
    ];
    for (base, op) in edits {
        s.ok(&["apply", source, "--base", base, "--op", op]);
    }
    let export = s.ok(&["export", source]);
    let events = lines(&export);
    assert_eq!(events.len(), 5);
    for (i, e) in events.iter().enumerate() {
        for field in ["version", "author", "client", "seq", "committed_at_ms", "op"] {
            assert!(e.get(field).is_some(), "event {i} lacks {field}: {e}");
        }
        assert_eq!(e["version"], i as u64 + 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.jsonl");
    std::fs::write(&file, &export).unwrap();
    let file = file.to_str().unwrap();

    let copy = "cli/copy";
    let summary = s.json(&["import", copy, file]);
    assert_eq!(
        (summary["applied"].as_u64(), summary["duplicates"].as_u64()),
        (Some(5), Some(0)),
        "{summary}"
    );
    assert_eq!(s.ok(&["get", copy]), s.ok(&["get", source]));
    let ops =
        |doc: &str| lines(&s.ok(&["export", doc])).into_iter().map(|e| e["op"].clone()).collect::<Vec<_>>();
    assert_eq!(ops(copy), ops(source), "the same versions, op for op");

    // Running it again applies nothing.
    let again = s.json(&["import", copy, file]);
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64(), again["version"].as_u64()),
        (Some(0), Some(5), Some(5))
    );

    // An interrupted import (the first two lines), then the whole one again, from stdin.
    let resumed = "cli/resumed";
    let head: String = export.lines().take(2).map(|l| format!("{l}\n")).collect();
    let first = s.run_with_input(&["import", resumed, "--json"], &head);
    assert_eq!(first.code, 0, "{first:?}");
    let rest = s.run_with_input(&["import", resumed, "-", "--json"], &export);
    let rest: Value = serde_json::from_str(&rest.stdout).unwrap_or_else(|_| panic!("{rest:?}"));
    assert_eq!((rest["applied"].as_u64(), rest["duplicates"].as_u64()), (Some(3), Some(2)), "{rest}");
    assert_eq!(s.ok(&["get", resumed]), s.ok(&["get", source]));

    // Into a document with a history of its own: refused before anything is applied.
    let busy = "cli/busy";
    s.ok(&["apply", busy, "--base", "0", "--op", r#"["mine"]"#]);
    let refused = s.run(&["import", busy, file]);
    assert_eq!(refused.code, 12, "{refused:?}");
    assert!(refused.stderr.contains("not the import's first event"), "{refused:?}");
    assert_eq!(s.json(&["get", busy])["version"], 1);
    // A malformed line names its line number.
    let broken = s.run_with_input(&["import", "cli/broken"], "{\"version\":1,\"op\":[\"a\"]}\n{oops\n");
    assert_eq!(broken.code, 2, "{broken:?}");
    assert!(broken.stderr.contains("line 2"), "{broken:?}");
}
