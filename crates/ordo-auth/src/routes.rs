//! `POST /oauth/token` and the admin routes for API clients.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ordo_http::auth::Authenticator;
use ordo_http::extract::bytes_rejection;
use ordo_http::problem::problem_response;
use ordo_http::{ApiError, Json, Principal, Role};
use ordo_kernel::{ClientId, Clock};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiClient, AuthService, TokenError};

#[derive(Clone)]
pub struct AuthState {
    pub service: Arc<AuthService>,
    pub authenticator: Authenticator,
    pub clock: Arc<dyn Clock>,
}

impl AuthState {
    /// [`AuthService::revoke_client`], and this process forgets at once
    /// that the client was active.
    pub async fn revoke_client(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ApiClient, ApiError> {
        let client = self.service.revoke_client(principal, id).await?;
        self.authenticator.forget(client.id);
        Ok(client)
    }
}

/// The address a request came from: the peer of the connection, when the
/// server was started with connect info (`X-Forwarded-For` is not trusted:
/// any client can send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .or_else(|| {
                parts
                    .extensions
                    .get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                    .map(|mock| mock.0.ip())
            });
        Ok(Self(peer.map(|ip| ip.to_canonical())))
    }
}

pub fn token_router(state: AuthState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(token))
        .with_state(state)
}

pub fn admin_router(state: AuthState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(revoke_client))
        .with_state(state)
}

#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Accepted and ignored: a client's scopes follow from its role.
    #[allow(dead_code)]
    scope: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: &'static str,
}

/// An OAuth2 error (RFC 6749 §5.2) that is also a problem (RFC 9457): the
/// `error` member keeps OAuth2 clients working.
fn oauth_error(status: StatusCode, error: &str, detail: &str, field: Option<&str>) -> Response {
    let api_error = match status {
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(detail.to_owned()),
        _ => match field {
            Some(field) => ApiError::field(field, detail),
            None => ApiError::Malformed {
                detail: detail.to_owned(),
                errors: Vec::new(),
            },
        },
    };
    let mut problem = api_error.to_problem();
    problem.status = status.as_u16();
    problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
    let mut response = problem_response(&problem);
    if let Ok(mut body) = serde_json::to_value(&problem) {
        body["error"] = error.into();
        body["error_description"] = detail.into();
        let mut with_error = problem_response(&problem);
        *with_error.body_mut() = axum::body::Body::from(body.to_string());
        response = with_error;
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic"),
        );
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// 429: the client id or the address is locked out for `retry_after`.
pub fn too_many_attempts(retry_after: std::time::Duration) -> Response {
    let secs = retry_after.as_secs().max(1);
    let detail = format!("too many failed attempts: retry in {secs} seconds");
    let problem = ordo_http::Problem {
        problem_type: "/problems/too-many-attempts".to_owned(),
        title: "Too Many Requests".to_owned(),
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
        detail: detail.clone(),
        errors: Vec::new(),
        request_id: None,
    };
    let mut response = problem_response(&problem);
    if let Ok(mut body) = serde_json::to_value(&problem) {
        body["error"] = "invalid_client".into();
        body["error_description"] = detail.into();
        *response.body_mut() = axum::body::Body::from(body.to_string());
    }
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn parse_token_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let parsed = match content_type.as_str() {
        "application/json" => ordo_http::extract::parse_json::<TokenRequest>(body),
        "application/x-www-form-urlencoded" | "" => Ok(form_request(body)),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "{other} is not accepted: send a form or JSON"
        ))),
    }?;
    Ok(parsed)
}

fn form_request(body: &[u8]) -> TokenRequest {
    let mut request = TokenRequest {
        grant_type: None,
        client_id: None,
        client_secret: None,
        scope: None,
    };
    for (name, value) in form_pairs(body) {
        let slot = match name.as_str() {
            "grant_type" => &mut request.grant_type,
            "client_id" => &mut request.client_id,
            "client_secret" => &mut request.client_secret,
            "scope" => &mut request.scope,
            _ => continue,
        };
        *slot = Some(value);
    }
    request
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Percent-decoding of the user and password of HTTP Basic (RFC 6749 §2.3.1).
fn decode_form(s: &str) -> String {
    form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// HTTP Basic credentials, the way RFC 6749 prefers clients send them.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((decode_form(id), decode_form(secret)))
}

/// Exchange client credentials for an access token.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "client credentials grant, as a form or JSON; credentials may also come as HTTP Basic"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 401, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 429, body = ordo_http::Problem, content_type = "application/problem+json",
            description = "too many failed attempts for this client id or from this address: \
                every attempt is refused, even with the right secret, until the lockout ends",
            headers(("Retry-After" = u64, description = "seconds until the lockout ends"))),
    )
)]
async fn token(
    State(state): State<AuthState>,
    SourceAddress(source): SourceAddress,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return bytes_rejection(rejection).into_response(),
    };
    let request = match parse_token_request(&headers, &body) {
        Ok(r) => r,
        Err(err) => return err.into_response(),
    };
    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
                Some("grant_type"),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
                Some("grant_type"),
            );
        }
    }
    let credentials = match (request.client_id, request.client_secret) {
        (Some(id), Some(secret)) => Some((id, secret)),
        _ => basic_credentials(&headers),
    };
    let Some((client_id, secret)) = credentials else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required",
            Some("client_id"),
        );
    };
    match state.service.token(&client_id, &secret, source).await {
        Ok((access_token, role)) => {
            let body = TokenResponse {
                access_token,
                token_type: "Bearer",
                expires_in: state.service.jwt().ttl().as_secs(),
                scope: role.scopes(),
            };
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(TokenError::InvalidClient) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the client credentials are invalid",
            None,
        ),
        Err(TokenError::Throttled { retry_after }) => too_many_attempts(retry_after),
        Err(TokenError::Store(err)) => ApiError::from(err).into_response(),
        Err(TokenError::Other(err)) => ApiError::Internal(err).into_response(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    role: Role,
    name: Option<String>,
}

/// A client as the admin API shows it (never its secret or hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    client_id: ClientId,
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiClient> for ClientView {
    fn from(c: &ApiClient) -> Self {
        Self {
            client_id: c.id,
            name: c.name.clone(),
            role: c.role,
            created_at: c.created_at,
            revoked_at: c.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClientView {
    client_id: ClientId,
    /// Shown once; only a hash is kept.
    client_secret: String,
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    items: Vec<ClientView>,
}

/// Create an API client (admin). The secret is in this response only.
#[utoipa::path(post, path = "/v1/admin/clients", tag = "admin", request_body = NewClient,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedClientView), (status = 422, body = ordo_http::Problem)))]
async fn create_client(
    State(state): State<AuthState>,
    principal: Principal,
    Json(body): Json<NewClient>,
) -> Result<Response, ApiError> {
    let created = state
        .service
        .create_client_as(&principal, body.role, body.name.as_deref())
        .await?;
    let view = CreatedClientView {
        client_id: created.client.id,
        client_secret: created.secret,
        name: created.client.name,
        role: created.client.role,
        created_at: created.client.created_at,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(view),
    )
        .into_response())
}

/// List API clients (admin).
#[utoipa::path(get, path = "/v1/admin/clients", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ClientList)))]
async fn list_clients(
    State(state): State<AuthState>,
    principal: Principal,
) -> Result<axum::Json<ClientList>, ApiError> {
    let clients = state.service.clients(&principal).await?;
    Ok(axum::Json(ClientList {
        items: clients.iter().map(ClientView::from).collect(),
    }))
}

/// Revoke an API client (admin): its tokens stop working. An admin
/// cannot revoke the client it acts as (409).
#[utoipa::path(post, path = "/v1/admin/clients/{id}/revoke", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = ordo_http::Problem),
        (status = 409, description = "the admin's own client", body = ordo_http::Problem,
            content_type = "application/problem+json")))]
async fn revoke_client(
    State(state): State<AuthState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let client = state.revoke_client(&principal, &id).await?;
    Ok(axum::Json(ClientView::from(&client)))
}
