//! `GET /readyz`: whether this gateway can do its work now, as opposed to `/healthz`, which only
//! says the process answers.
//!
//! A gateway is ready when it is not draining for shutdown (see the `drain` module), has a record
//! stream open (else no ack or other client's op reaches its clients), the event store answers (else
//! documents cannot be opened or repaired), and the op log takes its ops. A load balancer sends new connections only to ready gateways; the answer lists
//! every component, and says for each one that is not ready why.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tandem_bus::OpSubmitter;
use tandem_store::EventStore;
use tandem_telemetry::health::HealthReport;

mod events;
mod store;
mod submitter;

pub(crate) use events::EventsHealth;
use store::{observed, StoreHealth};
use submitter::{ObservedSubmitter, SubmitterHealth};

use crate::GatewayState;

/// What `/readyz` looks at.
pub(crate) struct Readiness {
    pub events: Arc<EventsHealth>,
    store: Arc<StoreHealth>,
    /// The observed store, for probes.
    probe_store: Arc<dyn EventStore>,
    submitter: Arc<SubmitterHealth>,
}

impl Readiness {
    /// Wraps the gateway's store and submitter so that every call's outcome is seen; the gateway
    /// uses the returned ones in their place.
    pub fn observe(
        store: Arc<dyn EventStore>,
        submitter: Arc<dyn OpSubmitter>,
    ) -> (Self, Arc<dyn EventStore>, Arc<dyn OpSubmitter>) {
        let store_health = Arc::new(StoreHealth::default());
        let submitter_health = Arc::new(SubmitterHealth::default());
        let store: Arc<dyn EventStore> = Arc::new(observed(store, store_health.clone()));
        let submitter: Arc<dyn OpSubmitter> =
            Arc::new(ObservedSubmitter::new(submitter, submitter_health.clone()));
        let readiness = Self {
            events: Arc::new(EventsHealth::default()),
            store: store_health,
            probe_store: store.clone(),
            submitter: submitter_health,
        };
        (readiness, store, submitter)
    }

    /// One line per component, `name: ok` or `name: not ready: why`.
    pub(crate) async fn report(&self, draining: bool) -> HealthReport {
        let mut report = HealthReport::default();
        if draining {
            report.check("draining", Err("the gateway is shutting down".to_owned()));
        }
        report.check("events", self.events.check());
        report.check("store", self.store.check(&*self.probe_store).await);
        report.check("submitter", self.submitter.check());
        report
    }
}

/// 200 when every component is ready, else 503 (never cached).
pub(crate) async fn readyz(State(state): State<Arc<GatewayState>>) -> Response {
    state.readiness.report(state.drain.is_draining()).await.into_response()
}
