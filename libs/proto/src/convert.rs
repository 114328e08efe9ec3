//! Conversions between the generated protobuf types ([`crate::proto`]) and the domain types of
//! [`tandem_protocol::records`], and the byte encodings of the Kafka record values.
//!
//! Domain → wire cannot fail: a domain value is valid by construction. Wire → domain validates
//! everything a domain type promises (ids, counts, error codes, the oneof cases) and names the bad
//! field in a [`ConvertError`], so a malformed record or request becomes a clear error at the edge
//! rather than a panic deeper in.

use prost::Message;
use tandem_ot::{Component, Operation, MAX_COUNT};
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use crate::proto;
use crate::proto::component::Kind;
use crate::proto::sequenced_record::Record;

/// Why a wire value could not become a domain value. Every case but [`ConvertError::Decode`] names
/// the field, as a path from the message converted (`doc`, `op[2].retain`, `rejected.code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A document or client id that does not follow PROTOCOL.md.
    #[error("{field}: {reason}")]
    InvalidId { field: String, reason: String },
    /// An error code this build does not know, or `ERROR_CODE_UNSPECIFIED`.
    #[error("{field}: unknown error code {value}")]
    UnknownErrorCode { field: String, value: i32 },
    /// A retain or delete count over [`tandem_ot::MAX_COUNT`].
    #[error("{field}: count {value} is over the maximum of {max}")]
    CountOutOfRange { field: String, value: u64, max: u64 },
    /// An operation whose base or target text would be longer than [`tandem_ot::MAX_COUNT`].
    #[error("{field}: the operation spans more than {max} characters")]
    TooLong { field: String, max: u64 },
    /// A required message or oneof case that is not set.
    #[error("{field}: missing")]
    Missing { field: String },
    /// A field whose value breaks a rule of its message, other than the cases above.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Bytes that are not a protobuf encoding of the expected message.
    #[error("cannot decode {message}: {reason}")]
    Decode { message: &'static str, reason: String },
}

impl ConvertError {
    /// The path of the offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConvertError::InvalidId { field, .. }
            | ConvertError::UnknownErrorCode { field, .. }
            | ConvertError::CountOutOfRange { field, .. }
            | ConvertError::TooLong { field, .. }
            | ConvertError::Missing { field }
            | ConvertError::Invalid { field, .. } => Some(field),
            ConvertError::Decode { .. } => None,
        }
    }

    /// The same error with its field path placed under `prefix` (`submissions[3]` + `doc` →
    /// `submissions[3].doc`), for a value converted as part of a larger message.
    pub fn within(mut self, prefix: &str) -> Self {
        match &mut self {
            ConvertError::InvalidId { field, .. }
            | ConvertError::UnknownErrorCode { field, .. }
            | ConvertError::CountOutOfRange { field, .. }
            | ConvertError::TooLong { field, .. }
            | ConvertError::Missing { field }
            | ConvertError::Invalid { field, .. } => *field = format!("{prefix}.{field}"),
            ConvertError::Decode { .. } => {}
        }
        self
    }
}

fn doc_id(field: &str, value: &str) -> Result<DocId, ConvertError> {
    DocId::parse(value)
        .map_err(|e| ConvertError::InvalidId { field: field.to_owned(), reason: e.to_string() })
}

/// Most bytes of an author: a user id from a token, which may have 256 characters
/// (`tandem_auth::MAX_USER_ID_CHARS`) of up to 4 UTF-8 bytes each.
pub const MAX_AUTHOR_BYTES: usize = 1024;

fn author(field: &str, value: String) -> Result<String, ConvertError> {
    if value.len() > MAX_AUTHOR_BYTES {
        return Err(ConvertError::Invalid {
            field: field.to_owned(),
            reason: format!("{} bytes is over the maximum of {MAX_AUTHOR_BYTES}", value.len()),
        });
    }
    Ok(value)
}

fn client_id(field: &str, value: &str) -> Result<ClientId, ConvertError> {
    ClientId::parse(value)
        .map_err(|e| ConvertError::InvalidId { field: field.to_owned(), reason: e.to_string() })
}

/// The wire form of an operation: its components, in normal form.
pub fn operation_to_proto(op: &Operation) -> Vec<proto::Component> {
    op.components()
        .iter()
        .map(|c| proto::Component {
            kind: Some(match c {
                Component::Retain(n) => Kind::Retain(*n as u64),
                Component::Insert(s) => Kind::Insert(s.clone()),
                Component::Delete(n) => Kind::Delete(*n as u64),
            }),
        })
        .collect()
}

/// Reads an operation from its wire form, with the limits of [`Operation::from_json`]: each count
/// at most [`MAX_COUNT`], the base and target lengths too. Zero counts and empty inserts are
/// dropped and the result is normalised. Errors name the field as `op[index]…`.
pub fn operation_from_proto(components: Vec<proto::Component>) -> Result<Operation, ConvertError> {
    let mut op = Operation::new();
    let mut base: u64 = 0;
    let mut target: u64 = 0;
    let too_long = || ConvertError::TooLong { field: "op".to_owned(), max: MAX_COUNT };
    for (index, component) in components.into_iter().enumerate() {
        match component.kind {
            None => return Err(ConvertError::Missing { field: format!("op[{index}].kind") }),
            Some(Kind::Insert(text)) => {
                target = target.checked_add(text.chars().count() as u64).ok_or_else(too_long)?;
                op.insert(&text);
            }
            Some(Kind::Retain(n)) => {
                let n = count(index, "retain", n)?;
                base = base.checked_add(n as u64).ok_or_else(too_long)?;
                target = target.checked_add(n as u64).ok_or_else(too_long)?;
                op.retain(n);
            }
            Some(Kind::Delete(n)) => {
                let n = count(index, "delete", n)?;
                base = base.checked_add(n as u64).ok_or_else(too_long)?;
                op.delete(n);
            }
        }
        if base > MAX_COUNT || target > MAX_COUNT {
            return Err(too_long());
        }
    }
    Ok(op)
}

fn count(index: usize, kind: &str, value: u64) -> Result<usize, ConvertError> {
    let out_of_range =
        || ConvertError::CountOutOfRange { field: format!("op[{index}].{kind}"), value, max: MAX_COUNT };
    if value > MAX_COUNT {
        return Err(out_of_range());
    }
    usize::try_from(value).map_err(|_| out_of_range())
}

impl From<ErrorCode> for proto::ErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::BadRequest => proto::ErrorCode::BadRequest,
            ErrorCode::UnsupportedProtocol => proto::ErrorCode::UnsupportedProtocol,
            ErrorCode::Unauthorized => proto::ErrorCode::Unauthorized,
            ErrorCode::Forbidden => proto::ErrorCode::Forbidden,
            ErrorCode::InvalidOp => proto::ErrorCode::InvalidOp,
            ErrorCode::TooLarge => proto::ErrorCode::TooLarge,
            ErrorCode::RateLimited => proto::ErrorCode::RateLimited,
            ErrorCode::Overloaded => proto::ErrorCode::Overloaded,
            ErrorCode::Unavailable => proto::ErrorCode::Unavailable,
            ErrorCode::Internal => proto::ErrorCode::Internal,
        }
    }
}

/// Reads an error code from its wire value (an `i32`, as prost keeps enum fields, so values added
/// after this build arrive intact). `ERROR_CODE_UNSPECIFIED` and unknown values are errors on
/// field `code`.
pub fn error_code_from_proto(value: i32) -> Result<ErrorCode, ConvertError> {
    let unknown = || ConvertError::UnknownErrorCode { field: "code".to_owned(), value };
    Ok(match proto::ErrorCode::try_from(value).map_err(|_| unknown())? {
        proto::ErrorCode::Unspecified => return Err(unknown()),
        proto::ErrorCode::BadRequest => ErrorCode::BadRequest,
        proto::ErrorCode::UnsupportedProtocol => ErrorCode::UnsupportedProtocol,
        proto::ErrorCode::Unauthorized => ErrorCode::Unauthorized,
        proto::ErrorCode::Forbidden => ErrorCode::Forbidden,
        proto::ErrorCode::InvalidOp => ErrorCode::InvalidOp,
        proto::ErrorCode::TooLarge => ErrorCode::TooLarge,
        proto::ErrorCode::RateLimited => ErrorCode::RateLimited,
        proto::ErrorCode::Overloaded => ErrorCode::Overloaded,
        proto::ErrorCode::Unavailable => ErrorCode::Unavailable,
        proto::ErrorCode::Internal => ErrorCode::Internal,
    })
}

impl From<&Submission> for proto::Submission {
    fn from(s: &Submission) -> Self {
        proto::Submission {
            doc: s.doc.to_string(),
            client: s.client.to_string(),
            seq: s.seq,
            base: s.base,
            op: operation_to_proto(&s.op),
            author: s.author.clone(),
            delete_document: s.delete_document,
        }
    }
}

impl From<Submission> for proto::Submission {
    fn from(s: Submission) -> Self {
        proto::Submission::from(&s)
    }
}

impl TryFrom<proto::Submission> for Submission {
    type Error = ConvertError;

    fn try_from(s: proto::Submission) -> Result<Self, ConvertError> {
        Ok(Submission {
            doc: doc_id("doc", &s.doc)?,
            client: client_id("client", &s.client)?,
            seq: s.seq,
            base: s.base,
            op: operation_from_proto(s.op)?,
            author: author("author", s.author)?,
            delete_document: s.delete_document,
        })
    }
}

impl From<&CommittedEvent> for proto::CommittedEvent {
    fn from(e: &CommittedEvent) -> Self {
        proto::CommittedEvent {
            doc: e.doc.to_string(),
            version: e.version,
            client: e.client.to_string(),
            seq: e.seq,
            op: operation_to_proto(&e.op),
            author: e.author.clone(),
        }
    }
}

impl TryFrom<proto::CommittedEvent> for CommittedEvent {
    type Error = ConvertError;

    fn try_from(e: proto::CommittedEvent) -> Result<Self, ConvertError> {
        Ok(CommittedEvent {
            doc: doc_id("doc", &e.doc)?,
            version: e.version,
            client: client_id("client", &e.client)?,
            seq: e.seq,
            op: operation_from_proto(e.op)?,
            author: author("author", e.author)?,
        })
    }
}

impl From<&Rejection> for proto::Rejection {
    fn from(r: &Rejection) -> Self {
        proto::Rejection {
            doc: r.doc.to_string(),
            client: r.client.to_string(),
            seq: r.seq,
            code: proto::ErrorCode::from(r.code).into(),
            message: r.message.clone(),
            at_version: r.at_version,
        }
    }
}

impl TryFrom<proto::Rejection> for Rejection {
    type Error = ConvertError;

    fn try_from(r: proto::Rejection) -> Result<Self, ConvertError> {
        Ok(Rejection {
            doc: doc_id("doc", &r.doc)?,
            client: client_id("client", &r.client)?,
            seq: r.seq,
            code: error_code_from_proto(r.code)?,
            message: r.message,
            at_version: r.at_version,
        })
    }
}

impl From<&SequencedRecord> for proto::SequencedRecord {
    fn from(record: &SequencedRecord) -> Self {
        let record = match record {
            SequencedRecord::Committed(e) => Record::Committed(e.into()),
            SequencedRecord::Reacknowledged { doc, client, seq, version } => {
                Record::Reacknowledged(proto::Reacknowledged {
                    doc: doc.to_string(),
                    client: client.to_string(),
                    seq: *seq,
                    version: *version,
                })
            }
            SequencedRecord::Rejected(r) => Record::Rejected(r.into()),
            SequencedRecord::Deleted(d) => Record::Deleted(proto::DocumentDeleted {
                doc: d.doc.to_string(),
                last_version: d.last_version,
                author: d.author.clone(),
            }),
        };
        proto::SequencedRecord { record: Some(record) }
    }
}

impl From<SequencedRecord> for proto::SequencedRecord {
    fn from(record: SequencedRecord) -> Self {
        proto::SequencedRecord::from(&record)
    }
}

impl TryFrom<proto::SequencedRecord> for SequencedRecord {
    type Error = ConvertError;

    /// A record without a case (possibly one added after this build) is [`ConvertError::Missing`]
    /// on field `record`; a consumer of tandem.events skips it.
    fn try_from(record: proto::SequencedRecord) -> Result<Self, ConvertError> {
        match record.record {
            None => Err(ConvertError::Missing { field: "record".to_owned() }),
            Some(Record::Committed(e)) => {
                Ok(SequencedRecord::Committed(e.try_into().map_err(|e: ConvertError| e.within("committed"))?))
            }
            Some(Record::Reacknowledged(r)) => {
                let within = |e: ConvertError| e.within("reacknowledged");
                Ok(SequencedRecord::Reacknowledged {
                    doc: doc_id("doc", &r.doc).map_err(within)?,
                    client: client_id("client", &r.client).map_err(within)?,
                    seq: r.seq,
                    version: r.version,
                })
            }
            Some(Record::Rejected(r)) => {
                Ok(SequencedRecord::Rejected(r.try_into().map_err(|e: ConvertError| e.within("rejected"))?))
            }
            Some(Record::Deleted(d)) => {
                let within = |e: ConvertError| e.within("deleted");
                Ok(SequencedRecord::Deleted(DocumentDeleted {
                    doc: doc_id("doc", &d.doc).map_err(within)?,
                    last_version: d.last_version,
                    author: author("author", d.author).map_err(within)?,
                }))
            }
        }
    }
}

/// The value of a `tandem.ops` record.
pub fn encode_submission(submission: &Submission) -> Vec<u8> {
    proto::Submission::from(submission).encode_to_vec()
}

/// Reads the value of a `tandem.ops` record back, validated.
pub fn decode_submission(bytes: &[u8]) -> Result<Submission, ConvertError> {
    let wire = proto::Submission::decode(bytes)
        .map_err(|e| ConvertError::Decode { message: "tandem.v1.Submission", reason: e.to_string() })?;
    wire.try_into()
}

/// The value of a `tandem.events` record.
pub fn encode_record(record: &SequencedRecord) -> Vec<u8> {
    proto::SequencedRecord::from(record).encode_to_vec()
}

/// Reads the value of a `tandem.events` record back, validated.
pub fn decode_record(bytes: &[u8]) -> Result<SequencedRecord, ConvertError> {
    let wire = proto::SequencedRecord::decode(bytes)
        .map_err(|e| ConvertError::Decode { message: "tandem.v1.SequencedRecord", reason: e.to_string() })?;
    wire.try_into()
}

#[cfg(test)]
mod tests;
