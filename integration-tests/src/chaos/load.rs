//! The typing load: clients that type into shared documents through the gateways and fail over
//! between them, and what they observe, written for the independent checker
//! (`observations.jsonl`): every ack with its version, the versions each client applied in order,
//! and each client's final text.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tandem_client::{Client, ClientEvent, ClientOptions, DocHandle, ErrorSource};
use tandem_protocol::DocId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::recovery::{Ack, AckLog};

/// `observations.jsonl`, one JSON object a line.
pub struct Observations {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl Observations {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(BufWriter::new(file)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&self, value: &serde_json::Value) {
        let mut file = self.file.lock().expect("observations");
        // A full disk is the only way this fails; the checker then reports what is missing.
        let _ = writeln!(file, "{value}");
    }

    /// An op `client` (the author id as the event log stores it) saw acknowledged.
    pub fn ack(&self, doc: &DocId, client: &str, seq: u64, version: u64) {
        self.line(
            &json!({"kind": "ack", "doc": doc.as_str(), "client": client, "seq": seq, "version": version}),
        );
    }

    /// The versions `observer` applied to `doc`, in order, in one session (from one snapshot on).
    pub fn versions(&self, doc: &DocId, observer: &str, versions: &[u64]) {
        self.line(
            &json!({"kind": "versions", "doc": doc.as_str(), "observer": observer, "versions": versions}),
        );
    }

    /// `observer`'s text of `doc` at `version` once everything converged.
    pub fn final_text(&self, doc: &DocId, observer: &str, version: u64, text: &str) {
        self.line(
            &json!({"kind": "final", "doc": doc.as_str(), "observer": observer, "version": version, "text": text}),
        );
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        self.file.lock().expect("observations").flush().context("flush the observations")
    }
}

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub clients: usize,
    pub docs: Vec<DocId>,
    pub seed: u64,
}

/// The running load.
pub struct Load {
    docs: Vec<DocId>,
    clients: Vec<Client>,
    authors: Vec<String>,
    handles: Vec<Vec<DocHandle>>,
    typing: Arc<AtomicBool>,
    typists: Vec<JoinHandle<u64>>,
    observers: Vec<JoinHandle<()>>,
    /// Tells the observers that their clients ended: nothing more will come.
    ended: Arc<AtomicBool>,
    observations: Arc<Observations>,
    acks: Arc<AckLog>,
}

/// What the load counted, once it stopped.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    /// Edits the typists made (several may travel composed in one op).
    pub edits: u64,
    pub acks: u64,
    pub failovers: u64,
    pub reconnects: u64,
    pub resubmissions: u64,
    pub resyncs: u64,
    /// Events the clients could not hand to the observers (the observations would be incomplete).
    pub events_dropped: u64,
    /// Protocol violations the clients found themselves.
    pub client_errors: u64,
    /// Error messages from the servers (`unavailable` while a broker is down and the like).
    pub server_errors: u64,
}

/// How many events a client may have waiting for its observer.
const EVENT_BUFFER: usize = 1 << 20;

impl Load {
    /// Connects the clients (client `i` to `urls[i % n]`, the others as its fallbacks, in turn),
    /// opens every document in each, and starts typing.
    pub async fn start(
        urls: &[String],
        config: &LoadConfig,
        observations: Arc<Observations>,
    ) -> anyhow::Result<Self> {
        let acks = Arc::new(AckLog::new(config.docs.len()));
        let index: Arc<HashMap<DocId, usize>> =
            Arc::new(config.docs.iter().cloned().enumerate().map(|(i, d)| (d, i)).collect());
        let typing = Arc::new(AtomicBool::new(true));
        let ended = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            ended: ended.clone(),
            docs: config.docs.clone(),
            clients: Vec::new(),
            authors: Vec::new(),
            handles: Vec::new(),
            typing: typing.clone(),
            typists: Vec::new(),
            observers: Vec::new(),
            observations: observations.clone(),
            acks: acks.clone(),
        };
        for i in 0..config.clients {
            let first = i % urls.len();
            let fallback_urls: Vec<String> =
                (1..urls.len()).map(|k| urls[(first + k) % urls.len()].clone()).collect();
            let (tx, rx) = mpsc::channel(EVENT_BUFFER);
            let options = ClientOptions { fallback_urls, events: Some(tx), ..ClientOptions::default() };
            let client = Client::connect(&urls[first], options).await.context("a client connects")?;
            let author = client.author_id().to_string();
            let observer = Observer {
                client_index: i,
                author: author.clone(),
                client: client.clone(),
                ended: ended.clone(),
                index: index.clone(),
                acks: acks.clone(),
                observations: observations.clone(),
            };
            load.observers.push(tokio::spawn(observer.run(rx)));
            let mut handles = Vec::new();
            for (d, doc) in config.docs.iter().enumerate() {
                let handle = client.open(doc).await.with_context(|| format!("open {doc}"))?;
                let seed = config.seed.wrapping_add((i * 1000 + d) as u64);
                load.typists.push(tokio::spawn(type_into(handle.clone(), typing.clone(), seed, d == 0)));
                handles.push(handle);
            }
            load.clients.push(client);
            load.authors.push(author);
            load.handles.push(handles);
        }
        Ok(load)
    }

    pub fn acks(&self) -> &Arc<AckLog> {
        &self.acks
    }

    /// The clients, to ask which gateway each is on ([`Client::stats`]).
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Stops typing; returns the number of edits made.
    pub async fn stop_typing(&mut self) -> u64 {
        self.typing.store(false, Ordering::Relaxed);
        let mut edits = 0;
        for typist in self.typists.drain(..) {
            edits += typist.await.unwrap_or(0);
        }
        edits
    }

    /// Waits (at most `limit` in all) until every client's edits are acknowledged.
    pub async fn wait_synced(&self, limit: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + limit;
        for (c, handles) in self.handles.iter().enumerate() {
            for handle in handles {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                handle.wait_synced(left).await.map_err(|e| {
                    format!("client {c} ({}) on {}: not synced: {e}", self.authors[c], handle.doc())
                })?;
            }
        }
        Ok(())
    }

    /// Waits (at most `limit` in all) until every client has every document at `versions[d]`, then
    /// writes each client's final text. Returns the texts, `[doc][client]`.
    pub async fn write_finals(&self, versions: &[u64], limit: Duration) -> Result<Vec<Vec<String>>, String> {
        let deadline = std::time::Instant::now() + limit;
        let mut texts = vec![Vec::new(); self.docs.len()];
        for (c, handles) in self.handles.iter().enumerate() {
            for (d, handle) in handles.iter().enumerate() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                handle.wait_version(versions[d], left).await.map_err(|e| {
                    format!("client {c} on {}: version {} not reached: {e}", handle.doc(), versions[d])
                })?;
            }
        }
        for (c, handles) in self.handles.iter().enumerate() {
            for (d, handle) in handles.iter().enumerate() {
                let text = handle.text();
                self.observations.final_text(handle.doc(), &self.authors[c], handle.version(), &text);
                texts[d].push(text);
            }
        }
        Ok(texts)
    }

    /// Ends the clients and their observers (which write the versions lines); the counters.
    pub async fn shutdown(self, edits: u64) -> LoadSummary {
        let mut summary = LoadSummary { edits, acks: self.acks.total() as u64, ..LoadSummary::default() };
        for client in &self.clients {
            let stats = client.stats();
            summary.failovers += stats.failovers;
            summary.reconnects += stats.reconnects;
            summary.resubmissions += stats.resubmissions;
            summary.resyncs += stats.resyncs;
            summary.events_dropped += stats.events_dropped;
            for error in client.errors() {
                match error.source {
                    ErrorSource::Client => summary.client_errors += 1,
                    _ => summary.server_errors += 1,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(15), client.shutdown()).await;
        }
        self.ended.store(true, Ordering::SeqCst);
        for observer in self.observers {
            let _ = tokio::time::timeout(Duration::from_secs(15), observer).await;
        }
        summary
    }
}

/// Types into one document until `typing` turns false: mostly letters at random places, some
/// deletions, more of them once the text is long; returns the number of edits.
async fn type_into(handle: DocHandle, typing: Arc<AtomicBool>, seed: u64, hot: bool) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut edits = 0;
    while typing.load(Ordering::Relaxed) {
        let len = handle.len_chars();
        let delete = len > 0 && rng.gen_bool(if len > 1200 { 0.7 } else { 0.15 });
        let result = if delete {
            let pos = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - pos).min(12));
            handle.splice(pos, n, "")
        } else {
            let letter = char::from(b"abcdefghijklmnopqrstuvwxyz "[rng.gen_range(0..27)]);
            handle.splice(rng.gen_range(0..=len), 0, &letter.to_string())
        };
        // A document being reloaded refuses edits for a moment; the typist carries on.
        if result.is_ok() {
            edits += 1;
        }
        let pause = if hot { rng.gen_range(10..50) } else { rng.gen_range(40..200) };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    edits
}

/// Takes one client's events until the client ends: writes its acks, keeps them for the recovery
/// measurement, and writes the versions it applied per document, a new line whenever a document
/// restarted from a snapshot (a resync: its versions jump and the client counted a resync).
struct Observer {
    client_index: usize,
    author: String,
    client: Client,
    ended: Arc<AtomicBool>,
    index: Arc<HashMap<DocId, usize>>,
    acks: Arc<AckLog>,
    observations: Arc<Observations>,
}

impl Observer {
    async fn run(self, mut events: mpsc::Receiver<ClientEvent>) {
        let Observer { client_index, author, client, ended, index, acks, observations } = self;
        let mut docs: Vec<Option<DocId>> = vec![None; index.len()];
        let mut sessions: Vec<Vec<u64>> = vec![Vec::new(); index.len()];
        let mut resyncs_seen = 0;
        loop {
            // Every client holds the sender (in its options), so the channel never closes while the
            // observer holds its client: it ends once told that the client ended and nothing is left.
            let event = match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) if ended.load(Ordering::SeqCst) => match events.try_recv() {
                    Ok(event) => event,
                    Err(_) => break,
                },
                Err(_) => continue,
            };
            let (doc, version) = match event {
                ClientEvent::Acked { doc, seq, version, at } => {
                    observations.ack(&doc, &author, seq, version);
                    if let Some(&d) = index.get(&doc) {
                        acks.push(d, Ack { at, client: client_index, seq, version });
                    }
                    (doc, version)
                }
                ClientEvent::RemoteOp { doc, version, .. } => (doc, version),
            };
            let Some(&d) = index.get(&doc) else { continue };
            if let Some(&last) = sessions[d].last() {
                if version != last + 1 {
                    let resyncs = client.stats().resyncs;
                    if resyncs > resyncs_seen {
                        resyncs_seen = resyncs;
                        observations.versions(&doc, &author, &sessions[d]);
                        sessions[d].clear();
                    }
                }
            }
            sessions[d].push(version);
            docs[d] = Some(doc);
        }
        for (doc, versions) in docs.iter().zip(&sessions) {
            if let Some(doc) = doc {
                observations.versions(doc, &author, versions);
            }
        }
    }
}
