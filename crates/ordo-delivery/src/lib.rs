//! The delivery bounded context.
//!
//! - [`domain`]: shipments, their routes and the courier state machine,
//!   pure functions;
//! - [`service`]: the use cases: reading shipments, recording courier
//!   events;
//! - [`reactions`]: one handler per event this service consumes
//!   (`order.paid`, `order.cancelled`);
//! - [`routes`]: the HTTP API;
//! - [`simulator`]: the courier simulator;
//! - [`store`]: the storage trait and its SQLite and PostgreSQL
//!   implementations.

pub mod domain;
pub mod reactions;
pub mod routes;
pub mod service;
pub mod simulator;
pub mod store;

pub use reactions::consumers;
pub use routes::{DeliveryState, router};
pub use service::{Actor, DeliveryError, DeliveryService};
pub use simulator::CourierSimulator;
pub use store::{MIGRATIONS, PG_MIGRATIONS, PgShipmentStore, ShipmentStore, SqliteShipmentStore};
