//! `import`: the events of an export applied in order, each on base version = its version - 1, with
//! request ids derived from the input ([`crate::transfer`]), so a re-run of an interrupted import
//! skips what was committed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tandem_proto::convert::operation_to_proto;
use tandem_proto::proto::{ApplyEditRequest, GetDocumentRequest, ReadHistoryRequest};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::Out;
use crate::connect::{answer, Api};
use crate::error::{CliError, Exit};
use crate::output::op_from_proto;
use crate::transfer::{ImportChain, ImportEvent};

/// Events between two progress lines (text output only).
const PROGRESS_EVERY: u64 = 10_000;

pub async fn import(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: &str,
    file: Option<PathBuf>,
) -> Result<(), CliError> {
    let mut input = open(file).await?;
    let context = format!("import {doc}");
    let mut chain = ImportChain::default();
    let (mut applied, mut duplicates, mut version) = (0u64, 0u64, None);
    let mut line = String::new();
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .await
            .map_err(|e| CliError::usage(format!("{context}: read the input"), e.to_string()))?;
        if n == 0 {
            break;
        }
        let Some(item) = chain.read(line.trim_end_matches(['\n', '\r']))? else { continue };
        if version.is_none() {
            check_start(api, timeout, out, doc, &item).await?;
        }
        let request = ApplyEditRequest {
            doc: doc.to_owned(),
            base_version: item.event.version - 1,
            op: operation_to_proto(&item.event.op),
            request_id: item.request_id.clone(),
        };
        let line_context = format!("{context}, line {} (version {})", item.line, item.event.version);
        let done =
            answer(&line_context, timeout, api.apply_edit(request)).await.map_err(|e| match e.exit {
                Exit::Unavailable | Exit::Exhausted => {
                    e.with_hint("run the same import again later: what it committed is not applied twice")
                }
                _ => e,
            })?;
        if done.version != item.event.version {
            return Err(CliError::local(
                Exit::ImportMismatch,
                line_context,
                format!(
                    "committed as version {}, not {}: {doc} was edited during the import (or an earlier \
                     run was made with another user's token), so its text no longer follows the export",
                    done.version, item.event.version
                ),
            ));
        }
        if done.duplicate {
            duplicates += 1;
        } else {
            applied += 1;
        }
        version = Some(done.version);
        if !out.json && (applied + duplicates) % PROGRESS_EVERY == 0 {
            eprintln!("{context}: {} events, at version {}", applied + duplicates, done.version);
        }
    }
    let events = applied + duplicates;
    if out.json {
        return out.value(&json!({
            "doc": doc,
            "events": events,
            "applied": applied,
            "duplicates": duplicates,
            "version": version,
        }));
    }
    match version {
        None => out.line(&format!("no events in the input; {doc} is unchanged")),
        Some(v) => out.line(&format!(
            "imported {events} events into {doc}: {applied} applied, {duplicates} already there \
             (from an earlier run); {doc} is at version {v}"
        )),
    }
}

async fn open(file: Option<PathBuf>) -> Result<Box<dyn AsyncBufRead + Unpin>, CliError> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| CliError::usage(format!("import: open {}", path.display()), e.to_string()))?;
            Ok(Box::new(BufReader::new(f)))
        }
        _ => Ok(Box::new(BufReader::new(tokio::io::stdin()))),
    }
}

/// Before the first event: the document must be at the version before it (a fresh document for a
/// whole export), or already hold it (a re-run), else the import would not reproduce the export.
async fn check_start(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: &str,
    first: &ImportEvent,
) -> Result<(), CliError> {
    let context = format!("import {doc}");
    let request = GetDocumentRequest { doc: doc.to_owned(), version: None };
    let latest = answer(&context, timeout, api.get_document(request)).await?.latest_version;
    let start = first.event.version;
    if latest + 1 < start {
        return Err(CliError::local(
            Exit::ImportMismatch,
            context,
            format!(
                "{doc} is at version {latest}; the import's first event is version {start}, which applies \
                 to version {}",
                start - 1
            ),
        ));
    }
    if latest < start {
        return Ok(());
    }
    let request =
        ReadHistoryRequest { doc: doc.to_owned(), from_version: start - 1, to_version: start, page_size: 1 };
    let page = answer(&context, timeout, api.read_history(request)).await?;
    let there = match page.events.into_iter().next() {
        Some(event) => Some(op_from_proto(&context, event.op)?),
        None => None,
    };
    if there.as_ref() != Some(&first.event.op) {
        return Err(CliError::local(
            Exit::ImportMismatch,
            context,
            format!(
                "{doc} already has a version {start} that is not the import's first event (it is at \
                 version {latest})"
            ),
        )
        .with_hint("import into a new document"));
    }
    if !out.json {
        eprintln!(
            "import {doc}: it already holds version {start} of this import; resuming (at version {latest})"
        );
    }
    Ok(())
}
