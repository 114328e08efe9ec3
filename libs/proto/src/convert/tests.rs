use prost::Message;
use tandem_ot::{Component, Operation, MAX_COUNT};
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use super::*;
use crate::proto;
use crate::proto::component::Kind;

fn doc() -> DocId {
    DocId::parse("team/notes.md").expect("valid doc id")
}

fn client() -> ClientId {
    ClientId::parse("c-1").expect("valid client id")
}

fn emoji_op() -> Operation {
    let mut op = Operation::new();
    op.retain(3).insert("héllo 😀👩‍👩‍👧 世界").delete(2).retain(1);
    op
}

fn submission() -> Submission {
    Submission {
        author: "ana ✍".to_owned(),
        delete_document: false,
        doc: doc(),
        client: client(),
        seq: 7,
        base: 41,
        op: emoji_op(),
    }
}

fn wire_submission() -> proto::Submission {
    proto::Submission::from(submission())
}

fn all_records() -> Vec<SequencedRecord> {
    vec![
        SequencedRecord::Committed(CommittedEvent {
            author: "ana ✍".to_owned(),
            doc: doc(),
            version: 42,
            client: client(),
            seq: 7,
            op: emoji_op(),
        }),
        SequencedRecord::Reacknowledged { doc: doc(), client: client(), seq: 7, version: 42 },
        SequencedRecord::Rejected(Rejection {
            doc: doc(),
            client: client(),
            seq: 8,
            code: ErrorCode::InvalidOp,
            message: "op length 9 does not match document length 12 ✗".to_owned(),
            at_version: 42,
        }),
        SequencedRecord::Deleted(DocumentDeleted { doc: doc(), last_version: 42, author: "ana".to_owned() }),
    ]
}

#[test]
fn a_delete_submission_round_trips() {
    let delete = Submission { delete_document: true, op: Operation::new(), ..submission() };
    assert_eq!(Submission::try_from(proto::Submission::from(&delete)), Ok(delete));
}

#[test]
fn an_author_longer_than_any_user_id_names_the_field_and_the_limit() {
    // The longest user id a token may carry (256 characters of 4 UTF-8 bytes) passes.
    let longest = "😀".repeat(256);
    let ok = proto::Submission { author: longest.clone(), ..wire_submission() };
    assert_eq!(Submission::try_from(ok).map(|s| s.author), Ok(longest));
    let too_long = proto::Submission { author: "a".repeat(MAX_AUTHOR_BYTES + 1), ..wire_submission() };
    let err = Submission::try_from(too_long).unwrap_err();
    assert_eq!(err.field(), Some("author"));
    assert!(err.to_string().contains("1025 bytes is over the maximum of 1024"), "{err}");
    let deleted = proto::SequencedRecord {
        record: Some(Record::Deleted(proto::DocumentDeleted {
            doc: doc().to_string(),
            last_version: 1,
            author: "a".repeat(MAX_AUTHOR_BYTES + 1),
        })),
    };
    assert_eq!(SequencedRecord::try_from(deleted).unwrap_err().field(), Some("deleted.author"));
}

#[test]
fn submission_round_trip_keeps_emoji() {
    let bytes = encode_submission(&submission());
    assert_eq!(decode_submission(&bytes), Ok(submission()));
    let wire = proto::Submission::decode(bytes.as_slice()).expect("valid protobuf");
    assert_eq!(wire.op[1].kind, Some(Kind::Insert("héllo 😀👩‍👩‍👧 世界".to_owned())));
}

#[test]
fn every_record_kind_round_trips() {
    for record in all_records() {
        assert_eq!(decode_record(&encode_record(&record)), Ok(record.clone()), "{record:?}");
    }
}

#[test]
fn every_error_code_round_trips() {
    use ErrorCode::*;
    for code in [
        BadRequest,
        UnsupportedProtocol,
        Unauthorized,
        Forbidden,
        InvalidOp,
        TooLarge,
        RateLimited,
        Overloaded,
        Unavailable,
        Internal,
    ] {
        assert_eq!(error_code_from_proto(proto::ErrorCode::from(code) as i32), Ok(code));
    }
    assert_eq!(
        error_code_from_proto(0),
        Err(ConvertError::UnknownErrorCode { field: "code".to_owned(), value: 0 })
    );
    assert!(error_code_from_proto(99).is_err());
}

#[test]
fn the_empty_operation_round_trips() {
    let empty = Submission { op: Operation::new(), ..submission() };
    assert_eq!(decode_submission(&encode_submission(&empty)), Ok(empty));
}

#[test]
fn wire_operations_are_normalised() {
    let component = |kind| proto::Component { kind: Some(kind) };
    let op = operation_from_proto(vec![
        component(Kind::Retain(2)),
        component(Kind::Retain(0)),
        component(Kind::Retain(1)),
        component(Kind::Delete(1)),
        component(Kind::Insert("a".into())),
        component(Kind::Insert(String::new())),
    ])
    .expect("valid op");
    assert_eq!(op.components(), &[Component::Retain(3), Component::Insert("a".into()), Component::Delete(1)]);
}

#[test]
fn bad_ids_name_the_field() {
    let err = Submission::try_from(proto::Submission { doc: "a b".into(), ..wire_submission() }).unwrap_err();
    assert_eq!(err.field(), Some("doc"));
    assert!(err.to_string().starts_with("doc: document id"), "{err}");

    let err =
        Submission::try_from(proto::Submission { client: String::new(), ..wire_submission() }).unwrap_err();
    assert_eq!(err.field(), Some("client"));

    let mut record = proto::SequencedRecord::from(&all_records()[1]);
    if let Some(proto::sequenced_record::Record::Reacknowledged(r)) = &mut record.record {
        r.client = "a/b".into();
    }
    let err = SequencedRecord::try_from(record).unwrap_err();
    assert_eq!(err.field(), Some("reacknowledged.client"));
}

#[test]
fn unknown_error_code_names_the_field() {
    let mut record = proto::SequencedRecord::from(&all_records()[2]);
    if let Some(proto::sequenced_record::Record::Rejected(r)) = &mut record.record {
        r.code = 1234;
    }
    let err = decode_record(&record.encode_to_vec()).unwrap_err();
    assert_eq!(err, ConvertError::UnknownErrorCode { field: "rejected.code".to_owned(), value: 1234 });
}

#[test]
fn counts_over_the_limit_are_refused() {
    let mut wire = wire_submission();
    wire.op.push(proto::Component { kind: Some(Kind::Delete(MAX_COUNT + 1)) });
    let err = Submission::try_from(wire).unwrap_err();
    assert_eq!(
        err,
        ConvertError::CountOutOfRange {
            field: "op[4].delete".to_owned(),
            value: MAX_COUNT + 1,
            max: MAX_COUNT
        }
    );

    let wire = proto::Submission {
        op: vec![proto::Component { kind: Some(Kind::Retain(MAX_COUNT)) }; 2],
        ..wire_submission()
    };
    assert_eq!(Submission::try_from(wire).unwrap_err().field(), Some("op"));
}

#[test]
fn missing_oneofs_are_refused() {
    let mut wire = wire_submission();
    wire.op.insert(1, proto::Component { kind: None });
    assert_eq!(
        Submission::try_from(wire).unwrap_err(),
        ConvertError::Missing { field: "op[1].kind".to_owned() }
    );
    assert_eq!(decode_record(&[]), Err(ConvertError::Missing { field: "record".to_owned() }));
}

#[test]
fn garbage_bytes_are_a_decode_error() {
    let err = decode_submission(&[0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(err, ConvertError::Decode { message: "tandem.v1.Submission", .. }), "{err:?}");
    assert_eq!(err.field(), None);
}

#[test]
fn within_prefixes_the_path() {
    let err = ConvertError::Missing { field: "op[0].kind".to_owned() }.within("submissions[2]");
    assert_eq!(err.to_string(), "submissions[2].op[0].kind: missing");
}
