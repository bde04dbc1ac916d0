//! API clients and their credentials.
//!
//! A client is created by an admin (or `ordo client create`) with a role;
//! its secret is shown once and kept only as an argon2 hash. The client
//! exchanges its credentials for a short-lived JWT at `POST /oauth/token`
//! (OAuth2 client credentials grant).

mod routes;
mod service;
mod store;

pub use routes::{AuthState, admin_router, token_router};
pub use service::{AuthService, CreatedClient, StoreDirectory, TokenError};
pub use store::{
    ApiClient, ClientStore, MIGRATIONS, PG_MIGRATIONS, PgClientStore, SqliteClientStore,
};
