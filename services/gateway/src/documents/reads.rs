//! The reads of the Documents API: a version's text, a page of history, the op between two
//! versions, a position moved through versions. All straight from the event store, through the
//! read functions the demo's history routes use too (`crate::history`); the document tasks are not
//! involved.

use tandem_auth::Access;
use tandem_proto::convert::operation_to_proto;
use tandem_proto::proto::{
    DiffRequest, DiffResponse, GetDocumentRequest, GetDocumentResponse, ReadHistoryRequest,
    ReadHistoryResponse, TransformPositionRequest, TransformPositionResponse,
};
use tandem_protocol::DocId;
use tandem_store::EventStore;
use tonic::Status;

use super::auth::ApiCaller;
use super::errors::{bad_request, not_found, store_error, unavailable};
use super::fields;
use crate::history;

/// Events in a ReadHistory page when the caller asks for none in particular.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;
/// Most events in one ReadHistory page; a larger `page_size` is lowered to it.
pub const MAX_HISTORY_PAGE: u32 = 1_000;

pub async fn get_document(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: GetDocumentRequest,
) -> Result<GetDocumentResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    let version = match request.version {
        Some(version) => version,
        None => latest(store, &doc).await?,
    };
    let (text, latest_version) = history::text_at(store, &doc, version).await?;
    Ok(GetDocumentResponse { doc: doc.to_string(), version, text, latest_version })
}

pub async fn read_history(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: ReadHistoryRequest,
) -> Result<ReadHistoryResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    let latest = latest(store, &doc).await?;
    let from = request.from_version;
    let to = match request.to_version {
        0 => latest,
        to if to > latest => {
            return Err(not_found(format!(
                "to_version {to} is after the latest version of document {doc}, {latest}"
            )))
        }
        to => to,
    };
    if from > latest {
        return Err(not_found(format!(
            "from_version {from} is after the latest version of document {doc}, {latest}"
        )));
    }
    if from > to {
        return Err(bad_request(format!("from_version {from} is after to_version {to}")));
    }
    let page = match request.page_size {
        0 => DEFAULT_HISTORY_PAGE,
        asked => asked.min(MAX_HISTORY_PAGE),
    };
    let entries =
        store.read_history(&doc, from, to, page as usize).await.map_err(|e| store_error(&doc, e))?;
    let mut events = Vec::with_capacity(entries.len());
    for (expected, entry) in (from + 1..).zip(&entries) {
        if entry.event.version != expected {
            return Err(gone(&doc, expected));
        }
        events.push(fields::history_event(&entry.event, entry.committed_at_ms));
    }
    let last = from + events.len() as u64;
    if events.is_empty() && from < to {
        return Err(gone(&doc, from + 1));
    }
    Ok(ReadHistoryResponse { events, next_from_version: (last < to).then_some(last) })
}

pub async fn diff(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: DiffRequest,
) -> Result<DiffResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    let op = history::diff(store, &doc, request.from_version, request.to_version).await?;
    Ok(DiffResponse { op: operation_to_proto(&op) })
}

pub async fn transform_position(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: TransformPositionRequest,
) -> Result<TransformPositionResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    let position = history::transform_position(
        store,
        &doc,
        request.position,
        request.from_version,
        request.to_version,
        request.stick_after,
    )
    .await?;
    Ok(TransformPositionResponse { position })
}

pub async fn latest(store: &dyn EventStore, doc: &DocId) -> Result<u64, Status> {
    store.latest_version(doc).await.map_err(|e| store_error(doc, e))
}

/// A version the store reported as there is missing: the document was deleted while it was read.
fn gone(doc: &DocId, version: u64) -> Status {
    unavailable(format!(
        "version {version} of document {doc} disappeared while it was read (deleted meanwhile?); retry"
    ))
}
