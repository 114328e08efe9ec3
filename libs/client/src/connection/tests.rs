//! The connection against a small in-test server that follows PROTOCOL.md for one process: handshake,
//! snapshot and catch-up with `since`, transform and broadcast, strict `seq` checking, and switches to
//! lose ops or acks and to reject an op, so that reconnect, resubmission and reload are exercised.
//! Several fakes can share one backend state, as the gateways of the distributed mode do, and a fake
//! can be killed, so that failover to another gateway is exercised too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tandem_ot::Operation;
use tandem_protocol::ws::{ClientMessage, ServerMessage};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct FakeDoc {
    text: String,
    /// Version `i + 1`: author, seq, op.
    history: Vec<(ClientId, u64, Operation)>,
}

#[derive(Default)]
struct FakeState {
    docs: HashMap<DocId, FakeDoc>,
    /// Live connections: client id, subscribed documents, outgoing frames.
    conns: HashMap<u64, (ClientId, Vec<DocId>, mpsc::UnboundedSender<String>)>,
    next_conn: u64,
    /// Last seq used per client and document, and the seqs that were rejected.
    last_seq: HashMap<(ClientId, DocId), u64>,
    rejected: Vec<(ClientId, DocId, u64)>,
}

/// What one fake gateway was sent, for tests to check what the client said to which gateway.
#[derive(Default)]
struct Received {
    /// The `client` of every `hello`.
    hellos: Vec<ClientId>,
    /// Every `open`: client, document, `since`.
    opens: Vec<(ClientId, DocId, Option<u64>)>,
    /// Every `op`, lost ones included: client, document, seq, base, op.
    ops: Vec<(ClientId, DocId, u64, u64, Operation)>,
}

#[derive(Default)]
struct Fake {
    /// The backend: shared by every fake gateway started with [`Fake::start_sharing`].
    state: Arc<Mutex<FakeState>>,
    token: Option<String>,
    received: Mutex<Received>,
    /// The accept loop, and the connections and their writers, for [`Fake::kill`].
    listener: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The connections this gateway serves (ids in the shared `conns`).
    conn_ids: Mutex<Vec<u64>>,
    /// Incoming ops vanish, as if lost on the network.
    lose_ops: AtomicBool,
    /// Ops are committed but their ack is not sent.
    lose_acks: AtomicBool,
    /// The next op is refused with `invalid_op`.
    reject_next: AtomicBool,
    /// Clients whose connections are sent nothing: their frames are lost.
    deaf: Mutex<Vec<ClientId>>,
    /// An `open` with a `since` more than this many versions behind gets `snapshot` and `opened`
    /// instead of the versions since, like the gateway's catch-up limit; 0: no limit.
    catch_up_limit: AtomicU64,
}

impl Fake {
    async fn start(token: Option<&str>) -> (Arc<Fake>, String) {
        Self::start_sharing(token, Arc::default()).await
    }

    /// A fake gateway over the given backend state: clients of every gateway over it see the same
    /// documents, versions and seqs, and get each other's ops.
    async fn start_sharing(token: Option<&str>, state: Arc<Mutex<FakeState>>) -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake { state, token: token.map(str::to_owned), ..Fake::default() });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let server = Arc::clone(&fake);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(Arc::clone(&server).serve(stream));
                server.tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        *fake.listener.lock().unwrap() = Some(accept);
        (fake, format!("ws://{addr}/v1/ws"))
    }

    /// The gateway dies: its connections drop without a close frame and its port refuses new ones.
    /// Resolves once the listener is closed.
    async fn kill(&self) {
        let accept = self.listener.lock().unwrap().take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await; // the listener is dropped once the cancelled task has finished
        }
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let mut state = self.state.lock().unwrap();
        for id in self.conn_ids.lock().unwrap().drain(..) {
            state.conns.remove(&id); // drops the writer's channel too
        }
    }

    fn text(&self, doc: &DocId) -> String {
        self.state.lock().unwrap().docs.get(doc).map(|d| d.text.clone()).unwrap_or_default()
    }

    fn version(&self, doc: &DocId) -> u64 {
        self.state.lock().unwrap().docs.get(doc).map_or(0, |d| d.history.len() as u64)
    }

    // The callback type is tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let token = self.token.clone();
        let check = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            let given = request.headers().get("authorization").and_then(|v| v.to_str().ok());
            match &token {
                Some(t) if given != Some(format!("Bearer {t}").as_str()) => {
                    let mut refusal = ErrorResponse::new(Some("no valid token".into()));
                    *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                    Err(refusal)
                }
                _ => Ok(response),
            }
        };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { return };
        let (mut sink, mut frames) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
        });
        self.tasks.lock().unwrap().push(writer.abort_handle());
        let client = match frames.next().await {
            Some(Ok(Message::Text(t))) => match ClientMessage::parse(t.as_str()) {
                Ok(ClientMessage::Hello { client, .. }) => client,
                _ => return,
            },
            _ => return,
        };
        self.received.lock().unwrap().hellos.push(client.clone());
        // Like a server older than `welcome.author`: the client takes its own id as its author id.
        let welcome = ServerMessage::Welcome {
            protocol: 1,
            client: client.clone(),
            user: "tester".into(),
            author: None,
        };
        let _ = tx.send(welcome.to_json());
        let conn = {
            let mut state = self.state.lock().unwrap();
            state.next_conn += 1;
            let id = state.next_conn;
            state.conns.insert(id, (client.clone(), Vec::new(), tx));
            id
        };
        self.conn_ids.lock().unwrap().push(conn);
        while let Some(Ok(frame)) = frames.next().await {
            if let Message::Text(t) = frame {
                if let Ok(message) = ClientMessage::parse(t.as_str()) {
                    self.handle(conn, &client, message);
                }
            }
        }
        self.state.lock().unwrap().conns.remove(&conn);
        writer.abort();
    }

    fn handle(&self, conn: u64, client: &ClientId, message: ClientMessage) {
        {
            let mut received = self.received.lock().unwrap();
            match &message {
                ClientMessage::Open { doc, since, .. } => {
                    received.opens.push((client.clone(), doc.clone(), *since))
                }
                ClientMessage::Op { doc, seq, base, op } => {
                    received.ops.push((client.clone(), doc.clone(), *seq, *base, op.clone()));
                }
                _ => {}
            }
        }
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        let deaf = self.deaf.lock().unwrap().clone();
        let send = |state: &FakeState, to: u64, m: ServerMessage| {
            if let Some((_, _, tx)) = state.conns.get(&to).filter(|(c, _, _)| !deaf.contains(c)) {
                let _ = tx.send(m.to_json());
            }
        };
        match message {
            // This fake has no presence: selections are dropped.
            ClientMessage::Hello { .. } | ClientMessage::Presence(_) => {}
            ClientMessage::Ping => send(state, conn, ServerMessage::Pong),
            ClientMessage::Auth { .. } => {
                let authed = ServerMessage::Authed { user: "anonymous".to_owned(), expires: u64::MAX >> 11 };
                send(state, conn, authed)
            }
            ClientMessage::Close { doc } => {
                if let Some((_, docs, _)) = state.conns.get_mut(&conn) {
                    docs.retain(|d| *d != doc);
                }
            }
            ClientMessage::Open { doc, since, .. } => {
                if let Some((_, docs, _)) = state.conns.get_mut(&conn) {
                    docs.push(doc.clone());
                }
                let d = state.docs.entry(doc.clone()).or_default();
                let version = d.history.len() as u64;
                let mut replies = Vec::new();
                let limit = self.catch_up_limit.load(Ordering::SeqCst);
                let too_far = since.is_some_and(|since| limit > 0 && version.saturating_sub(since) > limit);
                match since {
                    Some(_) if too_far => {
                        replies.push(ServerMessage::Snapshot {
                            doc: doc.clone(),
                            version,
                            text: d.text.clone(),
                        });
                        replies.push(ServerMessage::Opened { doc: doc.clone(), version });
                    }
                    None => replies.push(ServerMessage::Snapshot {
                        doc: doc.clone(),
                        version,
                        text: d.text.clone(),
                    }),
                    Some(since) => {
                        for (i, (author, seq, op)) in d.history.iter().enumerate().skip(since as usize) {
                            let v = i as u64 + 1;
                            replies.push(if author == client {
                                ServerMessage::Ack { doc: doc.clone(), seq: *seq, version: v }
                            } else {
                                ServerMessage::Op {
                                    doc: doc.clone(),
                                    version: v,
                                    client: author.clone(),
                                    op: op.clone(),
                                }
                            });
                        }
                        replies.push(ServerMessage::Opened { doc: doc.clone(), version });
                    }
                }
                for m in replies {
                    send(state, conn, m);
                }
            }
            ClientMessage::Op { doc, seq, base, op } => {
                if self.lose_ops.load(Ordering::SeqCst) {
                    return;
                }
                let invalid = |message: &str| ServerMessage::Error {
                    code: ErrorCode::InvalidOp,
                    message: message.into(),
                    doc: Some(doc.clone()),
                    seq: Some(seq),
                };
                let key = (client.clone(), doc.clone());
                let last = state.last_seq.get(&key).copied().unwrap_or(0);
                if seq <= last {
                    if state.rejected.contains(&(client.clone(), doc.clone(), seq)) {
                        send(state, conn, invalid("rejected before"));
                    }
                    return; // a committed resubmission whose version this test server always delivered
                }
                state.last_seq.insert(key, seq);
                let reject = |state: &mut FakeState, why: &str| {
                    state.rejected.push((client.clone(), doc.clone(), seq));
                    send(state, conn, invalid(why));
                };
                if seq != last + 1 {
                    return reject(state, "seq gap");
                }
                if self.reject_next.swap(false, Ordering::SeqCst) {
                    return reject(state, "rejected by the test");
                }
                let d = state.docs.entry(doc.clone()).or_default();
                let Some(committed) = d.history.get(base as usize..) else {
                    return reject(state, "base ahead");
                };
                let mut op = op;
                for (_, _, c) in committed {
                    op = Operation::transform(&op, c).expect("same base").0;
                }
                let Ok(text) = op.apply(&d.text) else { return reject(state, "does not fit") };
                d.text = text;
                d.history.push((client.clone(), seq, op.clone()));
                let version = d.history.len() as u64;
                let lose_acks = self.lose_acks.load(Ordering::SeqCst);
                for (id, (who, docs, tx)) in &state.conns {
                    if !docs.contains(&doc) || deaf.contains(who) {
                        continue;
                    }
                    let m = if who == client {
                        if lose_acks && *id == conn {
                            continue;
                        }
                        ServerMessage::Ack { doc: doc.clone(), seq, version }
                    } else {
                        ServerMessage::Op {
                            doc: doc.clone(),
                            version,
                            client: client.clone(),
                            op: op.clone(),
                        }
                    };
                    let _ = tx.send(m.to_json());
                }
            }
        }
    }
}

fn doc() -> DocId {
    DocId::parse("notes/1").unwrap()
}

fn options() -> ClientOptions {
    ClientOptions { reconnect_min_delay: Duration::from_millis(5), ..ClientOptions::default() }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn edits_are_acknowledged_and_reach_other_clients() {
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, options()).await.unwrap();
    let b = Client::connect(&url, options()).await.unwrap();
    assert_ne!(a.client_id(), b.client_id());
    let da = a.open(&doc()).await.unwrap();
    let db = b.open(&doc()).await.unwrap();
    assert!(matches!(a.open(&doc()).await, Err(ClientError::AlreadyOpen(_))));

    da.insert(0, "hello").unwrap();
    assert_eq!(da.text(), "hello", "a local edit shows at once");
    db.wait_version(1, WAIT).await.unwrap();
    assert_eq!(db.text(), "hello");

    // Concurrent edits, several while one is in flight.
    for i in 0..20 {
        da.insert(da.len_chars(), &i.to_string()).unwrap();
        db.insert(0, "é").unwrap();
        if i % 5 == 0 {
            db.delete(1, 1).unwrap();
        }
    }
    da.wait_synced(WAIT).await.unwrap();
    db.wait_synced(WAIT).await.unwrap();
    let version = fake.version(&doc());
    da.wait_version(version, WAIT).await.unwrap();
    db.wait_version(version, WAIT).await.unwrap();
    assert_eq!(da.text(), fake.text(&doc()));
    assert_eq!(db.text(), fake.text(&doc()));
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    assert!(b.errors().is_empty(), "{:?}", b.errors());
    let stats = a.stats();
    assert_eq!(stats.acks, stats.ops_sent);
    assert!(stats.remote_ops > 0 && stats.reconnects == 0, "{stats:?}");

    da.edit(Operation::identity(da.len_chars())).unwrap();
    da.wait_synced(WAIT).await.unwrap();
    da.close().await.unwrap();
    eventually("close", || matches!(da.edit(Operation::identity(0)), Err(ClientError::NotOpen(_)))).await;
    // Reopening continues the seq (the test server refuses gaps).
    let again = a.open(&doc()).await.unwrap();
    again.insert(0, "!").unwrap();
    again.wait_synced(WAIT).await.unwrap();
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    a.shutdown().await.unwrap();
    assert!(matches!(again.insert(0, "x"), Err(ClientError::Closed(_))));
    assert!(matches!(a.open(&doc()).await, Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn an_op_lost_with_the_connection_is_resubmitted_unchanged() {
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, options()).await.unwrap();
    let b = Client::connect(&url, options()).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    let db = b.open(&doc()).await.unwrap();
    fake.lose_ops.store(true, Ordering::SeqCst);
    da.insert(0, "mine").unwrap();
    eventually("the op to be written", || a.stats().ops_sent == 1).await;
    fake.lose_ops.store(false, Ordering::SeqCst);
    db.insert(0, "theirs").unwrap();
    db.wait_synced(WAIT).await.unwrap();
    da.insert(4, "+").unwrap(); // buffered behind the lost op
    a.drop_connection().await.unwrap();
    da.wait_synced(WAIT).await.unwrap();
    db.wait_version(3, WAIT).await.unwrap();
    // The resubmitted op went left of the concurrent insert at the same place, on both sides.
    assert_eq!(fake.text(&doc()), "mine+theirs");
    assert_eq!(da.text(), fake.text(&doc()));
    assert_eq!(db.text(), fake.text(&doc()));
    let stats = a.stats();
    assert_eq!(
        (stats.reconnects, stats.resubmissions, stats.remote_ops, stats.acks),
        (1, 1, 1, 2),
        "{stats:?}"
    );
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

#[tokio::test]
async fn an_ack_lost_with_the_connection_arrives_in_the_catch_up() {
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, options()).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    fake.lose_acks.store(true, Ordering::SeqCst);
    da.insert(0, "x").unwrap();
    eventually("the commit", || fake.version(&doc()) == 1).await;
    fake.lose_acks.store(false, Ordering::SeqCst);
    assert!(!da.is_synced());
    a.drop_connection().await.unwrap();
    da.wait_synced(WAIT).await.unwrap();
    a.wait_connected(WAIT).await.unwrap();
    let stats = a.stats();
    assert_eq!((stats.reconnects, stats.resubmissions, stats.acks), (1, 0, 1), "{stats:?}");
    assert_eq!((da.version(), da.text().as_str()), (1, "x"));
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

/// PROTOCOL.md, "Reconnect": a reopen further behind than the server's catch-up limit gets `snapshot`
/// then `opened`; the client starts over from the snapshot, without a protocol violation or a
/// reload, and its `seq` continues.
#[tokio::test]
async fn a_reopen_past_the_catch_up_limit_starts_over_from_the_snapshot() {
    let (fake, url) = Fake::start(None).await;
    fake.catch_up_limit.store(2, Ordering::SeqCst);
    let a = Client::connect(&url, options()).await.unwrap();
    let b = Client::connect(&url, options()).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    let db = b.open(&doc()).await.unwrap();
    // a hears nothing more: its op is committed but not acknowledged, and b's next three versions
    // do not reach it either.
    fake.deaf.lock().unwrap().push(a.client_id().clone());
    da.insert(0, "a").unwrap();
    db.wait_version(1, WAIT).await.unwrap();
    for (i, s) in ["x", "y", "z"].iter().enumerate() {
        db.insert(1 + i, s).unwrap();
        db.wait_synced(WAIT).await.unwrap();
    }
    assert_eq!(da.version(), 0);
    // a reopens with since 0, four versions behind a limit of 2: the snapshot answers.
    fake.deaf.lock().unwrap().clear();
    a.drop_connection().await.unwrap();
    a.wait_connected(WAIT).await.unwrap();
    da.wait_version(4, WAIT).await.unwrap();
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!((da.text().as_str(), da.version()), ("axyz", 4));
    assert!(a.errors().is_empty(), "no violation, no reload: {:?}", a.errors());
    assert_eq!(a.stats().resyncs, 0, "{:?}", a.stats());
    da.insert(4, "!").unwrap(); // seq 2: a reused seq 1 or a gap would be refused
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!((fake.text(&doc()).as_str(), da.version()), ("axyz!", 5));
    assert!(a.errors().is_empty(), "{:?}", a.errors());
}

#[tokio::test]
async fn invalid_op_reloads_the_document_and_seq_continues() {
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, options()).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    fake.reject_next.store(true, Ordering::SeqCst);
    da.insert(0, "lost").unwrap();
    eventually("the reload", || a.stats().resyncs == 1).await;
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(da.text(), "", "the rejected edit is discarded");
    let errors = a.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].source, errors[0].code, errors[0].seq),
        (ErrorSource::Server, ErrorCode::InvalidOp, Some(1))
    );
    da.insert(0, "kept").unwrap(); // seq 2: a gap would be refused
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!((fake.text(&doc()).as_str(), da.version()), ("kept", 1));
    assert_eq!(a.errors().len(), 1);
}

#[tokio::test]
async fn the_token_goes_in_the_upgrade_request() {
    let (_fake, url) = Fake::start(Some("s3cret")).await;
    let refused = Client::connect(&url, options()).await.unwrap_err();
    assert!(matches!(refused, ClientError::Unauthorized(_)), "{refused}");
    let id = ClientId::parse("fixed-id").unwrap();
    let ok = ClientOptions { token: Some("s3cret".into()), client_id: Some(id.clone()), ..options() };
    let client = Client::connect(&url, ok).await.unwrap();
    assert_eq!(client.client_id(), &id);
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_closes_the_client() {
    let (_fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, ClientOptions { reconnect: false, ..options() }).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    a.drop_connection().await.unwrap();
    assert!(matches!(a.wait_connected(WAIT).await, Err(ClientError::Closed(_))));
    assert!(matches!(da.insert(0, "x"), Err(ClientError::Closed(_))));
    assert!(matches!(da.wait_synced(WAIT).await, Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn a_bad_address_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
    drop(listener);
    assert!(matches!(Client::connect(&url, options()).await, Err(ClientError::WebSocket(_))));
    assert!(matches!(Client::connect("not a url", options()).await, Err(ClientError::InvalidConfig(_))));
}

/// Gateway A dies while an op is unacknowledged: the client moves to gateway B with the same client id,
/// reopens with `since`, resubmits the op as it was, and B commits it.
#[tokio::test]
async fn a_dead_gateway_fails_over_to_the_next_url() {
    let backend = Arc::new(Mutex::new(FakeState::default()));
    let (a, url_a) = Fake::start_sharing(None, Arc::clone(&backend)).await;
    let (b, url_b) = Fake::start_sharing(None, Arc::clone(&backend)).await;
    let (_c, url_c) = Fake::start_sharing(None, Arc::clone(&backend)).await;
    let id = ClientId::parse("failing-over").unwrap();
    let with_fallback = ClientOptions {
        client_id: Some(id.clone()),
        fallback_urls: vec![url_b.clone(), url_c.clone()],
        ..options()
    };
    let client = Client::connect(&url_a, with_fallback).await.unwrap();
    let other = Client::connect(&url_b, options()).await.unwrap();
    assert_eq!(client.stats().current_url, url_a);
    let mine = client.open(&doc()).await.unwrap();
    let theirs = other.open(&doc()).await.unwrap();
    theirs.insert(0, "theirs").unwrap();
    mine.wait_version(1, WAIT).await.unwrap();

    a.lose_ops.store(true, Ordering::SeqCst);
    mine.insert(0, "mine").unwrap();
    eventually("the op to reach A", || a.received.lock().unwrap().ops.len() == 1).await;
    theirs.insert(0, "x").unwrap(); // concurrent: committed before the lost op is resubmitted
    mine.wait_version(2, WAIT).await.unwrap();
    a.kill().await;
    assert!(matches!(Client::connect(&url_a, options()).await, Err(ClientError::WebSocket(_))), "A refuses");

    mine.wait_synced(WAIT).await.unwrap();
    theirs.wait_version(3, WAIT).await.unwrap();
    // The resubmission went left of the concurrent insert at the same place, on every side.
    assert_eq!(fake_text(&backend), "minextheirs");
    assert_eq!((mine.text(), theirs.text()), (fake_text(&backend), fake_text(&backend)));
    {
        // What each gateway was sent (the guards must not live across an await).
        let on_a = a.received.lock().unwrap();
        let on_b = b.received.lock().unwrap();
        assert_eq!(on_a.hellos, std::slice::from_ref(&id));
        assert!(on_b.hellos.contains(&id), "hello on B with the same client id: {:?}", on_b.hellos);
        let reopened: Vec<_> = on_b.opens.iter().filter(|(c, _, _)| *c == id).cloned().collect();
        assert_eq!(reopened, [(id.clone(), doc(), Some(2))], "reopened with since");
        let resubmitted: Vec<_> = on_b.ops.iter().filter(|(c, ..)| *c == id).cloned().collect();
        assert_eq!(resubmitted, on_a.ops, "the unacknowledged op is resubmitted unchanged");
        assert_eq!((resubmitted[0].2, resubmitted[0].3), (1, 1), "seq 1 on base 1");
    }
    let stats = client.stats();
    assert_eq!(
        (stats.reconnects, stats.failovers, stats.resubmissions, stats.current_url.as_str()),
        (1, 1, 1, url_b.as_str()),
        "{stats:?}"
    );
    assert!(client.errors().is_empty(), "{:?}", client.errors());

    // Lost again, round robin: from B to C, then from C past the dead A back to B.
    for (edit, reconnects, url) in [("!", 2, &url_c), ("?", 3, &url_b)] {
        client.drop_connection().await.unwrap();
        client.wait_connected(WAIT).await.unwrap();
        mine.insert(0, edit).unwrap();
        mine.wait_synced(WAIT).await.unwrap();
        let stats = client.stats();
        assert_eq!((stats.reconnects, stats.failovers, &stats.current_url), (reconnects, reconnects, url));
    }
    assert_eq!(mine.text(), "?!minextheirs");
    theirs.wait_version(5, WAIT).await.unwrap();
    assert_eq!(theirs.text(), mine.text());
    assert!(client.errors().is_empty(), "{:?}", client.errors());
    assert!(other.errors().is_empty(), "{:?}", other.errors());
}

#[tokio::test]
async fn the_first_connection_tries_the_fallbacks() {
    let (_b, url_b) = Fake::start(None).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url_a = format!("ws://{}/v1/ws", dead.local_addr().unwrap());
    drop(dead);
    let with_fallback = ClientOptions { fallback_urls: vec![url_b.clone()], ..options() };
    let client = Client::connect(&url_a, with_fallback).await.unwrap();
    let stats = client.stats();
    assert_eq!((stats.reconnects, stats.failovers, stats.current_url), (0, 0, url_b.clone()));

    let refused = ClientOptions { fallback_urls: vec![url_a.clone()], ..options() };
    assert!(matches!(Client::connect(&url_a, refused).await, Err(ClientError::WebSocket(_))));
    for bad in ["not a url", "http://127.0.0.1:1/v1/ws"] {
        let unusable = ClientOptions { fallback_urls: vec![bad.into()], ..options() };
        let error = Client::connect(&url_b, unusable).await.unwrap_err();
        assert!(matches!(error, ClientError::InvalidConfig(_)), "{bad}: {error}");
    }
}

/// The text of the one test document in a shared backend.
fn fake_text(backend: &Mutex<FakeState>) -> String {
    backend.lock().unwrap().docs.get(&doc()).map(|d| d.text.clone()).unwrap_or_default()
}

#[test]
fn backoff_grows_and_stays_capped() {
    let o = ClientOptions::default();
    for attempt in [0, 1, 5, 40, u32::MAX] {
        let d = backoff(&o, attempt);
        assert!(d <= o.reconnect_max_delay, "{d:?}");
        assert!(d >= o.reconnect_min_delay / 2, "{d:?}");
    }
    assert!(backoff(&o, 30) >= o.reconnect_max_delay / 2);
}

/// Random edits from three clients with random connection drops; everyone must converge with no error.
/// The seed fixes the choices (not the thread timing); `TANDEM_SEED` replays them.
#[tokio::test]
async fn random_edits_and_drops_converge() {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    let seed =
        std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("connection simulation seed {seed} (replay with TANDEM_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (fake, url) = Fake::start(None).await;
    let mut clients = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let c = Client::connect(&url, options()).await.unwrap();
        handles.push(c.open(&doc()).await.unwrap());
        clients.push(c);
    }
    for step in 0..300 {
        let i = rng.gen_range(0..clients.len());
        let h = &handles[i];
        match rng.gen_range(0..100) {
            0..=3 => clients[i].drop_connection().await.unwrap(),
            4..=9 => tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3))).await,
            10..=29 => {
                let len = h.len_chars();
                if len > 0 {
                    let pos = rng.gen_range(0..len);
                    h.delete(pos, rng.gen_range(1..=(len - pos).min(3))).unwrap();
                }
            }
            _ => {
                let pos = rng.gen_range(0..=h.len_chars());
                h.insert(pos, ["a", "bc", "é", "😀"][step % 4]).unwrap();
            }
        }
    }
    for h in &handles {
        h.wait_synced(WAIT).await.unwrap();
    }
    let version = fake.version(&doc());
    for (c, h) in clients.iter().zip(&handles) {
        h.wait_version(version, WAIT).await.unwrap();
        assert_eq!(h.text(), fake.text(&doc()), "seed {seed}");
        assert!(c.errors().is_empty(), "seed {seed}: {:?}", c.errors());
    }
    let total: u64 = clients.iter().map(|c| c.stats().reconnects).sum();
    assert!(total > 0, "seed {seed}: no reconnect happened");
}

/// Takes the next event, failing the test after [`WAIT`].
async fn next_event(events: &mut mpsc::Receiver<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("an event in time").expect("the sender lives")
}

#[tokio::test]
async fn splice_names_the_seq_that_acks_and_remote_ops_report() {
    let (_fake, url) = Fake::start(None).await;
    let (a_tx, mut a_events) = mpsc::channel(16);
    let (b_tx, mut b_events) = mpsc::channel(16);
    let a = Client::connect(&url, ClientOptions { events: Some(a_tx), ..options() }).await.unwrap();
    let b = Client::connect(&url, ClientOptions { events: Some(b_tx), ..options() }).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    let _db = b.open(&doc()).await.unwrap();

    // The first edit goes at once as seq 1; the next two are composed behind it and go as seq 2.
    let before = std::time::Instant::now();
    assert_eq!(da.splice(0, 0, "ab").unwrap(), 1);
    assert_eq!(da.splice(2, 0, "c").unwrap(), 2);
    assert_eq!(da.splice(0, 1, "").unwrap(), 2);
    for (seq, version) in [(1, 1), (2, 2)] {
        match next_event(&mut a_events).await {
            ClientEvent::Acked { doc: d, seq: s, version: v, at } => {
                assert_eq!((d, s, v), (doc(), seq, version));
                assert!(at >= before);
            }
            other => panic!("expected the ack of seq {seq}, got {other:?}"),
        }
        match next_event(&mut b_events).await {
            ClientEvent::RemoteOp { doc: d, version: v, author, .. } => {
                assert_eq!((d, v, &author), (doc(), version, a.client_id()));
            }
            other => panic!("expected version {version} from a, got {other:?}"),
        }
    }
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(da.text(), "bc");
    assert_eq!(da.splice(2, 0, "d").unwrap(), 3, "synced again: sent at once with the next seq");
    assert!(matches!(da.splice(9, 0, "x"), Err(ClientError::Ot(_))), "out of range changes nothing");
    da.wait_synced(WAIT).await.unwrap();
    let stats = a.stats();
    assert_eq!((stats.acks, stats.events_dropped, stats.errors), (3, 0, 0), "{stats:?}");
}

#[tokio::test]
async fn a_full_event_channel_drops_events_without_stalling_the_client() {
    let (_fake, url) = Fake::start(None).await;
    let (tx, events) = mpsc::channel(1);
    let a = Client::connect(&url, ClientOptions { events: Some(tx), ..options() }).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    for i in 0..3 {
        da.insert(0, "x").unwrap();
        da.wait_synced(WAIT).await.unwrap();
        assert_eq!(da.version(), i + 1);
    }
    let stats = a.stats();
    assert_eq!((stats.acks, stats.events_dropped), (3, 2), "one fits, nobody reads: {stats:?}");
    drop(events);
    da.insert(0, "y").unwrap();
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(a.stats().events_dropped, 3, "a closed channel drops too");
}

#[tokio::test]
async fn undo_and_redo_go_out_as_ops_and_keep_the_text_of_others() {
    let (fake, url) = Fake::start(None).await;
    let a = Client::connect(&url, options()).await.unwrap();
    let no_history = UndoOptions { depth: 0, ..UndoOptions::default() };
    let b = Client::connect(&url, ClientOptions { undo: no_history, ..options() }).await.unwrap();
    let da = a.open(&doc()).await.unwrap();
    let db = b.open(&doc()).await.unwrap();
    da.insert(0, "hello").unwrap();
    db.wait_version(1, WAIT).await.unwrap();
    db.insert(2, "X").unwrap();
    assert!(!db.can_undo(), "depth 0 keeps no history");
    da.wait_version(2, WAIT).await.unwrap();

    let undone = da.undo().unwrap().expect("a step to undo");
    assert_eq!(undone.to_json(), serde_json::json!([-2, 1, -3]));
    assert!(!da.can_undo() && da.can_redo());
    db.wait_version(3, WAIT).await.unwrap();
    assert_eq!((da.text().as_str(), db.text().as_str()), ("X", "X"));

    da.redo().unwrap().expect("a step to redo");
    db.wait_version(4, WAIT).await.unwrap();
    assert_eq!((da.text().as_str(), db.text().as_str()), ("heXllo", "heXllo"));
    da.wait_synced(WAIT).await.unwrap();
    assert_eq!(fake.text(&doc()), "heXllo");
    assert_eq!(db.undo().unwrap(), None);
    assert!(a.errors().is_empty() && b.errors().is_empty(), "{:?} {:?}", a.errors(), b.errors());
}

#[path = "persist_tests.rs"]
mod persist;
