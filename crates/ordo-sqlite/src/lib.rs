//! SQLite, the embedded mode's storage.
//!
//! One [`Database`] per file. SQLite allows one writer at a time, so every
//! write goes through a single writer thread that takes whatever commands
//! are waiting, runs each in its own savepoint inside one transaction, and
//! commits them with one fsync (group commit). A failing command rolls back
//! its savepoint only; the others still commit. Callers get their result
//! after the commit is durable: WAL with `synchronous=FULL`, so an
//! acknowledged write survives a power loss. Reads go to a small pool of
//! connections that WAL lets run beside the writer.
//!
//! The tables every service shares (outbox, inbox, idempotency keys) and
//! the dead-letter store are implemented here too, each behind the trait
//! its platform crate defines.

mod database;
mod dead_letters;
mod idempotency;
mod migrate;
mod outbox;
pub mod time;

pub use database::{Database, DatabaseOptions, WriteTx};
pub use dead_letters::SqliteDeadLetters;
pub use idempotency::SqliteIdempotency;
pub use migrate::{Migration, MigrationSet};
pub use outbox::{SqliteOutbox, inbox_record, outbox_append, record_inbox};

/// Migrations of the tables every service database carries.
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
            name: "retention indexes",
            sql: include_str!("../migrations/platform/0002_retention_indexes.sql"),
        },
    ],
};

/// Migrations of the bus database (dead letters).
pub const BUS_MIGRATIONS: MigrationSet = MigrationSet {
    name: "bus",
    migrations: &[Migration {
        version: 1,
        name: "dead letters",
        sql: include_str!("../migrations/bus/0001_dead_letters.sql"),
    }],
};

/// Maps a rusqlite error to the storage error story: unique and primary
/// key violations are conflicts, everything else is unexpected.
pub fn store_error(err: rusqlite::Error) -> ordo_kernel::StoreError {
    use ordo_kernel::StoreError;
    match &err {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(e, msg)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    e.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            StoreError::Conflict(msg.clone().unwrap_or_else(|| "unique key".to_owned()))
        }
        _ => StoreError::other(err),
    }
}
