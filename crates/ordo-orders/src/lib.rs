//! The orders bounded context.
//!
//! - [`domain`]: the order, its state machine and pricing, pure functions;
//! - [`service`]: the use cases the HTTP routes call;
//! - [`follow`]: an order's updates as they happen, for its event stream;
//! - [`reactions`]: one handler per event this service consumes;
//! - [`routes`]: the HTTP API;
//! - [`store`]: the storage trait and its SQLite and PostgreSQL
//!   implementations.

pub mod domain;
pub mod follow;
pub mod reactions;
pub mod routes;
pub mod service;
pub mod store;

pub use routes::{OrdersState, create_router, router};
pub use service::OrdersService;
pub use store::{MIGRATIONS, OrderStore, PG_MIGRATIONS, PgOrderStore, SqliteOrderStore};
