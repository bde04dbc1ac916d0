//! The outbox and inbox tables of a service database.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use ordo_bus::{Envelope, InboxKey, OutboxRow, OutboxStore};
use ordo_kernel::StoreError;
use rusqlite::{OptionalExtension, params};
use tokio::sync::Notify;

use crate::{Database, WriteTx, store_error, time};

/// Appends an event to the outbox, inside the caller's transaction.
pub fn outbox_append(tx: &WriteTx<'_>, envelope: &Envelope) -> Result<(), StoreError> {
    let json = serde_json::to_string(envelope).map_err(|e| StoreError::Other(e.into()))?;
    tx.prepare_cached(
        "INSERT INTO outbox (event_id, event_type, subject, envelope, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            envelope.id.to_string(),
            envelope.event_type,
            envelope.subject,
            json,
            time::to_sql(envelope.time)
        ])
    })
    .map_err(store_error)?;
    tx.mark_outbox_written();
    Ok(())
}

/// Records that `consumer` applied `event_id`, inside the transaction of the
/// effect. `false` means it already had: the caller must skip the effect.
pub fn inbox_record(tx: &WriteTx<'_>, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![consumer, event_id, time::to_sql(Utc::now())]))
        .map_err(store_error)?;
    Ok(inserted == 1)
}

/// Records the claim, if there is one, inside the transaction of the
/// effect. `false` means the consumer already applied the event: the
/// caller must skip the effect.
pub fn record_inbox(tx: &WriteTx<'_>, inbox: Option<&InboxKey>) -> Result<bool, StoreError> {
    match inbox {
        Some(key) => inbox_record(tx, &key.consumer, &key.event_id),
        None => Ok(true),
    }
}

/// The outbox of one SQLite service database.
///
/// One relay per file runs in the one process that writes it, so claims are
/// leased in memory: a claimed row is skipped by later claims until it is
/// marked or released, and after a crash every unmarked row is claimable.
pub struct SqliteOutbox {
    db: Database,
    service: String,
    leased: Arc<Mutex<HashSet<i64>>>,
}

impl SqliteOutbox {
    pub fn new(service: &str, db: Database) -> Self {
        Self {
            db,
            service: service.to_owned(),
            leased: Arc::default(),
        }
    }

    /// The event with this id, if the outbox holds it.
    pub async fn event(&self, event_id: &str) -> Result<Option<Envelope>, StoreError> {
        let event_id = event_id.to_owned();
        let json: Option<String> = self
            .db
            .read(move |conn| {
                conn.query_row(
                    "SELECT envelope FROM outbox WHERE event_id = ?1",
                    [event_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(store_error)
            })
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Other(e.into())))
            .transpose()
    }
}

fn lock(m: &Mutex<HashSet<i64>>) -> std::sync::MutexGuard<'_, HashSet<i64>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl OutboxStore for SqliteOutbox {
    fn service(&self) -> &str {
        &self.service
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.db.outbox_wakeup()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let already = lock(&self.leased).len();
        let fetch = i64::try_from(limit + already).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String)> = self
            .db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, envelope FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?1",
                    )
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map([fetch], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(store_error)?;
                rows.collect::<Result<_, _>>().map_err(store_error)
            })
            .await?;
        let mut leased = lock(&self.leased);
        let mut claimed = Vec::new();
        for (seq, json) in rows {
            if claimed.len() == limit {
                break;
            }
            if !leased.insert(seq) {
                continue;
            }
            match serde_json::from_str(&json) {
                Ok(envelope) => claimed.push(OutboxRow { seq, envelope }),
                Err(err) => {
                    // Written by this code, so this is a bug or corruption;
                    // leave the row leased so it does not block the rest.
                    tracing::error!(service = %self.service, seq, error = %err, "unreadable outbox row");
                }
            }
        }
        Ok(claimed)
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let owned = seqs.to_vec();
        self.db
            .write(move |tx| {
                let now = time::to_sql(Utc::now());
                let mut stmt = tx
                    .prepare_cached("UPDATE outbox SET published_at = ?1 WHERE seq = ?2")
                    .map_err(store_error)?;
                for seq in owned {
                    stmt.execute(params![now, seq]).map_err(store_error)?;
                }
                Ok(())
            })
            .await?;
        let mut leased = lock(&self.leased);
        for seq in seqs {
            leased.remove(seq);
        }
        Ok(())
    }

    async fn release(&self, seqs: &[i64]) {
        let mut leased = lock(&self.leased);
        for seq in seqs {
            leased.remove(seq);
        }
    }

    async fn events_for_subject(&self, subject: &str) -> Result<Vec<Envelope>, StoreError> {
        let subject = subject.to_owned();
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT envelope FROM outbox WHERE subject = ?1 ORDER BY seq")
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map([subject], |row| row.get::<_, String>(0))
                    .map_err(store_error)?;
                rows.map(|json| {
                    let json = json.map_err(store_error)?;
                    serde_json::from_str(&json).map_err(|e| StoreError::Other(e.into()))
                })
                .collect()
            })
            .await
    }

    async fn purge(
        &self,
        published_before: chrono::DateTime<Utc>,
        processed_before: chrono::DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        self.db
            .write(move |tx| {
                let outbox = tx
                    .execute(
                        "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?1",
                        [time::to_sql(published_before)],
                    )
                    .map_err(store_error)?;
                let inbox = tx
                    .execute(
                        "DELETE FROM inbox WHERE processed_at < ?1",
                        [time::to_sql(processed_before)],
                    )
                    .map_err(store_error)?;
                Ok((outbox as u64, inbox as u64))
            })
            .await
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        self.db
            .read(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(store_error)
            })
            .await
    }
}
