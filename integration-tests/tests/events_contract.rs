//! The public contract of the events topic (docs/EVENTS.md), checked from outside: a consumer
//! written in Python (`integration-tests/events/consume_events.py`, confluent-kafka and classes
//! generated from `proto/` at run time, no code shared with Tandem) reads `<namespace>.events` of a
//! real cluster, and what it decoded is compared with the Postgres event log, the source of truth.
//!
//! Needs the Python venv of `integration-tests/chaos/venv.sh` (made on first use, from PyPI).
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_integration_tests::cluster::{Cluster, TestDatabase};
use tandem_integration_tests::typists::{assert_everything_converged, postgres_text, type_for};
use tandem_integration_tests::{seed, RawConn};
use tandem_ot::Operation;
use tandem_protocol::DocId;

/// Partitions of the cluster's topics.
const PARTITIONS: u32 = 4;
/// Record cases Tandem writes today (docs/EVENTS.md, "Record types").
const RECORD_TYPES: [&str; 3] = ["committed", "reacknowledged", "rejected"];
/// The only record headers (docs/EVENTS.md, "Headers").
const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_reads_what_docs_events_md_promises() {
    let seed = seed();
    let cluster = Cluster::builder().gateways(2).sequencers(2).partitions(PARTITIONS).start();
    let urls = [cluster.gateway_ws_url(0), cluster.gateway_ws_url(1)];
    let unicode = DocId::parse("contract/unicode").unwrap();
    let typed: Vec<DocId> =
        ["contract/typed-0", "contract/typed-1"].iter().map(|d| DocId::parse(d).unwrap()).collect();
    let docs: Vec<DocId> = [vec![unicode.clone()], typed.clone()].concat();
    let partitions: BTreeSet<u32> = docs.iter().map(|d| fnv1a_partition(d.as_str(), PARTITIONS)).collect();
    assert!(partitions.len() >= 2, "the documents should spread over partitions: {partitions:?}");

    // Frame by frame on one document: concurrent non-ASCII inserts, a delete, an op the server
    // normalises, a rejected op, a resubmitted one. Then typists on the two others.
    let script = scripted_edits(&urls, &unicode).await;
    let typists = type_for(&urls, &typed, &['a', 'é', '🎉'], seed, Duration::from_secs(2)).await;
    // Every typist's edits are acknowledged: their records are on the topic (gateways acknowledge
    // from it; `read_until_complete` covers one that acknowledged from Postgres, repairing a gap).
    assert_everything_converged(&typists, cluster.database(), &typed, seed).await;

    let topic = format!("{}.events", cluster.namespace().as_str());
    let brokers = cluster.broker_address();
    // Blocking for a few seconds: the clients' tasks run on the other worker meanwhile.
    let records = tokio::task::block_in_place(|| read_until_complete(&brokers, &topic, cluster.database()));
    let events = postgres_events(cluster.database());
    let rejections = postgres_rejections(cluster.database());
    eprintln!(
        "seed {seed}: {} records read, {} committed versions and {} rejections in Postgres",
        records.len(),
        events.len(),
        rejections.len()
    );

    check_types_keys_partitions_and_headers(&records);
    check_every_committed_version_is_on_the_topic(&records, &events);
    let first_seen = check_versions_in_order_per_document(&records, &events);
    check_reacknowledged_and_rejected(&records, &events, &rejections);
    check_texts_rebuilt_from_the_topic(cluster.database(), &docs, &first_seen);
    check_the_scripted_document(&records, &events, &script);
}

// ---------------------------------------------------------------------------------------------
// The checks. Each names the promise of docs/EVENTS.md it guards.

/// Guards "Record types" (only `committed`, `reacknowledged` and `rejected` are written),
/// "Retention, no tombstones" (every record has a value), "Keys and partitioning" (the key is the
/// document id, as UTF-8; the partition is FNV-1a-64 of the id's bytes modulo the partition count,
/// not Kafka's default partitioner) and "Headers" (nothing but W3C trace context).
fn check_types_keys_partitions_and_headers(records: &[Value]) {
    let mut bad = Vec::new();
    for r in records {
        let kind = r["type"].as_str().unwrap_or_default();
        if !RECORD_TYPES.contains(&kind) {
            bad.push(format!("record type {kind:?} (a tombstone or an unknown case): {r}"));
            continue;
        }
        let doc = r["doc"].as_str().unwrap_or_default();
        if r["key"].as_str() != Some(doc) {
            bad.push(format!("key differs from doc: {r}"));
        }
        let partition = fnv1a_partition(doc, PARTITIONS);
        if r["partition"].as_u64() != Some(u64::from(partition)) {
            bad.push(format!("doc {doc} belongs in partition {partition}: {r}"));
        }
        let headers =
            r["headers"].as_object().map(|h| h.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if headers.iter().any(|h| !HEADERS.contains(&h.as_str())) {
            bad.push(format!("headers other than trace context: {r}"));
        }
    }
    assert_none(&bad, "types, keys, partitions and headers");
}

/// Guards "Delivery: at least once" (every committed version of the event log is on the topic;
/// duplicates allowed, gaps not) and "Record types", `committed` (each copy carries the client, seq
/// and op the log has, the op transformed to apply to version - 1 and in normal form, counted in
/// Unicode scalar values; nothing on the topic that the log does not have).
fn check_every_committed_version_is_on_the_topic(records: &[Value], events: &BTreeMap<(String, u64), Value>) {
    let mut on_topic: BTreeMap<(String, u64), Vec<&Value>> = BTreeMap::new();
    for r in records.iter().filter(|r| r["type"] == "committed") {
        let key = (r["doc"].as_str().unwrap_or_default().to_owned(), r["version"].as_u64().unwrap_or(0));
        on_topic.entry(key).or_default().push(r);
    }
    let mut bad = Vec::new();
    for (key, row) in events {
        match on_topic.get(key) {
            None => bad.push(format!("committed {key:?} is not on the topic: {row}")),
            Some(copies) => {
                for copy in copies {
                    if copy["client"] != row["client"] || copy["seq"] != row["seq"] || copy["op"] != row["op"]
                    {
                        bad.push(format!("{key:?}: the log has {row}, the topic {copy}"));
                    }
                }
            }
        }
    }
    for (key, copies) in &on_topic {
        if !events.contains_key(key) {
            bad.push(format!("{key:?} is on the topic but not in the log: {}", copies[0]));
        }
    }
    assert_none(&bad, "committed versions on the topic against the event log");
}

/// Guards "Ordering per document": in its partition, a document's committed records come in version
/// order; after dropping the versions already seen (deduplicating by (doc, version)), a reader sees
/// 1, 2, 3, … with no gap and nothing out of order. Returns each document's records as first seen,
/// in that order.
fn check_versions_in_order_per_document(
    records: &[Value],
    events: &BTreeMap<(String, u64), Value>,
) -> BTreeMap<String, Vec<Value>> {
    let mut ordered: Vec<&Value> = records.iter().filter(|r| r["type"] == "committed").collect();
    ordered.sort_by_key(|r| (r["partition"].as_u64(), r["offset"].as_u64()));
    let mut first_seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut bad = Vec::new();
    for r in ordered {
        let doc = r["doc"].as_str().unwrap_or_default().to_owned();
        let version = r["version"].as_u64().unwrap_or(0);
        let seen = first_seen.entry(doc.clone()).or_default();
        let last = seen.last().and_then(|r| r["version"].as_u64()).unwrap_or(0);
        if version <= last {
            continue; // a duplicate (a republication): dropped by (doc, version)
        }
        if version != last + 1 {
            bad.push(format!("{doc}: version {version} after {last} at {r}"));
        }
        seen.push(r.clone());
    }
    let mut last_in_log: BTreeMap<&str, u64> = BTreeMap::new();
    for (doc, version) in events.keys() {
        let last = last_in_log.entry(doc.as_str()).or_default();
        *last = (*last).max(*version);
    }
    for (doc, last) in last_in_log {
        let reached = first_seen.get(doc).and_then(|s| s.last()).and_then(|r| r["version"].as_u64());
        if reached != Some(last) {
            bad.push(format!("{doc}: the topic reaches version {reached:?}, the log {last}"));
        }
    }
    assert_none(&bad, "each document's versions in order within its partition");
    first_seen
}

/// Guards "Record types", `reacknowledged` (it repeats the version the log has for that (doc,
/// client, seq)) and `rejected` (every rejection the log stores is on the topic with its client,
/// seq, code and at_version; a repeat of it carries the same code, at the version of the moment; a
/// rejection the log does not store is a transient `unavailable`).
fn check_reacknowledged_and_rejected(
    records: &[Value],
    events: &BTreeMap<(String, u64), Value>,
    rejections: &BTreeMap<(String, String, u64), Value>,
) {
    let by_op: BTreeMap<(&str, &str, u64), u64> = events
        .iter()
        .map(|((doc, version), row)| {
            (
                (doc.as_str(), row["client"].as_str().unwrap_or_default(), row["seq"].as_u64().unwrap_or(0)),
                *version,
            )
        })
        .collect();
    let mut bad = Vec::new();
    let mut rejected_on_topic = BTreeSet::new();
    for r in records {
        let doc = r["doc"].as_str().unwrap_or_default();
        let client = r["client"].as_str().unwrap_or_default();
        let seq = r["seq"].as_u64().unwrap_or(0);
        match r["type"].as_str() {
            Some("reacknowledged") => {
                let logged = by_op.get(&(doc, client, seq)).copied();
                if logged != r["version"].as_u64() {
                    bad.push(format!("the log has version {logged:?} for this op: {r}"));
                }
            }
            Some("rejected") => {
                let key = (doc.to_owned(), client.to_owned(), seq);
                match rejections.get(&key) {
                    Some(row)
                        if row["code"] == r["code"]
                            && row["at_version"].as_u64() <= r["at_version"].as_u64() =>
                    {
                        if row["at_version"] == r["at_version"] {
                            rejected_on_topic.insert(key);
                        }
                    }
                    None if r["code"] == "unavailable" => {}
                    other => bad.push(format!("the log has {other:?} for this rejection: {r}")),
                }
            }
            _ => {}
        }
    }
    for (key, row) in rejections {
        if !rejected_on_topic.contains(key) {
            bad.push(format!("rejection {key:?} is not on the topic: {row}"));
        }
    }
    assert_none(&bad, "reacknowledged and rejected records against the log");
}

/// Guards "Record types", `committed`, once more, the way an analytics consumer uses it: applying
/// the ops of the topic alone (deduplicated, in version order) from the empty text rebuilds each
/// document, non-ASCII characters included (positions count Unicode scalar values).
fn check_texts_rebuilt_from_the_topic(
    db: &TestDatabase,
    docs: &[DocId],
    first_seen: &BTreeMap<String, Vec<Value>>,
) {
    for doc in docs {
        let mut text = String::new();
        for r in first_seen.get(doc.as_str()).map(Vec::as_slice).unwrap_or_default() {
            let op: Operation = serde_json::from_value(r["op"].clone()).expect("a wire-form op");
            text = op.apply(&text).unwrap_or_else(|e| panic!("{doc}: {r} does not apply: {e:?}"));
        }
        let (logged, _) = postgres_text(db, doc);
        assert_eq!(text, logged, "{doc}: the text rebuilt from the topic differs from the log's");
        assert!(!text.is_ascii(), "{doc}: the test meant to type non-ASCII text: {text:?}");
    }
}

/// Guards the field semantics of "Record types", `committed`, on the scripted document: `client` is
/// the author's scoped id (`welcome.author`); `op` is the op as transformed against what was
/// committed after its base (of two inserts submitted on base 0 at once, the one sequenced second
/// is transformed over the first and, by the tie rule of docs/PROTOCOL.md, lands to its left); `op`
/// is in normal form (an insert next to a delete comes first). A resubmission of a committed op
/// shows as `reacknowledged` with its version, a refused op as `rejected` with code `invalid_op`.
fn check_the_scripted_document(records: &[Value], events: &BTreeMap<(String, u64), Value>, script: &Script) {
    let doc = script.doc.as_str();
    let committed = |version: u64| events.get(&(doc.to_owned(), version)).cloned().unwrap_or(Value::Null);
    let (first, second) = (committed(1), committed(2));
    let (first_text, second_text, second_author) = if first["client"] == script.alice.as_str() {
        (script.alice_text, script.bob_text, &script.bob)
    } else {
        assert_eq!(first["client"].as_str(), Some(script.bob.as_str()), "v1 by whom? {first}");
        (script.bob_text, script.alice_text, &script.alice)
    };
    assert_eq!(first["op"], json!([first_text]), "v1 is applied as submitted");
    assert_eq!(second["client"].as_str(), Some(second_author.as_str()), "{second}");
    let first_len = first_text.chars().count();
    assert_eq!(
        second["op"],
        json!([second_text, first_len]),
        "v2 was submitted on base 0: transformed over v1"
    );
    let third = committed(3);
    assert_eq!(third["client"].as_str(), Some(script.alice.as_str()), "{third}");
    assert_eq!(third["op"], json!([-3, script.length - 3]), "the delete");
    let fourth = committed(4);
    assert_eq!(fourth["client"].as_str(), Some(script.bob.as_str()), "{fourth}");
    assert_eq!(fourth["op"], json!([2, "ß", -1, script.length - 6]), "normal form: insert before delete");

    let alice_v1 = events
        .iter()
        .find(|((d, _), row)| d == doc && row["client"] == script.alice.as_str() && row["seq"] == 1)
        .map(|((_, version), _)| *version)
        .expect("alice's first op is committed");
    let of_doc = |kind: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["type"] == kind && r["doc"] == doc && r["client"] == script.alice.as_str())
            .collect()
    };
    let reacks = of_doc("reacknowledged");
    assert!(
        reacks.iter().any(|r| r["seq"] == 1 && r["version"] == alice_v1),
        "the resubmission of alice's seq 1 (v{alice_v1}) should be reacknowledged: {reacks:?}"
    );
    let rejected = of_doc("rejected");
    assert!(
        rejected.len() >= 2
            && rejected.iter().all(|r| r["seq"] == 3 && r["code"] == "invalid_op" && r["at_version"] == 4),
        "alice's seq 3 is refused at version 4, twice (once resubmitted): {rejected:?}"
    );
}

fn assert_none(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s), the first ones:\n{}",
        problems.len(),
        problems.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The partition docs/EVENTS.md names for a document: FNV-1a (64 bits) of the id's bytes, modulo
/// the partition count. Written from the document, not taken from tandem-bus.
fn fnv1a_partition(doc: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in doc.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u32
}

// ---------------------------------------------------------------------------------------------
// The scripted edits.

/// What [`scripted_edits`] did: the document, the two authors' scoped ids, their concurrent
/// inserts, and the length of the text after them.
struct Script {
    doc: DocId,
    alice: String,
    bob: String,
    alice_text: &'static str,
    bob_text: &'static str,
    length: u64,
}

/// Alice on gateway 0 and Bob on gateway 1 insert non-ASCII text on base 0 at the same time (one of
/// the two is transformed), Alice deletes, Bob sends an op in a form the server normalises, Alice
/// sends an op that does not fit (rejected), then, on a new connection with the same client id,
/// resubmits her committed first op (reacknowledged) and her rejected one (rejected again). Every
/// step waits for its answer, so every record is on the topic when this returns.
async fn scripted_edits(urls: &[String; 2], doc: &DocId) -> Script {
    let (a_text, b_text) = ("Grüße, ", "🎉 naïve 日本語 ");
    let length = (a_text.chars().count() + b_text.chars().count()) as u64;
    let (mut alice, alice_id) = hello(&urls[0], "alice").await;
    let (mut bob, bob_id) = hello(&urls[1], "bob").await;
    for conn in [&mut alice, &mut bob] {
        conn.send(json!({"type": "open", "doc": doc})).await;
        assert_eq!(conn.expect("snapshot").await["version"], 0);
    }
    alice.send(json!({"type": "op", "doc": doc, "seq": 1, "base": 0, "op": [a_text]})).await;
    bob.send(json!({"type": "op", "doc": doc, "seq": 1, "base": 0, "op": [b_text]})).await;
    until_version(&mut alice, 2).await;
    until_version(&mut bob, 2).await;

    alice.send(json!({"type": "op", "doc": doc, "seq": 2, "base": 2, "op": [-3, length - 3]})).await;
    until_version(&mut alice, 3).await;
    until_version(&mut bob, 3).await;
    bob.send(json!({"type": "op", "doc": doc, "seq": 2, "base": 3, "op": [2, -1, "ß", length - 6]})).await;
    until_version(&mut alice, 4).await;
    until_version(&mut bob, 4).await;

    let misfit = json!({"type": "op", "doc": doc, "seq": 3, "base": 4, "op": [length + 100]});
    alice.send(misfit.clone()).await;
    let refused = alice.expect_error("invalid_op").await;
    assert_eq!(refused["seq"], 3, "{refused}");
    drop(alice);

    let (mut again, again_id) = hello(&urls[1], "alice").await;
    assert_eq!(again_id, alice_id, "one client id of one user is one author");
    again.send(json!({"type": "open", "doc": doc, "since": 4})).await;
    assert_eq!(again.expect("opened").await["version"], 4);
    again.send(json!({"type": "op", "doc": doc, "seq": 1, "base": 0, "op": [a_text]})).await;
    again.send(misfit).await;
    // Both went through this connection's queue, in order, to the same partition: once the second
    // one's rejection is back, the first one's record is on the topic too.
    loop {
        let frame = again.recv().await;
        match frame["type"].as_str() {
            Some("error") if frame["code"] == "invalid_op" && frame["seq"] == 3 => break,
            Some("ack") if frame["seq"] == 1 => continue,
            _ => panic!("expected the same invalid_op for seq 3, got {frame}"),
        }
    }
    Script { doc: doc.clone(), alice: alice_id, bob: bob_id, alice_text: a_text, bob_text: b_text, length }
}

/// Connects and says `hello` as `client`; the connection and its scoped id (`welcome.author`).
async fn hello(url: &str, client: &str) -> (RawConn, String) {
    let mut conn = RawConn::connect(url).await;
    conn.send(json!({"type": "hello", "protocol": 1, "client": client})).await;
    let welcome = conn.expect("welcome").await;
    let author = welcome["author"].as_str().expect("welcome.author").to_owned();
    (conn, author)
}

/// Reads `ack` and `op` frames until the connection has `version`.
async fn until_version(conn: &mut RawConn, version: u64) {
    loop {
        let frame = conn.recv().await;
        match frame["type"].as_str() {
            Some("ack" | "op") if frame["version"].as_u64() == Some(version) => return,
            Some("ack" | "op") => continue,
            _ => panic!("expected ack or op up to version {version}, got {frame}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Python consumer and the event log.

/// The records of `topic` as [`consume_events`] decodes them, once every version committed in the
/// log is among them, or after five reads two seconds apart (the checks then say what is missing).
/// An acknowledged version is normally on the topic already (gateways acknowledge from it); the
/// reads again only cover a gateway that acknowledged from Postgres while repairing a gap.
fn read_until_complete(brokers: &str, topic: &str, db: &TestDatabase) -> Vec<Value> {
    let mut reads = 0;
    loop {
        let records = consume_events(brokers, topic);
        reads += 1;
        let on_topic: BTreeSet<(&str, u64)> = records
            .iter()
            .filter(|r| r["type"] == "committed")
            .filter_map(|r| Some((r["doc"].as_str()?, r["version"].as_u64()?)))
            .collect();
        let events = postgres_events(db);
        let missing = events.keys().filter(|(doc, v)| !on_topic.contains(&(doc.as_str(), *v))).count();
        if missing == 0 || reads == 5 {
            eprintln!("read the topic {reads} time(s); {missing} committed version(s) missing");
            return records;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Runs integration-tests/events/consume_events.py with the Python of the chaos venv on `topic`;
/// its records, one JSON object each. Fails the test on any exit but 0.
fn consume_events(brokers: &str, topic: &str) -> Vec<Value> {
    let dir = &tandem_integration_tests::manifest_dir();
    let venv = bounded(Command::new("bash").arg(dir.join("chaos/venv.sh")), Duration::from_secs(900));
    let python =
        venv.stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
    assert!(venv.ok && !python.is_empty(), "integration-tests/chaos/venv.sh failed:\n{}", venv.stderr);
    let mut command = Command::new(&python);
    command.arg(dir.join("events/consume_events.py")).args(["--brokers", brokers, "--topic", topic]);
    let run = bounded(&mut command, Duration::from_secs(180));
    assert!(run.ok, "consume_events.py failed:\n{}", run.stderr);
    eprint!("{}", run.stderr);
    run.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("consume_events.py printed {l:?}: {e}")))
        .collect()
}

struct Finished {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` for at most `limit` (killed after it); what it printed, and whether it exited 0.
fn bounded(command: &mut Command, limit: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) if !status.success() => stderr.push_str(&format!("\n(exited with {status})")),
        None => stderr.push_str(&format!("\n(still running after {} s: killed)", limit.as_secs())),
        Some(_) => {}
    }
    Finished { ok: status.is_some_and(|s| s.success()), stdout: stdout.join().unwrap_or_default(), stderr }
}

/// Every committed event of the log by (doc, version): `{"client", "seq", "op"}`, the op as the
/// JSON the log stores.
fn postgres_events(db: &TestDatabase) -> BTreeMap<(String, u64), Value> {
    db.query(
        "SELECT json_build_object('doc', doc, 'version', version, 'client', client, 'seq', seq, \
         'op', op::json) FROM events ORDER BY doc, version",
    )
    .iter()
    .map(|line| {
        let row: Value = serde_json::from_str(line).expect("a JSON row");
        let key = (row["doc"].as_str().expect("doc").to_owned(), row["version"].as_u64().expect("version"));
        (key, row)
    })
    .collect()
}

/// Every rejection the log remembers by (doc, client, seq): `{"code", "at_version", …}`.
fn postgres_rejections(db: &TestDatabase) -> BTreeMap<(String, String, u64), Value> {
    db.query(
        "SELECT json_build_object('doc', doc, 'client', client, 'seq', seq, 'code', code, \
         'at_version', at_version) FROM rejections",
    )
    .iter()
    .map(|line| {
        let row: Value = serde_json::from_str(line).expect("a JSON row");
        let key = (
            row["doc"].as_str().expect("doc").to_owned(),
            row["client"].as_str().expect("client").to_owned(),
            row["seq"].as_u64().expect("seq"),
        );
        (key, row)
    })
    .collect()
}
