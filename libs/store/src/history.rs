//! What both implementations share of the history promises: the errors that the checks behind
//! [`EventStore::write_snapshot`](crate::EventStore::write_snapshot) and
//! [`EventStore::create_checkpoint`](crate::EventStore::create_checkpoint) report, worded once so
//! that both stores say the same.

use tandem_protocol::DocId;

use crate::{Checkpoint, StoreError};

/// A snapshot of a version the document does not have (any more).
pub(crate) fn snapshot_after_latest(doc: &DocId, version: u64, latest: u64) -> StoreError {
    StoreError::Conflict(format!(
        "a snapshot of version {version} of document {doc} is after its latest version {latest} \
         (the document was deleted since the snapshot was taken)"
    ))
}

/// The stored checkpoint if it names `version` (an idempotent retry); a conflict naming both
/// versions if not.
pub(crate) fn same_version(stored: Checkpoint, version: u64) -> Result<Checkpoint, StoreError> {
    if stored.version != version {
        return Err(StoreError::Conflict(format!(
            "checkpoint {:?} of document {} names version {}, not {version}: a checkpoint never changes",
            stored.name, stored.doc, stored.version
        )));
    }
    Ok(stored)
}

/// A checkpoint of a version the document does not have.
pub(crate) fn checkpoint_after_latest(wanted: &Checkpoint, latest: u64) -> StoreError {
    StoreError::Conflict(format!(
        "checkpoint {:?} cannot name version {} of document {}: its latest version is {latest}",
        wanted.name, wanted.version, wanted.doc
    ))
}
