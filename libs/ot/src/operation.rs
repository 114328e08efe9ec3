//! The operation type, its normalising builder and its JSON form.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::OtError;

/// The largest retain or delete count accepted from the wire. Larger counts can never fit a real
/// document, and refusing them early keeps every later sum far from overflow.
pub const MAX_COUNT: u64 = 1 << 40;

/// One step of an operation's walk over the base text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Component {
    /// Keep the next `n` characters.
    Retain(usize),
    /// Insert this text at the current position.
    Insert(String),
    /// Remove the next `n` characters.
    Delete(usize),
}

/// A change to a whole text, always in normal form: no zero-length component, adjacent components of
/// the same kind merged, and an insert next to a delete placed before it.
///
/// The builder methods ([`Operation::retain`], [`Operation::insert`], [`Operation::delete`]) keep that
/// form, so two operations that do the same thing compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Operation {
    components: Vec<Component>,
    /// Characters of the text this operation applies to (retains + deletes).
    base_len: usize,
    /// Characters of the text it produces (retains + inserts).
    target_len: usize,
}

impl Operation {
    /// The empty operation, which applies to the empty text.
    pub fn new() -> Self {
        Self::default()
    }

    /// An operation that keeps all `len` characters of a text: a version that changes nothing.
    pub fn identity(len: usize) -> Self {
        let mut op = Self::new();
        op.retain(len);
        op
    }

    /// Appends "keep the next `n` characters".
    pub fn retain(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        self.target_len += n;
        if let Some(Component::Retain(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Retain(n));
        }
        self
    }

    /// Appends "insert `text` here". An insert directly after a delete goes before it.
    pub fn insert(&mut self, text: &str) -> &mut Self {
        if text.is_empty() {
            return self;
        }
        self.target_len += text.chars().count();
        let len = self.components.len();
        match self.components.as_mut_slice() {
            [.., Component::Insert(last)] => last.push_str(text),
            [.., Component::Insert(before), Component::Delete(_)] => before.push_str(text),
            [.., Component::Delete(_)] => self.components.insert(len - 1, Component::Insert(text.to_owned())),
            _ => self.components.push(Component::Insert(text.to_owned())),
        }
        self
    }

    /// Appends "remove the next `n` characters".
    pub fn delete(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        if let Some(Component::Delete(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Delete(n));
        }
        self
    }

    /// Appends one component, normalising as the builder methods do.
    pub fn push(&mut self, component: Component) -> &mut Self {
        match component {
            Component::Retain(n) => self.retain(n),
            Component::Insert(s) => self.insert(&s),
            Component::Delete(n) => self.delete(n),
        }
    }

    /// The components, in normal form.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// How many characters the text this operation applies to must have.
    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// How many characters the text has after applying this operation.
    pub fn target_len(&self) -> usize {
        self.target_len
    }

    /// True when applying the operation leaves the text unchanged.
    pub fn is_noop(&self) -> bool {
        self.components.iter().all(|c| matches!(c, Component::Retain(_)))
    }

    /// Characters inserted by this operation: what a size limit on ops counts.
    pub fn inserted_chars(&self) -> usize {
        self.target_len + self.deleted_chars() - self.base_len
    }

    /// Characters deleted by this operation.
    pub fn deleted_chars(&self) -> usize {
        self.components
            .iter()
            .map(|c| match c {
                Component::Delete(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// Parses the wire form: a JSON array of positive integers (retain), strings (insert) and negative
    /// integers (delete). Zero and empty strings are accepted and dropped; the result is normalised.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, OtError> {
        let items = value.as_array().ok_or(OtError::NotAnArray)?;
        let mut op = Operation::new();
        let mut base: u64 = 0;
        let mut target: u64 = 0;
        for (index, item) in items.iter().enumerate() {
            match item {
                serde_json::Value::String(s) => {
                    target = target.checked_add(s.chars().count() as u64).ok_or(OtError::LengthOverflow)?;
                    op.insert(s);
                }
                serde_json::Value::Number(n) => {
                    let count = if let Some(v) = n.as_u64() {
                        v
                    } else if let Some(v) = n.as_i64() {
                        v.unsigned_abs()
                    } else if n.is_f64() {
                        return Err(OtError::BadComponent { index, found: "a non-integer number" });
                    } else {
                        return Err(OtError::CountOutOfRange { index, max: MAX_COUNT });
                    };
                    if count > MAX_COUNT {
                        return Err(OtError::CountOutOfRange { index, max: MAX_COUNT });
                    }
                    base = base.checked_add(count).ok_or(OtError::LengthOverflow)?;
                    if n.as_i64().is_some_and(|v| v < 0) {
                        op.delete(count as usize);
                    } else {
                        target = target.checked_add(count).ok_or(OtError::LengthOverflow)?;
                        op.retain(count as usize);
                    }
                }
                other => {
                    return Err(OtError::BadComponent { index, found: json_kind(other) });
                }
            }
        }
        if base > MAX_COUNT || target > MAX_COUNT {
            return Err(OtError::LengthOverflow);
        }
        Ok(op)
    }

    /// The wire form: a JSON array, as [`Operation::from_json`] reads it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.components
                .iter()
                .map(|c| match c {
                    Component::Retain(n) => serde_json::Value::from(*n as u64),
                    Component::Insert(s) => serde_json::Value::from(s.as_str()),
                    Component::Delete(n) => serde_json::Value::from(-(*n as i64)),
                })
                .collect(),
        )
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.components.len()))?;
        for c in &self.components {
            match c {
                Component::Retain(n) => seq.serialize_element(&(*n as u64))?,
                Component::Insert(s) => seq.serialize_element(s)?,
                Component::Delete(n) => seq.serialize_element(&-(*n as i64))?,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Operation::from_json(&value).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builder_normalises() {
        let mut op = Operation::new();
        op.retain(0).retain(2).retain(3).delete(1).insert("a").insert("").insert("b").delete(2);
        assert_eq!(
            op.components(),
            &[Component::Retain(5), Component::Insert("ab".into()), Component::Delete(3)]
        );
        assert_eq!((op.base_len(), op.target_len()), (8, 7));
        assert_eq!(op.inserted_chars(), 2);
        assert_eq!(op.deleted_chars(), 3);
    }

    #[test]
    fn json_round_trip_counts_scalar_values() {
        let op = Operation::from_json(&json!([1, "😀é", -2, 0, ""])).unwrap();
        assert_eq!(op.to_json(), json!([1, "😀é", -2]));
        assert_eq!((op.base_len(), op.target_len()), (3, 3));
        let back: Operation = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn json_errors_name_the_problem() {
        assert_eq!(Operation::from_json(&json!({"a": 1})), Err(OtError::NotAnArray));
        assert_eq!(
            Operation::from_json(&json!([1, 2.5])),
            Err(OtError::BadComponent { index: 1, found: "a non-integer number" })
        );
        assert_eq!(
            Operation::from_json(&json!([1, null])),
            Err(OtError::BadComponent { index: 1, found: "null" })
        );
        assert_eq!(
            Operation::from_json(&json!([u64::MAX])),
            Err(OtError::CountOutOfRange { index: 0, max: MAX_COUNT })
        );
        assert_eq!(Operation::from_json(&json!([MAX_COUNT, MAX_COUNT])), Err(OtError::LengthOverflow));
        let err = serde_json::from_str::<Operation>("[1, -0.0]").unwrap_err();
        assert!(err.to_string().contains("non-integer"), "{err}");
    }
}
