//! The partition's snapshot writes: beside the loop, off the hot path, a few at a time and never
//! more than one per document.

use std::collections::HashMap;
use std::sync::Arc;

use tandem_protocol::DocId;
use tandem_store::{EventStore, Snapshot};
use tokio::task::JoinHandle;
use tracing::warn;

/// The snapshot writes in flight. A snapshot is only a read cache: one due while the writes are
/// busy is skipped (and taken after a later commit of its document), not queued, and a failed
/// write costs nothing but loading time.
pub(super) struct SnapshotWrites {
    writing: HashMap<DocId, JoinHandle<()>>,
    max: usize,
}

impl SnapshotWrites {
    /// At most `max` writes at once, over the partition.
    pub(super) fn new(max: usize) -> Self {
        Self { writing: HashMap::new(), max }
    }

    /// Whether a write of `doc` may start now: none of it is in flight, and fewer than the maximum
    /// over all documents.
    pub(super) fn has_room_for(&mut self, doc: &DocId) -> bool {
        // A write that ended (or panicked) no longer counts.
        self.writing.retain(|_, task| !task.is_finished());
        !self.writing.contains_key(doc) && self.writing.len() < self.max
    }

    /// Starts writing `snapshot` (after [`SnapshotWrites::has_room_for`] said yes).
    pub(super) fn start(&mut self, store: Arc<dyn EventStore>, snapshot: Snapshot) {
        let doc = snapshot.doc.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = store.write_snapshot(&snapshot).await {
                warn!(doc = %snapshot.doc, version = snapshot.version, error = %e, "snapshot failed");
            }
        });
        self.writing.insert(doc, task);
    }

    /// Waits for the write of `doc` in flight, if any. A document is deleted only once none is: a
    /// snapshot of its past landing after the purge would bring the deleted text back at the next
    /// load.
    pub(super) async fn finish(&mut self, doc: &DocId) {
        if let Some(task) = self.writing.remove(doc) {
            // A write that failed or panicked left nothing behind either.
            let _ = task.await;
        }
    }
}
