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
//! Besides the tokens, [`SimulatorFaults`] injects faults into a share of
//! charge calls (authorizations and captures) whatever their token, set at
//! run time: declined (`card_declined`), a transient 503 before acting, an
//! answer after the client's timeout (the call acts, as with `tok_timeout`)
//! or a slow answer (as with `tok_slow`). A call suffers at most one of
//! them; voids and refunds never do, so a charge can always be unwound.
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
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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

/// A fault the simulator injects into a charge call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Declined as `card_declined`: a final answer, stored under the key.
    Decline,
    /// Answered with a 503 without acting.
    Transient,
    /// Acted on, answered after the client's timeout.
    Timeout,
    /// Acted on, answered after the slow delay (under the client's timeout).
    Slow,
}

/// The share of charge calls, in percent, that suffer each fault. The
/// shares are laid end to end over one roll per call, so they add up to at
/// most 100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultShares {
    pub decline: u8,
    pub transient: u8,
    pub timeout: u8,
    pub slow: u8,
}

/// Shares that do not fit in 100 %.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fault shares add up to {0} %, more than 100 %")]
pub struct InvalidShares(pub u16);

impl FaultShares {
    pub fn is_off(&self) -> bool {
        self.total() == 0
    }

    pub fn total(&self) -> u16 {
        [self.decline, self.transient, self.timeout, self.slow]
            .iter()
            .map(|s| u16::from(*s))
            .sum()
    }

    pub fn check(&self) -> Result<(), InvalidShares> {
        match self.total() {
            total if total > 100 => Err(InvalidShares(total)),
            _ => Ok(()),
        }
    }

    /// The fault of a call whose roll, uniform in `0..100`, is `roll`.
    pub fn fault_for(&self, roll: u8) -> Option<Fault> {
        let mut end = 0u16;
        for (share, fault) in [
            (self.decline, Fault::Decline),
            (self.transient, Fault::Transient),
            (self.timeout, Fault::Timeout),
            (self.slow, Fault::Slow),
        ] {
            end += u16::from(share);
            if u16::from(roll) < end {
                return Some(fault);
            }
        }
        None
    }
}

struct FaultState {
    shares: FaultShares,
    rng: StdRng,
}

/// The simulator's fault shares, shared with whoever adjusts them at run
/// time; every clone is the same setting. Off until set.
#[derive(Clone)]
pub struct SimulatorFaults {
    state: Arc<Mutex<FaultState>>,
}

impl Default for SimulatorFaults {
    fn default() -> Self {
        Self::with_rng(StdRng::from_os_rng())
    }
}

impl std::fmt::Debug for SimulatorFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorFaults")
            .field("shares", &self.get())
            .finish()
    }
}

impl SimulatorFaults {
    /// Rolls from `seed`, so that a run can be repeated.
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(StdRng::seed_from_u64(seed))
    }

    fn with_rng(rng: StdRng) -> Self {
        Self {
            state: Arc::new(Mutex::new(FaultState {
                shares: FaultShares::default(),
                rng,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self) -> FaultShares {
        self.lock().shares
    }

    /// Applies from the next call on.
    pub fn set(&self, shares: FaultShares) -> Result<(), InvalidShares> {
        shares.check()?;
        self.lock().shares = shares;
        Ok(())
    }

    /// The fault of the next charge call, if any.
    pub fn roll(&self) -> Option<Fault> {
        let mut state = self.lock();
        if state.shares.is_off() {
            return None;
        }
        let roll = state.rng.random_range(0..100u8);
        state.shares.fault_for(roll)
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
    faults: SimulatorFaults,
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
            faults: SimulatorFaults::default(),
        }
    }

    /// The same simulator, injecting the faults `faults` is set to.
    pub fn with_faults(mut self, faults: SimulatorFaults) -> Self {
        self.faults = faults;
        self
    }

    /// The handle on its fault shares.
    pub fn faults(&self) -> SimulatorFaults {
        self.faults.clone()
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
/// result ever after. A charge call (`charge`) may suffer an injected
/// fault: a transient one before the key is looked at, a decline in place
/// of the action, a delay on any answer, a repeated one included.
async fn once(
    sim: &Simulator,
    headers: &HeaderMap,
    fingerprint: String,
    charge: bool,
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
    let fault = if charge { sim.faults.roll() } else { None };
    let (delay, answer) = {
        let mut state = sim.lock();
        state.stats.requests += 1;
        if fault == Some(Fault::Transient) {
            return reply(problem(StatusCode::SERVICE_UNAVAILABLE, "try_again"));
        }
        if let Some(stored) = state.responses.get(&key) {
            if stored.fingerprint != fingerprint {
                return reply(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                ));
            }
            (Delay::None, (stored.status, stored.body.clone()))
        } else {
            let token = match token(&state) {
                Ok(token) => token,
                Err(answer) => return reply(answer),
            };
            if token == TOK_TRANSIENT && state.failed_once.insert(key.clone()) {
                return reply(problem(StatusCode::SERVICE_UNAVAILABLE, "try_again"));
            }
            let (status, body) = if fault == Some(Fault::Decline) {
                state.stats.declines += 1;
                problem(StatusCode::PAYMENT_REQUIRED, "card_declined")
            } else {
                action(&mut state)
            };
            state.responses.insert(
                key,
                Stored {
                    fingerprint,
                    status,
                    body: body.clone(),
                },
            );
            (delay_for(&token), (status, body))
        }
    };
    let delay = match fault {
        Some(Fault::Timeout) => Delay::Timeout,
        Some(Fault::Slow) if delay == Delay::None => Delay::Slow,
        _ => delay,
    };
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
        true,
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
        true,
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
        false,
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
        false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(decline: u8, transient: u8, timeout: u8, slow: u8) -> FaultShares {
        FaultShares {
            decline,
            transient,
            timeout,
            slow,
        }
    }

    #[test]
    fn the_shares_are_laid_end_to_end_over_the_roll() {
        let s = shares(10, 20, 30, 40);
        assert_eq!(s.fault_for(0), Some(Fault::Decline));
        assert_eq!(s.fault_for(9), Some(Fault::Decline));
        assert_eq!(s.fault_for(10), Some(Fault::Transient));
        assert_eq!(s.fault_for(29), Some(Fault::Transient));
        assert_eq!(s.fault_for(30), Some(Fault::Timeout));
        assert_eq!(s.fault_for(59), Some(Fault::Timeout));
        assert_eq!(s.fault_for(60), Some(Fault::Slow));
        assert_eq!(s.fault_for(99), Some(Fault::Slow));
        let partial = shares(0, 25, 0, 0);
        assert_eq!(partial.fault_for(24), Some(Fault::Transient));
        assert_eq!(partial.fault_for(25), None);
        assert!((0..100).all(|roll| FaultShares::default().fault_for(roll).is_none()));
        assert!((0..100).all(|roll| shares(100, 0, 0, 0).fault_for(roll) == Some(Fault::Decline)));
    }

    #[test]
    fn shares_beyond_one_hundred_percent_are_refused_and_leave_the_setting_alone() {
        let faults = SimulatorFaults::seeded(1);
        assert_eq!(faults.set(shares(60, 41, 0, 0)), Err(InvalidShares(101)));
        assert!(faults.get().is_off());
        assert_eq!(faults.set(shares(25, 25, 25, 25)), Ok(()));
        assert_eq!(faults.get(), shares(25, 25, 25, 25));
    }

    #[test]
    fn a_share_of_calls_close_to_the_setting_suffers_each_fault() {
        let faults = SimulatorFaults::seeded(7);
        assert_eq!(faults.roll(), None, "off by default");
        faults.set(shares(30, 10, 0, 5)).unwrap();
        let calls = 10_000;
        let mut counts = HashMap::new();
        for _ in 0..calls {
            *counts.entry(faults.roll()).or_insert(0u32) += 1;
        }
        let percent =
            |fault| f64::from(counts.get(&fault).copied().unwrap_or(0)) * 100.0 / 10_000.0;
        for (fault, expected) in [
            (Some(Fault::Decline), 30.0),
            (Some(Fault::Transient), 10.0),
            (Some(Fault::Timeout), 0.0),
            (Some(Fault::Slow), 5.0),
            (None, 55.0),
        ] {
            let got = percent(fault);
            assert!(
                (got - expected).abs() < 2.0,
                "{fault:?}: {got} % of {calls}"
            );
        }
        faults.set(FaultShares::default()).unwrap();
        assert!((0..1000).all(|_| faults.roll().is_none()));
    }

    #[test]
    fn the_same_seed_rolls_the_same_faults() {
        let rolls = |seed| {
            let faults = SimulatorFaults::seeded(seed);
            faults.set(shares(20, 20, 20, 20)).unwrap();
            (0..200).map(|_| faults.roll()).collect::<Vec<_>>()
        };
        assert_eq!(rolls(42), rolls(42));
    }
}
