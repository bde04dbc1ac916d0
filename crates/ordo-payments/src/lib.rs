//! The payments bounded context.
//!
//! - [`domain`]: the payment, its state machine and money rules, pure
//!   functions;
//! - [`gateway`]: the gateway interface and its HTTP client (timeouts,
//!   retries with the same idempotency key, a circuit breaker);
//! - [`simulator`]: a gateway simulator served over HTTP, with test tokens;
//! - [`service`]: charging, compensating and refunding;
//! - [`reactions`]: the consumer of the order events;
//! - [`routes`]: the HTTP API;
//! - [`store`]: the storage trait and its SQLite and PostgreSQL
//!   implementations;
//! - [`metrics`]: the gateway client's Prometheus metrics.

pub mod domain;
pub mod gateway;
pub mod metrics;
pub mod reactions;
pub mod routes;
pub mod service;
pub mod simulator;
pub mod store;

pub use gateway::{BreakerState, Gateway, GatewayConfig, GatewayError, HttpGateway};
pub use reactions::consumers;
pub use routes::{PaymentsState, router};
pub use service::{PaymentsConfig, PaymentsService};
pub use simulator::{FaultShares, Simulator, SimulatorConfig, SimulatorFaults};
pub use store::{MIGRATIONS, PG_MIGRATIONS, PaymentStore, PgPaymentStore, SqlitePaymentStore};
