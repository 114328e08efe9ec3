//! Every way an operation can be malformed or fail to fit a text.

/// Why an operation was refused. Each variant names the problem precisely enough to be shown to a
/// client as the `message` of an `invalid_op` or `bad_request` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtError {
    /// The JSON form is not an array.
    #[error("an operation must be a JSON array of retains (positive integers), inserts (strings) and deletes (negative integers)")]
    NotAnArray,
    /// One element of the JSON array is neither an integer nor a string.
    #[error("operation component {index} is {found}; expected a non-zero integer or a string")]
    BadComponent { index: usize, found: &'static str },
    /// A count does not fit in the supported range.
    #[error("operation component {index} has a count out of range (at most {max})")]
    CountOutOfRange { index: usize, max: u64 },
    /// The operation's lengths add up to more than the address space; only hostile input does this.
    #[error("operation lengths overflow")]
    LengthOverflow,
    /// The operation walks a text of a different length than the one it is applied to.
    #[error("operation expects a base text of {expected} characters, but the text has {actual}")]
    BaseLengthMismatch { expected: usize, actual: usize },
    /// Two operations cannot be composed: the first one's result is not the second one's base.
    #[error("cannot compose: the first operation produces {first_target} characters, the second expects {second_base}")]
    ComposeLengthMismatch { first_target: usize, second_base: usize },
    /// Two operations cannot be transformed against each other: they have different bases.
    #[error("cannot transform: the operations apply to texts of {a_base} and {b_base} characters")]
    TransformLengthMismatch { a_base: usize, b_base: usize },
    /// An edit given as position, deleted count and inserted text reaches past the end of the text.
    #[error("cannot edit {delete} characters at position {pos} of a text of {doc_len} characters")]
    PatchOutOfRange { pos: usize, delete: usize, doc_len: usize },
}
