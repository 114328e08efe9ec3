//! The Documents API: gRPC service `tandem.v1.Documents` (proto/tandem/v1/documents.proto,
//! docs/DOCUMENTS.md), for internal services that read, edit, follow and delete documents.
//!
//! Served on the gateway's own port, next to the WebSocket and the HTTP routes: the gRPC services
//! are routes of the same axum router, and the server speaks HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge, which is what gRPC clients send to an `http://` endpoint) on one listener. The same
//! port answers `grpc.health.v1.Health` (the gateway's readiness, as `/readyz` says it) and server
//! reflection (v1 and v1alpha), both without authentication: they reveal nothing about documents.
//!
//! One module per concept: [`auth`] (who calls, and may they), [`errors`] (statuses with an
//! `ApiError`), [`fields`] (request validation), [`reads`] and [`checkpoints`] (the event store),
//! [`edits`] (through the sequencer like a WebSocket op, answered by the document's task) and
//! [`watch`] (the document's task's live feed after a catch-up from the store).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tandem_proto::proto::documents_server::{Documents, DocumentsServer};
use tandem_proto::proto::{
    ApplyEditRequest, ApplyEditResponse, Checkpoint, CreateCheckpointRequest, DeleteDocumentRequest,
    DeleteDocumentResponse, DiffRequest, DiffResponse, GetDocumentRequest, GetDocumentResponse,
    ListCheckpointsRequest, ListCheckpointsResponse, ReadHistoryRequest, ReadHistoryResponse,
    TransformPositionRequest, TransformPositionResponse, WatchDocumentRequest,
};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::GatewayState;

mod auth;
mod checkpoints;
mod edits;
mod errors;
mod fields;
mod reads;
mod watch;

pub use auth::{AUTHOR_METADATA, SERVICE_AUTHOR};
pub use reads::{DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};

/// The full name of the service, as health checks and reflection name it.
pub const DOCUMENTS_SERVICE: &str = "tandem.v1.Documents";

/// How often the health service's answer is brought up to date with the gateway's readiness.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The Documents service over the gateway's shared state.
struct DocumentsApi {
    state: Arc<GatewayState>,
}

/// The routes of the gRPC services, for the gateway's router; and the health reporter, which
/// [`report_health`] keeps up to date.
pub(crate) async fn routes(state: &Arc<GatewayState>) -> anyhow::Result<(Router, HealthReporter)> {
    let auth = auth::ApiAuth::new(&state.config.auth, state.config.service_token.as_ref());
    // The WebSocket's message limit bounds a request (an ApplyEdit checks its size itself, to say so
    // with an ApiError); responses are as large as the document.
    let max_request = state.config.max_frame_bytes.saturating_mul(2).max(4 << 20);
    let documents = DocumentsServer::new(DocumentsApi { state: state.clone() })
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(usize::MAX);
    let documents = tonic::service::interceptor::InterceptedService::new(documents, auth);
    let health = HealthReporter::new();
    // Known from the start, as not serving until the first readiness check says otherwise.
    for service in ["", DOCUMENTS_SERVICE] {
        health.set_service_status(service, ServingStatus::NotServing).await;
    }
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        HealthService::from_health_reporter(health.clone()),
    );
    let router =
        Router::new().route_service(&path::<DocumentsServer<DocumentsApi>>(), documents).route_service(
            &path::<tonic_health::pb::health_server::HealthServer<HealthService>>(),
            health_service,
        );
    let router = reflection(router)?;
    Ok((router, health))
}

/// Routes of server reflection, v1 and v1alpha (older tools ask the latter), advertising the
/// services this port serves.
fn reflection(router: Router) -> anyhow::Result<Router> {
    use tonic_reflection::server::Builder;
    let configure = |reflection: &str| {
        Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(DOCUMENTS_SERVICE)
            .with_service_name(
                <tonic_health::pb::health_server::HealthServer<HealthService> as NamedService>::NAME,
            )
            .with_service_name(reflection)
    };
    let v1 = configure("grpc.reflection.v1.ServerReflection").build_v1()?;
    let v1alpha = configure("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?;
    Ok(router.route_service(&service_path(&v1), v1).route_service(&service_path(&v1alpha), v1alpha))
}

fn path<S: NamedService>() -> String {
    format!("/{}/{{*rest}}", S::NAME)
}

fn service_path<S: NamedService>(_: &S) -> String {
    path::<S>()
}

/// Keeps the health service's answer, for the server (`""`) and for the Documents service, equal to
/// the gateway's readiness (`/readyz`): `SERVING` when ready, `NOT_SERVING` otherwise, from the
/// first moment of a drain. Runs until the gateway stops.
pub(crate) async fn report_health(state: Arc<GatewayState>, health: HealthReporter) {
    let mut last = None;
    loop {
        let ready = state.readiness.report(state.drain.is_draining()).await.is_ready();
        if last != Some(ready) {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            for service in ["", DOCUMENTS_SERVICE] {
                health.set_service_status(service, status).await;
            }
            last = Some(ready);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

#[tonic::async_trait]
impl Documents for DocumentsApi {
    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<GetDocumentResponse>, Status> {
        let caller = auth::caller(&request)?;
        reads::get_document(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn read_history(
        &self,
        request: Request<ReadHistoryRequest>,
    ) -> Result<Response<ReadHistoryResponse>, Status> {
        let caller = auth::caller(&request)?;
        reads::read_history(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn apply_edit(
        &self,
        request: Request<ApplyEditRequest>,
    ) -> Result<Response<ApplyEditResponse>, Status> {
        let caller = auth::caller(&request)?;
        edits::apply_edit(&self.state, &caller, request.into_inner()).await.map(Response::new)
    }

    type WatchDocumentStream = watch::WatchStream;

    async fn watch_document(
        &self,
        request: Request<WatchDocumentRequest>,
    ) -> Result<Response<Self::WatchDocumentStream>, Status> {
        let caller = auth::caller(&request)?;
        watch::watch(&self.state, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn create_checkpoint(
        &self,
        request: Request<CreateCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        let caller = auth::caller(&request)?;
        checkpoints::create(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        let caller = auth::caller(&request)?;
        checkpoints::list(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let caller = auth::caller(&request)?;
        reads::diff(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn transform_position(
        &self,
        request: Request<TransformPositionRequest>,
    ) -> Result<Response<TransformPositionResponse>, Status> {
        let caller = auth::caller(&request)?;
        reads::transform_position(&*self.state.store, &caller, request.into_inner()).await.map(Response::new)
    }

    async fn delete_document(
        &self,
        request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        let caller = auth::caller(&request)?;
        edits::delete_document(&self.state, &caller, request.into_inner()).await.map(Response::new)
    }
}
