use chrono::Utc;
use ordo_bus::{DeadLetter, DeadLetterStatus, DeadLetterStore, NewDeadLetter};
use ordo_kernel::StoreError;
use rusqlite::{OptionalExtension, Row, params};

use crate::{Database, store_error, time};

/// The dead-letter store of the embedded mode, in the bus database.
#[derive(Clone)]
pub struct SqliteDeadLetters {
    db: Database,
}

impl SqliteDeadLetters {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, consumer, event_id, event_type, subject, envelope, error, attempts, status, parked_at, replayed_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<DeadLetter, StoreError>> {
    let envelope: String = row.get(5)?;
    let status: String = row.get(8)?;
    let parked_at: String = row.get(9)?;
    let replayed_at: Option<String> = row.get(10)?;
    let id: String = row.get(0)?;
    let consumer: String = row.get(1)?;
    let event_id: String = row.get(2)?;
    let event_type: String = row.get(3)?;
    let subject: String = row.get(4)?;
    let error: String = row.get(6)?;
    let attempts: u32 = row.get(7)?;
    Ok((|| {
        Ok(DeadLetter {
            id,
            consumer,
            event_id,
            event_type,
            subject,
            error,
            attempts,
            status: DeadLetterStatus::parse(&status).ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("unknown dead-letter status {status}"))
            })?,
            parked_at: time::from_sql(&parked_at)?,
            replayed_at: replayed_at.as_deref().map(time::from_sql).transpose()?,
            envelope: serde_json::from_str(&envelope).map_err(|e| StoreError::Other(e.into()))?,
        })
    })())
}

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let rows = stmt.query_map(params, from_row).map_err(store_error)?;
    rows.map(|r| r.map_err(store_error)?).collect()
}

#[async_trait::async_trait]
impl DeadLetterStore for SqliteDeadLetters {
    async fn park(&self, letter: NewDeadLetter) -> Result<(), StoreError> {
        let envelope =
            serde_json::to_string(&letter.envelope).map_err(|e| StoreError::Other(e.into()))?;
        let id = format!("dlq_{}", ulid::Ulid::new());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO dead_letters (id, consumer, event_id, event_type, subject, envelope, error, attempts, status, parked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'parked', ?9)
                     ON CONFLICT (consumer, event_id) DO UPDATE SET
                        error = excluded.error,
                        attempts = dead_letters.attempts + excluded.attempts,
                        status = 'parked',
                        parked_at = excluded.parked_at,
                        replayed_at = NULL",
                    params![
                        id,
                        letter.consumer,
                        letter.envelope.id.to_string(),
                        letter.envelope.event_type,
                        letter.envelope.subject,
                        envelope,
                        letter.error,
                        letter.attempts,
                        time::to_sql(Utc::now())
                    ],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |conn| {
                query(
                    conn,
                    &format!("SELECT {COLUMNS} FROM dead_letters ORDER BY parked_at DESC, id DESC LIMIT ?1"),
                    [limit],
                )
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<DeadLetter, StoreError> {
        let id = id.to_owned();
        self.db
            .read(move |conn| {
                query(
                    conn,
                    &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"),
                    [id],
                )?
                .pop()
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn request_replay(&self, id: &str) -> Result<DeadLetter, StoreError> {
        let owned = id.to_owned();
        self.db
            .write(move |tx| {
                let status: Option<String> = tx
                    .query_row(
                        "SELECT status FROM dead_letters WHERE id = ?1",
                        [&owned],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(store_error)?;
                match status.as_deref() {
                    None => Err(StoreError::NotFound),
                    Some("replayed") => Err(StoreError::Conflict("already replayed".to_owned())),
                    Some(_) => {
                        tx.execute(
                            "UPDATE dead_letters SET status = 'replay_requested' WHERE id = ?1",
                            [&owned],
                        )
                        .map_err(store_error)?;
                        Ok(())
                    }
                }
            })
            .await?;
        self.get(id).await
    }

    async fn replay_requests(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.db
            .read(|conn| {
                query(
                    conn,
                    &format!(
                        "SELECT {COLUMNS} FROM dead_letters WHERE status = 'replay_requested' ORDER BY parked_at LIMIT 100"
                    ),
                    [],
                )
            })
            .await
    }

    async fn mark_replayed(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.db
            .write(move |tx| {
                tx.execute(
                    "UPDATE dead_letters SET status = 'replayed', replayed_at = ?2 WHERE id = ?1",
                    params![id, time::to_sql(Utc::now())],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn count_open(&self) -> Result<u64, StoreError> {
        self.db
            .read(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM dead_letters WHERE status <> 'replayed'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(store_error)
            })
            .await
    }
}
