//! Moving cursor positions through operations, and building operations from simple edits.

use crate::{Component, Operation, OtError};

impl Operation {
    /// Where a cursor at `index` in the base text ends up after this operation, so that carets and
    /// selections of other users stay on the same text while edits arrive.
    ///
    /// Same rule as ot.js `Selection` transform: an insert exactly at the cursor pushes it right;
    /// a delete that covers the cursor pulls it to the start of the deleted range. An index past
    /// the end of the base text is treated as the end, so the result never exceeds
    /// [`Operation::target_len`].
    pub fn transform_index(&self, index: usize) -> usize {
        // `remaining` is how far the cursor still is from the walk's position in the base text.
        let mut remaining = index.min(self.base_len());
        let mut new_index = remaining;
        for component in self.components() {
            match component {
                Component::Retain(n) => {
                    if *n > remaining {
                        break;
                    }
                    remaining -= n;
                }
                Component::Insert(s) => new_index += s.chars().count(),
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

    /// Builds the operation for "at `pos`, delete `delete` characters and insert `insert`" in a
    /// text of `doc_len` characters: `[retain pos, insert, delete, retain rest]`, normalised.
    ///
    /// Editors and editing traces describe changes this way; this is the one place that turns them
    /// into operations. A range past the end of the text is refused with
    /// [`OtError::PatchOutOfRange`].
    pub fn from_patch(doc_len: usize, pos: usize, delete: usize, insert: &str) -> Result<Operation, OtError> {
        let end = pos.checked_add(delete).filter(|end| *end <= doc_len);
        let end = end.ok_or(OtError::PatchOutOfRange { pos, delete, doc_len })?;
        let mut op = Operation::new();
        op.retain(pos).insert(insert).delete(delete).retain(doc_len - end);
        Ok(op)
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
    fn insert_at_the_cursor_pushes_it_right() {
        let o = op(json!([2, "xy", 3]));
        let moved: Vec<usize> = (0..=5).map(|i| o.transform_index(i)).collect();
        assert_eq!(moved, [0, 1, 4, 5, 6, 7]);
        assert_eq!(op(json!(["😀👍🏽"])).transform_index(0), 3);
        assert_eq!(op(json!([3, "!"])).transform_index(3), 4);
    }

    #[test]
    fn delete_pulls_cursor_to_its_start() {
        let o = op(json!([1, -3, 2]));
        let moved: Vec<usize> = (0..=6).map(|i| o.transform_index(i)).collect();
        assert_eq!(moved, [0, 1, 1, 1, 1, 2, 3]);
        // A replacement: the cursor inside the replaced range goes after the new text.
        let o = op(json!([1, "ab", -2, 1]));
        let moved: Vec<usize> = (0..=4).map(|i| o.transform_index(i)).collect();
        assert_eq!(moved, [0, 3, 3, 3, 4]);
    }

    #[test]
    fn out_of_range_index_is_clamped() {
        let o = op(json!([2, -1, "xyz"]));
        assert_eq!(o.transform_index(3), 5);
        assert_eq!(o.transform_index(100), 5);
        assert_eq!(Operation::new().transform_index(7), 0);
    }

    #[test]
    fn from_patch_builds_normalised_ops() {
        assert_eq!(Operation::from_patch(5, 5, 0, " world").map(|o| o.to_json()), Ok(json!([5, " world"])));
        assert_eq!(Operation::from_patch(5, 1, 4, "ey").map(|o| o.to_json()), Ok(json!([1, "ey", -4])));
        assert_eq!(Operation::from_patch(3, 0, 3, "").map(|o| o.to_json()), Ok(json!([-3])));
        assert_eq!(Operation::from_patch(3, 1, 0, "").map(|o| o.to_json()), Ok(json!([3])));
        assert_eq!(Operation::from_patch(0, 0, 0, "😀").map(|o| o.to_json()), Ok(json!(["😀"])));
    }

    #[test]
    fn from_patch_out_of_range() {
        assert_eq!(
            Operation::from_patch(3, 4, 0, "x"),
            Err(OtError::PatchOutOfRange { pos: 4, delete: 0, doc_len: 3 })
        );
        assert_eq!(
            Operation::from_patch(3, 2, 2, ""),
            Err(OtError::PatchOutOfRange { pos: 2, delete: 2, doc_len: 3 })
        );
        assert_eq!(
            Operation::from_patch(3, 1, usize::MAX, ""),
            Err(OtError::PatchOutOfRange { pos: 1, delete: usize::MAX, doc_len: 3 })
        );
    }
}
