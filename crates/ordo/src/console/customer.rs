//! The customer's console: the shop, checkout, my orders, and the order
//! page every role opens (its customer, a seller of one of its lines, an
//! admin), which follows the order live.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use maud::{Markup, html};
use ordo_bus::EventContext;
use ordo_delivery::domain::{Shipment, WaypointKind};
use ordo_http::{ApiError, RequestId, Role};
use ordo_inventory::catalog::Product;
use ordo_kernel::{OrderId, ProductId};
use ordo_orders::domain::{Order, OrderStatus};
use ordo_orders::reactions::TIMELINE_EVENTS;
use ordo_orders::routes::{AddressRequest, CreateOrderRequest, LineRequest, PaymentRequest};
use ordo_orders::store::{OrderFilter, TimelineEntry};
use ordo_payments::service::PaymentRecord;
use serde::Deserialize;

use super::session::{CsrfForm, Viewer};
use super::tracking::LINK_TTL;
use super::{ConsoleState, Page, PageError, layout};

/// The gateway simulator's test cards, as the checkout offers them.
pub const TEST_CARDS: &[(&str, &str, &str)] = &[
    ("tok_visa", "Visa ending 4242", "approved"),
    (
        "tok_declined",
        "Card that is declined",
        "the payment fails; the order is cancelled",
    ),
    (
        "tok_transient",
        "Card with a flaky gateway",
        "fails once, then succeeds on retry",
    ),
    (
        "tok_timeout",
        "Card whose gateway times out",
        "charged, but the answer is lost",
    ),
    (
        "tok_slow",
        "Card with a slow gateway",
        "approved after a delay",
    ),
];

/// A cancellation reason in words a customer reads.
pub fn reason_in_words(reason: &str) -> &str {
    match reason {
        "out_of_stock" => "an item was out of stock",
        "payment_failed" => "the payment did not go through",
        "reservation_expired" => "the items were held for too long without payment",
        "customer_cancelled" => "the customer cancelled it",
        "admin_cancelled" => "the shop cancelled it",
        other => other,
    }
}

const STEPS: [OrderStatus; 5] = [
    OrderStatus::Pending,
    OrderStatus::Confirmed,
    OrderStatus::Paid,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
];

fn step_label(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "Placed",
        OrderStatus::Confirmed => "Confirmed",
        OrderStatus::Paid => "Paid",
        OrderStatus::Shipped => "Shipped",
        OrderStatus::Delivered => "Delivered",
        OrderStatus::Cancelled => "Cancelled",
    }
}

/// Where a cancelled order stopped, from its reason.
fn stopped_at(reason: Option<&str>) -> usize {
    match reason {
        Some("out_of_stock") => 1,
        Some("payment_failed" | "reservation_expired") => 2,
        _ => 1,
    }
}

/// pending → confirmed → paid → shipped → delivered, or where it stopped.
pub fn stepper(status: OrderStatus, reason: Option<&str>) -> Markup {
    let (done, current, stopped) = match status {
        OrderStatus::Cancelled => {
            let at = stopped_at(reason);
            (at, None, Some(at))
        }
        other => {
            let at = STEPS.iter().position(|s| *s == other).unwrap_or(0);
            if other == OrderStatus::Delivered {
                (at + 1, None, None)
            } else {
                (at + 1, Some(at + 1), None)
            }
        }
    };
    html! {
        ol.stepper aria-label="Order progress" {
            @for (i, step) in STEPS.iter().enumerate() {
                @let class = if stopped == Some(i) { "stopped" } else if i < done { "done" } else if current == Some(i) { "current" } else { "" };
                @if stopped == Some(i) {
                    li class=(class) aria-current="step" { "Cancelled" }
                } @else {
                    li class=(class) aria-current=[(current == Some(i)).then_some("step")] { (step_label(*step)) }
                }
            }
        }
    }
}

fn waypoint_label(kind: WaypointKind) -> &'static str {
    match kind {
        WaypointKind::Pickup => "Pickup",
        WaypointKind::Dropoff => "Delivery",
    }
}

/// A shipment's route as a progress view; the locations only for those who
/// may see the address.
pub fn progress_view(shipment: &Shipment, show_locations: bool) -> Markup {
    let total = shipment.route_length();
    let reached = shipment
        .waypoints
        .iter()
        .filter(|w| shipment.reached(w.seq))
        .count();
    html! {
        div.row.spread {
            span { (layout::badge(shipment.status.as_str())) " " (reached) " of " (total) " stops" }
            @if let Some(eta) = shipment.eta.filter(|_| shipment.status.is_active()) {
                span { "Expected " (layout::time(eta)) }
            }
        }
        progress max=(total.max(1)) value=(reached) aria-label="Delivery progress" { (reached) " of " (total) }
        @if let Some(reason) = &shipment.failure_reason {
            (layout::notice("bad", &format!("The courier could not deliver: {reason}.")))
        }
        ol.route {
            @for w in &shipment.waypoints {
                @let class = if shipment.reached(w.seq) { "reached" } else if w.seq == shipment.next_waypoint && shipment.status.is_active() { "next" } else { "" };
                li class=(class) {
                    span.where { (waypoint_label(w.kind)) }
                    @if show_locations { br; span.muted.small { (w.location) } }
                    @if class == "next" { " " span.badge.info { "next" } }
                }
            }
        }
    }
}

fn parse_order(id: &str) -> Result<OrderId, PageError> {
    OrderId::parse(id).map_err(|_| PageError::not_found("no such order"))
}

// --- The shop ----------------------------------------------------------------

#[derive(Deserialize)]
pub struct ShopQuery {
    after: Option<String>,
    choose: Option<String>,
}

/// How many products a shop page shows.
const SHOP_PAGE: usize = 24;

pub async fn shop(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<ShopQuery>,
) -> Page {
    let inventory = state.inventory()?;
    let after = q
        .after
        .as_deref()
        .map(|c| ProductId::parse(c).map_err(|_| ApiError::field("after", "is not a product id")))
        .transpose()?;
    let mut products = inventory
        .list_products(viewer.principal(), None, after, SHOP_PAGE + 1)
        .await?;
    let next = (products.len() > SHOP_PAGE).then(|| {
        products.truncate(SHOP_PAGE);
        products.last().map(|p| p.id)
    });
    let buyable = viewer.principal().role == Role::Customer;
    let shown: Vec<&Product> = products.iter().filter(|p| p.active).collect();
    Ok(layout::page(
        &viewer,
        "Shop",
        "/shop",
        html! {
            div.page-head { h1 { "Shop" } }
            @if q.choose.is_some() { (layout::notice("warn", "Choose a quantity of at least one product first.")) }
            @if shown.is_empty() {
                (layout::empty("Nothing is for sale yet."))
            } @else {
                // One form: each card's "Buy" checks out that product, the
                // button at the end every product with a quantity.
                form method="get" action="/shop/checkout" {
                    div.products {
                        @for p in &shown {
                            article.card.product {
                                div.name { (p.name) }
                                div.muted.small.mono { (p.sku) }
                                div.price { (p.currency.format(p.price)) " " span.muted.small { (p.currency.as_str()) } }
                                div {
                                    @if p.available > 0 {
                                        span.badge.ok { (p.available) " in stock" }
                                    } @else {
                                        span.badge.bad { "Out of stock" }
                                    }
                                }
                                @if buyable {
                                    div.buy {
                                        input type="hidden" name="product" value=(p.id);
                                        div.field {
                                            label for={ "q-" (p.id) } { "Quantity" }
                                            input.qty id={ "q-" (p.id) } type="number" name="quantity" min="0" max="10000" value="0";
                                        }
                                        button type="submit" name="only" value=(p.id) disabled[p.available <= 0] { "Buy" }
                                    }
                                }
                            }
                        }
                    }
                    @if buyable {
                        div.checkout-bar {
                            span.muted { "Set quantities on several products to order them together." }
                            button type="submit" { "Check out these items" }
                        }
                    }
                }
                @if let Some(Some(next)) = next {
                    nav.pager aria-label="Pages" { span {} a.button.secondary href={ "/shop?after=" (next) } { "More products" } }
                }
            }
        },
    ))
}

// --- Checkout ----------------------------------------------------------------

/// Lines an order placed from the console may hold.
const MAX_CHECKOUT_LINES: usize = 20;

/// The checkout form: its lines (product and quantity, in order) and the
/// rest by name. Read from repeated `product` and `quantity` fields.
#[derive(Default, Clone)]
pub struct CheckoutForm {
    lines: Vec<(String, String)>,
    name: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country: String,
    card: String,
    idempotency_key: String,
    note: String,
}

impl CheckoutForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        let mut products = Vec::new();
        let mut quantities = Vec::new();
        let mut only = None;
        for (key, value) in pairs {
            match key.as_str() {
                "product" => products.push(value),
                "quantity" => quantities.push(value),
                "only" => only = Some(value),
                "name" => form.name = value,
                "line1" => form.line1 = value,
                "line2" => form.line2 = value,
                "city" => form.city = value,
                "postal_code" => form.postal_code = value,
                "country" => form.country = value,
                "card" => form.card = value,
                "idempotency_key" => form.idempotency_key = value,
                "note" => form.note = value,
                _ => {}
            }
        }
        form.lines = products
            .into_iter()
            .zip(
                quantities
                    .into_iter()
                    .chain(std::iter::repeat(String::new())),
            )
            .collect();
        if let Some(only) = only {
            // "Buy" on one card: that product, one unit unless more is set.
            form.lines.retain(|(p, _)| *p == only);
            form.lines.truncate(1);
            for (_, q) in &mut form.lines {
                if q.trim().parse::<i64>().unwrap_or(0) < 1 {
                    *q = "1".to_owned();
                }
            }
        }
        form
    }
}

fn new_key() -> String {
    format!("console-{}", ulid::Ulid::new())
}

/// `GET /shop/checkout?product=…&quantity=…[&only=…]`.
pub async fn checkout(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    viewer.principal().require(&[Role::Customer])?;
    let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let mut form = CheckoutForm::from_pairs(pairs);
    // The shop sends every card; only those with a quantity are ordered.
    form.lines.retain(|(_, q)| q.trim() != "0");
    form.lines.truncate(MAX_CHECKOUT_LINES);
    for (_, q) in &mut form.lines {
        if q.trim().is_empty() {
            *q = "1".to_owned();
        }
    }
    if form.lines.is_empty() {
        return Ok(Redirect::to("/shop?choose=1").into_response());
    }
    form.card = "tok_visa".to_owned();
    form.idempotency_key = new_key();
    checkout_page(&viewer, &state, &form, &[], StatusCode::OK).await
}

async fn checkout_page(
    viewer: &Viewer,
    state: &ConsoleState,
    form: &CheckoutForm,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, PageError> {
    let inventory = state.inventory()?;
    let mut lines = Vec::with_capacity(form.lines.len());
    for (product, quantity) in &form.lines {
        let found = match ProductId::parse(product) {
            Ok(id) => match inventory.products().get(id).await {
                Ok(p) if p.active => Some(p),
                Ok(_) | Err(ordo_kernel::StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            Err(_) => None,
        };
        let Some(found) = found else {
            return Err(PageError::not_found(
                "a product of this order is not for sale",
            ));
        };
        lines.push((found, quantity.clone()));
    }
    let error_of = |field: &str| {
        errors
            .iter()
            .find(|(f, _)| f == field || f.starts_with(&format!("{field}.")))
            .map(|(_, m)| m.clone())
    };
    let input =
        |id: &str, field: &str, label: &str, value: &str, autocomplete: &str, required: bool| {
            let error = error_of(field);
            html! {
                div.field {
                    label for=(id) { (label) @if !required { " " span.hint { "(optional)" } } }
                    input id=(id) type="text" name=(id) value=(value) autocomplete=(autocomplete)
                        required[required] aria-invalid=[error.as_ref().map(|_| "true")]
                        aria-describedby=[error.as_ref().map(|_| format!("{id}-error"))];
                    @if let Some(e) = error { div.error id={ (id) "-error" } { (e) } }
                }
            }
        };
    // What the lines come to at today's prices (the order is priced again
    // from the catalog when it is placed).
    let currency = lines.first().map(|(p, _)| p.currency);
    let mixed = lines.iter().any(|(p, _)| Some(p.currency) != currency);
    let estimate: rust_decimal::Decimal = lines
        .iter()
        .map(|(p, q)| {
            p.price * rust_decimal::Decimal::from(q.trim().parse::<i64>().unwrap_or(0).max(0))
        })
        .sum();
    let markup = layout::page(
        viewer,
        "Checkout",
        "/shop",
        html! {
            div.page-head { h1 { "Checkout" } a.button.secondary href="/shop" { "Back to the shop" } }
            (layout::form_errors(errors))
            form method="post" action="/shop/checkout" {
                (viewer.csrf_field())
                input type="hidden" name="idempotency_key" value=(form.idempotency_key);
                div.grid.grid-2 {
                    div.stack {
                        section.card {
                            h2 { @if lines.len() == 1 { "Your item" } @else { "Your items" } }
                            div.table-wrap {
                                table {
                                    thead { tr { th { "Item" } th.num { "Price" } th.num { "Quantity" } } }
                                    tbody {
                                        @for (i, (p, quantity)) in lines.iter().enumerate() {
                                            @let field = format!("items[{i}].quantity");
                                            @let error = error_of(&field).or_else(|| error_of(&format!("items[{i}].product_id")));
                                            tr {
                                                td {
                                                    (p.name) br;
                                                    span.muted.small.mono { (p.sku) }
                                                    @if p.available <= 0 { br; span.badge.bad { "out of stock — the order will be cancelled" } }
                                                }
                                                td.num { (p.currency.format(p.price)) " " (p.currency.as_str()) }
                                                td.num {
                                                    input type="hidden" name="product" value=(p.id);
                                                    label.visually-hidden for={ "quantity-" (i) } { "Quantity of " (p.name) }
                                                    input.qty id={ "quantity-" (i) } type="number" name="quantity" min="1" max="10000" value=(quantity) required
                                                        aria-invalid=[error.as_ref().map(|_| "true")];
                                                    @if let Some(e) = error { div.error { (e) } }
                                                }
                                            }
                                        }
                                    }
                                    @if let (Some(c), false) = (currency, mixed) {
                                        tfoot { tr { td colspan="2" { "Estimated total" } td.num { (c.format(estimate)) " " (c.as_str()) } } }
                                    }
                                }
                            }
                            @if let Some(e) = error_of("items") { div.error { (e) } }
                        }
                        section.card {
                            h2 { "Payment" }
                            fieldset {
                                legend { "Test card (gateway simulator)" }
                                div.choices {
                                    @for (token, label, what) in TEST_CARDS {
                                        label.choice {
                                            input type="radio" name="card" value=(token) checked[form.card == *token] required;
                                            span { strong { (label) } br; span.muted.small { code { (token) } " — " (what) } }
                                        }
                                    }
                                }
                            }
                            @if let Some(e) = error_of("payment") { div.error { (e) } }
                        }
                    }
                    section.card {
                        h2 { "Shipping address" }
                        (input("name", "shipping_address.name", "Full name", &form.name, "name", true))
                        (input("line1", "shipping_address.line1", "Street and number", &form.line1, "address-line1", true))
                        (input("line2", "shipping_address.line2", "Address line 2", &form.line2, "address-line2", false))
                        div.fields-2 {
                            (input("postal_code", "shipping_address.postal_code", "Postal code", &form.postal_code, "postal-code", true))
                            (input("city", "shipping_address.city", "City", &form.city, "address-level2", true))
                        }
                        (input("country", "shipping_address.country", "Country (two letters, e.g. DE)", &form.country, "country", true))
                        div.field {
                            label for="note" { "Note for the order " span.hint { "(optional, kept as the attribute “note”)" } }
                            input #note type="text" name="note" value=(form.note) maxlength="500";
                        }
                        button type="submit" { "Place order" }
                        p.muted.small { "Sending this form twice places one order." }
                    }
                }
            }
        },
    );
    Ok((status, markup).into_response())
}

pub async fn place_order(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    CsrfForm { viewer, form }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    viewer.principal().require(&[Role::Customer])?;
    let orders = state.orders()?;
    let mut form = CheckoutForm::from_pairs(form);
    if form.idempotency_key.trim().is_empty() || form.idempotency_key.len() > 200 {
        form.idempotency_key = new_key();
    }
    let mut errors = Vec::new();
    if form.lines.len() > MAX_CHECKOUT_LINES {
        errors.push((
            "items".to_owned(),
            format!("the console takes at most {MAX_CHECKOUT_LINES} lines"),
        ));
    }
    let mut items = Vec::with_capacity(form.lines.len());
    for (i, (product, quantity)) in form.lines.iter().enumerate() {
        let parsed = quantity.trim().parse::<i64>();
        if parsed.is_err() {
            errors.push((
                format!("items[{i}].quantity"),
                "must be a whole number from 1 to 10000".to_owned(),
            ));
        }
        items.push(LineRequest {
            product_id: product.clone(),
            quantity: parsed.unwrap_or(1),
        });
    }
    let attributes = if form.note.trim().is_empty() {
        serde_json::json!({"channel": "console"})
    } else {
        serde_json::json!({"channel": "console", "note": form.note.trim()})
    };
    // The API's own request and validation: the same rules, field names
    // and messages.
    let request = CreateOrderRequest {
        items,
        shipping_address: AddressRequest {
            name: form.name.clone(),
            line1: form.line1.clone(),
            line2: Some(form.line2.clone()).filter(|l| !l.trim().is_empty()),
            city: form.city.clone(),
            postal_code: form.postal_code.clone(),
            country: form.country.trim().to_uppercase(),
        },
        payment: PaymentRequest {
            token: form.card.clone(),
        },
        attributes: Some(attributes),
    };
    let outcome = match request.validate() {
        Ok(new) if errors.is_empty() => orders
            .create(
                viewer.principal(),
                new,
                &EventContext::from_request(request_id),
                Some(form.idempotency_key.clone()),
            )
            .await
            .map_err(ApiError::from),
        Ok(_) => Err(ApiError::validation(Vec::new())),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((order, _)) => {
            Ok(Redirect::to(&format!("/orders/{}?placed=1", order.id)).into_response())
        }
        Err(ApiError::Validation { errors: fields, .. }) => {
            errors.extend(fields.into_iter().map(|f| (f.field, f.message)));
            if form.lines.is_empty() {
                return Ok(Redirect::to("/shop?choose=1").into_response());
            }
            checkout_page(
                &viewer,
                &state,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// --- My orders ---------------------------------------------------------------

#[derive(Deserialize)]
pub struct OrdersQuery {
    pub status: Option<String>,
    pub before: Option<String>,
}

/// How many orders a list page shows.
pub const ORDERS_PAGE: usize = 50;

/// Decodes a keyset cursor of an order list.
pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<OrderId>, PageError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| OrderId::parse(&s).ok())
                .ok_or_else(|| {
                    PageError::from(ApiError::field(
                        "before",
                        "is not a cursor this page issued",
                    ))
                })
        })
        .transpose()
}

pub fn encode_cursor(id: OrderId) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

pub fn parse_status(status: Option<&str>) -> Result<Option<OrderStatus>, PageError> {
    match status.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => OrderStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be one of pending, confirmed, paid, shipped, delivered, cancelled",
            )
            .into()
        }),
    }
}

/// A table of orders, linked to their pages.
pub fn orders_table(orders: &[Order], show_customer: bool) -> Markup {
    orders_table_linked(orders, show_customer, "/orders/")
}

/// A table of orders, each linked to `link` followed by its id.
pub fn orders_table_linked(orders: &[Order], show_customer: bool, link: &str) -> Markup {
    let now = Utc::now();
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Order" } th { "Status" } th.hide-sm { "Items" }
                    @if show_customer { th.hide-sm { "Customer" } }
                    th.num { "Total" } th { "Placed" }
                } }
                tbody {
                    @for o in orders {
                        tr {
                            td { a.mono href={ (link) (o.id) } { (o.id) } }
                            td { (layout::badge(o.status.as_str())) }
                            td.hide-sm {
                                @for (i, item) in o.items.iter().enumerate().take(3) {
                                    @if i > 0 { ", " }
                                    (item.quantity.get()) " × " (item.name)
                                }
                                @if o.items.len() > 3 { " and " (o.items.len() - 3) " more" }
                            }
                            @if show_customer { td.hide-sm.mono.small { (o.customer_id) } }
                            td.num { (o.currency.format(o.total)) " " span.muted.small { (o.currency.as_str()) } }
                            td title=(o.created_at.to_rfc3339()) { (layout::ago(o.created_at, now)) }
                        }
                    }
                }
            }
        }
    }
}

/// Tabs of the statuses, keeping the base path.
pub fn status_tabs(base: &str, current: Option<OrderStatus>) -> Markup {
    html! {
        nav aria-label="Filter by status" {
            ul.nav {
                li { a href=(base) aria-current=[current.is_none().then_some("page")] { "All" } }
                @for s in OrderStatus::ALL {
                    li { a href={ (base) "?status=" (s.as_str()) } aria-current=[(current == Some(s)).then_some("page")] { (s.as_str()) } }
                }
            }
        }
    }
}

/// A page of the orders the viewer may see (the service narrows them to
/// the caller's scope), one status or all, and the cursor of the next.
pub struct OrderListPage {
    pub status: Option<OrderStatus>,
    pub orders: Vec<Order>,
    pub next: Option<String>,
}

impl OrderListPage {
    pub async fn load(
        state: &ConsoleState,
        viewer: &Viewer,
        q: &OrdersQuery,
    ) -> Result<Self, PageError> {
        let status = parse_status(q.status.as_deref())?;
        let filter = OrderFilter {
            status,
            before: decode_cursor(q.before.as_deref())?,
            ..OrderFilter::default()
        };
        let mut orders = state
            .orders()?
            .list(viewer.principal(), filter, ORDERS_PAGE + 1)
            .await?;
        let next = if orders.len() > ORDERS_PAGE {
            orders.truncate(ORDERS_PAGE);
            orders.last().map(|o| encode_cursor(o.id))
        } else {
            None
        };
        Ok(Self {
            status,
            orders,
            next,
        })
    }

    /// Status tabs, the table (or `empty`), and the link to older orders.
    pub fn render(&self, base: &str, show_customer: bool, empty: &str) -> Markup {
        html! {
            (status_tabs(base, self.status))
            @if self.orders.is_empty() {
                (layout::empty(empty))
            } @else {
                div.card { (orders_table(&self.orders, show_customer)) }
                @if let Some(cursor) = &self.next {
                    nav.pager aria-label="Pages" {
                        span {}
                        a.button.secondary href={ (base) "?before=" (cursor) @if let Some(s) = self.status { "&status=" (s.as_str()) } } { "Older orders" }
                    }
                }
            }
        }
    }
}

pub async fn my_orders(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<OrdersQuery>,
) -> Page {
    let list = OrderListPage::load(&state, &viewer, &q).await?;
    Ok(layout::page(
        &viewer,
        "My orders",
        "/orders",
        html! {
            div.page-head { h1 { "My orders" } a.button href="/shop" { "Shop" } }
            (list.render("/orders", false, "No orders here yet."))
        },
    ))
}

// --- The order page ----------------------------------------------------------

#[derive(Deserialize)]
pub struct OrderQuery {
    fragment: Option<String>,
    placed: Option<String>,
    cancel: Option<String>,
}

/// What an order page shows besides the order.
pub struct OrderDetails {
    pub order: Order,
    pub timeline: Vec<TimelineEntry>,
    pub payments: Option<Vec<PaymentRecord>>,
    pub shipment: Option<Shipment>,
}

/// Reads the order and what the caller may see of the other services.
pub async fn order_details(
    state: &ConsoleState,
    viewer: &Viewer,
    id: OrderId,
) -> Result<OrderDetails, PageError> {
    let principal = viewer.principal();
    let orders = state.orders()?;
    let (order, timeline) = orders.with_timeline(principal, id).await?;
    let payments = match (&state.payments, principal.role) {
        (Some(payments), Role::Customer | Role::Admin) => {
            Some(payments.payments_for_order(principal, id).await?)
        }
        _ => None,
    };
    let shipment = match &state.delivery {
        Some(delivery) => match delivery.for_order(principal, id).await {
            Ok(s) => Some(s),
            Err(ordo_delivery::DeliveryError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    Ok(OrderDetails {
        order,
        timeline,
        payments,
        shipment,
    })
}

fn cancellable(viewer: &Viewer, order: &Order) -> bool {
    matches!(viewer.principal().role, Role::Customer | Role::Admin)
        && matches!(
            order.status,
            OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::Paid
        )
        && order.cancel_requested.is_none()
}

/// A timeline entry in words.
fn describe(entry: &TimelineEntry) -> (String, Option<String>) {
    let t = entry.event_type.trim_end_matches(".v1");
    let d = &entry.data;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let title = match t {
        "order.created" => "Order placed".to_owned(),
        "order.confirmed" => "Order confirmed".to_owned(),
        "order.paid" => "Order paid".to_owned(),
        "order.shipped" => "Order shipped".to_owned(),
        "order.delivered" => "Order delivered".to_owned(),
        "order.cancellation_requested" => "Cancellation requested".to_owned(),
        "order.cancelled" => "Order cancelled".to_owned(),
        "inventory.reserved" => "Stock reserved".to_owned(),
        "inventory.reservation_failed" => "Stock could not be reserved".to_owned(),
        "inventory.released" => "Stock released".to_owned(),
        "inventory.committed" => "Stock handed over".to_owned(),
        "payment.succeeded" => "Payment captured".to_owned(),
        "payment.failed" => "Payment failed".to_owned(),
        "payment.refunded" => "Payment refunded".to_owned(),
        "shipment.created" => "Shipment planned".to_owned(),
        "shipment.picked_up" => "Picked up by the courier".to_owned(),
        "shipment.waypoint_reached" => "Waypoint reached".to_owned(),
        "shipment.delivered" => "Delivered".to_owned(),
        "shipment.failed" => "Delivery failed".to_owned(),
        "shipment.cancelled" => "Shipment cancelled".to_owned(),
        other => other.to_owned(),
    };
    let detail = match t {
        "order.cancelled" | "order.cancellation_requested" => {
            s("reason").map(|r| reason_in_words(&r).to_owned())
        }
        "payment.failed" | "shipment.failed" | "inventory.reservation_failed" => s("reason"),
        "payment.refunded" => {
            s("amount").map(|a| format!("{a} {}", s("currency").unwrap_or_default()))
        }
        "payment.succeeded" => {
            s("amount").map(|a| format!("{a} {}", s("currency").unwrap_or_default()))
        }
        "inventory.released" => s("reason"),
        _ => None,
    };
    (title, detail)
}

fn items_card(order: &Order, seller_view: bool) -> Markup {
    html! {
        section.card {
            h2 { @if seller_view { "Your lines" } @else { "Items" } }
            div.table-wrap {
                table {
                    thead { tr { th { "Item" } th.num { "Qty" } th.num { "Price" } th.num { "Total" } } }
                    tbody {
                        @for i in &order.items {
                            tr {
                                td { (i.name) br; span.muted.small.mono { (i.sku) } }
                                td.num { (i.quantity.get()) }
                                td.num { (order.currency.format(i.unit_price)) }
                                td.num { (order.currency.format(i.line_total)) }
                            }
                        }
                    }
                    tfoot { tr {
                        td colspan="3" { @if seller_view { "Your subtotal" } @else { "Total" } }
                        td.num { (order.currency.format(order.total)) " " (order.currency.as_str()) }
                    } }
                }
            }
        }
    }
}

fn payment_card(payments: &[PaymentRecord]) -> Markup {
    html! {
        section.card {
            h2 { "Payment" }
            @if payments.is_empty() {
                p.muted { "No payment yet: the order is charged once its stock is reserved." }
            }
            @for record in payments {
                @let p = &record.payment;
                dl.facts {
                    dt { "State" } dd { (layout::badge(p.status.as_str())) }
                    dt { "Amount" } dd { (p.currency.format(p.amount)) " " (p.currency.as_str()) }
                    dt { "Captured" } dd { (p.currency.format(p.captured)) }
                    @if !p.refunded.is_zero() { dt { "Refunded" } dd { (p.currency.format(p.refunded)) } }
                    @if let Some(reason) = &p.failure_reason { dt { "Why" } dd { (reason) } }
                }
                @if !record.refunds.is_empty() {
                    h3 { "Refunds" }
                    ul {
                        @for r in &record.refunds {
                            li { (p.currency.format(r.amount)) " — " (r.reason) " " (layout::badge(r.status.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

fn shipment_card(shipment: Option<&Shipment>, order: &Order, show_locations: bool) -> Markup {
    html! {
        section.card {
            h2 { "Shipment" }
            @match shipment {
                Some(s) => {
                    (progress_view(s, show_locations))
                    p.muted.small { (s.parcels.len()) " parcel" @if s.parcels.len() != 1 { "s" } " · shipment " span.mono { (s.id) } }
                }
                None => {
                    @if order.status == OrderStatus::Cancelled {
                        p.muted { "Nothing was shipped." }
                    } @else {
                        p.muted { "The shipment is planned once the order is paid." }
                    }
                }
            }
        }
    }
}

fn timeline_card(entries: &[TimelineEntry]) -> Markup {
    html! {
        section.card {
            h2 { "Timeline" }
            @if entries.is_empty() { p.muted { "Nothing yet." } }
            ol.timeline {
                @for e in entries {
                    @let (title, detail) = describe(e);
                    li {
                        (layout::time(e.at))
                        span.what { (title) @if let Some(actor) = &e.actor { " " span.muted.small { "by " (actor) } } }
                        @if let Some(d) = detail { span.detail { (d) } }
                    }
                }
            }
        }
    }
}

/// The part of the order page that follows the order.
fn order_live(viewer: &Viewer, details: &OrderDetails, link: Option<&str>) -> Markup {
    let order = &details.order;
    let seller_view = viewer.principal().role == Role::Seller;
    html! {
        div.card {
            (stepper(order.status, order.cancellation_reason.as_deref()))
            @if let Some(reason) = &order.cancellation_reason {
                (layout::notice("bad", &format!("This order was cancelled because {}.", reason_in_words(reason))))
            } @else if order.cancel_requested.is_some() {
                (layout::notice("warn", "Cancellation requested: the order is paid, so delivery first confirms that no courier has picked it up. If one has, the order is delivered instead."))
            }
            div.row.spread {
                span { (layout::badge(order.status.as_str())) " " span.muted.small { "updated " (layout::time(order.updated_at)) " · version " (order.version) } }
                @if cancellable(viewer, order) {
                    form.inline method="post" action={ "/orders/" (order.id) "/cancel" }
                        data-confirm="Cancel this order? Stock and money are given back." {
                        (viewer.csrf_field())
                        button.danger.small type="submit" { "Cancel order" }
                    }
                }
            }
        }
        div.grid.grid-2 {
            div.stack {
                (items_card(order, seller_view))
                @if let Some(payments) = &details.payments { (payment_card(payments)) }
                // The address is the customer's: a seller hands its parcel to
                // the courier and sees the route's progress, not where it goes.
                (shipment_card(details.shipment.as_ref(), order, !seller_view))
                @if !seller_view {
                    section.card {
                        h2 { "Ship to" }
                        p {
                            (order.shipping_address.name) br;
                            (order.shipping_address.line1) br;
                            @if let Some(l2) = &order.shipping_address.line2 { (l2) br; }
                            (order.shipping_address.postal_code) " " (order.shipping_address.city) br;
                            (order.shipping_address.country)
                        }
                    }
                }
                @if let Some(link) = link {
                    section.card {
                        h2 { "Tracking link" }
                        p.muted.small { "Anyone with this link sees the order's progress and city, without signing in, for 30 days." }
                        p { a href=(link) { "Open the tracking page" } }
                        div.secret { (link) }
                    }
                }
            }
            (timeline_card(&details.timeline))
        }
    }
}

pub async fn order_page(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Query<OrderQuery>,
) -> Result<Response, PageError> {
    let id = parse_order(&id)?;
    let details = order_details(&state, &viewer, id).await?;
    let link = (viewer.principal().role == Role::Customer).then(|| {
        let expires = Utc::now() + chrono::Duration::seconds(LINK_TTL.as_secs() as i64);
        format!("/track/{}", state.links.sign(id, expires))
    });
    let live = order_live(&viewer, &details, link.as_deref());
    if q.fragment.as_deref() == Some("live") {
        return Ok(live.into_response());
    }
    let order = &details.order;
    let events: Vec<&str> = TIMELINE_EVENTS.to_vec();
    let follow = !order.status.is_final() || details.timeline.is_empty();
    let back = match viewer.principal().role {
        Role::Seller => ("/seller/orders", "Orders"),
        Role::Admin => ("/admin/orders", "Orders"),
        _ => ("/orders", "My orders"),
    };
    let markup = layout::page(
        &viewer,
        &format!("Order {}", order.id),
        back.0,
        html! {
            p.small { a href=(back.0) { "← " (back.1) } }
            div.page-head {
                h1 { "Order " span.mono { (order.id) } }
                // Shown while the script follows the order's stream.
                @if follow { span.muted.small.live-marker data-live-for="order-live" { span.live-dot.on {} "live" } }
            }
            p.sub { "Placed " (layout::time(order.created_at)) @if viewer.principal().role != Role::Customer { " by customer " span.mono { (order.customer_id) } } }
            @if q.placed.is_some() { (layout::notice("ok", "Thank you: your order is placed. This page follows it as it happens.")) }
            @match q.cancel.as_deref() {
                Some("done") => (layout::notice("ok", "The order is cancelled.")),
                Some("requested") => (layout::notice("warn", "Cancellation requested (202 Accepted): the order is paid, so delivery confirms first that no courier picked it up.")),
                _ => {}
            }
            @if viewer.principal().role == Role::Admin {
                p { a href={ "/admin/orders/" (order.id) } { "Open the operations view of this order →" } }
            }
            div #order-live .stack aria-live="polite"
                data-follow=[follow.then(|| format!("/v1/orders/{}/events", order.id))]
                data-events=(events.join(" "))
                data-fragment={ "/orders/" (order.id) "?fragment=live" } {
                (live)
            }
        },
    );
    Ok(markup.into_response())
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /orders/{id}/cancel`: the API's cancel, with its 200/202 told
/// apart on the page.
pub async fn cancel(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    let id = parse_order(&id)?;
    let result = state
        .orders()?
        .cancel(
            viewer.principal(),
            id,
            &EventContext::from_request(request_id.clone()),
        )
        .await
        .map_err(ApiError::from);
    // An admin's cancel is logged as the API's would be (200, or 202 when
    // delivery settles it).
    let answered = match &result {
        Ok(order) if order.status != OrderStatus::Cancelled => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    let route = (
        axum::http::Method::POST,
        "/v1/orders/{id}/cancel",
        format!("/v1/orders/{id}/cancel"),
    );
    super::admin_ops::audit(&state, &viewer, &request_id, route, &result, answered).await;
    let order = result?;
    let outcome = if order.status == OrderStatus::Cancelled {
        "done"
    } else {
        "requested"
    };
    // Back to the page the admin acted from; customers to their order.
    let page = match viewer.principal().role {
        Role::Admin => format!("/admin/orders/{id}"),
        _ => format!("/orders/{id}"),
    };
    Ok(Redirect::to(&format!("{page}?cancel={outcome}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stepper_marks_where_a_cancelled_order_stopped() {
        let html = stepper(OrderStatus::Cancelled, Some("payment_failed")).into_string();
        assert!(html.contains("class=\"stopped\""), "{html}");
        assert_eq!(html.matches("class=\"done\"").count(), 2, "{html}");
        let html = stepper(OrderStatus::Delivered, None).into_string();
        assert_eq!(html.matches("class=\"done\"").count(), 5, "{html}");
        let html = stepper(OrderStatus::Paid, None).into_string();
        assert_eq!(html.matches("class=\"done\"").count(), 3, "{html}");
        assert!(html.contains("class=\"current\""), "{html}");
    }

    #[test]
    fn every_cancellation_reason_has_words() {
        for reason in ordo_orders::domain::CancellationReason::ALL {
            assert_ne!(reason_in_words(reason.as_str()), reason.as_str());
        }
    }
}
