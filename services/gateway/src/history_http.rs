//! The demo editor's history, as JSON over HTTP (a browser cannot speak gRPC):
//!
//! - `GET /v1/docs/{doc}/versions/{version}` (`latest` allowed) → `{doc, version, text, latest_version}`
//! - `GET /v1/docs/{doc}/checkpoints` → `{checkpoints: [{name, version, author, created_at_ms}]}`
//!
//! Authenticated like the WebSocket upgrade (bearer header or session cookie, with its `Origin`
//! check) and allowed with read permission on the document; answered with the same read functions
//! as the Documents API ([`crate::history`]). Errors are JSON `{code, message}` with the protocol's
//! error codes, like the API's `ApiError`. Nothing is cached (`Cache-Control: no-store`).
//!
//! A document id may contain `/`, so the id is everything between `/v1/docs/` and the last
//! `/versions/<v>` or `/checkpoints` (an id sent percent-encoded, `a%2Fb`, works as well).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tandem_auth::Access;
use tandem_protocol::DocId;
use tandem_store::StoreError;

use crate::history::{self, HistoryError};
use crate::{admission, no_store, GatewayState};

pub(crate) fn routes() -> Router<Arc<GatewayState>> {
    Router::new().route("/v1/docs/{*rest}", get(docs))
}

/// An error answer: the status, and the body `{code, message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        let code = e.code();
        let status = match code {
            "not_found" => StatusCode::NOT_FOUND,
            "bad_request" => StatusCode::BAD_REQUEST,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        HistoryError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "code": self.code, "message": self.message }));
        let mut response = no_store((self.status, body).into_response());
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tandem", error="invalid_token""#),
            );
        }
        response
    }
}

/// What a path below `/v1/docs/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A version's text; `None` is `latest`.
    Version(DocId, Option<u64>),
    Checkpoints(DocId),
}

fn parse(rest: &str) -> Result<Request, ApiError> {
    let doc = |id: &str| {
        DocId::parse(id).map_err(|e| ApiError::bad_request(format!("bad document id {id:?}: {e}")))
    };
    if let Some(id) = rest.strip_suffix("/checkpoints") {
        return Ok(Request::Checkpoints(doc(id)?));
    }
    if let Some((id, version)) = rest.rsplit_once("/versions/") {
        let version = match version {
            "latest" => None,
            v => Some(v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "bad version {v:?}: a version is a whole number from 0 (the empty text) or `latest`"
                ))
            })?),
        };
        return Ok(Request::Version(doc(id)?, version));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such resource /v1/docs/{rest}: use /v1/docs/<doc>/versions/<version|latest> or /v1/docs/<doc>/checkpoints"
        ),
    ))
}

async fn docs(
    State(state): State<Arc<GatewayState>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    match answer(&state, &rest, &headers).await {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &GatewayState,
    rest: &str,
    headers: &HeaderMap,
) -> Result<serde_json::Value, ApiError> {
    // Authentication comes first, so that a caller without a token learns nothing, not even
    // whether a path is well-formed.
    let principal = admission::authenticate(state, headers).map_err(|refusal| {
        let code = if refusal.status() == StatusCode::FORBIDDEN { "forbidden" } else { "unauthorized" };
        ApiError::new(refusal.status(), code, refusal.message())
    })?;
    let request = parse(rest)?;
    let doc = match &request {
        Request::Version(doc, _) | Request::Checkpoints(doc) => doc,
    };
    if !principal.allows(Access::Read, doc) {
        metrics::counter!("tandem_gateway_forbidden_total").increment(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("user {:?} may not read document {doc}", principal.user),
        ));
    }
    let store = state.store.as_ref();
    match request {
        Request::Version(doc, version) => {
            let version = match version {
                Some(v) => v,
                None => store.latest_version(&doc).await?,
            };
            let (text, latest) = history::text_at(store, &doc, version).await?;
            Ok(json!({ "doc": doc, "version": version, "text": text, "latest_version": latest }))
        }
        Request::Checkpoints(doc) => {
            let checkpoints: Vec<_> = store
                .list_checkpoints(&doc)
                .await?
                .into_iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "version": c.version,
                        "author": c.author,
                        "created_at_ms": c.created_at_ms,
                    })
                })
                .collect();
            Ok(json!({ "checkpoints": checkpoints }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> DocId {
        DocId::parse(id).unwrap()
    }

    #[test]
    fn paths_name_the_document_and_the_version() {
        assert_eq!(parse("d/versions/3").unwrap(), Request::Version(doc("d"), Some(3)));
        assert_eq!(parse("d/versions/latest").unwrap(), Request::Version(doc("d"), None));
        assert_eq!(parse("d/checkpoints").unwrap(), Request::Checkpoints(doc("d")));
        // Ids with slashes, even ones that look like a route, split at the last route part.
        assert_eq!(parse("a/b/versions/0").unwrap(), Request::Version(doc("a/b"), Some(0)));
        assert_eq!(parse("a/versions/1/versions/2").unwrap(), Request::Version(doc("a/versions/1"), Some(2)));
        assert_eq!(parse("a/checkpoints/checkpoints").unwrap(), Request::Checkpoints(doc("a/checkpoints")));
    }

    #[test]
    fn bad_paths_name_the_problem() {
        let bad = |rest: &str| parse(rest).unwrap_err();
        let e = bad("d/versions/-1");
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_request"));
        assert!(e.message.contains("\"-1\"") && e.message.contains("latest"), "{}", e.message);
        assert!(bad("d/versions/99999999999999999999").message.contains("99999999999999999999"));
        let e = bad("d d/versions/1");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("document id") && e.message.contains("' '"), "{}", e.message);
        let e = bad("/checkpoints");
        assert!(e.message.contains("document id must be 1 to 256 bytes"), "{}", e.message);
        let e = bad("d/history");
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "not_found"));
        assert!(e.message.contains("/versions/"), "{}", e.message);
    }
}
