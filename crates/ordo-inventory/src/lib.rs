//! The inventory bounded context: the product catalog.
//!
//! Inventory owns products; every change is published as
//! `product.upserted`, from which the orders service keeps the projection
//! it prices orders with. Stock levels and reservations build on this.

pub mod catalog;
pub mod demo;
mod routes;
mod store;

pub use routes::{InventoryState, router};
pub use store::{MIGRATIONS, ProductStore, SqliteProductStore};
