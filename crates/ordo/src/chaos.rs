//! Chaos controls: a switchboard, owned by the process, of faults an admin
//! turns on at run time to watch the saga cope — the gateway simulator
//! declining, failing, timing out or slowing down a share of charges, a
//! service's consumers paused, deliveries on the in-process bus duplicated.
//!
//! Everything is off at start and refused unless the `chaos` setting
//! allows it. The controls act on this process only: in distributed mode
//! each process has its own (a pause holds the deliveries of this
//! process's consumers; other replicas of the service keep consuming).
//! The console and the HTTP API call the same [`Chaos`] methods.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use ordo_bus::LocalBus;
use ordo_http::{ApiError, FieldError, Json, Principal, Role};
use ordo_payments::{FaultShares, SimulatorFaults};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ALL_SERVICES;

/// Shares of the gateway simulator's charge calls (authorizations and
/// captures), in percent, that suffer each fault. A call suffers at most
/// one, so they add up to 100 at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayChaos {
    /// Declined (`card_declined`): the order is cancelled.
    pub decline_percent: u32,
    /// Answered with a 503 before acting: retried, and after enough of
    /// them the payment fails as `gateway_unavailable`.
    pub transient_percent: u32,
    /// Acted on, answered after the client's timeout: retried with the
    /// same idempotency key.
    pub timeout_percent: u32,
    /// Answered late, within the client's timeout.
    pub slow_percent: u32,
}

/// Every chaos control; a field left out is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosState {
    pub gateway: GatewayChaos,
    /// Services whose consumers hold their deliveries until resumed
    /// (`orders`, `inventory`, `payments`, `delivery`).
    pub paused: Vec<String>,
    /// Share of in-process deliveries, in percent, handed to their
    /// consumer twice.
    pub duplicate_percent: u32,
}

impl ChaosState {
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// What `GET /v1/admin/chaos` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChaosStatus {
    /// Whether the `chaos` setting lets admins change the controls.
    pub enabled: bool,
    pub state: ChaosState,
    /// One line per active control, for a banner.
    pub active: Vec<String>,
    /// Whether this process serves the gateway simulator, which the
    /// gateway controls need.
    pub gateway_simulator: bool,
    /// Services whose consumers this process hosts: what can be paused.
    pub services: Vec<String>,
}

/// The chaos controls of this process. Clone freely: every clone is the
/// same switchboard.
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    /// Unset when the gateway is not the built-in simulator.
    gateway: Option<SimulatorFaults>,
    bus: LocalBus,
    /// Serialises changes, so that a state is applied whole.
    changing: Mutex<()>,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos")
            .field("enabled", &self.inner.enabled)
            .field("state", &self.state())
            .finish()
    }
}

/// How to turn the controls on, for the refusal.
const HOW_TO_ENABLE: &str = "chaos controls are disabled on this server: start it with --chaos \
     (ORDO_CHAOS=true, or chaos = true in ordo.toml); they are on by default with the demo";

impl Chaos {
    /// `gateway`: the simulator's fault handle, when this process serves
    /// it; `bus`: this process's bus.
    pub fn new(enabled: bool, gateway: Option<SimulatorFaults>, bus: LocalBus) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled,
                gateway,
                bus,
                changing: Mutex::new(()),
            }),
        }
    }

    /// Whether the `chaos` setting lets admins change the controls.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The controls as they are now.
    pub fn state(&self) -> ChaosState {
        let shares = self
            .inner
            .gateway
            .as_ref()
            .map(SimulatorFaults::get)
            .unwrap_or_default();
        ChaosState {
            gateway: GatewayChaos {
                decline_percent: shares.decline.into(),
                transient_percent: shares.transient.into(),
                timeout_percent: shares.timeout.into(),
                slow_percent: shares.slow.into(),
            },
            paused: self.inner.bus.paused(),
            duplicate_percent: (self.inner.bus.duplicate_rate() * 100.0).round() as u32,
        }
    }

    /// The state with what this process offers, for the admin pages.
    pub fn status(&self) -> ChaosStatus {
        let state = self.state();
        ChaosStatus {
            enabled: self.enabled(),
            active: describe(&state),
            state,
            gateway_simulator: self.inner.gateway.is_some(),
            services: self.services(),
        }
    }

    /// One short line per active control ("gateway: 30 % of charges fail
    /// transiently"); empty when everything is off.
    pub fn active(&self) -> Vec<String> {
        describe(&self.state())
    }

    /// Replaces every control with `state` (admin; refused unless
    /// enabled). Returns the state now in force.
    pub fn set(&self, principal: &Principal, state: ChaosState) -> Result<ChaosState, ApiError> {
        principal.require(&[Role::Admin])?;
        if !self.enabled() {
            return Err(ApiError::Conflict {
                slug: "chaos-disabled",
                detail: HOW_TO_ENABLE.to_owned(),
            });
        }
        let (shares, paused, duplicate_rate) = self.check(&state)?;
        let _changing = self.lock();
        if let Some(gateway) = &self.inner.gateway {
            gateway.set(shares).map_err(ApiError::internal)?;
        }
        self.inner.bus.set_paused(paused);
        self.inner.bus.set_duplicate_rate(duplicate_rate);
        let now = self.state();
        warn!(client = %principal.client_id, active = ?describe(&now), "chaos controls changed");
        Ok(now)
    }

    /// Turns every control off (admin; refused unless enabled).
    pub fn reset(&self, principal: &Principal) -> Result<ChaosState, ApiError> {
        self.set(principal, ChaosState::default())
    }

    /// Each control's value for `/metrics`: a share from 0 to 1, or 1 for
    /// a paused service.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let state = self.state();
        let share = |percent: u32| f64::from(percent) / 100.0;
        let mut gauges = vec![
            (
                "gateway_decline".to_owned(),
                share(state.gateway.decline_percent),
            ),
            (
                "gateway_transient".to_owned(),
                share(state.gateway.transient_percent),
            ),
            (
                "gateway_timeout".to_owned(),
                share(state.gateway.timeout_percent),
            ),
            ("gateway_slow".to_owned(), share(state.gateway.slow_percent)),
            ("bus_duplicate".to_owned(), share(state.duplicate_percent)),
        ];
        for service in self.services() {
            let paused = state.paused.contains(&service);
            gauges.push((format!("pause_{service}"), if paused { 1.0 } else { 0.0 }));
        }
        gauges
    }

    /// The services of [`ALL_SERVICES`] whose consumers this process hosts.
    fn services(&self) -> Vec<String> {
        let hosted = self.inner.bus.services();
        ALL_SERVICES
            .iter()
            .filter(|s| hosted.iter().any(|h| h == *s))
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates `state` against this process: the simulator's shares,
    /// the services to pause and the duplicate rate, or the fields in
    /// error.
    fn check(&self, state: &ChaosState) -> Result<(FaultShares, Vec<String>, f64), ApiError> {
        const PERCENT: &str = "must be a whole number from 0 to 100";
        let mut errors = Vec::new();
        let mut percent = |field: &str, value: u32| match u8::try_from(value) {
            Ok(p) if p <= 100 => p,
            _ => {
                errors.push(FieldError::new(field, PERCENT));
                0
            }
        };
        let g = &state.gateway;
        let shares = FaultShares {
            decline: percent("gateway.decline_percent", g.decline_percent),
            transient: percent("gateway.transient_percent", g.transient_percent),
            timeout: percent("gateway.timeout_percent", g.timeout_percent),
            slow: percent("gateway.slow_percent", g.slow_percent),
        };
        let duplicate = percent("duplicate_percent", state.duplicate_percent);
        if let Err(err) = shares.check() {
            errors.push(FieldError::new(
                "gateway",
                format!("{err}: a charge suffers at most one fault"),
            ));
        }
        if self.inner.gateway.is_none() && !shares.is_off() {
            errors.push(FieldError::new(
                "gateway",
                "this process does not serve the gateway simulator (gateway-url is set, or it runs no payments service)",
            ));
        }
        let services = self.services();
        let mut paused = Vec::new();
        for (i, service) in state.paused.iter().enumerate() {
            if !services.contains(service) {
                errors.push(FieldError::new(
                    format!("paused[{i}]"),
                    format!(
                        "must be a service whose consumers this process hosts: {}",
                        services.join(", ")
                    ),
                ));
            } else if !paused.contains(service) {
                paused.push(service.clone());
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok((shares, paused, f64::from(duplicate) / 100.0))
    }
}

fn describe(state: &ChaosState) -> Vec<String> {
    let g = &state.gateway;
    let mut active = Vec::new();
    for (percent, what) in [
        (g.decline_percent, "are declined"),
        (g.transient_percent, "fail transiently"),
        (g.timeout_percent, "time out"),
        (g.slow_percent, "are slowed down"),
    ] {
        if percent > 0 {
            active.push(format!("gateway: {percent} % of charges {what}"));
        }
    }
    for service in &state.paused {
        active.push(format!("{service}: consumers paused"));
    }
    if state.duplicate_percent > 0 {
        active.push(format!(
            "bus: {} % of deliveries duplicated",
            state.duplicate_percent
        ));
    }
    active
}

#[derive(Debug)]
struct ChaosCollector(Chaos);

impl Collector for ChaosCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let enabled = ConstGauge::new(i64::from(self.0.enabled()));
        let metric = encoder.encode_descriptor(
            "ordo_chaos_enabled",
            "1 when the chaos setting lets admins turn controls on",
            None,
            enabled.metric_type(),
        )?;
        enabled.encode(metric)?;
        let mut family = encoder.encode_descriptor(
            "ordo_chaos_active",
            "chaos control in force: the share (0 to 1) of calls or deliveries it hits, 1 for a paused service",
            None,
            MetricType::Gauge,
        )?;
        for (control, value) in self.0.gauges() {
            let labels = [("control", control)];
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

pub fn register_metrics(registry: &mut Registry, chaos: Chaos) {
    registry.register_collector(Box::new(ChaosCollector(chaos)));
}

pub fn admin_router(chaos: Chaos) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_chaos, put_chaos, delete_chaos))
        .with_state(chaos)
}

/// The chaos controls, whether they may be changed, and what is active
/// (admin).
#[utoipa::path(get, path = "/v1/admin/chaos", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ChaosStatus),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json")))]
async fn get_chaos(
    State(chaos): State<Chaos>,
    principal: Principal,
) -> Result<axum::Json<ChaosStatus>, ApiError> {
    principal.require(&[Role::Admin])?;
    Ok(axum::Json(chaos.status()))
}

/// Sets every chaos control; a field left out is off (admin; 409 unless
/// the `chaos` setting is on).
#[utoipa::path(put, path = "/v1/admin/chaos", tag = "admin", request_body = ChaosState,
    security(("bearer" = [])),
    responses((status = 200, body = ChaosStatus),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 409, description = "chaos is disabled by setting", body = ordo_http::Problem,
            content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json")))]
async fn put_chaos(
    State(chaos): State<Chaos>,
    principal: Principal,
    Json(state): Json<ChaosState>,
) -> Result<axum::Json<ChaosStatus>, ApiError> {
    chaos.set(&principal, state)?;
    Ok(axum::Json(chaos.status()))
}

/// Turns every chaos control off (admin; 409 unless the `chaos` setting
/// is on).
#[utoipa::path(delete, path = "/v1/admin/chaos", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ChaosStatus),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 409, description = "chaos is disabled by setting", body = ordo_http::Problem,
            content_type = "application/problem+json")))]
async fn delete_chaos(
    State(chaos): State<Chaos>,
    principal: Principal,
) -> Result<axum::Json<ChaosStatus>, ApiError> {
    chaos.reset(&principal)?;
    Ok(axum::Json(chaos.status()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_active_control_is_one_line_and_nothing_is_active_when_off() {
        assert!(describe(&ChaosState::default()).is_empty());
        let state = ChaosState {
            gateway: GatewayChaos {
                transient_percent: 30,
                slow_percent: 5,
                ..GatewayChaos::default()
            },
            paused: vec!["payments".to_owned()],
            duplicate_percent: 10,
        };
        assert_eq!(
            describe(&state),
            [
                "gateway: 30 % of charges fail transiently",
                "gateway: 5 % of charges are slowed down",
                "payments: consumers paused",
                "bus: 10 % of deliveries duplicated",
            ]
        );
    }

    #[test]
    fn a_partial_state_leaves_the_other_controls_off() {
        let state: ChaosState =
            serde_json::from_str(r#"{"gateway": {"decline_percent": 40}}"#).unwrap();
        assert_eq!(state.gateway.decline_percent, 40);
        assert_eq!(state.gateway.transient_percent, 0);
        assert!(state.paused.is_empty() && state.duplicate_percent == 0);
        assert!(serde_json::from_str::<ChaosState>(r#"{"gateway": {"declines": 1}}"#).is_err());
    }
}
