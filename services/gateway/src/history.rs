//! Reading a document's past: its text at any version, one op between two versions, and where a
//! position at one version is at a later one. The Documents API (gRPC) and the demo's history
//! routes (`history_http`) both answer from these functions, so there is one implementation.
//!
//! Cost, bounded by the store's snapshot retention (libs/store: the newest two snapshots plus the
//! first of every window of 10,000 versions), so that any version is at most ~11,000 events after a
//! kept snapshot:
//! - [`text_at`] starts from the nearest snapshot at or before the version and replays the events
//!   after it onto a rope: at most ~11,000 events, read [`PAGE`] at a time, each applied in time
//!   proportional to its components (times a logarithm of the text's size).
//! - [`diff`] reads every event between the two versions, a page at a time, and composes them
//!   pairwise in a balanced tree (see `Composer`): time O(total op size × log(events)), memory a
//!   logarithmic number of partial compositions, each no larger than the composition of its range.
//!   Going backwards (`from > to`) also rebuilds the text of `to` (as [`text_at`]) to invert it.
//! - [`transform_position`] reads the events between the two versions a page at a time and moves
//!   the position through each: time O(events), memory one page. It never rebuilds a text.
//!
//! The range of [`diff`] and [`transform_position`] is the caller's to bound (the API's limits).

use std::fmt;

use ropey::Rope;
use tandem_ot::{Component, Operation};
use tandem_protocol::records::CommittedEvent;
use tandem_protocol::DocId;
use tandem_store::{EventStore, StoreError};

/// Events read from the store per call.
pub const PAGE: usize = 1_000;

/// Why a history read failed. [`HistoryError::code`] names its protocol error code.
#[derive(Debug)]
pub enum HistoryError {
    /// A version after the document's latest.
    VersionNotFound { doc: DocId, version: u64, latest: u64 },
    /// A position past the end of the text it is placed in.
    PositionOutOfRange { position: u64, version: u64, len: u64 },
    /// A position can only be moved forward in time.
    BackwardRange { from: u64, to: u64 },
    /// A version the store reported is gone while it was read: the document was deleted meanwhile.
    /// Asking again gets a consistent answer.
    EventMissing { doc: DocId, version: u64 },
    /// The store failed, or holds events that do not apply to each other (corrupt).
    Store(StoreError),
}

impl HistoryError {
    /// The API's error code (documents.proto): `not_found`, `bad_request`, `unavailable` or
    /// `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            HistoryError::VersionNotFound { .. } => "not_found",
            HistoryError::PositionOutOfRange { .. } | HistoryError::BackwardRange { .. } => "bad_request",
            HistoryError::EventMissing { .. } | HistoryError::Store(StoreError::Unavailable(_)) => {
                "unavailable"
            }
            HistoryError::Store(_) => "internal",
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::VersionNotFound { doc, version, latest } => {
                write!(f, "document {doc} has no version {version}: its latest version is {latest}")
            }
            HistoryError::PositionOutOfRange { position, version, len } => write!(
                f,
                "position {position} is past the end of version {version}, which has {len} characters"
            ),
            HistoryError::BackwardRange { from, to } => write!(
                f,
                "to_version {to} is before from_version {from}: a position moves forward in time only"
            ),
            HistoryError::EventMissing { doc, version } => write!(
                f,
                "version {version} of document {doc} disappeared while it was read (deleted meanwhile?); retry"
            ),
            HistoryError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HistoryError {}

impl From<StoreError> for HistoryError {
    fn from(e: StoreError) -> Self {
        HistoryError::Store(e)
    }
}

/// The text of `doc` at `version`, and the document's latest version when it was read.
///
/// Rebuilt from the nearest snapshot at or before `version` (from the empty text without one) and
/// the events after it. A version after the latest is [`HistoryError::VersionNotFound`].
pub async fn text_at(
    store: &dyn EventStore,
    doc: &DocId,
    version: u64,
) -> Result<(String, u64), HistoryError> {
    let latest = store.latest_version(doc).await?;
    check_version(doc, version, latest)?;
    let rope = rope_at(store, doc, version).await?;
    Ok((rope.to_string(), latest))
}

/// One op that turns the text of `from` into the text of `to`, in normal form: the events
/// `from + 1 ..= to` composed, or for `from > to` the inverse of the events `to + 1 ..= from`
/// composed. The identity of the text's length when `from == to`.
pub async fn diff(
    store: &dyn EventStore,
    doc: &DocId,
    from: u64,
    to: u64,
) -> Result<Operation, HistoryError> {
    let latest = store.latest_version(doc).await?;
    check_version(doc, from, latest)?;
    check_version(doc, to, latest)?;
    if from <= to {
        return compose_range(store, doc, from, to).await;
    }
    let forward = compose_range(store, doc, to, from).await?;
    let base = rope_at(store, doc, to).await?;
    forward.invert_rope(&base).map_err(|e| {
        corrupt(format!("the events {}..={from} of {doc} do not apply to version {to}: {e}", to + 1))
    })
}

/// Where `position` (in Unicode scalar values) in the text of version `from` is in the text of
/// version `to`: moved through every event in between. An insertion exactly at the position moves
/// it after the inserted text when `stick_after`, and leaves it before otherwise; a deletion that
/// covers it pulls it to the deletion's start.
pub async fn transform_position(
    store: &dyn EventStore,
    doc: &DocId,
    position: u64,
    from: u64,
    to: u64,
    stick_after: bool,
) -> Result<u64, HistoryError> {
    if to < from {
        return Err(HistoryError::BackwardRange { from, to });
    }
    let latest = store.latest_version(doc).await?;
    check_version(doc, from, latest)?;
    check_version(doc, to, latest)?;
    let len = length_at(store, doc, from).await?;
    if position > len as u64 {
        return Err(HistoryError::PositionOutOfRange { position, version: from, len: len as u64 });
    }
    let mut index = position as usize;
    for_each_event(store, doc, from, to, |event| {
        index = move_position(&event.op, index, stick_after);
        Ok(())
    })
    .await?;
    Ok(index as u64)
}

/// Where an index in an op's base text is in its result. With `stick_after` this is
/// [`Operation::transform_index`] (an insertion at the index pushes it right); without, an
/// insertion exactly at the index stays after it.
pub fn move_position(op: &Operation, index: usize, stick_after: bool) -> usize {
    if stick_after {
        return op.transform_index(index);
    }
    // transform_index's walk, stopping at an insertion at the index instead of counting it. In
    // normal form at most one insertion sits at any one place, so nothing after it can move the
    // index.
    let mut remaining = index.min(op.base_len());
    let mut new_index = remaining;
    for component in op.components() {
        match component {
            Component::Retain(n) => {
                if *n > remaining {
                    break;
                }
                remaining -= n;
            }
            Component::Insert(s) => {
                if remaining == 0 {
                    break;
                }
                new_index += s.chars().count();
            }
            Component::Delete(n) => {
                new_index -= remaining.min(*n);
                if *n > remaining {
                    break;
                }
                remaining -= n;
            }
        }
    }
    new_index
}

fn check_version(doc: &DocId, version: u64, latest: u64) -> Result<(), HistoryError> {
    if version > latest {
        return Err(HistoryError::VersionNotFound { doc: doc.clone(), version, latest });
    }
    Ok(())
}

fn corrupt(message: String) -> HistoryError {
    HistoryError::Store(StoreError::Corrupt(message))
}

/// The text of a version known to exist, as a rope: the nearest snapshot plus the events after it.
async fn rope_at(store: &dyn EventStore, doc: &DocId, version: u64) -> Result<Rope, HistoryError> {
    // A snapshot newer than asked for would be a store bug; replaying from 0 is still right.
    let snapshot = store.snapshot_at_or_before(doc, version).await?.filter(|s| s.version <= version);
    let (mut rope, start) = match snapshot {
        Some(s) => (Rope::from_str(&s.text), s.version),
        None => (Rope::new(), 0),
    };
    for_each_event(store, doc, start, version, |event| {
        event.op.apply_to_rope(&mut rope).map_err(|e| {
            corrupt(format!(
                "version {} of {doc} does not apply to version {}: {e}",
                event.version,
                event.version - 1
            ))
        })
    })
    .await?;
    Ok(rope)
}

/// The length of the text of a version known to exist, from the ops' lengths alone: the base
/// length of the event after it, else (the latest version) the target length of its own event.
async fn length_at(store: &dyn EventStore, doc: &DocId, version: u64) -> Result<usize, HistoryError> {
    let after = store.read_events(doc, version, version + 1, 1).await?;
    if let Some(next) = after.first() {
        return Ok(next.op.base_len());
    }
    if version == 0 {
        return Ok(0);
    }
    let own = store.read_events(doc, version - 1, version, 1).await?;
    let own = own.first().ok_or_else(|| HistoryError::EventMissing { doc: doc.clone(), version })?;
    Ok(own.op.target_len())
}

/// Calls `visit` with every event `after + 1 ..= up_to` in order, reading [`PAGE`] at a time.
/// Every version in the range must be there (the caller checked `up_to` against the latest).
async fn for_each_event(
    store: &dyn EventStore,
    doc: &DocId,
    after: u64,
    up_to: u64,
    mut visit: impl FnMut(&CommittedEvent) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    let mut next = after + 1;
    while next <= up_to {
        let page = store.read_events(doc, next - 1, up_to, PAGE).await?;
        if page.is_empty() {
            return Err(HistoryError::EventMissing { doc: doc.clone(), version: next });
        }
        for event in &page {
            if event.version != next {
                return Err(HistoryError::EventMissing { doc: doc.clone(), version: next });
            }
            visit(event)?;
            next += 1;
        }
    }
    Ok(())
}

/// The events `from + 1 ..= to` composed into one op (the identity of the text of `from` when the
/// range is empty).
async fn compose_range(
    store: &dyn EventStore,
    doc: &DocId,
    from: u64,
    to: u64,
) -> Result<Operation, HistoryError> {
    if from == to {
        return Ok(Operation::identity(length_at(store, doc, from).await?));
    }
    let mut composer = Composer::default();
    for_each_event(store, doc, from, to, |event| {
        composer.push(event.op.clone()).map_err(|e| {
            corrupt(format!(
                "version {} of {doc} does not follow version {}: {e}",
                event.version,
                event.version - 1
            ))
        })
    })
    .await?;
    composer.finish().map_err(|e| {
        corrupt(format!("the events {}..={to} of {doc} do not follow each other: {e}", from + 1))
    })
}

/// Composes a sequence of ops like a binary counter: two partial compositions of equal size (the
/// same `level`, 2^level ops) are merged as soon as both exist. Composing one long op with each
/// small one in turn would cost O(events × text size); this costs O(total size × log(events)) and
/// keeps at most one partial composition per level.
#[derive(Default)]
pub(crate) struct Composer {
    /// Oldest first; levels strictly decrease towards the top.
    stack: Vec<(u32, Operation)>,
}

impl Composer {
    pub(crate) fn push(&mut self, mut op: Operation) -> Result<(), tandem_ot::OtError> {
        let mut level = 0;
        while self.stack.last().is_some_and(|(l, _)| *l == level) {
            let (_, earlier) = self.stack.pop().expect("checked above");
            op = earlier.compose(&op)?;
            level += 1;
        }
        self.stack.push((level, op));
        Ok(())
    }

    /// The composition of everything pushed; the empty op when nothing was.
    pub(crate) fn finish(mut self) -> Result<Operation, tandem_ot::OtError> {
        let Some((_, mut op)) = self.stack.pop() else { return Ok(Operation::new()) };
        while let Some((_, earlier)) = self.stack.pop() {
            op = earlier.compose(&op)?;
        }
        Ok(op)
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
