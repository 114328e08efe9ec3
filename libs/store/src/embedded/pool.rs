//! The reader connections of a store.
//!
//! A fixed set, each behind its own mutex: a caller takes the first idle one, or waits for one in
//! turn when all are busy. Callers are blocking threads, so waiting on a mutex blocks nothing else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::Connection;

pub(super) struct ReaderPool {
    connections: Vec<Mutex<Connection>>,
    /// Where the next caller that finds every connection busy queues, so waiters spread evenly.
    next: AtomicUsize,
}

impl ReaderPool {
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        assert!(!connections.is_empty(), "a reader pool needs at least one connection");
        Self { connections: connections.into_iter().map(Mutex::new).collect(), next: AtomicUsize::new(0) }
    }

    /// Runs `work` on a reader connection, waiting for one if all are in use.
    ///
    /// A mutex poisoned by a panic is still used: the panicking reader's transaction was rolled
    /// back when it unwound, so the connection is in a clean state.
    pub(super) fn with<T>(&self, work: impl FnOnce(&mut Connection) -> T) -> T {
        let mut guard = self.idle().unwrap_or_else(|| {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
            self.connections[index].lock().unwrap_or_else(PoisonError::into_inner)
        });
        work(&mut guard)
    }

    fn idle(&self) -> Option<MutexGuard<'_, Connection>> {
        self.connections.iter().find_map(|conn| match conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        })
    }
}
