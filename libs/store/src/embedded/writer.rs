//! The writer thread: the one thread that owns a store's writer connection.
//!
//! SQLite admits one writer at a time, so writes run one after another on a dedicated thread fed
//! by a channel, each answering its caller through a oneshot channel. Compared with a blocking
//! pool task per write behind a mutex, a write costs one wake-up of a thread that is already
//! there, and no thread of the pool waits on a lock.
//!
//! A job runs to its end even if its caller stops awaiting (a timeout, a cancelled task): a
//! commit may then be durable although its caller never learned it, which the sequencer handles
//! like any commit whose answer was lost (resubmissions are deduplicated).
//!
//! Between jobs the thread folds the recent tier of keys into the main one once it holds
//! [`Tuning::fold_after`](super::Tuning) events (see `tiers`): a step of
//! [`Tuning::fold_step`](super::Tuning) keys after each job, and steps one after another while
//! no job waits, so a commit waits for at most one step.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, TryRecvError};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{tiers, Tuning};
use crate::StoreError;

/// What a write job works on.
pub(super) struct WriterState {
    pub conn: Connection,
    pub tuning: Tuning,
    /// Events committed to the recent tier since it was last folded, as far as this writer knows
    /// (other stores on the same file count their own; any of them may fold).
    pub recent: u64,
    /// The ids the writer's commits looked up or handed out (see `ids`).
    pub ids: super::ids::IdCache,
    /// Asks the checkpointer thread for a checkpoint, if the store has one.
    pub checkpointer: Option<super::checkpointer::Nudge>,
    /// Writes since the last checkpoint was asked for.
    pub writes: u64,
}

type Job = Box<dyn FnOnce(&mut WriterState) + Send>;

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread. It ends when the last handle to the store is dropped, after the jobs
    /// already sent.
    pub(super) fn spawn(state: WriterState) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tandem-store-writer".into())
            .spawn(move || serve(state, queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the writer thread and returns its answer.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |state| {
            // The caller may be gone: the work is done all the same.
            let _ = answer.send(work(state));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's writer thread has stopped".into()))?;
        answered.await.map_err(|_| StoreError::Unavailable("the store's write failed with a panic".into()))?
    }
}

fn serve(mut state: WriterState, queue: mpsc::Receiver<Job>) {
    let mut fold: Option<tiers::FoldFrom> = None;
    let mut waiting: Option<Job> = None;
    loop {
        let job = match waiting.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        // A panic unwinds through the job's transaction, which rolls it back; the thread lives on
        // for the next job, and the job's caller hears of it through the dropped answer.
        if catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
            tracing::error!("a write of the event store panicked; its transaction was rolled back");
        }
        if let (Some(nudge), Some(after)) = (&state.checkpointer, state.tuning.checkpoint_after) {
            state.writes += 1;
            if state.writes >= after {
                nudge.checkpoint();
                state.writes = 0;
            }
        }
        if fold.is_none() && state.recent >= state.tuning.fold_after {
            fold = Some(tiers::FOLD_START);
            state.recent = 0;
        }
        while let Some(from) = fold {
            fold = fold_step(&mut state, from);
            match queue.try_recv() {
                Ok(job) => {
                    waiting = Some(job);
                    break;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// One step of a fold; where the next starts, or `None` when the fold is over. A failed step
/// changes nothing (it is one transaction): reads and commits stay correct with a larger recent
/// tier, so the fold ends there and the next one, after as many events again, retries.
fn fold_step(state: &mut WriterState, from: tiers::FoldFrom) -> Option<tiers::FoldFrom> {
    // Commits wait meanwhile: a step's time is what it adds to their latency.
    let started = std::time::Instant::now();
    match tiers::fold_step(&mut state.conn, from, state.tuning.fold_step) {
        Ok(next) => {
            tracing::debug!(from, elapsed = ?started.elapsed(), "recent keys folded");
            next
        }
        Err(err) => {
            tracing::warn!(%err, "folding the event store's recent keys failed; retried later");
            None
        }
    }
}
