//! The courier's console: the shipments on their way with their next stop,
//! and each shipment's route and log with forms to report what happened.
//! A report is read with the API's own parsing and recorded by the
//! delivery service, which decides whether it may happen now.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use ordo_bus::EventContext;
use ordo_delivery::domain::{
    CourierEvent, CourierEventKind, CourierLogEntry, Shipment, ShipmentId, WaypointKind,
};
use ordo_delivery::routes::{CourierEventRequest, CourierEventType};
use ordo_delivery::{Actor, DeliveryService};
use ordo_http::{ApiError, FieldError, RequestId, Role};
use serde::Deserialize;

use super::customer::progress_view;
use super::session::{CsrfForm, Viewer};
use super::{ConsoleState, PageError, layout};

/// How many active shipments the list shows, oldest first.
const ACTIVE_SHOWN: usize = 100;

fn delivery(state: &ConsoleState) -> Result<&Arc<DeliveryService>, PageError> {
    state
        .delivery
        .as_ref()
        .ok_or(PageError::NotServed("delivery"))
}

fn parse_shipment(id: &str) -> Result<ShipmentId, PageError> {
    ShipmentId::parse(id).map_err(|_| PageError::not_found("no such shipment"))
}

fn stop_kind(kind: WaypointKind) -> &'static str {
    match kind {
        WaypointKind::Pickup => "Pickup",
        WaypointKind::Dropoff => "Drop-off",
    }
}

fn reached_count(s: &Shipment) -> usize {
    s.waypoints.iter().filter(|w| s.reached(w.seq)).count()
}

// --- Active shipments --------------------------------------------------------

#[derive(Deserialize)]
pub struct ActiveQuery {
    fragment: Option<String>,
}

fn active_table(shipments: &[Shipment]) -> Markup {
    let now = Utc::now();
    html! {
        @if shipments.is_empty() {
            (layout::empty("No shipments on their way. New ones appear here once their orders are paid."))
        } @else {
            div.card {
                div.table-wrap {
                    table.cards {
                        thead { tr {
                            th { "Shipment" } th { "Status" } th { "Next stop" } th { "ETA" } th { "Progress" }
                        } }
                        tbody {
                            @for s in shipments {
                                @let total = s.route_length();
                                @let reached = reached_count(s);
                                tr {
                                    td data-label="Shipment" {
                                        a.mono href={ "/courier/shipments/" (s.id) } { (s.id) }
                                        br; span.muted.small { "order " span.mono { (s.order_id) } }
                                    }
                                    td data-label="Status" { (layout::badge(s.status.as_str())) }
                                    td data-label="Next stop" {
                                        @match s.waypoint(s.next_waypoint) {
                                            Some(w) => {
                                                strong { (w.seq) ". " (stop_kind(w.kind)) }
                                                br; span.muted.small { (w.location) }
                                            }
                                            None => { span.muted { "—" } }
                                        }
                                    }
                                    td data-label="ETA" {
                                        @match s.eta {
                                            Some(eta) => (layout::time(eta)),
                                            None => span.muted { "—" },
                                        }
                                    }
                                    td data-label="Progress" {
                                        progress max=(total.max(1)) value=(reached) aria-label={ "Stops reached of shipment " (s.id) } { (reached) " of " (total) }
                                        br; span.muted.small { (reached) " of " (total) " stops · since " (layout::ago(s.created_at, now)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if shipments.len() >= ACTIVE_SHOWN {
                p.muted.small { "The " (ACTIVE_SHOWN) " oldest active shipments." }
            }
        }
    }
}

/// `GET /courier`: the shipments on their way, refreshed every 5 s.
pub async fn active(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<ActiveQuery>,
) -> Result<Response, PageError> {
    let shipments = delivery(&state)?
        .active_shipments(viewer.principal(), ACTIVE_SHOWN)
        .await?;
    let table = active_table(&shipments);
    if q.fragment.as_deref() == Some("list") {
        return Ok(table.into_response());
    }
    Ok(layout::page(
        &viewer,
        "Shipments",
        "/courier",
        html! {
            div.page-head {
                h1 { "Active shipments" }
                span.muted.small { (layout::live_dot("active")) "Updates every 5 seconds" }
            }
            p.sub { "Oldest first. Open a shipment to report a pickup, a stop, the delivery or a failure." }
            div #active data-fragment="/courier?fragment=list" data-refresh="5000" { (table) }
        },
    )
    .into_response())
}

// --- One shipment ------------------------------------------------------------

#[derive(Deserialize)]
pub struct ShipmentQuery {
    reported: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct EventForm {
    #[serde(rename = "type", default)]
    kind: String,
    waypoint: Option<String>,
    reason: Option<String>,
}

/// A refused report, shown on the form that sent it.
struct Refused {
    kind: String,
    errors: Vec<(String, String)>,
    conflict: Option<String>,
    reason: String,
}

fn entry_title(e: &CourierLogEntry) -> String {
    match e.kind {
        CourierEventKind::PickedUp => "Picked up".to_owned(),
        CourierEventKind::WaypointReached => match e.waypoint {
            Some(n) => format!("Reached stop {n}"),
            None => "Reached a stop".to_owned(),
        },
        CourierEventKind::Delivered => "Delivered".to_owned(),
        CourierEventKind::Failed => "Failed".to_owned(),
    }
}

fn log_card(viewer: &Viewer, log: &[CourierLogEntry]) -> Markup {
    let me = viewer.principal().client_id.to_string();
    html! {
        section.card aria-labelledby="log-h" {
            h2 #log-h { "Courier log" }
            @if log.is_empty() {
                p.muted { "Nothing reported yet." }
            } @else {
                ol.timeline {
                    @for e in log {
                        li {
                            (layout::time(e.at))
                            span.what {
                                (entry_title(e)) " "
                                span.muted.small { "by " @if e.actor == me { "you" } @else { (e.actor) } }
                            }
                            @if let Some(l) = &e.location { span.detail { (l) } }
                            @if let Some(r) = &e.reason { span.detail { (r) } }
                            @if let Some(eta) = e.eta { span.detail { "ETA " (layout::time(eta)) } }
                        }
                    }
                }
            }
        }
    }
}

fn refused_for(refused: Option<&Refused>, kind: CourierEventType) -> Option<&Refused> {
    refused.filter(|r| r.kind == kind.as_str())
}

fn refusal_notes(refused: Option<&Refused>) -> Markup {
    html! {
        @if let Some(r) = refused {
            (layout::form_errors(&r.errors))
            @if let Some(c) = &r.conflict { div.alert.bad role="alert" { (c) } }
        }
    }
}

fn report_card(viewer: &Viewer, s: &Shipment, refused: Option<&Refused>) -> Markup {
    let action = format!("/courier/shipments/{}/events", s.id);
    let next = s.next_step();
    let failed = refused_for(refused, CourierEventType::Failed);
    html! {
        section.card aria-labelledby="report-h" {
            h2 #report-h { "Report" }
            // Above the forms: a refused report may name a step that is
            // no longer the next one.
            (refusal_notes(refused))
            @match &next {
                None => p.muted { "This shipment is " (s.status.as_str().replace('_', " ")) ": it takes no more reports." },
                Some(CourierEvent::PickedUp) => {
                    form method="post" action=(action) {
                        (viewer.csrf_field())
                        input type="hidden" name="type" value="picked_up";
                        p { "At the first pickup: " (s.waypoints.first().map(|w| w.location.as_str()).unwrap_or("the seller's warehouse")) "." }
                        button type="submit" { "Picked up" }
                    }
                }
                Some(CourierEvent::WaypointReached { waypoint, .. }) => {
                    @let r = refused_for(refused, CourierEventType::WaypointReached);
                    @let error = r.and_then(|r| r.errors.iter().find(|(f, _)| f == "waypoint")).map(|(_, m)| m.as_str());
                    form method="post" action=(action) {
                        (viewer.csrf_field())
                        input type="hidden" name="type" value="waypoint_reached";
                        div.field {
                            label for="waypoint" { "Stop reached" }
                            input.qty #waypoint type="number" name="waypoint" min="1" max=(s.route_length()) value=(waypoint) required
                                aria-invalid=[error.map(|_| "true")] aria-describedby="waypoint-hint";
                            div.hint #waypoint-hint {
                                @match s.waypoint(*waypoint) {
                                    Some(w) => { "Stop " (w.seq) " comes next: " (stop_kind(w.kind).to_lowercase()) " at " (w.location) "." }
                                    None => { "The next stop of the route." }
                                }
                            }
                            @if let Some(e) = error { div.error { (e) } }
                        }
                        button type="submit" { "Waypoint reached" }
                    }
                }
                Some(CourierEvent::Delivered) => {
                    form method="post" action=(action) {
                        (viewer.csrf_field())
                        input type="hidden" name="type" value="delivered";
                        p { "Every pickup is made: hand the parcels over at " (s.waypoints.last().map(|w| w.location.as_str()).unwrap_or("the address")) "." }
                        button type="submit" { "Delivered" }
                    }
                }
                Some(CourierEvent::Failed { .. }) => {}
            }
            @if next.is_some() {
                h3 { "Cannot deliver?" }
                @let error = failed.and_then(|r| r.errors.iter().find(|(f, _)| f == "reason")).map(|(_, m)| m.as_str());
                form method="post" action=(action) data-confirm="Report this shipment as failed? It takes no more reports afterwards." {
                    (viewer.csrf_field())
                    input type="hidden" name="type" value="failed";
                    div.field {
                        label for="reason" { "Reason" }
                        input #reason type="text" name="reason" maxlength="500" required value=(failed.map(|r| r.reason.as_str()).unwrap_or(""))
                            placeholder="e.g. nobody at the address, parcel damaged"
                            aria-invalid=[error.map(|_| "true")];
                        @if let Some(e) = error { div.error { (e) } }
                    }
                    button.danger type="submit" { "Report failed" }
                }
            }
        }
    }
}

async fn shipment_page(
    viewer: &Viewer,
    state: &ConsoleState,
    id: ShipmentId,
    notice: Option<String>,
    refused: Option<Refused>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let service = delivery(state)?;
    let principal = viewer.principal();
    let shipment = service.get(principal, id).await?;
    let log = service.courier_log(principal, id).await?;
    let markup = layout::page(
        viewer,
        &format!("Shipment {}", shipment.id),
        "/courier",
        html! {
            p.small { a href="/courier" { "← Active shipments" } }
            div.page-head {
                h1 { "Shipment " span.mono { (shipment.id) } }
                (layout::badge(shipment.status.as_str()))
            }
            p.sub {
                "Order " span.mono { (shipment.order_id) } " · " (shipment.parcels.len()) " parcel"
                @if shipment.parcels.len() != 1 { "s" } " · planned " (layout::time(shipment.created_at))
            }
            @if let Some(n) = notice { (layout::notice("ok", &n)) }
            div.grid.grid-2 {
                div.stack {
                    section.card aria-labelledby="route-h" {
                        h2 #route-h { "Route" }
                        (progress_view(&shipment, true))
                    }
                    (report_card(viewer, &shipment, refused.as_ref()))
                }
                (log_card(viewer, &log))
            }
        },
    );
    Ok((status, markup).into_response())
}

/// Couriers report; admins may too, as the API lets them.
fn require_courier(viewer: &Viewer) -> Result<(), PageError> {
    Ok(viewer.principal().require(&[Role::Courier, Role::Admin])?)
}

/// `GET /courier/shipments/{id}`.
pub async fn shipment(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Query<ShipmentQuery>,
) -> Result<Response, PageError> {
    require_courier(&viewer)?;
    let id = parse_shipment(&id)?;
    let notice = q
        .reported
        .as_deref()
        .and_then(CourierEventType::parse)
        .map(|t| format!("Reported: {}.", t.as_str().replace('_', " ")));
    shipment_page(&viewer, &state, id, notice, None, StatusCode::OK).await
}

/// The form as the API's request, parsed as the API parses it.
fn event_of(form: &EventForm) -> Result<CourierEvent, ApiError> {
    let Some(event_type) = CourierEventType::parse(&form.kind) else {
        return Err(ApiError::field(
            "type",
            "must be picked_up, waypoint_reached, delivered or failed",
        ));
    };
    let waypoint = match form.waypoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) => Some(n.parse::<i64>().map_err(|_| {
            ApiError::validation(vec![FieldError::new(
                "waypoint",
                "must be a waypoint number from 1",
            )])
        })?),
    };
    CourierEventRequest {
        event_type,
        waypoint,
        location: None,
        eta: None,
        reason: form.reason.clone(),
    }
    .validate()
}

/// `POST /courier/shipments/{id}/events`: the API's courier event.
pub async fn post_event(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, form }: CsrfForm<EventForm>,
) -> Result<Response, PageError> {
    require_courier(&viewer)?;
    let id = parse_shipment(&id)?;
    let outcome = match event_of(&form) {
        Ok(event) => delivery(&state)?
            .record_courier_event(
                &Actor::Client(viewer.principal().clone()),
                id,
                event,
                &EventContext::from_request(request_id),
            )
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let err = match outcome {
        Ok(_) => {
            return Ok(Redirect::to(&format!(
                "/courier/shipments/{id}?reported={}",
                CourierEventType::parse(&form.kind).map_or("", |t| t.as_str())
            ))
            .into_response());
        }
        Err(e) => e,
    };
    let mut refused = Refused {
        kind: form.kind.clone(),
        errors: Vec::new(),
        conflict: None,
        reason: form.reason.clone().unwrap_or_default(),
    };
    let status = match err {
        ApiError::Validation { errors, .. } => {
            refused.errors = errors.into_iter().map(|f| (f.field, f.message)).collect();
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ApiError::Conflict { detail, .. } => {
            refused.conflict = Some(detail);
            StatusCode::CONFLICT
        }
        other => return Err(other.into()),
    };
    shipment_page(&viewer, &state, id, None, Some(refused), status).await
}
