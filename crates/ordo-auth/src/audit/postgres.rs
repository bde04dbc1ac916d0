//! The PostgreSQL implementation of [`AuditStore`], in the `auth` schema
//! that every process of a deployment shares.

use ordo_kernel::{ClientId, StoreError};
use ordo_postgres::{PgDatabase, Row, bad_value, store_error};
use tokio_postgres::types::FromSql;

use super::{AuditEntry, AuditStore};

pub struct PgAuditStore {
    db: PgDatabase,
}

impl PgAuditStore {
    /// The store over a database connected with [`crate::PG_MIGRATIONS`].
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, at, actor_id, action, target, status, request_id";

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(store_error)
}

fn entry_row(row: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: col(row, 0)?,
        at: col(row, 1)?,
        actor: ClientId::parse(col(row, 2)?).map_err(|_| bad_value("actor", "auth"))?,
        action: col(row, 3)?,
        target: col(row, 4)?,
        status: u16::try_from(col::<i16>(row, 5)?).map_err(|_| bad_value("status", "auth"))?,
        request_id: col(row, 6)?,
    })
}

#[async_trait::async_trait]
impl AuditStore for PgAuditStore {
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let status = i16::try_from(entry.status).map_err(|_| bad_value("status", "auth"))?;
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .await
            .map_err(store_error)?;
        conn.execute(
            &stmt,
            &[
                &entry.id,
                &entry.at,
                &entry.actor.to_string(),
                &entry.action,
                &entry.target,
                &status,
                &entry.request_id,
            ],
        )
        .await
        .map_err(store_error)
        .map(drop)
    }

    async fn list(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // An admin's view: a replica may answer. Two statements, so that
        // each is a plain range of the primary key.
        let conn = self.db.read_conn().await?;
        let rows = match &before {
            Some(before) => {
                let stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM audit_log WHERE id < $2 ORDER BY id DESC LIMIT $1"
                    ))
                    .await
                    .map_err(store_error)?;
                conn.query(&stmt, &[&limit, before]).await
            }
            None => {
                let stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"
                    ))
                    .await
                    .map_err(store_error)?;
                conn.query(&stmt, &[&limit]).await
            }
        }
        .map_err(store_error)?;
        rows.iter().map(entry_row).collect()
    }
}
