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
        })
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
    pub async fn token(&self, client_id: &str, secret: &str) -> Result<(String, Role), TokenError> {
        let client = self.verify_client(client_id, secret).await?;
        let token = self.jwt.issue(
            client.id,
            client.role,
            self.clock.now(),
            self.ids.ulid().to_string(),
        )?;
        Ok((token, client.role))
    }

    /// The active client these credentials name. Unknown, wrong and
    /// revoked are one answer, and cost the same time.
    pub async fn verify_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<ApiClient, TokenError> {
        let client = match ClientId::parse(client_id) {
            Ok(id) => match self.store.get(id).await {
                Ok(client) => Some(client),
                Err(StoreError::NotFound) => None,
                Err(err) => return Err(err.into()),
            },
            Err(_) => None,
        };
        let hash = client
            .as_ref()
            .map(|c| c.secret_hash.clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let secret = secret.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .map_err(|e| anyhow::anyhow!("verifying task: {e}"))?;
        client
            .filter(|c| matches && c.revoked_at.is_none())
            .ok_or(TokenError::InvalidClient)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
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
        let (token, role) = auth.token(&id, &created.secret).await.unwrap();
        assert_eq!(role, Role::Seller);
        assert_eq!(
            auth.jwt().verify(&token).unwrap().client_id,
            created.client.id
        );
        assert!(matches!(
            auth.token(&id, "sec_wrong").await,
            Err(TokenError::InvalidClient)
        ));
        assert!(matches!(
            auth.token("cli_nope", &created.secret).await,
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
            .token(&created.client.id.to_string(), &created.secret)
            .await
            .unwrap();
        auth.store()
            .revoke(created.client.id, Utc::now())
            .await
            .unwrap();
        assert!(matches!(
            auth.token(&created.client.id.to_string(), &created.secret)
                .await,
            Err(TokenError::InvalidClient)
        ));
        drop(auth);
        let again = service(dir.path()).await;
        // Same key: a token issued before the restart still verifies.
        assert!(again.jwt().verify(&token).is_ok());
    }

    use chrono::Utc;
}
