//! The shared kernel: the few value types every bounded context speaks in.
//!
//! Everything here is pure and validated at construction: an `OrderId` that
//! exists is well-formed, a `Currency` is three upper-case letters, a
//! `Quantity` is within bounds. Past the edge, invalid values cannot exist.

pub mod clock;
pub mod error;
pub mod ids;
pub mod migration;
pub mod money;
pub mod redact;

pub use clock::{Clock, IdGen, SystemClock, UlidGen};
pub use error::StoreError;
pub use ids::{
    ClientId, EventId, IdParseError, OrderId, ParcelId, PaymentId, ProductId, RefundId, ShipmentId,
};
pub use migration::{Migration, MigrationSet};
pub use money::{Currency, Quantity};
pub use redact::redact_url;
