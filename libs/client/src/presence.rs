//! Other participants' selections, kept right while everyone types (docs/PROTOCOL.md, "Presence").
//!
//! Pure bookkeeping, no I/O: the caller feeds it every version it applies (others' ops as received,
//! and its own op as committed when its `ack` comes), the `presence` and `presence_left` frames it
//! receives, and asks for the selections to draw given its own edits not yet acknowledged.
//!
//! The rule, the same as the JavaScript client's `RemoteSelections` (libs/client-js/presence.js):
//!
//! - each selection is kept in the text of the last version applied (the client's server version),
//!   moved through every version after the one its frame named with [`Operation::transform_index`]
//!   (ot.js: an insert at the position pushes it right, a delete over it pulls it to the start);
//! - a frame naming a version not applied yet waits until it is (the selection shown meanwhile is
//!   the newest one whose version has been applied); a frame naming a version older than the kept
//!   history ([`HISTORY`] versions) has no selection shown until the next frame;
//! - what is drawn is that selection moved through this client's own pending edits (the op in
//!   flight, then the buffer) with the same rule, so it sits in the text the user sees;
//! - this client's own selection is announced in the text of its server version: its caret in the
//!   local text moved back through its pending edits ([`RemoteSelections::to_server`]), a caret
//!   inside text it has not had acknowledged going to where that text starts.
//!
//! So a remote caret shown here is always the one the canonical history gives: its announced
//! position moved through the versions after it, then through this client's pending edits. The
//! randomized simulation in `presence_sim.rs` checks exactly that.

use std::collections::{BTreeMap, VecDeque};

use tandem_ot::{Component, Operation};

/// Versions of history kept to move selections named in older versions.
pub const HISTORY: usize = 1000;

/// A selection in the text of one version (anchor where it started, head where the caret is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectionAt {
    pub version: u64,
    pub anchor: usize,
    pub head: usize,
}

/// Another participant as last announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Its session id (the `client` of its frames, as `op` frames name it).
    pub client: String,
    pub user: String,
    pub name: Option<String>,
    pub colour: Option<String>,
}

/// A participant and where to draw its selection in the local text (`None`: no selection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownSelection {
    pub participant: Participant,
    /// `(anchor, head)` in the local text.
    pub selection: Option<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct Entry {
    participant: Participant,
    /// In the text of `RemoteSelections::version`.
    selection: Option<(usize, usize)>,
    /// Newer selections in versions not applied yet, oldest first (at most one per version).
    waiting: VecDeque<SelectionAt>,
}

/// The other participants of one document and their selections.
#[derive(Debug, Clone)]
pub struct RemoteSelections {
    /// The last version applied.
    version: u64,
    /// The ops of the versions up to `version`, newest last.
    history: VecDeque<Operation>,
    others: BTreeMap<String, Entry>,
}

impl RemoteSelections {
    /// Nobody yet, at `version` (the version of the snapshot or of the stored state).
    pub fn new(version: u64) -> Self {
        Self { version, history: VecDeque::new(), others: BTreeMap::new() }
    }

    /// The last version applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A snapshot replaced the text (reload, catch-up past the limit): the versions in between are
    /// unknown, so selections cannot be moved into it and are dropped until announced again;
    /// the participants stay.
    pub fn reset(&mut self, version: u64) {
        self.version = version;
        self.history.clear();
        for entry in self.others.values_mut() {
            entry.selection = None;
            entry.waiting.retain(|w| w.version >= version);
        }
        self.release();
    }

    /// The next version: another client's op as received, or this client's own op as committed
    /// (the op in flight when its `ack` for `version` arrives). Versions come in order.
    pub fn apply(&mut self, version: u64, op: &Operation) {
        debug_assert_eq!(version, self.version + 1, "versions are applied in order");
        for entry in self.others.values_mut() {
            if let Some((anchor, head)) = entry.selection {
                entry.selection = Some((op.transform_index(anchor), op.transform_index(head)));
            }
        }
        self.version = version;
        self.history.push_back(op.clone());
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.release();
    }

    /// A `presence` frame: `participant` is here, with `selection` (or none).
    pub fn update(&mut self, participant: Participant, selection: Option<SelectionAt>) {
        let key = participant.client.clone();
        let entry = self.others.entry(key).or_insert(Entry {
            participant: participant.clone(),
            selection: None,
            waiting: VecDeque::new(),
        });
        entry.participant = participant;
        match selection {
            None => {
                entry.selection = None;
                entry.waiting.clear();
            }
            Some(s) if s.version > self.version => {
                // Frames of one participant come in version order: a later one of the same version
                // replaces the earlier.
                if entry.waiting.back().is_some_and(|w| w.version >= s.version) {
                    entry.waiting.pop_back();
                }
                entry.waiting.push_back(s);
                if entry.waiting.len() > HISTORY {
                    entry.waiting.pop_front();
                }
            }
            Some(s) => {
                entry.waiting.clear();
                entry.selection = moved(&self.history, self.version, s);
            }
        }
    }

    /// A `presence_left` frame.
    pub fn remove(&mut self, client: &str) {
        self.others.remove(client);
    }

    /// Everyone else and where to draw them, in the local text: the server version's text changed
    /// by `pending` (the op in flight, then the buffer).
    pub fn shown(&self, pending: &[&Operation]) -> Vec<ShownSelection> {
        self.others
            .values()
            .map(|entry| ShownSelection {
                participant: entry.participant.clone(),
                selection: entry.selection.map(|(anchor, head)| {
                    pending
                        .iter()
                        .fold((anchor, head), |(a, h), op| (op.transform_index(a), op.transform_index(h)))
                }),
            })
            .collect()
    }

    /// This client's own caret, `index` in the local text, in the text of the server version: moved
    /// back through `pending` (newest first). A caret inside, or at either end of, text that
    /// `pending` inserts goes to where that text starts.
    pub fn to_server(index: usize, pending: &[&Operation]) -> usize {
        pending.iter().rev().fold(index, |index, op| back(op, index))
    }

    /// Selections waiting for a version that has now been applied.
    fn release(&mut self) {
        for entry in self.others.values_mut() {
            let mut newest = None;
            while entry.waiting.front().is_some_and(|w| w.version <= self.version) {
                newest = entry.waiting.pop_front();
            }
            if let Some(w) = newest {
                entry.selection = moved(&self.history, self.version, w);
            }
        }
    }
}

/// `s` moved from its version to `version` through the last ops of `history`; `None` when the
/// history does not reach back that far.
fn moved(history: &VecDeque<Operation>, version: u64, s: SelectionAt) -> Option<(usize, usize)> {
    let behind = usize::try_from(version - s.version).ok()?;
    if behind > history.len() {
        return None;
    }
    let ops = history.iter().skip(history.len() - behind);
    Some(ops.fold((s.anchor, s.head), |(a, h), op| (op.transform_index(a), op.transform_index(h))))
}

/// Where `index` in the text `op` produces was in the text it applied to.
fn back(op: &Operation, index: usize) -> usize {
    let (mut base, mut target) = (0, 0);
    for component in op.components() {
        match component {
            Component::Retain(n) => {
                if index < target + n {
                    return base + (index - target);
                }
                base += n;
                target += n;
            }
            Component::Insert(s) => {
                let n = s.chars().count();
                if index <= target + n {
                    return base;
                }
                target += n;
            }
            Component::Delete(n) => base += n,
        }
    }
    base
}

#[cfg(test)]
#[path = "presence_sim.rs"]
mod sim;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("a valid op")
    }

    fn ann() -> Participant {
        Participant { client: "ann".into(), user: "ann".into(), name: Some("Ann".into()), colour: None }
    }

    #[test]
    fn a_selection_moves_with_later_versions_waits_for_future_ones_and_shows_through_pending_edits() {
        let mut others = RemoteSelections::new(1); // "hello"
        others.update(ann(), Some(SelectionAt { version: 1, anchor: 1, head: 4 }));
        others.apply(2, &op(json!(["ab", 5]))); // "abhello"
        assert_eq!(others.shown(&[])[0].selection, Some((3, 6)));
        // A frame ahead of this client waits; the previous selection is shown meanwhile.
        others.update(ann(), Some(SelectionAt { version: 3, anchor: 0, head: 0 }));
        assert_eq!(others.shown(&[])[0].selection, Some((3, 6)));
        others.apply(3, &op(json!([-2, 5]))); // "hello"
        assert_eq!(others.shown(&[])[0].selection, Some((0, 0)));
        // A frame in an older version is moved through what came after it.
        others.update(ann(), Some(SelectionAt { version: 2, anchor: 7, head: 7 }));
        assert_eq!(others.shown(&[])[0].selection, Some((5, 5)));
        // Own typing at the remote caret pushes it right, as the commit of that typing will.
        let pending = op(json!([5, "!"]));
        assert_eq!(others.shown(&[&pending])[0].selection, Some((6, 6)));
        others.remove("ann");
        assert!(others.shown(&[]).is_empty());
    }

    #[test]
    fn own_carets_go_back_through_pending_edits() {
        let typed = op(json!([2, "xyz", -1, 3])); // "ab?cde" → "abxyzcde"
        assert_eq!(RemoteSelections::to_server(1, &[&typed]), 1);
        assert_eq!(RemoteSelections::to_server(2, &[&typed]), 2);
        assert_eq!(RemoteSelections::to_server(5, &[&typed]), 2, "the end of own text goes to its start");
        assert_eq!(RemoteSelections::to_server(6, &[&typed]), 4);
        assert_eq!(RemoteSelections::to_server(8, &[&typed]), 6);
        let more = op(json!([8, "!"]));
        assert_eq!(RemoteSelections::to_server(9, &[&typed, &more]), 6);
    }

    #[test]
    fn a_reset_drops_selections_it_cannot_move() {
        let mut others = RemoteSelections::new(4);
        others.update(ann(), Some(SelectionAt { version: 4, anchor: 1, head: 1 }));
        others.reset(9);
        assert_eq!(others.shown(&[])[0].selection, None);
        others.update(ann(), Some(SelectionAt { version: 5, anchor: 1, head: 1 }));
        assert_eq!(others.shown(&[])[0].selection, None, "version 5 is before the snapshot");
        others.update(ann(), Some(SelectionAt { version: 9, anchor: 2, head: 3 }));
        assert_eq!(others.shown(&[])[0].selection, Some((2, 3)));
    }
}
