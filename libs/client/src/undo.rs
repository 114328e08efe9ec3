//! Undo and redo of this client's own edits, with the semantics of ot.js `UndoManager`.
//!
//! Pure: no I/O and no clock; the time of an edit is an argument. [`DocumentClient`] keeps one
//! [`UndoHistory`] per document and feeds it every local edit, every remote op and every undo and
//! redo.
//!
//! - Each local edit pushes its inverse onto the undo stack and clears the redo stack. Undo applies
//!   the top inverse as a new local edit (sent like any other op) and pushes that edit's inverse onto
//!   the redo stack; redo does the same the other way round and keeps the rest of the redo stack.
//! - Only this client's edits are on the stacks. When another client's op arrives, every entry of
//!   both stacks is transformed against it, top first (`transform(entry, remote)`, the op moving down
//!   the stack as it is transformed past each entry), so each entry still applies to the text it will
//!   meet. An entry that the transform leaves without effect is dropped.
//! - Grouping: a local edit joins the step on top of the undo stack instead of starting a new one
//!   when (1) the step is open: no undo, redo or [`UndoHistory::break_group`] since it began; (2) the
//!   edit comes at most `group_window` after the previous local edit; and (3) it continues the step
//!   (ot.js `shouldBeComposedWith`): both are plain inserts and the new one starts where the step's
//!   inserted text ends (typing on), or both are plain deletes and the new one ends where the step's
//!   deleted range starts (Backspace) or starts at the same place (Delete). Positions are those of
//!   the current text, after remote ops moved them. A replacement, an edit elsewhere or a paste over
//!   a selection starts a new step. The step's inverse is then `inverse(new).compose(step)`.
//! - Depth: at most `depth` steps are kept; the oldest goes first. Depth 0 turns undo off.
//!
//! What undo does to other clients' text follows from the transform (the rule the property tests
//! of `undo_sim.rs` check): undoing an insert deletes only the characters this client inserted that
//! are still there, so text another client typed inside them stays and text another client already
//! deleted is not deleted twice. Undoing a delete inserts the deleted characters again, in one piece,
//! at the place they were, ahead of text another client inserted at that same place (even text typed
//! between them concurrently). A character that another client's op removed from this client's text
//! never comes back by undo; a character that this client's own edit removed does, even if another
//! client deleted it concurrently (before it had received this client's delete): that delete reached
//! this client as a no-op, so for this client the character was its own deletion.
//!
//! [`DocumentClient`]: crate::DocumentClient

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tandem_ot::{Component, Operation, OtError};

/// Limits of a document's undo history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoOptions {
    /// Undo steps kept per document; the oldest is dropped when a new one would exceed it. Every
    /// step is transformed against each remote op, so the depth bounds that work as well as the
    /// memory. 0 keeps no history (a load generator has no use for one).
    pub depth: usize,
    /// Longest pause between two local edits that still join one undo step (a typing run).
    pub group_window: Duration,
}

impl UndoOptions {
    /// The default depth: 500 steps.
    pub const DEFAULT_DEPTH: usize = 500;
    /// The default grouping window: 1 second.
    pub const DEFAULT_GROUP_WINDOW: Duration = Duration::from_secs(1);
}

impl Default for UndoOptions {
    fn default() -> Self {
        Self { depth: Self::DEFAULT_DEPTH, group_window: Self::DEFAULT_GROUP_WINDOW }
    }
}

/// The undo and redo stacks of one document.
#[derive(Debug, Clone, Default)]
pub(crate) struct UndoHistory {
    options: UndoOptions,
    /// Inverses of own edits (or of redos), oldest first; the last applies to the current text, the
    /// one before it to the text after the last is applied, and so on.
    undo: VecDeque<Operation>,
    /// Inverses of undos, in the same order.
    redo: Vec<Operation>,
    /// When the last local edit was recorded, while the top undo step may take more edits; `None`
    /// once the step is closed.
    open_since: Option<Instant>,
}

impl UndoHistory {
    pub(crate) fn new(options: UndoOptions) -> Self {
        Self { options, ..Self::default() }
    }

    pub(crate) fn options(&self) -> UndoOptions {
        self.options
    }

    /// Changes the limits; steps beyond the new depth are dropped, oldest first.
    pub(crate) fn set_options(&mut self, options: UndoOptions) {
        self.options = options;
        self.trim();
    }

    /// False when the depth is 0: nothing recorded is ever kept.
    pub(crate) fn keeps_steps(&self) -> bool {
        self.options.depth > 0
    }

    pub(crate) fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub(crate) fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Steps on the undo stack.
    #[cfg(test)]
    pub(crate) fn undo_len(&self) -> usize {
        self.undo.len()
    }

    /// Takes the inverse of a local edit made at `at`: joins the top step or becomes a new one, and
    /// clears the redo stack. An inverse without effect (the edit changed nothing) is ignored.
    pub(crate) fn record(&mut self, inverse: Operation, at: Instant) {
        if self.options.depth == 0 || inverse.is_noop() {
            return;
        }
        let within_window = self
            .open_since
            .is_some_and(|last| at.saturating_duration_since(last) <= self.options.group_window);
        // `inverse` applies to the text after the edit and the top step to the text before it, so
        // the composition cannot fail; if it did, the edit would simply start a step of its own.
        let joined = match self.undo.back() {
            Some(top) if within_window && continues(&inverse, top) => inverse.compose(top).ok(),
            _ => None,
        };
        match (joined, self.undo.back_mut()) {
            (Some(step), Some(top)) => *top = step,
            _ => {
                self.undo.push_back(inverse);
                self.trim();
            }
        }
        self.redo.clear();
        self.open_since = Some(at);
    }

    /// The inverse that [`undo`](crate::DocumentClient::undo) applies next.
    pub(crate) fn next_undo(&self) -> Option<&Operation> {
        self.undo.back()
    }

    /// The inverse that [`redo`](crate::DocumentClient::redo) applies next.
    pub(crate) fn next_redo(&self) -> Option<&Operation> {
        self.redo.last()
    }

    /// The top undo step was applied; `inverse` undoes that application and becomes the top redo step.
    pub(crate) fn undone(&mut self, inverse: Operation) {
        self.undo.pop_back();
        self.redo.push(inverse);
        self.open_since = None;
    }

    /// The top redo step was applied; `inverse` undoes that application and becomes the top undo
    /// step. The rest of the redo stack stays.
    pub(crate) fn redone(&mut self, inverse: Operation) {
        self.redo.pop();
        self.undo.push_back(inverse);
        self.trim();
        self.open_since = None;
    }

    /// The next local edit starts a new step.
    pub(crate) fn break_group(&mut self) {
        self.open_since = None;
    }

    /// Forgets everything: the text was replaced by a snapshot, so no entry fits it any more.
    pub(crate) fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
        self.open_since = None;
    }

    /// The history after another client's op `remote` (as applied to the local text). On error the
    /// history is not changed.
    pub(crate) fn transformed(&self, remote: &Operation) -> Result<UndoHistory, OtError> {
        if remote.is_noop() || (self.undo.is_empty() && self.redo.is_empty()) {
            return Ok(self.clone());
        }
        Ok(UndoHistory {
            options: self.options,
            undo: transform_stack(self.undo.iter(), remote)?.into(),
            redo: transform_stack(self.redo.iter(), remote)?,
            open_since: self.open_since,
        })
    }

    fn trim(&mut self) {
        while self.undo.len() > self.options.depth {
            self.undo.pop_front();
        }
    }
}

/// Transforms a stack (oldest first) against `remote`, which applies to the text the top entry
/// applies to: the top entry first, then the next one against `remote` moved past the top, as ot.js
/// `UndoManager.transform` does. Entries left without effect are dropped.
fn transform_stack<'a>(
    stack: impl DoubleEndedIterator<Item = &'a Operation>,
    remote: &Operation,
) -> Result<Vec<Operation>, OtError> {
    let mut remote = remote.clone();
    let mut out = Vec::new();
    for entry in stack.rev() {
        let (entry, moved) = Operation::transform(entry, &remote)?;
        if !entry.is_noop() {
            out.push(entry);
        }
        remote = moved;
    }
    out.reverse();
    Ok(out)
}

/// A plain insert or delete: `[retain start, insert or delete, retain rest]`, parts optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simple {
    Insert { start: usize, len: usize },
    Delete { start: usize, len: usize },
}

fn simple(op: &Operation) -> Option<Simple> {
    let mut parts = op.components();
    let mut start = 0;
    if let [Component::Retain(n), rest @ ..] = parts {
        start = *n;
        parts = rest;
    }
    if let [rest @ .., Component::Retain(_)] = parts {
        parts = rest;
    }
    match parts {
        [Component::Insert(s)] => Some(Simple::Insert { start, len: s.chars().count() }),
        [Component::Delete(n)] => Some(Simple::Delete { start, len: *n }),
        _ => None,
    }
}

/// Whether the edit whose inverse is `new` continues the step whose inverse is `top` (ot.js
/// `shouldBeComposedWithInverted`). On inverses: the inverse of typing on deletes right after the
/// step's deleted range; the inverse of Backspace inserts right before the step's inserted text, and
/// that of Delete at the same place.
fn continues(new: &Operation, top: &Operation) -> bool {
    match (simple(new), simple(top)) {
        (Some(Simple::Insert { start: a, len }), Some(Simple::Insert { start: b, .. })) => {
            a + len == b || a == b
        }
        (Some(Simple::Delete { start: a, .. }), Some(Simple::Delete { start: b, len })) => b + len == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(value: serde_json::Value) -> Operation {
        Operation::from_json(&value).expect("test operations are valid")
    }

    #[test]
    fn simple_ops_are_recognised() {
        assert_eq!(simple(&op(json!([2, "ab", 3]))), Some(Simple::Insert { start: 2, len: 2 }));
        assert_eq!(simple(&op(json!(["😀"]))), Some(Simple::Insert { start: 0, len: 1 }));
        assert_eq!(simple(&op(json!([-2, 1]))), Some(Simple::Delete { start: 0, len: 2 }));
        assert_eq!(simple(&op(json!([1, "x", -1, 1]))), None);
        assert_eq!(simple(&op(json!([1, "x", 1, "y"]))), None);
        assert_eq!(simple(&op(json!([3]))), None);
    }

    #[test]
    fn typing_backspace_and_delete_continue_a_step() {
        // Typed "ab" at 2, then "c" at 4: inverses delete [2, 4) and [4, 5).
        assert!(continues(&op(json!([4, -1, 1])), &op(json!([2, -2, 1]))));
        assert!(!continues(&op(json!([3, -1, 2])), &op(json!([2, -2, 1]))));
        // Backspace at 5 then 4: inverses insert at 5, then at 4 right before it.
        assert!(continues(&op(json!([4, "x", 5])), &op(json!([5, "y", 4]))));
        // Delete key at 4 twice: both inverses insert at 4.
        assert!(continues(&op(json!([4, "x", 5])), &op(json!([4, "y", 4]))));
        assert!(!continues(&op(json!([3, "x", 6])), &op(json!([5, "y", 4]))));
        // Typing after deleting, or a replacement, starts a new step.
        assert!(!continues(&op(json!([4, -1, 1])), &op(json!([4, "y", 4]))));
        assert!(!continues(&op(json!([4, "x", -1, 1])), &op(json!([4, -1, 1]))));
    }

    #[test]
    fn a_run_joins_one_step_within_the_window_only() {
        let t0 = Instant::now();
        let mut h = UndoHistory::new(UndoOptions::default());
        h.record(op(json!([-1])), t0); // typed "a" into ""
        h.record(op(json!([1, -1])), t0 + Duration::from_millis(900)); // "b"
        assert_eq!(h.undo_len(), 1);
        assert_eq!(h.next_undo(), Some(&op(json!([-2]))));
        h.record(op(json!([2, -1])), t0 + Duration::from_millis(2000)); // "c", 1.1 s later
        assert_eq!(h.undo_len(), 2);
        h.break_group();
        h.record(op(json!([3, -1])), t0 + Duration::from_millis(2100));
        assert_eq!(h.undo_len(), 3);
    }

    #[test]
    fn depth_drops_the_oldest_step_and_zero_keeps_nothing() {
        let t0 = Instant::now();
        let mut h = UndoHistory::new(UndoOptions { depth: 2, ..UndoOptions::default() });
        for (i, inverse) in [json!([-1]), json!([1, -1, 1]), json!([3, -1])].into_iter().enumerate() {
            h.break_group();
            h.record(op(inverse), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(
            h.undo.iter().map(Operation::to_json).collect::<Vec<_>>(),
            [json!([1, -1, 1]), json!([3, -1])]
        );
        let mut off = UndoHistory::new(UndoOptions { depth: 0, ..UndoOptions::default() });
        off.record(op(json!([-1])), t0);
        assert!(!off.can_undo());
    }

    #[test]
    fn remote_ops_move_down_the_stack() {
        // Text "ab": the client inserted "X" at 0 ("Xab"), then "Y" at 3 ("XabY"), as two steps.
        let t0 = Instant::now();
        let mut h = UndoHistory::new(UndoOptions::default());
        h.record(op(json!([-1, 2])), t0);
        h.break_group();
        h.record(op(json!([3, -1])), t0);
        // Another client deletes "a" (position 1 of "XabY").
        let h = h.transformed(&op(json!([1, -1, 2]))).unwrap();
        assert_eq!(
            h.undo.iter().map(Operation::to_json).collect::<Vec<_>>(),
            [json!([-1, 1]), json!([2, -1])]
        );
        // A remote op that deletes the text an entry would remove leaves it without effect: dropped.
        let h = h.transformed(&op(json!([2, -1]))).unwrap();
        assert_eq!(h.undo.iter().map(Operation::to_json).collect::<Vec<_>>(), [json!([-1, 1])]);
    }
}
