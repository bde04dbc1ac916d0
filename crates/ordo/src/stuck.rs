//! Stuck orders: orders whose status has not moved for longer than their
//! stage's threshold, each with the likely causes this process can see
//! and the operator actions that apply.
//!
//! One definition serves the admin API and the console: both call
//! [`StuckOrders::find`]. The finder reads the orders store, the dead
//! letters, and whatever of payments (the gateway breaker), delivery
//! (shipments) and inventory (holds) this process runs; what it cannot
//! check it names in [`StuckReport::unchecked`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use chrono::{DateTime, Utc};
use ordo_bus::{DeadLetterStatus, DeadLetterStore};
use ordo_delivery::ShipmentStore;
use ordo_delivery::domain::ShipmentStatus;
use ordo_http::{ApiError, FieldError, Principal, Query, Role};
use ordo_inventory::StockStore;
use ordo_inventory::stock::ReservationStatus;
use ordo_kernel::{ClientId, Clock, Currency, OrderId, ShipmentId, StoreError};
use ordo_orders::OrderStore;
use ordo_orders::domain::{Order, OrderStatus};
use ordo_payments::{BreakerState, HttpGateway};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long an order may stay in each live status before it counts as
/// stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct StuckThresholds {
    /// Waiting for inventory to reserve the lines.
    #[serde(serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub pending: Duration,
    /// Waiting for payments to charge the customer.
    #[serde(serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub confirmed: Duration,
    /// Waiting for a courier to pick the parcels up.
    #[serde(serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub paid: Duration,
    /// Waiting for the courier to deliver.
    #[serde(serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub shipped: Duration,
}

impl Default for StuckThresholds {
    /// Each a good deal longer than the stage takes when all is well,
    /// retries included:
    /// - pending, 1 min: the reservation is one local transaction right
    ///   after `order.created`; a minute covers the bus's retries with
    ///   backoff and a relay restart.
    /// - confirmed, 2 min: a charge is a few gateway calls, each retried
    ///   within seconds, and the breaker cools down in 10 s; past 2 min the
    ///   payment is not coming by itself, and the operator still has most
    ///   of the 30-minute hold to act before it expires.
    /// - paid, 15 min: the shipment is planned at once; a pickup takes a
    ///   courier's trip, minutes with the simulator's pace or a nearby
    ///   courier.
    /// - shipped, 2 h: a route of a few waypoints within a city.
    fn default() -> Self {
        Self {
            pending: Duration::from_secs(60),
            confirmed: Duration::from_secs(120),
            paid: Duration::from_secs(15 * 60),
            shipped: Duration::from_secs(2 * 3600),
        }
    }
}

impl StuckThresholds {
    /// The live statuses and their thresholds, in saga order.
    pub fn stages(&self) -> [(OrderStatus, Duration); 4] {
        [
            (OrderStatus::Pending, self.pending),
            (OrderStatus::Confirmed, self.confirmed),
            (OrderStatus::Paid, self.paid),
            (OrderStatus::Shipped, self.shipped),
        ]
    }
}

/// What to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckQuery {
    pub thresholds: StuckThresholds,
    /// At most this many orders per stage, the longest waiting first.
    pub limit: usize,
}

impl StuckQuery {
    pub const DEFAULT_LIMIT: usize = 50;
    pub const MAX_LIMIT: usize = 500;
}

impl Default for StuckQuery {
    fn default() -> Self {
        Self {
            thresholds: StuckThresholds::default(),
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// A kind of cause, for the list of those that could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    DeadLetter,
    GatewayBreakerOpen,
    WaitingForCourier,
    HoldExpired,
}

/// Why an order is likely stuck.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// Events of this order that a consumer gave up on.
    DeadLetter {
        /// The dead letters (parked or awaiting replay) whose subject is
        /// the order.
        dead_letter_ids: Vec<String>,
        consumers: Vec<String>,
    },
    /// The payment gateway's circuit breaker (as this process sees it)
    /// refuses charges.
    GatewayBreakerOpen {
        /// open or half_open.
        breaker: String,
    },
    /// A shipment exists and no courier event has moved it on.
    WaitingForCourier {
        #[schema(value_type = String)]
        shipment_id: ShipmentId,
        /// created (not picked up), picked_up or in_transit.
        shipment_status: String,
    },
    /// The stock hold ran out and the order was not cancelled for it.
    HoldExpired {
        expires_at: Option<DateTime<Utc>>,
        /// Whether inventory already released the stock.
        released: bool,
    },
    /// Nothing this process can see explains it.
    Unknown,
}

/// What an operator can do about a stuck order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `POST /v1/admin/dead-letters/{id}/replay` for each of its dead
    /// letters.
    ReplayDeadLetters,
    /// `POST /v1/orders/{id}/cancel`: the saga compensates (stock released,
    /// payment voided or refunded).
    Cancel,
    /// `POST /v1/payments/{id}/refund`: the order is past cancelling.
    Refund,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StuckOrder {
    #[schema(value_type = String)]
    pub id: OrderId,
    #[serde(serialize_with = "status_name")]
    #[schema(value_type = String)]
    pub status: OrderStatus,
    /// When the status last changed.
    pub since: DateTime<Utc>,
    /// How long ago that was, in milliseconds.
    #[serde(rename = "age_ms", serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub age: Duration,
    #[schema(value_type = String)]
    pub customer: ClientId,
    /// A decimal string in the order's currency.
    pub total: String,
    #[schema(value_type = String)]
    pub currency: Currency,
    /// At least one; `unknown` alone when nothing explains it.
    pub causes: Vec<Cause>,
    pub actions: Vec<Action>,
}

/// The stuck orders of one status.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StuckStage {
    #[serde(serialize_with = "status_name")]
    #[schema(value_type = String)]
    pub status: OrderStatus,
    #[serde(rename = "threshold_ms", serialize_with = "millis")]
    #[schema(value_type = u64)]
    pub threshold: Duration,
    /// The longest waiting first.
    pub orders: Vec<StuckOrder>,
    /// More orders of this status are stuck than the limit let through.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StuckReport {
    pub checked_at: DateTime<Utc>,
    /// Pending, confirmed, paid and shipped, each listed even when empty.
    pub stages: Vec<StuckStage>,
    /// Causes this process could not check: their services run elsewhere.
    pub unchecked: Vec<CauseKind>,
}

impl StuckReport {
    /// Stuck orders of every stage.
    pub fn total(&self) -> usize {
        self.stages.iter().map(|s| s.orders.len()).sum()
    }
}

/// Finds stuck orders. Needs the orders store and the dead letters; the
/// gateway, shipments and holds are checked when this process has them.
pub struct StuckOrders {
    orders: Arc<dyn OrderStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    clock: Arc<dyn Clock>,
    gateway: Option<Arc<HttpGateway>>,
    shipments: Option<Arc<dyn ShipmentStore>>,
    holds: Option<Arc<dyn StockStore>>,
}

/// Open dead letters looked at per report, newest first: far more than an
/// operator leaves parked.
const DEAD_LETTER_SCAN: usize = 1000;

impl StuckOrders {
    pub fn new(
        orders: Arc<dyn OrderStore>,
        dead_letters: Arc<dyn DeadLetterStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            orders,
            dead_letters,
            clock,
            gateway: None,
            shipments: None,
            holds: None,
        }
    }

    /// The payment gateway client of this process (its breaker).
    pub fn with_gateway(mut self, gateway: Arc<HttpGateway>) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// The delivery service's shipments.
    pub fn with_shipments(mut self, shipments: Arc<dyn ShipmentStore>) -> Self {
        self.shipments = Some(shipments);
        self
    }

    /// The inventory service's reservations.
    pub fn with_holds(mut self, holds: Arc<dyn StockStore>) -> Self {
        self.holds = Some(holds);
        self
    }

    /// The causes this finder cannot check.
    pub fn unchecked(&self) -> Vec<CauseKind> {
        let mut unchecked = Vec::new();
        if self.gateway.is_none() {
            unchecked.push(CauseKind::GatewayBreakerOpen);
        }
        if self.shipments.is_none() {
            unchecked.push(CauseKind::WaitingForCourier);
        }
        if self.holds.is_none() {
            unchecked.push(CauseKind::HoldExpired);
        }
        unchecked
    }

    #[tracing::instrument(skip(self))]
    pub async fn find(&self, query: &StuckQuery) -> Result<StuckReport, StoreError> {
        let now = self.clock.now();
        let limit = query.limit.clamp(1, StuckQuery::MAX_LIMIT);
        let mut stages = Vec::new();
        for (status, threshold) in query.thresholds.stages() {
            let before =
                now - chrono::Duration::from_std(threshold).unwrap_or(chrono::TimeDelta::MAX);
            let mut orders = self
                .orders
                .unchanged_since(status, before, limit + 1)
                .await?;
            let more = orders.len() > limit;
            orders.truncate(limit);
            stages.push((status, threshold, orders, more));
        }
        let letters = if stages.iter().any(|(_, _, orders, _)| !orders.is_empty()) {
            self.open_dead_letters().await?
        } else {
            HashMap::new()
        };
        let breaker = self.gateway.as_ref().map(|g| g.breaker_state());
        let mut report = Vec::new();
        for (status, threshold, orders, more) in stages {
            let mut found = Vec::with_capacity(orders.len());
            for order in orders {
                let letters = letters.get(&order.id.to_string());
                found.push(self.diagnose(order, now, letters, breaker).await?);
            }
            report.push(StuckStage {
                status,
                threshold,
                orders: found,
                more,
            });
        }
        Ok(StuckReport {
            checked_at: now,
            stages: report,
            unchecked: self.unchecked(),
        })
    }

    /// Parked letters and those awaiting replay, by subject (an order id).
    async fn open_dead_letters(
        &self,
    ) -> Result<HashMap<String, Vec<(String, String)>>, StoreError> {
        let mut by_subject: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for letter in self.dead_letters.list(DEAD_LETTER_SCAN).await? {
            if letter.status != DeadLetterStatus::Replayed {
                by_subject
                    .entry(letter.subject)
                    .or_default()
                    .push((letter.id, letter.consumer));
            }
        }
        Ok(by_subject)
    }

    async fn diagnose(
        &self,
        order: Order,
        now: DateTime<Utc>,
        letters: Option<&Vec<(String, String)>>,
        breaker: Option<BreakerState>,
    ) -> Result<StuckOrder, StoreError> {
        let mut causes = Vec::new();
        let mut actions = Vec::new();
        if let Some(letters) = letters.filter(|l| !l.is_empty()) {
            let mut consumers: Vec<String> = letters.iter().map(|(_, c)| c.clone()).collect();
            consumers.sort();
            consumers.dedup();
            causes.push(Cause::DeadLetter {
                dead_letter_ids: letters.iter().map(|(id, _)| id.clone()).collect(),
                consumers,
            });
            actions.push(Action::ReplayDeadLetters);
        }
        match order.status {
            OrderStatus::Confirmed => {
                if let Some(state @ (BreakerState::Open | BreakerState::HalfOpen)) = breaker {
                    causes.push(Cause::GatewayBreakerOpen {
                        breaker: state.as_str().to_owned(),
                    });
                }
                if let Some(cause) = self.expired_hold(order.id, now).await? {
                    causes.push(cause);
                }
            }
            OrderStatus::Paid | OrderStatus::Shipped => {
                if let Some(cause) = self.courier_awaited(order.id).await? {
                    causes.push(cause);
                }
            }
            _ => {}
        }
        if causes.is_empty() {
            causes.push(Cause::Unknown);
        }
        match order.status {
            OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::Paid
                if order.cancel_requested.is_none() =>
            {
                actions.push(Action::Cancel);
            }
            OrderStatus::Shipped => actions.push(Action::Refund),
            _ => {}
        }
        Ok(StuckOrder {
            id: order.id,
            status: order.status,
            since: order.updated_at,
            age: (now - order.updated_at).to_std().unwrap_or_default(),
            customer: order.customer_id,
            total: order.currency.format(order.total),
            currency: order.currency,
            causes,
            actions,
        })
    }

    async fn expired_hold(
        &self,
        order: OrderId,
        now: DateTime<Utc>,
    ) -> Result<Option<Cause>, StoreError> {
        let Some(holds) = &self.holds else {
            return Ok(None);
        };
        let Some(hold) = holds.reservation(order).await? else {
            return Ok(None);
        };
        let expired = match hold.status {
            ReservationStatus::Active => hold.expires_at.is_some_and(|at| at <= now),
            ReservationStatus::Released => hold.release_reason.as_deref() == Some("expired"),
            _ => false,
        };
        Ok(expired.then(|| Cause::HoldExpired {
            expires_at: hold.expires_at,
            released: hold.status == ReservationStatus::Released,
        }))
    }

    async fn courier_awaited(&self, order: OrderId) -> Result<Option<Cause>, StoreError> {
        let Some(shipments) = &self.shipments else {
            return Ok(None);
        };
        let Some(shipment) = shipments.find_by_order(order).await? else {
            return Ok(None);
        };
        Ok(matches!(
            shipment.status,
            ShipmentStatus::Created | ShipmentStatus::PickedUp | ShipmentStatus::InTransit
        )
        .then(|| Cause::WaitingForCourier {
            shipment_id: shipment.id,
            shipment_status: shipment.status.as_str().to_owned(),
        }))
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn status_name<S: Serializer>(status: &OrderStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

// ---- HTTP ----

pub fn admin_router(finder: Arc<StuckOrders>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_stuck_orders))
        .with_state(finder)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StuckParams {
    /// Threshold of pending orders: `250ms`, `30s`, `5m`, `2h` (default 1m).
    pub pending: Option<String>,
    /// Threshold of confirmed orders (default 2m).
    pub confirmed: Option<String>,
    /// Threshold of paid orders (default 15m).
    pub paid: Option<String>,
    /// Threshold of shipped orders (default 2h).
    pub shipped: Option<String>,
    /// At most this many orders per stage (default 50, at most 500).
    pub limit: Option<String>,
}

/// Thresholds longer than this are surely a mistake (a unit left out).
const MAX_THRESHOLD: Duration = Duration::from_secs(30 * 24 * 3600);

impl StuckParams {
    /// The query, or a field error for each bad parameter.
    pub fn parse(&self) -> Result<StuckQuery, ApiError> {
        let mut errors = Vec::new();
        let mut query = StuckQuery::default();
        let thresholds = &mut query.thresholds;
        for (field, value, slot) in [
            ("pending", &self.pending, &mut thresholds.pending),
            ("confirmed", &self.confirmed, &mut thresholds.confirmed),
            ("paid", &self.paid, &mut thresholds.paid),
            ("shipped", &self.shipped, &mut thresholds.shipped),
        ] {
            let Some(value) = value else { continue };
            match crate::config::parse_duration(value) {
                Ok(d) if d.is_zero() => errors.push(FieldError::new(field, "must be positive")),
                Ok(d) if d > MAX_THRESHOLD => {
                    errors.push(FieldError::new(field, "must be at most 30 days"));
                }
                Ok(d) => *slot = d,
                Err(_) => errors.push(FieldError::new(
                    field,
                    "must be a duration such as 500ms, 30s, 5m or 2h",
                )),
            }
        }
        if let Some(limit) = &self.limit {
            match limit.parse::<usize>() {
                Ok(n) if (1..=StuckQuery::MAX_LIMIT).contains(&n) => query.limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {}", StuckQuery::MAX_LIMIT),
                )),
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

/// Orders whose status has not moved for longer than its stage's
/// threshold, by stage, with likely causes and actions (admin).
#[utoipa::path(get, path = "/v1/admin/stuck-orders", tag = "admin", params(StuckParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = StuckReport),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn list_stuck_orders(
    State(finder): State<Arc<StuckOrders>>,
    principal: Principal,
    Query(params): Query<StuckParams>,
) -> Result<axum::Json<StuckReport>, ApiError> {
    principal.require(&[Role::Admin])?;
    let query = params.parse()?;
    Ok(axum::Json(finder.find(&query).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> StuckParams {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        };
        StuckParams {
            pending: get("pending"),
            confirmed: get("confirmed"),
            paid: get("paid"),
            shipped: get("shipped"),
            limit: get("limit"),
        }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation { errors, .. } => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn parameters_override_the_default_thresholds() {
        let query = params(&[("confirmed", "1s"), ("shipped", "3h"), ("limit", "5")])
            .parse()
            .unwrap();
        assert_eq!(query.thresholds.pending, Duration::from_secs(60));
        assert_eq!(query.thresholds.confirmed, Duration::from_secs(1));
        assert_eq!(query.thresholds.shipped, Duration::from_secs(3 * 3600));
        assert_eq!(query.limit, 5);
        assert_eq!(params(&[]).parse().unwrap(), StuckQuery::default());
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let err = params(&[
            ("pending", "soon"),
            ("confirmed", "0s"),
            ("paid", "90d"),
            ("shipped", "999h"),
            ("limit", "0"),
        ])
        .parse()
        .unwrap_err();
        assert_eq!(
            fields(err),
            ["pending", "confirmed", "paid", "shipped", "limit"]
        );
    }
}
