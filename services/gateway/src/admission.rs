//! Who may open a WebSocket: the token on the upgrade request (header, subprotocol or cookie), the
//! `Origin` check that protects cookie sessions from cross-site WebSocket hijacking, and the session
//! cookie endpoint.
//!
//! Nothing here ever logs a token or puts one in a URL: refusals say what was wrong, never with what.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tandem_auth::{AuthError, Principal, Verifier};
use tracing::info;

use crate::GatewayState;

/// The cookie that carries a browser's token (set by `POST /v1/session`).
pub const SESSION_COOKIE: &str = "tandem_token";
/// The subprotocol of PROTOCOL.md; selected on every upgrade that offers it.
pub const SUBPROTOCOL: &str = "tandem.v1";
/// A subprotocol `tandem.bearer.<token>` carries the token for clients that cannot set headers.
const BEARER_SUBPROTOCOL: &str = "tandem.bearer.";

/// How a server decides who a caller is.
#[derive(Debug, Clone, Default)]
pub enum Authentication {
    /// Everyone is `anonymous` and may do everything (development only; the server says so at start).
    #[default]
    Disabled,
    /// A JWT is required on the upgrade.
    Jwt(Arc<Verifier>),
}

/// Where the token of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Subprotocol,
    Cookie,
}

/// An HTTP refusal of the upgrade, with a message naming the problem.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn unauthorized(error: impl ToString) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: error.to_string() }
    }

    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::counter!("tandem_gateway_upgrades_refused_total", "status" => self.status.as_u16().to_string())
            .increment(1);
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tandem", error="invalid_token""#),
            );
        }
        response
    }
}

/// Decides who the caller of an upgrade request is, or why it may not connect.
pub(crate) fn authenticate(state: &GatewayState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    let Authentication::Jwt(verifier) = &state.config.auth else {
        return Ok(Principal::anonymous());
    };
    let (token, source) = find_token(headers)?.ok_or_else(|| Refusal::unauthorized(AuthError::Missing))?;
    if source == TokenSource::Cookie {
        check_origin(headers, &state.config.allowed_origins)?;
    }
    verifier.verify(&token).map_err(|e| {
        metrics::counter!("tandem_gateway_auth_failures_total").increment(1);
        info!(reason = %e, source = ?source, "upgrade refused: token not accepted");
        Refusal::unauthorized(e)
    })
}

/// The token of a request: `Authorization: Bearer`, else the `tandem.bearer.` subprotocol, else the
/// session cookie.
fn find_token(headers: &HeaderMap) -> Result<Option<(String, TokenSource)>, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Some((token.trim().to_owned(), TokenSource::Header)))
            }
            _ => Err(Refusal::unauthorized("the Authorization header must be `Bearer <token>`")),
        };
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(token) = offered.iter().find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL)) {
        if !offered.contains(&SUBPROTOCOL) {
            return Err(Refusal::unauthorized(format!(
                "offer the subprotocol `{SUBPROTOCOL}` alongside `{BEARER_SUBPROTOCOL}<token>`"
            )));
        }
        return Ok(Some((token.to_owned(), TokenSource::Subprotocol)));
    }
    Ok(session_cookie(headers).map(|token| (token, TokenSource::Cookie)))
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// A browser sends cookies with cross-site WebSocket upgrades too, so a cookie session is accepted
/// only from the server's own origin or one on the allow-list. (Requests without `Origin` do not come
/// from a browser page.)
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let same_origin =
        !host.is_empty() && (origin == format!("http://{host}") || origin == format!("https://{host}"));
    if same_origin || allowed.iter().any(|a| a == origin) {
        return Ok(());
    }
    metrics::counter!("tandem_gateway_cross_origin_refused_total").increment(1);
    let allowed = if allowed.is_empty() { "only this server's own".to_owned() } else { allowed.join(", ") };
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        format!(
            "a cookie session from origin {origin:?} is refused (cross-site); allowed origins: {allowed}"
        ),
    ))
}

/// `POST /v1/session` with `Authorization: Bearer <token>` sets the HttpOnly session cookie, so that a
/// browser page never keeps the token where scripts can read it; `DELETE` clears it.
pub(crate) fn routes() -> Router<Arc<GatewayState>> {
    Router::new().route("/v1/session", post(start_session).delete(end_session))
}

async fn start_session(State(state): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    let Authentication::Jwt(verifier) = &state.config.auth else {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            "this server runs without authentication; no session is needed",
        )
        .into_response();
    };
    if let Err(refusal) = check_origin(&headers, &state.config.allowed_origins) {
        return refusal.into_response();
    }
    let token = match find_token(&headers) {
        Ok(Some((token, TokenSource::Header))) => token,
        Ok(_) => {
            return Refusal::unauthorized("send the token as `Authorization: Bearer <token>`").into_response()
        }
        Err(refusal) => return refusal.into_response(),
    };
    let principal = match verifier.verify(&token) {
        Ok(principal) => principal,
        Err(e) => return Refusal::unauthorized(e).into_response(),
    };
    let expires = principal.expires_at.unwrap_or_default();
    let max_age = expires.saturating_add(verifier.leeway_secs()).saturating_sub(unix_now());
    let secure = if state.config.cookie_secure { "; Secure" } else { "" };
    let cookie =
        format!("{SESSION_COOKIE}={token}; Path=/v1; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    let body = Json(serde_json::json!({ "user": principal.user, "expires": expires }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            headers.insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => Refusal::unauthorized("the token has characters a cookie cannot carry").into_response(),
    }
}

async fn end_session(State(state): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = check_origin(&headers, &state.config.allowed_origins) {
        return refusal.into_response();
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/v1; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn tokens_are_found_in_header_subprotocol_and_cookie() {
        let found = |pairs| find_token(&headers(pairs)).unwrap();
        assert_eq!(found(&[("authorization", "Bearer abc")]), Some(("abc".to_owned(), TokenSource::Header)));
        assert_eq!(
            found(&[("authorization", "bearer  abc ")]),
            Some(("abc".to_owned(), TokenSource::Header))
        );
        assert_eq!(
            found(&[("sec-websocket-protocol", "tandem.v1, tandem.bearer.a.b.c")]),
            Some(("a.b.c".to_owned(), TokenSource::Subprotocol))
        );
        assert_eq!(
            found(&[("cookie", "theme=dark; tandem_token=xyz; other=1")]),
            Some(("xyz".to_owned(), TokenSource::Cookie))
        );
        assert_eq!(found(&[("cookie", "theme=dark")]), None);
        assert!(find_token(&headers(&[("authorization", "Basic dXNlcjpwdw==")]))
            .unwrap_err()
            .message
            .contains("Bearer"));
        assert!(find_token(&headers(&[("sec-websocket-protocol", "tandem.bearer.abc")]))
            .unwrap_err()
            .message
            .contains("tandem.v1"));
    }

    #[test]
    fn origins_same_site_or_allowed_only() {
        let allowed = vec!["https://app.example".to_owned()];
        let check =
            |origin: &str| check_origin(&headers(&[("host", "gw:8080"), ("origin", origin)]), &allowed);
        assert!(check("http://gw:8080").is_ok());
        assert!(check("https://app.example").is_ok());
        let refused = check("https://evil.example").unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("evil.example"), "{}", refused.message);
        assert!(check_origin(&headers(&[("host", "gw:8080")]), &allowed).is_ok(), "no Origin: not a browser");
    }
}
