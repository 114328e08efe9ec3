//! Presence inside one process: real hubs over the embedded store, connections as outbound queues,
//! and two "gateways" sharing an in-process presence bus. The wire-level promises are tested
//! against real servers in integration-tests/tests/presence.rs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tandem_bus::presence::{InProcessPresence, PresenceBus};
use tandem_bus::{BusError, OpSubmitter};
use tandem_ot::Operation;
use tandem_protocol::presence::{PresenceRecord, PresenceState, PresenceUpdate, Selection};
use tandem_protocol::records::{CommittedEvent, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::{CommitBatch, EventStore};
use tokio_util::sync::CancellationToken;

use super::{PresenceConfig, PresenceOutlet, Presences};
use crate::hub::Hubs;
use crate::outbound::{Inbound, Outbound};
use crate::GatewayConfig;

/// Ops are never submitted in these tests: versions are committed to the store and dispatched.
struct NoSubmit;

#[async_trait::async_trait]
impl OpSubmitter for NoSubmit {
    async fn submit(&self, _: Submission) -> Result<(), BusError> {
        Err(BusError::Closed)
    }
}

struct Gateway {
    hubs: Arc<Hubs>,
    presences: Arc<Presences>,
    store: Arc<SqliteStore>,
    epoch: u64,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn store() -> (Arc<SqliteStore>, u64, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(data.path(), SqliteOptions { synchronous_full: false }).expect("store");
    let epoch = store.claim_partition(0).await.expect("claimed").epoch;
    (Arc::new(store), epoch, data)
}

fn gateway(store: &Arc<SqliteStore>, epoch: u64, presence: PresenceConfig) -> Gateway {
    let config = GatewayConfig { presence, ..GatewayConfig::default() };
    let hubs = Hubs::new(store.clone(), Arc::new(NoSubmit), config.clone());
    let shutdown = CancellationToken::new();
    let presences = Presences::start(hubs.clone(), store.clone(), &config, shutdown.clone());
    Gateway { hubs, presences, store: store.clone(), epoch, _shutdown: shutdown.drop_guard() }
}

fn doc() -> DocId {
    DocId::parse("notes").expect("valid doc id")
}

impl Gateway {
    /// A connection that has opened the document (its snapshot read) and can send presence.
    async fn connect(&self, conn: u64, client: &str) -> (PresenceOutlet, Inbound) {
        let (outbound, mut inbound) = Outbound::new(256, 1 << 20);
        let client = ClientId::parse(client).expect("valid client id");
        self.hubs.subscribe(&doc(), conn, client.clone(), outbound.clone(), None).await.expect("opened");
        let snapshot = next(&mut inbound).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        (self.presences.outlet(conn, client, format!("user-{conn}"), outbound), inbound)
    }

    /// Commits the next version (`text` inserted at `at` of a text `len` long) and delivers it.
    async fn commit(&self, version: u64, len: usize, at: usize, text: &str) {
        let mut op = Operation::new();
        op.retain(at).insert(text).retain(len - at);
        let event = CommittedEvent {
            doc: doc(),
            version,
            client: ClientId::parse("typist").expect("valid client id"),
            seq: version,
            op,
            author: String::new(),
        };
        let batch = CommitBatch {
            partition: 0,
            epoch: self.epoch,
            events: vec![event.clone()],
            ..CommitBatch::default()
        };
        self.store.commit(&batch).await.expect("committed");
        self.hubs.dispatch(Arc::new(SequencedRecord::Committed(event)), None);
    }
}

fn at(version: u64, anchor: u64, head: u64) -> PresenceUpdate {
    PresenceUpdate {
        doc: doc(),
        state: PresenceState {
            selection: Some(Selection { version, anchor, head }),
            name: Some("Ann".into()),
            colour: Some("#123abc".into()),
        },
    }
}

/// The next frame queued for a connection.
async fn next(inbound: &mut Inbound) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), inbound.frames.recv()).await;
    let frame = frame.expect("a frame within 5 s").expect("the queue is open");
    inbound.written(&frame);
    serde_json::from_str(frame.as_str()).expect("JSON")
}

/// The next frame of a type, skipping others (ops).
async fn next_of(inbound: &mut Inbound, kind: &str) -> Value {
    loop {
        let frame = next(inbound).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn silent(inbound: &mut Inbound, wait: Duration) {
    if let Ok(Some(frame)) = tokio::time::timeout(wait, inbound.frames.recv()).await {
        panic!("expected nothing, got {frame}");
    }
}

#[tokio::test]
async fn presence_is_relayed_moved_by_ops_given_to_joiners_and_gone_on_leave() {
    let (store, epoch, _data) = store().await;
    let gw = gateway(&store, epoch, PresenceConfig::default());
    gw.commit(1, 0, 0, "hello").await;
    let (ann, mut ann_in) = gw.connect(1, "ann").await;
    let (bob, mut bob_in) = gw.connect(2, "bob").await;
    bob.update(PresenceUpdate { doc: doc(), state: PresenceState::default() });
    ann.update(at(1, 1, 3));
    let seen = next_of(&mut bob_in, "presence").await;
    assert_eq!(seen["client"], "ann");
    assert_eq!(seen["user"], "user-1", "stamped by the gateway");
    assert_eq!(
        (seen["version"].clone(), seen["anchor"].clone(), seen["head"].clone()),
        (json!(1), json!(1), json!(3))
    );
    assert_eq!(seen["colour"], "#123abc");
    // An insert before the selection moves it; a joiner gets it at the version of its snapshot.
    gw.commit(2, 5, 0, "ab").await;
    let (_cat, mut cat_in) = gw.connect(3, "cat").await;
    _cat.update(PresenceUpdate { doc: doc(), state: PresenceState::default() });
    let mut joined = [next_of(&mut cat_in, "presence").await, next_of(&mut cat_in, "presence").await];
    joined.sort_by_key(|f| f["client"].as_str().map(str::to_owned));
    assert_eq!(joined[0]["client"], "ann");
    assert_eq!(
        (joined[0]["version"].clone(), joined[0]["anchor"].clone(), joined[0]["head"].clone()),
        (json!(2), json!(3), json!(5))
    );
    assert_eq!(joined[1]["client"], "bob");
    assert!(joined[1].get("anchor").is_none(), "bob has no selection: {}", joined[1]);
    // Ann's own presence never comes back to her; she hears Bob's and Cat's.
    let heard = [next_of(&mut ann_in, "presence").await, next_of(&mut ann_in, "presence").await];
    assert!(heard.iter().all(|f| f["client"] != "ann"), "{heard:?}");
    drop(ann);
    let left = next_of(&mut bob_in, "presence_left").await;
    assert_eq!(left, json!({"type": "presence_left", "doc": "notes", "client": "ann"}));
    assert_eq!(next_of(&mut cat_in, "presence_left").await["client"], "ann");
}

#[tokio::test]
async fn a_selection_outside_its_version_or_too_old_is_refused_and_nothing_relayed() {
    let (store, epoch, _data) = store().await;
    let config = PresenceConfig { max_version_lag: 2, ..PresenceConfig::default() };
    let gw = gateway(&store, epoch, config);
    // Versions 1 "abc", 2 "xabc", 3 "xxabc", all before anyone is here.
    gw.commit(1, 0, 0, "abc").await;
    gw.commit(2, 3, 0, "x").await;
    gw.commit(3, 4, 0, "x").await;
    let (ann, mut ann_in) = gw.connect(1, "ann").await;
    let (bob, mut bob_in) = gw.connect(2, "bob").await;
    bob.update(PresenceUpdate { doc: doc(), state: PresenceState::default() });
    ann.update(at(3, 0, 6));
    let refused = next_of(&mut ann_in, "error").await;
    assert_eq!((refused["code"].clone(), refused["doc"].clone()), (json!("bad_request"), json!("notes")));
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("outside version 3") && message.contains("at most 5"), "{message}");
    ann.update(at(9, 0, 0));
    let ahead = next_of(&mut ann_in, "error").await;
    assert!(ahead["message"].as_str().unwrap().contains("the document is at version 3"), "{ahead}");
    silent(&mut bob_in, Duration::from_millis(300)).await;
    // Version 2 came before this gateway's presence followed the document: read from the store.
    ann.update(at(2, 4, 4));
    let moved = next_of(&mut bob_in, "presence").await;
    assert_eq!((moved["version"].clone(), moved["anchor"].clone()), (json!(3), json!(5)));
    for version in 4..=6 {
        gw.commit(version, version as usize + 1, 0, "x").await;
    }
    ann.update(at(3, 0, 0));
    let old = next_of(&mut ann_in, "error").await;
    assert!(old["message"].as_str().unwrap().contains("the limit is 2"), "{old}");
}

#[tokio::test]
async fn updates_faster_than_the_limit_are_coalesced_and_the_latest_wins() {
    let (store, epoch, _data) = store().await;
    let config = PresenceConfig { updates_per_second: 4, ..PresenceConfig::default() };
    let gw = gateway(&store, epoch, config);
    gw.commit(1, 0, 0, "0123456789").await;
    let (ann, _ann_in) = gw.connect(1, "ann").await;
    let (bob, mut bob_in) = gw.connect(2, "bob").await;
    bob.update(PresenceUpdate { doc: doc(), state: PresenceState::default() });
    // The first update after a quiet spell goes at once.
    ann.update(at(1, 0, 0));
    assert_eq!(next_of(&mut bob_in, "presence").await["head"], 0);
    let started = tokio::time::Instant::now();
    for caret in 1..=10 {
        ann.update(at(1, caret, caret));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ten updates within ~60 ms: the limit (4 a second) lets one through per 250 ms, the latest.
    let second = next_of(&mut bob_in, "presence").await;
    assert!(started.elapsed() >= Duration::from_millis(180), "relayed after {:?}", started.elapsed());
    assert_eq!(second["head"], 10, "the latest update wins: {second}");
    silent(&mut bob_in, Duration::from_millis(400)).await;
}

#[tokio::test]
async fn presences_cross_gateways_and_expire_when_their_gateway_goes_silent() {
    let (store, epoch, _data) = store().await;
    let bus = InProcessPresence::default();
    let config = PresenceConfig {
        heartbeat: Duration::from_millis(200),
        timeout: Duration::from_millis(700),
        bus: Some(Arc::new(bus.clone())),
        ..PresenceConfig::default()
    };
    let one = gateway(&store, epoch, config.clone());
    let two = gateway(&store, epoch, config);
    one.commit(1, 0, 0, "shared").await;
    let (ann, _ann_in) = one.connect(1, "ann").await;
    let (bob, mut bob_in) = two.connect(1, "bob").await;
    bob.update(PresenceUpdate { doc: doc(), state: PresenceState::default() });
    ann.update(at(1, 2, 2));
    let seen = next_of(&mut bob_in, "presence").await;
    assert_eq!((seen["client"].clone(), seen["head"].clone()), (json!("ann"), json!(2)));
    // Heartbeats keep it alive well past the timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A gateway that vanished: its last word on the bus, then nothing.
    bus.publish(PresenceRecord {
        doc: doc(),
        client: ClientId::parse("ghost").unwrap(),
        user: "ghost".into(),
        gateway: "gw-dead".into(),
        connection: 9,
        sent_at_ms: super::unix_ms(),
        state: Some(PresenceState::default()),
    });
    assert_eq!(next_of(&mut bob_in, "presence").await["client"], "ghost");
    let left = next_of(&mut bob_in, "presence_left").await;
    assert_eq!(left["client"], "ghost", "only the silent gateway's presence expires: {left}");
    drop(ann);
    assert_eq!(next_of(&mut bob_in, "presence_left").await["client"], "ann", "an explicit leave crosses too");
}
