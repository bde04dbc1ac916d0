use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ordo_bus::EventContext;
use ordo_http::{ApiError, Json, Principal, Query, RequestId};
use ordo_kernel::{ClientId, Currency, OrderId, ProductId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::Product;
use crate::service::{ProductDraft, ProductEdit, StockEdit};
use crate::stock::{Reservation, StockLevel};
use crate::{CatalogError, InventoryService, ProductStore};

#[derive(Clone)]
pub struct InventoryState {
    pub products: Arc<dyn ProductStore>,
    pub service: Arc<InventoryService>,
}

pub fn router(state: InventoryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product, update_product))
        .routes(routes!(get_reservation))
        .with_state(state)
}

/// Routes that create: they wear the idempotency layer.
pub fn create_router(state: InventoryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(adjust_stock))
        .with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    id: ProductId,
    sku: String,
    name: String,
    /// Decimal string.
    #[schema(value_type = String, example = "19.99")]
    price: String,
    currency: Currency,
    seller_id: ClientId,
    attributes: serde_json::Value,
    active: bool,
    /// Units that can be ordered now.
    available: i64,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            sku: p.sku,
            name: p.name,
            price: p.currency.format(p.price),
            currency: p.currency,
            seller_id: p.seller_id,
            attributes: p.attributes,
            active: p.active,
            available: p.available,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    items: Vec<ProductView>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProductQuery {
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only this seller's products.
    seller: Option<String>,
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Forbidden(why) => ApiError::Forbidden(why.to_owned()),
            CatalogError::NotFound => ApiError::not_found("no such product"),
            CatalogError::Invalid(errors) => ApiError::validation(errors),
            CatalogError::SkuTaken => ApiError::Conflict {
                slug: "sku-taken",
                detail: err.to_string(),
            },
            CatalogError::ChangedMeanwhile => ApiError::Conflict {
                slug: "concurrent-change",
                detail: err.to_string(),
            },
            CatalogError::InsufficientStock(detail) => ApiError::Conflict {
                slug: "insufficient-stock",
                detail,
            },
            CatalogError::Store(e) => e.into(),
        }
    }
}

/// List the catalog.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(ProductQuery), security(("bearer" = [])),
    responses((status = 200, body = ProductPage), (status = 422, body = ordo_http::Problem)))]
async fn list_products(
    State(state): State<InventoryState>,
    principal: Principal,
    Query(q): Query<ProductQuery>,
) -> Result<axum::Json<ProductPage>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200) as usize;
    let after = q
        .cursor
        .map(|c| {
            ProductId::parse(&c)
                .map_err(|_| ApiError::field("cursor", "is not a cursor this API issued"))
        })
        .transpose()?;
    let seller = q
        .seller
        .map(|s| ClientId::parse(&s).map_err(|_| ApiError::field("seller", "is not a client id")))
        .transpose()?;
    let mut products = state
        .service
        .list_products(&principal, seller, after, limit + 1)
        .await?;
    let next_cursor = if products.len() > limit {
        products.truncate(limit);
        products.last().map(|p| p.id.to_string())
    } else {
        None
    };
    Ok(axum::Json(ProductPage {
        items: products.into_iter().map(ProductView::from).collect(),
        next_cursor,
    }))
}

/// One product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = ProductView), (status = 404, body = ordo_http::Problem)))]
async fn get_product(
    State(state): State<InventoryState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ProductView>, ApiError> {
    let product = state.service.product(&principal, parse_id(&id)?).await?;
    Ok(axum::Json(product.into()))
}

/// A malformed id names no product: the same answer as an unknown one.
fn parse_id(id: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(id).map_err(|_| ApiError::not_found("no such product"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    sku: String,
    name: String,
    /// Decimal string.
    #[schema(example = "9.99")]
    price: String,
    #[schema(value_type = String, example = "EUR")]
    currency: String,
    #[serde(default)]
    attributes: Option<serde_json::Value>,
    /// Units in stock to start with (default 0).
    #[serde(default)]
    initial_stock: Option<i64>,
}

/// Create a product (seller). Publishes product.upserted.
#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = NewProduct,
    security(("bearer" = [])),
    responses((status = 201, body = ProductView), (status = 409, body = ordo_http::Problem),
        (status = 422, body = ordo_http::Problem)))]
async fn create_product(
    State(state): State<InventoryState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    Json(body): Json<NewProduct>,
) -> Result<Response, ApiError> {
    let draft = ProductDraft {
        sku: body.sku,
        name: body.name,
        price: body.price,
        currency: body.currency,
        attributes: body.attributes,
        initial_stock: body.initial_stock,
    };
    let context = EventContext::from_request(request_id);
    let product = state
        .service
        .create_product(&principal, draft, &context)
        .await?;
    let location = format!("/v1/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(ProductView::from(product)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductChange {
    name: Option<String>,
    #[schema(example = "9.99")]
    price: Option<String>,
    attributes: Option<serde_json::Value>,
    /// false withdraws the product from sale.
    active: Option<bool>,
}

/// Change a product (its seller). Publishes product.upserted.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "catalog", params(("id" = String, Path)),
    request_body = ProductChange, security(("bearer" = [])),
    responses((status = 200, body = ProductView), (status = 404, body = ordo_http::Problem),
        (status = 422, body = ordo_http::Problem)))]
async fn update_product(
    State(state): State<InventoryState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    Json(body): Json<ProductChange>,
) -> Result<axum::Json<ProductView>, ApiError> {
    let edit = ProductEdit {
        name: body.name,
        price: body.price,
        attributes: body.attributes,
        active: body.active,
    };
    let context = EventContext::from_request(request_id);
    let product = state
        .service
        .update_product(&principal, parse_id(&id)?, edit, &context)
        .await?;
    Ok(axum::Json(product.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    /// Units to add (restock) or remove (correction).
    delta: i64,
    /// `restock` or `correction`.
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    product_id: ProductId,
    available: i64,
    reserved: i64,
    allocated: i64,
    committed: i64,
}

fn stock_view(product_id: ProductId, l: StockLevel) -> StockView {
    StockView {
        product_id,
        available: l.available,
        reserved: l.reserved,
        allocated: l.allocated,
        committed: l.committed,
    }
}

/// Adjust a product's stock (its seller): a restock or a correction.
#[utoipa::path(post, path = "/v1/products/{id}/stock", tag = "catalog", params(("id" = String, Path)),
    request_body = StockAdjustment, security(("bearer" = [])),
    responses((status = 200, body = StockView), (status = 409, body = ordo_http::Problem),
        (status = 422, body = ordo_http::Problem)))]
async fn adjust_stock(
    State(state): State<InventoryState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<StockAdjustment>,
) -> Result<axum::Json<StockView>, ApiError> {
    let id = parse_id(&id)?;
    let edit = StockEdit {
        delta: body.delta,
        reason: body.reason,
    };
    let level = state.service.adjust_stock(&principal, id, edit).await?;
    Ok(axum::Json(stock_view(id, level)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    order_id: OrderId,
    /// active, allocated, committed, released or failed.
    status: &'static str,
    release_reason: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    lines: Vec<ReservationLineView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationLineView {
    product_id: ProductId,
    quantity: u32,
}

impl From<Reservation> for ReservationView {
    fn from(r: Reservation) -> Self {
        Self {
            order_id: r.order_id,
            status: r.status.as_str(),
            release_reason: r.release_reason,
            expires_at: r.expires_at,
            lines: r
                .lines
                .into_iter()
                .map(|l| ReservationLineView {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
        }
    }
}

/// What inventory holds for an order (admin).
#[utoipa::path(get, path = "/v1/orders/{id}/reservation", tag = "catalog", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = ReservationView), (status = 404, body = ordo_http::Problem)))]
async fn get_reservation(
    State(state): State<InventoryState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ReservationView>, ApiError> {
    let missing = || ApiError::not_found("no reservation for this order");
    let order = OrderId::parse(&id).map_err(|_| missing())?;
    let reservation = state
        .service
        .reservation(&principal, order)
        .await?
        .ok_or_else(missing)?;
    Ok(axum::Json(reservation.into()))
}
