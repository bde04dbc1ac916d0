//! `Idempotency-Key`, with Stripe's semantics, as a middleware any POST
//! route can wear.
//!
//! - same key, same request → the stored status and body, byte for byte;
//! - same key, another request → 422;
//! - same key while the first is still running → 409;
//! - keys are scoped to the calling client and kept for 24 hours.
//!
//! Responses of 5xx (and 409/429, which say "try again") are not stored:
//! the key is released so the client can retry. The key is also handed to
//! the handler as an [`IdempotencyKey`] extension, so that a service can
//! record it with the resource it creates as a second guard.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ordo_kernel::Clock;
use sha2::{Digest, Sha256};

use crate::idempotency_store::{Begin, IdempotencyStore, StoredResponse};
use crate::request::BODY_LIMIT;
use crate::{ApiError, Principal};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The key of the request being served, when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    /// After this, an in-flight key is presumed abandoned: by a process
    /// that died, or by a request cut off by the request timeout (which
    /// drops it without releasing its key).
    lock_ttl: Duration,
    retention: Duration,
}

impl Idempotency {
    pub fn new(store: Arc<dyn IdempotencyStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            lock_ttl: Duration::from_secs(300),
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// How long a key may stay in flight: set it a little above the
    /// request timeout, past which no request is still running, so a
    /// client retrying after a crash or a timeout is not refused for long.
    pub fn with_lock_ttl(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = lock_ttl;
        self
    }

    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }
}

fn key_of(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn fingerprint(req: &Request, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(req.method().as_str());
    hash.update(b" ");
    hash.update(req.uri().path());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED.clone(), HeaderValue::from_static("true"));
    response
}

fn worth_storing(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED)
}

/// The middleware; place it inside the authentication layer.
pub async fn idempotency(State(layer): State<Idempotency>, req: Request, next: Next) -> Response {
    match run(layer, req, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(layer: Idempotency, req: Request, next: Next) -> Result<Response, Response> {
    let key = key_of(&req).map_err(IntoResponse::into_response)?;
    let Some(key) = key else {
        return Ok(next.run(req).await);
    };
    let scope = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.client_id.to_string())
        .ok_or_else(|| {
            ApiError::Unauthorized("a bearer token is required".to_owned()).into_response()
        })?;

    let (mut parts, body) = req.into_parts();
    let bytes = to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit: BODY_LIMIT }.into_response())?;
    let probe = Request::from_parts(parts.clone(), Body::empty());
    let fingerprint = fingerprint(&probe, &bytes);

    let begin = layer
        .store
        .begin(
            &scope,
            &key,
            &fingerprint,
            layer.clock.now(),
            layer.lock_ttl,
            layer.retention,
        )
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    match begin {
        Begin::Started => {}
        Begin::Replay(stored) => return Ok(replay(stored)),
        Begin::Mismatch => {
            return Err(ApiError::Unprocessable {
                slug: "idempotency-key-reused",
                detail: "this Idempotency-Key was used with a different request".to_owned(),
            }
            .into_response());
        }
        Begin::InFlight => {
            return Err(ApiError::Conflict {
                slug: "idempotency-key-in-flight",
                detail: "a request with this Idempotency-Key is still being processed".to_owned(),
            }
            .into_response());
        }
    }

    parts.extensions.insert(IdempotencyKey(key.clone()));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;

    let status = response.status();
    if !worth_storing(status) {
        if let Err(err) = layer.store.release(&scope, &key).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => {
            let _ = layer.store.release(&scope, &key).await;
            return Err(
                ApiError::internal(anyhow::anyhow!("reading the response: {err}")).into_response(),
            );
        }
    };
    let headers = [header::CONTENT_TYPE, header::LOCATION]
        .iter()
        .filter_map(|name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let stored = StoredResponse {
        status: status.as_u16(),
        headers,
        body: body.to_vec(),
    };
    if let Err(err) = layer
        .store
        .complete(&scope, &key, &stored, layer.clock.now())
        .await
    {
        // The effect happened; the client gets its answer. A retry would
        // find the key in flight until the lock lapses.
        tracing::error!(error = %err, "could not store an idempotent response");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
