//! The partition loop publishing to Apache Kafka through a broker outage: a publish that fails
//! (the broker is gone for longer than the producer's delivery timeout) is retried until the broker
//! is back, and every committed record then reaches a reader of `tandem.events` in order, with no
//! failover: the same owner, never a second claim.

use std::sync::Arc;
use std::time::Duration;

use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::kafka::{ensure_topics, KafkaConfig, KafkaEventPublisher, KafkaEventSubscriber};
use tandem_bus::{Delivery, EventStream, EventSubscriber, OpSubmitter};
use tandem_integration_tests::kafka::{Broker, Namespace};
use tandem_ot::Operation;
use tandem_protocol::records::{SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId};
use tandem_sequencer::{run_partition, PartitionConfig};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::EventStore;
use tokio_util::sync::CancellationToken;

fn append(doc: &DocId, seq: u64) -> Submission {
    let op = Operation::from_patch(seq as usize - 1, seq as usize - 1, 0, "x").unwrap();
    Submission {
        author: String::new(),
        delete_document: false,
        doc: doc.clone(),
        client: ClientId::parse("writer").unwrap(),
        seq,
        base: seq - 1,
        op,
    }
}

/// The next committed version on `stream` after `seen`, as a gateway reads it: a version it already
/// has is dropped (delivery is at least once: a retried publish may repeat records).
async fn next_version(stream: &mut Box<dyn EventStream>, seen: &mut u64, within: Duration) -> u64 {
    loop {
        let delivery = tokio::time::timeout(within, stream.next())
            .await
            .expect("a record arrives in time")
            .expect("the stream is open");
        match delivery {
            Delivery::Record { record, .. } => match record.as_ref() {
                SequencedRecord::Committed(event) if event.version <= *seen => {
                    eprintln!("version {} again (dropped, as a gateway does)", event.version);
                }
                SequencedRecord::Committed(event) => {
                    *seen = event.version;
                    return event.version;
                }
                other => panic!("unexpected record {other:?}"),
            },
            // The reader's own connection was cut too; it resumes at the same offsets.
            Delivery::Lagged(0) => continue,
            Delivery::Lagged(n) => panic!("the reader lost {n} records"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_failing_while_the_broker_is_down_is_retried_until_it_arrives() {
    let mut broker = Broker::start();
    let namespace = Namespace::new("publish-retry");
    let kafka = KafkaConfig {
        brokers: broker.address(),
        ops_topic: format!("{}.ops", namespace.as_str()),
        events_topic: format!("{}.events", namespace.as_str()),
        partitions: 1,
        // A publish fails 2 s after the broker went away instead of 5: the outage below outlasts
        // librdkafka's own retries, so only the partition loop's retry can deliver.
        delivery_timeout: Duration::from_secs(2),
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await.unwrap();
    let publisher = Arc::new(KafkaEventPublisher::new(&kafka).unwrap());
    let mut reader = KafkaEventSubscriber::new(&kafka).subscribe();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions { synchronous_full: false }).unwrap());
    let (submitter, mut consumers, _, _) = in_process(&InProcessConfig::default());
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        publisher,
        PartitionConfig::default(),
        shutdown.clone(),
    ));

    let doc = DocId::parse("through-the-outage").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    let mut seen = 0;
    assert_eq!(next_version(&mut reader, &mut seen, Duration::from_secs(20)).await, 1);

    broker.kill();
    for seq in 2..=4 {
        submitter.submit(append(&doc, seq)).await.unwrap();
    }
    // Committed while the broker is down (the commit does not wait for Kafka) ...
    for _ in 0..100 {
        if store.latest_version(&doc).await.unwrap() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.latest_version(&doc).await.unwrap(), 4, "versions 2-4 commit without the broker");
    // ... and their publish fails: the broker stays away for twice the delivery timeout.
    tokio::time::sleep(kafka.delivery_timeout * 2).await;
    broker.restart();

    for expected in 2..=4 {
        assert_eq!(next_version(&mut reader, &mut seen, Duration::from_secs(60)).await, expected);
    }
    assert!(!owner.is_finished(), "the owner kept its partition through the outage: no failover");
    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!(claim.epoch, 2, "one claim by the owner, this one by the test: no other owner came between");
    shutdown.cancel();
    let _ = owner.await;
}
