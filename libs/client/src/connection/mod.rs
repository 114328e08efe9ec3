//! The async client over a real WebSocket.
//!
//! One background task per [`Client`] owns the socket: it reads frames, feeds them to the documents'
//! [`DocumentClient`]s, writes what they want sent, and reconnects. The state the handles read (the
//! documents, errors, stats) sits in one `std::sync::Mutex` that is never held across an `.await`, so
//! [`DocHandle::edit`] and [`DocHandle::text`] are synchronous and a local edit shows at once, as in an
//! editor. Edits wake the task through a [`Notify`] and a set of documents with something to send, whose
//! size is bounded by the number of open documents; requests (open, close, drop) go through a bounded
//! channel. Nothing grows without bound: the error log is capped too.
//!
//! Delivery guarantees are checked, not assumed: every `op`/`ack` must carry exactly the next version.
//! A violation (or any op that does not fit) is recorded in [`Client::errors`] with
//! [`ErrorSource::Client`] and the document is reloaded from a fresh snapshot; the client does not panic,
//! because a panic in the background task would only turn into a silent hang in the test that uses it.

mod events;
mod persist;
mod socket;
mod task;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;
use tandem_ot::{Operation, OtError};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::{ClientError, DocumentClient, HistoryEdit, UndoOptions};

pub use events::ClientEvent;

/// How many error records a client keeps; later ones are only counted ([`Stats::errors_dropped`]).
pub const MAX_ERROR_RECORDS: usize = 1000;

/// How to connect. `Default` gives a random client id, no token, reconnect on, no fallback gateway, and
/// timeouts suited to tests on one machine.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Further gateways of the same deployment (`ws://HOST:PORT/v1/ws` each), for when the one the
    /// client is connected to dies. The client's list of URLs is the URL given to [`Client::connect`]
    /// followed by these, in order.
    ///
    /// After a lost connection the client tries the next URL of the list after the one it was
    /// connected to, then the one after that, round robin, so the gateway that just failed is tried
    /// last. The URLs of one round are tried back to back: a dead gateway refuses at once, and the
    /// clients of a healthy one should not wait for nothing; the exponential backoff (see
    /// [`ClientOptions::reconnect_min_delay`]) is waited before the first attempt and after every
    /// round in which all URLs failed, so a whole deployment being down costs one round per backoff.
    /// A gateway that does not answer at all costs [`ClientOptions::connect_timeout`] before the next
    /// URL is tried.
    ///
    /// The token and the client id are the same on every URL, so the server still recognises
    /// resubmissions; documents are reopened with `since` exactly as on a reconnect to the same URL.
    /// Every client walks the list in the order given, so to spread the clients of a dead gateway over
    /// the others, give different clients the fallbacks in different orders.
    pub fallback_urls: Vec<String>,
    /// The `client` of `hello`: identifies this editing session across reconnects, so the server can
    /// recognise resubmissions. `None` draws 16 random alphanumerics, or, with a
    /// [`ClientOptions::state_dir`], takes over the session stored there.
    pub client_id: Option<ClientId>,
    /// Sent as `Authorization: Bearer <token>` on the upgrade request.
    pub token: Option<String>,
    /// Reconnect (with `since` and resubmission) when the socket drops. Off: a lost connection closes
    /// the client for good and every call fails with [`ClientError::Closed`].
    pub reconnect: bool,
    /// Limit for connecting plus the handshake, per attempt.
    pub connect_timeout: Duration,
    /// Limit for [`Client::open`] to get its snapshot.
    pub request_timeout: Duration,
    /// First reconnect delay; it doubles per failed attempt up to `reconnect_max_delay`, and each delay
    /// is drawn at random between half and all of it, so thousands of clients do not return in step.
    pub reconnect_min_delay: Duration,
    /// Longest reconnect delay.
    pub reconnect_max_delay: Duration,
    /// A connection that has written nothing for this long sends a `ping`, staying inside the
    /// server's idle timeout (120 s by default).
    pub keepalive: Duration,
    /// Capacity of the request channel to the background task; senders wait when it is full.
    pub command_capacity: usize,
    /// Where to report acks and others' ops as they are taken, with the instant they were taken (see
    /// [`ClientEvent`]); for observers that time the server, such as the load generator. The task
    /// never waits for this channel: an event that does not fit is dropped and counted in
    /// [`Stats::events_dropped`]. `None` (the default) costs nothing.
    pub events: Option<mpsc::Sender<ClientEvent>>,
    /// Limits of each document's undo history ([`DocHandle::undo`]); a depth of 0 keeps none, which
    /// saves a client that never undoes the work of transforming it against every remote op.
    pub undo: UndoOptions,
    /// A folder where the client keeps its session id and each open document's state, pending edits
    /// included, so that the next process on the folder sends them, once, with their original `seq`
    /// and `base` (see "Offline edits kept across a restart" in the crate docs). Without
    /// [`ClientOptions::client_id`], the stored session is taken over. One client at a time: the
    /// folder is locked, and a client still holding it is waited for up to
    /// [`ClientOptions::connect_timeout`]. Every change of a document's state is then a whole-file
    /// write with fsync, so this is for editing sessions, not for thousands of simulated clients.
    pub state_dir: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_id: None,
            token: None,
            fallback_urls: Vec::new(),
            reconnect: true,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(5),
            keepalive: Duration::from_secs(30),
            command_capacity: 64,
            events: None,
            undo: UndoOptions::default(),
            state_dir: None,
        }
    }
}

/// Who found an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// An `error` message from the server.
    Server,
    /// The client found the server breaking the protocol (a version out of order, an ack for the wrong
    /// op, an op that does not fit, an unreadable frame). Such records carry [`ErrorCode::Internal`].
    Client,
}

/// One recorded error, so that tests can assert on what went wrong (or that nothing did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    /// Who found it.
    pub source: ErrorSource,
    /// The protocol code (`internal` for what the client found).
    pub code: ErrorCode,
    /// The server's message, or the client's description.
    pub message: String,
    /// The document it is about, if any.
    pub doc: Option<DocId>,
    /// The `seq` of the op it is about, if any.
    pub seq: Option<u64>,
}

/// Counters for tests and the load generator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful reconnects (not counting the first connection).
    pub reconnects: u64,
    /// Reconnects that landed on a different URL than the connection before them (see
    /// [`ClientOptions::fallback_urls`]); included in `reconnects`.
    pub failovers: u64,
    /// The URL of the current connection, or of the last one while the client is reconnecting or
    /// after it closed (see [`Client::is_connected`]).
    pub current_url: String,
    /// `op` messages written, resubmissions included.
    pub ops_sent: u64,
    /// Ops sent again with a `seq` already sent: after a reconnect or a `rate_limited`/`unavailable`.
    pub resubmissions: u64,
    /// `ack`s taken.
    pub acks: u64,
    /// Other clients' `op`s taken.
    pub remote_ops: u64,
    /// Documents reloaded from a snapshot after a rejected op or a protocol violation.
    pub resyncs: u64,
    /// Errors recorded (see [`Client::errors`]), those not kept included.
    pub errors: u64,
    /// Error records not kept because [`MAX_ERROR_RECORDS`] were already kept.
    pub errors_dropped: u64,
    /// Events not delivered to [`ClientOptions::events`] because the channel was full or closed.
    pub events_dropped: u64,
    /// Writes to [`ClientOptions::state_dir`] that failed: the edits of that moment went on in
    /// memory only, and a restart may not find them.
    pub state_write_failures: u64,
}

/// Where a document stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Subscribed and caught up: ops are sent as soon as they exist.
    Open,
    /// Reopened with `since` after a reconnect (or waiting to be): versions are taken, nothing is sent
    /// until `opened`.
    CatchingUp,
    /// Reopened without `since` after a rejected op: everything is ignored until the snapshot.
    Resyncing,
    /// Closed by the application or the server refused access; kept for its next `seq`, which must
    /// continue if the document is opened again by this client id.
    Closed,
}

struct DocEntry {
    doc: DocumentClient,
    phase: Phase,
    /// The op in flight has not been written on the current connection.
    unsent: bool,
    /// Highest `seq` ever written, to count resubmissions.
    last_sent_seq: u64,
}

/// What the handles and the task share.
struct State {
    /// The id this client's ops carry in others' `op` frames, from the last `welcome`.
    author: ClientId,
    docs: HashMap<DocId, DocEntry>,
    /// Documents whose op in flight is to be written (`unsent`); a set, so bounded by the documents.
    outbox: HashSet<DocId>,
    errors: Vec<ErrorRecord>,
    stats: Stats,
    connected: bool,
    /// Why the client ended, once it has.
    closed: Option<String>,
}

impl State {
    fn record(&mut self, record: ErrorRecord) {
        self.stats.errors += 1;
        if self.errors.len() < MAX_ERROR_RECORDS {
            self.errors.push(record);
        } else {
            self.stats.errors_dropped += 1;
        }
    }

    /// Marks the op in flight of `doc` as to be written.
    fn mark_unsent(&mut self, doc: &DocId) {
        if let Some(entry) = self.docs.get_mut(doc) {
            entry.unsent = true;
            self.outbox.insert(doc.clone());
        }
    }
}

struct Shared {
    client_id: ClientId,
    /// [`ClientOptions::state_dir`], locked for as long as this client lives.
    state_dir: Option<persist::StateDir>,
    state: Mutex<State>,
    /// Bumped on every change a waiter may care about (version, sync, connection, close).
    changed: watch::Sender<()>,
    /// Wakes the task when the outbox got something.
    outbox_ready: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify_changed(&self) {
        self.changed.send_replace(());
    }

    /// Waits until `check` returns `Some`, re-checking after every change, up to `timeout`.
    async fn wait<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Subscribe before checking, so a change between the check and the wait is not missed.
            let mut rx = self.changed.subscribe();
            if let Some(result) = check(&self.lock()) {
                return result;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `Shared`, so this cannot happen; treat it as the end anyway.
                Ok(Err(_)) => return Err(ClientError::Closed("the client state is gone".into())),
                Err(_) => return Err(ClientError::Timeout(timeout)),
            }
        }
    }
}

/// Requests from handles to the background task.
enum Command {
    Open {
        doc: DocId,
        reply: oneshot::Sender<Result<(), ClientError>>,
        /// The document's state from [`ClientOptions::state_dir`], if it has one there.
        restored: Option<Box<persist::Restored>>,
    },
    Close {
        doc: DocId,
    },
    /// Continue on a fresh token: sent as `auth`, and used for every later reconnect.
    Authenticate {
        token: String,
    },
    /// Answered once the socket is dropped.
    DropConnection {
        done: oneshot::Sender<()>,
    },
    Shutdown,
}

/// A connection to the gateway, shared by any number of documents. Cheap to clone: clones talk to the
/// same background task. The task ends when [`Client::shutdown`] is called, when the connection is lost
/// for good, or when every `Client` and [`DocHandle`] is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    options: Arc<ClientOptions>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("client_id", &self.shared.client_id).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` (`ws://HOST:PORT/v1/ws`) and completes the handshake. With
    /// [`ClientOptions::fallback_urls`], a URL that fails is followed by the next one of the list, once
    /// each, with no delay. Errors of this first connection are not retried: if every URL fails, the
    /// error of the last one is returned as it is, so a test with a wrong address fails fast. A refused
    /// token or protocol ends the attempt at once (every gateway would say the same), and a URL that
    /// cannot be used at all, fallbacks included, is [`ClientError::InvalidConfig`] before any
    /// connection is made, rather than a surprise at the first failover.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        if options.command_capacity == 0 {
            return Err(ClientError::InvalidConfig("command_capacity must be at least 1".into()));
        }
        let urls: Vec<String> =
            std::iter::once(url.to_owned()).chain(options.fallback_urls.iter().cloned()).collect();
        for url in &urls {
            socket::check_url(url)?;
        }
        let state_dir = match &options.state_dir {
            Some(path) => Some(persist::StateDir::open(path, options.connect_timeout).await?),
            None => None,
        };
        let client_id = match &state_dir {
            Some(dir) => dir.session(options.client_id.as_ref(), random_client_id)?,
            None => options.client_id.clone().unwrap_or_else(random_client_id),
        };
        let (ws, current, author) = connect_first(&urls, &options, &client_id).await?;
        let shared = Arc::new(Shared {
            client_id,
            state_dir,
            state: Mutex::new(State {
                author,
                docs: HashMap::new(),
                outbox: HashSet::new(),
                errors: Vec::new(),
                stats: Stats { current_url: urls[current].clone(), ..Stats::default() },
                connected: true,
                closed: None,
            }),
            changed: watch::channel(()).0,
            outbox_ready: Notify::new(),
        });
        let (commands, rx) = mpsc::channel(options.command_capacity);
        let options = Arc::new(options);
        task::spawn(urls, current, Arc::clone(&options), Arc::clone(&shared), rx, ws);
        Ok(Client { shared, commands, options })
    }

    /// The client id sent in `hello`: the server deduplicates this client's ops by it (scoped by the
    /// user, see [`Client::author_id`]), and a reconnect with it resumes the session.
    pub fn client_id(&self) -> &ClientId {
        &self.shared.client_id
    }

    /// The id this client's ops carry as the author in other clients' `op` frames (and in their
    /// [`ClientEvent::RemoteOp`]): the client id scoped by the user, as the server's `welcome` named
    /// it, so no other user's session can pass for this one.
    pub fn author_id(&self) -> ClientId {
        self.shared.lock().author.clone()
    }

    /// Subscribes to `doc` and resolves once its snapshot arrived. Opening a document again after
    /// [`DocHandle::close`] continues its `seq`, as the server expects from the same client id.
    ///
    /// With a [`ClientOptions::state_dir`] that holds a state of `doc`, it resolves at once, offline
    /// too, with the stored text and pending edits; the document is reopened with `since` = the
    /// stored version, and the op in flight is resent unchanged, then the buffer. A stored state that
    /// cannot be read or does not fit together is [`ClientError::SavedState`].
    pub async fn open(&self, doc: &DocId) -> Result<DocHandle, ClientError> {
        let restored = match &self.shared.state_dir {
            Some(dir) => dir.load(doc, self.options.undo)?.map(Box::new),
            None => None,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Command::Open { doc: doc.clone(), reply, restored }).await?;
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => return Err(ClientError::Timeout(timeout)),
        }
        Ok(DocHandle { shared: Arc::clone(&self.shared), commands: self.commands.clone(), doc: doc.clone() })
    }

    /// Everything that went wrong so far: `error` messages from the server and protocol violations the
    /// client found. A healthy run has none.
    pub fn errors(&self) -> Vec<ErrorRecord> {
        self.shared.lock().errors.clone()
    }

    /// Counters: reconnects and failovers, ops sent, acks, remote ops, resyncs; and the URL connected to.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// True while the socket is up and the handshake done.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Waits until the socket is up again (after [`Client::drop_connection`], say).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        self.shared
            .wait(timeout, |state| match (&state.closed, state.connected) {
                (Some(reason), _) => Some(Err(ClientError::Closed(reason.clone()))),
                (None, true) => Some(Ok(())),
                (None, false) => None,
            })
            .await
    }

    /// Test hook: closes the socket abruptly, without a close frame, as a network failure would. The
    /// client then reconnects (if `reconnect` is on) or closes. Resolves once the socket is dropped, so
    /// [`Client::is_connected`] is false right after (until the reconnect).
    pub async fn drop_connection(&self) -> Result<(), ClientError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::DropConnection { done }).await?;
        rx.await.map_err(|_| self.closed_error())
    }

    /// Hands the server a fresh token before the current one expires (the `auth` message), and uses
    /// it for every later reconnect. A token the server refuses ends the session as
    /// [`ClientError::Unauthorized`].
    pub async fn refresh_token(&self, token: impl Into<String>) -> Result<(), ClientError> {
        self.send(Command::Authenticate { token: token.into() }).await
    }

    /// Closes the connection politely and ends the client; later calls fail with
    /// [`ClientError::Closed`]. Resolves once the task has finished.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.send(Command::Shutdown).await?;
        let _ = self
            .shared
            .wait(self.options.request_timeout, |state| state.closed.as_ref().map(|_| Ok(())))
            .await;
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), ClientError> {
        self.commands.send(command).await.map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        closed_error(&self.shared)
    }
}

fn closed_error(shared: &Shared) -> ClientError {
    let reason = shared.lock().closed.clone();
    ClientError::Closed(reason.unwrap_or_else(|| "the client task ended".into()))
}

/// One open document of a [`Client`]. Cheap to clone. Reads and edits are synchronous and local;
/// the background task sends and receives.
#[derive(Clone)]
pub struct DocHandle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    doc: DocId,
}

impl std::fmt::Debug for DocHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocHandle").field("doc", &self.doc).finish_non_exhaustive()
    }
}

impl DocHandle {
    /// The document id.
    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    /// The local text: the last server version plus this client's unacknowledged edits. After close,
    /// the last text seen.
    pub fn text(&self) -> String {
        self.read(|d| d.text())
    }

    /// The last server version this client has.
    pub fn version(&self) -> u64 {
        self.read(|d| d.version())
    }

    /// Length of the local text in characters: the base length an edit must have.
    pub fn len_chars(&self) -> usize {
        self.read(|d| d.len_chars())
    }

    /// Local edits not yet acknowledged ([`DocumentClient::pending_edits`]): "3 edits waiting".
    pub fn pending_edits(&self) -> u64 {
        self.read(|d| d.pending_edits())
    }

    /// True when every own edit is acknowledged and the document is not being reloaded.
    pub fn is_synced(&self) -> bool {
        let state = self.shared.lock();
        state.docs.get(&self.doc).is_some_and(|e| e.phase != Phase::Resyncing && e.doc.is_synced())
    }

    /// Applies an edit to the local text at once; the task sends it (or composes it into the buffer if
    /// an op is in flight). Refused if it does not fit the current text (see [`DocHandle::len_chars`]),
    /// if the document is closed, or while it is reloaded after a rejected op.
    pub fn edit(&self, op: Operation) -> Result<(), ClientError> {
        self.edit_with(|_| Ok(op)).map(drop)
    }

    /// Inserts `text` at character `pos`.
    pub fn insert(&self, pos: usize, text: &str) -> Result<(), ClientError> {
        self.splice(pos, 0, text).map(drop)
    }

    /// Deletes `n` characters from character `pos`.
    pub fn delete(&self, pos: usize, n: usize) -> Result<(), ClientError> {
        self.splice(pos, n, "").map(drop)
    }

    /// Replaces `delete` characters at character `pos` by `insert`, like [`DocHandle::insert`] and
    /// [`DocHandle::delete`], and returns the `seq` of the op that carries this edit to the server: the
    /// op sent now if nothing was in flight, else the buffered op sent after the in-flight one's ack.
    /// The [`ClientEvent::Acked`] with that `seq` (see [`ClientOptions::events`]) tells when the edit
    /// was committed, which is how the load generator times each keystroke. If the op is rejected the
    /// edit is lost with it, and a later ack carries a higher `seq`.
    pub fn splice(&self, pos: usize, delete: usize, insert: &str) -> Result<u64, ClientError> {
        self.edit_with(|len| Operation::from_patch(len, pos, delete, insert))
    }

    /// Applies the op `build` makes from the current length in characters, as one edit, under the
    /// lock that remote ops take too, so a position-based edit cannot miss. Returns the `seq` that
    /// carries it, like [`DocHandle::splice`]. For several edits that must leave as one op (a load
    /// generator's keystrokes that fell due together, composed): applied one by one, the first would
    /// be sent alone and the rest would wait for its ack.
    pub fn edit_from_len(
        &self,
        build: impl FnOnce(usize) -> Result<Operation, OtError>,
    ) -> Result<u64, ClientError> {
        self.edit_with(build)
    }

    /// Builds the op from the current length and applies it under one lock, so that a remote op taken
    /// in between cannot make a position-based edit miss. Returns the `seq` that carries the edit.
    fn edit_with(&self, build: impl FnOnce(usize) -> Result<Operation, OtError>) -> Result<u64, ClientError> {
        let mut state = self.shared.lock();
        let entry = editable(&mut state, &self.doc)?;
        let op = build(entry.doc.len_chars())?;
        // Sent now (nothing in flight) or composed into the buffer, which goes out with this `seq` once
        // the op in flight is acknowledged: `next_seq` moves only when an op is sent.
        let seq = entry.doc.next_seq();
        let send = entry.doc.local_edit(op)?.is_some();
        // On disk before the task can send it.
        self.shared.persist(&mut state, &self.doc);
        if send {
            state.mark_unsent(&self.doc);
            drop(state);
            self.shared.outbox_ready.notify_one();
        }
        Ok(seq)
    }

    /// Reverts this client's most recent undo step that is not undone yet (see
    /// [`DocumentClient::undo`] and the crate docs for the rules) as a new local edit, sent like any
    /// other. Returns the op applied to the local text, or `None` if there is nothing to undo. Refused
    /// like [`DocHandle::edit`] when the document is closed or being reloaded.
    pub fn undo(&self) -> Result<Option<Operation>, ClientError> {
        self.history_edit(DocumentClient::undo)
    }

    /// Applies the most recently undone step again ([`DocumentClient::redo`]). Returns the op applied
    /// to the local text, or `None` if there is nothing to redo.
    pub fn redo(&self) -> Result<Option<Operation>, ClientError> {
        self.history_edit(DocumentClient::redo)
    }

    /// True when [`DocHandle::undo`] has a step to revert.
    pub fn can_undo(&self) -> bool {
        self.read(|d| d.can_undo())
    }

    /// True when [`DocHandle::redo`] has a step to apply again.
    pub fn can_redo(&self) -> bool {
        self.read(|d| d.can_redo())
    }

    /// Makes the next edit start a new undo step ([`DocumentClient::break_undo_group`]).
    pub fn break_undo_group(&self) {
        if let Some(entry) = self.shared.lock().docs.get_mut(&self.doc) {
            entry.doc.break_undo_group();
        }
    }

    /// Runs an undo or redo under the lock, with the checks of [`DocHandle::edit`].
    fn history_edit(
        &self,
        step: impl FnOnce(&mut DocumentClient) -> Result<Option<HistoryEdit>, ClientError>,
    ) -> Result<Option<Operation>, ClientError> {
        let mut state = self.shared.lock();
        let entry = editable(&mut state, &self.doc)?;
        let Some(edit) = step(&mut entry.doc)? else { return Ok(None) };
        self.shared.persist(&mut state, &self.doc);
        if edit.outgoing.is_some() {
            state.mark_unsent(&self.doc);
            drop(state);
            self.shared.outbox_ready.notify_one();
        }
        Ok(Some(edit.op))
    }

    /// Waits until every own edit is acknowledged ([`DocHandle::is_synced`]).
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait(timeout, |e| e.phase != Phase::Resyncing && e.doc.is_synced()).await
    }

    /// Waits until the document has reached `version` (by others' ops or own acks).
    pub async fn wait_version(&self, version: u64, timeout: Duration) -> Result<(), ClientError> {
        self.wait(timeout, |e| e.phase != Phase::Resyncing && e.doc.version() >= version).await
    }

    /// Unsubscribes. Unacknowledged edits may still be committed by the server, but their acks are not
    /// taken any more. With a [`ClientOptions::state_dir`] they are kept, and sent (once) when the
    /// document is opened again, by this client or the next one on the folder.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.commands
            .send(Command::Close { doc: self.doc.clone() })
            .await
            .map_err(|_| closed_error(&self.shared))
    }

    fn read<T: Default>(&self, f: impl FnOnce(&DocumentClient) -> T) -> T {
        // A handle exists only after its entry was created, and entries are never removed.
        self.shared.lock().docs.get(&self.doc).map(|e| f(&e.doc)).unwrap_or_default()
    }

    async fn wait(&self, timeout: Duration, done: impl Fn(&DocEntry) -> bool) -> Result<(), ClientError> {
        self.shared
            .wait(timeout, |state| {
                if let Some(reason) = &state.closed {
                    return Some(Err(ClientError::Closed(reason.clone())));
                }
                match state.docs.get(&self.doc) {
                    None => Some(Err(ClientError::NotOpen(self.doc.clone()))),
                    Some(e) if e.phase == Phase::Closed => Some(Err(ClientError::NotOpen(self.doc.clone()))),
                    Some(e) => done(e).then_some(Ok(())),
                }
            })
            .await
    }
}

/// The entry of `doc` if it may be edited now: the client runs, and the document is open and not being
/// reloaded.
fn editable<'a>(state: &'a mut State, doc: &DocId) -> Result<&'a mut DocEntry, ClientError> {
    if let Some(reason) = &state.closed {
        return Err(ClientError::Closed(reason.clone()));
    }
    let Some(entry) = state.docs.get_mut(doc) else {
        return Err(ClientError::NotOpen(doc.clone()));
    };
    match entry.phase {
        Phase::Closed => Err(ClientError::NotOpen(doc.clone())),
        Phase::Resyncing => Err(ClientError::Resyncing(doc.clone())),
        Phase::Open | Phase::CatchingUp => Ok(entry),
    }
}

/// The first connection: each URL once, in order; returns the socket, the index of its URL and the
/// author id the server named.
async fn connect_first(
    urls: &[String],
    options: &ClientOptions,
    client_id: &ClientId,
) -> Result<(socket::Ws, usize, ClientId), ClientError> {
    let mut last_error = None;
    for (index, url) in urls.iter().enumerate() {
        match socket::connect(url, options.token.as_deref(), client_id, options.connect_timeout).await {
            Ok((ws, author)) => return Ok((ws, index, author)),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| ClientError::InvalidConfig("no URL to connect to".into())))
}

/// A connection error that no other attempt can cure: the token or the protocol was refused (the
/// gateways of one deployment share both), or the settings are unusable.
fn is_fatal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unauthorized(_) | ClientError::UnsupportedProtocol(_) | ClientError::InvalidConfig(_)
    )
}

/// 16 random alphanumerics: unique enough for one editing session.
fn random_client_id() -> ClientId {
    let id: String = rand::thread_rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect();
    ClientId::parse(&id).expect("alphanumerics form a valid client id")
}

/// The delay before reconnect attempt `attempt` (0-based): exponential, capped, with jitter.
fn backoff(options: &ClientOptions, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let full = options.reconnect_min_delay.saturating_mul(factor).min(options.reconnect_max_delay);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests;
