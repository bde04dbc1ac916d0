use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use ordo_http::{ApiError, Principal, Query, Role};
use ordo_kernel::{ClientId, Currency, ProductId, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ProductStore;
use crate::catalog::Product;

#[derive(Clone)]
pub struct InventoryState {
    pub products: Arc<dyn ProductStore>,
}

pub fn router(state: InventoryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product))
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

/// List the catalog.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(ProductQuery), security(("bearer" = [])),
    responses((status = 200, body = ProductPage), (status = 422, body = ordo_http::Problem)))]
async fn list_products(
    State(state): State<InventoryState>,
    _principal: Principal,
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
    let mut products = state.products.list(seller, after, limit + 1).await?;
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
    let not_found = || ApiError::not_found("no such product");
    let id = ProductId::parse(&id).map_err(|_| not_found())?;
    let product = state.products.get(id).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        other => other.into(),
    })?;
    if !product.active && principal.role != Role::Admin && principal.client_id != product.seller_id
    {
        return Err(not_found());
    }
    Ok(axum::Json(product.into()))
}
