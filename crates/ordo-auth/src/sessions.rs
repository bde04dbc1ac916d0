//! Console sessions: a client signs in with its id and secret, checked
//! exactly as `POST /oauth/token` checks them, and gets a random token in
//! an HttpOnly cookie. The store keeps only the token's SHA-256, the
//! session's CSRF token and its expiry; signing out deletes the row, so
//! the session ends on every process at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ordo_http::Principal;
use ordo_http::auth::SessionDirectory;
use ordo_kernel::StoreError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::service::random_bytes;
use crate::{AuthService, SessionStore, StoredSession, TokenError};

/// How long a console session lasts when nobody says otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: Principal,
    /// The client's name, shown beside the sign-out button.
    pub client_name: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// Whether a form's token is this session's, compared in constant time.
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf_token.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// A session just signed in: the token exists only here and in the cookie.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub session: Session,
}

pub struct Sessions {
    auth: Arc<AuthService>,
    store: Arc<dyn SessionStore>,
    ttl: Duration,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    pub fn new(auth: Arc<AuthService>, store: Arc<dyn SessionStore>, ttl: Duration) -> Self {
        Self { auth, store, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks the credentials as the token endpoint does (throttled
    /// alike, per client id and `source` address) and opens a session for
    /// the client.
    pub async fn sign_in(
        &self,
        client_id: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<NewSession, TokenError> {
        let client = self.auth.verify_client(client_id, secret, source).await?;
        let token = URL_SAFE_NO_PAD.encode(random_bytes(32));
        let now = self.auth.clock().now();
        let ttl = chrono::Duration::from_std(self.ttl)
            .map_err(|e| anyhow::anyhow!("session lifetime: {e}"))?;
        let stored = StoredSession {
            token_hash: token_hash(&token),
            client_id: client.id,
            csrf_token: URL_SAFE_NO_PAD.encode(random_bytes(24)),
            created_at: now,
            expires_at: now + ttl,
        };
        self.store.insert_session(stored.clone()).await?;
        tracing::info!(client_id = %client.id, role = %client.role, "console session opened");
        Ok(NewSession {
            token,
            session: Session {
                principal: Principal {
                    client_id: client.id,
                    role: client.role,
                },
                client_name: client.name,
                csrf_token: stored.csrf_token,
                expires_at: stored.expires_at,
            },
        })
    }

    /// The session a cookie's token opens: `None` once it expired, was
    /// signed out, or its client was revoked.
    pub async fn get(&self, token: &str) -> Result<Option<Session>, StoreError> {
        let Some(stored) = self.store.session(&token_hash(token)).await? else {
            return Ok(None);
        };
        if stored.expires_at <= self.auth.clock().now() {
            return Ok(None);
        }
        let client = match self.auth.store().get(stored.client_id).await {
            Ok(client) => client,
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        if client.revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(Session {
            principal: Principal {
                client_id: client.id,
                role: client.role,
            },
            client_name: client.name,
            csrf_token: stored.csrf_token,
            expires_at: stored.expires_at,
        }))
    }

    /// Ends the session of this token, wherever it is used.
    pub async fn sign_out(&self, token: &str) -> Result<(), StoreError> {
        self.store.delete_session(&token_hash(token)).await
    }

    /// Deletes expired sessions.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        self.store.purge_sessions(self.auth.clock().now()).await
    }
}

#[async_trait::async_trait]
impl SessionDirectory for Sessions {
    async fn principal(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self.get(token).await?.map(|s| s.principal))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ordo_http::Role;
    use ordo_kernel::{Clock, UlidGen};
    use ordo_sqlite::{Database, DatabaseOptions};

    use super::*;
    use crate::{MIGRATIONS, SqliteClientStore};

    /// A clock the test moves.
    struct TestClock(Mutex<DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    async fn sessions(dir: &std::path::Path) -> (Sessions, Arc<AuthService>, Arc<TestClock>) {
        let db = Database::open(
            "auth",
            &dir.join("auth.db"),
            &[MIGRATIONS],
            DatabaseOptions::default(),
        )
        .unwrap();
        let store = Arc::new(SqliteClientStore::new(db));
        let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
        let auth = Arc::new(
            AuthService::start(
                store.clone(),
                clock.clone(),
                Arc::new(UlidGen::new()),
                "ordo",
                "ordo-api",
                Duration::from_secs(3600),
            )
            .await
            .unwrap(),
        );
        let sessions = Sessions::new(auth.clone(), store, Duration::from_secs(3600));
        (sessions, auth, clock)
    }

    #[tokio::test]
    async fn a_session_lasts_its_lifetime_and_ends_at_sign_out_or_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, auth, clock) = sessions(dir.path()).await;
        let created = auth.create_client(Role::Customer, "shopper").await.unwrap();
        let id = created.client.id.to_string();
        assert!(matches!(
            sessions.sign_in(&id, "sec_wrong", None).await,
            Err(TokenError::InvalidClient)
        ));

        let first = sessions.sign_in(&id, &created.secret, None).await.unwrap();
        let live = sessions.get(&first.token).await.unwrap().unwrap();
        assert_eq!(live.principal.role, Role::Customer);
        assert!(live.csrf_matches(&first.session.csrf_token));
        assert!(!live.csrf_matches("") && !live.csrf_matches("forged"));
        assert_eq!(sessions.get("unknown").await.unwrap(), None);

        // Expired an hour later, and purged.
        *clock.0.lock().unwrap() += chrono::Duration::seconds(3601);
        assert_eq!(sessions.get(&first.token).await.unwrap(), None);
        assert_eq!(sessions.purge().await.unwrap(), 1);

        let second = sessions.sign_in(&id, &created.secret, None).await.unwrap();
        sessions.sign_out(&second.token).await.unwrap();
        assert_eq!(sessions.get(&second.token).await.unwrap(), None);

        let third = sessions.sign_in(&id, &created.secret, None).await.unwrap();
        auth.store()
            .revoke(created.client.id, clock.now())
            .await
            .unwrap();
        assert_eq!(sessions.principal(&third.token).await.unwrap(), None);
    }
}
