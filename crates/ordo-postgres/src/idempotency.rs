use std::time::Duration;

use chrono::{DateTime, Utc};
use ordo_http::idempotency_store::{Begin, IdempotencyStore, StoredResponse};
use ordo_kernel::StoreError;

use crate::{PgDatabase, store_error};

/// Idempotency keys kept in a service schema.
#[derive(Clone)]
pub struct PgIdempotency {
    db: PgDatabase,
}

impl PgIdempotency {
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[async_trait::async_trait]
impl IdempotencyStore for PgIdempotency {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<Begin, StoreError> {
        let (stale_lock, expired) = (ago(now, lock_ttl), ago(now, retention));
        self.db
            .transaction(|tx| {
                let (scope, key, fingerprint) =
                    (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
                Box::pin(async move {
                    // A new key is taken by the insert; concurrent requests
                    // with the same key wait on it and then see the row.
                    let insert = tx
                        .prepare_cached(
                            "INSERT INTO idempotency_keys (scope, key, fingerprint, state, locked_at, created_at)
                             VALUES ($1, $2, $3, 'in_flight', $4, $4)
                             ON CONFLICT (scope, key) DO NOTHING",
                        )
                        .await
                        .map_err(store_error)?;
                    if tx
                        .execute(&insert, &[&scope, &key, &fingerprint, &now])
                        .await
                        .map_err(store_error)?
                        == 1
                    {
                        return Ok(Begin::Started);
                    }
                    let select = tx
                        .prepare_cached(
                            "SELECT fingerprint, state, response_status, response_headers, response_body, locked_at, created_at
                             FROM idempotency_keys WHERE scope = $1 AND key = $2 FOR UPDATE",
                        )
                        .await
                        .map_err(store_error)?;
                    let row = tx
                        .query_one(&select, &[&scope, &key])
                        .await
                        .map_err(store_error)?;
                    let created_at: DateTime<Utc> = row.get(6);
                    if created_at < expired {
                        tx.execute(
                            "UPDATE idempotency_keys SET fingerprint = $3, state = 'in_flight',
                                response_status = NULL, response_headers = NULL, response_body = NULL,
                                locked_at = $4, created_at = $4, completed_at = NULL
                             WHERE scope = $1 AND key = $2",
                            &[&scope, &key, &fingerprint, &now],
                        )
                        .await
                        .map_err(store_error)?;
                        return Ok(Begin::Started);
                    }
                    if row.get::<_, &str>(0) != fingerprint {
                        return Ok(Begin::Mismatch);
                    }
                    if row.get::<_, &str>(1) == "completed" {
                        let headers: Vec<(String, String)> = row
                            .get::<_, Option<&str>>(3)
                            .map(serde_json::from_str)
                            .transpose()
                            .map_err(|e| StoreError::Other(e.into()))?
                            .unwrap_or_default();
                        let status: Option<i32> = row.get(2);
                        return Ok(Begin::Replay(StoredResponse {
                            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                            headers,
                            body: row.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
                        }));
                    }
                    let locked_at: DateTime<Utc> = row.get(5);
                    if locked_at < stale_lock {
                        // Its holder died before finishing: let this one run.
                        tx.execute(
                            "UPDATE idempotency_keys SET locked_at = $3 WHERE scope = $1 AND key = $2",
                            &[&scope, &key, &now],
                        )
                        .await
                        .map_err(store_error)?;
                        return Ok(Begin::Started);
                    }
                    Ok(Begin::InFlight)
                })
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
        let status = i32::from(response.status);
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE idempotency_keys SET state = 'completed', response_status = $3,
                    response_headers = $4, response_body = $5, completed_at = $6
                 WHERE scope = $1 AND key = $2",
            )
            .await
            .map_err(store_error)?;
        conn.execute(
            &stmt,
            &[&scope, &key, &status, &headers, &response.body, &now],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_flight'",
            &[&scope, &key],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&before],
        )
        .await
        .map_err(store_error)
    }
}
