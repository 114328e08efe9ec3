//! The Documents API's side of the document tasks: outcomes of submitted ops and deletions, the
//! watchers' feed and its bound, and a deletion's effect on every kind of subscriber. The store is
//! the real embedded one; records are dispatched by the test as the record stream would.

use std::sync::Arc;
use std::time::Duration;

use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::{CommitBatch, EventStore};

use super::{OpOutcome, WatchEnd};
use crate::hub::Hubs;
use crate::outbound::Outbound;
use crate::GatewayConfig;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    hubs: Arc<Hubs>,
    store: Arc<SqliteStore>,
    epoch: u64,
    doc: DocId,
    _data: tempfile::TempDir,
}

impl Fixture {
    async fn new(config: GatewayConfig) -> Self {
        let data = tempfile::tempdir().expect("a temporary folder");
        let store = Arc::new(
            SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store"),
        );
        let epoch = store.claim_partition(0).await.expect("claimed").epoch;
        let (submitter, _consumers, _, _) = in_process(&InProcessConfig::default());
        let hubs = Hubs::new(store.clone(), Arc::new(submitter), config);
        Self { hubs, store, epoch, doc: DocId::parse("d").expect("id"), _data: data }
    }

    /// Commits versions `first..first + count` of the document to the store (one `x` each, by
    /// `client` with seq = version) and returns their records, not yet dispatched.
    async fn commit(&self, first: u64, count: u64, client: &ClientId) -> Vec<Arc<SequencedRecord>> {
        let events: Vec<CommittedEvent> = (first..first + count)
            .map(|version| {
                let mut op = Operation::new();
                op.retain((version - 1) as usize);
                op.insert("x");
                CommittedEvent {
                    doc: self.doc.clone(),
                    version,
                    client: client.clone(),
                    seq: version,
                    op,
                    author: "ada".to_owned(),
                }
            })
            .collect();
        let batch =
            CommitBatch { partition: 0, epoch: self.epoch, events: events.clone(), ..CommitBatch::default() };
        self.store.commit(&batch).await.expect("committed");
        events.into_iter().map(|e| Arc::new(SequencedRecord::Committed(e))).collect()
    }
}

fn client(id: &str) -> ClientId {
    ClientId::parse(id).expect("a client id")
}

#[tokio::test]
async fn an_awaited_op_is_answered_by_its_commit_its_reacknowledgement_or_its_rejection() {
    let f = Fixture::new(GatewayConfig::default()).await;
    let api = client("api");

    let awaited = f.hubs.expect_outcome(&f.doc, api.clone(), 1, false).await.expect("registered");
    let records = f.commit(1, 1, &api).await;
    f.hubs.dispatch(records[0].clone(), None);
    match awaited.wait(WAIT).await {
        Some(OpOutcome::Committed(event)) => assert_eq!((event.version, event.seq), (1, 1)),
        other => panic!("expected the commit, got {other:?}"),
    }

    let awaited = f.hubs.expect_outcome(&f.doc, api.clone(), 1, false).await.expect("registered");
    let reack =
        SequencedRecord::Reacknowledged { doc: f.doc.clone(), client: api.clone(), seq: 1, version: 1 };
    f.hubs.dispatch(Arc::new(reack), None);
    assert_eq!(awaited.wait(WAIT).await, Some(OpOutcome::Reacknowledged { version: 1 }));

    let awaited = f.hubs.expect_outcome(&f.doc, api.clone(), 2, false).await.expect("registered");
    // Another client's record answers nothing.
    let other = Rejection {
        doc: f.doc.clone(),
        client: client("other"),
        seq: 2,
        code: ErrorCode::InvalidOp,
        message: "not yours".to_owned(),
        at_version: 1,
    };
    f.hubs.dispatch(Arc::new(SequencedRecord::Rejected(other.clone())), None);
    let ours = Rejection { client: api.clone(), message: "base 9 is ahead".to_owned(), ..other };
    f.hubs.dispatch(Arc::new(SequencedRecord::Rejected(ours)), None);
    let expected = OpOutcome::Rejected { code: ErrorCode::InvalidOp, message: "base 9 is ahead".to_owned() };
    assert_eq!(awaited.wait(WAIT).await, Some(expected));
}

/// The record of the op never comes (shed on a full queue, a lagging stream): the task repairs from
/// the store and the wait is answered with the commit all the same.
#[tokio::test]
async fn an_awaited_op_whose_record_was_lost_is_found_in_the_store() {
    let f = Fixture::new(GatewayConfig::default()).await;
    let api = client("api");
    let awaited = f.hubs.expect_outcome(&f.doc, api.clone(), 1, false).await.expect("registered");
    f.commit(1, 1, &api).await;
    f.hubs.mark_all_lagged();
    assert!(matches!(awaited.wait(WAIT).await, Some(OpOutcome::Committed(e)) if e.version == 1));
}

/// A call that stops waiting, or a watcher that goes, lets the task go once the linger is over:
/// nothing else keeps the document open. Within the linger, the document stays loaded.
#[tokio::test]
async fn a_wait_given_up_leaves_no_task_behind_after_the_linger() {
    let linger = Duration::from_millis(300);
    let f = Fixture::new(GatewayConfig { api_linger: linger, ..GatewayConfig::default() }).await;
    let awaited = f.hubs.expect_outcome(&f.doc, client("api"), 1, false).await.expect("registered");
    assert_eq!(f.hubs.open_documents(), 1);
    assert_eq!(awaited.wait(Duration::from_millis(50)).await, None, "no record came");
    let watch = f.hubs.watch(&f.doc, 8).await.expect("watching");
    drop(watch);
    let gone = std::time::Instant::now();
    tokio::time::sleep(linger / 3).await;
    assert_eq!(f.hubs.open_documents(), 1, "kept within the linger");
    tokio::time::timeout(WAIT, async {
        while f.hubs.open_documents() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the task ends once nobody waits or watches");
    assert!(gone.elapsed() >= linger, "not before the linger is over: {:?}", gone.elapsed());
}

/// Every version after the registration, in order, each once; the default queue holds 1,024
/// versions (docs/DOCUMENTS.md), and a watcher that lets more wait is dropped as overloaded.
#[tokio::test]
async fn a_watcher_gets_each_version_in_order_until_its_queue_overflows() {
    let config = GatewayConfig::default();
    let queue = config.watch_queue as u64;
    assert_eq!(queue, 1024, "the documented default");
    let f = Fixture::new(config).await;
    let writer = client("writer");
    for record in f.commit(1, 3, &writer).await {
        f.hubs.dispatch(record, None);
    }
    let mut watch = f.hubs.watch(&f.doc, queue as usize).await.expect("watching");
    assert_eq!(watch.version, 3, "registered at the version the store has");
    for record in f.commit(4, queue + 1, &writer).await {
        f.hubs.dispatch(record, None);
    }
    // Nothing is read until the task has delivered all it could (a reader keeping up would never
    // fill the queue).
    tokio::time::timeout(WAIT, async {
        while watch.end().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the queue overflows");
    let mut received = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, watch.events.recv()).await.expect("not stuck") {
        received.push(event.event.version);
        assert!(event.delivered_at_ms > 0);
    }
    let expected: Vec<u64> = (4..4 + queue).collect();
    assert_eq!(received, expected, "the versions that fitted, in order, then the end");
    assert_eq!(watch.end(), Some(&WatchEnd::Overloaded));
}

/// A deleted document: WebSocket subscribers get an `invalid_op` error about the document (no
/// `seq`) and are unsubscribed, watchers end with the tombstone, a waiting deletion is answered;
/// what comes after (the new document's version 1) reaches none of them.
#[tokio::test]
async fn a_deletion_tells_every_subscriber_and_answers_the_deletion() {
    let f = Fixture::new(GatewayConfig::default()).await;
    let writer = client("writer");
    for record in f.commit(1, 2, &writer).await {
        f.hubs.dispatch(record, None);
    }
    let (outbound, mut inbound) = Outbound::new(16, 1 << 20);
    f.hubs.subscribe(&f.doc, 1, client("reader"), outbound, None).await.expect("subscribed");
    let snapshot = inbound.frames.recv().await.expect("the snapshot").to_string();
    assert!(snapshot.contains(r#""version":2"#), "{snapshot}");
    let mut watch = f.hubs.watch(&f.doc, 8).await.expect("watching");
    let deleter = client("deleter");
    let awaited = f.hubs.expect_outcome(&f.doc, deleter.clone(), 0, true).await.expect("registered");

    let deleted = DocumentDeleted { doc: f.doc.clone(), last_version: 2, author: "ada".to_owned() };
    f.hubs.dispatch(Arc::new(SequencedRecord::Deleted(deleted.clone())), None);
    assert_eq!(awaited.wait(WAIT).await, Some(OpOutcome::Deleted(deleted.clone())));
    let error: serde_json::Value =
        serde_json::from_str(&inbound.frames.recv().await.expect("the error frame")).expect("JSON");
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "invalid_op");
    assert_eq!(error["doc"], "d");
    assert!(error.get("seq").is_none(), "{error}");
    assert!(error["message"].as_str().expect("a message").contains("deleted"), "{error}");
    assert!(tokio::time::timeout(WAIT, watch.events.recv()).await.expect("ends").is_none());
    assert_eq!(watch.end(), Some(&WatchEnd::Deleted(deleted)));

    // The document starts again: its new version 1 reaches nobody subscribed before.
    let mut op = Operation::new();
    op.insert("new");
    let reborn =
        CommittedEvent { doc: f.doc.clone(), version: 1, client: writer, seq: 3, op, author: String::new() };
    f.hubs.dispatch(Arc::new(SequencedRecord::Committed(reborn)), None);
    let nothing = tokio::time::timeout(Duration::from_millis(200), inbound.frames.recv()).await;
    assert!(!matches!(nothing, Ok(Some(_))), "an unsubscribed connection got {nothing:?}");
}
