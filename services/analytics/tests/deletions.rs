//! Deleted documents against real Kafka and Postgres: records produced to the events topic
//! directly (committed versions, a `deleted` tombstone, the copies a sequencer takeover publishes)
//! and an analytics process counting them. The deleted document's rows are gone from every table,
//! another document's rows (in the same partition) are untouched, the document's new history
//! counts from version 1, and neither the copies nor the whole partition read again bring the old
//! history back (docs/ANALYTICS.md, "Deleted documents").
//!
//! ```sh
//! deploy/kafka.sh with -- cargo test -p tandem-analytics --test deletions
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tandem_bus::kafka::{ensure_topics, KafkaConfig};
use tandem_bus::partition_of;
use tandem_integration_tests::cluster::TestDatabase;
use tandem_integration_tests::kafka::{Broker, Namespace};
use tandem_integration_tests::{http_get, ServiceProcess, ServiceSpec};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, SequencedRecord};
use tandem_protocol::{ClientId, DocId};

const PARTITIONS: u32 = 2;
/// Every table with rows of a document, and the purge marks.
const TABLES: [&str; 5] = [
    "analytics_documents",
    "analytics_document_authors",
    "analytics_minutes",
    "analytics_user_minutes",
    "analytics_edit_runs",
];

/// The events topic of a namespace of the test's own, and a producer writing to it as a
/// sequencer does (key = document, partition = `partition_of`).
struct Topic {
    kafka: KafkaConfig,
    producer: FutureProducer,
}

impl Topic {
    async fn create(broker: &Broker, namespace: &Namespace) -> Self {
        let kafka = KafkaConfig {
            brokers: broker.address(),
            ops_topic: format!("{}.ops", namespace.as_str()),
            events_topic: format!("{}.events", namespace.as_str()),
            partitions: PARTITIONS,
            ..KafkaConfig::default()
        };
        ensure_topics(&kafka).await.expect("create the topics");
        let producer =
            ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("a producer");
        Self { kafka, producer }
    }

    async fn publish(&self, record: &SequencedRecord) {
        let doc = record.doc();
        let value = tandem_proto::encode_record(record);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let record = FutureRecord::to(&self.kafka.events_topic)
            .key(doc.as_str())
            .payload(&value)
            .partition(partition_of(doc, PARTITIONS) as i32)
            .timestamp(now);
        self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("publish");
    }

    /// The end offset of every partition.
    fn ends(&self) -> Vec<(i32, i64)> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.kafka.brokers).create().expect("a client");
        (0..PARTITIONS as i32)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(&self.kafka.events_topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                (p, high)
            })
            .collect()
    }
}

/// Version `version` of `doc`: `text` appended by session `session` of user `user`.
fn committed(
    doc: &DocId,
    version: u64,
    length: usize,
    text: &str,
    session: &str,
    user: &str,
) -> SequencedRecord {
    let mut op = Operation::new();
    op.retain(length).insert(text);
    SequencedRecord::Committed(CommittedEvent {
        author: user.to_owned(),
        doc: doc.clone(),
        version,
        client: ClientId::parse(session).unwrap(),
        seq: version,
        op,
    })
}

/// Versions `from..=to` of `doc`, each appending "ab" (2 characters) to the text before it.
fn history(doc: &DocId, from: u64, to: u64, session: &str, user: &str) -> Vec<SequencedRecord> {
    (from..=to).map(|v| committed(doc, v, 2 * (v as usize - 1), "ab", session, user)).collect()
}

fn deleted(doc: &DocId, last_version: u64) -> SequencedRecord {
    SequencedRecord::Deleted(DocumentDeleted { doc: doc.clone(), last_version, author: "root".into() })
}

fn start_analytics(
    db: &TestDatabase,
    broker: &Broker,
    namespace: &Namespace,
    log: PathBuf,
) -> ServiceProcess {
    let args = [
        "--brokers",
        &broker.address(),
        "--kafka-namespace",
        namespace.as_str(),
        "--postgres-url",
        &db.url(),
        "--metrics-listen",
        "127.0.0.1:0",
        // Small batches: a tombstone and the records around it fall into different transactions.
        "--max-batch",
        "3",
    ];
    ServiceProcess::start(ServiceSpec {
        program: PathBuf::from(env!("CARGO_BIN_EXE_tandem-analytics")),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("TANDEM_LOG".into(), "info".into())],
        ready_marker: "http listening on ".into(),
        log: Some(log),
    })
}

/// Waits until the stored offsets reach the end of every partition: everything produced is
/// committed.
async fn caught_up(db: &TestDatabase, topic: &Topic) {
    let ends = tokio::task::block_in_place(|| topic.ends());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = tokio::task::block_in_place(|| {
            ends.iter().all(|(p, end)| {
                let stored = db.query(&format!(
                    r#"SELECT next_offset FROM analytics_offsets WHERE topic = '{}' AND "partition" = {p}"#,
                    topic.kafka.events_topic
                ));
                stored.first().and_then(|o| o.parse::<i64>().ok()).unwrap_or(0) >= *end
            })
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the stored offsets did not reach {ends:?} within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row of `doc` in the counting tables, in a stable order: what "untouched" compares.
fn rows_of(db: &TestDatabase, doc: &DocId) -> Vec<String> {
    TABLES
        .iter()
        .flat_map(|table| {
            db.query(&format!(
                "SELECT '{table}', t::text FROM {table} t WHERE doc = '{doc}' ORDER BY t::text"
            ))
        })
        .collect()
}

fn document(db: &TestDatabase, doc: &DocId) -> String {
    db.query(&format!(
        "SELECT ops, chars_inserted, first_version, last_version, versions_missed FROM analytics_documents \
         WHERE doc = '{doc}'"
    ))
    .join("\n")
}

/// Who has rows of `doc`, per table: sessions in the per-session tables, users in the per-user one.
fn who(db: &TestDatabase, doc: &DocId) -> Vec<String> {
    let mut who = Vec::new();
    for (table, column) in [
        ("analytics_document_authors", "author"),
        ("analytics_minutes", "author"),
        ("analytics_edit_runs", "author"),
        ("analytics_user_minutes", "user_id"),
    ] {
        let sums = db.query(&format!(
            "SELECT {column}, sum(ops), sum(chars_inserted) FROM {table} WHERE doc = '{doc}' \
             GROUP BY {column} ORDER BY {column}"
        ));
        who.extend(sums.into_iter().map(|row| format!("{table}: {row}")));
    }
    who
}

fn metric(address: &str, name: &str) -> f64 {
    let (_, body) = http_get(address, "/metrics").expect("the metrics answer");
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_purges_the_document_and_its_new_history_counts_from_scratch() {
    let db = TestDatabase::create();
    let broker = Broker::shared();
    let namespace = Namespace::new("analytics-deletions");
    let topic = Topic::create(&broker, &namespace).await;
    let log = LogOnFailure(std::env::temp_dir().join(format!("{}.log", namespace.as_str())));
    let mut analytics = start_analytics(&db, &broker, &namespace, log.0.clone());

    // `plan` is deleted; `notes` shares its partition and must be left alone; `other` is in the
    // other partition.
    let plan = DocId::parse("team/plan").unwrap();
    let p = partition_of(&plan, PARTITIONS);
    let notes = (0..)
        .map(|i| DocId::parse(&format!("team/notes-{i}")).unwrap())
        .find(|d| partition_of(d, PARTITIONS) == p)
        .unwrap();
    let other = (0..)
        .map(|i| DocId::parse(&format!("team/other-{i}")).unwrap())
        .find(|d| partition_of(d, PARTITIONS) != p)
        .unwrap();

    for record in history(&plan, 1, 6, "tab-old", "ann")
        .into_iter()
        .chain(history(&notes, 1, 4, "tab-notes", "bob"))
        .chain(history(&other, 1, 2, "tab-other", "bob"))
    {
        topic.publish(&record).await;
    }
    caught_up(&db, &topic).await;
    assert_eq!(document(&db, &plan), "6|12|1|6|0");
    let notes_before = tokio::task::block_in_place(|| rows_of(&db, &notes));
    for table in TABLES {
        assert!(notes_before.iter().any(|row| row.starts_with(table)), "no row of notes in {table}");
    }

    // The deletion, then the new history of the same id, by someone else.
    topic.publish(&deleted(&plan, 6)).await;
    for record in history(&plan, 1, 3, "tab-new", "carol") {
        topic.publish(&record).await;
    }
    // What a sequencer taking the partition over publishes again: the tombstone and the new
    // history after it; and a late copy of an old version (a deposed sequencer's publish landing).
    topic.publish(&deleted(&plan, 6)).await;
    for record in history(&plan, 1, 3, "tab-new", "carol") {
        topic.publish(&record).await;
    }
    topic.publish(&history(&plan, 5, 5, "tab-old", "ann")[0]).await;
    caught_up(&db, &topic).await;

    let check = |db: &TestDatabase| {
        assert_eq!(document(db, &plan), "3|6|1|3|0", "plan: its new history only, from version 1");
        assert_eq!(
            who(db, &plan),
            [
                "analytics_document_authors: tab-new|3|6",
                "analytics_minutes: tab-new|3|6",
                "analytics_edit_runs: tab-new|3|6",
                "analytics_user_minutes: carol|3|6",
            ],
            "nothing of ann's session or of ann"
        );
        let mark =
            db.query(&format!("SELECT last_version, author FROM analytics_deletions WHERE doc = '{plan}'"));
        assert_eq!(mark, ["6|root"]);
        assert_eq!(rows_of(db, &notes), notes_before, "notes, in the same partition, untouched");
        assert_eq!(document(db, &other), "2|4|1|2|0");
        // ann edited only the deleted history: she is gone from the per-user view.
        let users =
            db.query("SELECT user_id, documents, ops, chars_inserted FROM analytics_users ORDER BY user_id");
        assert_eq!(users, ["bob|2|6|12", "carol|1|3|6"]);
    };
    tokio::task::block_in_place(|| check(&db));
    let address = analytics.address().to_owned();
    assert_eq!(metric(&address, "tandem_analytics_records_total{kind=\"deleted\"}"), 2.0);
    assert_eq!(metric(&address, "tandem_analytics_documents_purged_total"), 1.0);
    assert_eq!(metric(&address, "tandem_analytics_tombstones_repeated_total"), 1.0, "the copy");
    assert_eq!(metric(&address, "tandem_analytics_deleted_history_total"), 1.0, "the late version 5");

    // The whole topic read again: a SIGKILL, and offsets stored lower than where the counts are
    // (another member's late write). Nothing of the old history comes back, nothing is counted twice.
    analytics.kill();
    tokio::task::block_in_place(|| db.query("UPDATE analytics_offsets SET next_offset = 0"));
    tokio::task::block_in_place(|| analytics.restart());
    caught_up(&db, &topic).await;
    tokio::task::block_in_place(|| check(&db));
    let address = analytics.address().to_owned();
    assert_eq!(metric(&address, "tandem_analytics_documents_purged_total"), 0.0);
    assert_eq!(metric(&address, "tandem_analytics_tombstones_repeated_total"), 2.0);
    assert_eq!(metric(&address, "tandem_analytics_edits_counted_total"), 0.0, "all read before");

    // Deleted again, and a third history: only the purge mark is left, then a count from scratch.
    topic.publish(&deleted(&plan, 3)).await;
    caught_up(&db, &topic).await;
    tokio::task::block_in_place(|| {
        assert!(rows_of(&db, &plan).is_empty(), "{:#?}", rows_of(&db, &plan));
        let mark = db.query(&format!("SELECT last_version FROM analytics_deletions WHERE doc = '{plan}'"));
        assert_eq!(mark, ["3"]);
    });
    topic.publish(&history(&plan, 1, 1, "tab-third", "dan")[0]).await;
    caught_up(&db, &topic).await;
    tokio::task::block_in_place(|| {
        assert_eq!(document(&db, &plan), "1|2|1|1|0");
        assert_eq!(rows_of(&db, &notes), notes_before);
    });
    assert!(analytics.terminate(), "SIGTERM: a clean exit; log:\n{}", analytics.log());
}

/// The analytics process's log: its end printed if the test fails, removed either way.
struct LogOnFailure(PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- the analytics log, last {} lines -----", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.0);
    }
}
