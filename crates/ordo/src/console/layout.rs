//! The page shell and the small components every page shares.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use ordo_http::Role;

use super::session::Viewer;
use crate::assets;

/// A navigation entry: label and path.
type NavItem = (&'static str, &'static str);

fn nav_of(role: Role) -> &'static [NavItem] {
    match role {
        Role::Customer => &[("Shop", "/shop"), ("My orders", "/orders")],
        Role::Seller => &[
            ("Orders", "/seller/orders"),
            ("Catalog & stock", "/seller/products"),
        ],
        Role::Courier => &[("Shipments", "/courier")],
        Role::Admin => &[
            ("Overview", "/admin"),
            ("Orders", "/admin/orders"),
            ("Stuck", "/admin/stuck"),
            ("Dead letters", "/admin/dead-letters"),
            ("Clients", "/admin/clients"),
            ("Chaos", "/admin/chaos"),
            ("Audit", "/admin/audit"),
        ],
    }
}

fn logo() -> Markup {
    html! {
        svg viewBox="0 0 32 32" aria-hidden="true" {
            rect width="32" height="32" rx="7" fill="#2f5bd3" {}
            circle cx="16" cy="16" r="8.5" fill="none" stroke="#fff" stroke-width="3.2" {}
            circle cx="16" cy="16" r="2.6" fill="#fff" {}
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Ordo" }
            link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("console.js")) defer {}
        }
    }
}

/// What a page shows above its content besides the navigation: banners
/// of active chaos controls on admin pages.
#[derive(Debug, Default)]
pub struct Banners {
    pub chaos: Vec<String>,
}

/// A signed-in page: header with the role's navigation, the content.
pub fn page(viewer: &Viewer, title: &str, current: &str, content: Markup) -> Markup {
    page_with(viewer, title, current, &Banners::default(), content)
}

pub fn page_with(
    viewer: &Viewer,
    title: &str,
    current: &str,
    banners: &Banners,
    content: Markup,
) -> Markup {
    let role = viewer.principal().role;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    div.topbar-inner {
                        a.brand href=(super::home_of(role)) { (logo()) "Ordo" }
                        nav aria-label="Main" {
                            ul.nav {
                                @for (label, path) in nav_of(role) {
                                    li { a href=(path) aria-current=[(*path == current).then_some("page")] { (label) } }
                                }
                            }
                        }
                        div.who {
                            span.role-tag { (role.as_str()) }
                            span.hide-sm title=(viewer.principal().client_id.to_string()) { (viewer.client_name()) }
                            form.inline method="post" action="/sign-out" {
                                (viewer.csrf_field())
                                button.secondary.small type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                @if !banners.chaos.is_empty() {
                    div.chaos-banner role="status" {
                        div.inner {
                            "Chaos is active: " (banners.chaos.join(" · ")) " — "
                            a href="/admin/chaos" { "controls" }
                        }
                    }
                }
                main #main { (content) }
                footer.foot { "Ordo " (env!("CARGO_PKG_VERSION")) " · " a href="/docs" { "API reference" } }
            }
        }
    }
}

/// A page for someone not signed in (sign-in, tracking, errors).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.topbar { div.topbar-inner { a.brand href="/" { (logo()) "Ordo" } } }
                main #main { (content) }
            }
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Markup {
    bare(
        title,
        html! {
            div.signin {
                div.card {
                    h1 { (title) }
                    p { (detail) }
                    p.muted.small { "HTTP " (status.as_u16()) }
                    p.row {
                        a.button href="/" { "Go to your start page" }
                    }
                }
            }
        },
    )
}

/// The CSS class of a status badge.
pub fn tone(status: &str) -> &'static str {
    match status {
        "delivered" | "captured" | "succeeded" | "committed" | "active" | "closed" => "ok",
        "cancelled" | "failed" | "declined" | "open" | "revoked" | "returned" => "bad",
        "pending" | "requested" | "half_open" | "partially_refunded" | "refunded" | "voided"
        | "released" | "expired" => "warn",
        _ => "info",
    }
}

pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge " (tone(status)) } { (status.replace('_', " ")) } }
}

/// An instant, machine-readable and short for people (UTC).
pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) { (at.format("%b %e, %H:%M:%S")) } }
}

/// How long ago, in words a person reads at a glance.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// A live-region marker: a dot that the script lights while the region
/// follows its stream.
pub fn live_dot(region: &str) -> Markup {
    html! { span.live-dot data-live-for=(region) title="not live" {} }
}

pub fn empty(message: &str) -> Markup {
    html! { div.card.empty { p { (message) } } }
}

/// An inline notice, e.g. after a redirect.
pub fn notice(kind: &str, message: &str) -> Markup {
    html! { div class={ "alert " (kind) } role="status" { (message) } }
}

/// Field errors of a form, listed at its top.
pub fn form_errors(errors: &[(String, String)]) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.alert.bad role="alert" {
                strong { "Please check the form." }
                ul { @for (field, message) in errors { li { code { (field) } ": " (message) } } }
            }
        }
    }
}
