//! What `apply` sends: the op (given as JSON, or made from a position and a text or a length against
//! the text of the base version) and the request id that makes a retry safe.

use tandem_ot::Operation;

use crate::args::ApplyArgs;
use crate::error::CliError;

/// Longest request id the API takes.
pub const MAX_REQUEST_ID: usize = 64;

/// The edit of `apply`, before the base text is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// A whole op, already parsed.
    Op(Operation),
    InsertAt {
        pos: usize,
        text: String,
    },
    DeleteAt {
        pos: usize,
        len: usize,
    },
}

impl Edit {
    /// The edit the flags of `apply` describe.
    pub fn of(args: &ApplyArgs) -> Result<Self, CliError> {
        if let Some(json) = &args.op {
            return parse_op(json).map(Edit::Op);
        }
        if let Some([pos, text]) = args.insert_at.as_deref() {
            return Ok(Edit::InsertAt { pos: number("--insert-at POS", pos)?, text: text.clone() });
        }
        if let Some([pos, len]) = args.delete_at.as_deref() {
            return Ok(Edit::DeleteAt {
                pos: number("--delete-at POS", pos)?,
                len: number("--delete-at LEN", len)?,
            });
        }
        Err(CliError::usage("apply", "give --op, --insert-at POS TEXT or --delete-at POS LEN"))
    }

    /// True when the op can only be made knowing the length of the base text.
    pub fn needs_base_length(&self) -> bool {
        !matches!(self, Edit::Op(_))
    }

    /// The op against a base text of `base_len` characters (ignored for [`Edit::Op`]).
    pub fn into_op(self, base: u64, base_len: usize) -> Result<Operation, CliError> {
        let out_of_range = |what: String| {
            CliError::usage("apply", format!("{what}: version {base} has {base_len} characters"))
        };
        match self {
            Edit::Op(op) => Ok(op),
            Edit::InsertAt { pos, text } => Operation::from_patch(base_len, pos, 0, &text)
                .map_err(|_| out_of_range(format!("--insert-at {pos} is past the end of the text"))),
            Edit::DeleteAt { pos, len } => Operation::from_patch(base_len, pos, len, "").map_err(|_| {
                out_of_range(format!("--delete-at {pos} {len} reaches past the end of the text"))
            }),
        }
    }
}

/// An op in the protocol's JSON form: `[5, " world"]`, `[1, -4, "ey"]`.
pub fn parse_op(json: &str) -> Result<Operation, CliError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| CliError::usage("--op", format!("not JSON: {e}")))?;
    Operation::from_json(&value).map_err(|e| {
        CliError::usage("--op", format!("{e} (an op is a JSON array: retain n, \"insert\", delete -n)"))
    })
}

fn number(what: &str, value: &str) -> Result<usize, CliError> {
    value.parse().map_err(|_| CliError::usage(what, format!("{value:?} is not a non-negative integer")))
}

/// A fresh request id: a UUID (version 4).
pub fn fresh_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks a request id given by the user: 1 to 64 of `[A-Za-z0-9._~-]`.
pub fn check_request_id(id: &str) -> Result<(), CliError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._~-".contains(c);
    if id.is_empty() || id.len() > MAX_REQUEST_ID || !id.chars().all(allowed) {
        return Err(CliError::usage(
            format!("--request-id {id:?}"),
            format!("expected 1 to {MAX_REQUEST_ID} characters of [A-Za-z0-9._~-]"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(op: Option<&str>, insert: Option<[&str; 2]>, delete: Option<[&str; 2]>) -> ApplyArgs {
        let pair = |p: [&str; 2]| p.iter().map(|s| s.to_string()).collect();
        ApplyArgs {
            doc: "d".into(),
            base: 3,
            op: op.map(str::to_owned),
            insert_at: insert.map(pair),
            delete_at: delete.map(pair),
            request_id: None,
        }
    }

    #[test]
    fn ops_are_the_protocol_s_json() {
        let edit = Edit::of(&apply(Some(r#"[5, " world"]"#), None, None)).unwrap();
        assert!(!edit.needs_base_length());
        let op = edit.into_op(3, 999).unwrap();
        assert_eq!(op.to_json(), json!([5, " world"]));
        let e = Edit::of(&apply(Some("[5, "), None, None)).unwrap_err();
        assert!(e.message.starts_with("not JSON"), "{e}");
        let e = Edit::of(&apply(Some(r#"{"retain": 5}"#), None, None)).unwrap_err();
        assert!(e.message.contains("JSON array"), "{e}");
        assert_eq!(e.exit, crate::error::Exit::Usage);
    }

    #[test]
    fn insert_and_delete_at_walk_the_whole_base_text() {
        let edit = Edit::of(&apply(None, Some(["2", "😀!"]), None)).unwrap();
        assert!(edit.needs_base_length());
        assert_eq!(edit.into_op(3, 5).unwrap().to_json(), json!([2, "😀!", 3]));
        let edit = Edit::of(&apply(None, None, Some(["1", "3"]))).unwrap();
        assert_eq!(edit.into_op(3, 5).unwrap().to_json(), json!([1, -3, 1]));
    }

    #[test]
    fn positions_past_the_end_name_the_base_length() {
        let e = Edit::of(&apply(None, Some(["6", "x"]), None)).unwrap().into_op(3, 5).unwrap_err();
        assert_eq!(e.message, "--insert-at 6 is past the end of the text: version 3 has 5 characters");
        let e = Edit::of(&apply(None, None, Some(["4", "2"]))).unwrap().into_op(3, 5).unwrap_err();
        assert!(e.message.starts_with("--delete-at 4 2 reaches past the end"), "{e}");
        let e = Edit::of(&apply(None, Some(["-1", "x"]), None)).unwrap_err();
        assert_eq!(
            (e.context.as_str(), e.message.as_str()),
            ("--insert-at POS", "\"-1\" is not a non-negative integer")
        );
    }

    #[test]
    fn request_ids_are_uuids_or_checked() {
        let id = fresh_request_id();
        assert_eq!(id.len(), 36);
        assert!(check_request_id(&id).is_ok());
        assert_ne!(id, fresh_request_id());
        assert!(check_request_id("a.b~c-D_9").is_ok());
        assert!(check_request_id(&"x".repeat(64)).is_ok());
        let e = check_request_id(&"x".repeat(65)).unwrap_err();
        assert!(e.message.contains("1 to 64"), "{e}");
        assert!(check_request_id("").is_err());
        assert!(check_request_id("with space").is_err());
        assert!(check_request_id("slash/no").is_err());
    }
}
