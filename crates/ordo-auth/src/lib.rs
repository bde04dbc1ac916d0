//! API clients and their credentials.
//!
//! A client is created by an admin (or `ordo client create`) with a role;
//! its secret is shown once and kept only as an argon2 hash. The client
//! exchanges its credentials for a short-lived JWT at `POST /oauth/token`
//! (OAuth2 client credentials grant).

mod audit;
mod routes;
mod service;
mod sessions;
mod store;
mod throttle;

pub use audit::{
    AUDIT_ID_PREFIX, AuditEntry, AuditLog, AuditPage, AuditStore, NewAuditEntry, PgAuditStore,
    SqliteAuditStore,
};
pub use routes::{AuthState, SourceAddress, admin_router, token_router};
pub use service::{AuthService, CreatedClient, StoreDirectory, TokenError};
pub use sessions::{DEFAULT_SESSION_TTL, NewSession, Session, Sessions};
pub use store::{
    ApiClient, ClientStore, MIGRATIONS, PG_MIGRATIONS, PgClientStore, SessionStore,
    SqliteClientStore, StoredSession,
};
pub use throttle::{Lockout, Throttle, ThrottleLimits};
