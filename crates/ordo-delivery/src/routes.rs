//! The delivery HTTP API: the shipment view, and courier events.

use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use ordo_bus::EventContext;
use ordo_http::validate::text;
use ordo_http::{ApiError, FieldError, Json, Principal, RequestId};
use ordo_kernel::{ClientId, OrderId, ProductId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{CourierError, CourierEvent, CourierLogEntry, Shipment, ShipmentId};
use crate::service::{Actor, DeliveryError, DeliveryService};

#[derive(Clone)]
pub struct DeliveryState {
    pub service: Arc<DeliveryService>,
}

pub fn router(state: DeliveryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_shipment))
        .routes(routes!(get_order_shipment))
        .routes(routes!(post_courier_event))
        .with_state(state)
}

impl From<DeliveryError> for ApiError {
    fn from(err: DeliveryError) -> Self {
        match err {
            DeliveryError::NotFound => ApiError::not_found("no such shipment"),
            DeliveryError::Forbidden(why) => ApiError::Forbidden(why.to_owned()),
            DeliveryError::Courier(e @ CourierError::NoSuchWaypoint { .. }) => {
                ApiError::field("waypoint", e.to_string())
            }
            DeliveryError::Courier(e) => ApiError::Conflict {
                slug: "invalid-courier-event",
                detail: e.to_string(),
            },
            DeliveryError::Store(e) => e.into(),
            DeliveryError::Other(e) => ApiError::Internal(e),
        }
    }
}

/// The kinds of courier event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CourierEventType {
    PickedUp,
    WaypointReached,
    Delivered,
    Failed,
}

impl CourierEventType {
    pub const ALL: [CourierEventType; 4] = [
        Self::PickedUp,
        Self::WaypointReached,
        Self::Delivered,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PickedUp => "picked_up",
            Self::WaypointReached => "waypoint_reached",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What a courier reports. `waypoint`, `location` and `eta` go with
/// `waypoint_reached`; `reason` with `failed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourierEventRequest {
    #[serde(rename = "type")]
    pub event_type: CourierEventType,
    /// The waypoint reached: the next one of the route (1-based).
    #[schema(minimum = 1, example = 2)]
    pub waypoint: Option<i64>,
    /// Where the courier is; the waypoint's own location when absent.
    pub location: Option<String>,
    /// The courier's estimate of the delivery (RFC 3339).
    #[schema(example = "2026-11-20T15:30:00Z")]
    pub eta: Option<String>,
    /// Why the shipment failed.
    pub reason: Option<String>,
}

impl CourierEventRequest {
    /// Validates the shape of the event: everything but the shipment's
    /// state. The console reads its forms with this too, so both report
    /// the same fields with the same messages.
    pub fn validate(self) -> Result<CourierEvent, ApiError> {
        let mut errors = Vec::new();
        let only_for = |errors: &mut Vec<FieldError>, field: &str, present: bool, kind: &str| {
            if present {
                errors.push(FieldError::new(
                    field,
                    format!("applies to {kind} events only"),
                ));
            }
        };
        let kind = self.event_type;
        if kind != CourierEventType::WaypointReached {
            only_for(
                &mut errors,
                "waypoint",
                self.waypoint.is_some(),
                "waypoint_reached",
            );
            only_for(
                &mut errors,
                "location",
                self.location.is_some(),
                "waypoint_reached",
            );
            only_for(&mut errors, "eta", self.eta.is_some(), "waypoint_reached");
        }
        if kind != CourierEventType::Failed {
            only_for(&mut errors, "reason", self.reason.is_some(), "failed");
        }
        let event = match kind {
            CourierEventType::PickedUp => Some(CourierEvent::PickedUp),
            CourierEventType::Delivered => Some(CourierEvent::Delivered),
            CourierEventType::Failed => match self.reason.as_deref() {
                Some(reason) => Some(CourierEvent::Failed {
                    reason: text(&mut errors, "reason", reason, 500),
                }),
                None => {
                    errors.push(FieldError::new("reason", "is required for failed events"));
                    None
                }
            },
            CourierEventType::WaypointReached => {
                let waypoint = match self.waypoint {
                    None => {
                        errors.push(FieldError::new(
                            "waypoint",
                            "is required for waypoint_reached events",
                        ));
                        None
                    }
                    Some(n) => match u32::try_from(n) {
                        Ok(n) if n >= 1 => Some(n),
                        _ => {
                            errors.push(FieldError::new(
                                "waypoint",
                                "must be a waypoint number from 1",
                            ));
                            None
                        }
                    },
                };
                let location = self
                    .location
                    .as_deref()
                    .map(|l| text(&mut errors, "location", l, 200));
                let eta = self
                    .eta
                    .as_deref()
                    .and_then(|e| match DateTime::parse_from_rfc3339(e) {
                        Ok(t) => Some(t.with_timezone(&Utc)),
                        Err(_) => {
                            errors.push(FieldError::new("eta", "must be an RFC 3339 timestamp"));
                            None
                        }
                    });
                waypoint.map(|waypoint| CourierEvent::WaypointReached {
                    waypoint,
                    location,
                    eta,
                })
            }
        };
        match event {
            Some(event) if errors.is_empty() => Ok(event),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParcelLineView {
    product_id: ProductId,
    quantity: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParcelView {
    #[schema(example = "prc_01JC0000000000000000000000")]
    id: String,
    seller_id: ClientId,
    lines: Vec<ParcelLineView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaypointView {
    seq: u32,
    /// pickup or dropoff.
    #[schema(example = "pickup")]
    kind: &'static str,
    location: String,
    reached: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CourierEventView {
    seq: i64,
    #[serde(rename = "type")]
    #[schema(example = "waypoint_reached")]
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    waypoint: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    actor: String,
    at: DateTime<Utc>,
    event_id: String,
}

impl From<CourierLogEntry> for CourierEventView {
    fn from(e: CourierLogEntry) -> Self {
        Self {
            seq: e.seq,
            event_type: e.kind.as_str(),
            waypoint: e.waypoint,
            location: e.location,
            eta: e.eta,
            reason: e.reason,
            actor: e.actor,
            at: e.at,
            event_id: e.event_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentView {
    #[schema(example = "shp_01JC0000000000000000000000")]
    id: String,
    order_id: OrderId,
    customer_id: ClientId,
    /// created, picked_up, in_transit, delivered, failed or cancelled.
    #[schema(example = "in_transit")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    /// The next waypoint to reach; absent once the route is done.
    next_waypoint: Option<u32>,
    eta: Option<DateTime<Utc>>,
    parcels: Vec<ParcelView>,
    waypoints: Vec<WaypointView>,
    /// What couriers reported, in order.
    events: Vec<CourierEventView>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ShipmentView {
    fn new(s: Shipment, log: Vec<CourierLogEntry>) -> Self {
        let done = s.next_waypoint > s.route_length() || !s.status.is_active();
        let waypoints = s
            .waypoints
            .iter()
            .map(|w| WaypointView {
                seq: w.seq,
                kind: w.kind.as_str(),
                location: w.location.clone(),
                reached: s.reached(w.seq),
            })
            .collect();
        Self {
            id: s.id.to_string(),
            order_id: s.order_id,
            customer_id: s.customer_id,
            status: s.status.as_str(),
            failure_reason: s.failure_reason,
            next_waypoint: (!done).then_some(s.next_waypoint),
            eta: s.eta,
            parcels: s
                .parcels
                .into_iter()
                .map(|p| ParcelView {
                    id: p.id.to_string(),
                    seller_id: p.seller_id,
                    lines: p
                        .lines
                        .into_iter()
                        .map(|l| ParcelLineView {
                            product_id: l.product_id,
                            quantity: l.quantity,
                        })
                        .collect(),
                })
                .collect(),
            waypoints,
            events: log.into_iter().map(CourierEventView::from).collect(),
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn parse_shipment_id(id: &str) -> Result<ShipmentId, ApiError> {
    // A malformed id names no shipment: the same answer as an unknown one.
    ShipmentId::parse(id).map_err(|_| ApiError::not_found("no such shipment"))
}

async fn view(state: &DeliveryState, shipment: Shipment) -> Result<ShipmentView, ApiError> {
    let log = state.service.store().courier_log(shipment.id).await?;
    Ok(ShipmentView::new(shipment, log))
}

/// One shipment, with its route and what couriers reported. Couriers and
/// admins see every shipment, a customer its own, a seller those that
/// carry its parcels.
#[utoipa::path(get, path = "/v1/shipments/{id}", tag = "delivery", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = ShipmentView), (status = 404, body = ordo_http::Problem)))]
async fn get_shipment(
    State(state): State<DeliveryState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ShipmentView>, ApiError> {
    let shipment = state
        .service
        .get(&principal, parse_shipment_id(&id)?)
        .await?;
    Ok(axum::Json(view(&state, shipment).await?))
}

/// The shipment of an order, once the order is paid.
#[utoipa::path(get, path = "/v1/orders/{id}/shipment", tag = "delivery", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = ShipmentView), (status = 404, body = ordo_http::Problem)))]
async fn get_order_shipment(
    State(state): State<DeliveryState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ShipmentView>, ApiError> {
    let order = OrderId::parse(&id).map_err(|_| ApiError::not_found("no such shipment"))?;
    let shipment = state.service.for_order(&principal, order).await?;
    Ok(axum::Json(view(&state, shipment).await?))
}

/// Report a courier event (couriers and admins): `picked_up` at the first
/// pickup, `waypoint_reached` for each next waypoint in order,
/// `delivered` once every pickup is made, or `failed`. An event the
/// shipment's state does not allow, a repeated one included, is a 409.
#[utoipa::path(post, path = "/v1/shipments/{id}/events", tag = "delivery",
    params(("id" = String, Path)), request_body = CourierEventRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ShipmentView),
        (status = 400, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 404, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 409, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn post_courier_event(
    State(state): State<DeliveryState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    Json(body): Json<CourierEventRequest>,
) -> Result<axum::Json<ShipmentView>, ApiError> {
    principal.require(&[ordo_http::Role::Courier, ordo_http::Role::Admin])?;
    let id = parse_shipment_id(&id)?;
    let event = body.validate()?;
    let context = EventContext::from_request(request_id);
    let shipment = state
        .service
        .record_courier_event(&Actor::Client(principal), id, event, &context)
        .await?;
    Ok(axum::Json(view(&state, shipment).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_are_the_ones_the_api_reads() {
        for t in CourierEventType::ALL {
            let read: CourierEventType =
                serde_json::from_value(serde_json::json!(t.as_str())).unwrap();
            assert_eq!(read, t);
            assert_eq!(CourierEventType::parse(t.as_str()), Some(t));
        }
    }
}
