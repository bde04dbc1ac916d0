//! The event catalog: the published language the services speak.
//!
//! Every event is a typed payload with a versioned type. Producers and
//! consumers share these definitions and nothing else; a breaking change
//! to a payload is a new version, published beside the old one until every
//! consumer reads it.

use chrono::{DateTime, Utc};
use ordo_bus::EventPayload;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub const ORDERS_SOURCE: &str = "/ordo/orders";
pub const INVENTORY_SOURCE: &str = "/ordo/inventory";

/// A shipping address as the order holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A product was created or changed in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductUpserted {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub price: Decimal,
    pub currency: Currency,
    pub seller_id: ClientId,
    pub attributes: serde_json::Value,
    pub active: bool,
    /// Increases with every change; a consumer keeps the highest it saw.
    pub version: i64,
}

impl EventPayload for ProductUpserted {
    const TYPE: &'static str = "product.upserted.v1";
    const SOURCE: &'static str = INVENTORY_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub sku: String,
    pub seller_id: ClientId,
    pub quantity: u32,
    pub unit_price: Decimal,
}

/// An order was accepted and waits for stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: OrderId,
    pub customer_id: ClientId,
    pub items: Vec<OrderLine>,
    pub total: Decimal,
    pub currency: Currency,
    pub shipping_address: Address,
    pub created_at: DateTime<Utc>,
}

impl EventPayload for OrderCreated {
    const TYPE: &'static str = "order.created.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

/// An order was cancelled; whatever it holds must be given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reason: String,
    /// The status the order had when it was cancelled.
    pub from_status: String,
}

impl EventPayload for OrderCancelled {
    const TYPE: &'static str = "order.cancelled.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}
