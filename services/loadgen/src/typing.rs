//! The typing workload: D documents × C clients, each typing R ops/s for the warm-up and then the
//! measuring time; 85 % one-character inserts at or near its previous position, 15 % one-character
//! deletes (a backspace). Three presets run it with their own defaults:
//!
//! - `typing`: 100 × 5 at 5 ops/s, a realistic spread of small documents;
//! - `hot-doc`: one document, 50 clients at 5 ops/s: contention, transformation and fan-out on one
//!   document;
//! - `max`: 100 × 2 typing far faster than a round trip, so that each client always has edits
//!   composed in its buffer when the ack of its op in flight comes back and sends its next op at
//!   once: the op rate is then set by the server's round trip, and the report's committed ops/s is
//!   the throughput.
//!
//! Each client is its own connection with its own [editor](crate::driver::Editor), which types on a
//! fixed schedule and never waits for the server (see [`Pace::Every`]).

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_client::{ClientError, DocHandle};
use tandem_ot::Operation;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::converge;
use crate::driver::{self, Editor, Pace, Script, Session, Sim};
use crate::recorder::Record;
use crate::report::{Params, Report};
use crate::{RunConfig, Schedule};

/// Share of keystrokes that are a backspace (when there is a character before the cursor).
const DELETE_SHARE: f64 = 0.15;
/// Share of keystrokes that first move the cursor by up to [`MAX_JUMP`] characters either way.
const JUMP_SHARE: f64 = 0.1;
const MAX_JUMP: i64 = 3;
/// What a typist types: letters, a space, and one character outside ASCII, since positions count
/// Unicode scalar values.
const ALPHABET: [&str; 28] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u",
    "v", "w", "x", "y", "z", " ", "é",
];

/// The workload's parameters; validated (see [`crate::cli::TypingArgs::validate`]).
#[derive(Debug, Clone)]
pub struct TypingConfig {
    /// `typing`, `hot-doc` or `max`: the name in the report.
    pub preset: &'static str,
    pub run: RunConfig,
    /// Documents (D).
    pub docs: usize,
    /// Clients per document (C).
    pub clients: usize,
    /// Ops per second per client (R).
    pub rate: f64,
}

impl TypingConfig {
    /// The run's parameters as the report shows them.
    pub fn params(&self) -> Params {
        Params {
            docs: self.docs,
            clients_per_doc: self.clients,
            rate_per_client: self.rate,
            duration_secs: self.run.duration.as_secs_f64(),
            warmup_secs: self.run.warmup.as_secs_f64(),
        }
    }
}

/// Random keystrokes near the previous one.
pub struct Keystrokes {
    rng: SmallRng,
    /// The cursor: where the last keystroke left it.
    pos: usize,
}

impl Keystrokes {
    pub fn new(seed: u64) -> Self {
        Self { rng: SmallRng::seed_from_u64(seed), pos: 0 }
    }

    /// Where in its period a typist's first keystroke falls, as a fraction (drawn from its script,
    /// so that a seed gives the same run whatever the server).
    pub fn phase(&mut self) -> f64 {
        self.rng.gen()
    }

    /// The next keystroke on a text of `len` characters; [`Keystrokes::typed`] moves the cursor once
    /// it was applied. Public for the ShareDB editor ([`crate::sharedb_editor`]), which types the
    /// same keystrokes into its own replica.
    pub fn next_key(&mut self, len: usize) -> Key {
        if self.rng.gen_bool(JUMP_SHARE) {
            let moved = self.pos as i64 + self.rng.gen_range(-MAX_JUMP..=MAX_JUMP);
            self.pos = usize::try_from(moved.max(0)).unwrap_or(0);
        }
        self.pos = self.pos.min(len);
        if self.pos > 0 && self.rng.gen_bool(DELETE_SHARE) {
            Key { pos: self.pos - 1, delete: 1, insert: "" }
        } else {
            Key { pos: self.pos, delete: 0, insert: ALPHABET[self.rng.gen_range(0..ALPHABET.len())] }
        }
    }

    /// The cursor after `key`: left of a deleted character, right of an inserted one.
    pub fn typed(&mut self, key: &Key) {
        self.pos = if key.delete > 0 { key.pos } else { key.pos + 1 };
    }
}

/// One keystroke: at `pos`, delete `delete` characters, then insert `insert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub pos: usize,
    pub delete: usize,
    pub insert: &'static str,
}

impl Script for Keystrokes {
    fn edit(&mut self, doc: &DocHandle) -> Option<Result<u64, ClientError>> {
        let key = self.next_key(doc.len_chars());
        let result = doc.splice(key.pos, key.delete, key.insert);
        if result.is_ok() {
            self.typed(&key);
        }
        Some(result)
    }

    /// The `n` keystrokes composed into one op, built on the text's length under the handle's lock,
    /// so they leave together as one op (see [`DocHandle::edit_from_len`]).
    fn edit_many(&mut self, doc: &DocHandle, n: usize) -> Vec<Result<u64, ClientError>> {
        let result = doc.edit_from_len(|len| {
            let mut len = len;
            let mut composed: Option<Operation> = None;
            for _ in 0..n {
                let key = self.next_key(len);
                let op = Operation::from_patch(len, key.pos, key.delete, key.insert)?;
                self.typed(&key);
                len = len - key.delete + key.insert.chars().count();
                composed = Some(match composed {
                    None => op,
                    Some(before) => before.compose(&op)?,
                });
            }
            Ok(composed.unwrap_or_else(|| Operation::identity(len)))
        });
        match result {
            Ok(seq) => (0..n).map(|_| Ok(seq)).collect(),
            // Refused as a whole: each keystroke is counted under the same kind of refusal.
            Err(e) => (0..n).map(|_| Err(same_error(&e))).collect(),
        }
    }
}

/// A copy of a refusal of an edit, for counting it once per keystroke (the client's error type is
/// not `Clone`; the variants an edit can meet are copied, any other counts as "other").
fn same_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::Ot(e) => ClientError::Ot(e.clone()),
        ClientError::Resyncing(doc) => ClientError::Resyncing(doc.clone()),
        ClientError::NotOpen(doc) => ClientError::NotOpen(doc.clone()),
        ClientError::Closed(reason) => ClientError::Closed(reason.clone()),
        other => ClientError::InvalidConfig(other.to_string()),
    }
}

/// Spawns one typing editor per simulated client, at `rate` keystrokes per second each; returns
/// the tasks and where each reports that it stopped typing.
pub fn spawn_typists(
    sims: Vec<Sim>,
    rate: f64,
    seed: u64,
    schedule: Schedule,
    records: &mpsc::Sender<Record>,
    stop: &CancellationToken,
) -> (Vec<tokio::task::JoinHandle<crate::report::Edits>>, mpsc::Receiver<(u32, Instant)>) {
    let period = std::time::Duration::from_secs_f64(1.0 / rate);
    let (done, done_rx) = mpsc::channel(sims.len().max(1));
    let editors = sims
        .into_iter()
        .enumerate()
        .map(|(i, sim)| {
            let mut script = Keystrokes::new(seed.wrapping_add(i as u64));
            let phase = script.phase();
            Editor {
                doc: sim.doc,
                author: sim.client.author_id(),
                handle: sim.handle,
                events: sim.events,
                records: records.clone(),
                schedule,
                pace: Pace::Every(period),
                phase,
                script,
                done: done.clone(),
            }
            .spawn(stop.clone())
        })
        .collect();
    (editors, done_rx)
}

/// Runs the workload against the gateways and returns its report. Fails only when the load cannot
/// be set up (a client cannot connect or open its document); what goes wrong under load is in the
/// report.
pub async fn run(config: &TypingConfig) -> anyhow::Result<Report> {
    let run = &config.run;
    let mut session = Session::start(run, config.preset, config.clients)?;
    let docs = session.doc_ids(config.docs)?;
    let sims = session.connect_all(&docs, config.clients, true).await?;
    let members = driver::members(&sims, docs.len());
    let n = sims.len();

    let schedule = session.begin(run.warmup, run.duration);
    let stop = CancellationToken::new();
    let (editors, mut done) = spawn_typists(sims, config.rate, run.seed, schedule, &session.records(), &stop);
    driver::typing_done(&mut done, n, schedule.measure_end).await;
    let convergence =
        converge::check(&run.urls, run.token.as_deref(), &docs, &members, run.settle_timeout).await;
    stop.cancel();
    let edits = driver::join_editors(editors).await?;

    session.finish(config.params(), run.duration, edits, convergence).await
}
