//! The inventory bounded context: the product catalog, stock levels and
//! reservations.
//!
//! Inventory owns products; every change is published as
//! `product.upserted`, from which the orders service keeps the projection
//! it prices orders with. Stock is reserved for orders all lines or none,
//! and never oversold: see [`stock`] for the decisions and the store for
//! how each backend keeps them safe under concurrency.

pub mod catalog;
pub mod demo;
mod routes;
pub mod service;
pub mod stock;
mod store;

pub use routes::{InventoryState, create_router, router};
pub use service::{CatalogError, InventoryService, consumers};
pub use store::{
    Adjustment, Applied, Decide, InboxKey, MIGRATIONS, PG_MIGRATIONS, PgInventoryStore,
    ProductStore, SqliteInventoryStore, StockStore,
};
