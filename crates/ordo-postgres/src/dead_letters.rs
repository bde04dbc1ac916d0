use chrono::{DateTime, Utc};
use ordo_bus::{DeadLetter, DeadLetterStatus, DeadLetterStore, NewDeadLetter};
use ordo_kernel::StoreError;
use tokio_postgres::Row;

use crate::{PgDatabase, store_error};

/// The dead-letter store in the bus schema, shared by every process.
#[derive(Clone)]
pub struct PgDeadLetters {
    db: PgDatabase,
}

impl PgDeadLetters {
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(sql).await.map_err(store_error)?;
        conn.query(&stmt, params)
            .await
            .map_err(store_error)?
            .iter()
            .map(from_row)
            .collect()
    }
}

const COLUMNS: &str = "id, consumer, event_id, event_type, subject, envelope, error, attempts, status, parked_at, replayed_at";

fn from_row(row: &Row) -> Result<DeadLetter, StoreError> {
    let status: &str = row.get(8);
    let attempts: i32 = row.get(7);
    Ok(DeadLetter {
        id: row.get(0),
        consumer: row.get(1),
        event_id: row.get(2),
        event_type: row.get(3),
        subject: row.get(4),
        error: row.get(6),
        attempts: u32::try_from(attempts).unwrap_or(0),
        status: DeadLetterStatus::parse(status).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("unknown dead-letter status {status}"))
        })?,
        parked_at: row.get::<_, DateTime<Utc>>(9),
        replayed_at: row.get::<_, Option<DateTime<Utc>>>(10),
        envelope: serde_json::from_str(row.get(5)).map_err(|e| StoreError::Other(e.into()))?,
    })
}

#[async_trait::async_trait]
impl DeadLetterStore for PgDeadLetters {
    async fn park(&self, letter: NewDeadLetter) -> Result<(), StoreError> {
        let envelope =
            serde_json::to_string(&letter.envelope).map_err(|e| StoreError::Other(e.into()))?;
        let id = format!("dlq_{}", ulid::Ulid::new());
        let attempts = i32::try_from(letter.attempts).unwrap_or(i32::MAX);
        let conn = self.db.conn().await?;
        conn.execute(
            "INSERT INTO dead_letters (id, consumer, event_id, event_type, subject, envelope, error, attempts, status, parked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'parked', $9)
             ON CONFLICT (consumer, event_id) DO UPDATE SET
                error = excluded.error,
                attempts = dead_letters.attempts + excluded.attempts,
                status = 'parked',
                parked_at = excluded.parked_at,
                replayed_at = NULL",
            &[
                &id,
                &letter.consumer,
                &letter.envelope.id.to_string(),
                &letter.envelope.event_type,
                &letter.envelope.subject,
                &envelope,
                &letter.error,
                &attempts,
                &Utc::now(),
            ],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM dead_letters ORDER BY parked_at DESC, id DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await
    }

    async fn get(&self, id: &str) -> Result<DeadLetter, StoreError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"),
            &[&id],
        )
        .await?
        .pop()
        .ok_or(StoreError::NotFound)
    }

    async fn request_replay(&self, id: &str) -> Result<DeadLetter, StoreError> {
        let owned = id.to_owned();
        self.db
            .transaction(|tx| {
                let id = owned.clone();
                Box::pin(async move {
                    let status: Option<String> = tx
                        .query_opt(
                            "SELECT status FROM dead_letters WHERE id = $1 FOR UPDATE",
                            &[&id],
                        )
                        .await
                        .map_err(store_error)?
                        .map(|r| r.get(0));
                    match status.as_deref() {
                        None => Err(StoreError::NotFound),
                        Some("replayed") => {
                            Err(StoreError::Conflict("already replayed".to_owned()))
                        }
                        Some(_) => {
                            tx.execute(
                                "UPDATE dead_letters SET status = 'replay_requested' WHERE id = $1",
                                &[&id],
                            )
                            .await
                            .map_err(store_error)?;
                            Ok(())
                        }
                    }
                })
            })
            .await?;
        self.get(id).await
    }

    async fn replay_requests(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE status = 'replay_requested' ORDER BY parked_at LIMIT 100"
            ),
            &[],
        )
        .await
    }

    async fn mark_replayed(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "UPDATE dead_letters SET status = 'replayed', replayed_at = $2 WHERE id = $1",
            &[&id, &Utc::now()],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn count_open(&self) -> Result<u64, StoreError> {
        let conn = self.db.conn().await?;
        let row = conn
            .query_one(
                "SELECT count(*) FROM dead_letters WHERE status <> 'replayed'",
                &[],
            )
            .await
            .map_err(store_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}
