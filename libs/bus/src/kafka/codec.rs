//! The bytes of a Kafka record's value.
//!
//! JSON for now, through the domain types' serde derives. The public record schema will be
//! protobuf (`proto/`); when it lands, only these two functions change, so every producer and
//! consumer of the bus switches together.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record value that could not be read: written by another version, or not by Tandem at all.
#[derive(Debug, thiserror::Error)]
#[error("undecodable record: {0}")]
pub struct DecodeError(String);

/// The value of a record carrying `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("domain types serialize to JSON: string keys, no non-finite floats")
}

/// Reads a record value; never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_ot::Operation;
    use tandem_protocol::records::{SequencedRecord, Submission};
    use tandem_protocol::{ClientId, DocId};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let submission = Submission {
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq: 3,
            base: 2,
            op: Operation::new(),
        };
        assert_eq!(decode::<Submission>(&encode(&submission)).unwrap(), submission);
        let record = SequencedRecord::Reacknowledged {
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq: 1,
            version: 7,
        };
        assert_eq!(decode::<SequencedRecord>(&encode(&record)).unwrap(), record);
        assert!(decode::<Submission>(b"\xff not json").is_err());
        assert!(decode::<Submission>(b"{}").is_err());
    }
}
