//! The checkpointer thread: copies the write-ahead log back into the database file off the commit
//! path.
//!
//! Left to itself, SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
//! commit, and every op waiting behind it, waits for a thousand page writes and an fsync of the
//! database file. Here a thread of its own runs a `PASSIVE` checkpoint, on its own connection,
//! each time the writer thread has done [`Tuning::checkpoint_after`](super::Tuning) writes, while
//! the writer goes on appending to the log (SQLite lets a checkpoint and a writer run at once).
//! Once a checkpoint has copied the whole log, the writer's next transaction starts the log again
//! from its beginning, so the file stays the size of what those writes add. Counting writes
//! rather than time keeps the work per op the same however fast the ops come (and under
//! callgrind, whose instruction counts compare builds).
//!
//! The writer keeps SQLite's own checkpoint as a backstop, at [`BACKSTOP_PAGES`], for a log that
//! this thread cannot keep up with (a long read holding old pages, a starved thread).

use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Instant;

use rusqlite::Connection;

use super::{schema, SqliteOptions};
use crate::StoreError;

/// The writer's own checkpoint threshold, in pages: far above what
/// [`Tuning::checkpoint_after`](super::Tuning) writes add, so it only fires when this thread falls
/// behind.
pub(super) const BACKSTOP_PAGES: i64 = 16_384;

/// How the writer thread asks for a checkpoint; the checkpointer thread ends when it is dropped.
pub(super) struct Nudge(SyncSender<()>);

impl Nudge {
    /// Asks for a checkpoint, unless one is asked for already: never waits.
    pub(super) fn checkpoint(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the store's checkpointer thread has stopped; SQLite checkpoints in commits")
            }
        }
    }
}

/// Starts the checkpointer thread on a connection of its own.
pub(super) fn spawn(path: &Path, options: SqliteOptions) -> Result<Nudge, StoreError> {
    let conn = schema::open_checkpointer(path, options)?;
    let (nudge, nudges) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("tandem-store-checkpoint".into())
        .spawn(move || {
            while nudges.recv().is_ok() {
                run(&conn);
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the store's checkpointer thread: {e}")))?;
    Ok(Nudge(nudge))
}

fn run(conn: &Connection) {
    let started = Instant::now();
    match checkpoint(conn) {
        Ok((log, copied)) => {
            tracing::trace!(log, copied, elapsed = ?started.elapsed(), "write-ahead log checkpointed");
        }
        // Another connection checkpointing, a damaged file: the writer's backstop and its own
        // errors cover what this thread cannot do; it tries again at the next nudge.
        Err(err) => tracing::debug!(%err, "checkpoint of the write-ahead log failed; retried"),
    }
}

/// One `PASSIVE` checkpoint: it copies what no reader still needs and never waits for a lock.
/// Returns the log's frames and how many of them are now in the database file.
fn checkpoint(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))?)
}
