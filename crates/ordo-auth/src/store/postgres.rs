//! The PostgreSQL implementation of [`ClientStore`], in the `auth` schema,
//! shared by every process of a deployment.
//!
//! Revoking is one `UPDATE` that keeps the first revocation time, so
//! concurrent revocations agree. Keys are added with a plain `INSERT`: a
//! key whose kid exists is a `Conflict`, which is how processes starting
//! together on an empty store settle on one first key (see
//! `AuthService::start`).

use chrono::{DateTime, Utc};
use ordo_http::Role;
use ordo_http::auth::SigningKey;
use ordo_kernel::{ClientId, StoreError};
use ordo_postgres::{PgDatabase, Row, bad_value, store_error};
use tokio_postgres::types::FromSql;

use super::{ApiClient, ClientStore, SessionStore, StoredSession};

pub struct PgClientStore {
    db: PgDatabase,
}

impl PgClientStore {
    /// The store over a database connected with [`super::PG_MIGRATIONS`].
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, name, role, secret_hash, created_at, revoked_at";

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(store_error)
}

fn client_row(row: &Row) -> Result<ApiClient, StoreError> {
    Ok(ApiClient {
        id: ClientId::parse(col(row, 0)?).map_err(|_| bad_value("client id", "auth"))?,
        name: col(row, 1)?,
        role: Role::parse(col(row, 2)?).ok_or_else(|| bad_value("role", "auth"))?,
        secret_hash: col(row, 3)?,
        created_at: col(row, 4)?,
        revoked_at: col(row, 5)?,
    })
}

#[async_trait::async_trait]
impl ClientStore for PgClientStore {
    async fn insert(&self, client: ApiClient) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO api_clients (id, name, role, secret_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(store_error)?;
        conn.execute(
            &stmt,
            &[
                &client.id.to_string(),
                &client.name,
                &client.role.as_str(),
                &client.secret_hash,
                &client.created_at,
            ],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, id: ClientId) -> Result<ApiClient, StoreError> {
        // The primary: a revocation must take effect at once for the
        // authentication middleware, which asks on every request.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM api_clients WHERE id = $1"))
            .await
            .map_err(store_error)?;
        let row = conn
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        client_row(&row)
    }

    async fn list(&self) -> Result<Vec<ApiClient>, StoreError> {
        // Serves the admin's client list only: a replica may answer.
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM api_clients ORDER BY id"))
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[])
            .await
            .map_err(store_error)?
            .iter()
            .map(client_row)
            .collect()
    }

    async fn revoke(&self, id: ClientId, at: DateTime<Utc>) -> Result<ApiClient, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "UPDATE api_clients SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
                 RETURNING {COLUMNS}"
            ))
            .await
            .map_err(store_error)?;
        let row = conn
            .query_opt(&stmt, &[&id.to_string(), &at])
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        client_row(&row)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        // The primary: decides whether the demo clients are created.
        let conn = self.db.conn().await?;
        let row = conn
            .query_one("SELECT count(*) FROM api_clients", &[])
            .await
            .map_err(store_error)?;
        Ok(u64::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT kid, secret FROM signing_keys ORDER BY created_at, kid")
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[])
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| {
                Ok(SigningKey {
                    kid: col(row, 0)?,
                    secret: col(row, 1)?,
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, key: SigningKey, at: DateTime<Utc>) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3)",
            &[&key.kid, &key.secret, &at],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionStore for PgClientStore {
    async fn insert_session(&self, session: StoredSession) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO console_sessions (token_hash, client_id, csrf_token, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(store_error)?;
        conn.execute(
            &stmt,
            &[
                &session.token_hash,
                &session.client_id.to_string(),
                &session.csrf_token,
                &session.created_at,
                &session.expires_at,
            ],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        // The primary: a sign-out must end the session at once everywhere.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT token_hash, client_id, csrf_token, created_at, expires_at
                 FROM console_sessions WHERE token_hash = $1",
            )
            .await
            .map_err(store_error)?;
        let Some(row) = conn
            .query_opt(&stmt, &[&token_hash])
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        Ok(Some(StoredSession {
            token_hash: col(&row, 0)?,
            client_id: ClientId::parse(col(&row, 1)?)
                .map_err(|_| bad_value("client id", "auth"))?,
            csrf_token: col(&row, 2)?,
            created_at: col(&row, 3)?,
            expires_at: col(&row, 4)?,
        }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "DELETE FROM console_sessions WHERE token_hash = $1",
            &[&token_hash],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let conn = self.db.conn().await?;
        conn.execute(
            "DELETE FROM console_sessions WHERE expires_at < $1",
            &[&before],
        )
        .await
        .map_err(store_error)
    }
}
