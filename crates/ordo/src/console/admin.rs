//! The admin's overview, order search and operations view of one order:
//! the same service calls as the API's admin routes, with the admin's
//! principal, drawn as pages.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};
use ordo_bus::EventContext;
use ordo_delivery::domain::{CourierLogEntry, Shipment};
use ordo_http::{ApiError, FieldError, RequestId, Role};
use ordo_inventory::stock::Reservation;
use ordo_kernel::OrderId;
use ordo_orders::domain::{Order, OrderStatus};
use ordo_orders::routes::ListFilterInput;
use ordo_orders::service::Overview;
use ordo_orders::store::{LatencyBucket, TimelineEntry};
use ordo_payments::BreakerState;
use ordo_payments::domain::{Attempt, PaymentId};
use ordo_payments::service::PaymentRecord;
use serde::Deserialize;

use super::charts::{self, LineChart, Series};
use super::customer::{
    ORDERS_PAGE, decode_cursor, encode_cursor, orders_table_linked, progress_view, reason_in_words,
};
use super::session::{CsrfForm, Viewer};
use super::{ConsoleState, PageError, layout};
use crate::ops::BusStatus;

fn require_admin(viewer: &Viewer) -> Result<(), PageError> {
    viewer.principal().require(&[Role::Admin])?;
    Ok(())
}

// --- The overview --------------------------------------------------------------

#[derive(Deserialize)]
pub struct FragmentQuery {
    fragment: Option<String>,
}

/// How many complete minutes the orders-per-second figure covers.
const RATE_MINUTES: usize = 5;

/// `GET /admin`: counts, series and the state of the machinery, the
/// region re-drawn every few seconds (`?fragment=overview`).
pub async fn overview(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<FragmentQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let principal = viewer.principal();
    let overview = state.orders()?.overview(principal).await?;
    let bus = match &state.ops {
        Some(ops) => Some(ops.bus_status(principal).await?),
        None => None,
    };
    let breaker = state.gateway.as_ref().map(|g| g.breaker_state());
    let region = overview_region(&overview, bus.as_ref(), breaker);
    if q.fragment.as_deref() == Some("overview") {
        return Ok(region.into_response());
    }
    Ok(layout::page_with(
        &viewer,
        "Overview",
        "/admin",
        &state.banners(),
        html! {
            div.page-head {
                h1 { "Overview" }
                span.muted.small { (layout::live_dot("overview")) "updates every 3 s" }
            }
            div #overview data-fragment="/admin?fragment=overview" data-refresh="3000" {
                (region)
            }
        },
    )
    .into_response())
}

fn overview_region(o: &Overview, bus: Option<&BusStatus>, breaker: Option<BreakerState>) -> Markup {
    // The current minute is still filling: the series end before it.
    let complete = &o.created[..o.created.len().saturating_sub(1)];
    let from = complete.first().map_or(o.series_since, |b| b.start);
    let to = complete.last().map_or(o.at, |b| b.start);
    let created = [Series {
        label: "orders".into(),
        alt: false,
        points: complete
            .iter()
            .map(|b| (b.start, Some(b.count as f64)))
            .collect(),
    }];
    let latency = |buckets: &[LatencyBucket]| -> [Series; 2] {
        let at = |start: DateTime<Utc>| buckets.iter().find(|b| b.start == start);
        [
            Series {
                label: "p50".into(),
                alt: false,
                points: complete
                    .iter()
                    .map(|b| (b.start, at(b.start).map(|l| l.p50_seconds)))
                    .collect(),
            },
            Series {
                label: "p95".into(),
                alt: true,
                points: complete
                    .iter()
                    .map(|b| (b.start, at(b.start).map(|l| l.p95_seconds)))
                    .collect(),
            },
        ]
    };
    let paid = latency(&o.latencies.create_to_paid);
    let shipped = latency(&o.latencies.paid_to_shipped);
    let most = o.cancellations.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let cancelled: u64 = o.cancellations.iter().map(|(_, n)| *n).sum();
    let window = (o.at - o.counts_since).num_minutes();
    html! {
        p.muted.small { "Orders placed in the last " (window) " minutes, as of " (layout::time(o.at)) "." }
        div.grid.grid-4 {
            div.card.stat {
                span.value { (format!("{:.2}", o.orders_per_second(RATE_MINUTES))) }
                span.label { "orders/s, last " (RATE_MINUTES) " min" }
            }
            @for (status, n) in &o.by_status {
                a.card.stat href={ "/admin/orders?status=" (status.as_str()) } {
                    span.value { (n) }
                    span.label { (status.as_str()) }
                }
            }
        }
        div.grid.grid-3 {
            section.card {
                h2 { "Orders per minute" }
                (charts::line_chart(&LineChart { title: "Orders placed per minute", unit: "orders", from, to, series: &created, area: true }))
            }
            section.card {
                h2 { "Placed → paid" }
                (charts::line_chart(&LineChart { title: "Seconds from placing to payment, by the minute of payment", unit: "s", from, to, series: &paid, area: false }))
            }
            section.card {
                h2 { "Paid → shipped" }
                (charts::line_chart(&LineChart { title: "Seconds from payment to pickup, by the minute of pickup", unit: "s", from, to, series: &shipped, area: false }))
            }
        }
        div.grid.grid-3 {
            section.card {
                h2 { "Cancellations by reason" }
                @if o.cancellations.is_empty() {
                    p.muted { "No order of the window was cancelled." }
                } @else {
                    ul.bars aria-label={ (cancelled) " cancelled orders by reason" } {
                        @for (reason, n) in &o.cancellations {
                            li title=(reason_in_words(reason)) {
                                span { (reason.replace('_', " ")) }
                                (bar(*n, most))
                                span.n { (n) }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Outbox and consumers" }
                @match bus {
                    None => p.muted { "This process does not serve the bus views." },
                    Some(bus) => {
                        div.table-wrap { table {
                            thead { tr { th { "Outbox" } th.num { "Backlog" } } }
                            tbody { @for ob in &bus.outboxes {
                                tr { td { (ob.service) } td.num { @if ob.backlog > 0 { span.badge.warn { (ob.backlog) } } @else { "0" } } }
                            } }
                        } }
                        div.table-wrap { table {
                            thead { tr { th { "Consumer" } th.num { "Lag" } } }
                            tbody { @for c in &bus.consumers {
                                tr { td.small.mono { (c.name) } td.num { @match c.lag { Some(n) => (n), None => span.muted title="in-process bus: the outbox backlog is the lag" { "–" } } } }
                            } }
                        } }
                        p.muted.small {
                            (bus.delivered) " delivered · " (bus.failed_attempts) " failed attempts · "
                            a href="/admin/dead-letters" { (bus.dead_lettered) " dead-lettered" }
                        }
                    }
                }
            }
            section.card {
                h2 { "Payment gateway" }
                @match breaker {
                    None => p.muted { "This process does not run payments." },
                    Some(state) => {
                        p { "Circuit breaker " (layout::badge(state.as_str())) }
                        p.muted.small { (breaker_words(state)) }
                    }
                }
            }
        }
    }
}

fn breaker_words(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "Calls go through.",
        BreakerState::Open => {
            "The gateway failed repeatedly: calls are refused at once until the cooldown ends."
        }
        BreakerState::HalfOpen => "Cooling down: the next call probes whether the gateway is back.",
    }
}

/// A bar of `n` out of `most`, as SVG: its length is an attribute, which
/// the page's style policy allows where an inline style is refused.
fn bar(n: u64, most: u64) -> Markup {
    let width = if most == 0 {
        0.0
    } else {
        (n as f64 / most as f64 * 100.0).max(1.0)
    };
    html! {
        svg.bar-track viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" {
            rect width=(format!("{width:.1}")) height="10" rx="2" {}
        }
    }
}

// --- The order search ------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    seller: String,
    #[serde(default)]
    created_from: String,
    #[serde(default)]
    created_to: String,
    /// `key=value`, one a line.
    #[serde(default)]
    attributes: String,
    #[serde(default)]
    before: String,
}

fn given(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// A `datetime-local` value (`2024-05-01T12:30`, taken as UTC) as RFC
/// 3339; anything else is passed on as typed, for the API's parser to
/// accept (an RFC 3339 instant) or refuse.
fn instant_text(value: &str) -> String {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|t| t.and_utc().to_rfc3339())
        .unwrap_or_else(|| value.to_owned())
}

impl SearchQuery {
    /// The `attr.<key>` parameters of the attribute lines, as the API
    /// takes them; a line without `=` is refused here.
    fn attribute_params(&self, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
        let mut params = Vec::new();
        for line in self
            .attributes
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            match line.split_once('=') {
                Some((key, value)) => {
                    params.push((format!("attr.{}", key.trim()), value.trim().to_owned()));
                }
                None => errors.push(FieldError::new(
                    "attributes",
                    format!("{line:?} is not key=value"),
                )),
            }
        }
        params
    }

    /// The query string of this search, for the next page's link.
    fn query_string(&self, before: Option<&str>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("customer", &self.customer),
            ("seller", &self.seller),
            ("created_from", &self.created_from),
            ("created_to", &self.created_to),
            ("attributes", &self.attributes),
        ] {
            if !v.trim().is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            s.append_pair("before", b);
        }
        s.finish()
    }
}

/// `GET /admin/orders`: every order, filtered as `GET /v1/orders` filters
/// them, newest first, a keyset page at a time.
pub async fn orders(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let mut errors = Vec::new();
    let attributes = q.attribute_params(&mut errors);
    let (from, to) = (
        given(&q.created_from).map(instant_text),
        given(&q.created_to).map(instant_text),
    );
    let mut filter = ListFilterInput {
        status: given(&q.status),
        customer: given(&q.customer),
        seller: given(&q.seller),
        created_from: from.as_deref(),
        created_to: to.as_deref(),
        attributes: &attributes,
    }
    .parse(&mut errors);
    let errors: Vec<(String, String)> = errors
        .into_iter()
        .map(|e| {
            let message = match e.field.as_str() {
                "created_from" | "created_to" => {
                    "must be a date and time (UTC), such as 2024-05-01T12:30".to_owned()
                }
                _ => e.message,
            };
            (e.field, message)
        })
        .collect();
    let (status, results) = if errors.is_empty() {
        filter.before = decode_cursor(given(&q.before))?;
        let mut orders = state
            .orders()?
            .list(viewer.principal(), filter, ORDERS_PAGE + 1)
            .await?;
        let next = (orders.len() > ORDERS_PAGE)
            .then(|| {
                orders.truncate(ORDERS_PAGE);
                orders.last().map(|o| encode_cursor(o.id))
            })
            .flatten();
        (StatusCode::OK, Some((orders, next)))
    } else {
        (StatusCode::UNPROCESSABLE_ENTITY, None)
    };
    let invalid = |field: &str| {
        errors
            .iter()
            .any(|(f, _)| f == field || (field == "attributes" && f.starts_with("attr")))
            .then_some("true")
    };
    let markup = layout::page_with(
        &viewer,
        "Orders",
        "/admin/orders",
        &state.banners(),
        html! {
            div.page-head { h1 { "Orders" } }
            (layout::form_errors(&errors))
            form.card.search method="get" action="/admin/orders" {
                div.grid.grid-3 {
                    div.field {
                        label for="status" { "Status" }
                        select #status name="status" aria-invalid=[invalid("status")] {
                            option value="" { "any" }
                            @for s in OrderStatus::ALL {
                                option value=(s.as_str()) selected[q.status == s.as_str()] { (s.as_str()) }
                            }
                        }
                    }
                    div.field {
                        label for="customer" { "Customer id" }
                        input #customer type="text" name="customer" value=(q.customer) placeholder="cli_…"
                            spellcheck="false" aria-invalid=[invalid("customer")];
                    }
                    div.field {
                        label for="seller" { "Seller id" }
                        input #seller type="text" name="seller" value=(q.seller) placeholder="cli_…"
                            spellcheck="false" aria-invalid=[invalid("seller")];
                    }
                    div.field {
                        label for="created_from" { "Placed from (UTC)" }
                        input #created_from type="datetime-local" name="created_from" value=(q.created_from)
                            aria-invalid=[invalid("created_from")];
                    }
                    div.field {
                        label for="created_to" { "Placed before (UTC)" }
                        input #created_to type="datetime-local" name="created_to" value=(q.created_to)
                            aria-invalid=[invalid("created_to")];
                    }
                    div.field {
                        label for="attributes" { "Attributes" }
                        textarea #attributes name="attributes" rows="2" placeholder="gift=true"
                            spellcheck="false" aria-invalid=[invalid("attributes")] aria-describedby="attributes-help" { (q.attributes) }
                        span #attributes-help .muted.small { "key=value, one a line; true, false, null and numbers are JSON values" }
                    }
                }
                div.row {
                    button type="submit" { "Search" }
                    a.button.secondary href="/admin/orders" { "Clear" }
                }
            }
            @if let Some((orders, next)) = &results {
                @if orders.is_empty() {
                    (layout::empty("No order matches."))
                } @else {
                    div.card { (orders_table_linked(orders, true, "/admin/orders/")) }
                    @if let Some(cursor) = next {
                        nav.pager aria-label="Pages" {
                            span {}
                            a.button.secondary href={ "/admin/orders?" (q.query_string(Some(cursor))) } { "Older orders" }
                        }
                    }
                }
            }
        },
    );
    Ok((status, markup).into_response())
}

// --- One order, every service ----------------------------------------------------

#[derive(Deserialize)]
pub struct OrderQuery {
    fragment: Option<String>,
    refunded: Option<String>,
}

/// What each service holds of one order.
struct Services {
    order: Order,
    timeline: Vec<TimelineEntry>,
    reservation: Option<Option<Reservation>>,
    payments: Option<Vec<(PaymentRecord, Vec<Attempt>)>>,
    shipment: Option<Option<(Shipment, Vec<CourierLogEntry>)>>,
}

/// Reads the order from every service this process runs (`None`: not
/// run here), one call each.
async fn services(
    state: &ConsoleState,
    viewer: &Viewer,
    id: OrderId,
) -> Result<Services, PageError> {
    let principal = viewer.principal();
    let orders = state.orders()?;
    let (order, timeline) = orders.with_timeline(principal, id).await?;
    let reservation = match &state.inventory {
        Some(inventory) => Some(inventory.reservation(principal, id).await?),
        None => None,
    };
    let payments = match &state.payments {
        Some(payments) => {
            let mut found = Vec::new();
            for record in payments.payments_for_order(principal, id).await? {
                let attempts = payments.attempts(principal, record.payment.id).await?;
                found.push((record, attempts));
            }
            Some(found)
        }
        None => None,
    };
    let shipment = match &state.delivery {
        Some(delivery) => match delivery.for_order(principal, id).await {
            Ok(s) => {
                let log = delivery.courier_log(principal, s.id).await?;
                Some(Some((s, log)))
            }
            Err(ordo_delivery::DeliveryError::NotFound) => Some(None),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    Ok(Services {
        order,
        timeline,
        reservation,
        payments,
        shipment,
    })
}

fn not_run(service: &str) -> Markup {
    html! { p.muted { "This process does not run " (service) "." } }
}

fn order_card(o: &Order) -> Markup {
    html! {
        section.card {
            h2 { "Order" }
            dl.facts {
                dt { "Status" } dd { (layout::badge(o.status.as_str())) }
                @if let Some(r) = &o.cancellation_reason { dt { "Why" } dd { (r.replace('_', " ")) } }
                @if let Some(r) = &o.cancel_requested { dt { "Cancel asked" } dd { span.badge.warn { (r.replace('_', " ")) } } }
                dt { "Version" } dd { (o.version) }
                dt { "Total" } dd { (o.currency.format(o.total)) " " (o.currency.as_str()) }
                dt { "Customer" } dd.mono.small { a href={ "/admin/orders?customer=" (o.customer_id) } { (o.customer_id) } }
                dt { "Updated" } dd { (layout::time(o.updated_at)) }
            }
            h3 { "Items" }
            ul.small {
                @for i in &o.items {
                    li { (i.quantity.get()) " × " (i.name) " " span.muted { (o.currency.format(i.line_total)) } }
                }
            }
            @if o.attributes.as_object().is_some_and(|a| !a.is_empty()) {
                h3 { "Attributes" }
                code.small { (o.attributes.to_string()) }
            }
        }
    }
}

fn reservation_card(reservation: Option<&Option<Reservation>>) -> Markup {
    html! {
        section.card {
            h2 { "Reservation" }
            @match reservation {
                None => (not_run("inventory")),
                Some(None) => p.muted { "Inventory holds nothing for this order." },
                Some(Some(r)) => {
                    dl.facts {
                        dt { "Status" } dd { (layout::badge(r.status.as_str())) }
                        @if let Some(at) = r.expires_at { dt { "Expires" } dd { (layout::time(at)) } }
                        @if let Some(why) = &r.release_reason { dt { "Released" } dd { (why.replace('_', " ")) } }
                    }
                    h3 { "Lines" }
                    ul.small {
                        @for l in &r.lines { li { (l.quantity) " × " span.mono { (l.product_id) } } }
                    }
                }
            }
        }
    }
}

fn payment_card(payments: Option<&Vec<(PaymentRecord, Vec<Attempt>)>>) -> Markup {
    html! {
        section.card {
            h2 { "Payment" }
            @match payments {
                None => (not_run("payments")),
                Some(list) if list.is_empty() => p.muted { "No payment yet: the order is charged once its stock is reserved." },
                Some(list) => {
                    @for (record, attempts) in list {
                        @let p = &record.payment;
                        @let c = p.currency;
                        dl.facts {
                            dt { "Status" } dd { (layout::badge(p.status.as_str())) }
                            dt { "Amount" } dd { (c.format(p.amount)) " " (c.as_str()) }
                            dt { "Captured" } dd { (c.format(p.captured)) }
                            dt { "Refunded" } dd { (c.format(p.refunded)) }
                            dt { "Refundable" } dd { (c.format(p.refundable())) }
                            @if let Some(why) = &p.failure_reason { dt { "Why" } dd { (why) } }
                            dt { "Payment" } dd.mono.small { (p.id) }
                        }
                        h3 { "Gateway calls" }
                        @if attempts.is_empty() { p.muted.small { "None yet." } }
                        ol.small.attempts {
                            @for a in attempts {
                                li {
                                    (a.operation.as_str()) " "
                                    @match a.outcome {
                                        Some(outcome) => (layout::badge(outcome.as_str())),
                                        None => span.badge.warn { "no answer stored" },
                                    }
                                    @if let Some(amount) = a.amount { " " (c.format(amount)) }
                                    " " span.muted { (layout::time(a.started_at)) }
                                    @if let Some(d) = &a.detail { br; span.muted { (d) } }
                                }
                            }
                        }
                        @if !record.refunds.is_empty() {
                            h3 { "Refunds" }
                            ul.small {
                                @for r in &record.refunds {
                                    li { (c.format(r.amount)) " — " (r.reason.replace('_', " ")) " " (layout::badge(r.status.as_str())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn shipment_card(shipment: Option<&Option<(Shipment, Vec<CourierLogEntry>)>>) -> Markup {
    html! {
        section.card {
            h2 { "Shipment" }
            @match shipment {
                None => (not_run("delivery")),
                Some(None) => p.muted { "No shipment: one is planned once the order is paid." },
                Some(Some((s, log))) => {
                    (progress_view(s, true))
                    p.muted.small { (s.parcels.len()) " parcel" @if s.parcels.len() != 1 { "s" } " · " span.mono { (s.id) } }
                    h3 { "Courier log" }
                    @if log.is_empty() { p.muted.small { "Nothing reported yet." } }
                    ol.small {
                        @for e in log {
                            li {
                                (e.kind.as_str().replace('_', " "))
                                @if let Some(w) = e.waypoint { " #" (w) }
                                " " span.muted { (layout::time(e.at)) " by " (e.actor) }
                                @if let Some(r) = &e.reason { br; span.muted { (r) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn timeline_table(entries: &[TimelineEntry]) -> Markup {
    html! {
        section.card {
            h2 { "Timeline" }
            @if entries.is_empty() { p.muted { "Nothing yet." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th.num { "#" } th { "When" } th { "Event" } th.hide-sm { "Actor" } th.hide-sm { "Correlation" } } }
                    tbody { @for e in entries {
                        tr {
                            td.num { (e.seq) }
                            td { (layout::time(e.at)) }
                            td.mono.small { (e.event_type) }
                            td.hide-sm.small { (e.actor.as_deref().unwrap_or("")) }
                            td.hide-sm.small.mono { (e.correlation_id) }
                        }
                    } }
                } }
            }
        }
    }
}

/// The four services side by side and the timeline: the region that
/// follows the order.
fn order_region(s: &Services) -> Markup {
    html! {
        div.grid.grid-4 {
            (order_card(&s.order))
            (reservation_card(s.reservation.as_ref()))
            (payment_card(s.payments.as_ref()))
            (shipment_card(s.shipment.as_ref()))
        }
        (timeline_table(&s.timeline))
    }
}

fn cancellable(order: &Order) -> bool {
    matches!(
        order.status,
        OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::Paid
    ) && order.cancel_requested.is_none()
}

/// The actions, outside the region that refreshes, so that a form being
/// filled in stays as it is.
fn actions(viewer: &Viewer, s: &Services, refund_errors: &[(String, String)]) -> Markup {
    let order = &s.order;
    let refundable: Vec<&PaymentRecord> = s
        .payments
        .iter()
        .flatten()
        .map(|(r, _)| r)
        .filter(|r| !r.payment.refundable().is_zero())
        .collect();
    html! {
        section.card {
            h2 { "Actions" }
            div.grid.grid-2 {
                div {
                    h3 { "Cancel" }
                    @if cancellable(order) {
                        p.muted.small { "As the customer's cancel: before shipping; a paid order waits for delivery to confirm." }
                        form.inline method="post" action={ "/orders/" (order.id) "/cancel" }
                            data-confirm="Cancel this order? Stock and money are given back." {
                            (viewer.csrf_field())
                            button.danger type="submit" { "Cancel order" }
                        }
                    } @else {
                        p.muted.small { "The order can no longer be cancelled (it is " (order.status.as_str()) @if order.cancel_requested.is_some() { ", cancellation requested" } ")." }
                    }
                }
                div {
                    h3 { "Refund" }
                    @if refundable.is_empty() {
                        p.muted.small { "Nothing captured is left to refund." }
                    }
                    @for r in &refundable {
                        @let p = &r.payment;
                        form method="post" action={ "/admin/payments/" (p.id) "/refund" }
                            data-confirm="Refund this amount to the customer?" {
                            (viewer.csrf_field())
                            input type="hidden" name="order" value=(order.id);
                            div.field {
                                label for="amount" { "Amount (" (p.currency.as_str()) "), at most " (p.currency.format(p.refundable())) }
                                input #amount type="text" name="amount" inputmode="decimal" placeholder="everything left"
                                    aria-invalid=[refund_errors.iter().any(|(f, _)| f == "amount").then_some("true")];
                            }
                            div.field {
                                label for="reason" { "Reason" }
                                input #reason type="text" name="reason" maxlength="200" placeholder="requested_by_admin"
                                    aria-invalid=[refund_errors.iter().any(|(f, _)| f == "reason").then_some("true")];
                            }
                            button type="submit" { "Refund" }
                        }
                    }
                }
            }
        }
    }
}

async fn order_response(
    state: &ConsoleState,
    viewer: &Viewer,
    id: OrderId,
    fragment: bool,
    status: StatusCode,
    notice: Option<(&str, String)>,
    refund_errors: &[(String, String)],
) -> Result<Response, PageError> {
    let s = services(state, viewer, id).await?;
    let region = order_region(&s);
    if fragment {
        return Ok(region.into_response());
    }
    let order = &s.order;
    let markup = layout::page_with(
        viewer,
        &format!("Order {}", order.id),
        "/admin/orders",
        &state.banners(),
        html! {
            p.small { a href="/admin/orders" { "← Orders" } }
            div.page-head {
                h1 { "Order " span.mono { (order.id) } }
                span { (layout::live_dot("admin-order")) (layout::badge(order.status.as_str())) }
            }
            p.sub { "Placed " (layout::time(order.created_at)) " · " a href={ "/orders/" (order.id) } { "the customer's view" } }
            @if let Some((kind, message)) = &notice { (layout::notice(kind, message)) }
            (layout::form_errors(refund_errors))
            div #admin-order aria-live="polite" data-fragment={ "/admin/orders/" (order.id) "?fragment=live" }
                data-refresh="3000" {
                (region)
            }
            (actions(viewer, &s, refund_errors))
        },
    );
    Ok((status, markup).into_response())
}

fn parse_order(id: &str) -> Result<OrderId, PageError> {
    OrderId::parse(id).map_err(|_| PageError::not_found("no such order"))
}

/// `GET /admin/orders/{id}`.
pub async fn order(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Query<OrderQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let id = parse_order(&id)?;
    let notice = q
        .refunded
        .is_some()
        .then(|| ("ok", "The refund went through.".to_owned()));
    order_response(
        &state,
        &viewer,
        id,
        q.fragment.as_deref() == Some("live"),
        StatusCode::OK,
        notice,
        &[],
    )
    .await
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    order: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/payments/{id}/refund`: the API's refund
/// (`POST /v1/payments/{id}/refund`), its problem shown on the order's
/// page when it is refused.
pub async fn refund(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, form }: CsrfForm<RefundForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let order = parse_order(&form.order)?;
    let payments = state
        .payments
        .as_ref()
        .ok_or(PageError::NotServed("payments"))?;
    let payment = PaymentId::parse(&id).map_err(|_| PageError::not_found("no such payment"))?;
    let outcome: Result<_, ApiError> = async {
        let (amount, reason) = ordo_payments::routes::refund_request(
            given(&form.amount),
            given(&form.reason).map(str::to_owned),
        )?;
        let context = EventContext::from_request(request_id.clone());
        Ok(payments
            .refund(viewer.principal(), payment, amount, reason, &context)
            .await?)
    }
    .await;
    if let Some(log) = &state.audit {
        let status = match &outcome {
            Ok(_) => StatusCode::CREATED,
            Err(e) => e.status(),
        };
        crate::audit::record_as_api(
            log,
            viewer.principal().client_id,
            &Method::POST,
            "/v1/payments/{id}/refund",
            format!("/v1/payments/{id}/refund"),
            status.as_u16(),
            Some(request_id),
        )
        .await;
    }
    match outcome {
        Ok((paid, _)) => Ok(
            Redirect::to(&format!("/admin/orders/{}?refunded=1", paid.order_id)).into_response(),
        ),
        Err(err) if err.status().is_client_error() => {
            let problem = err.to_problem();
            let fields: Vec<(String, String)> = problem
                .errors
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect();
            let notice = fields
                .is_empty()
                .then(|| ("bad", format!("The refund was refused: {}", problem.detail)));
            order_response(&state, &viewer, order, false, err.status(), notice, &fields).await
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_local_value_is_read_as_utc_and_anything_else_passed_on() {
        assert_eq!(
            instant_text("2024-05-01T12:30"),
            "2024-05-01T12:30:00+00:00"
        );
        assert_eq!(
            instant_text("2024-05-01T12:30:15"),
            "2024-05-01T12:30:15+00:00"
        );
        assert_eq!(
            instant_text("2024-05-01T12:30:00+02:00"),
            "2024-05-01T12:30:00+02:00"
        );
        assert_eq!(instant_text("yesterday"), "yesterday");
    }

    #[test]
    fn attribute_lines_become_the_apis_parameters() {
        let q = SearchQuery {
            attributes: "gift=true\n\n channel = web \nnonsense".into(),
            ..SearchQuery::default()
        };
        let mut errors = Vec::new();
        let params = q.attribute_params(&mut errors);
        assert_eq!(
            params,
            [
                ("attr.gift".to_owned(), "true".to_owned()),
                ("attr.channel".to_owned(), "web".to_owned())
            ]
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "attributes");
    }
}
