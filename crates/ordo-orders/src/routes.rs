//! The orders HTTP API.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use ordo_bus::EventContext;
use ordo_events::Address;
use ordo_http::idempotency::IdempotencyKey;
use ordo_http::validate::text;
use ordo_http::{ApiError, FieldError, Json, Principal, Query, RequestId};
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, Quantity};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Order, OrderStatus, PricingError, RequestedLine};
use crate::follow::{StatusSnapshot, Update, follow};
use crate::service::{NewOrder, OrderError, OrdersService, Overview};
use crate::store::{CountBucket, LatencyBucket, OrderFilter, TimelineEntry};

/// Lines an order may hold.
pub const MAX_LINES: usize = 100;
/// The largest page a list returns.
pub const MAX_PAGE: u32 = 200;

#[derive(Clone)]
pub struct OrdersState {
    pub service: Arc<OrdersService>,
}

/// Routes that create: they wear the idempotency layer.
pub fn create_router(state: OrdersState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(cancel_order))
        .with_state(state)
}

pub fn router(state: OrdersState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(get_timeline))
        .routes(routes!(order_events))
        .routes(routes!(admin_overview))
        .with_state(state)
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::Pricing(errors) => {
                ApiError::validation(errors.iter().map(pricing_field).collect())
            }
            OrderError::NotFound => ApiError::not_found("no such order"),
            OrderError::Forbidden(why) => ApiError::Forbidden(why.to_owned()),
            OrderError::KeyReused => ApiError::Unprocessable {
                slug: "idempotency-key-reused",
                detail: "this Idempotency-Key was used with a different request".to_owned(),
            },
            OrderError::Transition(t) => ApiError::Conflict {
                slug: "invalid-transition",
                detail: format!("the order is {}: it can no longer become {}", t.from, t.to),
            },
            OrderError::Store(e) => e.into(),
            OrderError::Other(e) => ApiError::Internal(e),
        }
    }
}

fn pricing_field(err: &PricingError) -> FieldError {
    let (line, message) = match err {
        PricingError::UnknownProduct { line } => (line, "no such product"),
        PricingError::Unavailable { line } => (line, "is not available"),
        PricingError::Duplicate { line } => (
            line,
            "appears more than once; order a larger quantity instead",
        ),
        PricingError::MixedCurrencies { line } => (
            line,
            "is priced in another currency than the rest of the order",
        ),
    };
    FieldError::new(format!("items[{line}].product_id"), message)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    pub items: Vec<LineRequest>,
    pub shipping_address: AddressRequest,
    pub payment: PaymentRequest,
    /// Free JSON object kept with the order.
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(example = "prd_01JC0000000000000000000000")]
    pub product_id: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "DE")]
    pub country: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// A payment token from the gateway (simulator: `tok_visa`).
    pub token: String,
}

impl CreateOrderRequest {
    /// Validates the shape of the request: everything but the catalog.
    pub fn validate(self) -> Result<NewOrder, ApiError> {
        let mut errors = Vec::new();
        if self.items.is_empty() {
            errors.push(FieldError::new("items", "must hold at least one line"));
        }
        if self.items.len() > MAX_LINES {
            errors.push(FieldError::new(
                "items",
                format!("must hold at most {MAX_LINES} lines"),
            ));
        }
        let mut lines = Vec::with_capacity(self.items.len());
        for (i, line) in self.items.iter().enumerate() {
            let product = ProductId::parse(&line.product_id);
            let quantity = Quantity::new(line.quantity);
            if product.is_err() {
                errors.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "is not a product id (prd_…)",
                ));
            }
            if let Err(e) = &quantity {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    e.to_string(),
                ));
            }
            if let (Ok(product_id), Ok(quantity)) = (product, quantity) {
                lines.push(RequestedLine {
                    product_id,
                    quantity,
                });
            }
        }
        let a = &self.shipping_address;
        let address = Address {
            name: text(&mut errors, "shipping_address.name", &a.name, 200),
            line1: text(&mut errors, "shipping_address.line1", &a.line1, 200),
            line2: a
                .line2
                .as_deref()
                .filter(|l| !l.trim().is_empty())
                .map(|l| text(&mut errors, "shipping_address.line2", l, 200)),
            city: text(&mut errors, "shipping_address.city", &a.city, 100),
            postal_code: text(
                &mut errors,
                "shipping_address.postal_code",
                &a.postal_code,
                20,
            ),
            country: a.country.trim().to_owned(),
        };
        if !(address.country.len() == 2 && address.country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            errors.push(FieldError::new(
                "shipping_address.country",
                "must be an ISO 3166-1 alpha-2 code such as DE",
            ));
        }
        let token = self.payment.token.trim().to_owned();
        if token.is_empty() || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(FieldError::new(
                "payment.token",
                "must be 1 to 200 visible ASCII characters",
            ));
        }
        let attributes = self.attributes.unwrap_or_else(|| serde_json::json!({}));
        if !attributes.is_object() {
            errors.push(FieldError::new("attributes", "must be a JSON object"));
        } else if attributes.to_string().len() > 16 * 1024 {
            errors.push(FieldError::new("attributes", "must be at most 16 KiB"));
        }
        if errors.is_empty() {
            Ok(NewOrder {
                lines,
                shipping_address: address,
                payment_token: token,
                attributes,
            })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    product_id: ProductId,
    sku: String,
    name: String,
    seller_id: ClientId,
    quantity: u32,
    #[schema(value_type = String, example = "19.99")]
    unit_price: String,
    #[schema(value_type = String, example = "39.98")]
    line_total: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddressView {
    name: String,
    line1: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line2: Option<String>,
    city: String,
    postal_code: String,
    country: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    id: OrderId,
    /// pending, confirmed, paid, shipped, delivered or cancelled.
    #[schema(example = "pending")]
    status: &'static str,
    /// When cancelled: out_of_stock, payment_failed, reservation_expired,
    /// customer_cancelled, admin_cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancellation_reason: Option<String>,
    customer_id: ClientId,
    #[schema(value_type = String, example = "39.98")]
    total: String,
    currency: Currency,
    market: String,
    items: Vec<OrderItemView>,
    shipping_address: AddressView,
    attributes: serde_json::Value,
    version: i64,
    /// A cancel asked of a paid order and waiting for delivery's answer:
    /// the reason it will be cancelled with.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancellation_requested: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        let c = o.currency;
        Self {
            id: o.id,
            status: o.status.as_str(),
            cancellation_reason: o.cancellation_reason,
            customer_id: o.customer_id,
            total: c.format(o.total),
            currency: c,
            market: o.market,
            items: o
                .items
                .into_iter()
                .map(|i| OrderItemView {
                    product_id: i.product_id,
                    sku: i.sku,
                    name: i.name,
                    seller_id: i.seller_id,
                    quantity: i.quantity.get(),
                    unit_price: c.format(i.unit_price),
                    line_total: c.format(i.line_total),
                })
                .collect(),
            shipping_address: AddressView {
                name: o.shipping_address.name,
                line1: o.shipping_address.line1,
                line2: o.shipping_address.line2,
                city: o.shipping_address.city,
                postal_code: o.shipping_address.postal_code,
                country: o.shipping_address.country,
            },
            attributes: o.attributes,
            version: o.version,
            cancellation_requested: o.cancel_requested,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

fn parse_order_id(id: &str) -> Result<OrderId, ApiError> {
    // A malformed id names no order: the same answer as an unknown one.
    OrderId::parse(id).map_err(|_| ApiError::not_found("no such order"))
}

/// Place an order. Prices come from the catalog; the saga takes it from
/// `pending`. With `Idempotency-Key`, a retry returns the first response.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = CreateOrderRequest,
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe; kept 24 h"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer after the saga's first decision (confirmed or cancelled), at most N seconds (≤ 20)"),
    ),
    responses(
        (status = 201, body = OrderView, headers(("Location" = String))),
        (status = 400, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 409, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 413, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn create_order(
    State(state): State<OrdersState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    key: Option<Extension<IdempotencyKey>>,
    Json(body): Json<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let new = body.validate()?;
    let wait = preferred_wait(&headers);
    let context = EventContext::from_request(request_id);
    // Listen before creating, so that no decision can slip by.
    let changes = state.service.subscribe();
    let (mut order, _created) = state
        .service
        .create(&principal, new, &context, key.map(|Extension(k)| k.0))
        .await?;
    if let Some(wait) = wait {
        order = state
            .service
            .wait_for_decision(changes, order.id, wait)
            .await?;
    }
    let location = format!("/v1/orders/{}", order.id);
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(OrderView::from(order)),
    )
        .into_response();
    if let Some(wait) = wait
        && let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        response.headers_mut().insert("preference-applied", value);
    }
    Ok(response)
}

/// The longest `Prefer: wait` honoured, well inside the request timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// `Prefer: wait=N` (RFC 7240), capped at [`MAX_WAIT`].
fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .map(|n| Duration::from_secs(n).min(MAX_WAIT))
        .next()
}

/// One order.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = OrderView), (status = 404, body = ordo_http::Problem)))]
async fn get_order(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, ApiError> {
    let order = state.service.get(&principal, parse_order_id(&id)?).await?;
    Ok(axum::Json(order.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// pending, confirmed, paid, shipped, delivered or cancelled.
    status: Option<String>,
    /// A customer's client id (admin).
    customer: Option<String>,
    /// A seller's client id (admin).
    seller: Option<String>,
    /// Created at or after this instant (RFC 3339).
    created_from: Option<String>,
    /// Created before this instant (RFC 3339).
    created_to: Option<String>,
    /// Page size, 1 to 200 (default 50).
    // A string: the parameters after the named ones are collected as
    // strings, and so must these be.
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `attr.<key>=<value>` filters, and anything unknown (refused).
    #[serde(flatten)]
    #[param(ignore)]
    rest: OtherParams,
}

/// The query parameters that are not fields of [`ListQuery`], in order,
/// repeats kept.
#[derive(Debug, Default)]
struct OtherParams(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OtherParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = OtherParams;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("query parameters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OtherParams, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(OtherParams(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// Attribute filters a list takes at most.
pub const MAX_ATTRIBUTE_FILTERS: usize = 8;
/// The longest attribute key a filter names.
pub const MAX_ATTRIBUTE_KEY: usize = 64;
/// The longest value an attribute filter compares with.
pub const MAX_ATTRIBUTE_VALUE: usize = 256;

/// The JSON value `attr.<key>=<value>` asks for: `true`, `false`, `null`
/// and JSON numbers are those scalars, a double-quoted value is the string
/// inside the quotes (`"42"` is the string 42), anything else is the
/// string as given.
fn attribute_value(raw: &str) -> serde_json::Value {
    use serde_json::Value;
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        return Value::String(raw[1..raw.len() - 1].to_owned());
    }
    // A number exactly as JSON writes it: no surrounding space, no `+`,
    // no leading zero (a postal code such as 01234 stays a string).
    let number = raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && raw.ends_with(|c: char| c.is_ascii_digit());
    if number && let Ok(n) = serde_json::from_str::<serde_json::Number>(raw) {
        return Value::Number(n);
    }
    Value::String(raw.to_owned())
}

/// The `attr.<key>` filters among `params`; anything else is an unknown
/// parameter. Each problem becomes a field error naming the parameter.
fn attribute_filters(
    errors: &mut Vec<FieldError>,
    params: &[(String, String)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut filters = serde_json::Map::new();
    let mut count = 0;
    for (name, raw) in params {
        let Some(key) = name.strip_prefix("attr.") else {
            errors.push(FieldError::new(name.as_str(), "is not a known field"));
            continue;
        };
        count += 1;
        let valid_key = !key.is_empty()
            && key.len() <= MAX_ATTRIBUTE_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_key {
            errors.push(FieldError::new(
                name.as_str(),
                format!(
                    "the attribute key must be 1 to {MAX_ATTRIBUTE_KEY} letters, digits, _ or -"
                ),
            ));
        } else if raw.chars().count() > MAX_ATTRIBUTE_VALUE {
            errors.push(FieldError::new(
                name.as_str(),
                format!("must be at most {MAX_ATTRIBUTE_VALUE} characters"),
            ));
        } else if filters
            .insert(key.to_owned(), attribute_value(raw))
            .is_some()
        {
            errors.push(FieldError::new(name.as_str(), "is given more than once"));
        }
    }
    if count > MAX_ATTRIBUTE_FILTERS {
        errors.push(FieldError::new(
            "attr",
            format!("at most {MAX_ATTRIBUTE_FILTERS} attribute filters"),
        ));
    }
    filters
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    items: Vec<OrderView>,
    next_cursor: Option<String>,
}

fn instant(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
) -> Option<DateTime<Utc>> {
    let value = value?;
    match DateTime::parse_from_rfc3339(value) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(field, "must be an RFC 3339 timestamp"));
            None
        }
    }
}

fn client(errors: &mut Vec<FieldError>, field: &str, value: Option<&str>) -> Option<ClientId> {
    let value = value?;
    match ClientId::parse(value) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError::new(field, "is not a client id (cli_…)"));
            None
        }
    }
}

/// The filters of an order list as they were given, text not yet parsed:
/// the API's query parameters and the console's search form both go
/// through [`ListFilterInput::parse`], so they take the same values and
/// refuse the same ones, naming the same fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilterInput<'a> {
    pub status: Option<&'a str>,
    pub customer: Option<&'a str>,
    pub seller: Option<&'a str>,
    /// RFC 3339.
    pub created_from: Option<&'a str>,
    pub created_to: Option<&'a str>,
    /// `(attr.<key>, value)` pairs; any other name is refused as unknown.
    pub attributes: &'a [(String, String)],
}

impl ListFilterInput<'_> {
    /// The filter (without a cursor), each problem added to `errors` as a
    /// field error.
    pub fn parse(&self, errors: &mut Vec<FieldError>) -> OrderFilter {
        let status = self.status.and_then(|s| {
            let parsed = OrderStatus::parse(s);
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "status",
                    "must be one of pending, confirmed, paid, shipped, delivered, cancelled",
                ));
            }
            parsed
        });
        OrderFilter {
            status,
            customer: client(errors, "customer", self.customer),
            seller: client(errors, "seller", self.seller),
            created_from: instant(errors, "created_from", self.created_from),
            created_to: instant(errors, "created_to", self.created_to),
            before: None,
            attributes: attribute_filters(errors, self.attributes),
        }
    }
}

impl ListQuery {
    fn filter(&self) -> Result<(OrderFilter, usize), ApiError> {
        let mut errors = Vec::new();
        let mut filter = ListFilterInput {
            status: self.status.as_deref(),
            customer: self.customer.as_deref(),
            seller: self.seller.as_deref(),
            created_from: self.created_from.as_deref(),
            created_to: self.created_to.as_deref(),
            attributes: &self.rest.0,
        }
        .parse(&mut errors);
        filter.before = self.cursor.as_deref().and_then(|c| {
            let decoded = URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| OrderId::parse(&s).ok());
            if decoded.is_none() {
                errors.push(FieldError::new("cursor", "is not a cursor this API issued"));
            }
            decoded
        });
        let limit = match self.limit.as_deref().map(str::parse::<u32>) {
            None => 50,
            Some(Ok(n)) if n >= 1 => n.min(MAX_PAGE),
            Some(_) => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be from 1 to {MAX_PAGE}"),
                ));
                50
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok((filter, limit as usize))
    }
}

/// Orders the caller may see, newest first, a page at a time. Every filter
/// given must hold.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(
        ListQuery,
        ("attr.{key}" = Option<String>, Query, description = "Attribute filter, repeatable with \
            other keys (at most 8): the order's attributes hold `key` with exactly this value. \
            `true`, `false`, `null` and JSON numbers are those JSON values; a double-quoted value \
            is the string inside the quotes (`attr.code=\"42\"`); anything else is the string as \
            given (`attr.channel=web`). The key is 1 to 64 letters, digits, `_` or `-`.",
            example = "true"),
    ),
    responses((status = 200, body = OrderPage), (status = 422, body = ordo_http::Problem)))]
async fn list_orders(
    State(state): State<OrdersState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<OrderPage>, ApiError> {
    let (filter, limit) = query.filter()?;
    let mut orders = state.service.list(&principal, filter, limit + 1).await?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders
            .last()
            .map(|o| URL_SAFE_NO_PAD.encode(o.id.to_string()))
    } else {
        None
    };
    Ok(axum::Json(OrderPage {
        items: orders.into_iter().map(OrderView::from).collect(),
        next_cursor,
    }))
}

/// Cancel an order before it ships: stock and money are given back. A
/// paid order answers 202: the cancel waits for delivery to confirm that
/// no courier picked it up (`cancellation_requested` on the order).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = OrderView), (status = 202, body = OrderView),
        (status = 404, body = ordo_http::Problem), (status = 409, body = ordo_http::Problem)))]
async fn cancel_order(
    State(state): State<OrdersState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let context = EventContext::from_request(request_id);
    let order = state
        .service
        .cancel(&principal, parse_order_id(&id)?, &context)
        .await?;
    // A paid order is cancelled once delivery confirms nothing left:
    // the request is accepted, the order says so.
    let status = if order.status == OrderStatus::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(OrderView::from(order))).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntryView {
    seq: i64,
    #[serde(rename = "type")]
    #[schema(example = "order.created")]
    event_type: String,
    at: DateTime<Utc>,
    actor: Option<String>,
    correlation_id: String,
    event_id: String,
    data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    items: Vec<TimelineEntryView>,
}

impl From<TimelineEntry> for TimelineEntryView {
    fn from(e: TimelineEntry) -> Self {
        Self {
            seq: e.seq,
            event_type: e.event_type,
            at: e.at,
            actor: e.actor,
            correlation_id: e.correlation_id,
            event_id: e.event_id,
            data: e.data,
        }
    }
}

/// What happened to an order, in order.
#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = Timeline), (status = 404, body = ordo_http::Problem)))]
async fn get_timeline(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Timeline>, ApiError> {
    let entries = state
        .service
        .timeline(&principal, parse_order_id(&id)?)
        .await?;
    Ok(axum::Json(Timeline {
        items: entries.into_iter().map(TimelineEntryView::from).collect(),
    }))
}

/// An order's status, as its event stream tells it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderStatusView {
    #[schema(example = "ord_01JC0000000000000000000000")]
    id: OrderId,
    /// pending, confirmed, paid, shipped, delivered or cancelled.
    #[schema(example = "paid")]
    status: &'static str,
    /// When cancelled, why (as on the order); otherwise null.
    cancellation_reason: Option<String>,
}

impl From<StatusSnapshot> for OrderStatusView {
    fn from(s: StatusSnapshot) -> Self {
        Self {
            id: s.id,
            status: s.status.as_str(),
            cancellation_reason: s.cancellation_reason,
        }
    }
}

/// How long a client waits before it reconnects (the first event's
/// `retry:`).
pub const EVENTS_RETRY: Duration = Duration::from_secs(2);
/// How often an idle event stream carries a comment, so that proxies keep
/// it open.
pub const EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The request header holding the id of the last event a client received.
pub const LAST_EVENT_ID: &str = "Last-Event-ID";

/// The timeline seq named by `Last-Event-ID`; absent or empty: none.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        // What EventSource would send after an event that reset the id.
        Ok("") => Ok(None),
        Ok(v) if v.bytes().all(|b| b.is_ascii_digit()) => match v.parse::<i64>() {
            Ok(seq) => Ok(Some(seq)),
            Err(_) => Err(bad_last_event_id()),
        },
        _ => Err(bad_last_event_id()),
    }
}

fn bad_last_event_id() -> ApiError {
    let field = FieldError::new(
        LAST_EVENT_ID,
        "must be a non-negative integer: the id of the last event received",
    );
    ApiError::Malformed {
        detail: format!("{}: {}", field.field, field.message),
        errors: vec![field],
    }
}

/// One update of an order as a server-sent event; `None` when it cannot
/// be written, which ends the stream.
fn sse_event(order: OrderId, update: Update, first: bool) -> Option<Event> {
    let mut event = Event::default();
    if first {
        event = event.retry(EVENTS_RETRY);
    }
    let written = match update {
        Update::Entry(entry) => {
            if entry.event_type.contains(['\r', '\n']) {
                tracing::warn!(%order, seq = entry.seq, "a timeline entry has no valid event type: the event stream ends");
                return None;
            }
            let event = event.id(entry.seq.to_string()).event(&entry.event_type);
            event.json_data(TimelineEntryView::from(entry))
        }
        Update::Status(status) => event
            .event("status")
            .json_data(OrderStatusView::from(status)),
        Update::End(status) => event.event("end").json_data(OrderStatusView::from(status)),
    };
    match written {
        Ok(event) => Some(event),
        Err(err) => {
            tracing::warn!(%order, error = %err, "cannot write an order event: the event stream ends");
            None
        }
    }
}

/// Follow an order as it happens (Server-Sent Events).
///
/// Who may follow an order is who may read it (`GET /v1/orders/{id}`);
/// the answer is given before the stream begins. The events:
///
/// - one per timeline entry, in order: `id:` its `seq`, `event:` its type
///   (`order.paid`), `data:` the entry as `/timeline` shows it;
/// - `event: status`, without an id, `data: {"id", "status",
///   "cancellation_reason"}`: after the first batch of entries, then
///   after each batch in which the status changed. The status is the
///   order's own and can run ahead of its timeline;
/// - `event: end`, with the same data as `status`, once the order is
///   delivered or cancelled and the entry saying so was sent. The stream
///   then closes: an `EventSource` client calls `close()` on `end`, or it
///   reconnects, and with its last id gets `status` and `end` again at
///   once. Entries other services add later (a stock release, a refund)
///   are in `/timeline`.
///
/// With `Last-Event-ID` (what `EventSource` sends when it reconnects) only
/// the entries with a greater `seq` are sent. The first event carries
/// `retry: 2000`; a comment every 15 s keeps an idle stream open.
#[utoipa::path(get, path = "/v1/orders/{id}/events", tag = "orders",
    security(("bearer" = [])),
    params(
        ("id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received (a timeline seq): only later entries are sent"),
    ),
    responses(
        (status = 200, description = "a stream of timeline entries, `status` and finally `end` events",
            body = String, content_type = "text/event-stream"),
        (status = 400, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 404, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn order_events(
    State(state): State<OrdersState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_order_id(&id)?;
    let after = last_event_id(&headers)?;
    let updates = follow(state.service.clone(), &principal, id, after).await?;
    let events = updates.scan(true, move |first, update| {
        let event = sse_event(id, update, std::mem::take(first));
        futures::future::ready(event.map(Ok))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(EVENTS_KEEP_ALIVE)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountView {
    /// A status, or a cancellation reason.
    #[schema(example = "paid")]
    key: String,
    count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountBucketView {
    start: DateTime<Utc>,
    count: u64,
}

impl From<CountBucket> for CountBucketView {
    fn from(b: CountBucket) -> Self {
        Self {
            start: b.start,
            count: b.count,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyBucketView {
    /// The bucket in which the step ended.
    start: DateTime<Utc>,
    count: u64,
    p50_seconds: f64,
    p95_seconds: f64,
}

impl From<LatencyBucket> for LatencyBucketView {
    fn from(b: LatencyBucket) -> Self {
        Self {
            start: b.start,
            count: b.count,
            p50_seconds: b.p50_seconds,
            p95_seconds: b.p95_seconds,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewView {
    at: DateTime<Utc>,
    /// `by_status` and `cancellations` count the orders created since.
    counts_since: DateTime<Utc>,
    by_status: Vec<CountView>,
    cancellations: Vec<CountView>,
    /// The series start at this bucket edge.
    series_since: DateTime<Utc>,
    bucket_seconds: u64,
    /// Orders created per bucket; the last bucket is still filling.
    created: Vec<CountBucketView>,
    create_to_paid: Vec<LatencyBucketView>,
    paid_to_shipped: Vec<LatencyBucketView>,
}

impl From<Overview> for OverviewView {
    fn from(o: Overview) -> Self {
        Self {
            at: o.at,
            counts_since: o.counts_since,
            by_status: o
                .by_status
                .into_iter()
                .map(|(s, count)| CountView {
                    key: s.as_str().to_owned(),
                    count,
                })
                .collect(),
            cancellations: o
                .cancellations
                .into_iter()
                .map(|(key, count)| CountView { key, count })
                .collect(),
            series_since: o.series_since,
            bucket_seconds: o.bucket.as_secs(),
            created: o.created.into_iter().map(Into::into).collect(),
            create_to_paid: o
                .latencies
                .create_to_paid
                .into_iter()
                .map(Into::into)
                .collect(),
            paid_to_shipped: o
                .latencies
                .paid_to_shipped
                .into_iter()
                .map(Into::into)
                .collect(),
        }
    }
}

/// Orders of the last hour by status and cancellation reason, orders
/// created per minute and the latencies of payment and shipping over the
/// last 30 minutes (admin).
#[utoipa::path(get, path = "/v1/admin/overview", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OverviewView), (status = 403, body = ordo_http::Problem)))]
async fn admin_overview(
    State(state): State<OrdersState>,
    principal: Principal,
) -> Result<axum::Json<OverviewView>, ApiError> {
    Ok(axum::Json(state.service.overview(&principal).await?.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filters(params: &[(&str, &str)]) -> (serde_json::Value, Vec<String>) {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut errors = Vec::new();
        let found = attribute_filters(&mut errors, &params);
        (
            serde_json::Value::Object(found),
            errors.into_iter().map(|e| e.field).collect(),
        )
    }

    #[test]
    fn attribute_values_are_json_scalars_or_else_strings() {
        for (raw, value) in [
            ("true", json!(true)),
            ("false", json!(false)),
            ("null", json!(null)),
            ("42", json!(42)),
            ("-1.5", json!(-1.5)),
            ("1e3", json!(1000.0)),
            ("\"42\"", json!("42")),
            ("\"true\"", json!("true")),
            ("\"\"", json!("")),
            ("\"", json!("\"")),
            ("web", json!("web")),
            ("01234", json!("01234")),
            (" 1", json!(" 1")),
            ("+1", json!("+1")),
            ("1.", json!("1.")),
            ("", json!("")),
            ("black friday", json!("black friday")),
        ] {
            assert_eq!(attribute_value(raw), value, "{raw:?}");
        }
    }

    #[test]
    fn attribute_filters_name_the_parameter_they_find_wrong() {
        let (found, errors) = filters(&[("attr.gift", "true"), ("attr.channel", "web")]);
        assert_eq!(found, json!({"gift": true, "channel": "web"}));
        assert!(errors.is_empty());

        let long = format!("attr.{}", "k".repeat(MAX_ATTRIBUTE_KEY + 1));
        let (_, errors) = filters(&[
            ("attr.", "x"),
            ("attr.a b", "x"),
            ("attr.a.b", "x"),
            (long.as_str(), "x"),
            ("attr.ok_key-1", "x"),
            ("attr.ok_key-1", "y"),
            ("colour", "red"),
        ]);
        assert_eq!(
            errors,
            [
                "attr.",
                "attr.a b",
                "attr.a.b",
                long.as_str(),
                "attr.ok_key-1",
                "colour"
            ]
        );

        let many: Vec<(String, &str)> = (0..=MAX_ATTRIBUTE_FILTERS)
            .map(|i| (format!("attr.k{i}"), "1"))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(filters(&many).1, ["attr"]);
        assert!(filters(&many[..MAX_ATTRIBUTE_FILTERS]).1.is_empty());
    }
}
