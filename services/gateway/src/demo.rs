//! The demo editor: a static page and the JavaScript client it imports, compiled into the binary so
//! the single-process mode needs no files beside it.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::{no_store, GatewayState};

const INDEX_HTML: &str = include_str!("../../../libs/client-js/demo/index.html");
const CLIENT_JS: &str = include_str!("../../../libs/client-js/tandem-client.js");
const OT_JS: &str = include_str!("../../../libs/client-js/ot.js");
const OFFLINE_JS: &str = include_str!("../../../libs/client-js/offline.js");
const PRESENCE_JS: &str = include_str!("../../../libs/client-js/presence.js");
const HISTORY_JS: &str = include_str!("../../../libs/client-js/demo/history.js");
const PRESENCE_VIEW_JS: &str = include_str!("../../../libs/client-js/demo/presence-view.js");
// The service worker that lets the page load offline; served at the root so its scope is the whole page.
const SERVICE_WORKER_JS: &str = include_str!("../../../libs/client-js/demo/sw.js");

pub(crate) fn routes() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/tandem-client.js", get(|| async { asset("text/javascript; charset=utf-8", CLIENT_JS) }))
        .route("/ot.js", get(|| async { asset("text/javascript; charset=utf-8", OT_JS) }))
        .route("/offline.js", get(|| async { asset("text/javascript; charset=utf-8", OFFLINE_JS) }))
        .route("/presence.js", get(|| async { asset("text/javascript; charset=utf-8", PRESENCE_JS) }))
        .route("/history.js", get(|| async { asset("text/javascript; charset=utf-8", HISTORY_JS) }))
        .route(
            "/presence-view.js",
            get(|| async { asset("text/javascript; charset=utf-8", PRESENCE_VIEW_JS) }),
        )
        .route("/sw.js", get(|| async { asset("text/javascript; charset=utf-8", SERVICE_WORKER_JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // no-store as well: the page and client must match the server's protocol after an upgrade.
    no_store(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
