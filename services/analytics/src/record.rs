//! What one record of the events topic means to analytics: an [`Edit`] to count, or a reason to
//! skip it. Pure: bytes and a timestamp in, a value out, so every case of docs/EVENTS.md's "Record
//! types" and "Compatibility" is tested without a broker.

use prost::Message;
use tandem_proto::proto::sequenced_record::Record;
use tandem_protocol::records::CommittedEvent;

/// A committed version, reduced to what the counters need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The document id (the record's key and `doc` field).
    pub doc: String,
    /// The version this change made: 1, 2, 3, … per document; the key of deduplication.
    pub version: u64,
    /// The record's `client` field: the editing session's id, scoped by its user for clients of
    /// the gateways. Not a user: the user's name is not on the topic (docs/EVENTS.md).
    pub author: String,
    /// Characters (Unicode scalar values) the op inserts.
    pub inserted: u64,
    /// Characters the op deletes.
    pub deleted: u64,
    /// The Kafka record timestamp in milliseconds since the Unix epoch: the time the record was
    /// (re)published, not the time of the commit (the topic carries none).
    pub at_ms: i64,
}

/// Why a record is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A repeated acknowledgement for one author: no change.
    Reacknowledged,
    /// A refused op: no change.
    Rejected,
    /// A case of the `record` oneof this build does not know (a newer sequencer during a rolling
    /// upgrade): skipped, never an error (docs/EVENTS.md, "Compatibility").
    Unknown,
    /// Not a `tandem.v1.SequencedRecord`, no value, or a `committed` record breaking its own
    /// rules (version 0 or beyond what a bigint holds, a bad id or op).
    Malformed,
}

impl Skip {
    /// The `kind` label of `tandem_analytics_records_total`.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Reacknowledged => "reacknowledged",
            Skip::Rejected => "rejected",
            Skip::Unknown => "unknown",
            Skip::Malformed => "malformed",
        }
    }
}

/// Reads one record's value. `timestamp_ms` is the Kafka record timestamp, `None` when the
/// record has none; `now_ms` stands in for it then.
pub fn decode(value: Option<&[u8]>, timestamp_ms: Option<i64>, now_ms: i64) -> Result<Edit, Skip> {
    let value = value.ok_or(Skip::Malformed)?;
    let wire = tandem_proto::proto::SequencedRecord::decode(value).map_err(|_| Skip::Malformed)?;
    let committed = match wire.record {
        Some(Record::Committed(committed)) => committed,
        Some(Record::Reacknowledged(_)) => return Err(Skip::Reacknowledged),
        // Not converted: a rejection with an error code this build does not know is still a
        // rejection, and skipped as one.
        Some(Record::Rejected(_)) => return Err(Skip::Rejected),
        // TODO(issue 12): purge the document's rows.
        Some(Record::Deleted(_)) | None => return Err(Skip::Unknown),
    };
    let event = CommittedEvent::try_from(committed).map_err(|_| Skip::Malformed)?;
    // Versions count from 1 and never pass i64::MAX (the event log refuses them first).
    if event.version == 0 || i64::try_from(event.version).is_err() {
        return Err(Skip::Malformed);
    }
    Ok(Edit {
        doc: event.doc.to_string(),
        version: event.version,
        author: event.client.to_string(),
        inserted: event.op.inserted_chars() as u64,
        deleted: event.op.deleted_chars() as u64,
        at_ms: timestamp_ms.filter(|t| *t >= 0).unwrap_or(now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::proto;

    fn committed(version: u64, op: Vec<proto::component::Kind>) -> Vec<u8> {
        let record = proto::SequencedRecord {
            record: Some(Record::Committed(proto::CommittedEvent {
                author: String::new(),
                doc: "notes/a".into(),
                version,
                client: "session-1".into(),
                seq: 7,
                op: op.into_iter().map(|kind| proto::Component { kind: Some(kind) }).collect(),
            })),
        };
        record.encode_to_vec()
    }

    #[test]
    fn a_committed_record_counts_characters_not_bytes() {
        use proto::component::Kind;
        // "héllo" → retain 1, insert "é🎉", delete 2, retain 2: 2 characters in, 2 out.
        let value =
            committed(4, vec![Kind::Retain(1), Kind::Insert("é🎉".into()), Kind::Delete(2), Kind::Retain(2)]);
        let edit = decode(Some(&value), Some(1_700_000_000_123), 0).unwrap();
        assert_eq!(
            edit,
            Edit {
                doc: "notes/a".into(),
                version: 4,
                author: "session-1".into(),
                inserted: 2,
                deleted: 2,
                at_ms: 1_700_000_000_123,
            }
        );
    }

    #[test]
    fn an_empty_op_is_an_edit_of_nothing_and_a_missing_timestamp_is_now() {
        let edit = decode(Some(&committed(1, vec![])), None, 42).unwrap();
        assert_eq!((edit.inserted, edit.deleted, edit.at_ms), (0, 0, 42));
    }

    #[test]
    fn reacknowledgements_rejections_and_unknown_cases_are_skipped_by_kind() {
        let reack = proto::SequencedRecord {
            record: Some(Record::Reacknowledged(proto::Reacknowledged {
                doc: "d".into(),
                client: "c".into(),
                seq: 1,
                version: 1,
            })),
        };
        assert_eq!(decode(Some(&reack.encode_to_vec()), None, 0), Err(Skip::Reacknowledged));
        // A code this build does not know: still a rejection.
        let rejected = proto::SequencedRecord {
            record: Some(Record::Rejected(proto::Rejection {
                doc: "d".into(),
                client: "c".into(),
                seq: 1,
                code: 999,
                message: "no".into(),
                at_version: 0,
            })),
        };
        assert_eq!(decode(Some(&rejected.encode_to_vec()), None, 0), Err(Skip::Rejected));
        // Field 9 of SequencedRecord, length-delimited: a oneof case added after this build.
        let unknown = [0x4a, 0x02, 0x08, 0x01];
        assert_eq!(decode(Some(&unknown), None, 0), Err(Skip::Unknown));
    }

    #[test]
    fn bytes_that_are_no_record_and_broken_committed_records_are_malformed() {
        assert_eq!(decode(None, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&[0xff, 0xff, 0xff]), None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&committed(0, vec![])), None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&committed(1 << 63, vec![])), None, 0), Err(Skip::Malformed));
    }
}
