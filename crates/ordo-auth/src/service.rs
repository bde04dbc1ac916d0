use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ordo_http::auth::{ClientDirectory, SigningKey};
use ordo_http::{ApiError, Jwt, Principal, Role};
use ordo_kernel::{ClientId, Clock, IdGen, StoreError};
use rand::RngCore;

use crate::throttle::{Throttle, ThrottleLimits};
use crate::{ApiClient, ClientStore};

/// Credentials of a new client; the secret exists only here.
#[derive(Clone)]
pub struct CreatedClient {
    pub client: ApiClient,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Unknown client, wrong secret or revoked: deliberately one answer.
    #[error("the client credentials are invalid")]
    InvalidClient,
    /// Too many failures for this client id or source address: every
    /// attempt is refused, whatever the secret, until `retry_after` passed.
    #[error("too many failed attempts; retry in {} s", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The kid of the key a fresh store starts with.
const FIRST_KEY_ID: &str = "key_1";

pub struct AuthService {
    store: Arc<dyn ClientStore>,
    jwt: Arc<Jwt>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    /// Hashed once, verified for unknown clients so that a missing client
    /// costs as much time as a wrong secret.
    decoy_hash: String,
    /// The key of signed links (order tracking), derived from the oldest
    /// signing key: every process agrees on it, and rotating the token key
    /// does not break links already sent.
    link_key: [u8; 32],
    /// Failed authentication, counted for the token endpoint and the
    /// console's sign-in alike.
    throttle: Throttle,
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0_u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt =
        SaltString::encode_b64(&random_bytes(16)).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a secret: {e}"))
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl AuthService {
    /// Loads the signing keys, creating the first one on a fresh store.
    pub async fn start(
        store: Arc<dyn ClientStore>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
        issuer: &str,
        audience: &str,
        token_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let mut keys = store.signing_keys().await?;
        if keys.is_empty() {
            // Every process starting on an empty store proposes a key under
            // the same kid: one insert wins, the others get a conflict, and
            // all read back the winner's key, so every process verifies
            // the tokens of every other.
            let key = SigningKey {
                kid: FIRST_KEY_ID.to_owned(),
                secret: random_bytes(32),
            };
            match store.add_signing_key(key, clock.now()).await {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(err) => return Err(err.into()),
            }
            keys = store.signing_keys().await?;
        }
        let jwt = Arc::new(Jwt::new(issuer, audience, token_ttl, &keys)?);
        let link_key = keys
            .first()
            .map(|k| {
                use sha2::Digest;
                let mut hasher = sha2::Sha256::new();
                hasher.update(b"ordo signed links\0");
                hasher.update(&k.secret);
                hasher.finalize().into()
            })
            .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let decoy_hash = tokio::task::spawn_blocking(|| hash_secret("decoy")).await??;
        Ok(Self {
            store,
            jwt,
            clock,
            ids,
            decoy_hash,
            link_key,
            throttle: Throttle::default(),
        })
    }

    /// Other limits of failed authentication than the defaults.
    pub fn with_throttle_limits(mut self, limits: ThrottleLimits) -> Self {
        self.throttle = Throttle::new(limits);
        self
    }

    /// The secret that signs links handed out without a sign-in.
    pub fn link_key(&self) -> &[u8; 32] {
        &self.link_key
    }

    pub fn jwt(&self) -> Arc<Jwt> {
        self.jwt.clone()
    }

    pub fn store(&self) -> &Arc<dyn ClientStore> {
        &self.store
    }

    pub async fn create_client(&self, role: Role, name: &str) -> Result<CreatedClient, TokenError> {
        let secret = format!("sec_{}", URL_SAFE_NO_PAD.encode(random_bytes(32)));
        let to_hash = secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash))
            .await
            .map_err(|e| anyhow::anyhow!("hashing task: {e}"))??;
        let client = ApiClient {
            id: ClientId::from_ulid(self.ids.ulid()),
            name: name.to_owned(),
            role,
            secret_hash,
            created_at: self.clock.now(),
            revoked_at: None,
        };
        self.store.insert(client.clone()).await?;
        tracing::info!(client_id = %client.id, role = %role, "api client created");
        Ok(CreatedClient { client, secret })
    }

    /// An admin creates a client: the rules of `POST /v1/admin/clients`,
    /// which the console's form follows too. The name defaults to the
    /// role's.
    pub async fn create_client_as(
        &self,
        principal: &Principal,
        role: Role,
        name: Option<&str>,
    ) -> Result<CreatedClient, ApiError> {
        principal.require(&[Role::Admin])?;
        let name = name.map_or_else(|| format!("{role} client"), |n| n.trim().to_owned());
        if name.is_empty() || name.len() > 200 {
            return Err(ApiError::field("name", "must be 1 to 200 characters"));
        }
        self.create_client(role, &name).await.map_err(|e| match e {
            TokenError::Store(e) => ApiError::from(e),
            other => ApiError::internal(anyhow::anyhow!(other.to_string())),
        })
    }

    /// Every client, for an admin.
    pub async fn clients(&self, principal: &Principal) -> Result<Vec<ApiClient>, ApiError> {
        principal.require(&[Role::Admin])?;
        Ok(self.store.list().await?)
    }

    /// An admin revokes a client: its tokens and sessions stop working.
    /// An admin may not revoke the client it acts as: with no other admin
    /// client left, no one could create one again but from the command
    /// line.
    pub async fn revoke_client(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ApiClient, ApiError> {
        principal.require(&[Role::Admin])?;
        let id = ClientId::parse(id).map_err(|_| ApiError::not_found("no such client"))?;
        if id == principal.client_id {
            return Err(ApiError::Conflict {
                slug: "cannot-revoke-self",
                detail: "an admin cannot revoke the client it is signed in as; sign in as \
                         another admin client to revoke this one"
                    .to_owned(),
            });
        }
        self.store
            .revoke(id, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found("no such client"),
                other => other.into(),
            })
    }

    /// The client credentials grant: a token for a valid, active client.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<(String, Role), TokenError> {
        let client = self.verify_client(client_id, secret, source).await?;
        let token = self.jwt.issue(
            client.id,
            client.role,
            self.clock.now(),
            self.ids.ulid().to_string(),
        )?;
        Ok((token, client.role))
    }

    /// The active client these credentials name. Unknown, wrong and
    /// revoked are one answer, and cost the same time. Failures are
    /// counted per client id and per source address (`source`, when
    /// known): past the limit every attempt is [`TokenError::Throttled`].
    pub async fn verify_client(
        &self,
        client_id: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<ApiClient, TokenError> {
        let parsed = ClientId::parse(client_id).ok();
        // Only well-formed ids are keys: anything else cannot name a
        // client, and its failures count against the address alone.
        let key = parsed.map(|id| id.to_string());
        if let Some(retry_after) = self
            .throttle
            .check(key.as_deref(), source, self.clock.now())
        {
            tracing::debug!(client_id = %shown(key.as_deref()), source = %shown_source(source),
                "client authentication refused while locked");
            return Err(TokenError::Throttled { retry_after });
        }
        let client = match parsed {
            Some(id) => match self.store.get(id).await {
                Ok(client) => Some(client),
                Err(StoreError::NotFound) => None,
                Err(err) => return Err(err.into()),
            },
            None => None,
        };
        let hash = client
            .as_ref()
            .map(|c| c.secret_hash.clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let secret = secret.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .map_err(|e| anyhow::anyhow!("verifying task: {e}"))?;
        match client.filter(|c| matches && c.revoked_at.is_none()) {
            Some(client) => {
                self.throttle.succeeded(&client.id.to_string());
                Ok(client)
            }
            None => Err(self.failed(key.as_deref(), source)),
        }
    }

    /// Logs and counts a failed authentication; the error to answer.
    fn failed(&self, key: Option<&str>, source: Option<IpAddr>) -> TokenError {
        let (id, source_shown) = (shown(key), shown_source(source));
        tracing::warn!(client_id = %id, source = %source_shown, "client authentication failed");
        match self.throttle.failed(key, source, self.clock.now()) {
            None => TokenError::InvalidClient,
            Some(lockout) => {
                tracing::warn!(
                    client_id = %id,
                    source = %source_shown,
                    client_locked = lockout.client,
                    source_locked = lockout.address,
                    lockout_secs = lockout.retry_after.as_secs(),
                    "too many failed client authentications: locked out"
                );
                TokenError::Throttled {
                    retry_after: lockout.retry_after,
                }
            }
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// A client id for the log: only a well-formed one, since a malformed
/// "id" may well be a secret pasted into the wrong field.
fn shown(key: Option<&str>) -> &str {
    key.unwrap_or("(malformed)")
}

fn shown_source(source: Option<IpAddr>) -> String {
    source.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// Whether a client is still active, for the authentication middleware.
pub struct StoreDirectory(pub Arc<dyn ClientStore>);

#[async_trait::async_trait]
impl ClientDirectory for StoreDirectory {
    async fn is_active(&self, client: ClientId) -> Result<bool, StoreError> {
        match self.0.get(client).await {
            Ok(c) => Ok(c.revoked_at.is_none()),
            Err(StoreError::NotFound) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use ordo_kernel::{SystemClock, UlidGen};
    use ordo_sqlite::{Database, DatabaseOptions};

    use super::*;
    use crate::{MIGRATIONS, SqliteClientStore};

    async fn service(dir: &std::path::Path) -> AuthService {
        let db = Database::open(
            "auth",
            &dir.join("auth.db"),
            &[MIGRATIONS],
            DatabaseOptions::default(),
        )
        .unwrap();
        AuthService::start(
            Arc::new(SqliteClientStore::new(db)),
            Arc::new(SystemClock),
            Arc::new(UlidGen::new()),
            "ordo",
            "ordo-api",
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_client_gets_a_token_for_its_role_with_the_right_secret_only() {
        let dir = tempfile::tempdir().unwrap();
        let auth = service(dir.path()).await;
        let created = auth.create_client(Role::Seller, "shop").await.unwrap();
        let id = created.client.id.to_string();
        let (token, role) = auth.token(&id, &created.secret, None).await.unwrap();
        assert_eq!(role, Role::Seller);
        assert_eq!(
            auth.jwt().verify(&token).unwrap().client_id,
            created.client.id
        );
        assert!(matches!(
            auth.token(&id, "sec_wrong", None).await,
            Err(TokenError::InvalidClient)
        ));
        assert!(matches!(
            auth.token("cli_nope", &created.secret, None).await,
            Err(TokenError::InvalidClient)
        ));
        assert!(!created.client.secret_hash.contains(&created.secret));
    }

    #[tokio::test]
    async fn a_revoked_client_gets_no_token_and_keys_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let auth = service(dir.path()).await;
        let created = auth.create_client(Role::Customer, "c").await.unwrap();
        let (token, _) = auth
            .token(&created.client.id.to_string(), &created.secret, None)
            .await
            .unwrap();
        auth.store()
            .revoke(created.client.id, Utc::now())
            .await
            .unwrap();
        assert!(matches!(
            auth.token(&created.client.id.to_string(), &created.secret, None)
                .await,
            Err(TokenError::InvalidClient)
        ));
        drop(auth);
        let again = service(dir.path()).await;
        // Same key: a token issued before the restart still verifies.
        assert!(again.jwt().verify(&token).is_ok());
    }

    use chrono::Utc;

    /// A clock the test moves.
    struct TestClock(std::sync::Mutex<chrono::DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> chrono::DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    /// What the log says, for a test.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failure_is_logged_at_warn_with_client_and_address_but_never_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let auth = service(dir.path()).await;
        let created = auth.create_client(Role::Seller, "shop").await.unwrap();
        let id = created.client.id.to_string();
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let source = Some(IpAddr::from([203, 0, 113, 9]));
        for _ in 0..11 {
            let _ = auth.verify_client(&id, "sec_guessed", source).await;
        }
        // A secret pasted as the id is not logged either.
        let _ = auth
            .verify_client(&created.secret, &created.secret, None)
            .await;
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let failures: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("client authentication failed"))
            .collect();
        assert_eq!(failures.len(), 12, "{text}");
        assert!(failures.iter().all(|l| l.contains("WARN")));
        assert!(failures[0].contains(&id) && failures[0].contains("203.0.113.9"));
        assert!(text.contains("locked out"), "{text}");
        assert!(!text.contains("sec_guessed") && !text.contains(&created.secret));
    }

    #[tokio::test]
    async fn the_eleventh_bad_secret_locks_the_client_even_for_the_right_secret() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            "auth",
            &dir.path().join("auth.db"),
            &[MIGRATIONS],
            DatabaseOptions::default(),
        )
        .unwrap();
        let clock = Arc::new(TestClock(std::sync::Mutex::new(Utc::now())));
        let auth = AuthService::start(
            Arc::new(SqliteClientStore::new(db)),
            clock.clone(),
            Arc::new(UlidGen::new()),
            "ordo",
            "ordo-api",
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let created = auth.create_client(Role::Seller, "shop").await.unwrap();
        let id = created.client.id.to_string();
        let source = Some(IpAddr::from([198, 51, 100, 1]));
        for _ in 0..10 {
            assert!(matches!(
                auth.verify_client(&id, "sec_wrong", source).await,
                Err(TokenError::InvalidClient)
            ));
        }
        assert!(matches!(
            auth.verify_client(&id, "sec_wrong", source).await,
            Err(TokenError::Throttled { retry_after }) if retry_after == Duration::from_secs(60)
        ));
        // From another address too: the client id is locked.
        let elsewhere = Some(IpAddr::from([198, 51, 100, 2]));
        assert!(matches!(
            auth.verify_client(&id, &created.secret, elsewhere).await,
            Err(TokenError::Throttled { .. })
        ));
        *clock.0.lock().unwrap() += chrono::Duration::seconds(61);
        assert!(
            auth.verify_client(&id, &created.secret, elsewhere)
                .await
                .is_ok()
        );
        // The success cleared the client's count: ten more failures pass.
        for _ in 0..10 {
            assert!(matches!(
                auth.verify_client(&id, "sec_wrong", elsewhere).await,
                Err(TokenError::InvalidClient)
            ));
        }
        // The next lockout of the first address lasts twice as long.
        for _ in 0..10 {
            let _ = auth.verify_client("cli_nope", "sec_wrong", source).await;
        }
        assert!(matches!(
            auth.verify_client("cli_nope", "sec_wrong", source).await,
            Err(TokenError::Throttled { retry_after }) if retry_after == Duration::from_secs(120)
        ));
    }
}
