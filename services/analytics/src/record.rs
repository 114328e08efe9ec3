//! What one record of the events topic means to analytics: an [`Edit`] to count, a [`Tombstone`]
//! to purge a document by, or a reason to skip it. Pure: bytes, a position and a timestamp in, a
//! value out, so every case of docs/EVENTS.md's "Record types" and "Compatibility" is tested
//! without a broker.

use prost::Message;
use tandem_proto::proto::sequenced_record::Record as WireRecord;
use tandem_protocol::records::{CommittedEvent, SequencedRecord};

/// Where a record is on the topic. All records of a document are in one partition, so among them
/// the offset is the topic order; it is what tells a record read again from a record published
/// again (a copy has an offset of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// A record analytics acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A committed version to count.
    Edit(Edit),
    /// A deleted document: purge its rows.
    Tombstone(Tombstone),
}

impl Record {
    /// The document the record is about.
    pub fn doc(&self) -> &str {
        match self {
            Record::Edit(edit) => &edit.doc,
            Record::Tombstone(tombstone) => &tombstone.doc,
        }
    }

    /// Where the record is on the topic.
    pub fn position(&self) -> Position {
        match self {
            Record::Edit(edit) => edit.position,
            Record::Tombstone(tombstone) => tombstone.position,
        }
    }

    /// The `kind` label of `tandem_analytics_records_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Record::Edit(_) => "committed",
            Record::Tombstone(_) => "deleted",
        }
    }
}

/// A committed version, reduced to what the counters need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The document id (the record's key and `doc` field).
    pub doc: String,
    /// The version this change made: 1, 2, 3, … per document history; the key of deduplication.
    pub version: u64,
    /// The record's `client` field: the editing session's id, scoped by its user for clients of
    /// the gateways. Not a user: that is [`Edit::user`]. (The per-session tables call it `author`,
    /// a name they had before the records carried their user.)
    pub author: String,
    /// The record's `author` field: the authenticated user who submitted the op; "" for events
    /// committed before authors were recorded.
    pub user: String,
    /// Characters (Unicode scalar values) the op inserts.
    pub inserted: u64,
    /// Characters the op deletes.
    pub deleted: u64,
    /// The Kafka record timestamp in milliseconds since the Unix epoch: the time the record was
    /// (re)published, not the time of the commit (the topic carries none).
    pub at_ms: i64,
    pub position: Position,
}

/// A `deleted` record: the document's history is gone from the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub doc: String,
    /// The last version of the history it ends (0 if it had none). The next history of the same
    /// id starts again at version 1.
    pub last_version: u64,
    /// The user who deleted it.
    pub author: String,
    /// The Kafka record timestamp (ms since the epoch), as for [`Edit::at_ms`].
    pub at_ms: i64,
    pub position: Position,
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
    /// Not a `tandem.v1.SequencedRecord`, no value, or a `committed` or `deleted` record breaking
    /// its own rules (a version 0 or beyond what a bigint holds, a bad id or op).
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

/// Reads the value of the record at `position`. `timestamp_ms` is the Kafka record timestamp,
/// `None` when the record has none; `now_ms` stands in for it then.
pub fn decode(
    value: Option<&[u8]>,
    position: Position,
    timestamp_ms: Option<i64>,
    now_ms: i64,
) -> Result<Record, Skip> {
    let value = value.ok_or(Skip::Malformed)?;
    let wire = tandem_proto::proto::SequencedRecord::decode(value).map_err(|_| Skip::Malformed)?;
    let at_ms = timestamp_ms.filter(|t| *t >= 0).unwrap_or(now_ms);
    let committed = match wire.record {
        Some(WireRecord::Committed(committed)) => committed,
        Some(WireRecord::Reacknowledged(_)) => return Err(Skip::Reacknowledged),
        // Not converted: a rejection with an error code this build does not know is still a
        // rejection, and skipped as one.
        Some(WireRecord::Rejected(_)) => return Err(Skip::Rejected),
        Some(deleted @ WireRecord::Deleted(_)) => {
            let wire = tandem_proto::proto::SequencedRecord { record: Some(deleted) };
            let Ok(SequencedRecord::Deleted(deleted)) = SequencedRecord::try_from(wire) else {
                return Err(Skip::Malformed);
            };
            // The last version is compared with counted versions, which are bigints.
            if i64::try_from(deleted.last_version).is_err() {
                return Err(Skip::Malformed);
            }
            return Ok(Record::Tombstone(Tombstone {
                doc: deleted.doc.to_string(),
                last_version: deleted.last_version,
                author: deleted.author,
                at_ms,
                position,
            }));
        }
        None => return Err(Skip::Unknown),
    };
    let event = CommittedEvent::try_from(committed).map_err(|_| Skip::Malformed)?;
    // Versions count from 1 and never pass i64::MAX (the event log refuses them first).
    if event.version == 0 || i64::try_from(event.version).is_err() {
        return Err(Skip::Malformed);
    }
    Ok(Record::Edit(Edit {
        doc: event.doc.to_string(),
        version: event.version,
        author: event.client.to_string(),
        user: event.author,
        inserted: event.op.inserted_chars() as u64,
        deleted: event.op.deleted_chars() as u64,
        at_ms,
        position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::proto;

    const AT: Position = Position { partition: 3, offset: 17 };

    fn committed(version: u64, author: &str, op: Vec<proto::component::Kind>) -> Vec<u8> {
        let record = proto::SequencedRecord {
            record: Some(WireRecord::Committed(proto::CommittedEvent {
                author: author.into(),
                doc: "notes/a".into(),
                version,
                client: "session-1".into(),
                seq: 7,
                op: op.into_iter().map(|kind| proto::Component { kind: Some(kind) }).collect(),
            })),
        };
        record.encode_to_vec()
    }

    fn deleted(doc: &str, last_version: u64, author: &str) -> Vec<u8> {
        let record = proto::SequencedRecord {
            record: Some(WireRecord::Deleted(proto::DocumentDeleted {
                doc: doc.into(),
                last_version,
                author: author.into(),
            })),
        };
        record.encode_to_vec()
    }

    #[test]
    fn a_committed_record_counts_characters_not_bytes_and_names_session_and_user() {
        use proto::component::Kind;
        // "héllo" → retain 1, insert "é🎉", delete 2, retain 2: 2 characters in, 2 out.
        let value = committed(
            4,
            "ann",
            vec![Kind::Retain(1), Kind::Insert("é🎉".into()), Kind::Delete(2), Kind::Retain(2)],
        );
        let record = decode(Some(&value), AT, Some(1_700_000_000_123), 0).unwrap();
        assert_eq!(
            record,
            Record::Edit(Edit {
                doc: "notes/a".into(),
                version: 4,
                author: "session-1".into(),
                user: "ann".into(),
                inserted: 2,
                deleted: 2,
                at_ms: 1_700_000_000_123,
                position: AT,
            })
        );
        assert_eq!((record.doc(), record.label(), record.position()), ("notes/a", "committed", AT));
    }

    #[test]
    fn an_empty_op_is_an_edit_of_nothing_a_missing_timestamp_is_now_and_an_old_event_has_no_user() {
        let Ok(Record::Edit(edit)) = decode(Some(&committed(1, "", vec![])), AT, None, 42) else {
            panic!("not an edit")
        };
        assert_eq!((edit.inserted, edit.deleted, edit.at_ms, edit.user.as_str()), (0, 0, 42, ""));
    }

    #[test]
    fn a_deleted_record_is_a_tombstone_with_its_last_version_and_author() {
        let record = decode(Some(&deleted("notes/a", 12, "root")), AT, Some(5), 0).unwrap();
        assert_eq!(
            record,
            Record::Tombstone(Tombstone {
                doc: "notes/a".into(),
                last_version: 12,
                author: "root".into(),
                at_ms: 5,
                position: AT,
            })
        );
        assert_eq!(record.label(), "deleted");
        // A document deleted before it had a version.
        let Ok(Record::Tombstone(empty)) = decode(Some(&deleted("d", 0, "")), AT, None, 9) else {
            panic!("not a tombstone")
        };
        assert_eq!((empty.last_version, empty.at_ms), (0, 9));
    }

    #[test]
    fn broken_tombstones_are_malformed() {
        assert_eq!(decode(Some(&deleted("no spaces", 1, "u")), AT, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&deleted("", 1, "u")), AT, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&deleted("d", 1 << 63, "u")), AT, None, 0), Err(Skip::Malformed));
        let too_long = "u".repeat(tandem_proto::convert::MAX_AUTHOR_BYTES + 1);
        assert_eq!(decode(Some(&deleted("d", 1, &too_long)), AT, None, 0), Err(Skip::Malformed));
    }

    #[test]
    fn reacknowledgements_rejections_and_unknown_cases_are_skipped_by_kind() {
        let reack = proto::SequencedRecord {
            record: Some(WireRecord::Reacknowledged(proto::Reacknowledged {
                doc: "d".into(),
                client: "c".into(),
                seq: 1,
                version: 1,
            })),
        };
        assert_eq!(decode(Some(&reack.encode_to_vec()), AT, None, 0), Err(Skip::Reacknowledged));
        // A code this build does not know: still a rejection.
        let rejected = proto::SequencedRecord {
            record: Some(WireRecord::Rejected(proto::Rejection {
                doc: "d".into(),
                client: "c".into(),
                seq: 1,
                code: 999,
                message: "no".into(),
                at_version: 0,
            })),
        };
        assert_eq!(decode(Some(&rejected.encode_to_vec()), AT, None, 0), Err(Skip::Rejected));
        // Field 9 of SequencedRecord, length-delimited: a oneof case added after this build.
        let unknown = [0x4a, 0x02, 0x08, 0x01];
        assert_eq!(decode(Some(&unknown), AT, None, 0), Err(Skip::Unknown));
    }

    #[test]
    fn bytes_that_are_no_record_and_broken_committed_records_are_malformed() {
        assert_eq!(decode(None, AT, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&[0xff, 0xff, 0xff]), AT, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&committed(0, "", vec![])), AT, None, 0), Err(Skip::Malformed));
        assert_eq!(decode(Some(&committed(1 << 63, "", vec![])), AT, None, 0), Err(Skip::Malformed));
    }
}
