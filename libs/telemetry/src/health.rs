//! The readiness answer every Tandem service gives: one line per component, `name: ok` or
//! `name: not ready: why`, with 200 when all are ok and 503 otherwise, so an operator reading a
//! failed probe sees which dependency is missing and why.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

/// A readiness report being built, component by component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    not_ready: usize,
    body: String,
}

impl HealthReport {
    /// Adds one component's line.
    pub fn check(&mut self, component: &str, result: Result<(), String>) {
        let _ = match result {
            Ok(()) => writeln!(self.body, "{component}: ok"),
            Err(why) => {
                self.not_ready += 1;
                writeln!(self.body, "{component}: not ready: {why}")
            }
        };
    }

    /// Whether every component is ready.
    pub fn is_ready(&self) -> bool {
        self.not_ready == 0
    }

    /// The lines, one per component.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// 200 when every component is ready, else 503; never cached, so a proxy never answers for a
/// service that changed its mind.
impl IntoResponse for HealthReport {
    fn into_response(self) -> Response {
        let status = if self.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let mut response = (status, self.body).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `GET /healthz` (liveness: the process answers) and `GET /readyz` (the last report a service's
/// readiness task published on `readiness`), to merge into its HTTP router. A probe reads the last
/// answer and never waits on a dependency.
pub fn routes(readiness: watch::Receiver<HealthReport>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<watch::Receiver<HealthReport>>) -> Response {
    readiness.borrow().clone().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_component_makes_the_report_not_ready_and_says_why() {
        let mut report = HealthReport::default();
        report.check("store", Ok(()));
        assert!(report.is_ready());
        report.check("kafka", Err("no broker answers".into()));
        assert!(!report.is_ready());
        assert_eq!(report.body(), "store: ok\nkafka: not ready: no broker answers\n");
        let response = report.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
