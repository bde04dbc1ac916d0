//! Migrations applied at start, per service schema.
//!
//! The schema and its `schema_migrations` table are created on first use.
//! An advisory lock keyed by the schema serialises processes starting at
//! the same time; each migration runs in its own transaction with its
//! checksum, and a changed applied migration stops the start-up.

use ordo_kernel::MigrationSet;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::database::config;

pub(crate) async fn apply(url: &str, schema: &str, sets: &[MigrationSet]) -> anyhow::Result<()> {
    let (mut client, connection) =
        config(url, Some(schema))?
            .connect(NoTls)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to PostgreSQL at {}: {e}",
                    ordo_kernel::redact_url(url)
                )
            })?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection ended");
        }
    });
    let result = run(&mut client, schema, sets).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn run(
    client: &mut tokio_postgres::Client,
    schema: &str,
    sets: &[MigrationSet],
) -> anyhow::Result<()> {
    let lock_key = format!("ordo.migrate.{schema}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await?;
    let result = async {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    set_name   TEXT NOT NULL,
                    version    BIGINT NOT NULL,
                    name       TEXT NOT NULL,
                    checksum   TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (set_name, version)
                 );"
            ))
            .await?;
        for set in sets {
            for migration in set.migrations {
                let checksum = hex::encode(Sha256::digest(migration.sql.as_bytes()));
                let applied = client
                    .query_opt(
                        "SELECT checksum FROM schema_migrations WHERE set_name = $1 AND version = $2",
                        &[&set.name, &migration.version],
                    )
                    .await?
                    .map(|row| row.get::<_, String>(0));
                match applied {
                    Some(existing) if existing == checksum => continue,
                    Some(_) => anyhow::bail!(
                        "migration {}/{} ({}) in schema {schema} was changed after it was applied",
                        set.name,
                        migration.version,
                        migration.name
                    ),
                    None => {
                        let tx = client.transaction().await?;
                        tx.batch_execute(migration.sql).await.map_err(|e| {
                            anyhow::anyhow!(
                                "migration {}/{} ({}) failed: {}",
                                set.name,
                                migration.version,
                                migration.name,
                                crate::describe(&e)
                            )
                        })?;
                        tx.execute(
                            "INSERT INTO schema_migrations (set_name, version, name, checksum)
                             VALUES ($1, $2, $3, $4)",
                            &[&set.name, &migration.version, &migration.name, &checksum],
                        )
                        .await?;
                        tx.commit().await?;
                        tracing::info!(
                            schema,
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
    .await;
    client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await?;
    result
}
