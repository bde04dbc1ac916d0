//! Delivery storage: the trait the service, reactions and simulator use,
//! and its implementations on SQLite ([`SqliteShipmentStore`]) and
//! PostgreSQL ([`PgShipmentStore`]). SQL lives here and nowhere else in
//! this crate.

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
pub use ordo_bus::{Applied, InboxKey};
use ordo_kernel::{Migration, MigrationSet, OrderId, StoreError};

use crate::domain::{CourierLogEntry, Shipment, ShipmentId, ShipmentStatus};

mod postgres;
mod sqlite;

pub use postgres::PgShipmentStore;
pub use sqlite::SqliteShipmentStore;

/// The SQLite migrations of the delivery database.
pub const MIGRATIONS: [MigrationSet; 2] = [
    ordo_sqlite::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "delivery",
        migrations: &[Migration {
            version: 1,
            name: "shipments, parcels, waypoints, courier events, cancelled orders",
            sql: include_str!("../../migrations/sqlite/0001_delivery.sql"),
        }],
    },
];

/// The PostgreSQL migrations of the `delivery` schema.
pub const PG_MIGRATIONS: [MigrationSet; 2] = [
    ordo_postgres::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "delivery",
        migrations: &[Migration {
            version: 1,
            name: "shipments, parcels, waypoints, courier events, cancelled orders",
            sql: include_str!("../../migrations/postgres/0001_delivery.sql"),
        }],
    },
];

/// What creating a shipment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created,
    /// The inbox already held the event, or the order already has its
    /// shipment: nothing was written but the inbox entry.
    Duplicate,
    /// The order was cancelled before it was paid: no shipment, ever.
    OrderCancelled,
}

/// A shipment as the invariant checker lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipmentSummary {
    pub shipment_id: ShipmentId,
    pub order_id: OrderId,
    pub status: ShipmentStatus,
}

#[async_trait::async_trait]
pub trait ShipmentStore: Send + Sync + 'static {
    /// Writes a new shipment and its `shipment.created` with the inbox entry
    /// of the `order.paid` that caused it, atomically, unless the order
    /// already has a shipment or was cancelled.
    async fn create(
        &self,
        shipment: Shipment,
        created: Envelope,
        inbox: InboxKey,
    ) -> Result<Creation, StoreError>;
    async fn get(&self, id: ShipmentId) -> Result<Shipment, StoreError>;
    async fn find_by_order(&self, order: OrderId) -> Result<Option<Shipment>, StoreError>;
    /// Saves a transitioned shipment with its events and courier log entry,
    /// if the stored version is still `expected_version` (else `Conflict`),
    /// and with the inbox entry of the event that caused it, if any.
    async fn save_transition(
        &self,
        shipment: Shipment,
        expected_version: i64,
        events: Vec<Envelope>,
        log: Option<CourierLogEntry>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError>;
    /// Remembers that `order` was cancelled before it had a shipment.
    /// `Conflict` when it has one by now: the caller looks again.
    async fn remember_cancelled(
        &self,
        order: OrderId,
        reason: String,
        at: DateTime<Utc>,
        events: Vec<Envelope>,
        inbox: InboxKey,
    ) -> Result<Applied, StoreError>;
    /// Shipments still on their way, oldest first.
    async fn active(&self, limit: usize) -> Result<Vec<Shipment>, StoreError>;
    /// What couriers reported about a shipment, in the order it was applied.
    async fn courier_log(&self, id: ShipmentId) -> Result<Vec<CourierLogEntry>, StoreError>;
    /// Every shipment's order and status, a page at a time in id order,
    /// starting after `after`.
    async fn list_statuses(
        &self,
        after: Option<ShipmentId>,
        limit: usize,
    ) -> Result<Vec<ShipmentSummary>, StoreError>;
}
