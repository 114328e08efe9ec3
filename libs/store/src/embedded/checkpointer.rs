//! The checkpointer thread: copies the write-ahead log back into the database file off the commit
//! path.
//!
//! Left to itself, SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
//! commit, and every op waiting behind it, waits for a thousand page writes and an fsync of the
//! database file. Here a thread of its own runs a `PASSIVE` checkpoint every
//! [`Tuning::checkpoint_every`](super::Tuning), on its own connection, while the writer goes on
//! appending to the log (SQLite lets a checkpoint and a writer run at once). Once a checkpoint has
//! copied the whole log, the writer's next transaction starts the log again from its beginning, so
//! the file stays the size of what a period writes.
//!
//! The writer keeps SQLite's own checkpoint as a backstop, at [`BACKSTOP_PAGES`], for a log that
//! this thread cannot keep up with (a long read holding old pages, a starved thread).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{schema, SqliteOptions};
use crate::StoreError;

/// The writer's own checkpoint threshold, in pages: far above what a period of
/// [`Tuning::checkpoint_every`](super::Tuning) writes, so it only fires when this thread falls behind.
pub(super) const BACKSTOP_PAGES: i64 = 16_384;

/// The handle of a checkpointer thread: dropping it stops the thread after its current checkpoint.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(super) fn spawn(path: &Path, options: SqliteOptions, every: Duration) -> Result<Self, StoreError> {
        let conn = schema::open_checkpointer(path, options)?;
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("tandem-store-checkpoint".into())
            .spawn(move || serve(&conn, &stopped, every))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store's checkpointer thread: {e}"))
            })?;
        Ok(Self { _stop: stop })
    }
}

fn serve(conn: &Connection, stopped: &mpsc::Receiver<()>, every: Duration) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let started = Instant::now();
        match checkpoint(conn) {
            Ok((log, copied)) => {
                tracing::trace!(log, copied, elapsed = ?started.elapsed(), "write-ahead log checkpointed");
            }
            // Another connection checkpointing, a damaged file: the writer's backstop and its own
            // errors cover what this thread cannot do; it tries again next period.
            Err(err) => tracing::debug!(%err, "checkpoint of the write-ahead log failed; retried"),
        }
    }
}

/// One `PASSIVE` checkpoint: it copies what no reader still needs and never waits for a lock.
/// Returns the log's frames and how many of them are now in the database file.
fn checkpoint(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))?)
}
