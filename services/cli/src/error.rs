//! What went wrong, as the user sees it: one line naming the problem (with the gRPC code, and the
//! `ApiError` code and message the server put in the status details), and a distinct exit code per
//! kind of failure so a script can branch on it. The codes are listed in `tandem --help`
//! ([`EXIT_CODES_HELP`]); a test keeps that list and [`Exit`] in step.

use std::fmt;

use prost::Message;
use tandem_proto::proto::ApiError;
use tonic::{Code, Status};

/// How the process ends. The discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The server failed: INTERNAL, UNKNOWN, or a code this client does not expect.
    Server = 1,
    /// A bad command line or bad local input (an op that is not JSON, a malformed import line, an
    /// unreadable token file). clap's own usage errors exit with 2 as well.
    Usage = 2,
    /// The server cannot be reached, or answers UNAVAILABLE / DEADLINE_EXCEEDED: retry later.
    Unavailable = 3,
    /// UNAUTHENTICATED (`unauthorized`): no token, or one that does not verify.
    Unauthenticated = 4,
    /// PERMISSION_DENIED (`forbidden`): the token does not allow this on the document.
    Forbidden = 5,
    /// NOT_FOUND: a version after the document's latest, an unknown checkpoint.
    NotFound = 6,
    /// INVALID_ARGUMENT (`bad_request`): a field the server refused; the message names it.
    BadRequest = 7,
    /// FAILED_PRECONDITION (`invalid_op`): the op does not apply to the version it names.
    InvalidOp = 8,
    /// ALREADY_EXISTS: a checkpoint name already given to another version.
    Conflict = 9,
    /// RESOURCE_EXHAUSTED (`too_large`, `rate_limited`).
    Exhausted = 10,
    /// `delete` was not confirmed.
    NotConfirmed = 11,
    /// `import`: the document does not continue the import (it was not empty, or someone else
    /// edited it during the import).
    ImportMismatch = 12,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every exit code but success, in order: what [`EXIT_CODES_HELP`] documents.
    pub const ALL: [Exit; 12] = [
        Exit::Server,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Unauthenticated,
        Exit::Forbidden,
        Exit::NotFound,
        Exit::BadRequest,
        Exit::InvalidOp,
        Exit::Conflict,
        Exit::Exhausted,
        Exit::NotConfirmed,
        Exit::ImportMismatch,
    ];
}

/// The exit codes as `tandem --help` prints them (after the options).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success (watch: ended by Ctrl-C or by the document's deletion)
   1  the server failed (INTERNAL, UNKNOWN)
   2  bad command line or local input (op JSON, import line, token file)
   3  the server cannot be reached, or is UNAVAILABLE (overloaded, unavailable): retry later
   4  UNAUTHENTICATED: no token, or one that does not verify
   5  PERMISSION_DENIED: the token does not allow this on the document
   6  NOT_FOUND: a version after the latest, an unknown checkpoint
   7  INVALID_ARGUMENT (bad_request): the message names the field
   8  FAILED_PRECONDITION (invalid_op): the op does not apply to its base version
   9  ALREADY_EXISTS: the checkpoint name is taken by another version
  10  RESOURCE_EXHAUSTED (too_large, rate_limited)
  11  delete not confirmed
  12  import: the document does not continue the import (not empty, or edited meanwhile)";

/// A failure, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub exit: Exit,
    /// What the CLI was doing, e.g. `get notes`.
    pub context: String,
    /// The gRPC status code (`PERMISSION_DENIED`), when the server answered.
    pub grpc_code: Option<&'static str>,
    /// The protocol error code of the `ApiError` details (`forbidden`), when there were any.
    pub api_code: Option<String>,
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<String>,
}

impl CliError {
    /// A problem found before anything was sent.
    pub fn usage(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::local(Exit::Usage, context, message)
    }

    pub fn local(exit: Exit, context: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            exit,
            context: context.into(),
            grpc_code: None,
            api_code: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A gRPC status: its code, and the `ApiError` of its details (prost-encoded, documents.proto).
    pub fn from_status(context: impl Into<String>, status: &Status) -> Self {
        let api = ApiError::decode(status.details()).ok().filter(|e| !e.code.is_empty());
        let (api_code, message) = match api {
            Some(e) => (Some(e.code), e.message),
            None => (None, status.message().to_owned()),
        };
        let exit = exit_of(status.code());
        let hint = match exit {
            Exit::Unauthenticated => Some(
                "give a valid token: --token, TANDEM_TOKEN, --token-file or TANDEM_TOKEN_FILE".to_owned(),
            ),
            Exit::Unavailable => Some("retry later".to_owned()),
            _ => None,
        };
        Self {
            exit,
            context: context.into(),
            grpc_code: Some(code_name(status.code())),
            api_code,
            message: if message.is_empty() { "no message".to_owned() } else { message },
            hint,
        }
    }

    /// The JSON form printed on stderr with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "context": self.context,
                "grpc_code": self.grpc_code,
                "code": self.api_code,
                "message": self.message,
                "hint": self.hint,
                "exit_code": self.exit.code(),
            }
        })
    }
}

impl fmt::Display for CliError {
    /// `get notes: PERMISSION_DENIED (forbidden): the token does not allow reading "notes"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.context)?;
        match (self.grpc_code, &self.api_code) {
            (Some(grpc), Some(api)) => write!(f, "{grpc} ({api}): ")?,
            (Some(grpc), None) => write!(f, "{grpc}: ")?,
            (None, _) => {}
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

/// The exit code of a gRPC status code.
pub fn exit_of(code: Code) -> Exit {
    match code {
        Code::Unauthenticated => Exit::Unauthenticated,
        Code::PermissionDenied => Exit::Forbidden,
        Code::NotFound => Exit::NotFound,
        Code::InvalidArgument | Code::OutOfRange => Exit::BadRequest,
        Code::FailedPrecondition => Exit::InvalidOp,
        Code::AlreadyExists => Exit::Conflict,
        Code::ResourceExhausted => Exit::Exhausted,
        Code::Unavailable | Code::DeadlineExceeded => Exit::Unavailable,
        _ => Exit::Server,
    }
}

/// The canonical name of a gRPC code, as the gRPC specification spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_details(code: Code, api_code: &str, message: &str) -> Status {
        let details = ApiError { code: api_code.into(), message: message.into() }.encode_to_vec();
        Status::with_details(code, "status message", details.into())
    }

    #[test]
    fn a_status_names_the_grpc_code_and_the_api_error_of_its_details() {
        let status = status_with_details(Code::PermissionDenied, "forbidden", "no write permission on a/b");
        let e = CliError::from_status("apply a/b", &status);
        assert_eq!(e.exit, Exit::Forbidden);
        assert_eq!(e.to_string(), "apply a/b: PERMISSION_DENIED (forbidden): no write permission on a/b");
        let json = e.to_json();
        assert_eq!(json["error"]["grpc_code"], "PERMISSION_DENIED");
        assert_eq!(json["error"]["code"], "forbidden");
        assert_eq!(json["error"]["exit_code"], 5);
    }

    #[test]
    fn a_status_without_details_keeps_its_own_message() {
        let e = CliError::from_status("get x", &Status::unauthenticated("token expired"));
        assert_eq!(e.exit, Exit::Unauthenticated);
        assert_eq!(e.api_code, None);
        assert!(e
            .to_string()
            .starts_with("get x: UNAUTHENTICATED: token expired\n  hint: give a valid token"));
        // Details that are not an ApiError are ignored, not misread.
        let garbage = Status::with_details(Code::Internal, "boom", vec![0xff, 0xff].into());
        assert_eq!(CliError::from_status("get x", &garbage).message, "boom");
    }

    #[test]
    fn every_failure_kind_has_its_own_exit_code_and_the_help_lists_them_all() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, (1..=12).collect::<Vec<u8>>(), "distinct and contiguous");
        for exit in Exit::ALL {
            let line = format!("\n{:>4}  ", exit.code());
            assert!(EXIT_CODES_HELP.contains(&line), "{exit:?} is not in the help");
        }
        let mapped = [
            (Code::Unauthenticated, Exit::Unauthenticated),
            (Code::PermissionDenied, Exit::Forbidden),
            (Code::NotFound, Exit::NotFound),
            (Code::InvalidArgument, Exit::BadRequest),
            (Code::FailedPrecondition, Exit::InvalidOp),
            (Code::AlreadyExists, Exit::Conflict),
            (Code::ResourceExhausted, Exit::Exhausted),
            (Code::Unavailable, Exit::Unavailable),
            (Code::Internal, Exit::Server),
        ];
        for (code, exit) in mapped {
            assert_eq!(exit_of(code), exit, "{code:?}");
        }
    }
}
