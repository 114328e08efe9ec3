//! The reading subcommands: get, history, diff, export, checkpoint list.

use std::time::Duration;

use serde_json::json;
use tandem_proto::proto::{DiffRequest, GetDocumentRequest, ListCheckpointsRequest, ReadHistoryRequest};

use super::Out;
use crate::args::MAX_PAGE_SIZE;
use crate::connect::{answer, Api};
use crate::error::{CliError, Exit};
use crate::output::{checkpoint_json, checkpoint_text, op_from_proto, EventLine};

pub async fn get(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: String,
    version: Option<u64>,
) -> Result<(), CliError> {
    let context = format!("get {doc}");
    let d = answer(&context, timeout, api.get_document(GetDocumentRequest { doc, version })).await?;
    if out.json {
        out.value(&json!({
            "doc": d.doc,
            "version": d.version,
            "latest_version": d.latest_version,
            "text": d.text,
        }))
    } else {
        out.raw(&d.text)
    }
}

/// The events with `from` < version <= `to` (the latest when `to` is `None`), oldest first, read a
/// page at a time until the server says the range is done; each handed to `each`.
pub async fn each_event(
    api: &mut Api,
    timeout: Duration,
    doc: &str,
    from: u64,
    to: Option<u64>,
    page_size: Option<u32>,
    mut each: impl FnMut(EventLine) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let context = format!("history {doc}");
    let mut from = from;
    loop {
        let request = ReadHistoryRequest {
            doc: doc.to_owned(),
            from_version: from,
            to_version: to.unwrap_or(0),
            page_size: page_size.unwrap_or(0),
        };
        let page = answer(&context, timeout, api.read_history(request)).await?;
        for event in page.events {
            each(EventLine::from_proto(&context, event)?)?;
        }
        match page.next_from_version {
            None => return Ok(()),
            Some(next) if next > from => from = next,
            Some(next) => {
                return Err(CliError::local(
                    Exit::Server,
                    context,
                    format!("the server asked to read from version {next} again after {from}: no progress"),
                ))
            }
        }
    }
}

pub async fn history(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: &str,
    from: u64,
    to: Option<u64>,
    page_size: Option<u32>,
) -> Result<(), CliError> {
    each_event(api, timeout, doc, from, to, page_size, |e| {
        out.line(&if out.json { e.json() } else { e.text() })
    })
    .await
}

/// Every event as a JSON line, whatever `--json` says: the export format is JSON lines.
pub async fn export(api: &mut Api, timeout: Duration, out: Out, doc: &str) -> Result<(), CliError> {
    each_event(api, timeout, doc, 0, None, Some(MAX_PAGE_SIZE), |e| out.line(&e.json())).await
}

pub async fn diff(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: String,
    from: u64,
    to: u64,
) -> Result<(), CliError> {
    let context = format!("diff {doc} {from} {to}");
    let request = DiffRequest { doc: doc.clone(), from_version: from, to_version: to };
    let diff = answer(&context, timeout, api.diff(request)).await?;
    let op = op_from_proto(&context, diff.op)?;
    if out.json {
        out.value(&json!({"doc": doc, "from_version": from, "to_version": to, "op": op}))
    } else {
        out.line(&op.to_string())
    }
}

pub async fn list_checkpoints(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: String,
) -> Result<(), CliError> {
    let context = format!("checkpoint list {doc}");
    let list =
        answer(&context, timeout, api.list_checkpoints(ListCheckpointsRequest { doc: doc.clone() })).await?;
    if out.json {
        let checkpoints: Vec<_> = list.checkpoints.iter().map(checkpoint_json).collect();
        return out.value(&json!({"doc": doc, "checkpoints": checkpoints}));
    }
    if list.checkpoints.is_empty() {
        return out.line(&format!("{doc} has no checkpoints"));
    }
    for c in &list.checkpoints {
        out.line(&checkpoint_text(c))?;
    }
    Ok(())
}
