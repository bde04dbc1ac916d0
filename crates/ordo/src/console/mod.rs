//! The console: Ordo's web interface for customers, sellers, couriers and
//! admins, served by the same binary and the same services as the API.
//!
//! Pages are rendered on the server (maud) and work without JavaScript;
//! a small embedded script makes live regions follow their order's event
//! stream (the API's own SSE, which takes the session cookie on reads)
//! and re-render from the server. Every page and form goes through the
//! service layer with the signed-in client's [`Principal`], so roles and
//! scoping are the API's own rules: the console holds no second copy.
//!
//! Sessions are the auth service's ([`ordo_auth::Sessions`]): an HttpOnly,
//! SameSite cookie with a random token, a CSRF token per session carried
//! by every form, and a sign-out that deletes the session server-side.

mod admin;
mod admin_ops;
mod charts;
mod courier;
mod customer;
mod layout;
mod seller;
mod session;
mod tracking;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use ordo_auth::{AuditLog, AuthState, Sessions};
use ordo_delivery::DeliveryService;
use ordo_http::{ApiError, Role};
use ordo_inventory::InventoryService;
use ordo_orders::OrdersService;
use ordo_payments::{HttpGateway, PaymentsService};

use crate::chaos::Chaos;
use crate::ops::OpsState;
use crate::stuck::StuckOrders;

pub use session::Viewer;
pub use tracking::LinkSigner;

/// The Content-Security-Policy of every console page: nothing but this
/// origin, no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the console's pages need: the services this process runs (a
/// process of the distributed mode may run only some) and the sessions.
#[derive(Clone)]
pub struct ConsoleState {
    pub sessions: Arc<Sessions>,
    pub orders: Option<Arc<OrdersService>>,
    pub inventory: Option<Arc<InventoryService>>,
    pub payments: Option<Arc<PaymentsService>>,
    pub delivery: Option<Arc<DeliveryService>>,
    pub links: Arc<LinkSigner>,
    /// Set the `Secure` attribute on cookies (served over TLS).
    pub secure_cookies: bool,
    /// Where the demo credentials are, when the demo is on.
    pub demo_credentials: Option<String>,
    /// The chaos controls of this process.
    pub chaos: Option<Chaos>,
    /// The stuck-order finder, where the orders store is.
    pub stuck: Option<Arc<StuckOrders>>,
    /// Dead letters and the bus, as the admin API sees them.
    pub ops: Option<OpsState>,
    /// API clients, as the admin API manages them.
    pub auth: Option<AuthState>,
    /// The audit log of admin actions.
    pub audit: Option<Arc<AuditLog>>,
    /// The payment gateway, for its circuit breaker's state.
    pub gateway: Option<Arc<HttpGateway>>,
}

impl ConsoleState {
    fn orders(&self) -> Result<&Arc<OrdersService>, PageError> {
        self.orders.as_ref().ok_or(PageError::NotServed("orders"))
    }

    fn inventory(&self) -> Result<&Arc<InventoryService>, PageError> {
        self.inventory
            .as_ref()
            .ok_or(PageError::NotServed("inventory"))
    }

    /// What every admin page shows above its content: the active chaos
    /// controls.
    fn banners(&self) -> layout::Banners {
        layout::Banners {
            chaos: self.chaos.as_ref().map(Chaos::active).unwrap_or_default(),
        }
    }
}

/// The console's routes; every response carries the security headers.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(session::home))
        .route("/sign-in", post(session::sign_in))
        .route("/sign-out", post(session::sign_out))
        .route("/shop", get(customer::shop))
        .route(
            "/shop/checkout",
            get(customer::checkout).post(customer::place_order),
        )
        .route("/orders", get(customer::my_orders))
        .route("/orders/{id}", get(customer::order_page))
        .route("/orders/{id}/cancel", post(customer::cancel))
        .route("/track/{token}", get(tracking::track))
        .route("/seller/orders", get(seller::orders))
        .route("/seller/products", get(seller::products))
        .route(
            "/seller/products/new",
            get(seller::new_product).post(seller::create_product),
        )
        .route(
            "/seller/products/{id}",
            get(seller::product).post(seller::edit_product),
        )
        .route("/seller/products/{id}/stock", post(seller::adjust_stock))
        .route("/courier", get(courier::active))
        .route("/courier/shipments/{id}", get(courier::shipment))
        .route("/courier/shipments/{id}/events", post(courier::post_event))
        .route("/admin", get(admin::overview))
        .route("/admin/orders", get(admin::orders))
        .route("/admin/orders/{id}", get(admin::order))
        .route("/admin/payments/{id}/refund", post(admin::refund))
        .route("/admin/stuck", get(admin_ops::stuck))
        .route("/admin/stuck/replay", post(admin_ops::replay_stuck))
        .route("/admin/dead-letters", get(admin_ops::dead_letters))
        .route(
            "/admin/dead-letters/{id}/replay",
            post(admin_ops::replay_dead_letter),
        )
        .route(
            "/admin/clients",
            get(admin_ops::clients).post(admin_ops::create_client),
        )
        .route("/admin/clients/{id}/revoke", post(admin_ops::revoke_client))
        .route("/admin/audit", get(admin_ops::audit_page))
        .route(
            "/admin/chaos",
            get(admin_ops::chaos).post(admin_ops::set_chaos),
        )
        .with_state(state)
        .layer(from_fn(page_headers))
}

/// What every console page adds to the headers all responses carry
/// (`ordo_http::request::security_headers`): its own CSP, a referrer
/// kept within this origin (never sent elsewhere: a tracking link carries
/// its token in the path), and no caching, since a page shows someone's
/// data or a form's CSRF token.
async fn page_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, private"),
        );
    }
    response
}

/// Why a page cannot be shown, rendered as an HTML page with the
/// problem's own words (never a stack trace).
#[derive(Debug)]
pub enum PageError {
    /// From a service: its problem, as the API would answer it.
    Api(ApiError),
    /// Not signed in: back to the sign-in page, then here.
    SignIn { next: String },
    /// A form without this session's CSRF token.
    Csrf,
    /// The service is not run by this process (distributed mode).
    NotServed(&'static str),
}

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(err: E) -> Self {
        Self::Api(err.into())
    }
}

impl PageError {
    fn not_found(what: &str) -> Self {
        Self::Api(ApiError::not_found(what))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::SignIn { next } => {
                let target = format!("/?next={}", form_urlencoded_path(&next));
                return Redirect::to(&target).into_response();
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired".to_owned(),
                "The form was sent without this session's security token. Go back, reload \
                 the page and send it again."
                    .to_owned(),
            ),
            Self::NotServed(service) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Not served here".to_owned(),
                format!(
                    "This process does not run the {service} service; open the console on one \
                     that does."
                ),
            ),
            Self::Api(err) => {
                let problem = err.to_problem();
                if let ApiError::Internal(e) = &err {
                    tracing::error!(error = ?e, request_id = ?problem.request_id, "console page failed");
                }
                let status = err.status();
                let mut detail = problem.detail;
                if let Some(id) = problem.request_id.filter(|_| status.is_server_error()) {
                    detail = format!("{detail} (request {id})");
                }
                (status, problem.title, detail)
            }
        };
        (status, layout::error_page(status, &title, &detail)).into_response()
    }
}

fn form_urlencoded_path(path: &str) -> String {
    form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

/// A rendered page, or why not.
pub type Page = Result<Markup, PageError>;

/// The home of each role.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Customer => "/shop",
        Role::Seller => "/seller/orders",
        Role::Courier => "/courier",
        Role::Admin => "/admin",
    }
}

/// Only a path on this site may be a sign-in's `next`.
fn local_path(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/orders/x")), Some("/orders/x"));
        assert_eq!(local_path(Some("//evil.example")), None);
        assert_eq!(local_path(Some("https://evil.example")), None);
        assert_eq!(local_path(Some("/\\evil.example")), None);
        assert_eq!(local_path(None), None);
    }
}
