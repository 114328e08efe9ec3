//! The bounds of the document tasks: a catch-up read outside the task, a snapshot past the
//! catch-up limit, and a limit on every task the hub spawns. The store is the real embedded one
//! behind a wrapper that can hold or fail its reads, so the tests decide what is in flight when.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tandem_bus::{BusError, OpSubmitter};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Rejection, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::intercept::{Call, Intercept, Intercepted};
use tandem_store::{CommitBatch, EventStore, StoreError};
use tokio::sync::{watch, Notify};

use crate::hub::Hubs;
use crate::outbound::{Inbound, Outbound};
use crate::GatewayConfig;

/// The embedded store's hooks: its `read_events` can be held (until the gate opens), its reads
/// failed.
struct GatedStore {
    inner: SqliteStore,
    /// `false`: reads wait until it turns `true`.
    open: watch::Sender<bool>,
    /// Notified each time a read starts waiting at the closed gate.
    held: Notify,
    /// Reads (`read_events`, `latest_version`) fail while set, counted in `failures`.
    failing: AtomicBool,
    failures: AtomicUsize,
    reads: AtomicUsize,
    epoch: u64,
    _data: tempfile::TempDir,
}

impl GatedStore {
    async fn new() -> Arc<Self> {
        let data = tempfile::tempdir().expect("a temporary folder");
        let inner = SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store");
        let epoch = inner.claim_partition(0).await.expect("claimed").epoch;
        let (open, _) = watch::channel(true);
        Arc::new(Self {
            inner,
            open,
            held: Notify::new(),
            failing: AtomicBool::new(false),
            failures: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            epoch,
            _data: data,
        })
    }

    fn fail(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("the test's store is down".into()));
        }
        Ok(())
    }

    fn close_gate(&self) {
        self.open.send_replace(false);
    }

    fn open_gate(&self) {
        self.open.send_replace(true);
    }

    /// Commits the next version of `doc`: one `x` appended by `client` (seq = version), and returns
    /// its record as the stream would carry it.
    async fn commit(&self, doc: &DocId, version: u64, client: &str) -> Arc<SequencedRecord> {
        let event = appended(doc, version, client);
        let batch = CommitBatch {
            partition: 0,
            epoch: self.epoch,
            events: vec![event.clone()],
            ..CommitBatch::default()
        };
        self.inner.commit(&batch).await.expect("committed");
        Arc::new(SequencedRecord::Committed(event))
    }
}

/// Reads wait at the gate and fail while `failing` is set; writes pass.
#[async_trait]
impl Intercept for GatedStore {
    async fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        match call {
            Call::ReadEvents(_) => {
                self.reads.fetch_add(1, Ordering::SeqCst);
                self.fail()?;
                let mut open = self.open.subscribe();
                if !*open.borrow_and_update() {
                    self.held.notify_one();
                    let _ = open.wait_for(|open| *open).await;
                }
                Ok(())
            }
            Call::LatestVersion(_)
            | Call::LastOutcome(_)
            | Call::ReadHistory(_)
            | Call::SnapshotAtOrBefore(_)
            | Call::CreateCheckpoint(_)
            | Call::ListCheckpoints(_) => self.fail(),
            _ => Ok(()),
        }
    }
}

/// Accepts every op and never answers a submission after the first of each op: it counts how
/// many submissions are in flight at once.
#[derive(Default)]
struct HangingSubmitter {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

#[async_trait]
impl OpSubmitter for HangingSubmitter {
    async fn submit(&self, _submission: Submission) -> Result<(), BusError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        std::future::pending::<()>().await;
        unreachable!()
    }
}

fn doc() -> DocId {
    DocId::parse("d").expect("valid doc id")
}

fn client(id: &str) -> ClientId {
    ClientId::parse(id).expect("valid client id")
}

/// Version `version` of a document whose version `v` is `v` times `x`.
fn appended(doc: &DocId, version: u64, author: &str) -> CommittedEvent {
    let mut op = Operation::new();
    op.retain(version as usize - 1).insert("x");
    CommittedEvent {
        author: String::new(),
        doc: doc.clone(),
        version,
        client: client(author),
        seq: version,
        op,
    }
}

fn rejection(doc: &DocId, author: &str, seq: u64, at_version: u64) -> Arc<SequencedRecord> {
    Arc::new(SequencedRecord::Rejected(Rejection {
        doc: doc.clone(),
        client: client(author),
        seq,
        code: ErrorCode::InvalidOp,
        message: "refused by the test".into(),
        at_version,
    }))
}

/// The next frame queued for the connection, as JSON; fails the test if none comes in 5 s.
async fn next_frame(inbound: &mut Inbound) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), inbound.frames.recv())
        .await
        .expect("a frame within 5 s")
        .expect("the queue is open");
    inbound.written(&frame);
    serde_json::from_str(&frame).expect("a JSON frame")
}

/// The frames queued now, without waiting.
fn queued_frames(inbound: &mut Inbound) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(frame) = inbound.frames.try_recv() {
        inbound.written(&frame);
        frames.push(serde_json::from_str(&frame).expect("a JSON frame"));
    }
    frames
}

/// A store holding versions 1..=`versions` of `doc()`, written by `writer` (except `own`, by `b`).
async fn history(versions: u64, own: u64) -> Arc<GatedStore> {
    let store = GatedStore::new().await;
    for version in 1..=versions {
        store.commit(&doc(), version, if version == own { "b" } else { "writer" }).await;
    }
    store
}

fn hubs(store: &Arc<GatedStore>, submitter: Arc<dyn OpSubmitter>, config: GatewayConfig) -> Arc<Hubs> {
    let gated = Intercepted::new(Arc::new(store.inner.clone()), store.clone());
    Hubs::new(Arc::new(gated), submitter, config)
}

fn in_process_submitter() -> Arc<dyn OpSubmitter> {
    let (submitter, _consumers, _, _) =
        tandem_bus::in_process::in_process(&tandem_bus::in_process::InProcessConfig::default());
    Arc::new(submitter)
}

/// A version frame: (type, version).
fn version_of(frame: &Value) -> (String, u64) {
    (frame["type"].as_str().unwrap_or_default().to_owned(), frame["version"].as_u64().unwrap_or_default())
}

/// Issue: "an `open` with a far `since` replays history inside the document's task, while
/// everyone else on that document waits". With the catch-up read held at the store, a live version
/// still reaches the document's other subscriber; the opener then gets every version after its
/// `since` once, in order, its own as `ack`, then `opened`, then the live version, with no gap.
#[tokio::test]
async fn a_catch_up_does_not_hold_live_deliveries_back() {
    let store = history(50, 45).await;
    let config = GatewayConfig { catch_up_limit: 20, catch_up_page: 4, ..GatewayConfig::default() };
    let hubs = hubs(&store, in_process_submitter(), config);
    let (live, mut live_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 1, client("a"), live, None).await.expect("subscribed");
    assert_eq!(version_of(&next_frame(&mut live_in).await), ("snapshot".into(), 50));

    store.close_gate();
    let (opener, mut opener_in) = Outbound::new(1024, 1 << 20);
    let opening = tokio::spawn({
        let hubs = hubs.clone();
        async move { hubs.subscribe(&doc(), 2, client("b"), opener, Some(40)).await }
    });
    // The catch-up has started reading the store and is held there.
    tokio::time::timeout(Duration::from_secs(5), store.held.notified())
        .await
        .expect("the catch-up reads the store");

    let record = store.commit(&doc(), 51, "writer").await;
    hubs.dispatch(record, None);
    let frame = tokio::time::timeout(Duration::from_secs(5), live_in.frames.recv()).await;
    let frame = frame.expect("the live version reached the live subscriber while the catch-up was held");
    let frame: Value = serde_json::from_str(&frame.expect("the queue is open")).expect("JSON");
    assert_eq!(version_of(&frame), ("op".into(), 51));
    assert!(!opening.is_finished(), "the catch-up is still held at the store");

    store.open_gate();
    opening.await.expect("the open ran").expect("opened");
    let mut expected: Vec<(String, u64)> =
        (41..=50).map(|v| (if v == 45 { "ack" } else { "op" }.to_owned(), v)).collect();
    expected.push(("opened".into(), 50));
    expected.push(("op".into(), 51));
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(version_of(&next_frame(&mut opener_in).await));
    }
    assert_eq!(got, expected, "every version after since once, in order, then the live one");

    // And it stays a live subscriber.
    hubs.dispatch(store.commit(&doc(), 52, "writer").await, None);
    assert_eq!(version_of(&next_frame(&mut opener_in).await), ("op".into(), 52));
    assert_eq!(version_of(&next_frame(&mut live_in).await), ("op".into(), 52));
    assert!(queued_frames(&mut opener_in).is_empty(), "nothing twice");
}

/// Past the catch-up limit the opener gets the document as a `snapshot` (then `opened` at its
/// version), not a replay of every version, and nothing is read from the store's history for it.
#[tokio::test]
async fn an_open_further_behind_than_the_limit_gets_a_snapshot() {
    let store = history(50, 0).await;
    let config = GatewayConfig { catch_up_limit: 20, catch_up_page: 4, ..GatewayConfig::default() };
    let hubs = hubs(&store, in_process_submitter(), config);
    let (first, mut first_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 1, client("a"), first, None).await.expect("subscribed");
    assert_eq!(version_of(&next_frame(&mut first_in).await), ("snapshot".into(), 50));

    let reads = store.reads.load(Ordering::SeqCst);
    let (far, mut far_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 2, client("b"), far, Some(29)).await.expect("subscribed");
    let snapshot = next_frame(&mut far_in).await;
    assert_eq!(version_of(&snapshot), ("snapshot".into(), 50), "{snapshot}");
    assert_eq!(snapshot["text"], "x".repeat(50));
    assert_eq!(version_of(&next_frame(&mut far_in).await), ("opened".into(), 50));
    assert_eq!(store.reads.load(Ordering::SeqCst), reads, "no history read for a snapshot");

    // Exactly at the limit it is still a replay.
    let (near, mut near_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 3, client("c"), near, Some(30)).await.expect("subscribed");
    let mut frames = Vec::new();
    for _ in 0..21 {
        frames.push(version_of(&next_frame(&mut near_in).await));
    }
    let mut expected: Vec<(String, u64)> = (31..=50).map(|v| ("op".to_owned(), v)).collect();
    expected.push(("opened".into(), 50));
    assert_eq!(frames, expected);
}

/// Issue: spilled rejections were spawned without bound. With the document's task held (its
/// queue full), rejections past the spill limit are not spawned: their author is closed as
/// `overloaded`, so it reconnects, resends its op and hears the rejection then.
#[tokio::test]
async fn rejections_past_the_spill_limit_close_their_author_as_overloaded() {
    let store = history(50, 0).await;
    let config = GatewayConfig { document_queue: 1, max_spilled_rejections: 2, ..GatewayConfig::default() };
    let hubs = hubs(&store, in_process_submitter(), config);
    let (author, mut author_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 1, client("a"), author, None).await.expect("subscribed");
    assert_eq!(version_of(&next_frame(&mut author_in).await), ("snapshot".into(), 50));

    // Version 52 before 51: the task reads 51 from the store, and is held there.
    store.close_gate();
    store.commit(&doc(), 51, "writer").await;
    hubs.dispatch(store.commit(&doc(), 52, "writer").await, None);
    tokio::time::timeout(Duration::from_secs(5), store.held.notified())
        .await
        .expect("the task reads the gap from the store");
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    for seq in 1..=10 {
        hubs.dispatch(rejection(&doc(), "a", seq, 52), None);
    }
    let spawned = tokio::runtime::Handle::current().metrics().num_alive_tasks() - tasks_before;
    assert!(spawned <= 2, "at most 2 spilled rejections wait in tasks, {spawned} were spawned");

    store.open_gate();
    let closed = tokio::time::timeout(Duration::from_secs(5), author_in.overloaded.cancelled()).await;
    assert!(closed.is_ok(), "the author of the rejections that could not wait is closed as overloaded");
}

/// Issue: resubmissions were spawned one task per due op, without bound. With a submitter that
/// never answers, no more than the limit are in flight at once; the others wait for a later turn.
#[tokio::test]
async fn resubmissions_in_flight_are_bounded() {
    let store = history(1, 0).await;
    let submitter = Arc::new(HangingSubmitter::default());
    let config = GatewayConfig {
        resubmit_after: Duration::from_millis(20),
        max_resubmissions_in_flight: 3,
        ..GatewayConfig::default()
    };
    let hubs = hubs(&store, submitter.clone(), config);
    let (author, mut author_in) = Outbound::new(1024, 1 << 20);
    hubs.subscribe(&doc(), 1, client("a"), author, None).await.expect("subscribed");
    assert_eq!(version_of(&next_frame(&mut author_in).await), ("snapshot".into(), 1));
    for seq in 2..=11 {
        let op = appended(&doc(), 2, "a").op;
        hubs.track(Submission {
            author: String::new(),
            delete_document: false,
            doc: doc(),
            client: client("a"),
            seq,
            base: 1,
            op,
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while submitter.calls.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no resubmission within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Several more turns of the resubmission timer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let most = submitter.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 3, "at most 3 resubmissions in flight at once, saw {most}");
}

/// Issue: a failed gap repair scheduled its retry in a task of its own. The retry is the
/// document task's own timer now: while the store is down no task is spawned for it, and once the
/// store is back the subscriber gets the missing versions without any other record arriving.
#[tokio::test]
async fn a_failed_repair_is_retried_by_the_document_task_itself() {
    let store = history(1, 0).await;
    let hubs = hubs(&store, in_process_submitter(), GatewayConfig::default());
    let docs: Vec<DocId> = (0..20).map(|i| DocId::parse(&format!("r{i}")).expect("doc id")).collect();
    let mut inbounds = Vec::new();
    for (conn, d) in docs.iter().enumerate() {
        let (outbound, mut inbound) = Outbound::new(1024, 1 << 20);
        hubs.subscribe(d, conn as u64, client("a"), outbound, None).await.expect("subscribed");
        assert_eq!(version_of(&next_frame(&mut inbound).await), ("snapshot".into(), 0));
        inbounds.push(inbound);
    }
    for d in &docs {
        store.commit(d, 1, "writer").await;
        store.commit(d, 2, "writer").await;
    }
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    store.failing.store(true, Ordering::SeqCst);
    for d in &docs {
        // Version 2 before 1: a gap, which the store cannot fill now.
        hubs.dispatch(Arc::new(SequencedRecord::Committed(appended(d, 2, "writer"))), None);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Every document has tried twice: once for the record, once to repair.
    while store.failures.load(Ordering::SeqCst) < 2 * docs.len() {
        assert!(tokio::time::Instant::now() < deadline, "the documents did not try the store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    assert!(
        tasks <= tasks_before,
        "no task spawned for repair retries: {tasks_before} alive before the outage, {tasks} during it"
    );

    store.failing.store(false, Ordering::SeqCst);
    for inbound in &mut inbounds {
        assert_eq!(version_of(&next_frame(inbound).await), ("op".into(), 1));
        assert_eq!(version_of(&next_frame(inbound).await), ("op".into(), 2));
    }
}
