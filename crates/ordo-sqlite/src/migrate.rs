//! Migrations embedded in the binary and applied at start.
//!
//! Each set (the platform tables, each service's own) keeps its versions;
//! an applied migration is never edited: its checksum is recorded and a
//! changed one stops the start-up.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

pub use ordo_kernel::{Migration, MigrationSet};

pub(crate) fn apply(conn: &mut Connection, sets: &[MigrationSet]) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            set_name   TEXT NOT NULL,
            version    INTEGER NOT NULL,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at TEXT NOT NULL,
            PRIMARY KEY (set_name, version)
        )",
    )?;
    for set in sets {
        for migration in set.migrations {
            let checksum = hex::encode(Sha256::digest(migration.sql.as_bytes()));
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let applied: Option<String> = tx
                .query_row(
                    "SELECT checksum FROM schema_migrations WHERE set_name = ?1 AND version = ?2",
                    params![set.name, migration.version],
                    |row| row.get(0),
                )
                .optional()?;
            match applied {
                Some(existing) if existing == checksum => continue,
                Some(_) => anyhow::bail!(
                    "migration {}/{} ({}) was changed after it was applied",
                    set.name,
                    migration.version,
                    migration.name
                ),
                None => {
                    tx.execute_batch(migration.sql)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (set_name, version, name, checksum, applied_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            set.name,
                            migration.version,
                            migration.name,
                            checksum,
                            crate::time::to_sql(chrono::Utc::now())
                        ],
                    )?;
                    tx.commit()?;
                    tracing::info!(
                        set = set.name,
                        version = migration.version,
                        name = migration.name,
                        "migration applied"
                    );
                }
            }
        }
    }
    Ok(())
}
