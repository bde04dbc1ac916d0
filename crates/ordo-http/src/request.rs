//! Request ids, the body limit, the request timeout, the limits of the
//! request line and headers, and the security headers of every response.

use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::ApiError;
use crate::auth::{SESSION_COOKIE, cookie};
use crate::problem::{problem_response, status_problem};

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The longest request target (path and query) answered; longer is a 414.
///
/// Below hyper's own limits on purpose: hyper answers a target over 64 KiB,
/// a request head over about 400 KiB or more than 100 headers itself,
/// before any service runs, with an empty body. Within those, these limits
/// answer with a problem.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// The largest header block answered (names and values); larger is a 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served: the client's `X-Request-Id` when it
/// sends a sane one, otherwise a new ULID. It becomes the correlation id of
/// the events the request causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request this task is serving, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Assigns the request id, runs the request inside a span carrying it, and
/// echoes it in the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path(), client_id = tracing::field::Empty);
    let mut response = CURRENT
        .scope(id.clone(), next.run(req))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER.clone(), value);
    }
    response
}

/// Answers 503 with a problem when a request runs past `limit`.
pub async fn timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Answers 414 to an over-long request target and 431 to an over-large
/// header block, as problems.
pub async fn request_limits(req: Request, next: Next) -> Response {
    let uri_len = req.uri().to_string().len();
    if uri_len > MAX_URI_LEN {
        let detail =
            format!("the request target is {uri_len} bytes; at most {MAX_URI_LEN} are accepted");
        return limit_problem(StatusCode::URI_TOO_LONG, detail);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        let detail = format!(
            "the request headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        );
        return limit_problem(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, detail);
    }
    next.run(req).await
}

fn limit_problem(status: StatusCode, detail: String) -> Response {
    let mut response = problem_response(&status_problem(status, detail, current_request_id()));
    // The client is likely to send the same again on this connection.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The policy of responses that set none: nothing may load or frame them.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The headers every response carries, and a problem body for every error
/// that has none. Outermost, so that fallbacks, layers' own answers and
/// panics are covered; a header a handler set (the console's CSP and
/// `Referrer-Policy: same-origin`, a cacheable asset) is kept.
///
/// - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
///   `X-Frame-Options: DENY`;
/// - `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`
///   when the handler set no policy (HTML pages set their own);
/// - `Cache-Control: no-store` on the answer to a request carrying
///   credentials (`Authorization` or the session cookie), so that no
///   shared or browser cache keeps someone's data.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let authenticated = req.headers().contains_key(header::AUTHORIZATION)
        || cookie(req.headers(), SESSION_COOKIE).is_some();
    let mut response = with_problem_body(next.run(req).await);
    let headers = response.headers_mut();
    set_default(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_default(headers, header::REFERRER_POLICY, "no-referrer");
    set_default(headers, header::X_FRAME_OPTIONS, "DENY");
    set_default(headers, header::CONTENT_SECURITY_POLICY, DEFAULT_CSP);
    if authenticated {
        set_default(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

fn set_default(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    headers
        .entry(name)
        .or_insert_with(|| HeaderValue::from_static(value));
}

/// An error answered with an empty body (by a layer, a fallback of axum's)
/// becomes a problem of its status, keeping its other headers.
fn with_problem_body(response: Response) -> Response {
    let status = response.status();
    let empty = response.body().size_hint().exact() == Some(0);
    if !(status.is_client_error() || status.is_server_error())
        || !empty
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let request_id = response
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let detail = status
        .canonical_reason()
        .unwrap_or("the request failed")
        .to_lowercase();
    let (parts, _) = response.into_parts();
    let mut problem = problem_response(&status_problem(status, detail, request_id));
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    problem
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(ulid::Ulid::new().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request as HttpRequest, StatusCode};
    use axum::middleware::from_fn;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(limit: Duration) -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(from_fn(move |req, next| timeout(limit, req, next)))
            .layer(from_fn(request_id))
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_timeout_gets_a_problem_with_its_request_id() {
        let response = app(Duration::from_secs(30))
            .oneshot(
                HttpRequest::get("/slow")
                    .header("x-request-id", "req-7")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["x-request-id"], "req-7");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value =
            serde_json::from_slice(&to_bytes(response.into_body(), 10_000).await.unwrap()).unwrap();
        assert_eq!(body["type"], "/problems/timeout");
        assert_eq!(body["request_id"], "req-7");
    }

    #[tokio::test]
    async fn a_request_gets_an_id_when_it_brings_none_or_a_bad_one() {
        for sent in [None, Some("bad id with spaces")] {
            let mut request = HttpRequest::get("/fast");
            if let Some(id) = sent {
                request = request.header("x-request-id", id);
            }
            let response = app(Duration::from_secs(30))
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let id = response.headers()["x-request-id"].to_str().unwrap();
            assert_eq!(id.len(), 26, "a fresh ULID, not {sent:?}");
        }
    }

    fn guarded() -> Router {
        Router::new()
            .route(
                "/json",
                get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
            )
            .route(
                "/page",
                get(|| async {
                    (
                        [
                            (header::CONTENT_TYPE, "text/html"),
                            (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
                            (header::REFERRER_POLICY, "same-origin"),
                            (header::CACHE_CONTROL, "public, max-age=60"),
                        ],
                        "<p>hi</p>",
                    )
                }),
            )
            .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
            .layer(from_fn(request_limits))
            .layer(from_fn(request_id))
            .layer(from_fn(security_headers))
    }

    async fn send(request: HttpRequest<Body>) -> (Response, serde_json::Value) {
        let response = guarded().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 100_000).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    #[tokio::test]
    async fn every_response_gets_the_security_headers_it_did_not_set() {
        let (json, _) = send(HttpRequest::get("/json").body(Body::empty()).unwrap()).await;
        let h = json.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["content-security-policy"], DEFAULT_CSP);
        assert!(!h.contains_key("cache-control"), "no credentials");

        let (page, _) = send(
            HttpRequest::get("/page")
                .header("authorization", "Bearer x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let h = page.headers();
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(
            h["cache-control"], "public, max-age=60",
            "the handler's own"
        );
        assert_eq!(h["x-frame-options"], "DENY");

        for credentials in [
            ("authorization", "Bearer x"),
            ("cookie", "a=b; ordo_session=s"),
        ] {
            let (json, _) = send(
                HttpRequest::get("/json")
                    .header(credentials.0, credentials.1)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(
                json.headers()["cache-control"],
                "no-store",
                "{credentials:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_error_without_a_body_becomes_a_problem() {
        let (response, body) = send(
            HttpRequest::get("/teapot")
                .header("x-request-id", "req-9")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["x-request-id"], "req-9");
        assert_eq!(body["type"], "/problems/i-m-a-teapot");
        assert_eq!(body["status"], 418);
        assert_eq!(body["request_id"], "req-9");
    }

    #[tokio::test]
    async fn an_over_long_target_or_header_block_is_a_problem() {
        let long = format!("/json?q={}", "a".repeat(MAX_URI_LEN));
        let (response, body) = send(HttpRequest::get(long).body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(body["type"], "/problems/uri-too-long");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");

        let (response, body) = send(
            HttpRequest::get("/json")
                .header("x-big", "b".repeat(MAX_HEADER_BYTES))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(body["type"], "/problems/request-header-fields-too-large");
        assert_eq!(body["request_id"].as_str().map(str::len), Some(26));
    }
}
