//! Ordo's HTTP shell: what every service's routes share.
//!
//! # Errors
//!
//! One error type, [`ApiError`], for every handler and extractor. Each
//! variant is an RFC 9457 problem: bad input is a 4xx that names the
//! offending fields, and an unexpected error is logged with its whole chain
//! and answered as an opaque 500 that carries the request id, so the log
//! line can be found. Extractor rejections go through the same type: use
//! this crate's [`Json`] and [`Query`], never axum's.

pub mod auth;
pub mod extract;
pub mod idempotency;
pub mod idempotency_store;
pub mod metrics;
pub mod problem;
pub mod request;
pub mod validate;

pub use auth::{Claims, Jwt, Principal, Role};
pub use extract::{Json, Query};
pub use problem::{ApiError, FieldError, Problem};
pub use request::RequestId;
