//! The inventory bounded context: the product catalog.
//!
//! Inventory owns products; every change is published as
//! `product.upserted`, from which the orders service keeps the projection
//! it prices orders with. Stock levels and reservations build on this.

pub mod catalog;
pub mod demo;
mod routes;
pub mod service;
pub mod stock;
mod store;

pub use routes::{InventoryState, create_router, router};
pub use service::{InventoryService, consumers};
pub use store::{
    Adjustment, Applied, Decide, InboxKey, MIGRATIONS, ProductStore, SqliteInventoryStore,
    StockStore,
};
