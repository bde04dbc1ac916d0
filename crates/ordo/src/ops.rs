//! Operations: health, metrics, and the admin views of the bus.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::stores::DatabaseHandle;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ordo_bus::{BusStats, DeadLetter, DeadLetterStore, LocalBus, OutboxStore};
use ordo_http::{ApiError, Principal, Query, Role};
use ordo_kernel::StoreError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct OpsState {
    pub databases: Vec<DatabaseHandle>,
    pub outboxes: Vec<Arc<dyn OutboxStore>>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub bus: LocalBus,
    /// The broker, in distributed mode.
    pub broker: Option<ordo_nats::JetStreamBus>,
    pub registry: Arc<Registry>,
    /// Backlog figures read before each scrape.
    pub gauges: Arc<ScrapeGauges>,
}

/// Figures that need a query, refreshed by the `/metrics` handler.
#[derive(Debug, Default)]
pub struct ScrapeGauges {
    values: std::sync::Mutex<Vec<(String, i64)>>,
    /// Per consumer, in distributed mode: events not yet acknowledged.
    lag: std::sync::Mutex<Vec<(String, i64)>>,
    dead_letters: std::sync::atomic::AtomicI64,
}

#[derive(Debug)]
struct BusCollector {
    stats: Arc<BusStats>,
    gauges: Arc<ScrapeGauges>,
}

impl Collector for BusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "ordo_bus_deliveries",
                "events handled by a consumer",
                &self.stats.delivered,
            ),
            (
                "ordo_bus_failed_attempts",
                "failed attempts to handle an event",
                &self.stats.failed_attempts,
            ),
            (
                "ordo_bus_dead_lettered",
                "events parked in the dead-letter store",
                &self.stats.dead_lettered,
            ),
            (
                "ordo_bus_replayed",
                "dead letters delivered after a replay",
                &self.stats.replayed,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let open = ConstGauge::new(self.gauges.dead_letters.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "ordo_dead_letters",
            "dead letters parked or awaiting replay",
            None,
            open.metric_type(),
        )?;
        open.encode(metric)?;
        let backlog = self
            .gauges
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut family = encoder.encode_descriptor(
            "ordo_outbox_backlog",
            "outbox rows committed and not yet published",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (service, value) in backlog {
            let labels = [("service", service)];
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        let lag = self
            .gauges
            .lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !lag.is_empty() {
            let mut family = encoder.encode_descriptor(
                "ordo_bus_consumer_lag",
                "events of a durable consumer not yet handed over or acknowledged",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (consumer, value) in lag {
                let labels = [("consumer", consumer)];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

pub fn register_bus_metrics(
    registry: &mut Registry,
    stats: Arc<BusStats>,
    gauges: Arc<ScrapeGauges>,
) {
    registry.register_collector(Box::new(BusCollector { stats, gauges }));
}

pub async fn live() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "live"}))
}

/// Ready when every database answers and, in distributed mode, the
/// broker is connected (the in-process bus has nothing to reach).
pub async fn ready(State(state): State<OpsState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    for db in &state.databases {
        let result = db.ping().await;
        let status = match result {
            Ok(_) => "ok".to_owned(),
            Err(err) => {
                ok = false;
                err.to_string()
            }
        };
        checks.insert(format!("{}_db", db.name()), status.into());
    }
    let bus = match &state.broker {
        None => "ok",
        Some(broker) if broker.is_connected() => "ok",
        Some(_) => {
            ok = false;
            "not connected to NATS"
        }
    };
    checks.insert("bus".to_owned(), bus.into());
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        serde_json::json!({"status": if ok { "ready" } else { "unavailable" }, "checks": checks});
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<OpsState>) -> Response {
    let mut backlog = Vec::new();
    for outbox in &state.outboxes {
        if let Ok(n) = outbox.backlog().await {
            backlog.push((
                outbox.service().to_owned(),
                i64::try_from(n).unwrap_or(i64::MAX),
            ));
        }
    }
    *state
        .gauges
        .values
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = backlog;
    if let Some(broker) = &state.broker {
        let mut lag = Vec::new();
        for name in state.bus.consumer_names() {
            if let Ok(n) = broker.consumer_lag(&name).await {
                lag.push((name, i64::try_from(n).unwrap_or(i64::MAX)));
            }
        }
        *state
            .gauges
            .lag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lag;
    }
    if let Ok(n) = state.dead_letters.count_open().await {
        state
            .gauges
            .dead_letters
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
    let mut body = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return ApiError::internal(anyhow::anyhow!("encoding metrics: {err}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

impl OpsState {
    /// Dead letters, newest first, at most `limit` (1 to 1000), for an
    /// admin.
    pub async fn list_dead_letters(
        &self,
        principal: &Principal,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, ApiError> {
        principal.require(&[Role::Admin])?;
        Ok(self.dead_letters.list(limit.clamp(1, 1000)).await?)
    }

    /// An admin asks for a dead letter to be delivered to its consumer
    /// again; the replayer is woken to do it now. A letter is replayed once.
    pub async fn replay_dead_letter(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<DeadLetter, ApiError> {
        principal.require(&[Role::Admin])?;
        let letter = self
            .dead_letters
            .request_replay(id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("no such dead letter"),
                StoreError::Conflict(_) => ApiError::Conflict {
                    slug: "already-replayed",
                    detail: "this dead letter was already replayed".to_owned(),
                },
                other => other.into(),
            })?;
        self.bus.wake_replayer();
        Ok(letter)
    }
}

pub fn admin_router(state: OpsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(outbox_status))
        .with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    id: String,
    consumer: String,
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: String,
    error: String,
    attempts: u32,
    /// parked, replay_requested or replayed.
    status: &'static str,
    parked_at: DateTime<Utc>,
    replayed_at: Option<DateTime<Utc>>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            consumer: d.consumer,
            event_id: d.event_id,
            event_type: d.event_type,
            subject: d.subject,
            error: d.error,
            attempts: d.attempts,
            status: d.status.as_str(),
            parked_at: d.parked_at,
            replayed_at: d.replayed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    items: Vec<DeadLetterView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

/// Events that exhausted their attempts (admin).
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", params(DeadLetterQuery),
    security(("bearer" = [])), responses((status = 200, body = DeadLetterList)))]
async fn list_dead_letters(
    State(state): State<OpsState>,
    principal: Principal,
    Query(q): Query<DeadLetterQuery>,
) -> Result<axum::Json<DeadLetterList>, ApiError> {
    let limit = q.limit.unwrap_or(100) as usize;
    let letters = state.list_dead_letters(&principal, limit).await?;
    Ok(axum::Json(DeadLetterList {
        items: letters.into_iter().map(DeadLetterView::from).collect(),
    }))
}

/// Deliver a dead letter to its consumer again (admin).
#[utoipa::path(post, path = "/v1/admin/dead-letters/{id}/replay", tag = "admin",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = DeadLetterView), (status = 404, body = ordo_http::Problem),
        (status = 409, body = ordo_http::Problem)))]
async fn replay_dead_letter(
    State(state): State<OpsState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let letter = state.replay_dead_letter(&principal, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DeadLetterView::from(letter)),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxStatus {
    pub service: String,
    pub backlog: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerStatus {
    pub name: String,
    /// Events not yet handed over or not yet acknowledged (distributed
    /// mode; in embedded mode the outbox backlog is the lag).
    pub lag: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BusStatus {
    pub outboxes: Vec<OutboxStatus>,
    pub consumers: Vec<ConsumerStatus>,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub replayed: u64,
}

impl OpsState {
    /// Outbox backlog per service, the lag of this process's consumers and
    /// what they did (admins only): the API's and the console's view.
    pub async fn bus_status(&self, principal: &Principal) -> Result<BusStatus, ApiError> {
        principal.require(&[Role::Admin])?;
        let mut outboxes = Vec::new();
        for outbox in &self.outboxes {
            outboxes.push(OutboxStatus {
                service: outbox.service().to_owned(),
                backlog: outbox.backlog().await?,
            });
        }
        let mut consumers = Vec::new();
        for name in self.bus.consumer_names() {
            let lag = match &self.broker {
                Some(broker) => Some(
                    broker
                        .consumer_lag(&name)
                        .await
                        .map_err(ApiError::internal)?,
                ),
                None => None,
            };
            consumers.push(ConsumerStatus { name, lag });
        }
        let stats = self.bus.stats();
        Ok(BusStatus {
            outboxes,
            consumers,
            delivered: stats.delivered.load(Ordering::Relaxed),
            failed_attempts: stats.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            replayed: stats.replayed.load(Ordering::Relaxed),
        })
    }
}

/// Outbox backlog per service, the lag of this process's consumers and
/// what they did (admin).
#[utoipa::path(get, path = "/v1/admin/outbox", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = BusStatus)))]
async fn outbox_status(
    State(state): State<OpsState>,
    principal: Principal,
) -> Result<axum::Json<BusStatus>, ApiError> {
    Ok(axum::Json(state.bus_status(&principal).await?))
}
