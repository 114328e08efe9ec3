//! Errors of the Documents API: a gRPC status whose details carry an `ApiError` (prost-encoded) with
//! the protocol's error code, so a caller branches on the same codes as a WebSocket client. The
//! table of codes is at the top of proto/tandem/v1/documents.proto.

use prost::Message;
use tandem_proto::proto::ApiError;
use tandem_protocol::ErrorCode;
use tandem_store::StoreError;
use tonic::{Code, Status};
use tracing::warn;

use crate::history::HistoryError;

/// An `ApiError.code`: one of the protocol's codes, or one the API adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiCode {
    Protocol(ErrorCode),
    /// A version after the document's latest, an unknown checkpoint.
    NotFound,
    /// A checkpoint name already given to another version.
    AlreadyExists,
}

impl ApiCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiCode::Protocol(code) => code.as_str(),
            ApiCode::NotFound => "not_found",
            ApiCode::AlreadyExists => "already_exists",
        }
    }

    /// The gRPC status code of documents.proto's table.
    pub fn grpc(self) -> Code {
        match self {
            ApiCode::Protocol(code) => match code {
                ErrorCode::BadRequest | ErrorCode::UnsupportedProtocol => Code::InvalidArgument,
                ErrorCode::Unauthorized => Code::Unauthenticated,
                ErrorCode::Forbidden => Code::PermissionDenied,
                ErrorCode::InvalidOp => Code::FailedPrecondition,
                ErrorCode::TooLarge | ErrorCode::RateLimited => Code::ResourceExhausted,
                ErrorCode::Overloaded | ErrorCode::Unavailable => Code::Unavailable,
                ErrorCode::Internal => Code::Internal,
            },
            ApiCode::NotFound => Code::NotFound,
            ApiCode::AlreadyExists => Code::AlreadyExists,
        }
    }
}

impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> Self {
        ApiCode::Protocol(code)
    }
}

/// The status for `code` with `message`, the `ApiError` in its details.
pub(crate) fn status(code: impl Into<ApiCode>, message: impl Into<String>) -> Status {
    let code = code.into();
    let message = message.into();
    metrics::counter!("tandem_gateway_api_errors_total", "code" => code.as_str()).increment(1);
    let details = ApiError { code: code.as_str().to_owned(), message: message.clone() }.encode_to_vec();
    Status::with_details(code.grpc(), message, details.into())
}

pub(crate) fn bad_request(message: impl Into<String>) -> Status {
    status(ErrorCode::BadRequest, message)
}

pub(crate) fn not_found(message: impl Into<String>) -> Status {
    status(ApiCode::NotFound, message)
}

pub(crate) fn unavailable(message: impl Into<String>) -> Status {
    status(ErrorCode::Unavailable, message)
}

/// A store failure: `unavailable` (retry) when the store cannot answer now, `internal` otherwise
/// (logged: stored data that cannot be read back is a bug).
pub(crate) fn store_error(doc: &tandem_protocol::DocId, error: StoreError) -> Status {
    match error {
        StoreError::Unavailable(why) => {
            unavailable(format!("the event store cannot answer now ({why}); try again"))
        }
        other => {
            warn!(%doc, error = %other, "documents API: store failure");
            status(ErrorCode::Internal, format!("the event store failed: {other}"))
        }
    }
}

impl From<HistoryError> for Status {
    fn from(error: HistoryError) -> Self {
        let code = match error.code() {
            "not_found" => ApiCode::NotFound,
            "bad_request" => ErrorCode::BadRequest.into(),
            "unavailable" => ErrorCode::Unavailable.into(),
            _ => {
                warn!(error = %error, "documents API: history read failed");
                ErrorCode::Internal.into()
            }
        };
        status(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code of the table in documents.proto, and the details decode to the same code.
    #[test]
    fn codes_map_to_the_table_of_documents_proto() {
        let table = [
            (ApiCode::from(ErrorCode::BadRequest), Code::InvalidArgument, "bad_request"),
            (ErrorCode::Unauthorized.into(), Code::Unauthenticated, "unauthorized"),
            (ErrorCode::Forbidden.into(), Code::PermissionDenied, "forbidden"),
            (ErrorCode::InvalidOp.into(), Code::FailedPrecondition, "invalid_op"),
            (ErrorCode::TooLarge.into(), Code::ResourceExhausted, "too_large"),
            (ErrorCode::RateLimited.into(), Code::ResourceExhausted, "rate_limited"),
            (ErrorCode::Overloaded.into(), Code::Unavailable, "overloaded"),
            (ErrorCode::Unavailable.into(), Code::Unavailable, "unavailable"),
            (ErrorCode::Internal.into(), Code::Internal, "internal"),
            (ApiCode::NotFound, Code::NotFound, "not_found"),
            (ApiCode::AlreadyExists, Code::AlreadyExists, "already_exists"),
        ];
        for (code, grpc, name) in table {
            let status = status(code, format!("about {name}"));
            assert_eq!(status.code(), grpc, "{name}");
            let details = ApiError::decode(status.details()).expect("ApiError in the details");
            assert_eq!(details.code, name);
            assert_eq!(details.message, format!("about {name}"));
            assert_eq!(status.message(), details.message);
        }
    }
}
