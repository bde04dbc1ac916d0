//! The payment gateway: the interface the service charges through, and its
//! HTTP client.
//!
//! Every request carries an idempotency key, and the client retries only
//! with the same key: a call whose answer was lost (a timeout after the
//! gateway acted) is repeated, and the gateway answers with what it already
//! did instead of doing it twice. Transient failures (no connection, a 5xx,
//! a timeout) are retried with exponential backoff; a circuit breaker stops
//! calling a gateway that keeps failing and lets one probe through after a
//! cool-down. A decline is a final answer and is never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_bus::RetryPolicy;
use ordo_kernel::Currency;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// Why a gateway call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A final answer (`card_declined`, `already_captured`, …): retrying
    /// with the same key gives the same answer.
    #[error("declined by the gateway: {reason}")]
    Declined { reason: String },
    /// No usable answer: the call may or may not have taken effect. Retry
    /// later with the same key.
    #[error("the gateway is unavailable: {reason}")]
    Unavailable { reason: String },
}

impl GatewayError {
    pub fn declined(reason: impl Into<String>) -> Self {
        Self::Declined {
            reason: reason.into(),
        }
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    #[serde(skip)]
    pub idempotency_key: String,
    pub token: String,
    pub amount: Decimal,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub authorization_id: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub authorization_id: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    pub capture_id: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub authorization_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voided {
    pub authorization_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub capture_id: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRefund {
    pub refund_id: String,
    pub amount: Decimal,
}

/// A payment gateway. Implementations are injected, so that a simulation
/// can replace the network.
#[async_trait::async_trait]
pub trait Gateway: Send + Sync + 'static {
    async fn authorize(&self, req: AuthorizeRequest) -> Result<Authorization, GatewayError>;
    async fn capture(&self, req: CaptureRequest) -> Result<Capture, GatewayError>;
    async fn void(&self, req: VoidRequest) -> Result<Voided, GatewayError>;
    async fn refund(&self, req: RefundRequest) -> Result<GatewayRefund, GatewayError>;
}

/// The body of a gateway's error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayProblem {
    /// `card_declined`, `already_captured`, …
    pub code: String,
}

/// How the client talks to the gateway. Tests shrink the durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The longest one HTTP request may take, answer included.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per call (the first one included) and the backoff between
    /// them.
    pub retry: RetryPolicy,
    /// Consecutive failed requests that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before it lets a probe through.
    pub breaker_cooldown: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
            },
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(10),
        }
    }
}

/// Monotonic time, injected so that the breaker's cool-down can be tested
/// without waiting for it.
pub trait MonotonicClock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemMonotonic;

impl MonotonicClock for SystemMonotonic {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Every call goes through.
    Closed,
    /// Calls fail at once, without reaching the gateway.
    Open,
    /// The cool-down is over: one probe goes through; its result closes or
    /// reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the breaker gauge: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(&self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out since `since`. Should it never report (its caller
    /// went away), another is let through after a cool-down.
    Probing {
        since: Instant,
    },
}

/// A circuit breaker as a value: every decision takes the time it is made
/// at.
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreaker {
    state: Breaker,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Breaker::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a request may go out now.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if now < until => false,
            Breaker::Probing { since } if now < since + self.cooldown => false,
            Breaker::Open { .. } | Breaker::Probing { .. } => {
                self.state = Breaker::Probing { since: now };
                true
            }
        }
    }

    pub fn on_success(&mut self) {
        self.state = Breaker::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            Breaker::Closed { failures } if failures + 1 < self.threshold => Breaker::Closed {
                failures: failures + 1,
            },
            Breaker::Open { until } => Breaker::Open { until },
            Breaker::Closed { .. } | Breaker::Probing { .. } => Breaker::Open {
                until: now + self.cooldown,
            },
        };
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if now < until => BreakerState::Open,
            Breaker::Open { .. } | Breaker::Probing { .. } => BreakerState::HalfOpen,
        }
    }
}

/// What the client did, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Calls made through the trait (each may take several requests).
    pub calls: AtomicU64,
    /// HTTP requests sent.
    pub requests: AtomicU64,
    /// Requests repeated after a transient failure.
    pub retries: AtomicU64,
    /// Requests that failed transiently.
    pub failures: AtomicU64,
    pub declines: AtomicU64,
    /// Calls refused by the open breaker.
    pub short_circuited: AtomicU64,
    /// Times the breaker went from closed or half-open to open.
    pub breaker_opened: AtomicU64,
}

/// The gateway over HTTP.
pub struct HttpGateway {
    base_url: String,
    client: reqwest::Client,
    config: GatewayConfig,
    breaker: Mutex<CircuitBreaker>,
    clock: Arc<dyn MonotonicClock>,
    stats: Arc<GatewayStats>,
}

impl std::fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGateway")
            .field("base_url", &self.base_url())
            .field("breaker", &self.breaker_state())
            .finish()
    }
}

enum Answer<T> {
    Done(T),
    Declined(String),
    Transient(String),
}

impl HttpGateway {
    /// A client of the gateway at `base_url` (`http://127.0.0.1:4001`).
    pub fn new(base_url: impl Into<String>, config: GatewayConfig) -> anyhow::Result<Self> {
        Self::with_clock(base_url, config, Arc::new(SystemMonotonic))
    }

    pub fn with_clock(
        base_url: impl Into<String>,
        config: GatewayConfig,
        clock: Arc<dyn MonotonicClock>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.call_timeout)
            .build()?;
        Ok(Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client,
            config,
            breaker: Mutex::new(CircuitBreaker::new(
                config.breaker_threshold,
                config.breaker_cooldown,
            )),
            clock,
            stats: Arc::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state(self.clock.now())
    }

    pub fn stats(&self) -> Arc<GatewayStats> {
        self.stats.clone()
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record_failure(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let mut breaker = self.lock_breaker();
        let was_open = breaker.state(now) == BreakerState::Open;
        breaker.on_failure(now);
        if !was_open && breaker.state(now) == BreakerState::Open {
            self.stats.breaker_opened.fetch_add(1, Ordering::Relaxed);
            warn!(url = %self.base_url, "payment gateway circuit breaker opened");
        }
    }

    /// One request, classified.
    async fn send<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Answer<T> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = match self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(err) if err.is_timeout() => return Answer::Transient("timeout".to_owned()),
            Err(err) => return Answer::Transient(format!("request failed: {err}")),
        };
        let status = response.status();
        if status.is_success() {
            return match response.json::<T>().await {
                Ok(value) => Answer::Done(value),
                Err(err) if err.is_timeout() => Answer::Transient("timeout".to_owned()),
                Err(err) => Answer::Transient(format!("unreadable answer: {err}")),
            };
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Answer::Transient(format!("status {}", status.as_u16()));
        }
        match response.json::<GatewayProblem>().await {
            Ok(problem) => Answer::Declined(problem.code),
            Err(_) => Answer::Declined(format!("status_{}", status.as_u16())),
        }
    }

    /// A call: requests with the same key until one answers, the attempts
    /// run out, or the breaker opens.
    async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Result<T, GatewayError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let attempts = self.config.retry.max_attempts.max(1);
        let mut last = String::from("no attempt made");
        for attempt in 1..=attempts {
            if !self.lock_breaker().admit(self.clock.now()) {
                self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
                return Err(GatewayError::unavailable(format!(
                    "circuit open after: {last}"
                )));
            }
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            match self.send::<B, T>(path, key, body).await {
                Answer::Done(value) => {
                    self.lock_breaker().on_success();
                    return Ok(value);
                }
                Answer::Declined(code) => {
                    // The gateway answered: it is healthy.
                    self.lock_breaker().on_success();
                    self.stats.declines.fetch_add(1, Ordering::Relaxed);
                    return Err(GatewayError::Declined { reason: code });
                }
                Answer::Transient(why) => {
                    debug!(path, attempt, reason = %why, "gateway request failed");
                    self.record_failure();
                    last = why;
                    if attempt < attempts {
                        tokio::time::sleep(self.config.retry.delay(attempt)).await;
                    }
                }
            }
        }
        Err(GatewayError::Unavailable { reason: last })
    }
}

fn segment(id: &str) -> String {
    // Gateway references are ours to pass back, but never trust them into
    // a path unescaped.
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

#[async_trait::async_trait]
impl Gateway for HttpGateway {
    async fn authorize(&self, req: AuthorizeRequest) -> Result<Authorization, GatewayError> {
        self.call("/v1/authorizations", &req.idempotency_key, &req)
            .await
    }

    async fn capture(&self, req: CaptureRequest) -> Result<Capture, GatewayError> {
        let path = format!(
            "/v1/authorizations/{}/capture",
            segment(&req.authorization_id)
        );
        self.call(&path, &req.idempotency_key, &req).await
    }

    async fn void(&self, req: VoidRequest) -> Result<Voided, GatewayError> {
        let path = format!("/v1/authorizations/{}/void", segment(&req.authorization_id));
        self.call(&path, &req.idempotency_key, &req).await
    }

    async fn refund(&self, req: RefundRequest) -> Result<GatewayRefund, GatewayError> {
        let path = format!("/v1/captures/{}/refunds", segment(&req.capture_id));
        self.call(&path, &req.idempotency_key, &req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(10);
        let mut b = CircuitBreaker::new(3, cooldown);
        assert!(b.admit(t0));
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.admit(t0 + Duration::from_secs(9)));
        let later = t0 + cooldown;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.admit(later), "one probe goes through");
        assert!(!b.admit(later), "and only one");
        b.on_success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.admit(later));
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_another_cool_down() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(10);
        let mut b = CircuitBreaker::new(1, cooldown);
        b.on_failure(t0);
        let probe = t0 + cooldown;
        assert!(b.admit(probe));
        b.on_failure(probe);
        assert_eq!(b.state(probe), BreakerState::Open);
        assert!(!b.admit(probe + Duration::from_secs(1)));
        assert!(b.admit(probe + cooldown));
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_the_breaker_half_open_forever() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(5);
        let mut b = CircuitBreaker::new(1, cooldown);
        b.on_failure(t0);
        assert!(b.admit(t0 + cooldown));
        assert!(!b.admit(t0 + cooldown + Duration::from_secs(1)));
        assert!(b.admit(t0 + cooldown * 2));
    }

    #[test]
    fn the_gauge_orders_the_states_by_how_broken_the_gateway_is() {
        assert_eq!(BreakerState::Closed.as_gauge(), 0);
        assert_eq!(BreakerState::HalfOpen.as_gauge(), 1);
        assert_eq!(BreakerState::Open.as_gauge(), 2);
    }
}
