//! The admin's operations pages: stuck orders, dead letters, API clients,
//! the audit log and the chaos controls.
//!
//! Each form calls the service method its admin API route calls (the
//! rules live there, once) and records itself in the audit log under
//! that route's name, so the log reads the same whichever way an admin
//! acted.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use ordo_auth::{ApiClient, AuditLog, AuthState};
use ordo_bus::{DeadLetter, DeadLetterStatus};
use ordo_http::{ApiError, FieldError, RequestId, Role};
use ordo_kernel::OrderId;
use serde::{Deserialize, Serialize};

use super::session::{CsrfForm, Viewer};
use super::{ConsoleState, Page, PageError, layout};
use crate::chaos::{Chaos, ChaosStatus, GatewayChaos};
use crate::ops::OpsState;
use crate::stuck::{Action, Cause, CauseKind, StuckOrders, StuckParams, StuckReport};

impl ConsoleState {
    fn chaos(&self) -> Result<&Chaos, PageError> {
        self.chaos.as_ref().ok_or(PageError::NotServed("chaos"))
    }

    fn stuck(&self) -> Result<&StuckOrders, PageError> {
        self.stuck.as_deref().ok_or(PageError::NotServed("orders"))
    }

    fn ops(&self) -> Result<&OpsState, PageError> {
        self.ops.as_ref().ok_or(PageError::NotServed("bus"))
    }

    fn auth(&self) -> Result<&AuthState, PageError> {
        self.auth.as_ref().ok_or(PageError::NotServed("auth"))
    }

    fn audit_log(&self) -> Result<&AuditLog, PageError> {
        self.audit.as_deref().ok_or(PageError::NotServed("audit"))
    }
}

fn require_admin(viewer: &Viewer) -> Result<(), PageError> {
    viewer.principal().require(&[Role::Admin])?;
    Ok(())
}

fn page(state: &ConsoleState, viewer: &Viewer, title: &str, nav: &str, content: Markup) -> Markup {
    layout::page_with(viewer, title, nav, &state.banners(), content)
}

/// Records a console action in the audit log as the API request that
/// does the same (`method`, `route`, concrete `path`), with the status
/// the API answers for `outcome`.
pub(super) async fn audit<T>(
    state: &ConsoleState,
    viewer: &Viewer,
    request_id: &str,
    (method, route, path): (Method, &str, String),
    outcome: &Result<T, ApiError>,
    ok: StatusCode,
) {
    let principal = viewer.principal();
    let Some(log) = &state.audit else { return };
    if principal.role != Role::Admin {
        return;
    }
    let status = match outcome {
        Ok(_) => ok,
        Err(err) => err.status(),
    };
    crate::audit::record_as_api(
        log,
        principal.client_id,
        &method,
        route,
        path,
        status.as_u16(),
        Some(request_id.to_owned()),
    )
    .await;
}

/// How long, in the units the threshold fields take (`90s`, `15m`, `2h`).
fn duration_param(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// How long, for people.
fn duration_words(d: Duration) -> String {
    let param = duration_param(d);
    let split = param.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (n, unit) = param.split_at(split);
    let unit = match unit {
        "h" => "h",
        "m" => "min",
        "s" => "s",
        _ => "ms",
    };
    format!("{n} {unit}")
}

// --- Stuck orders ------------------------------------------------------------

/// The thresholds as typed, kept across the page's forms.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Thresholds {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pending: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    confirmed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    paid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    shipped: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    limit: String,
}

impl Thresholds {
    fn params(&self) -> StuckParams {
        let given = |s: &String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        StuckParams {
            pending: given(&self.pending),
            confirmed: given(&self.confirmed),
            paid: given(&self.paid),
            shipped: given(&self.shipped),
            limit: given(&self.limit),
        }
    }

    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    fn hidden(&self) -> Markup {
        html! {
            @for (name, value) in [("pending", &self.pending), ("confirmed", &self.confirmed),
                ("paid", &self.paid), ("shipped", &self.shipped), ("limit", &self.limit)] {
                @if !value.is_empty() { input type="hidden" name=(name) value=(value); }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StuckPageQuery {
    #[serde(flatten)]
    thresholds: Thresholds,
    /// After a replay: how many dead letters, of which order.
    replayed: Option<String>,
    order: Option<String>,
}

/// `GET /admin/stuck`: the stuck orders by stage, with causes and actions.
pub async fn stuck(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<StuckPageQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let finder = state.stuck()?;
    let (status, report, errors) = match q.thresholds.params().parse() {
        Ok(query) => (StatusCode::OK, Some(finder.find(&query).await?), Vec::new()),
        Err(ApiError::Validation { errors, .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, None, errors)
        }
        Err(e) => return Err(e.into()),
    };
    let notice = q.replayed.and_then(|n| n.parse::<usize>().ok()).map(|n| {
        let order = q.order.as_deref().unwrap_or("the order");
        match n {
            0 => format!("Order {order} has no parked dead letters left to replay."),
            1 => format!(
                "Replay requested for 1 dead letter of order {order}: the order moves on once its consumer handles it."
            ),
            n => format!(
                "Replay requested for {n} dead letters of order {order}: the order moves on once its consumers handle them."
            ),
        }
    });
    let markup = page(
        &state,
        &viewer,
        "Stuck orders",
        "/admin/stuck",
        html! {
            div.page-head {
                h1 { "Stuck orders" }
                @if let Some(r) = &report { span.muted.small { "Checked " (layout::time(r.checked_at)) } }
            }
            p.sub { "Orders whose status has not moved for longer than its stage's threshold, with the likely cause and what to do." }
            @if let Some(n) = &notice { (layout::notice("ok", n)) }
            div.stack {
                (thresholds_form(&q.thresholds, &errors))
                @if let Some(report) = &report { (stuck_report(&viewer, report, &q.thresholds)) }
            }
        },
    );
    Ok((status, markup).into_response())
}

fn thresholds_form(typed: &Thresholds, errors: &[FieldError]) -> Markup {
    let defaults = crate::stuck::StuckQuery::default();
    let t = defaults.thresholds;
    let fields = [
        (
            "pending",
            "Pending",
            &typed.pending,
            duration_param(t.pending),
        ),
        (
            "confirmed",
            "Confirmed",
            &typed.confirmed,
            duration_param(t.confirmed),
        ),
        ("paid", "Paid", &typed.paid, duration_param(t.paid)),
        (
            "shipped",
            "Shipped",
            &typed.shipped,
            duration_param(t.shipped),
        ),
        (
            "limit",
            "Per stage, at most",
            &typed.limit,
            defaults.limit.to_string(),
        ),
    ];
    html! {
        form.card method="get" action="/admin/stuck" {
            h2 { "Thresholds" }
            div.thresholds {
                @for (name, label, value, default) in fields {
                    @let error = errors.iter().find(|e| e.field == name);
                    div.field {
                        label for=(name) { (label) }
                        input type="text" id=(name) name=(name) value=(value) placeholder=(default)
                            inputmode=[(name == "limit").then_some("numeric")]
                            spellcheck="false" aria-invalid=[error.map(|_| "true")]
                            aria-describedby=[error.map(|_| format!("{name}-error"))];
                        @if let Some(e) = error { div.error id={ (name) "-error" } { (e.message) } }
                    }
                }
            }
            div.row {
                button type="submit" { "Look again" }
                span.hint.muted.small { "Durations such as 500ms, 30s, 5m or 2h; empty fields take the default shown." }
            }
        }
    }
}

fn stuck_report(viewer: &Viewer, report: &StuckReport, typed: &Thresholds) -> Markup {
    html! {
        @if !report.unchecked.is_empty() {
            (layout::notice("info", &format!(
                "Not checked here, as their services run in other processes: {}.",
                report.unchecked.iter().map(|k| cause_kind_words(*k)).collect::<Vec<_>>().join(", ")
            )))
        }
        @if report.total() == 0 {
            div.alert.ok role="status" { "No order is stuck: every live order moved within its stage's threshold." }
        }
        @for stage in &report.stages {
            section.card.stage {
                div.row.spread {
                    h2 {
                        (layout::badge(stage.status.as_str())) " "
                        "longer than " (duration_words(stage.threshold))
                    }
                    span.muted { (stage.orders.len()) @if stage.more { "+" } " stuck" }
                }
                @if stage.orders.is_empty() {
                    p.muted { "None." }
                } @else {
                    div.table-wrap {
                        table.cards {
                            thead { tr { th { "Order" } th { "Waiting" } th.num { "Total" } th { "Likely cause" } th { "Actions" } } }
                            tbody {
                                @for order in &stage.orders {
                                    tr {
                                        td data-label="Order" { a.mono href={ "/admin/orders/" (order.id) } { (order.id) } }
                                        td data-label="Waiting" { (layout::ago(order.since, report.checked_at).replace(" ago", "")) br; span.muted.small { "since " (layout::time(order.since)) } }
                                        td.num data-label="Total" { (order.total) " " (order.currency) }
                                        td data-label="Likely cause" { div.causes { @for cause in &order.causes { (cause_view(cause)) } } }
                                        td data-label="Actions" { div.actions { @for action in &order.actions { (action_view(viewer, order.id, *action, typed)) } } }
                                    }
                                }
                            }
                        }
                    }
                    @if stage.more {
                        p.muted.small { "More orders are stuck here than the limit shows; raise “Per stage, at most” to see them." }
                    }
                }
            }
        }
    }
}

fn cause_kind_words(kind: CauseKind) -> &'static str {
    match kind {
        CauseKind::DeadLetter => "dead letters",
        CauseKind::GatewayBreakerOpen => "the gateway's breaker",
        CauseKind::WaitingForCourier => "couriers",
        CauseKind::HoldExpired => "stock holds",
    }
}

fn cause_view(cause: &Cause) -> Markup {
    html! {
        div.cause {
            @match cause {
                Cause::DeadLetter { dead_letter_ids, consumers } => {
                    span.badge.bad { "dead letter" }
                    " " span.muted.small { (consumers.join(", ")) }
                    @for id in dead_letter_ids {
                        " " a.mono.small href={ "/admin/dead-letters#" (id) } { (id) }
                    }
                }
                Cause::GatewayBreakerOpen { breaker } => {
                    span.badge.bad { "gateway breaker " (breaker.replace('_', " ")) }
                }
                Cause::WaitingForCourier { shipment_id, shipment_status } => {
                    span.badge.warn { "waiting for a courier" }
                    " " span.muted.small { "shipment " span.mono { (shipment_id) } " " (shipment_status.replace('_', " ")) }
                }
                Cause::HoldExpired { expires_at, released } => {
                    span.badge.warn { "stock hold expired" }
                    " " span.muted.small {
                        @if let Some(at) = expires_at { "at " (layout::time(*at)) }
                        @if *released { ", stock released" }
                    }
                }
                Cause::Unknown => { span.badge.info { "no known cause" } }
            }
        }
    }
}

fn action_view(viewer: &Viewer, order: OrderId, action: Action, typed: &Thresholds) -> Markup {
    match action {
        Action::ReplayDeadLetters => html! {
            form.inline method="post" action="/admin/stuck/replay" {
                (viewer.csrf_field())
                input type="hidden" name="order" value=(order);
                (typed.hidden())
                button.small type="submit" { "Replay dead letters" }
            }
        },
        Action::Cancel => html! {
            form.inline method="post" action={ "/orders/" (order) "/cancel" }
                data-confirm={ "Cancel order " (order) "? Its stock is released and its payment voided or refunded." } {
                (viewer.csrf_field())
                button.small.danger type="submit" { "Cancel" }
            }
        },
        Action::Refund => html! {
            a.button.small.secondary href={ "/admin/orders/" (order) "#refund" } { "Refund…" }
        },
    }
}

#[derive(Debug, Deserialize)]
pub struct StuckReplayForm {
    #[serde(default)]
    order: String,
    #[serde(flatten)]
    thresholds: Thresholds,
}

/// `POST /admin/stuck/replay`: replays every parked dead letter of an
/// order, each as `POST /v1/admin/dead-letters/{id}/replay` does.
pub async fn replay_stuck(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    CsrfForm { viewer, form }: CsrfForm<StuckReplayForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let order =
        OrderId::parse(form.order.trim()).map_err(|_| PageError::not_found("no such order"))?;
    let ops = state.ops()?;
    let subject = order.to_string();
    let letters = ops.list_dead_letters(viewer.principal(), 1000).await?;
    let mut replayed = 0;
    for letter in letters
        .iter()
        .filter(|l| l.subject == subject && l.status == DeadLetterStatus::Parked)
    {
        let outcome = ops.replay_dead_letter(viewer.principal(), &letter.id).await;
        audit(
            &state,
            &viewer,
            &request_id,
            replay_route(&letter.id),
            &outcome,
            StatusCode::ACCEPTED,
        )
        .await;
        match outcome {
            Ok(_) => replayed += 1,
            // Replayed meanwhile by someone else: nothing left to do.
            Err(ApiError::Conflict { .. } | ApiError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut target = format!("/admin/stuck?replayed={replayed}&order={order}");
    let query = form.thresholds.query();
    if !query.is_empty() {
        target = format!("{target}&{query}");
    }
    Ok(Redirect::to(&target).into_response())
}

fn replay_route(id: &str) -> (Method, &'static str, String) {
    (
        Method::POST,
        "/v1/admin/dead-letters/{id}/replay",
        format!("/v1/admin/dead-letters/{id}/replay"),
    )
}

// --- Dead letters ------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct DeadLettersQuery {
    /// `all` to list replayed letters too.
    show: Option<String>,
    replayed: Option<String>,
}

/// How many dead letters the page lists.
const DEAD_LETTER_PAGE: usize = 200;

/// `GET /admin/dead-letters`: parked letters (or all) with replay.
pub async fn dead_letters(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<DeadLettersQuery>,
) -> Page {
    require_admin(&viewer)?;
    let all = q.show.as_deref() == Some("all");
    let letters = state
        .ops()?
        .list_dead_letters(viewer.principal(), DEAD_LETTER_PAGE)
        .await?;
    let shown: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| all || l.status != DeadLetterStatus::Replayed)
        .collect();
    let now = Utc::now();
    Ok(page(
        &state,
        &viewer,
        "Dead letters",
        "/admin/dead-letters",
        html! {
            div.page-head { h1 { "Dead letters" } }
            p.sub { "Events a consumer gave up on after its last attempt. Fix the cause, then replay: the event is delivered to that consumer again, once." }
            @if let Some(id) = &q.replayed {
                (layout::notice("ok", &format!("Replay of {id} requested: its consumer gets it again within moments.")))
            }
            nav.filter aria-label="Which letters" {
                ul.nav {
                    li { a href="/admin/dead-letters" aria-current=[(!all).then_some("page")] { "Open" } }
                    li { a href="/admin/dead-letters?show=all" aria-current=[all.then_some("page")] { "All" } }
                }
            }
            @if shown.is_empty() {
                (layout::empty(if all { "No dead letters." } else { "No open dead letters: every consumer is keeping up." }))
            } @else {
                div.card {
                    div.table-wrap {
                        table.cards {
                            thead { tr { th { "Letter" } th { "Event" } th { "Consumer" } th { "Error" } th { "Parked" } th { "Status" } th {} } }
                            tbody {
                                @for l in &shown { (dead_letter_row(&viewer, l, now)) }
                            }
                        }
                    }
                    @if letters.len() == DEAD_LETTER_PAGE {
                        p.muted.small { "The newest " (DEAD_LETTER_PAGE) " letters are listed." }
                    }
                }
            }
        },
    ))
}

fn dead_letter_row(viewer: &Viewer, l: &DeadLetter, now: DateTime<Utc>) -> Markup {
    let (tone, label) = match l.status {
        DeadLetterStatus::Parked => ("bad", "parked"),
        DeadLetterStatus::ReplayRequested => ("warn", "replay requested"),
        DeadLetterStatus::Replayed => ("ok", "replayed"),
    };
    let order = OrderId::parse(&l.subject).ok();
    html! {
        tr id=(l.id) {
            td data-label="Letter" { span.mono.small { (l.id) } }
            td data-label="Event" {
                code { (l.event_type) } br;
                span.small.muted { "of " }
                @if let Some(order) = order {
                    a.mono.small href={ "/admin/orders/" (order) } { (order) }
                } @else {
                    span.mono.small { (l.subject) }
                }
            }
            td data-label="Consumer" { code { (l.consumer) } br; span.small.muted { (l.attempts) " attempts" } }
            td.error-text data-label="Error" { (l.error) }
            td data-label="Parked" { (layout::ago(l.parked_at, now)) br; span.small.muted { (layout::time(l.parked_at)) } }
            td data-label="Status" { span class={ "badge " (tone) } { (label) } }
            td {
                @if l.status == DeadLetterStatus::Parked {
                    form.inline method="post" action={ "/admin/dead-letters/" (l.id) "/replay" } {
                        (viewer.csrf_field())
                        button.small type="submit" { "Replay" }
                    }
                }
            }
        }
    }
}

/// `POST /admin/dead-letters/{id}/replay`.
pub async fn replay_dead_letter(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, .. }: CsrfForm<super::session::Empty>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let outcome = state
        .ops()?
        .replay_dead_letter(viewer.principal(), &id)
        .await;
    audit(
        &state,
        &viewer,
        &request_id,
        replay_route(&id),
        &outcome,
        StatusCode::ACCEPTED,
    )
    .await;
    let letter = outcome?;
    let target = format!(
        "/admin/dead-letters?replayed={}",
        form_urlencoded::byte_serialize(letter.id.as_bytes()).collect::<String>()
    );
    Ok(Redirect::to(&target).into_response())
}

// --- API clients -------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ClientsQuery {
    revoked: Option<String>,
}

/// `GET /admin/clients`.
pub async fn clients(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<ClientsQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let notice = q.revoked.map(|id| {
        (
            "ok",
            format!("Client {id} is revoked: its tokens and sessions no longer work."),
        )
    });
    clients_page(
        &state,
        &viewer,
        StatusCode::OK,
        ClientsView {
            notice,
            ..ClientsView::default()
        },
    )
    .await
}

#[derive(Default)]
struct ClientsView {
    notice: Option<(&'static str, String)>,
    created: Option<ordo_auth::CreatedClient>,
    errors: Vec<FieldError>,
    role: String,
    name: String,
}

async fn clients_page(
    state: &ConsoleState,
    viewer: &Viewer,
    status: StatusCode,
    view: ClientsView,
) -> Result<Response, PageError> {
    let mut clients = state.auth()?.service.clients(viewer.principal()).await?;
    // Active first, then newest.
    clients.sort_by(|a, b| {
        a.revoked_at
            .is_some()
            .cmp(&b.revoked_at.is_some())
            .then(b.created_at.cmp(&a.created_at))
    });
    let role_error = view.errors.iter().find(|e| e.field == "role");
    let name_error = view.errors.iter().find(|e| e.field == "name");
    let markup = page(
        state,
        viewer,
        "API clients",
        "/admin/clients",
        html! {
            div.page-head { h1 { "API clients" } }
            p.sub { "Each client has a role and a secret it exchanges for tokens at " code { "POST /oauth/token" } "; people sign in to this console with one too." }
            @if let Some((kind, message)) = &view.notice { (layout::notice(kind, message)) }
            @if let Some(created) = &view.created {
                section.card.created data-client-id=(created.client.id) {
                    h2 { "Client created" }
                    div.alert.warn role="alert" {
                        strong { "Copy the secret now." }
                        " It is shown only this once: Ordo keeps only a hash of it. Lost, it cannot be recovered; create another client instead."
                    }
                    dl.facts {
                        dt { "Name" } dd { (created.client.name) }
                        dt { "Role" } dd { (created.client.role.as_str()) }
                        dt { "Client id" } dd { div.secret { (created.client.id) } }
                        dt { "Client secret" } dd { div.secret data-secret { (created.secret) } }
                    }
                }
            }
            div.grid.clients-grid {
                section.card {
                    h2 { "Clients" }
                    div.table-wrap {
                        table.cards {
                            thead { tr { th { "Name" } th { "Client id" } th { "Role" } th { "Created" } th { "Status" } th {} } }
                            tbody { @for c in &clients { (client_row(viewer, c)) } }
                        }
                    }
                }
                section.card {
                    h2 { "New client" }
                    (layout::form_errors(&view.errors.iter().map(|e| (e.field.clone(), e.message.clone())).collect::<Vec<_>>()))
                    form method="post" action="/admin/clients" {
                        (viewer.csrf_field())
                        div.field {
                            label for="role" { "Role" }
                            select #role name="role" required aria-invalid=[role_error.map(|_| "true")] {
                                @for role in Role::ALL {
                                    option value=(role.as_str()) selected[view.role == role.as_str()] { (role.as_str()) }
                                }
                            }
                            @if let Some(e) = role_error { div.error { (e.message) } }
                        }
                        div.field {
                            label for="name" { "Name " span.hint { "(who or what uses it; the role's name if empty)" } }
                            input #name type="text" name="name" value=(view.name) maxlength="200"
                                placeholder="e.g. Warehouse scanner" aria-invalid=[name_error.map(|_| "true")];
                            @if let Some(e) = name_error { div.error { (e.message) } }
                        }
                        button type="submit" { "Create client" }
                        p.muted.small { "The secret is shown once, on the next page." }
                    }
                }
            }
        },
    );
    Ok((status, markup).into_response())
}

fn client_row(viewer: &Viewer, c: &ApiClient) -> Markup {
    let own = c.id == viewer.principal().client_id;
    html! {
        tr {
            td data-label="Name" { (c.name) @if own { " " span.badge.info { "you" } } }
            td data-label="Client id" { span.mono.small { (c.id) } }
            td data-label="Role" { (c.role.as_str()) }
            td data-label="Created" { (layout::time(c.created_at)) }
            td data-label="Status" {
                @match c.revoked_at {
                    Some(at) => { span.badge.bad { "revoked" } br; span.small.muted { (layout::time(at)) } }
                    None => { span.badge.ok { "active" } }
                }
            }
            td {
                @if c.revoked_at.is_none() {
                    @if own {
                        span.small.muted title="An admin cannot revoke the client it is signed in as" { "you" }
                    } @else {
                        form.inline method="post" action={ "/admin/clients/" (c.id) "/revoke" }
                            data-confirm={ "Revoke " (c.name) "? Its tokens and sessions stop working at once; this cannot be undone." } {
                            (viewer.csrf_field())
                            button.small.danger type="submit" { "Revoke" }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NewClientForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    name: String,
}

/// `POST /admin/clients`: creates a client and shows its secret, once.
pub async fn create_client(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    CsrfForm { viewer, form }: CsrfForm<NewClientForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let auth = state.auth()?;
    let outcome = match Role::parse(form.role.trim()) {
        Some(role) => {
            let name = Some(form.name.as_str()).filter(|n| !n.trim().is_empty());
            auth.service
                .create_client_as(viewer.principal(), role, name)
                .await
        }
        None => Err(ApiError::field(
            "role",
            "must be one of customer, seller, courier, admin",
        )),
    };
    let route = (
        Method::POST,
        "/v1/admin/clients",
        "/v1/admin/clients".to_owned(),
    );
    audit(
        &state,
        &viewer,
        &request_id,
        route,
        &outcome,
        StatusCode::CREATED,
    )
    .await;
    match outcome {
        Ok(created) => {
            let view = ClientsView {
                created: Some(created),
                ..ClientsView::default()
            };
            clients_page(&state, &viewer, StatusCode::CREATED, view).await
        }
        Err(ApiError::Validation { errors, .. }) => {
            let view = ClientsView {
                errors,
                role: form.role,
                name: form.name,
                ..ClientsView::default()
            };
            clients_page(&state, &viewer, StatusCode::UNPROCESSABLE_ENTITY, view).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/clients/{id}/revoke`.
pub async fn revoke_client(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, .. }: CsrfForm<super::session::Empty>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let outcome = state.auth()?.revoke_client(viewer.principal(), &id).await;
    let route = (
        Method::POST,
        "/v1/admin/clients/{id}/revoke",
        format!("/v1/admin/clients/{id}/revoke"),
    );
    audit(
        &state,
        &viewer,
        &request_id,
        route,
        &outcome,
        StatusCode::OK,
    )
    .await;
    match outcome {
        Ok(client) => {
            Ok(Redirect::to(&format!("/admin/clients?revoked={}", client.id)).into_response())
        }
        Err(err @ ApiError::Conflict { .. }) => {
            let view = ClientsView {
                notice: Some(("bad", err.to_problem().detail)),
                ..ClientsView::default()
            };
            clients_page(&state, &viewer, StatusCode::CONFLICT, view).await
        }
        Err(e) => Err(e.into()),
    }
}

// --- Audit log ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    cursor: Option<String>,
}

/// `GET /admin/audit`: admin actions, newest first, in keyset pages.
pub async fn audit_page(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<AuditQuery>,
) -> Page {
    require_admin(&viewer)?;
    let cursor = q.cursor.filter(|c| !c.is_empty());
    if let Some(c) = &cursor
        && !AuditLog::is_entry_id(c)
    {
        return Err(ApiError::field("cursor", "must be the next_cursor of a page").into());
    }
    let log = state.audit_log()?;
    let entries = log.list(cursor.as_deref(), AuditLog::DEFAULT_LIMIT).await?;
    let names: std::collections::HashMap<_, _> = match &state.auth {
        Some(auth) => auth
            .service
            .clients(viewer.principal())
            .await?
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect(),
        None => Default::default(),
    };
    let now = Utc::now();
    Ok(page(
        &state,
        &viewer,
        "Audit log",
        "/admin/audit",
        html! {
            div.page-head { h1 { "Audit log" } }
            p.sub { "Every change an admin made, through the API or this console, named as the API request that does it." }
            @if entries.items.is_empty() {
                (layout::empty("No admin action recorded yet."))
            } @else {
                div.card {
                    div.table-wrap {
                        table.cards {
                            thead { tr { th { "When" } th { "Admin" } th { "Action" } th { "Target" } th { "Outcome" } th { "Request" } } }
                            tbody {
                                @for e in &entries.items {
                                    tr {
                                        td data-label="When" { (layout::time(e.at)) br; span.small.muted { (layout::ago(e.at, now)) } }
                                        td data-label="Admin" {
                                            @if let Some(name) = names.get(&e.actor) { (name) br; }
                                            span.mono.small { (e.actor) }
                                        }
                                        td data-label="Action" { code { (e.action) } }
                                        td data-label="Target" { span.mono.small.wrap { (e.target) } }
                                        td data-label="Outcome" { span class={ "badge " (status_tone(e.status)) } { (e.status) } }
                                        td data-label="Request" { @if let Some(id) = &e.request_id { span.mono.small.wrap { (id) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if cursor.is_some() { a.button.secondary href="/admin/audit" { "Newest" } } @else { span {} }
                @if let Some(next) = &entries.next_cursor {
                    a.button.secondary href={ "/admin/audit?cursor=" (next) } { "Older entries" }
                }
            }
        },
    ))
}

fn status_tone(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        400..=499 => "warn",
        _ => "bad",
    }
}

// --- Chaos controls ----------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ChaosQuery {
    saved: Option<String>,
}

/// `GET /admin/chaos`.
pub async fn chaos(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<ChaosQuery>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let notice = q.saved.map(|_| {
        (
            "ok",
            "Saved: the controls apply from the next charge and delivery on.".to_owned(),
        )
    });
    chaos_page(&state, &viewer, StatusCode::OK, notice, None, &[])
}

/// One control's form, as posted.
#[derive(Debug, Default, Deserialize)]
pub struct ChaosForm {
    /// `gateway`, `duplicate`, `pause`, `resume` or `off`.
    #[serde(default)]
    control: String,
    #[serde(default)]
    decline_percent: String,
    #[serde(default)]
    transient_percent: String,
    #[serde(default)]
    timeout_percent: String,
    #[serde(default)]
    slow_percent: String,
    #[serde(default)]
    duplicate_percent: String,
    #[serde(default)]
    service: String,
}

/// A share as typed; empty is off. What is not a number is passed on as
/// out of range, so that the chaos controls name the field with their
/// own rule.
fn percent(typed: &str) -> u32 {
    match typed.trim() {
        "" => 0,
        t => t.parse().unwrap_or(u32::MAX),
    }
}

/// `POST /admin/chaos`: changes one control, keeping the others, through
/// the same [`Chaos::set`] as `PUT /v1/admin/chaos` (or [`Chaos::reset`],
/// `DELETE`, to turn all off).
pub async fn set_chaos(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    CsrfForm { viewer, form }: CsrfForm<ChaosForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    let chaos = state.chaos()?;
    let mut next = chaos.state();
    let (method, outcome) = match form.control.as_str() {
        "off" => (Method::DELETE, chaos.reset(viewer.principal())),
        control => {
            match control {
                "gateway" => {
                    next.gateway = GatewayChaos {
                        decline_percent: percent(&form.decline_percent),
                        transient_percent: percent(&form.transient_percent),
                        timeout_percent: percent(&form.timeout_percent),
                        slow_percent: percent(&form.slow_percent),
                    };
                }
                "duplicate" => next.duplicate_percent = percent(&form.duplicate_percent),
                "pause" => {
                    if !next.paused.contains(&form.service) {
                        next.paused.push(form.service.clone());
                    }
                }
                "resume" => next.paused.retain(|s| *s != form.service),
                _ => {
                    return Err(ApiError::field(
                        "control",
                        "must be gateway, duplicate, pause, resume or off",
                    )
                    .into());
                }
            }
            (Method::PUT, chaos.set(viewer.principal(), next))
        }
    };
    let route = (method, "/v1/admin/chaos", "/v1/admin/chaos".to_owned());
    audit(
        &state,
        &viewer,
        &request_id,
        route,
        &outcome,
        StatusCode::OK,
    )
    .await;
    match outcome {
        Ok(_) => Ok(Redirect::to("/admin/chaos?saved=1").into_response()),
        Err(ApiError::Validation { errors, .. }) => chaos_page(
            &state,
            &viewer,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(&form),
            &errors,
        ),
        Err(err @ ApiError::Conflict { .. }) => {
            let notice = Some(("bad", format!("Refused: {}.", err.to_problem().detail)));
            chaos_page(
                &state,
                &viewer,
                StatusCode::CONFLICT,
                notice,
                Some(&form),
                &[],
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn chaos_page(
    state: &ConsoleState,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<(&str, String)>,
    sent: Option<&ChaosForm>,
    errors: &[FieldError],
) -> Result<Response, PageError> {
    let chaos = state.chaos()?;
    let s = chaos.status();
    let markup = page(
        state,
        viewer,
        "Chaos controls",
        "/admin/chaos",
        html! {
            div.page-head {
                h1 { "Chaos controls" }
                form.inline method="post" action="/admin/chaos" {
                    (viewer.csrf_field())
                    input type="hidden" name="control" value="off";
                    button.secondary type="submit" disabled[!s.enabled || s.active.is_empty()] { "Turn all off" }
                }
            }
            p.sub { "Faults to turn on at run time and watch the saga cope. They act on this process only and are all off after a restart." }
            @if !s.enabled {
                div.alert.warn role="status" {
                    strong { "Chaos controls are disabled on this server." }
                    " To enable them, start it with " code { "--chaos" } " (or set " code { "ORDO_CHAOS=true" }
                    ", or " code { "chaos = true" } " in " code { "ordo.toml" } "); the demo enables them."
                }
            }
            @if let Some((kind, message)) = &notice { (layout::notice(kind, message)) }
            (layout::form_errors(&errors.iter().map(|e| (e.field.clone(), e.message.clone())).collect::<Vec<_>>()))
            div.stack {
                section.card {
                    h2 { "Now active" }
                    @if s.active.is_empty() {
                        p.muted { "Nothing: every control is off." }
                    } @else {
                        ul.active-list { @for line in &s.active { li { (line) } } }
                    }
                }
                div.grid.grid-2.chaos-grid {
                    (gateway_card(viewer, &s, sent, errors))
                    div.stack {
                        (consumers_card(viewer, &s))
                        (duplicate_card(viewer, &s, sent, errors))
                    }
                }
            }
        },
    );
    Ok((status, markup).into_response())
}

fn typed_or<'a>(
    sent: Option<&'a ChaosForm>,
    control: &str,
    typed: fn(&ChaosForm) -> &String,
    current: u32,
) -> String {
    match sent.filter(|f| f.control == control) {
        Some(f) => typed(f).clone(),
        None => current.to_string(),
    }
}

fn percent_field(
    name: &str,
    label: &str,
    hint: &str,
    value: String,
    error: Option<&FieldError>,
    enabled: bool,
) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            div.percent {
                input type="number" id=(name) name=(name) value=(value) min="0" max="100" step="1"
                    inputmode="numeric" disabled[!enabled] aria-invalid=[error.map(|_| "true")];
                span { "%" }
            }
            @if let Some(e) = error { div.error { (e.message) } }
            div.hint { (hint) }
        }
    }
}

/// A share's field: name, label, hint, its value as typed, its value now.
type PercentField = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ChaosForm) -> &String,
    u32,
);

fn gateway_card(
    viewer: &Viewer,
    s: &ChaosStatus,
    sent: Option<&ChaosForm>,
    errors: &[FieldError],
) -> Markup {
    let enabled = s.enabled && s.gateway_simulator;
    let g = &s.state.gateway;
    let error = |name: &str| errors.iter().find(|e| e.field == format!("gateway.{name}"));
    let fields: [PercentField; 4] = [
        (
            "decline_percent",
            "Declined",
            "Answered card_declined: the order is cancelled.",
            |f| &f.decline_percent,
            g.decline_percent,
        ),
        (
            "transient_percent",
            "Fail transiently",
            "A 503 before acting: retried, and the payment fails once retries run out.",
            |f| &f.transient_percent,
            g.transient_percent,
        ),
        (
            "timeout_percent",
            "Time out",
            "Charged, answered after the client's timeout: retried under the same key.",
            |f| &f.timeout_percent,
            g.timeout_percent,
        ),
        (
            "slow_percent",
            "Slowed down",
            "Answered late, after the simulator's slow delay, within the client's timeout.",
            |f| &f.slow_percent,
            g.slow_percent,
        ),
    ];
    html! {
        section.card {
            h2 { "Payment gateway" }
            p.muted.small { "Shares of the simulator's charge calls (authorizations and captures). A call suffers one fault at most, so the shares add up to 100 % at most." }
            @if !s.gateway_simulator {
                (layout::notice("info", "This process does not serve the gateway simulator (a gateway URL is set, or it runs no payments service): the gateway controls do not apply here."))
            }
            form method="post" action="/admin/chaos" {
                (viewer.csrf_field())
                input type="hidden" name="control" value="gateway";
                @if errors.iter().any(|e| e.field == "gateway") {
                    @for e in errors.iter().filter(|e| e.field == "gateway") { div.error { (e.message) } }
                }
                div.fields-2 {
                    @for (name, label, hint, typed, current) in fields {
                        (percent_field(name, label, hint, typed_or(sent, "gateway", typed, current), error(name), enabled))
                    }
                }
                button type="submit" disabled[!enabled] { "Apply to the gateway" }
            }
        }
    }
}

fn consumers_card(viewer: &Viewer, s: &ChaosStatus) -> Markup {
    html! {
        section.card {
            h2 { "Consumers" }
            p.muted.small { "A paused service's consumers in this process hold their deliveries until resumed; its outbox keeps filling." }
            @if s.services.is_empty() {
                p.muted { "This process hosts no consumers." }
            } @else {
                div.table-wrap {
                    table {
                        tbody {
                            @for service in &s.services {
                                @let paused = s.state.paused.contains(service);
                                tr {
                                    td { strong { (service) } }
                                    td { @if paused { span.badge.warn { "paused" } } @else { span.badge.ok { "consuming" } } }
                                    td.num {
                                        form.inline method="post" action="/admin/chaos" {
                                            (viewer.csrf_field())
                                            input type="hidden" name="service" value=(service);
                                            @if paused {
                                                input type="hidden" name="control" value="resume";
                                                button.small type="submit" disabled[!s.enabled] { "Resume" }
                                            } @else {
                                                input type="hidden" name="control" value="pause";
                                                button.small.secondary type="submit" disabled[!s.enabled] { "Pause" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn duplicate_card(
    viewer: &Viewer,
    s: &ChaosStatus,
    sent: Option<&ChaosForm>,
    errors: &[FieldError],
) -> Markup {
    let error = errors.iter().find(|e| e.field == "duplicate_percent");
    let value = typed_or(
        sent,
        "duplicate",
        |f| &f.duplicate_percent,
        s.state.duplicate_percent,
    );
    html! {
        section.card {
            h2 { "Duplicate deliveries" }
            form method="post" action="/admin/chaos" {
                (viewer.csrf_field())
                input type="hidden" name="control" value="duplicate";
                (percent_field("duplicate_percent", "Delivered twice",
                    "Share of in-process deliveries handed to their consumer twice: the inboxes must apply each once.",
                    value, error, s.enabled))
                button type="submit" disabled[!s.enabled] { "Apply" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_back_in_the_units_they_are_typed_in() {
        assert_eq!(duration_param(Duration::from_secs(60)), "1m");
        assert_eq!(duration_param(Duration::from_secs(7200)), "2h");
        assert_eq!(duration_param(Duration::from_secs(90)), "90s");
        assert_eq!(duration_param(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_words(Duration::from_secs(15 * 60)), "15 min");
    }

    #[test]
    fn a_share_that_is_not_a_number_is_out_of_range() {
        assert_eq!(percent(""), 0);
        assert_eq!(percent(" 30 "), 30);
        assert_eq!(percent("lots"), u32::MAX);
        assert_eq!(percent("-1"), u32::MAX);
    }
}
