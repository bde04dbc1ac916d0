//! A payment gateway simulator, served over HTTP so that the client side is
//! real: its timeouts, retries and circuit breaker meet real sockets.
//!
//! It keeps its state in memory, keyed by idempotency key: a repeated key
//! gets the first answer back and never acts twice. Test tokens:
//!
//! | token | behaviour |
//! |---|---|
//! | `tok_visa` | succeeds |
//! | `tok_declined` | the authorization is declined (`card_declined`) |
//! | `tok_transient` | the first request of each idempotency key fails with 503, the next succeeds |
//! | `tok_timeout` | the capture is made, then its answer is delayed beyond the client's timeout on the first request; a retry with the same key gets the stored capture |
//! | `tok_slow` | the authorization answers after a delay under the client's timeout |
//!
//! Any other token is declined as `invalid_token`.
//!
//! Routes (each `POST` needs an `Idempotency-Key` header):
//! `POST /v1/authorizations`, `POST /v1/authorizations/{id}/capture`,
//! `POST /v1/authorizations/{id}/void`, `POST /v1/captures/{id}/refunds`,
//! `GET /v1/stats`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use ulid::Ulid;

use crate::gateway::{
    Authorization, AuthorizeRequest, Capture, CaptureRequest, GatewayRefund, RefundRequest, Voided,
};

pub const TOK_VISA: &str = "tok_visa";
pub const TOK_DECLINED: &str = "tok_declined";
pub const TOK_TRANSIENT: &str = "tok_transient";
pub const TOK_TIMEOUT: &str = "tok_timeout";
pub const TOK_SLOW: &str = "tok_slow";

const KNOWN_TOKENS: [&str; 5] = [TOK_VISA, TOK_DECLINED, TOK_TRANSIENT, TOK_TIMEOUT, TOK_SLOW];

/// The simulator's delays. Tests shrink them along with the client's
/// timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// How long `tok_timeout` holds back the answer of its first capture
    /// request: beyond the client's timeout.
    pub timeout_delay: Duration,
    /// How long `tok_slow` takes to authorize: under the client's timeout.
    pub slow_delay: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            timeout_delay: Duration::from_secs(5),
            slow_delay: Duration::from_secs(1),
        }
    }
}

/// What the simulator did, for tests and `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatorStats {
    /// Requests received, repeats included.
    pub requests: u64,
    pub authorizations: u64,
    pub declines: u64,
    pub captures: u64,
    pub voids: u64,
    pub refunds: u64,
    pub captured_total: Decimal,
    pub refunded_total: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStatus {
    Authorized,
    Captured,
    Voided,
}

#[derive(Debug)]
struct Auth {
    token: String,
    amount: Decimal,
    status: AuthStatus,
}

#[derive(Debug)]
struct Charge {
    token: String,
    amount: Decimal,
    refunded: Decimal,
}

#[derive(Debug, Clone)]
struct Stored {
    /// What was asked with this key; another request with it is refused.
    fingerprint: String,
    status: StatusCode,
    body: serde_json::Value,
}

#[derive(Debug, Default)]
struct SimState {
    responses: HashMap<String, Stored>,
    /// Keys of `tok_transient` requests that already failed once.
    failed_once: HashSet<String>,
    authorizations: HashMap<String, Auth>,
    captures: HashMap<String, Charge>,
    stats: SimulatorStats,
}

/// The gateway simulator: clone it freely, every clone shares the state.
#[derive(Clone, Default)]
pub struct Simulator {
    state: Arc<Mutex<SimState>>,
    config: SimulatorConfig,
}

/// A router of a fresh simulator with the default delays.
pub fn router() -> Router {
    Simulator::default().router()
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Self {
            state: Arc::default(),
            config,
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/authorizations", post(authorize))
            .route("/v1/authorizations/{id}/capture", post(capture))
            .route("/v1/authorizations/{id}/void", post(void))
            .route("/v1/captures/{id}/refunds", post(refund))
            .route("/v1/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves the simulator on `listener` (the application binds its own
    /// 127.0.0.1 port) until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    pub fn stats(&self) -> SimulatorStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn problem(status: StatusCode, code: &str) -> (StatusCode, serde_json::Value) {
    (status, json!({ "code": code }))
}

fn ok<T: Serialize>(value: &T) -> (StatusCode, serde_json::Value) {
    match serde_json::to_value(value) {
        Ok(body) => (StatusCode::OK, body),
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn reply((status, body): (StatusCode, serde_json::Value)) -> Response {
    (status, Json(body)).into_response()
}

/// What a request would do once its key is checked: the token it is made
/// with (for the token's behaviour) and the action itself.
type Action = Box<dyn FnOnce(&mut SimState) -> (StatusCode, serde_json::Value) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delay {
    None,
    /// Holds the first answer back (`tok_timeout` captures).
    Timeout,
    /// Answers late but in time (`tok_slow` authorizations).
    Slow,
}

/// Runs `action` once per idempotency key and answers with its stored
/// result ever after.
async fn once(
    sim: &Simulator,
    headers: &HeaderMap,
    fingerprint: String,
    token: impl FnOnce(&SimState) -> Result<String, (StatusCode, serde_json::Value)>,
    delay_for: impl FnOnce(&str) -> Delay,
    action: Action,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
    else {
        return reply(problem(StatusCode::BAD_REQUEST, "idempotency_key_required"));
    };
    let delay = {
        let mut state = sim.lock();
        state.stats.requests += 1;
        if let Some(stored) = state.responses.get(&key) {
            if stored.fingerprint != fingerprint {
                return reply(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                ));
            }
            return reply((stored.status, stored.body.clone()));
        }
        let token = match token(&state) {
            Ok(token) => token,
            Err(answer) => return reply(answer),
        };
        if token == TOK_TRANSIENT && state.failed_once.insert(key.clone()) {
            return reply(problem(StatusCode::SERVICE_UNAVAILABLE, "try_again"));
        }
        let (status, body) = action(&mut state);
        state.responses.insert(
            key,
            Stored {
                fingerprint,
                status,
                body: body.clone(),
            },
        );
        (delay_for(&token), (status, body))
    };
    let (delay, answer) = delay;
    match delay {
        Delay::None => {}
        Delay::Timeout => tokio::time::sleep(sim.config.timeout_delay).await,
        Delay::Slow => tokio::time::sleep(sim.config.slow_delay).await,
    }
    reply(answer)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Ulid::new())
}

async fn authorize(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Json(req): Json<AuthorizeRequest>,
) -> Response {
    let fingerprint = format!("authorize:{}:{}:{}", req.token, req.amount, req.currency);
    let token = req.token.clone();
    let action: Action = Box::new(move |state: &mut SimState| {
        if req.amount <= Decimal::ZERO {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
        }
        if req.token == TOK_DECLINED || !KNOWN_TOKENS.contains(&req.token.as_str()) {
            state.stats.declines += 1;
            let code = if req.token == TOK_DECLINED {
                "card_declined"
            } else {
                "invalid_token"
            };
            return problem(StatusCode::PAYMENT_REQUIRED, code);
        }
        let id = new_id("auth");
        state.authorizations.insert(
            id.clone(),
            Auth {
                token: req.token,
                amount: req.amount,
                status: AuthStatus::Authorized,
            },
        );
        state.stats.authorizations += 1;
        ok(&Authorization {
            authorization_id: id,
            amount: req.amount,
        })
    });
    once(
        &sim,
        &headers,
        fingerprint,
        |_| Ok(token),
        |t| {
            if t == TOK_SLOW {
                Delay::Slow
            } else {
                Delay::None
            }
        },
        action,
    )
    .await
}

fn auth_token(state: &SimState, id: &str) -> Result<String, (StatusCode, serde_json::Value)> {
    state
        .authorizations
        .get(id)
        .map(|a| a.token.clone())
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "unknown_authorization"))
}

async fn capture(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<CaptureRequest>,
) -> Response {
    let fingerprint = format!("capture:{id}:{}", req.amount);
    let auth_id = id.clone();
    let action: Action = Box::new(move |state: &mut SimState| {
        let Some(auth) = state.authorizations.get_mut(&id) else {
            return problem(StatusCode::NOT_FOUND, "unknown_authorization");
        };
        match auth.status {
            AuthStatus::Captured => return problem(StatusCode::CONFLICT, "already_captured"),
            AuthStatus::Voided => return problem(StatusCode::CONFLICT, "authorization_voided"),
            AuthStatus::Authorized => {}
        }
        if req.amount <= Decimal::ZERO {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
        }
        if req.amount > auth.amount {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount_exceeds_authorization",
            );
        }
        auth.status = AuthStatus::Captured;
        let token = auth.token.clone();
        let capture_id = new_id("cap");
        state.captures.insert(
            capture_id.clone(),
            Charge {
                token,
                amount: req.amount,
                refunded: Decimal::ZERO,
            },
        );
        state.stats.captures += 1;
        state.stats.captured_total += req.amount;
        ok(&Capture {
            capture_id,
            amount: req.amount,
        })
    });
    once(
        &sim,
        &headers,
        fingerprint,
        |state| auth_token(state, &auth_id),
        |t| {
            if t == TOK_TIMEOUT {
                Delay::Timeout
            } else {
                Delay::None
            }
        },
        action,
    )
    .await
}

async fn void(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fingerprint = format!("void:{id}");
    let auth_id = id.clone();
    let action: Action = Box::new(move |state: &mut SimState| {
        let Some(auth) = state.authorizations.get_mut(&id) else {
            return problem(StatusCode::NOT_FOUND, "unknown_authorization");
        };
        match auth.status {
            AuthStatus::Captured => problem(StatusCode::CONFLICT, "already_captured"),
            AuthStatus::Voided => ok(&Voided {
                authorization_id: id,
            }),
            AuthStatus::Authorized => {
                auth.status = AuthStatus::Voided;
                state.stats.voids += 1;
                ok(&Voided {
                    authorization_id: id,
                })
            }
        }
    });
    once(
        &sim,
        &headers,
        fingerprint,
        |state| auth_token(state, &auth_id),
        |_| Delay::None,
        action,
    )
    .await
}

async fn refund(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<RefundRequest>,
) -> Response {
    let fingerprint = format!("refund:{id}:{}", req.amount);
    let capture_id = id.clone();
    let action: Action = Box::new(move |state: &mut SimState| {
        let Some(charge) = state.captures.get_mut(&id) else {
            return problem(StatusCode::NOT_FOUND, "unknown_capture");
        };
        if req.amount <= Decimal::ZERO {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
        }
        if charge.refunded + req.amount > charge.amount {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "amount_exceeds_capture");
        }
        charge.refunded += req.amount;
        state.stats.refunds += 1;
        state.stats.refunded_total += req.amount;
        ok(&GatewayRefund {
            refund_id: new_id("rfd"),
            amount: req.amount,
        })
    });
    once(
        &sim,
        &headers,
        fingerprint,
        |state| {
            state
                .captures
                .get(&capture_id)
                .map(|c| c.token.clone())
                .ok_or_else(|| problem(StatusCode::NOT_FOUND, "unknown_capture"))
        },
        |_| Delay::None,
        action,
    )
    .await
}

async fn stats(State(sim): State<Simulator>) -> Json<SimulatorStats> {
    Json(sim.stats())
}
