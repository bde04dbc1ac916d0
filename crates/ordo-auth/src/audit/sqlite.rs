//! The SQLite implementation of [`AuditStore`], in the auth database.

use ordo_kernel::{ClientId, StoreError};
use ordo_sqlite::{Database, store_error, time};
use rusqlite::{Row, params};

use super::{AuditEntry, AuditStore};

pub struct SqliteAuditStore {
    db: Database,
}

impl SqliteAuditStore {
    /// The store over the auth database (migrated with [`crate::MIGRATIONS`]).
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, at, actor_id, action, target, status, request_id";

type RawEntry = (String, String, String, String, String, i64, Option<String>);

fn from_row(row: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn to_entry(raw: RawEntry) -> Result<AuditEntry, StoreError> {
    let (id, at, actor, action, target, status, request_id) = raw;
    let bad = |what: &str| StoreError::Other(anyhow::anyhow!("bad {what} in the audit log"));
    Ok(AuditEntry {
        id,
        at: time::from_sql(&at)?,
        actor: ClientId::parse(&actor).map_err(|_| bad("actor"))?,
        action,
        target,
        status: u16::try_from(status).map_err(|_| bad("status"))?,
        request_id,
    })
}

#[async_trait::async_trait]
impl AuditStore for SqliteAuditStore {
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    &format!(
                        "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        entry.id,
                        time::to_sql(entry.at),
                        entry.actor.to_string(),
                        entry.action,
                        entry.target,
                        i64::from(entry.status),
                        entry.request_id,
                    ],
                )
                .map_err(store_error)
                .map(drop)
            })
            .await
    }

    async fn list(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .read(move |conn| {
                // Two statements rather than `?1 IS NULL OR id < ?1`, so
                // that each is a plain range of the primary key.
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM audit_log{} ORDER BY id DESC LIMIT ?1",
                        if before.is_some() {
                            " WHERE id < ?2"
                        } else {
                            ""
                        }
                    ))
                    .map_err(store_error)?;
                let rows = match &before {
                    Some(before) => stmt.query_map(params![limit, before], from_row),
                    None => stmt.query_map(params![limit], from_row),
                }
                .map_err(store_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(store_error)
            })
            .await?;
        rows.into_iter().map(to_entry).collect()
    }
}
