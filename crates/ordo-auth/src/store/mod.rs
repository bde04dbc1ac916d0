//! Auth storage: API clients and signing keys behind [`ClientStore`], on
//! SQLite ([`SqliteClientStore`]) and PostgreSQL ([`PgClientStore`]). SQL
//! lives here and nowhere else in this crate.

use chrono::{DateTime, Utc};
use ordo_http::Role;
use ordo_http::auth::SigningKey;
use ordo_kernel::{ClientId, Migration, MigrationSet, StoreError};

mod postgres;
mod sqlite;

pub use postgres::PgClientStore;
pub use sqlite::SqliteClientStore;

/// The SQLite migrations of the auth database (no outbox: auth publishes
/// no events).
pub const MIGRATIONS: MigrationSet = MigrationSet {
    name: "auth",
    migrations: &[Migration {
        version: 1,
        name: "api clients and signing keys",
        sql: include_str!("../../migrations/sqlite/0001_clients.sql"),
    }],
};

/// The PostgreSQL migrations of the `auth` schema: its own set only, no
/// platform tables, as on SQLite. A one-set list, as `PgDatabase::connect`
/// takes it.
pub const PG_MIGRATIONS: [MigrationSet; 1] = [MigrationSet {
    name: "auth",
    migrations: &[Migration {
        version: 1,
        name: "api clients and signing keys",
        sql: include_str!("../../migrations/postgres/0001_clients.sql"),
    }],
}];

#[derive(Clone, PartialEq, Eq)]
pub struct ApiClient {
    pub id: ClientId,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
pub trait ClientStore: Send + Sync + 'static {
    async fn insert(&self, client: ApiClient) -> Result<(), StoreError>;
    async fn get(&self, id: ClientId) -> Result<ApiClient, StoreError>;
    async fn list(&self) -> Result<Vec<ApiClient>, StoreError>;
    /// Revokes a client; revoking twice keeps the first time.
    async fn revoke(&self, id: ClientId, at: DateTime<Utc>) -> Result<ApiClient, StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    async fn add_signing_key(&self, key: SigningKey, at: DateTime<Utc>) -> Result<(), StoreError>;
}
