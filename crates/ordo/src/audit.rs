//! The audit of admin actions over HTTP: a middleware that records every
//! state-changing request an admin makes, after its response, and
//! `GET /v1/admin/audit` to read the log. The console records its forms
//! with the same [`AuditLog::record`] (or this middleware, when its
//! requests carry the [`Principal`]).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ordo_auth::{AuditEntry, AuditLog, NewAuditEntry};
use ordo_http::{ApiError, Principal, Query, RequestId, Role};
use ordo_kernel::ClientId;
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Records the request when an admin made it and it can change state
/// (any method but GET, HEAD and OPTIONS): the action is the method and
/// the matched route template, the target the concrete path, the outcome
/// the status answered. Runs inside the authentication layer, which puts
/// the [`Principal`] in the request.
pub async fn record_admin_requests(
    State(log): State<Arc<AuditLog>>,
    req: Request,
    next: Next,
) -> Response {
    let admin = req
        .extensions()
        .get::<Principal>()
        .filter(|p| p.role == Role::Admin)
        .map(|p| p.client_id);
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let Some(actor) = admin.filter(|_| changes) else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    record_as_api(&log, actor, &method, &route, path, status, request_id).await;
    response
}

/// Records an admin action under the name of the API request that does
/// it, also when it was done through a console form: the action is the
/// method and route template, the target the concrete path, the status
/// what the API answered (or would have). The log then reads alike
/// whichever way the admin acted. A failure to record is logged, not
/// answered: the action itself already happened.
pub async fn record_as_api(
    log: &AuditLog,
    actor: ClientId,
    method: &Method,
    route: &str,
    path: String,
    status: u16,
    request_id: Option<String>,
) {
    let entry = NewAuditEntry {
        actor,
        action: format!("{method} {route}"),
        target: path,
        status,
        request_id,
    };
    if let Err(err) = log.record(entry).await {
        warn!(error = %err, "an admin action was not recorded in the audit log");
    }
}

pub fn admin_router(log: Arc<AuditLog>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .with_state(log)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    id: String,
    at: DateTime<Utc>,
    /// The admin client that acted.
    actor: String,
    /// The method and route template (`POST /v1/admin/clients/{id}/revoke`),
    /// or the console's name for its form.
    action: String,
    /// The concrete path, or what the console acted on.
    target: String,
    /// The HTTP status answered.
    status: u16,
    request_id: Option<String>,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor.to_string(),
            action: e.action,
            target: e.target,
            status: e.status,
            request_id: e.request_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    items: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next, older page; null on the last one.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many, newest first (default 50, at most 500).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The audit log of admin actions, newest first (admin).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditList),
        (status = 403, body = ordo_http::Problem, content_type = "application/problem+json"),
        (status = 422, body = ordo_http::Problem, content_type = "application/problem+json"),
    ))]
async fn list_audit(
    State(log): State<Arc<AuditLog>>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<AuditList>, ApiError> {
    principal.require(&[Role::Admin])?;
    let limit = match q.limit {
        None => AuditLog::DEFAULT_LIMIT,
        Some(n) if (1..=AuditLog::MAX_LIMIT).contains(&(n as usize)) => n as usize,
        Some(_) => {
            return Err(ApiError::field(
                "limit",
                format!("must be from 1 to {}", AuditLog::MAX_LIMIT),
            ));
        }
    };
    if let Some(cursor) = &q.cursor
        && !AuditLog::is_entry_id(cursor)
    {
        return Err(ApiError::field(
            "cursor",
            "must be the next_cursor of a page",
        ));
    }
    let page = log.list(q.cursor.as_deref(), limit).await?;
    Ok(axum::Json(AuditList {
        items: page.items.into_iter().map(AuditEntryView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
