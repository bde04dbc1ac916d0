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

pub const PAYMENTS_SOURCE: &str = "/ordo/payments";
pub const DELIVERY_SOURCE: &str = "/ordo/delivery";

/// A product line and how many of it: what inventory holds for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: ProductId,
    pub quantity: u32,
}

/// Stock for every line of the order is held until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: OrderId,
    pub lines: Vec<StockLine>,
    pub expires_at: DateTime<Utc>,
}

impl EventPayload for InventoryReserved {
    const TYPE: &'static str = "inventory.reserved.v1";
    const SOURCE: &'static str = INVENTORY_SOURCE;
}

/// Nothing was reserved: some line could not be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReservationFailed {
    pub order_id: OrderId,
    /// `out_of_stock` or `unknown_product`.
    pub reason: String,
    /// The products that could not be served.
    pub products: Vec<ProductId>,
}

impl EventPayload for InventoryReservationFailed {
    const TYPE: &'static str = "inventory.reservation_failed.v1";
    const SOURCE: &'static str = INVENTORY_SOURCE;
}

/// What the order held is available again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReleased {
    pub order_id: OrderId,
    /// `expired` (the hold lapsed before payment) or `cancelled`.
    pub reason: String,
    pub lines: Vec<StockLine>,
}

impl EventPayload for InventoryReleased {
    const TYPE: &'static str = "inventory.released.v1";
    const SOURCE: &'static str = INVENTORY_SOURCE;
}

/// The order's stock left the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryCommitted {
    pub order_id: OrderId,
    pub lines: Vec<StockLine>,
}

impl EventPayload for InventoryCommitted {
    const TYPE: &'static str = "inventory.committed.v1";
    const SOURCE: &'static str = INVENTORY_SOURCE;
}

/// Stock is held: the order is to be charged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub customer_id: ClientId,
    pub total: Decimal,
    pub currency: Currency,
    /// The gateway token the customer gave.
    pub payment_token: String,
}

impl EventPayload for OrderConfirmed {
    const TYPE: &'static str = "order.confirmed.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

/// The order is paid: hold its stock for good and ship it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: OrderId,
    pub customer_id: ClientId,
    pub items: Vec<OrderLine>,
    pub shipping_address: Address,
    pub total: Decimal,
    pub currency: Currency,
}

impl EventPayload for OrderPaid {
    const TYPE: &'static str = "order.paid.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

/// The courier picked the order up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub items: Vec<OrderLine>,
}

impl EventPayload for OrderShipped {
    const TYPE: &'static str = "order.shipped.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderDelivered {
    pub order_id: OrderId,
}

impl EventPayload for OrderDelivered {
    const TYPE: &'static str = "order.delivered.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

/// The order's total was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: OrderId,
    /// `pay_…`
    pub payment_id: String,
    pub amount: Decimal,
    pub currency: Currency,
}

impl EventPayload for PaymentSucceeded {
    const TYPE: &'static str = "payment.succeeded.v1";
    const SOURCE: &'static str = PAYMENTS_SOURCE;
}

/// The order could not be charged; nothing was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: OrderId,
    pub payment_id: String,
    /// `declined`, `gateway_unavailable`, …
    pub reason: String,
}

impl EventPayload for PaymentFailed {
    const TYPE: &'static str = "payment.failed.v1";
    const SOURCE: &'static str = PAYMENTS_SOURCE;
}

/// Money went back to the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: OrderId,
    pub payment_id: String,
    /// `ref_…`
    pub refund_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    /// `order_cancelled`, `late_payment`, `requested_by_admin`, …
    pub reason: String,
}

impl EventPayload for PaymentRefunded {
    const TYPE: &'static str = "payment.refunded.v1";
    const SOURCE: &'static str = PAYMENTS_SOURCE;
}

/// A stop of a shipment's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waypoint {
    /// 1-based position on the route.
    pub seq: u32,
    /// `pickup` or `dropoff`.
    pub kind: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parcel {
    /// `prc_…`
    pub parcel_id: String,
    pub seller_id: ClientId,
    pub lines: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCreated {
    pub order_id: OrderId,
    /// `shp_…`
    pub shipment_id: String,
    pub parcels: Vec<Parcel>,
    pub waypoints: Vec<Waypoint>,
}

impl EventPayload for ShipmentCreated {
    const TYPE: &'static str = "shipment.created.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentPickedUp {
    pub order_id: OrderId,
    pub shipment_id: String,
}

impl EventPayload for ShipmentPickedUp {
    const TYPE: &'static str = "shipment.picked_up.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentWaypointReached {
    pub order_id: OrderId,
    pub shipment_id: String,
    pub waypoint: u32,
    pub location: String,
    pub eta: Option<DateTime<Utc>>,
}

impl EventPayload for ShipmentWaypointReached {
    const TYPE: &'static str = "shipment.waypoint_reached.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDelivered {
    pub order_id: OrderId,
    pub shipment_id: String,
}

impl EventPayload for ShipmentDelivered {
    const TYPE: &'static str = "shipment.delivered.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentFailed {
    pub order_id: OrderId,
    pub shipment_id: String,
    pub reason: String,
}

impl EventPayload for ShipmentFailed {
    const TYPE: &'static str = "shipment.failed.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}

/// The customer (or an admin) asked to cancel a paid order. Delivery
/// answers: `shipment.cancelled` if nothing was picked up yet, otherwise
/// the pickup already on its way settles it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancellationRequested {
    pub order_id: OrderId,
    pub reason: String,
}

impl EventPayload for OrderCancellationRequested {
    const TYPE: &'static str = "order.cancellation_requested.v1";
    const SOURCE: &'static str = ORDERS_SOURCE;
}

/// The order's shipment was called off before any pickup (or the order
/// never got one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCancelled {
    pub order_id: OrderId,
    /// `None` when the order had no shipment yet.
    pub shipment_id: Option<String>,
}

impl EventPayload for ShipmentCancelled {
    const TYPE: &'static str = "shipment.cancelled.v1";
    const SOURCE: &'static str = DELIVERY_SOURCE;
}
