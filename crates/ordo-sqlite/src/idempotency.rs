use std::time::Duration;

use chrono::{DateTime, Utc};
use ordo_http::idempotency_store::{Begin, IdempotencyStore, StoredResponse};
use ordo_kernel::StoreError;
use rusqlite::{OptionalExtension, params};

use crate::{Database, store_error, time};

/// Idempotency keys kept in a service database.
#[derive(Clone)]
pub struct SqliteIdempotency {
    db: Database,
}

impl SqliteIdempotency {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

struct Existing {
    fingerprint: String,
    state: String,
    status: Option<u16>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
    locked_at: String,
    created_at: String,
}

fn ago(now: DateTime<Utc>, d: Duration) -> String {
    let then = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    time::to_sql(then)
}

#[async_trait::async_trait]
impl IdempotencyStore for SqliteIdempotency {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<Begin, StoreError> {
        let (scope, key, fingerprint) = (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
        self.db
            .write(move |tx| {
                let existing = tx
                    .query_row(
                        "SELECT fingerprint, state, response_status, response_headers, response_body, locked_at, created_at
                         FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                        params![scope, key],
                        |r| {
                            Ok(Existing {
                                fingerprint: r.get(0)?,
                                state: r.get(1)?,
                                status: r.get(2)?,
                                headers: r.get(3)?,
                                body: r.get(4)?,
                                locked_at: r.get(5)?,
                                created_at: r.get(6)?,
                            })
                        },
                    )
                    .optional()
                    .map_err(store_error)?;
                let now_sql = time::to_sql(now);
                let take = |tx: &rusqlite::Connection| {
                    tx.execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, state, locked_at, created_at)
                         VALUES (?1, ?2, ?3, 'in_flight', ?4, ?4)
                         ON CONFLICT (scope, key) DO UPDATE SET
                            fingerprint = excluded.fingerprint, state = 'in_flight',
                            response_status = NULL, response_headers = NULL, response_body = NULL,
                            locked_at = excluded.locked_at, created_at = excluded.created_at,
                            completed_at = NULL",
                        params![scope, key, fingerprint, now_sql],
                    )
                    .map_err(store_error)
                };
                let Some(existing) = existing.filter(|e| e.created_at >= ago(now, retention)) else {
                    take(tx)?;
                    return Ok(Begin::Started);
                };
                if existing.fingerprint != fingerprint {
                    return Ok(Begin::Mismatch);
                }
                if existing.state == "completed" {
                    let headers: Vec<(String, String)> = existing
                        .headers
                        .as_deref()
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| StoreError::Other(e.into()))?
                        .unwrap_or_default();
                    return Ok(Begin::Replay(StoredResponse {
                        status: existing.status.unwrap_or(200),
                        headers,
                        body: existing.body.unwrap_or_default(),
                    }));
                }
                if existing.locked_at < ago(now, lock_ttl) {
                    // Its holder died before finishing: let this one run.
                    tx.execute(
                        "UPDATE idempotency_keys SET locked_at = ?3 WHERE scope = ?1 AND key = ?2",
                        params![scope, key, now_sql],
                    )
                    .map_err(store_error)?;
                    return Ok(Begin::Started);
                }
                Ok(Begin::InFlight)
            })
            .await
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let headers =
            serde_json::to_string(&response.headers).map_err(|e| StoreError::Other(e.into()))?;
        let (scope, key, body, status) = (
            scope.to_owned(),
            key.to_owned(),
            response.body.clone(),
            response.status,
        );
        self.db
            .write(move |tx| {
                tx.execute(
                    "UPDATE idempotency_keys SET state = 'completed', response_status = ?3,
                        response_headers = ?4, response_body = ?5, completed_at = ?6
                     WHERE scope = ?1 AND key = ?2",
                    params![scope, key, status, headers, body, time::to_sql(now)],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND state = 'in_flight'",
                    params![scope, key],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM idempotency_keys WHERE created_at < ?1",
                    [time::to_sql(before)],
                )
                .map(|n| n as u64)
                .map_err(store_error)
            })
            .await
    }
}
