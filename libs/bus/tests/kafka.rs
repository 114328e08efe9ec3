//! The Kafka bus against Apache Kafka: the test run's shared broker (`deploy/kafka.sh with`, see
//! the test harness), with topics and consumer groups of each test's own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tandem_bus::kafka::{
    ensure_topics, Assignment, GroupProtocol, KafkaConfig, KafkaEventPublisher, KafkaEventSubscriber,
    KafkaOpLog, KafkaOpSubmitter, KafkaPartitionConsumer,
};
use tandem_bus::{
    partition_of, BusError, Delivery, EventPublisher, EventSubscriber, OpConsumer, OpSubmitter, Published,
};
use tandem_integration_tests::kafka::{Broker, Namespace};
use tandem_ot::Operation;
use tandem_proto::proto;
use tandem_proto::proto::component::Kind;
use tandem_proto::proto::sequenced_record::Record;
use tandem_protocol::records::{CommittedEvent, Rejection, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_telemetry::propagation::{from_traceparent, set_remote_parent, TRACEPARENT};
use tokio::sync::mpsc;
use tracing::Instrument;

const PARTITIONS: u32 = 4;

/// The W3C specification's example trace context.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The test run's broker, with the bus's tracing shown on request
/// (`RUST_LOG=tandem_bus=debug,rdkafka=debug`).
fn start_broker() -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Broker::shared()
}

/// The bus configuration of one test, on `broker`: topics and group of its own.
fn config(broker: &Broker, name: &str) -> KafkaConfig {
    let namespace = Namespace::new(name);
    let namespace = namespace.as_str();
    KafkaConfig {
        brokers: broker.address(),
        ops_topic: format!("{namespace}.ops"),
        events_topic: format!("{namespace}.events"),
        partitions: PARTITIONS,
        group_id: format!("{namespace}-group"),
        client_id: name.to_owned(),
        ..KafkaConfig::default()
    }
}

fn doc(id: &str) -> DocId {
    DocId::parse(id).unwrap()
}

fn submission(doc_id: &str, seq: u64) -> Submission {
    let mut op = Operation::new();
    op.insert("x");
    Submission {
        author: String::new(),
        delete_document: false,
        doc: doc(doc_id),
        client: ClientId::parse("c1").unwrap(),
        seq,
        base: seq - 1,
        op,
    }
}

fn record(doc_id: &str, version: u64) -> SequencedRecord {
    SequencedRecord::Reacknowledged {
        doc: doc(doc_id),
        client: ClientId::parse("c1").unwrap(),
        seq: version,
        version,
    }
}

/// Collects assignments until this member owns `want` partitions; returns their consumers.
async fn await_owned(
    assignments: &mut mpsc::Receiver<Assignment>,
    owned: &mut HashMap<u32, KafkaPartitionConsumer>,
    want: usize,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    while owned.len() != want {
        let next = tokio::time::timeout_at(deadline, assignments.recv()).await;
        match next {
            Ok(Some(Assignment::Assigned { partition, consumer })) => {
                owned.insert(partition, consumer);
            }
            Ok(Some(Assignment::Revoked { partition })) => {
                owned.remove(&partition);
            }
            Ok(None) => panic!("assignment channel closed"),
            Err(_) => panic!("owned {:?}, expected {want} partitions", owned.keys().collect::<Vec<_>>()),
        }
    }
}

/// Reads from `consumer` until `n` records came.
async fn read(consumer: &mut KafkaPartitionConsumer, n: usize) -> Vec<(i64, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(100))
            .await
            .expect("records arrive")
            .expect("partition still owned");
        got.extend(batch.iter().map(|r| (r.offset, r.submission.seq)));
    }
    got
}

/// Reads the first `n` records of one partition the way a consumer outside Tandem would: a plain
/// rdkafka consumer, nothing of tandem-bus.
async fn raw_records(brokers: &str, topic: &str, partition: u32, n: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "outside-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition as i32, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    while records.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("records arrive")
            .unwrap();
        records.push(message.detach());
    }
    records
}

/// Runs `submit` inside a span whose parent is the remote context [`TRACE`], under a local
/// OpenTelemetry pipeline (spans get real ids), as the ingress runs each op's append.
async fn traced<F: std::future::Future>(submit: F) -> F::Output {
    let _pipeline = tandem_telemetry::testing::traced();
    let span = tracing::info_span!("ingress append");
    set_remote_parent(&span, from_traceparent(TRACE));
    submit.instrument(span).await
}

/// The value of the `traceparent` header of `message`, if it has one.
fn traceparent_header(message: &OwnedMessage) -> Option<String> {
    let header = message.headers()?.iter().find(|h| h.key == TRACEPARENT)?;
    Some(String::from_utf8(header.value?.to_vec()).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_once_with_their_partition_count() {
    let broker = start_broker();
    let config = config(&broker, "topics");
    ensure_topics(&config).await.unwrap();
    // A second start finds them and is fine.
    ensure_topics(&config).await.unwrap();
    // A configuration that disagrees with the existing topics is refused, with the reason.
    let wrong = KafkaConfig { partitions: 8, ..config };
    let err = ensure_topics(&wrong).await.unwrap_err();
    assert!(matches!(&err, BusError::Unavailable(m) if m.contains("has 4 partitions")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_ops_reach_the_partition_owner_in_order_and_seek_rereads() {
    let broker = start_broker();
    let config = config(&broker, "ops");
    ensure_topics(&config).await.unwrap();
    let submitter = KafkaOpSubmitter::new(&config).unwrap();
    // The first one carries a trace context header; the owner reads it like any other.
    traced(submitter.submit(submission("doc-a", 1))).await.unwrap();
    for seq in 2..=10 {
        submitter.submit(submission("doc-a", seq)).await.unwrap();
    }

    let (_log, mut assignments) = KafkaOpLog::join(&config).unwrap();
    let mut owned = HashMap::new();
    await_owned(&mut assignments, &mut owned, PARTITIONS as usize, Duration::from_secs(15)).await;
    let partition = partition_of(&doc("doc-a"), PARTITIONS);
    let consumer = owned.get_mut(&partition).unwrap();
    assert_eq!(consumer.partition(), partition);

    // Without a seek, reading starts at the first record.
    let got = read(consumer, 10).await;
    assert_eq!(got, (0..10).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());

    // The new owner resumes where the store says: offset 5 is seq 6.
    consumer.seek(5).await.unwrap();
    let got = read(consumer, 5).await;
    assert_eq!(got, (5..10).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());

    // A record that is not a submission is skipped, and the next one still comes.
    let raw: FutureProducer = ClientConfig::new().set("bootstrap.servers", &config.brokers).create().unwrap();
    raw.send(
        FutureRecord::to(&config.ops_topic).key("doc-a").partition(partition as i32).payload("not protobuf"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    submitter.submit(submission("doc-a", 11)).await.unwrap();
    assert_eq!(read(consumer, 1).await, vec![(11, 11)]);

    // A stored offset past the end of the log (a recreated topic, a broker that lost its data):
    // the owner replays from the start instead of skipping everything below that offset.
    consumer.seek(1_000_000).await.unwrap();
    let got = read(consumer, 3).await;
    assert_eq!(got.first(), Some(&(0, 1)), "replayed from the start: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_records_reach_every_subscriber_in_order_from_subscribe_time() {
    let broker = start_broker();
    let config = config(&broker, "events");
    ensure_topics(&config).await.unwrap();
    let publisher = KafkaEventPublisher::new(&config).unwrap();
    // Published before anyone subscribed, in one batch: not part of any stream.
    publisher.publish((1..=5).map(|version| record("old", version).into()).collect()).await.unwrap();

    let subscriber = KafkaEventSubscriber::new(&config);
    let mut first = subscriber.subscribe();
    let mut second = subscriber.subscribe();
    let docs = ["doc-a", "doc-b", "doc-c"];
    // Version 7 of doc-b goes out with a trace context, which its readers get with it.
    let batch: Vec<Published> = (1..=30)
        .flat_map(|v| docs.iter().map(move |d| record(d, v)))
        .map(|record| {
            let traced = matches!(&record, SequencedRecord::Reacknowledged { doc, version: 7, .. } if doc.as_str() == "doc-b");
            Published { record, traceparent: traced.then(|| TRACE.to_owned()) }
        })
        .collect();
    publisher.publish(batch).await.unwrap();

    for stream in [&mut first, &mut second] {
        let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
        for _ in 0..90 {
            let delivery = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("records arrive")
                .expect("stream open");
            let Delivery::Record { record, traceparent } = delivery else {
                panic!("unexpected {delivery:?}")
            };
            let SequencedRecord::Reacknowledged { doc, version, .. } = record.as_ref() else {
                panic!("unexpected {record:?}")
            };
            let traced = doc.as_str() == "doc-b" && *version == 7;
            assert_eq!(traceparent.as_deref(), traced.then_some(TRACE), "trace context of {doc} v{version}");
            versions.entry(doc.as_str().to_owned()).or_default().push(*version);
        }
        assert!(!versions.contains_key("old"), "a record published before subscribe was delivered");
        for d in docs {
            assert_eq!(versions[d], (1..=30).collect::<Vec<_>>(), "order of {d}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_protobuf_with_the_trace_context_in_a_header() {
    let broker = start_broker();
    let config = config(&broker, "ops-wire");
    ensure_topics(&config).await.unwrap();
    let submitter = KafkaOpSubmitter::new(&config).unwrap();
    traced(submitter.submit(submission("doc-t", 1))).await.unwrap();
    submitter.submit(submission("doc-t", 2)).await.unwrap();

    let partition = partition_of(&doc("doc-t"), PARTITIONS);
    let records = raw_records(&config.brokers, &config.ops_topic, partition, 2).await;
    // The header is the append span's context: the caller's trace id, the span's own id.
    let header = traceparent_header(&records[0]).expect("a traceparent header");
    assert_eq!(&header[..36], &TRACE[..36], "{header}");
    assert_ne!(header, TRACE, "the record's parent is the append span, not its caller");
    assert_eq!(traceparent_header(&records[1]), None, "no trace context, no header");
    for (message, seq) in records.iter().zip(1..) {
        assert_eq!(message.key(), Some("doc-t".as_bytes()));
        let wire = proto::Submission::decode(message.payload().unwrap()).expect("a tandem.v1.Submission");
        let expected = proto::Submission {
            author: String::new(),
            delete_document: false,
            doc: "doc-t".to_owned(),
            client: "c1".to_owned(),
            seq,
            base: seq - 1,
            op: vec![proto::Component { kind: Some(Kind::Insert("x".to_owned())) }],
        };
        assert_eq!(wire, expected);
    }
}

/// A record the gateway cannot read (a record type from a newer sequencer, or bytes that are no
/// protobuf) is skipped, not reported as lag: a rolling upgrade must not send every open document
/// of every old gateway to Postgres once per new record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_undecodable_event_records_are_skipped_without_a_lag() {
    let broker = start_broker();
    let config = KafkaConfig { partitions: 1, ..config(&broker, "events-unknown") };
    ensure_topics(&config).await.unwrap();
    let publisher = KafkaEventPublisher::new(&config).unwrap();
    let subscriber = KafkaEventSubscriber::new(&config);
    let mut stream = subscriber.subscribe();

    publisher.publish(vec![record("doc-u", 1).into()]).await.unwrap();
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &config.brokers).create().unwrap();
    // Field 15 (varint 1): a `SequencedRecord` whose oneof case this build does not know.
    let unknown_case: &[u8] = &[0x78, 0x01];
    let not_protobuf: &[u8] = &[0xff, 0xff, 0xff, 0xff];
    for payload in [unknown_case, not_protobuf] {
        producer
            .send(
                FutureRecord::to(&config.events_topic).partition(0).key("doc-u").payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    publisher.publish(vec![record("doc-u", 2).into()]).await.unwrap();

    for version in 1..=2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("records arrive")
            .expect("stream open");
        match delivery {
            Delivery::Record { record: r, .. } => assert!(
                matches!(r.as_ref(), SequencedRecord::Reacknowledged { version: v, .. } if *v == version),
                "expected version {version}, got {r:?}"
            ),
            Delivery::Lagged(n) => panic!("an unreadable record was reported as a lag of {n}"),
        }
    }
}

/// What an analytics consumer sees: a plain Kafka reader and the generated protobuf type of
/// `tandem.v1.SequencedRecord`, with none of Tandem's conversions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_records_decode_as_protobuf_sequenced_records() {
    let broker = start_broker();
    let config = config(&broker, "events-wire");
    ensure_topics(&config).await.unwrap();
    let d = doc("team/notes.md");
    let c = ClientId::parse("c-1").unwrap();
    let mut op = Operation::new();
    op.retain(5).insert("héllo 😀").delete(1);
    let records = [
        SequencedRecord::Committed(CommittedEvent {
            author: String::new(),
            doc: d.clone(),
            version: 2,
            client: c.clone(),
            seq: 3,
            op,
        }),
        SequencedRecord::Reacknowledged { doc: d.clone(), client: c.clone(), seq: 3, version: 2 },
        SequencedRecord::Rejected(Rejection {
            doc: d.clone(),
            client: c.clone(),
            seq: 4,
            code: ErrorCode::InvalidOp,
            message: "op length 9 does not match document length 12".to_owned(),
            at_version: 2,
        }),
    ];
    let published = records.iter().cloned().map(Published::from).collect();
    KafkaEventPublisher::new(&config).unwrap().publish(published).await.unwrap();

    let partition = partition_of(&d, PARTITIONS);
    let messages = raw_records(&config.brokers, &config.events_topic, partition, 3).await;
    let decoded: Vec<proto::SequencedRecord> = messages
        .iter()
        .map(|m| {
            assert_eq!(m.key(), Some("team/notes.md".as_bytes()));
            proto::SequencedRecord::decode(m.payload().unwrap()).expect("a tandem.v1.SequencedRecord")
        })
        .collect();
    let component = |kind| proto::Component { kind: Some(kind) };
    let expected = vec![
        Record::Committed(proto::CommittedEvent {
            author: String::new(),
            doc: "team/notes.md".to_owned(),
            version: 2,
            client: "c-1".to_owned(),
            seq: 3,
            op: vec![
                component(Kind::Retain(5)),
                component(Kind::Insert("héllo 😀".to_owned())),
                component(Kind::Delete(1)),
            ],
        }),
        Record::Reacknowledged(proto::Reacknowledged {
            doc: "team/notes.md".to_owned(),
            client: "c-1".to_owned(),
            seq: 3,
            version: 2,
        }),
        Record::Rejected(proto::Rejection {
            doc: "team/notes.md".to_owned(),
            client: "c-1".to_owned(),
            seq: 4,
            code: proto::ErrorCode::InvalidOp as i32,
            message: "op length 9 does not match document length 12".to_owned(),
            at_version: 2,
        }),
    ];
    assert_eq!(
        decoded,
        expected.into_iter().map(|r| proto::SequencedRecord { record: Some(r) }).collect::<Vec<_>>()
    );
}

/// Started by `a_killed_members_partitions_move_to_the_survivor` as a separate process, so it can
/// be SIGKILLed: joins the group, reports what it owns on stdout, and waits to be killed (or 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run only as the child of the failover test"]
async fn group_member_child() {
    let Ok(brokers) = std::env::var("TANDEM_TEST_CHILD_BROKERS") else { return };
    let config = KafkaConfig {
        brokers,
        ops_topic: std::env::var("TANDEM_TEST_CHILD_TOPIC").unwrap(),
        partitions: PARTITIONS,
        group_id: std::env::var("TANDEM_TEST_CHILD_GROUP").unwrap(),
        group_protocol: std::env::var("TANDEM_TEST_CHILD_PROTOCOL").unwrap().parse().unwrap(),
        session_timeout: Duration::from_secs(2),
        client_id: "child".to_owned(),
        ..KafkaConfig::default()
    };
    let (_log, mut assignments) = KafkaOpLog::join(&config).unwrap();
    let mut owned = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(assignment)) = tokio::time::timeout_at(deadline, assignments.recv()).await {
        match assignment {
            Assignment::Assigned { partition, consumer } => {
                owned.insert(partition, consumer);
            }
            Assignment::Revoked { partition } => {
                owned.remove(&partition);
            }
        }
        println!("member-owns: {}", owned.len());
    }
}

/// Kills the child member on drop, so a failing test leaves no process behind.
struct ChildMember(Child);

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Classic protocol (cooperative-sticky): the takeover time printed is the session timeout plus a
/// rebalance round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_partitions_move_to_the_survivor_classic_protocol() {
    a_killed_members_partitions_move_to_the_survivor(GroupProtocol::Classic).await;
}

/// KIP-848 (`group.protocol=consumer`): the broker's session timeout, then the coordinator
/// reassigns at the survivor's next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_partitions_move_to_the_survivor_consumer_protocol() {
    a_killed_members_partitions_move_to_the_survivor(GroupProtocol::Consumer).await;
}

async fn a_killed_members_partitions_move_to_the_survivor(protocol: GroupProtocol) {
    let broker = start_broker();
    // Both protocols with a 2 s session timeout (deploy/kafka.sh gives the broker's KIP-848 groups
    // the same), so the figures printed compare the protocols, not the timeouts.
    let config = KafkaConfig {
        group_protocol: protocol,
        session_timeout: Duration::from_secs(2),
        ..config(&broker, &format!("failover-{protocol}"))
    };
    ensure_topics(&config).await.unwrap();

    let (log, mut assignments) = KafkaOpLog::join(&config).unwrap();
    let mut owned = HashMap::new();
    await_owned(&mut assignments, &mut owned, PARTITIONS as usize, Duration::from_secs(15)).await;

    // A second member, in its own process.
    let mut child = ChildMember(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "group_member_child", "--ignored", "--nocapture"])
            .env("TANDEM_TEST_CHILD_BROKERS", &config.brokers)
            .env("TANDEM_TEST_CHILD_GROUP", &config.group_id)
            .env("TANDEM_TEST_CHILD_TOPIC", &config.ops_topic)
            .env("TANDEM_TEST_CHILD_PROTOCOL", protocol.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child_stdout = child.0.stdout.take().unwrap();
    let (owns_tx, mut owns_rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(child_stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("member-owns: ") {
                let _ = owns_tx.send(n.trim().parse::<usize>().unwrap_or(0));
            }
        }
    });

    // The group splits the partitions: this member gives some up, and their consumers end.
    let started = Instant::now();
    let mut revoked = Vec::new();
    let mut child_owns = 0;
    while !(owned.len() < PARTITIONS as usize
        && child_owns > 0
        && owned.len() + child_owns == PARTITIONS as usize)
    {
        tokio::select! {
            assignment = assignments.recv() => match assignment {
                Some(Assignment::Revoked { partition }) => revoked.push(owned.remove(&partition).unwrap()),
                Some(Assignment::Assigned { partition, consumer }) => {
                    owned.insert(partition, consumer);
                }
                None => panic!("assignment channel closed"),
            },
            n = owns_rx.recv() => child_owns = n.expect("the child member runs"),
            _ = tokio::time::sleep(Duration::from_secs(20)) => {
                panic!("no split after a second member joined: this member owns {:?}, the other {child_owns}", log.owned())
            }
        }
    }
    println!(
        "{protocol} protocol: second member joined: rebalanced in {:?}, this member owns {:?}",
        started.elapsed(),
        log.owned()
    );
    assert!(!revoked.is_empty());
    for consumer in &mut revoked {
        let end = tokio::time::timeout(Duration::from_secs(5), consumer.next_batch(10)).await.unwrap();
        assert_eq!(end.unwrap_err(), BusError::Closed);
    }
    assert!(child_owns > 0);

    // SIGKILL: no goodbye to the group; the coordinator notices after the session timeout.
    let killed = Instant::now();
    child.0.kill().unwrap();
    await_owned(&mut assignments, &mut owned, PARTITIONS as usize, Duration::from_secs(15)).await;
    println!(
        "{protocol} protocol: the killed member's {child_owns} partitions reached the survivor in {:?}",
        killed.elapsed()
    );
    assert_eq!(log.owned(), (0..PARTITIONS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_measured() {
    let broker = start_broker();
    let config = config(&broker, "latency");
    ensure_topics(&config).await.unwrap();
    let submitter = KafkaOpSubmitter::new(&config).unwrap();
    let (_log, mut assignments) = KafkaOpLog::join(&config).unwrap();
    let mut owned = HashMap::new();
    await_owned(&mut assignments, &mut owned, PARTITIONS as usize, Duration::from_secs(15)).await;
    let mut consumer = owned.remove(&partition_of(&doc("doc-a"), PARTITIONS)).unwrap();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Ok(batch) = consumer.next_batch(100).await {
            for record in batch {
                let _ = seen_tx.send((record.submission.seq, Instant::now()));
            }
        }
    });
    // Warm up connections and the fetcher.
    for seq in 1..=20 {
        submitter.submit(submission("doc-a", seq)).await.unwrap();
        seen_rx.recv().await.unwrap();
    }

    const N: u64 = 300;
    let mut produce = Vec::new();
    let mut end_to_end = Vec::new();
    for seq in 21..21 + N {
        let sent = Instant::now();
        submitter.submit(submission("doc-a", seq)).await.unwrap();
        produce.push(sent.elapsed());
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, seq);
        end_to_end.push(at - sent);
    }
    reader.abort();

    let publisher = KafkaEventPublisher::new(&config).unwrap();
    let mut stream = KafkaEventSubscriber::new(&config).subscribe();
    let mut publish_to_receive = Vec::new();
    for version in 1..=N {
        let sent = Instant::now();
        publisher.publish(vec![record("doc-a", version).into()]).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
        assert!(
            matches!(delivery, Delivery::Record { record: ref r, .. } if *r.as_ref() == record("doc-a", version))
        );
        publish_to_receive.push(sent.elapsed());
    }

    println!("produce (submit, acks=all): {}", summary(produce));
    println!("submit -> partition owner: {}", summary(end_to_end));
    println!("publish -> subscriber: {}", summary(publish_to_receive));
}
