//! The analytics consumer against a real cluster (Kafka, Postgres, a sequencer and a gateway as
//! processes): editors type and delete in several documents while two analytics processes in one
//! consumer group are SIGKILLed and restarted mid-stream and copies of committed records are
//! republished on the events topic, as a sequencer takeover does (docs/EVENTS.md, "Delivery").
//! At the end every count equals what the Postgres event log says: each version counted once.
//!
//! Seeded: the seed is printed; replay with `TANDEM_SEED=<seed>`.
//!
//! ```sh
//! deploy/kafka.sh with -- cargo test -p tandem-analytics --test exactly_once
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tandem_bus::kafka::{KafkaConfig, KafkaEventPublisher};
use tandem_bus::{partition_of, EventPublisher, Published};
use tandem_client::{Client, ClientOptions, DocHandle};
use tandem_integration_tests::cluster::{Cluster, TestDatabase};
use tandem_integration_tests::{http_get, seed, ServiceProcess, ServiceSpec};
use tandem_ot::{Component, Operation};
use tandem_protocol::records::{CommittedEvent, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId, ErrorCode};

const PARTITIONS: u32 = 4;
const DOCS: usize = 4;
const EDITORS: usize = 3;
const TYPING: Duration = Duration::from_secs(24);
/// What editors type: ASCII and characters of 2 and 4 UTF-8 bytes, so bytes ≠ characters.
const ALPHABET: [&str; 6] = ["a", "b", "é", "ß", "🎉", "z"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_equal_the_event_log_after_kills_restarts_and_republished_copies() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::builder().gateways(1).sequencers(1).partitions(PARTITIONS).start();
    let db = cluster.database();
    let topic = format!("{}.events", cluster.namespace().as_str());
    let logs = cluster.logs_dir().to_owned();
    let _tails = LogTailsOnFailure(vec![logs.join("analytics-a.log"), logs.join("analytics-b.log")]);
    let mut analytics = [start_analytics(&cluster, &logs, "a"), start_analytics(&cluster, &logs, "b")];
    let docs: Vec<DocId> = (0..DOCS).map(|d| DocId::parse(&format!("analytics/doc-{d}")).unwrap()).collect();
    let kafka = KafkaConfig {
        brokers: cluster.broker_address(),
        events_topic: topic.clone(),
        partitions: PARTITIONS,
        ..KafkaConfig::default()
    };
    let republisher = KafkaEventPublisher::new(&kafka).expect("a producer of the events topic");

    // Editors type and delete until told to stop.
    let typing = Arc::new(AtomicBool::new(true));
    let url = cluster.gateway_ws_url(0);
    let mut clients = Vec::new();
    let mut typists = Vec::new();
    let mut handles: Vec<Vec<DocHandle>> = vec![Vec::new(); DOCS];
    for e in 0..EDITORS {
        let client = Client::connect(&url, ClientOptions::default()).await.expect("connect");
        for (d, doc) in docs.iter().enumerate() {
            let handle = client.open(doc).await.expect("open");
            handles[d].push(handle.clone());
            typists.push(tokio::spawn(edit(handle, typing.clone(), seed ^ (e * 100 + d) as u64)));
        }
        clients.push(client);
    }

    // Meanwhile: kill and restart the analytics processes while they consume, and republish
    // copies of what is already on the topic.
    let started = Instant::now();
    wait_for(Duration::from_secs(60), "the analytics processes count something", || counted_ops(db) > 0)
        .await;
    let schedule: [(u64, &str, usize); 7] = [
        (3, "kill", 0),
        (5, "republish", 0),
        (7, "restart", 0),
        (10, "kill", 1),
        (12, "restart", 1),
        (15, "kill and restart", 0),
        (19, "republish", 0),
    ];
    let mut behind_at_a_kill = false;
    for (at, action, i) in schedule {
        tokio::time::sleep(Duration::from_secs(at).saturating_sub(started.elapsed())).await;
        let (counted, logged) = (counted_ops(db), logged_ops(db));
        eprintln!("t={at}s {action} {i}: {counted} ops counted of {logged} in the event log");
        behind_at_a_kill |= action.starts_with("kill") && counted < logged;
        match action {
            "kill" => analytics[i].kill(),
            "restart" => tokio::task::block_in_place(|| analytics[i].restart()),
            "kill and restart" => tokio::task::block_in_place(|| analytics[i].restart()),
            _ => {
                let d = rng.gen_range(0..DOCS);
                // Versions every editor has heard of are on the topic: copying them adds no gap.
                let through = handles[d].iter().map(DocHandle::version).min().unwrap_or(0);
                let from = through.saturating_sub(rng.gen_range(10..60)) + 1;
                republish(&republisher, db, &docs[d], from, through).await;
            }
        }
    }
    tokio::time::sleep(TYPING.saturating_sub(started.elapsed())).await;
    typing.store(false, Ordering::Relaxed);
    let mut keystrokes = 0;
    for typist in typists {
        keystrokes += typist.await.expect("typist");
    }
    for handle in handles.iter().flatten() {
        handle.wait_synced(Duration::from_secs(60)).await.expect("every edit is acknowledged");
    }
    let logged = logged_ops(db);
    eprintln!("seed {seed}: {keystrokes} keystrokes became {logged} versions");
    assert!(logged >= 1000, "too few versions to mean anything: {logged}");
    assert!(behind_at_a_kill, "no kill found an analytics process behind the event log");

    // After the last restart: a copy of every version (after newer ones, as a late takeover's
    // republish lands), and records analytics skips.
    for doc in &docs {
        republish(&republisher, db, doc, 1, u64::MAX).await;
    }
    let doc = docs[0].clone();
    let author = ClientId::parse("someone").unwrap();
    let skipped = vec![
        SequencedRecord::Reacknowledged { doc: doc.clone(), client: author.clone(), seq: 1, version: 1 },
        SequencedRecord::Rejected(Rejection {
            doc: doc.clone(),
            client: author,
            seq: 2,
            code: ErrorCode::InvalidOp,
            message: "no".into(),
            at_version: 1,
        }),
    ];
    republisher.publish(skipped.into_iter().map(Published::from).collect()).await.expect("publish");
    publish_unknown_case(&kafka, &doc).await;

    let ends = tokio::task::block_in_place(|| end_offsets(&kafka));
    wait_for(Duration::from_secs(120), "the analytics offsets reach the end of every partition", || {
        let stored = stored_offsets(db, &topic);
        ends.iter().all(|(p, end)| stored.get(p).copied().unwrap_or(0) >= *end)
    })
    .await;

    check_against_the_event_log(db, &docs);
    let total = |name: &str| analytics.iter().map(|a| metric(a.address(), name)).sum::<f64>();
    assert!(total("tandem_analytics_records_total{kind=\"unknown\"}") >= 1.0, "unknown case not counted");
    assert!(total("tandem_analytics_records_total{kind=\"rejected\"}") >= 1.0);
    assert!(total("tandem_analytics_records_total{kind=\"reacknowledged\"}") >= 1.0);
    let duplicates = total("tandem_analytics_duplicates_total");
    assert!(duplicates >= logged as f64, "{duplicates} duplicates dropped; the copies alone are {logged}");
    assert_eq!(total("tandem_analytics_versions_missed_total"), 0.0);
    for a in &analytics {
        assert_eq!(http_get(a.address(), "/readyz").map(|(status, _)| status), Some(200), "{}", a.log());
        assert!(a.log().contains("starting at the stored offsets"), "{}", a.log());
    }
    // Restarted processes resumed from offsets stored by earlier ones.
    assert!(analytics.iter().any(|a| a.log().contains("Some(")), "no assignment found a stored offset");
    for a in &mut analytics {
        assert!(a.terminate(), "SIGTERM: a clean exit");
    }
    for client in &clients {
        let _ = client.shutdown().await;
    }
}

/// One analytics process of the cluster's group, logging to `logs/analytics-NAME.log`.
fn start_analytics(cluster: &Cluster, logs: &Path, name: &str) -> ServiceProcess {
    let args = [
        "--brokers",
        &cluster.broker_address(),
        "--kafka-namespace",
        cluster.namespace().as_str(),
        "--partitions",
        &PARTITIONS.to_string(),
        "--postgres-url",
        &cluster.database().url(),
        "--instance",
        &format!("analytics-{name}"),
        "--metrics-listen",
        "127.0.0.1:0",
        // Small batches: more transactions for the kills to fall between (or into).
        "--max-batch",
        "50",
    ];
    ServiceProcess::start(ServiceSpec {
        program: PathBuf::from(env!("CARGO_BIN_EXE_tandem-analytics")),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("TANDEM_LOG".into(), "info".into())],
        ready_marker: "http listening on ".into(),
        log: Some(logs.join(format!("analytics-{name}.log"))),
    })
}

/// On a failing test, the end of each analytics process's log (the cluster prints its own).
struct LogTailsOnFailure(Vec<PathBuf>);

impl Drop for LogTailsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- {}, last {} lines -----", path.display(), tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Types and deletes at random places until `typing` turns false; returns the keystrokes made.
async fn edit(handle: DocHandle, typing: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keystrokes = 0;
    while typing.load(Ordering::Relaxed) {
        let len = handle.len_chars();
        // A remote op may change the length in between: such an edit is refused locally, never sent.
        let done = if len > 0 && rng.gen_bool(0.3) {
            let pos = rng.gen_range(0..len);
            handle.delete(pos, rng.gen_range(1..=2).min(len - pos))
        } else {
            let text: String =
                (0..rng.gen_range(1..=3)).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect();
            handle.insert(rng.gen_range(0..=len), &text)
        };
        keystrokes += usize::from(done.is_ok());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..8))).await;
    }
    keystrokes
}

/// Publishes copies of versions `from..=through` of `doc`, read from the event log, as a new
/// owner republishing its predecessor's commits does.
async fn republish(publisher: &KafkaEventPublisher, db: &TestDatabase, doc: &DocId, from: u64, through: u64) {
    let through = through.min(i64::MAX as u64);
    let rows = db.query(&format!(
        "SELECT version, client, seq, op FROM events WHERE doc = '{doc}' AND version BETWEEN {from} AND {through} \
         ORDER BY version"
    ));
    let records: Vec<Published> = rows
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.splitn(4, '|').collect();
            SequencedRecord::Committed(CommittedEvent {
                author: String::new(),
                doc: doc.clone(),
                version: f[0].parse().unwrap(),
                client: ClientId::parse(f[1]).unwrap(),
                seq: f[2].parse::<i64>().unwrap() as u64,
                op: serde_json::from_str(f[3]).unwrap(),
            })
            .into()
        })
        .collect();
    eprintln!("republishing {} versions of {doc} from {from}", records.len());
    publisher.publish(records).await.expect("republish");
}

/// A record of a `record` case this build does not know (field 9), in `doc`'s partition.
async fn publish_unknown_case(kafka: &KafkaConfig, doc: &DocId) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("a raw producer");
    let value = [0x4a_u8, 0x02, 0x08, 0x01];
    let record = FutureRecord::to(&kafka.events_topic)
        .key(doc.as_str())
        .payload(&value[..])
        .partition(partition_of(doc, kafka.partitions) as i32);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("publish");
}

/// The end offset of every partition of the events topic.
fn end_offsets(kafka: &KafkaConfig) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("a metadata client");
    (0..kafka.partitions as i32)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(&kafka.events_topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

fn stored_offsets(db: &TestDatabase, topic: &str) -> BTreeMap<i32, i64> {
    db.query(&format!(r#"SELECT "partition", next_offset FROM analytics_offsets WHERE topic = '{topic}'"#))
        .iter()
        .map(|row| {
            let (p, o) = row.split_once('|').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

fn counted_ops(db: &TestDatabase) -> u64 {
    // The table exists once the first process has migrated.
    let rows = db.query("SELECT coalesce(sum(ops), 0) FROM analytics_documents");
    rows.first().and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn logged_ops(db: &TestDatabase) -> u64 {
    db.query("SELECT count(*) FROM events")[0].parse().unwrap()
}

async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !tokio::task::block_in_place(&mut done) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per document and per (document, author): ops, characters inserted and deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    ops: u64,
    inserted: u64,
    deleted: u64,
}

impl Counts {
    fn add(&mut self, op: &Operation) {
        self.ops += 1;
        for component in op.components() {
            match component {
                Component::Insert(text) => self.inserted += text.chars().count() as u64,
                Component::Delete(n) => self.deleted += *n as u64,
                Component::Retain(_) => {}
            }
        }
    }
}

fn parse_counts(f: &[&str]) -> Counts {
    Counts { ops: f[0].parse().unwrap(), inserted: f[1].parse().unwrap(), deleted: f[2].parse().unwrap() }
}

/// The analytics tables against the event log, the source of truth.
fn check_against_the_event_log(db: &TestDatabase, docs: &[DocId]) {
    let mut per_doc: BTreeMap<String, (Counts, u64)> = BTreeMap::new();
    let mut per_author: BTreeMap<(String, String), Counts> = BTreeMap::new();
    for row in db.query("SELECT doc, version, client, op FROM events ORDER BY doc, version") {
        let f: Vec<&str> = row.splitn(4, '|').collect();
        let op: Operation = serde_json::from_str(f[3]).expect("stored ops are JSON");
        let doc = per_doc.entry(f[0].to_owned()).or_default();
        doc.0.add(&op);
        doc.1 = f[1].parse().unwrap();
        per_author.entry((f[0].to_owned(), f[2].to_owned())).or_default().add(&op);
    }
    assert_eq!(per_doc.len(), docs.len(), "every document has versions");

    let mut counted_doc: BTreeMap<String, (Counts, u64)> = BTreeMap::new();
    for row in db.query(
        "SELECT doc, ops, chars_inserted, chars_deleted, first_version, last_version, versions_missed, \
         first_seen <= last_seen FROM analytics_documents",
    ) {
        let f: Vec<&str> = row.split('|').collect();
        assert_eq!((f[4], f[6], f[7]), ("1", "0", "t"), "first version 1, none missed: {row}");
        counted_doc.insert(f[0].to_owned(), (parse_counts(&f[1..4]), f[5].parse().unwrap()));
    }
    assert_eq!(counted_doc, per_doc, "per document: (ops, characters inserted, deleted), last version");

    let counted_author: BTreeMap<(String, String), Counts> = db
        .query("SELECT doc, author, ops, chars_inserted, chars_deleted FROM analytics_document_authors")
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split('|').collect();
            ((f[0].to_owned(), f[1].to_owned()), parse_counts(&f[2..5]))
        })
        .collect();
    assert_eq!(counted_author, per_author, "per (document, author)");
    let authors: BTreeSet<&String> = per_author.keys().map(|(_, a)| a).collect();
    assert_eq!(authors.len(), EDITORS, "one author id per editing session");

    // The minutes and the runs split the same counts differently.
    for (table, key) in [("analytics_minutes", "doc, author"), ("analytics_edit_runs", "doc, author")] {
        let sums: BTreeMap<(String, String), Counts> = db
            .query(&format!(
                "SELECT {key}, sum(ops), sum(chars_inserted), sum(chars_deleted) FROM {table} GROUP BY {key}"
            ))
            .iter()
            .map(|row| {
                let f: Vec<&str> = row.split('|').collect();
                ((f[0].to_owned(), f[1].to_owned()), parse_counts(&f[2..5]))
            })
            .collect();
        assert_eq!(sums, per_author, "{table} summed per (document, author)");
    }
    // Editors typed without a pause of 5 minutes: one run each per document.
    let runs: u64 = db.query("SELECT count(*) FROM analytics_edit_runs")[0].parse().unwrap();
    assert_eq!(runs, per_author.len() as u64, "one edit run per (document, author)");
    // The view per author agrees with the log.
    let view: u64 = db.query("SELECT sum(ops) FROM analytics_authors")[0].parse().unwrap();
    assert_eq!(view, per_doc.values().map(|(c, _)| c.ops).sum::<u64>());
    // The per-user minutes split the same counts by user.
    let per_user: BTreeMap<String, (Counts, u64)> = db
        .query("SELECT doc, sum(ops), sum(chars_inserted), sum(chars_deleted) FROM analytics_user_minutes GROUP BY doc")
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split('|').collect();
            (f[0].to_owned(), (parse_counts(&f[1..4]), per_doc[f[0]].1))
        })
        .collect();
    assert_eq!(per_user, per_doc, "analytics_user_minutes summed per document");
}

/// The value of one metric line (name with labels) of an analytics process, 0 when absent.
fn metric(address: &str, name: &str) -> f64 {
    let (_, body) = http_get(address, "/metrics").expect("the metrics answer");
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}
