//! The simulated callers of the `api` preset ([`crate::api`]): a writer submitting ApplyEdit on a
//! pace, and watchers following the document with WatchDocument, over the gateway's gRPC port.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_client::Operation;
use tandem_proto::convert::{operation_from_proto, operation_to_proto};
use tandem_proto::proto::documents_client::DocumentsClient;
use tandem_proto::proto::watch_document_response::Event;
use tandem_proto::proto::{ApplyEditRequest, GetDocumentRequest, WatchDocumentRequest};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::recorder::{self, Record};
use crate::Schedule;

/// The Documents client with the run's token.
pub type Api = DocumentsClient<InterceptedService<Channel, Bearer>>;
/// Longest wait for one unary answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC connection of its own to `url` (`http://HOST:PORT`).
pub async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Api> {
    let bearer = match token {
        Some(token) => Some(format!("Bearer {token}").parse().context("the token is not a header value")?),
        None => None,
    };
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("gRPC url {url:?}"))?
        .connect_timeout(ANSWER_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connect to {url}"))?;
    Ok(DocumentsClient::with_interceptor(channel, Bearer(bearer)).max_decoding_message_size(64 << 20))
}

/// The `ApiError` code of a status (its details, documents.proto), else the gRPC code.
pub fn error_code(status: &Status) -> String {
    use prost::Message;
    tandem_proto::proto::ApiError::decode(status.details())
        .ok()
        .map(|e| e.code)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("grpc_{:?}", status.code()).to_lowercase())
}

/// What a writer counted.
#[derive(Debug, Default)]
pub struct WriterOutcome {
    /// Edits sent in the measuring window, and of those the ones answered with an error.
    pub submitted: u64,
    pub failed: u64,
    /// Answers flagged as a duplicate: every request id is fresh, so there must be none.
    pub duplicates: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    /// The document's version after the writer's last answered edit.
    pub version: u64,
}

/// One document's writer: one-character edits (85 % inserts, 15 % deletes, at random positions)
/// every `period`, each waiting for the previous answer, until the measuring window closes.
pub struct Writer {
    pub api: Api,
    pub doc: String,
    /// Index of the document, for the recorder.
    pub index: u32,
    pub run_id: String,
    pub period: Duration,
    pub seed: u64,
    pub schedule: Schedule,
    pub records: mpsc::Sender<Record>,
    /// The author the recorder matches commits and deliveries by (one for the whole preset).
    pub author: tandem_client::ClientId,
}

impl Writer {
    pub async fn run(mut self) -> WriterOutcome {
        let mut out = WriterOutcome::default();
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let (mut version, mut len) = (0u64, 0usize);
        let first = self.schedule.start + self.period.mul_f64(rng.gen::<f64>());
        let mut ticks = tokio::time::interval_at(first.into(), self.period);
        // Past the round trip the writer runs closed-loop: the next edit leaves at once.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for n in 0u64.. {
            ticks.tick().await;
            let sent = Instant::now();
            if sent >= self.schedule.measure_end {
                break;
            }
            let op = if len > 0 && rng.gen_bool(0.15) {
                Operation::from_patch(len, rng.gen_range(0..len), 1, "")
            } else {
                let letter = char::from(b'a' + rng.gen_range(0..26u8)).to_string();
                Operation::from_patch(len, rng.gen_range(0..=len), 0, &letter)
            }
            .expect("the position is inside the text");
            let request = ApplyEditRequest {
                doc: self.doc.clone(),
                base_version: version,
                op: operation_to_proto(&op),
                request_id: format!("lg-{}-{}-{n}", self.run_id, self.index),
            };
            let measured = self.schedule.measures(sent);
            out.submitted += u64::from(measured);
            let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.api.apply_edit(request)).await;
            match answer {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    let acked_at = Instant::now();
                    out.duplicates += u64::from(response.duplicate);
                    version = response.version;
                    len = op.target_len();
                    let record = Record::Commit {
                        doc: self.index,
                        version,
                        author: self.author.clone(),
                        submits: vec![sent],
                        acked_at,
                    };
                    let _ = self.records.try_send(record);
                }
                failed => {
                    out.failed += u64::from(measured);
                    let (code, message) = match failed {
                        Ok(Err(status)) => (error_code(&status), status.message().to_owned()),
                        _ => ("timeout".to_owned(), format!("no answer within {ANSWER_TIMEOUT:?}")),
                    };
                    if out.first_errors.len() < 10 {
                        out.first_errors.push(format!("{} apply {code}: {message}", self.doc));
                    }
                    *out.errors.entry(code).or_default() += 1;
                    // Start again from what the document is now.
                    let request = GetDocumentRequest { doc: self.doc.clone(), version: None };
                    if let Ok(Ok(now)) =
                        tokio::time::timeout(ANSWER_TIMEOUT, self.api.get_document(request)).await
                    {
                        let now = now.into_inner();
                        (version, len) = (now.version, now.text.chars().count());
                    }
                }
            }
        }
        out.version = version;
        out
    }
}

/// What a watcher has seen so far.
#[derive(Debug, Default, Clone)]
pub struct WatcherState {
    pub version: u64,
    /// The text rebuilt from the events received.
    pub text: String,
    /// Versions that did not come right after the previous one, or ops that did not apply.
    pub out_of_order: u64,
    /// How the stream ended before the watcher was stopped, if it did.
    pub ended: Option<String>,
}

/// A watcher, after its catch-up: follows the stream until `stop`.
pub struct Watcher {
    pub stream: Streaming<tandem_proto::proto::WatchDocumentResponse>,
    pub index: u32,
    pub records: mpsc::Sender<Record>,
    pub author: tandem_client::ClientId,
    pub schedule: Schedule,
    pub state: Arc<Mutex<WatcherState>>,
    /// Commit → receipt, microseconds: from the event's `committed_at_ms` (wall clock).
    pub commit_to_watch: Arc<Mutex<Histogram<u64>>>,
}

/// Opens a watch of `doc` from version 0 and waits for the end of its catch-up.
pub async fn watch(
    api: &mut Api,
    doc: &str,
) -> anyhow::Result<Streaming<tandem_proto::proto::WatchDocumentResponse>> {
    let request = WatchDocumentRequest { doc: doc.to_owned(), from_version: 0 };
    let mut stream = tokio::time::timeout(ANSWER_TIMEOUT, api.watch_document(request))
        .await
        .context("no answer to WatchDocument")?
        .with_context(|| format!("watch {doc}"))?
        .into_inner();
    let message = tokio::time::timeout(ANSWER_TIMEOUT, stream.message())
        .await
        .context("no caught_up in time")?
        .with_context(|| format!("watch {doc}"))?;
    match message.and_then(|m| m.event) {
        Some(Event::CaughtUp(_)) => Ok(stream),
        Some(_) => anyhow::bail!("{doc} is not a new document: the run's documents start empty"),
        None => anyhow::bail!("the watch of {doc} ended before its catch-up"),
    }
}

impl Watcher {
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = self.stream.message() => message,
            };
            let at = Instant::now();
            let event = match message {
                Ok(Some(message)) => message.event,
                Ok(None) => return self.end("the stream ended".to_owned()),
                Err(status) => return self.end(format!("{}: {}", error_code(&status), status.message())),
            };
            let Some(Event::Committed(event)) = event else { continue };
            if self.schedule.measures(at) && event.committed_at_ms > 0 {
                let now_micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
                let committed_micros = u128::try_from(event.committed_at_ms).unwrap_or(0) * 1000;
                let micros = u64::try_from(now_micros.saturating_sub(committed_micros)).unwrap_or(u64::MAX);
                let mut h = self.commit_to_watch.lock().unwrap_or_else(|e| e.into_inner());
                h.saturating_record(micros.max(1));
            }
            let arrival =
                Record::Arrival { doc: self.index, version: event.version, author: self.author.clone(), at };
            let _ = self.records.try_send(arrival);
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let applied = operation_from_proto(event.op).ok().and_then(|op| op.apply(&state.text).ok());
            match applied {
                Some(text) if event.version == state.version + 1 => {
                    state.text = text;
                    state.version = event.version;
                }
                _ => state.out_of_order += 1,
            }
        }
    }

    fn end(&self, why: String) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ended = Some(why);
    }
}

/// A histogram for [`Watcher::commit_to_watch`].
pub fn commit_histogram() -> Arc<Mutex<Histogram<u64>>> {
    Arc::new(Mutex::new(recorder::histogram()))
}
