//! Signing in and out, the signed-in viewer, and forms checked against the
//! session's CSRF token.

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{Markup, html};
use ordo_auth::{Session, SourceAddress, TokenError};
use ordo_http::Principal;
use ordo_http::auth::{SESSION_COOKIE, cookie};
use rand::RngCore;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::{ConsoleState, PageError, home_of, layout, local_path};

/// The cookie that carries the sign-in form's CSRF token (double submit:
/// there is no session yet to hold it).
const SIGN_IN_CSRF_COOKIE: &str = "ordo_signin";
/// The form field of the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form the console takes.
const FORM_LIMIT: usize = 64 * 1024;

/// The signed-in client looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    session: Session,
}

impl Viewer {
    pub fn principal(&self) -> &Principal {
        &self.session.principal
    }

    pub fn client_name(&self) -> &str {
        &self.session.client_name
    }

    pub fn csrf_token(&self) -> &str {
        &self.session.csrf_token
    }

    /// The hidden field every state-changing form carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf_token()); }
    }
}

async fn session_of(
    state: &ConsoleState,
    headers: &HeaderMap,
) -> Result<Option<Session>, PageError> {
    match cookie(headers, SESSION_COOKIE) {
        Some(token) => Ok(state.sessions.get(token).await?),
        None => Ok(None),
    }
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(state, &parts.headers).await? {
            Some(session) => Ok(Viewer { session }),
            None => Err(PageError::SignIn {
                next: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".to_owned()),
            }),
        }
    }
}

/// A form posted by the signed-in viewer with this session's CSRF token;
/// anything else is refused (403) before the form is looked at.
pub struct CsrfForm<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<ConsoleState> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| ordo_http::ApiError::PayloadTooLarge { limit: FORM_LIMIT })?;
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !viewer.session.csrf_matches(&token) {
            return Err(PageError::Csrf);
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|e| {
            ordo_http::ApiError::Malformed {
                detail: format!("the form cannot be read: {e}"),
                errors: Vec::new(),
            }
        })?;
        Ok(CsrfForm { viewer, form })
    }
}

fn random_token() -> String {
    let mut bytes = [0_u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn set_cookie(response: &mut Response, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The cookies' attributes; `Secure` when the console is served over TLS
/// (configured, or told by a proxy in front of it).
fn cookie_attributes(state: &ConsoleState, headers: &HeaderMap) -> &'static str {
    let proxied_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    if state.secure_cookies || proxied_tls {
        "Path=/; HttpOnly; SameSite=Lax; Secure"
    } else {
        "Path=/; HttpOnly; SameSite=Lax"
    }
}

#[derive(Deserialize)]
pub struct HomeQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

/// `/`: the role's home once signed in, else the sign-in page.
pub async fn home(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Result<Response, PageError> {
    if let Some(session) = session_of(&state, &headers).await? {
        let target = local_path(query.next.as_deref()).unwrap_or(home_of(session.principal.role));
        return Ok(Redirect::to(target).into_response());
    }
    let notice = query.signed_out.is_some().then_some("You are signed out.");
    Ok(sign_in_page(
        &state,
        &headers,
        StatusCode::OK,
        query.next.as_deref(),
        notice,
        None,
    ))
}

fn sign_in_page(
    state: &ConsoleState,
    headers: &HeaderMap,
    status: StatusCode,
    next: Option<&str>,
    notice: Option<&str>,
    error: Option<(&str, &str)>,
) -> Response {
    let csrf = random_token();
    let markup = layout::bare(
        "Sign in",
        html! {
            div.signin {
                div.card {
                    h1 { "Sign in to Ordo" }
                    p.muted { "Use an API client's id and secret: the same credentials as " code { "POST /oauth/token" } "." }
                    @if let Some(n) = notice { (layout::notice("ok", n)) }
                    @if let Some((_, message)) = error {
                        div.alert.bad role="alert" { (message) }
                    }
                    form method="post" action="/sign-in" {
                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                        @if let Some(next) = local_path(next) {
                            input type="hidden" name="next" value=(next);
                        }
                        div.field {
                            label for="client_id" { "Client id" }
                            input #client_id type="text" name="client_id" autocomplete="username"
                                placeholder="cli_…" required autofocus spellcheck="false"
                                aria-invalid=[error.map(|_| "true")];
                        }
                        div.field {
                            label for="client_secret" { "Client secret" }
                            input #client_secret type="password" name="client_secret"
                                autocomplete="current-password" required
                                aria-invalid=[error.map(|_| "true")];
                        }
                        button type="submit" { "Sign in" }
                    }
                    @if let Some(path) = &state.demo_credentials {
                        div.demo-accounts {
                            h2 { "Demo" }
                            p.muted {
                                "This server runs the demo: a customer, a seller, a courier and an admin were created at its first start. Their ids and secrets were printed then and are in "
                                code { (path) } "."
                            }
                        }
                    }
                }
            }
        },
    );
    let mut response = (status, markup).into_response();
    set_cookie(
        &mut response,
        format!(
            "{SIGN_IN_CSRF_COOKIE}={csrf}; {}; Max-Age=3600",
            cookie_attributes(state, headers)
        ),
    );
    response
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `POST /sign-in`: checks the credentials as the token endpoint does.
pub async fn sign_in(
    State(state): State<ConsoleState>,
    SourceAddress(source): SourceAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignInForm>,
) -> Result<Response, PageError> {
    let expected = cookie(&headers, SIGN_IN_CSRF_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return Err(PageError::Csrf);
    }
    let next = form.next.as_deref();
    if form.client_id.trim().is_empty() || form.client_secret.is_empty() {
        return Ok(sign_in_page(
            &state,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            next,
            None,
            Some(("client_id", "Enter a client id and its secret.")),
        ));
    }
    match state
        .sessions
        .sign_in(form.client_id.trim(), &form.client_secret, source)
        .await
    {
        Ok(signed_in) => {
            let target = local_path(next).unwrap_or(home_of(signed_in.session.principal.role));
            let mut response = Redirect::to(target).into_response();
            let max_age = state.sessions.ttl().as_secs();
            set_cookie(
                &mut response,
                format!(
                    "{SESSION_COOKIE}={}; {}; Max-Age={max_age}",
                    signed_in.token,
                    cookie_attributes(&state, &headers)
                ),
            );
            set_cookie(
                &mut response,
                format!(
                    "{SIGN_IN_CSRF_COOKIE}=; {}; Max-Age=0",
                    cookie_attributes(&state, &headers)
                ),
            );
            Ok(response)
        }
        Err(TokenError::InvalidClient) => Ok(sign_in_page(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            None,
            Some((
                "client_id",
                "These credentials are not valid, or the client was revoked.",
            )),
        )),
        Err(TokenError::Throttled { retry_after }) => {
            let secs = retry_after.as_secs().max(1);
            let message = format!(
                "Too many failed sign-ins for this client or from this address. Try again in {secs} seconds."
            );
            let mut response = sign_in_page(
                &state,
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                next,
                None,
                Some(("client_id", &message)),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            Ok(response)
        }
        Err(TokenError::Store(e)) => Err(e.into()),
        Err(TokenError::Other(e)) => Err(ordo_http::ApiError::Internal(e).into()),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /sign-out`: ends the session server-side and clears the cookie.
pub async fn sign_out(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    _form: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.sign_out(token).await?;
    }
    let mut response = Redirect::to("/?signed_out=1").into_response();
    set_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}=; {}; Max-Age=0",
            cookie_attributes(&state, &headers)
        ),
    );
    Ok(response)
}
