//! The import side of export/import: reading the JSON lines of an export and deriving each event's
//! request id, so a re-run of an interrupted import applies nothing twice (the rule is in
//! `tandem import --help`, [`crate::args::IMPORT_HELP`]).

use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::output::EventLine;

/// Where the chain of an import starts: names the rule, so a later rule gets other ids.
const CHAIN_SEED: &[u8] = b"tandem import v1";

/// The events of an import, checked to be consecutive versions, each with its request id.
#[derive(Debug)]
pub struct ImportChain {
    digest: [u8; 32],
    /// The version the next event must have, once the first was read.
    next_version: Option<u64>,
    /// Lines read, blank ones included (for messages).
    line: usize,
}

/// One event to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportEvent {
    pub event: EventLine,
    pub request_id: String,
    /// Its line in the input, from 1.
    pub line: usize,
}

impl Default for ImportChain {
    fn default() -> Self {
        Self { digest: Sha256::digest(CHAIN_SEED).into(), next_version: None, line: 0 }
    }
}

impl ImportChain {
    /// Reads one line of the input: `None` for a blank line, else the event and its request id.
    pub fn read(&mut self, text: &str) -> Result<Option<ImportEvent>, CliError> {
        self.line += 1;
        let line = self.line;
        if text.trim().is_empty() {
            return Ok(None);
        }
        let event: EventLine = serde_json::from_str(text).map_err(|e| {
            CliError::usage(
                format!("import, line {line}"),
                format!("{e} (expected an export line: {{\"version\": N, \"op\": [...], ...}})"),
            )
        })?;
        if event.version == 0 {
            return Err(CliError::usage(format!("import, line {line}"), "version 0 is not an event"));
        }
        if let Some(expected) = self.next_version {
            if event.version != expected {
                return Err(CliError::usage(
                    format!("import, line {line}"),
                    format!(
                        "version {} where {expected} was expected: an import is the consecutive \
                         versions of one export",
                        event.version
                    ),
                ));
            }
        }
        self.next_version = Some(event.version + 1);
        let mut hash = Sha256::new();
        hash.update(self.digest);
        hash.update(event.version.to_be_bytes());
        hash.update(event.op.to_json().to_string().as_bytes());
        self.digest = hash.finalize().into();
        let request_id = request_id(event.version, &self.digest);
        Ok(Some(ImportEvent { event, request_id, line }))
    }
}

/// `imp-<version>-<first 128 bits of the digest, hex>`: at most 4 + 20 + 1 + 32 = 57 characters.
fn request_id(version: u64, digest: &[u8; 32]) -> String {
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("imp-{version}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::check_request_id;

    const EXPORT: &str = r#"{"version":1,"author":"a","client":"c","seq":1,"committed_at_ms":5,"op":["hello"]}

{"version":2,"op":[5," world"]}
{"version":3,"op":[1,-4,"ey",6]}"#;

    fn read_all(input: &str) -> Result<Vec<ImportEvent>, CliError> {
        let mut chain = ImportChain::default();
        let mut out = Vec::new();
        for line in input.lines() {
            out.extend(chain.read(line)?);
        }
        Ok(out)
    }

    #[test]
    fn request_ids_of_a_re_run_are_the_same_and_valid() {
        let first = read_all(EXPORT).unwrap();
        let again = read_all(EXPORT).unwrap();
        assert_eq!(first, again);
        let ids: Vec<&str> = first.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(first.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(ids[0].starts_with("imp-1-") && ids[2].starts_with("imp-3-"), "{ids:?}");
        for id in &ids {
            assert_eq!(id.len(), "imp-1-".len() + 32);
            check_request_id(id).unwrap();
        }
        let longest = request_id(u64::MAX, &[0xab; 32]);
        assert!(longest.len() <= crate::edit::MAX_REQUEST_ID, "{longest}");
    }

    #[test]
    fn other_events_or_another_history_before_them_get_other_ids() {
        let base = read_all(EXPORT).unwrap();
        // The same third event after a different second one.
        let other = EXPORT.replace(r#"[5," world"]"#, r#"[5," there"]"#);
        let other = read_all(&other).unwrap();
        assert_eq!(base[0].request_id, other[0].request_id);
        assert_ne!(base[1].request_id, other[1].request_id);
        assert_ne!(base[2].request_id, other[2].request_id, "the chain carries the history");
        // Author, time and other metadata do not matter: only versions and ops are applied.
        let relabelled = EXPORT.replace(r#""author":"a""#, r#""author":"z""#);
        assert_eq!(read_all(&relabelled).unwrap()[0].request_id, base[0].request_id);
    }

    #[test]
    fn gaps_and_malformed_lines_are_named_by_line() {
        let gap = "{\"version\":1,\"op\":[\"a\"]}\n{\"version\":3,\"op\":[1,\"b\"]}";
        let e = read_all(gap).unwrap_err();
        assert_eq!(e.context, "import, line 2");
        assert!(e.message.starts_with("version 3 where 2 was expected"), "{e}");
        let e = read_all("{\"version\":1,\"op\":[\"a\"]}\nnot json").unwrap_err();
        assert_eq!(e.context, "import, line 2");
        assert!(e.message.contains("expected an export line"), "{e}");
        let e = read_all("{\"version\":0,\"op\":[]}").unwrap_err();
        assert!(e.message.contains("version 0"), "{e}");
        // An import may start after version 1 (a partial export); it must then continue from there.
        let partial = read_all("{\"version\":7,\"op\":[\"a\"]}\n{\"version\":8,\"op\":[1]}").unwrap();
        assert_eq!(partial.len(), 2);
    }
}
