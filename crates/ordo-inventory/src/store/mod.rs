//! Inventory storage: the traits the service and the reactions use, and
//! their two implementations (SQLite for a single process, PostgreSQL for
//! several). Both take their stock decisions with the pure functions of
//! [`crate::stock`], on data no concurrent decision can change meanwhile.

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
pub use ordo_bus::{Applied, InboxKey};
use ordo_kernel::{ClientId, Migration, MigrationSet, OrderId, ProductId, StoreError};

use crate::catalog::Product;
use crate::stock::{Decision, Reservation, Snapshot, StockLevel};

mod postgres;
mod sqlite;

pub use postgres::PgInventoryStore;
pub use sqlite::SqliteInventoryStore;

/// The SQLite migrations: the platform tables, then inventory's.
pub const MIGRATIONS: [MigrationSet; 2] = [
    ordo_sqlite::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "inventory",
        migrations: &[
            Migration {
                version: 1,
                name: "products",
                sql: include_str!("../../migrations/sqlite/0001_products.sql"),
            },
            Migration {
                version: 2,
                name: "stock levels, movements and reservations",
                sql: include_str!("../../migrations/sqlite/0002_stock_and_reservations.sql"),
            },
        ],
    },
];

/// The PostgreSQL migrations (for the `inventory` schema): the platform
/// tables, then inventory's, in the same steps as the SQLite set.
pub const PG_MIGRATIONS: [MigrationSet; 2] = [
    ordo_postgres::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "inventory",
        migrations: &[
            Migration {
                version: 1,
                name: "products",
                sql: include_str!("../../migrations/postgres/0001_products.sql"),
            },
            Migration {
                version: 2,
                name: "stock levels, movements and reservations",
                sql: include_str!("../../migrations/postgres/0002_stock_and_reservations.sql"),
            },
        ],
    },
];

#[async_trait::async_trait]
pub trait ProductStore: Send + Sync + 'static {
    /// Inserts the products with their events, all or none.
    async fn insert_all(&self, products: Vec<(Product, Envelope)>) -> Result<(), StoreError>;
    async fn get(&self, id: ProductId) -> Result<Product, StoreError>;
    /// A page of products in id order after `after`, optionally one seller's.
    async fn list(
        &self,
        seller: Option<ClientId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
    /// Saves a changed product with its event, if it is still at
    /// `expected_version` (else `Conflict`).
    async fn update(
        &self,
        product: Product,
        expected_version: i64,
        event: Envelope,
    ) -> Result<(), StoreError>;
}

/// The pure decision run inside the write transaction. `Fn`, not
/// `FnOnce`: a PostgreSQL transaction that fails on a serialization
/// failure or a deadlock runs again, on a fresh snapshot.
pub type Decide = Box<dyn Fn(&Snapshot) -> Decision + Send + Sync>;

/// A stock adjustment: a restock, a correction, the initial stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub movement_id: String,
    pub product: ProductId,
    pub delta: i64,
    pub reason: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait StockStore: Send + Sync + 'static {
    /// Adds `delta` units to the available stock; `Conflict` when that
    /// would take it below zero, `NotFound` for an unknown product.
    async fn adjust(&self, adjustment: Adjustment) -> Result<StockLevel, StoreError>;
    async fn level(&self, product: ProductId) -> Result<StockLevel, StoreError>;
    /// The product's latest `limit` adjustments, newest first (ties by
    /// movement id, newest first); none for an unknown product.
    async fn movements(
        &self,
        product: ProductId,
        limit: usize,
    ) -> Result<Vec<Adjustment>, StoreError>;
    async fn levels(&self) -> Result<Vec<(ProductId, StockLevel)>, StoreError>;
    /// Loads the order's reservation and the stock of `products` (and of
    /// the reservation's lines), runs `decide` on them and applies its
    /// decision with its events, in one transaction.
    async fn decide(
        &self,
        order: OrderId,
        products: Vec<ProductId>,
        inbox: Option<InboxKey>,
        decide: Decide,
    ) -> Result<Applied, StoreError>;
    async fn reservation(&self, order: OrderId) -> Result<Option<Reservation>, StoreError>;
    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError>;
    /// Active holds whose time ran out by `now`.
    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OrderId>, StoreError>;
    /// When the next active hold runs out.
    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}
