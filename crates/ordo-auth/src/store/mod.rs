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
    migrations: &[
        Migration {
            version: 1,
            name: "api clients and signing keys",
            sql: include_str!("../../migrations/sqlite/0001_clients.sql"),
        },
        Migration {
            version: 2,
            name: "console sessions",
            sql: include_str!("../../migrations/sqlite/0002_console_sessions.sql"),
        },
        Migration {
            version: 3,
            name: "audit log",
            sql: include_str!("../../migrations/sqlite/0003_audit.sql"),
        },
    ],
};

/// The PostgreSQL migrations of the `auth` schema: its own set only, no
/// platform tables, as on SQLite. A one-set list, as `PgDatabase::connect`
/// takes it.
pub const PG_MIGRATIONS: [MigrationSet; 1] = [MigrationSet {
    name: "auth",
    migrations: &[
        Migration {
            version: 1,
            name: "api clients and signing keys",
            sql: include_str!("../../migrations/postgres/0001_clients.sql"),
        },
        Migration {
            version: 2,
            name: "console sessions",
            sql: include_str!("../../migrations/postgres/0002_console_sessions.sql"),
        },
        Migration {
            version: 3,
            name: "audit log",
            sql: include_str!("../../migrations/postgres/0003_audit.sql"),
        },
    ],
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

/// A signed-in console session, as stored: the token itself is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the cookie's token, hex.
    pub token_hash: String,
    pub client_id: ClientId,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Console sessions, kept beside the clients they belong to.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: StoredSession) -> Result<(), StoreError>;
    /// The session with this token hash, expired or not.
    async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Ends a session; ending an unknown one is not an error.
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;
    /// Deletes the sessions that expired before `before`; how many.
    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
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
