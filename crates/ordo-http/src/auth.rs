//! Bearer tokens: JWTs signed with HS256, the algorithm pinned, issuer and
//! audience required. A verified token becomes a [`Principal`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ordo_kernel::{ClientId, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Seller,
    Courier,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Seller, Role::Courier, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Seller => "seller",
            Self::Courier => "courier",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The OAuth2 scopes a client of this role is granted.
    pub fn scopes(&self) -> &'static str {
        match self {
            Self::Customer => "orders:read orders:write",
            Self::Seller => "catalog:read catalog:write orders:read",
            Self::Courier => "shipments:read shipments:write",
            Self::Admin => "orders:read orders:write catalog:read catalog:write admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Who is calling: the client behind a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: ClientId,
    pub role: Role,
}

impl Principal {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this operation is not available to the {} role",
                self.role
            )))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".to_owned()))
    }
}

/// A signing key, identified by `kid` so that keys can be rotated.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Issues and verifies tokens.
/// The clock skew allowed between the issuer and this server, for `exp`,
/// `nbf` and `iat` alike.
const LEEWAY_SECS: u64 = 30;

pub struct Jwt {
    issuer: String,
    audience: String,
    ttl: Duration,
    current: (String, EncodingKey),
    verifying: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.current.0)
            .finish()
    }
}

impl Jwt {
    /// `keys` are every key still accepted; the last one signs.
    pub fn new(
        issuer: &str,
        audience: &str,
        ttl: Duration,
        keys: &[SigningKey],
    ) -> anyhow::Result<Self> {
        let signing = keys
            .last()
            .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        // A token is not good before its `nbf`, with the same leeway.
        validation.validate_nbf = true;
        Ok(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            current: (
                signing.kid.clone(),
                EncodingKey::from_secret(&signing.secret),
            ),
            verifying: keys
                .iter()
                .map(|k| (k.kid.clone(), DecodingKey::from_secret(&k.secret)))
                .collect(),
            validation,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        client: ClientId,
        role: Role,
        now: DateTime<Utc>,
        jti: String,
    ) -> anyhow::Result<String> {
        let iat = now.timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: client.to_string(),
            role,
            scope: role.scopes().to_owned(),
            iat,
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(3600),
            jti,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.0.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.current.1)?)
    }

    /// Verifies signature, algorithm, expiry, not-before, issue time,
    /// issuer and audience.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let invalid =
            || ApiError::Unauthorized("the bearer token is invalid or expired".to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid());
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or_else(invalid)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|_| invalid())?;
        // jsonwebtoken does not check `iat`: a token issued in the future
        // comes from a skewed or forged issuer.
        let latest_iat = Utc::now().timestamp() + LEEWAY_SECS.cast_signed();
        if data.claims.iat > latest_iat {
            return Err(invalid());
        }
        let client_id = ClientId::parse(&data.claims.sub).map_err(|_| invalid())?;
        Ok(Principal {
            client_id,
            role: data.claims.role,
        })
    }
}

/// Whether a client may still act: a revoked client's tokens stop working.
#[async_trait::async_trait]
pub trait ClientDirectory: Send + Sync + 'static {
    async fn is_active(&self, client: ClientId) -> Result<bool, StoreError>;
}

/// The cookie that carries a console session.
pub const SESSION_COOKIE: &str = "ordo_session";

/// Console sessions, as the authentication middleware sees them: the
/// principal a session token stands for, while it lasts.
#[async_trait::async_trait]
pub trait SessionDirectory: Send + Sync + 'static {
    /// `None` for an unknown, expired or signed-out session, or one whose
    /// client was revoked.
    async fn principal(&self, token: &str) -> Result<Option<Principal>, StoreError>;
}

/// The value of the cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// What the authentication middleware needs.
#[derive(Clone)]
pub struct Authenticator {
    jwt: Arc<Jwt>,
    clients: Arc<dyn ClientDirectory>,
    sessions: Option<Arc<dyn SessionDirectory>>,
    cache: Arc<Mutex<HashMap<ClientId, (bool, Instant)>>>,
    cache_ttl: Duration,
}

impl Authenticator {
    /// Revocation is seen within `cache_ttl`.
    pub fn new(jwt: Arc<Jwt>, clients: Arc<dyn ClientDirectory>, cache_ttl: Duration) -> Self {
        Self {
            jwt,
            clients,
            sessions: None,
            cache: Arc::default(),
            cache_ttl,
        }
    }

    /// Also accepts a console session cookie, on reads only (`GET`,
    /// `HEAD`): a page may follow an order's events with the session it
    /// was opened with, while every write still needs a bearer token, so
    /// that no other site can make a browser write with its cookie.
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionDirectory>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    pub fn jwt(&self) -> &Arc<Jwt> {
        &self.jwt
    }

    /// Forgets what is known of a client (after revoking it here).
    pub fn forget(&self, client: ClientId) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&client);
    }

    async fn active(&self, client: ClientId) -> Result<bool, ApiError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&client)
            .filter(|(_, at)| at.elapsed() < self.cache_ttl)
            .map(|(active, _)| *active);
        if let Some(active) = cached {
            return Ok(active);
        }
        let active = self.clients.is_active(client).await?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(client, (active, Instant::now()));
        Ok(active)
    }

    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let token = authorization
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".to_owned()))?;
        let principal = self.jwt.verify(token)?;
        if !self.active(principal.client_id).await? {
            return Err(ApiError::Unauthorized("the client was revoked".to_owned()));
        }
        Ok(principal)
    }
}

/// Middleware: rejects a request without a valid token with 401 and makes
/// the [`Principal`] available to handlers.
pub async fn require_auth(
    State(auth): State<Authenticator>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let session = match (&auth.sessions, header) {
        (Some(sessions), None) if req.method().is_safe() => {
            cookie(req.headers(), SESSION_COOKIE).map(|token| (sessions, token))
        }
        _ => None,
    };
    let authenticated = match session {
        Some((sessions, token)) => match sessions.principal(token).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(ApiError::Unauthorized(
                "the session has ended: sign in again".to_owned(),
            )),
            Err(err) => Err(err.into()),
        },
        None => auth.authenticate(header).await,
    };
    match authenticated {
        Ok(principal) => {
            tracing::Span::current()
                .record("client_id", tracing::field::display(principal.client_id));
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn jwt(aud: &str, iss: &str, secret: &[u8]) -> Jwt {
        Jwt::new(
            iss,
            aud,
            Duration::from_secs(3600),
            &[SigningKey {
                kid: "k1".into(),
                secret: secret.to_vec(),
            }],
        )
        .unwrap()
    }

    fn client() -> ClientId {
        ClientId::from_ulid(ulid::Ulid::new())
    }

    #[test]
    fn a_token_verifies_to_its_principal() {
        let j = jwt("ordo", "ordo", b"secret-secret-secret-secret-1234");
        let c = client();
        let token = j.issue(c, Role::Seller, Utc::now(), "j1".into()).unwrap();
        assert_eq!(
            j.verify(&token).unwrap(),
            Principal {
                client_id: c,
                role: Role::Seller
            }
        );
    }

    #[test]
    fn expired_tampered_foreign_and_unsigned_tokens_are_rejected() {
        let secret = b"secret-secret-secret-secret-1234";
        let j = jwt("ordo", "ordo", secret);
        let c = client();
        let old = Utc::now() - chrono::Duration::hours(3);
        let expired = j.issue(c, Role::Customer, old, "j".into()).unwrap();
        assert_eq!(j.verify(&expired).unwrap_err().status(), 401);

        let good = j.issue(c, Role::Customer, Utc::now(), "j".into()).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["role"] = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(j.verify(&parts.join(".")).is_err(), "tampered");

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(
            j.verify(&format!("{none_header}.{}.", parts[1])).is_err(),
            "alg none"
        );

        let other_aud = jwt("elsewhere", "ordo", secret)
            .issue(c, Role::Customer, Utc::now(), "j".into())
            .unwrap();
        assert!(j.verify(&other_aud).is_err(), "wrong aud");
        let other_iss = jwt("ordo", "elsewhere", secret)
            .issue(c, Role::Customer, Utc::now(), "j".into())
            .unwrap();
        assert!(j.verify(&other_iss).is_err(), "wrong iss");
        let other_key = jwt("ordo", "ordo", b"another-secret-another-secret-12")
            .issue(c, Role::Customer, Utc::now(), "j".into())
            .unwrap();
        assert!(j.verify(&other_key).is_err(), "wrong key");
    }

    /// A token signed by `j`'s key with `iat` and `nbf` this many seconds
    /// from now.
    fn token_at(secret: &[u8], iat: i64, nbf: Option<i64>) -> String {
        let now = Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "iss": "ordo", "aud": "ordo", "sub": client().to_string(),
            "role": "customer", "scope": "orders", "jti": "j",
            "iat": now + iat, "exp": now + 3600,
        });
        if let Some(nbf) = nbf {
            claims["nbf"] = (now + nbf).into();
        }
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn a_token_not_yet_valid_or_issued_in_the_future_is_rejected_beyond_the_leeway() {
        let secret = b"secret-secret-secret-secret-1234";
        let j = jwt("ordo", "ordo", secret);
        assert!(j.verify(&token_at(secret, 0, None)).is_ok());
        assert!(
            j.verify(&token_at(secret, 0, Some(-10))).is_ok(),
            "nbf past"
        );
        assert!(
            j.verify(&token_at(secret, 0, Some(10))).is_ok(),
            "nbf within the leeway"
        );
        assert_eq!(
            j.verify(&token_at(secret, 0, Some(120)))
                .unwrap_err()
                .status(),
            401,
            "nbf in the future"
        );
        assert!(
            j.verify(&token_at(secret, 10, None)).is_ok(),
            "iat within the leeway"
        );
        assert_eq!(
            j.verify(&token_at(secret, 120, None)).unwrap_err().status(),
            401,
            "iat in the future"
        );
        let future = j
            .issue(
                client(),
                Role::Customer,
                Utc::now() + chrono::Duration::minutes(5),
                "j".into(),
            )
            .unwrap();
        assert!(j.verify(&future).is_err(), "issued five minutes ahead");
    }
}
