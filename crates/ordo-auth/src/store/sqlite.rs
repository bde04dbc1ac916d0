//! The SQLite implementation of [`ClientStore`].

use chrono::{DateTime, Utc};
use ordo_http::Role;
use ordo_http::auth::SigningKey;
use ordo_kernel::{ClientId, StoreError};
use ordo_sqlite::{Database, store_error, time};
use rusqlite::{Row, params};

use super::{ApiClient, ClientStore, SessionStore, StoredSession};

pub struct SqliteClientStore {
    db: Database,
}

impl SqliteClientStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, name, role, secret_hash, created_at, revoked_at";

fn from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(String, String, String, String, String, Option<String>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn to_client(
    raw: (String, String, String, String, String, Option<String>),
) -> Result<ApiClient, StoreError> {
    let (id, name, role, secret_hash, created_at, revoked_at) = raw;
    let bad = |what: &str| StoreError::Other(anyhow::anyhow!("bad {what} in api_clients"));
    Ok(ApiClient {
        id: ClientId::parse(&id).map_err(|_| bad("id"))?,
        name,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        secret_hash,
        created_at: time::from_sql(&created_at)?,
        revoked_at: revoked_at.as_deref().map(time::from_sql).transpose()?,
    })
}

#[async_trait::async_trait]
impl ClientStore for SqliteClientStore {
    async fn insert(&self, client: ApiClient) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO api_clients (id, name, role, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        client.id.to_string(),
                        client.name,
                        client.role.as_str(),
                        client.secret_hash,
                        time::to_sql(client.created_at)
                    ],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn get(&self, id: ClientId) -> Result<ApiClient, StoreError> {
        let raw = self
            .db
            .read(move |conn| {
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_clients WHERE id = ?1"))
                    .and_then(|mut s| s.query_row([id.to_string()], from_row))
                    .map_err(store_error)
            })
            .await?;
        to_client(raw)
    }

    async fn list(&self) -> Result<Vec<ApiClient>, StoreError> {
        let rows = self
            .db
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM api_clients ORDER BY id"))
                    .map_err(store_error)?;
                let rows = stmt.query_map([], from_row).map_err(store_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(store_error)
            })
            .await?;
        rows.into_iter().map(to_client).collect()
    }

    async fn revoke(&self, id: ClientId, at: DateTime<Utc>) -> Result<ApiClient, StoreError> {
        let changed = self
            .db
            .write(move |tx| {
                tx.execute(
                    "UPDATE api_clients SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                    params![id.to_string(), time::to_sql(at)],
                )
                .map_err(store_error)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.db
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM api_clients", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(store_error)
            })
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.db
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT kid, secret FROM signing_keys ORDER BY created_at, kid")
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(SigningKey {
                            kid: r.get(0)?,
                            secret: r.get(1)?,
                        })
                    })
                    .map_err(store_error)?;
                rows.collect::<Result<_, _>>().map_err(store_error)
            })
            .await
    }

    async fn add_signing_key(&self, key: SigningKey, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO signing_keys (kid, secret, created_at) VALUES (?1, ?2, ?3)",
                    params![key.kid, key.secret, time::to_sql(at)],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }
}

#[async_trait::async_trait]
impl SessionStore for SqliteClientStore {
    async fn insert_session(&self, session: StoredSession) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO console_sessions (token_hash, client_id, csrf_token, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        session.token_hash,
                        session.client_id.to_string(),
                        session.csrf_token,
                        time::to_sql(session.created_at),
                        time::to_sql(session.expires_at)
                    ],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let token_hash = token_hash.to_owned();
        let raw = self
            .db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT token_hash, client_id, csrf_token, created_at, expires_at
                         FROM console_sessions WHERE token_hash = ?1",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt
                    .query_map([token_hash], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .map_err(store_error)?;
                rows.next().transpose().map_err(store_error)
            })
            .await?;
        let Some((token_hash, client_id, csrf_token, created_at, expires_at)) = raw else {
            return Ok(None);
        };
        Ok(Some(StoredSession {
            token_hash,
            client_id: ClientId::parse(&client_id).map_err(|_| {
                StoreError::Other(anyhow::anyhow!("bad client id in console_sessions"))
            })?,
            csrf_token,
            created_at: time::from_sql(&created_at)?,
            expires_at: time::from_sql(&expires_at)?,
        }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM console_sessions WHERE token_hash = ?1",
                    [token_hash],
                )
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM console_sessions WHERE expires_at < ?1",
                    [time::to_sql(before)],
                )
                .map(|n| n as u64)
                .map_err(store_error)
            })
            .await
    }
}
