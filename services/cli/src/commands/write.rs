//! The writing subcommands: apply, checkpoint create, delete.

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::json;
use tandem_proto::convert::operation_to_proto;
use tandem_proto::proto::{
    ApplyEditRequest, CreateCheckpointRequest, DeleteDocumentRequest, GetDocumentRequest,
};

use super::Out;
use crate::args::ApplyArgs;
use crate::connect::{answer, Api};
use crate::edit::{check_request_id, fresh_request_id, Edit};
use crate::error::{CliError, Exit};
use crate::output::{checkpoint_json, op_from_proto, time_text};

pub async fn apply(api: &mut Api, timeout: Duration, out: Out, args: ApplyArgs) -> Result<(), CliError> {
    let edit = Edit::of(&args)?;
    let context = format!("apply {}", args.doc);
    let request_id = match &args.request_id {
        Some(id) => {
            check_request_id(id)?;
            id.clone()
        }
        None => {
            let id = fresh_request_id();
            if !out.json {
                // Before the call: if it fails or is interrupted, the edit can be retried safely.
                eprintln!("request id {id} (to retry this edit: --request-id {id})");
            }
            id
        }
    };
    // Worth retrying only when the outcome is unknown; a rejection is remembered and answered again.
    let retry = |e: CliError| match e.exit {
        Exit::Unavailable => {
            e.with_hint(format!("retry with --request-id {request_id}: it is never applied twice"))
        }
        _ => e,
    };
    let base_len = if edit.needs_base_length() {
        let request = GetDocumentRequest { doc: args.doc.clone(), version: Some(args.base) };
        let base =
            answer(&format!("{context}: read version {}", args.base), timeout, api.get_document(request))
                .await?;
        base.text.chars().count()
    } else {
        0
    };
    let op = edit.into_op(args.base, base_len)?;
    let request = ApplyEditRequest {
        doc: args.doc.clone(),
        base_version: args.base,
        op: operation_to_proto(&op),
        request_id: request_id.clone(),
    };
    let applied = answer(&context, timeout, api.apply_edit(request)).await.map_err(retry)?;
    let committed = op_from_proto(&context, applied.op)?;
    if out.json {
        return out.value(&json!({
            "doc": args.doc,
            "version": applied.version,
            "op": committed,
            "duplicate": applied.duplicate,
            "request_id": request_id,
        }));
    }
    if applied.duplicate {
        out.line(&format!(
            "already committed as version {} (request {request_id} was applied before; not applied again)",
            applied.version
        ))
    } else {
        out.line(&format!("committed as version {}: {committed}", applied.version))
    }
}

pub async fn create_checkpoint(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: String,
    name: String,
    version: Option<u64>,
) -> Result<(), CliError> {
    let context = format!("checkpoint create {doc} {name:?}");
    let request = CreateCheckpointRequest { doc, name, version };
    let c = answer(&context, timeout, api.create_checkpoint(request)).await?;
    if out.json {
        return out.value(&checkpoint_json(&c));
    }
    let by = if c.author.is_empty() { String::new() } else { format!(" by {}", c.author) };
    out.line(&format!(
        "checkpoint {:?} names version {} of {} (created{by} at {})",
        c.name,
        c.version,
        c.doc,
        time_text(c.created_at_ms)
    ))
}

/// Asks on the terminal (stderr, stdin) whether to delete `doc`; anything but yes refuses.
pub fn confirm_delete(doc: &str) -> Result<(), CliError> {
    eprint!("Delete document {doc:?} for good, with every version, snapshot and checkpoint? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    let answer = answer.trim().to_ascii_lowercase();
    if matches!(read, Ok(n) if n > 0) && (answer == "y" || answer == "yes") {
        return Ok(());
    }
    Err(CliError::local(Exit::NotConfirmed, format!("delete {doc}"), "not confirmed; nothing was deleted")
        .with_hint("answer y, or pass --yes"))
}

pub async fn delete(api: &mut Api, timeout: Duration, out: Out, doc: String) -> Result<(), CliError> {
    let context = format!("delete {doc}");
    let deleted =
        answer(&context, timeout, api.delete_document(DeleteDocumentRequest { doc: doc.clone() })).await?;
    if out.json {
        return out.value(&json!({"doc": doc, "last_version": deleted.last_version}));
    }
    out.line(&format!("deleted {doc} (its last version was {})", deleted.last_version))
}
