//! How results are printed: a history event as a text line or as the JSON object that `export`
//! writes and `import` reads, watch's lines, checkpoints, and times as RFC 3339 in UTC.

use serde::{Deserialize, Serialize};
use tandem_ot::Operation;
use tandem_proto::convert::operation_from_proto;
use tandem_proto::proto::{self, Checkpoint, HistoryEvent};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::CliError;

/// One committed event as a JSON line: the format of `export`, `history --json` and `import`.
/// The op is the protocol's JSON form (docs/PROTOCOL.md). Reading, only `version` and `op` are
/// required; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub version: u64,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub committed_at_ms: i64,
    pub op: Operation,
}

impl EventLine {
    /// The event of a ReadHistory or WatchDocument answer; its op is checked like any wire op.
    pub fn from_proto(context: &str, event: HistoryEvent) -> Result<Self, CliError> {
        Ok(Self {
            version: event.version,
            author: event.author,
            client: event.client,
            seq: event.seq,
            committed_at_ms: event.committed_at_ms,
            op: op_from_proto(context, event.op)?,
        })
    }

    /// `12  2026-12-02T10:00:00.123Z  alice  [3,"x",-1]`
    pub fn text(&self) -> String {
        let author = if self.author.is_empty() { "-" } else { self.author.as_str() };
        format!("{}  {}  {author}  {}", self.version, time_text(self.committed_at_ms), self.op)
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("an event serialises")
    }
}

/// An op from the server, which must be a valid op (else the server is at fault).
pub fn op_from_proto(context: &str, op: Vec<proto::Component>) -> Result<Operation, CliError> {
    operation_from_proto(op).map_err(|e| {
        CliError::local(crate::error::Exit::Server, context, format!("the server sent a malformed op: {e}"))
    })
}

/// One line of `watch --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchLine {
    /// A committed version: the fields of [`EventLine`].
    Committed(EventLine),
    /// The catch-up is over; what follows is live.
    CaughtUp { version: u64 },
    /// The document was deleted; the watch ends.
    Deleted { doc: String, last_version: u64, author: String },
}

impl WatchLine {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a watch line serialises")
    }

    pub fn text(&self) -> String {
        match self {
            WatchLine::Committed(event) => event.text(),
            WatchLine::CaughtUp { version } => format!("-- caught up at version {version}; live from here"),
            WatchLine::Deleted { doc, last_version, author } => {
                let by = if author.is_empty() { String::new() } else { format!(" by {author}") };
                format!("-- {doc} was deleted{by} (its last version was {last_version})")
            }
        }
    }
}

/// A checkpoint as JSON.
pub fn checkpoint_json(c: &Checkpoint) -> serde_json::Value {
    serde_json::json!({
        "doc": c.doc,
        "name": c.name,
        "version": c.version,
        "author": c.author,
        "created_at_ms": c.created_at_ms,
    })
}

/// `7  release 1  alice  2026-12-02T10:00:00.123Z`
pub fn checkpoint_text(c: &Checkpoint) -> String {
    let author = if c.author.is_empty() { "-" } else { c.author.as_str() };
    format!("{}  {}  {author}  {}", c.version, c.name, time_text(c.created_at_ms))
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC (`-` for 0, which means unknown).
pub fn time_text(ms: i64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> EventLine {
        EventLine {
            version: 12,
            author: "alice".into(),
            client: "c~1".into(),
            seq: 3,
            committed_at_ms: 1_764_669_600_123,
            op: Operation::from_json(&json!([3, "x", -1])).unwrap(),
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(time_text(1_764_669_600_123), "2025-12-02T10:00:00.123Z");
        assert_eq!(time_text(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(time_text(0), "-");
        assert_eq!(time_text(i64::MAX), format!("{} ms", i64::MAX));
    }

    #[test]
    fn an_event_prints_as_a_line_and_as_the_export_object() {
        let e = event();
        assert_eq!(e.text(), "12  2025-12-02T10:00:00.123Z  alice  [3,\"x\",-1]");
        let value: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(
            value,
            json!({"version": 12, "author": "alice", "client": "c~1", "seq": 3,
                   "committed_at_ms": 1_764_669_600_123_i64, "op": [3, "x", -1]})
        );
        let anonymous = EventLine { author: String::new(), committed_at_ms: 0, ..e };
        assert_eq!(anonymous.text(), "12  -  -  [3,\"x\",-1]");
    }

    #[test]
    fn an_export_line_reads_back_and_needs_only_version_and_op() {
        let e = event();
        assert_eq!(serde_json::from_str::<EventLine>(&e.json()).unwrap(), e);
        let minimal: EventLine =
            serde_json::from_str(r#"{"version": 1, "op": ["héllo"], "extra": true}"#).unwrap();
        assert_eq!((minimal.version, minimal.op.target_len(), minimal.seq), (1, 5, 0));
        assert!(serde_json::from_str::<EventLine>(r#"{"version": 1}"#).is_err());
        assert!(serde_json::from_str::<EventLine>(r#"{"version": 1, "op": [1.5]}"#).is_err());
    }

    #[test]
    fn watch_lines_are_tagged_by_type() {
        let committed = WatchLine::Committed(event());
        let value: serde_json::Value = serde_json::from_str(&committed.json()).unwrap();
        assert_eq!((value["type"].as_str(), value["version"].as_u64()), (Some("committed"), Some(12)));
        assert_eq!(WatchLine::CaughtUp { version: 4 }.json(), r#"{"type":"caught_up","version":4}"#);
        let deleted = WatchLine::Deleted { doc: "d".into(), last_version: 9, author: "bob".into() };
        assert_eq!(deleted.json(), r#"{"type":"deleted","doc":"d","last_version":9,"author":"bob"}"#);
        assert_eq!(deleted.text(), "-- d was deleted by bob (its last version was 9)");
    }

    #[test]
    fn a_malformed_op_from_the_server_is_the_server_s_fault() {
        let bad = vec![proto::Component { kind: None }];
        let e = op_from_proto("history d", bad).unwrap_err();
        assert_eq!(e.exit, crate::error::Exit::Server);
        assert!(e.message.contains("op[0].kind"), "{e}");
    }
}
