//! PostgreSQL, the distributed mode's storage (and a single shop's, once it
//! outgrows one SQLite file).
//!
//! Each service owns one schema in the database; a [`PgDatabase`] is a pool
//! of connections whose `search_path` is that schema, so a service's SQL
//! names its own tables only and can never reach another's. Writes run in
//! READ COMMITTED transactions, retried on serialization failures and
//! deadlocks; statements are prepared once per connection and cached.
//!
//! The tables every service schema carries (outbox, inbox, idempotency
//! keys) and the dead-letter store live here, each behind the trait its
//! platform crate defines, with the same behaviour as their SQLite
//! counterparts (one conformance suite checks both).

mod database;
mod dead_letters;
pub mod explain;
mod idempotency;
mod migrate;
mod outbox;
pub mod pgbench;
pub mod testing;

pub use database::{PgDatabase, PgOptions};
pub use dead_letters::PgDeadLetters;
pub use deadpool_postgres::{GenericClient, Transaction};
pub use idempotency::PgIdempotency;
pub use ordo_kernel::{Migration, MigrationSet};
pub use outbox::{PgOutbox, outbox_append, record_inbox};
pub use tokio_postgres::Row;
pub use tokio_postgres::types::ToSql;

/// Migrations of the tables every service schema carries.
pub const PLATFORM_MIGRATIONS: MigrationSet = MigrationSet {
    name: "platform",
    migrations: &[
        Migration {
            version: 1,
            name: "outbox, inbox and idempotency keys",
            sql: include_str!("../migrations/platform/0001_outbox_inbox_idempotency.sql"),
        },
        Migration {
            version: 2,
            name: "outbox vacuumed by a fixed count of updates",
            sql: include_str!("../migrations/platform/0002_outbox_vacuum.sql"),
        },
    ],
};

/// Migrations of the bus schema (dead letters).
pub const BUS_MIGRATIONS: MigrationSet = MigrationSet {
    name: "bus",
    migrations: &[Migration {
        version: 1,
        name: "dead letters",
        sql: include_str!("../migrations/bus/0001_dead_letters.sql"),
    }],
};

/// Maps a driver error to the storage error story: unique violations are
/// conflicts, everything else is unexpected (carried with the driver error
/// in its chain, so that `PgDatabase::transaction` can still recognise a
/// serialization failure and retry).
pub fn store_error(err: tokio_postgres::Error) -> ordo_kernel::StoreError {
    use ordo_kernel::StoreError;
    use tokio_postgres::error::SqlState;
    match err.code() {
        Some(&SqlState::UNIQUE_VIOLATION) => StoreError::Conflict(
            err.as_db_error()
                .and_then(|e| e.constraint().map(str::to_owned))
                .unwrap_or_else(|| "unique key".to_owned()),
        ),
        _ => {
            let detail = describe(&err);
            StoreError::Other(anyhow::Error::new(err).context(detail))
        }
    }
}

/// The server's message when there is one (the driver's own `Display` says
/// only "db error").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// Maps an unreadable stored value to the storage error story.
pub fn bad_value(what: &str, schema: &str) -> ordo_kernel::StoreError {
    ordo_kernel::StoreError::Other(anyhow::anyhow!("bad {what} in the {schema} schema"))
}
