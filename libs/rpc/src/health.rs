//! The standard gRPC health service (`grpc.health.v1.Health`) on the sequencer's port, so that a
//! Kubernetes `grpc` probe, a load balancer or `grpc-health-probe` can ask the ingress itself.
//!
//! The sequencer reports the same answer as its HTTP `/readyz`, for the whole server (`""`) and for
//! the ingress service by name; [`serve`](crate::serve) answers `NOT_SERVING` from the moment it is
//! told to shut down.

use tonic_health::pb::health_server::HealthServer;
pub use tonic_health::server::HealthReporter;
use tonic_health::server::HealthService;
pub use tonic_health::ServingStatus;

/// The ingress's full gRPC service name, as health checks name it.
pub const SEQUENCER_SERVICE: &str = "tandem.v1.Sequencer";

/// A reporter whose every service starts `NOT_SERVING` until the process says it is ready.
pub async fn reporter() -> HealthReporter {
    let reporter = HealthReporter::new();
    set_serving(&reporter, false).await;
    reporter
}

/// Reports the server and the ingress as serving or not.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in ["", SEQUENCER_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

pub(crate) fn service(reporter: &HealthReporter) -> HealthServer<HealthService> {
    HealthServer::new(HealthService::from_health_reporter(reporter.clone()))
}
