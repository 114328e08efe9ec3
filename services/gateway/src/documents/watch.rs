//! WatchDocument: the events of a document after `from_version`, first from the event log (the
//! catch-up), then a `CaughtUp` marker, then live, each version once and in order.
//!
//! The watcher is registered with the document's task *before* the catch-up is read (see
//! `crate::hub::api`): the task queues every version after the one it answers with, while this
//! stream reads the versions up to that one from the store. So nothing falls between the two and
//! nothing comes twice, and the task, the one place that orders what every subscriber of the
//! document receives, never waits for this stream. The stream is pulled by the caller: the catch-up
//! is read a page at a time as the caller reads (HTTP/2 flow control), while the live versions
//! committed meanwhile wait in the watcher's queue, at most [`GatewayConfig::watch_queue`] of them.
//! A caller that falls further behind is not waited for: the stream ends `overloaded`, naming the
//! last version it sent, from which the caller watches again.
//!
//! A stream also ends when the document is deleted (a `deleted` event, then the end), when the
//! caller's token expires (`unauthorized`), and when the gateway stops (`unavailable`, at the end
//! of its drain grace, which an open watch holds like a WebSocket connection); each says the last
//! version sent. A draining gateway takes no new watch.
//!
//! [`GatewayConfig::watch_queue`]: crate::GatewayConfig::watch_queue

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream::BoxStream;
use tandem_auth::Access;
use tandem_proto::proto::watch_document_response::Event;
use tandem_proto::proto::{self, CaughtUp, WatchDocumentRequest, WatchDocumentResponse};
use tandem_protocol::records::DocumentDeleted;
use tandem_protocol::{DocId, ErrorCode};
use tandem_store::{EventStore, HistoryEntry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::Status;

use super::auth::ApiCaller;
use super::errors::{not_found, status, store_error, unavailable};
use super::fields;
use crate::admission::unix_now;
use crate::hub::api::{Watch, WatchEnd};
use crate::GatewayState;

/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 1_000;

pub type WatchStream = BoxStream<'static, Result<WatchDocumentResponse, Status>>;

pub async fn watch(
    state: &Arc<GatewayState>,
    caller: &ApiCaller,
    request: WatchDocumentRequest,
) -> Result<WatchStream, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    if state.drain.is_draining() {
        return Err(unavailable("this gateway is shutting down; watch through another one"));
    }
    let queue = state.config.watch_queue;
    let watch = state.hubs.watch(&doc, queue).await.map_err(|e| store_error(&doc, e))?;
    let from = request.from_version;
    if from > watch.version {
        return Err(not_found(format!(
            "from_version {from} is after the latest version of document {doc}, {}",
            watch.version
        )));
    }
    let expires = caller
        .valid_until
        .map(|until| Instant::now() + std::time::Duration::from_secs(until.saturating_sub(unix_now())));
    let follower = Follower {
        store: state.store.clone(),
        doc,
        watch,
        sent: from,
        page: VecDeque::new(),
        phase: Phase::CatchUp,
        queue,
        closing: state.drain.closing().clone(),
        _draining: state.drain.connection(),
        expires,
    };
    metrics::gauge!("tandem_gateway_api_watchers").increment(1.0);
    Ok(Box::pin(futures::stream::unfold(follower, |mut follower| async move {
        let item = follower.next().await?;
        Some((item, follower))
    })))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Live,
    Done,
}

/// One watch in progress.
struct Follower {
    store: Arc<dyn EventStore>,
    doc: DocId,
    watch: Watch,
    /// The last version sent (`from_version` before the first).
    sent: u64,
    /// The catch-up page being sent.
    page: VecDeque<HistoryEntry>,
    phase: Phase,
    queue: usize,
    /// Fires when the gateway closes its connections (after the drain grace).
    closing: CancellationToken,
    /// Counted by the drain like a WebSocket connection: a stopping gateway serves the watch
    /// through its grace, not ending sooner while one is open.
    _draining: TaskTrackerToken,
    /// When the caller's token expires.
    expires: Option<Instant>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        metrics::gauge!("tandem_gateway_api_watchers").decrement(1.0);
    }
}

impl Follower {
    /// The next item of the stream; `None` once it has ended.
    async fn next(&mut self) -> Option<Result<WatchDocumentResponse, Status>> {
        let item = match self.phase {
            Phase::Done => return None,
            Phase::CatchUp => self.catch_up().await,
            Phase::Live => self.live().await,
        };
        if !matches!(
            item,
            Ok(WatchDocumentResponse { event: Some(Event::Committed(_) | Event::CaughtUp(_)) })
        ) {
            // An error or the tombstone: the last item.
            self.phase = Phase::Done;
        }
        Some(item)
    }

    async fn catch_up(&mut self) -> Result<WatchDocumentResponse, Status> {
        let up_to = self.watch.version;
        if self.sent >= up_to {
            self.phase = Phase::Live;
            return Ok(event(Event::CaughtUp(CaughtUp { version: self.sent })));
        }
        if self.page.is_empty() {
            let page = self
                .store
                .read_history(&self.doc, self.sent, up_to, CATCH_UP_PAGE)
                .await
                .map_err(|e| store_error(&self.doc, e))?;
            self.page = page.into();
        }
        match self.page.pop_front() {
            Some(entry) if entry.event.version == self.sent + 1 => {
                self.sent = entry.event.version;
                Ok(committed(fields::history_event(&entry.event, entry.committed_at_ms)))
            }
            // Versions the task reported are gone from the store: the document was deleted.
            _ => match self.watch.end() {
                Some(WatchEnd::Deleted(deleted)) => Ok(tombstone(deleted)),
                _ => Err(unavailable(format!(
                    "version {} of document {} disappeared during the catch-up (deleted meanwhile?); {}",
                    self.sent + 1,
                    self.doc,
                    self.again()
                ))),
            },
        }
    }

    async fn live(&mut self) -> Result<WatchDocumentResponse, Status> {
        let expires = self.expires;
        let expired = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            watched = self.watch.events.recv() => match watched {
                Some(watched) if watched.event.version == self.sent + 1 => {
                    self.sent = watched.event.version;
                    Ok(committed(fields::history_event(&watched.event, watched.delivered_at_ms)))
                }
                Some(watched) => Err(status(
                    ErrorCode::Internal,
                    format!("version {} came after {} (a server bug); {}", watched.event.version, self.sent, self.again()),
                )),
                None => Err(match self.watch.end() {
                    Some(WatchEnd::Deleted(deleted)) => return Ok(tombstone(deleted)),
                    Some(WatchEnd::Overloaded) => status(
                        ErrorCode::Overloaded,
                        format!(
                            "the watch read too slowly: more than {} versions waited for it; {}",
                            self.queue,
                            self.again()
                        ),
                    ),
                    None => unavailable(format!("the gateway stopped following document {}; {}", self.doc, self.again())),
                }),
            },
            _ = self.closing.cancelled() => Err(unavailable(format!("the gateway is shutting down; {}", self.again()))),
            _ = expired => Err(status(
                ErrorCode::Unauthorized,
                format!("the token expired; {} with a fresh token", self.again()),
            )),
        }
    }

    /// What the caller does next: the last version sent, to watch again from.
    fn again(&self) -> String {
        format!("the last version sent is {}: watch again with from_version {}", self.sent, self.sent)
    }
}

fn event(event: Event) -> WatchDocumentResponse {
    WatchDocumentResponse { event: Some(event) }
}

fn committed(event: proto::HistoryEvent) -> WatchDocumentResponse {
    self::event(Event::Committed(event))
}

fn tombstone(deleted: &DocumentDeleted) -> WatchDocumentResponse {
    event(Event::Deleted(proto::DocumentDeleted {
        doc: deleted.doc.to_string(),
        last_version: deleted.last_version,
        author: deleted.author.clone(),
    }))
}
