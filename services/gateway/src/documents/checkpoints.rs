//! Named versions: CreateCheckpoint and ListCheckpoints. A checkpoint is immutable: its name is
//! given once per document; creating it again for the same version returns it (a retry is safe),
//! for another version fails with `already_exists`. Deleting the document deletes its checkpoints.

use tandem_auth::Access;
use tandem_proto::proto::{self, CreateCheckpointRequest, ListCheckpointsRequest, ListCheckpointsResponse};
use tandem_store::{Checkpoint, EventStore, StoreError};
use tonic::Status;

use super::auth::ApiCaller;
use super::errors::{not_found, status, store_error, ApiCode};
use super::fields;
use super::reads::latest;

pub async fn create(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: CreateCheckpointRequest,
) -> Result<proto::Checkpoint, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Write, &doc)?;
    let name = fields::checkpoint_name(&request.name)?;
    let newest = latest(store, &doc).await?;
    let version = request.version.unwrap_or(newest);
    if version > newest {
        return Err(not_found(format!(
            "document {doc} has no version {version}: its latest version is {newest}"
        )));
    }
    let wanted =
        Checkpoint { doc: doc.clone(), name, version, author: caller.author.clone(), created_at_ms: 0 };
    match store.create_checkpoint(&wanted).await {
        Ok(stored) => Ok(fields::checkpoint(stored)),
        // The name is taken by another version, or the document was deleted (and is shorter now)
        // since its latest version was read above.
        Err(StoreError::Conflict(why)) => match latest(store, &doc).await? {
            now if version > now => Err(not_found(why)),
            _ => Err(status(ApiCode::AlreadyExists, why)),
        },
        Err(e) => Err(store_error(&doc, e)),
    }
}

pub async fn list(
    store: &dyn EventStore,
    caller: &ApiCaller,
    request: ListCheckpointsRequest,
) -> Result<ListCheckpointsResponse, Status> {
    let doc = fields::doc(&request.doc)?;
    caller.authorize(Access::Read, &doc)?;
    let checkpoints = store.list_checkpoints(&doc).await.map_err(|e| store_error(&doc, e))?;
    Ok(ListCheckpointsResponse { checkpoints: checkpoints.into_iter().map(fields::checkpoint).collect() })
}
