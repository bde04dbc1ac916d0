//! The API reference at `/docs`: one HTML page rendered once, at start-up,
//! from the OpenAPI document, with its stylesheet and script compiled into
//! the binary, so that the reference works without any other host.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use maud::{DOCTYPE, Markup, html};

use crate::assets;
use serde_json::{Map, Value};

/// What the page may load: only this origin's stylesheet and script, and
/// requests to this origin (the "try it" panels).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Nested schemas are shown this many levels deep; deeper ones by name.
const MAX_DEPTH: usize = 4;

/// `/docs`, `/docs/reference.css` and `/docs/reference.js`.
pub fn router(api: &utoipa::openapi::OpenApi) -> anyhow::Result<Router> {
    let doc = serde_json::to_value(api).context("serialising the OpenAPI document")?;
    let page = Bytes::from(
        render(
            &doc,
            assets::version("reference.css"),
            assets::version("reference.js"),
        )
        .into_string(),
    );
    let file = |name: &'static str| {
        move |Query(v): Query<AssetVersion>, headers: HeaderMap| async move {
            assets::respond(name, v.v.as_deref(), &headers)
        }
    };
    Ok(Router::new()
        .route("/docs", get(move || async move { page_response(page) }))
        .route("/docs/reference.css", get(file("reference.css")))
        .route("/docs/reference.js", get(file("reference.js"))))
}

#[derive(serde::Deserialize)]
struct AssetVersion {
    v: Option<String>,
}

fn page_response(page: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

/// One operation of the document, with the anchor it is shown under.
struct Operation<'a> {
    anchor: String,
    method: &'static str,
    path: &'a str,
    op: &'a Value,
}

/// The document being rendered: the root, to resolve references against.
struct Doc<'a> {
    root: &'a Value,
    operations: Vec<Operation<'a>>,
}

impl<'a> Doc<'a> {
    fn new(root: &'a Value) -> Self {
        let mut operations = Vec::new();
        let mut seen = BTreeSet::new();
        if let Some(paths) = root.get("paths").and_then(Value::as_object) {
            for (path, item) in paths {
                for method in METHODS {
                    let Some(op) = item.get(method) else { continue };
                    let base = match op.get("operationId").and_then(Value::as_str) {
                        Some(id) => slug(id),
                        None => slug(&format!("{method}-{path}")),
                    };
                    let mut anchor = format!("op-{base}");
                    let mut n = 2;
                    while !seen.insert(anchor.clone()) {
                        anchor = format!("op-{base}-{n}");
                        n += 1;
                    }
                    operations.push(Operation {
                        anchor,
                        method,
                        path,
                        op,
                    });
                }
            }
        }
        Self { root, operations }
    }

    fn schemas(&self) -> Option<&'a Map<String, Value>> {
        self.root.pointer("/components/schemas")?.as_object()
    }

    /// Follows a local `$ref` (one hop at a time, a few hops at most).
    fn resolve(&self, mut value: &'a Value) -> &'a Value {
        for _ in 0..8 {
            match value
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|pointer| self.root.pointer(pointer))
            {
                Some(target) => value = target,
                None => break,
            }
        }
        value
    }

    /// Operations grouped by their first tag, in the document's tag order.
    fn by_tag(&self) -> Vec<(String, Option<&'a str>, Vec<&Operation<'a>>)> {
        let mut groups: Vec<(String, Option<&'a str>, Vec<&Operation<'a>>)> = Vec::new();
        if let Some(tags) = self.root.get("tags").and_then(Value::as_array) {
            for tag in tags {
                if let Some(name) = tag.get("name").and_then(Value::as_str) {
                    let description = tag.get("description").and_then(Value::as_str);
                    groups.push((name.to_owned(), description, Vec::new()));
                }
            }
        }
        for op in &self.operations {
            let tag = op
                .op
                .get("tags")
                .and_then(|t| t.get(0))
                .and_then(Value::as_str)
                .unwrap_or("other");
            match groups.iter_mut().find(|(name, _, _)| name == tag) {
                Some((_, _, ops)) => ops.push(op),
                None => groups.push((tag.to_owned(), None, vec![op])),
            }
        }
        groups.retain(|(_, _, ops)| !ops.is_empty());
        groups
    }
}

fn render(root: &Value, css_version: &str, js_version: &str) -> Markup {
    let doc = Doc::new(root);
    let info = root.get("info");
    let title = str_at(info, "title").unwrap_or("API reference");
    let version = str_at(info, "version");
    let groups = doc.by_tag();
    let schemas = doc.schemas();
    let used_by = schema_users(&doc);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " — reference" }
                link rel="stylesheet" href={ "/docs/reference.css?v=" (css_version) };
                script src={ "/docs/reference.js?v=" (js_version) } defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                div.layout {
                    nav.toc aria-label="Table of contents" {
                        details #toc-details open {
                            summary.toc-toggle { "Contents" }
                            p.toc-title { a href="#top" { (title) } }
                            @for (tag, _, ops) in &groups {
                                h2 { a href={ "#tag-" (slug(tag)) } { (tag) } }
                                ul {
                                    @for op in ops {
                                        li {
                                            a href={ "#" (op.anchor) } {
                                                (method_badge(op.method))
                                                span.toc-path { (breakable_path(op.path)) }
                                            }
                                        }
                                    }
                                }
                            }
                            @if let Some(schemas) = schemas {
                                details.toc-schemas {
                                    summary { "Schemas " span.count { "(" (schemas.len()) ")" } }
                                    ul {
                                        @for name in schemas.keys() {
                                            li { a href={ "#" (schema_anchor(name)) } { code { (name) } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    main #content tabindex="-1" {
                        header #top .intro {
                            h1 { (title) @if let Some(v) = version { " " span.version { "v" (v) } } }
                            @if let Some(d) = str_at(info, "description") { (prose(d)) }
                            p.links {
                                a href="/openapi.json" { "OpenAPI document (JSON)" }
                                @if let Some(license) = info.and_then(|i| i.get("license")).and_then(|l| l.get("name")).and_then(Value::as_str) {
                                    " · License: " (license)
                                }
                            }
                            (auth_section(root))
                            div.token-bar hidden {
                                label for="try-token" { "Bearer token for “Try it”" }
                                input #try-token type="password" autocomplete="off" spellcheck="false"
                                    placeholder="paste an access token, or get one from POST /oauth/token";
                                button #try-token-clear type="button" { "Clear" }
                            }
                        }
                        @for (tag, description, ops) in &groups {
                            section.tag aria-labelledby={ "tag-" (slug(tag)) } {
                                h2 #{ "tag-" (slug(tag)) } { (tag) }
                                @if let Some(d) = description { (prose(d)) }
                                @for op in ops { (operation(&doc, op)) }
                            }
                        }
                        @if let Some(schemas) = schemas {
                            section.schemas aria-labelledby="schemas" {
                                h2 #schemas { "Schemas" }
                                @for (name, schema) in schemas {
                                    (schema_section(&doc, name, schema, used_by.get(name.as_str())))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The security schemes of the document, explained once.
fn auth_section(root: &Value) -> Markup {
    let Some(schemes) = root
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return html! {};
    };
    html! {
        section.auth #authentication aria-labelledby="authentication-title" {
            h2 #authentication-title { "Authentication" }
            dl {
                @for (name, scheme) in schemes {
                    dt { code { (name) } }
                    dd {
                        (scheme_label(scheme))
                        @if let Some(d) = scheme.get("description").and_then(Value::as_str) { (prose(d)) }
                    }
                }
            }
        }
    }
}

fn scheme_label(scheme: &Value) -> String {
    let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "http" => {
            let s = scheme.get("scheme").and_then(Value::as_str).unwrap_or("");
            match (
                s.to_ascii_lowercase().as_str(),
                scheme.get("bearerFormat").and_then(Value::as_str),
            ) {
                ("bearer", Some(f)) => format!("Bearer token ({f}) in the Authorization header"),
                ("bearer", None) => "Bearer token in the Authorization header".to_owned(),
                ("basic", _) => "HTTP Basic authentication".to_owned(),
                (other, _) => format!("HTTP {other} authentication"),
            }
        }
        "apiKey" => format!(
            "API key in the {} `{}`",
            scheme.get("in").and_then(Value::as_str).unwrap_or("header"),
            scheme.get("name").and_then(Value::as_str).unwrap_or("")
        ),
        "oauth2" => "OAuth 2".to_owned(),
        "openIdConnect" => "OpenID Connect".to_owned(),
        other => other.to_owned(),
    }
}

fn operation(doc: &Doc<'_>, op: &Operation<'_>) -> Markup {
    let o = op.op;
    let params = parameters(doc, op);
    let body = o.get("requestBody").map(|b| doc.resolve(b));
    let deprecated = o.get("deprecated").and_then(Value::as_bool) == Some(true);
    html! {
        article.op #(op.anchor) aria-labelledby={ (op.anchor) "-title" } {
            h3.op-title #{ (op.anchor) "-title" } {
                (method_badge(op.method))
                " "
                code.path { (path_markup(op.path)) }
                @if deprecated { " " span.deprecated { "deprecated" } }
                a.anchor href={ "#" (op.anchor) } aria-label="Link to this operation" { "#" }
            }
            @if let Some(s) = o.get("summary").and_then(Value::as_str) { div.summary { (prose(s)) } }
            @if let Some(d) = o.get("description").and_then(Value::as_str) { (prose(d)) }
            (security(doc, o))
            @if !params.is_empty() {
                h4 { "Parameters" }
                div.table-wrap {
                    table.params {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "In" } th scope="col" { "Type" } th scope="col" { "Description" } } }
                        tbody {
                            @for p in &params {
                                @let schema = p.get("schema").unwrap_or(&Value::Null);
                                tr {
                                    th scope="row" {
                                        code { (str_at(Some(p), "name").unwrap_or("")) }
                                        @if p.get("required").and_then(Value::as_bool) == Some(true) {
                                            " " span.required title="required" { "required" }
                                        }
                                    }
                                    td.in { (str_at(Some(p), "in").unwrap_or("")) }
                                    td.type-cell { (type_label(schema)) }
                                    td {
                                        @if let Some(d) = p.get("description").and_then(Value::as_str) { (prose(d)) }
                                        (facts(doc, schema))
                                        @if let Some(e) = p.get("example") { p.example { "Example: " code { (compact(e)) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = body { (request_body(doc, body)) }
            (responses(doc, o))
            (try_it(doc, op, &params, body))
        }
    }
}

/// The operation's parameters with those of its path item, resolved.
fn parameters<'a>(doc: &Doc<'a>, op: &Operation<'a>) -> Vec<&'a Value> {
    let own = op.op.get("parameters").and_then(Value::as_array);
    let shared = doc
        .root
        .get("paths")
        .and_then(|p| p.get(op.path))
        .and_then(|item| item.get("parameters"))
        .and_then(Value::as_array);
    let mut out: Vec<&Value> = own.into_iter().flatten().map(|p| doc.resolve(p)).collect();
    for p in shared.into_iter().flatten().map(|p| doc.resolve(p)) {
        let key = (p.get("name"), p.get("in"));
        if !out.iter().any(|o| (o.get("name"), o.get("in")) == key) {
            out.push(p);
        }
    }
    out
}

fn security(doc: &Doc<'_>, op: &Value) -> Markup {
    let requirements = op
        .get("security")
        .or_else(|| doc.root.get("security"))
        .and_then(Value::as_array);
    let schemes = doc.root.pointer("/components/securitySchemes");
    let Some(requirements) = requirements.filter(|r| !r.is_empty()) else {
        return html! { p.security { span.label { "Authentication" } " none" } };
    };
    html! {
        p.security {
            span.label { "Authentication" }
            @for (i, req) in requirements.iter().enumerate() {
                @if i > 0 { " or " }
                @match req.as_object() {
                    Some(req) if req.is_empty() => { " optional" }
                    Some(req) => {
                        @for (j, (name, scopes)) in req.iter().enumerate() {
                            @if j > 0 { " and " }
                            " "
                            a href="#authentication" {
                                (schemes.and_then(|s| s.get(name)).map(scheme_label).unwrap_or_else(|| name.clone()))
                            }
                            @let scopes: Vec<&str> = scopes.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                            @if !scopes.is_empty() {
                                " · roles: "
                                @for (k, s) in scopes.iter().enumerate() {
                                    @if k > 0 { ", " }
                                    code { (s) }
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
        }
    }
}

fn request_body(doc: &Doc<'_>, body: &Value) -> Markup {
    let required = body.get("required").and_then(Value::as_bool) == Some(true);
    let content = body.get("content").and_then(Value::as_object);
    html! {
        h4 { "Request body" @if required { " " span.required { "required" } } }
        @if let Some(d) = body.get("description").and_then(Value::as_str) { (prose(d)) }
        @for (media, m) in content.into_iter().flatten() {
            @let schema = m.get("schema").unwrap_or(&Value::Null);
            div.media {
                p { code.media-type { (media) } " " (type_label(schema)) }
                (schema_body(doc, doc.resolve(schema), 0))
                @let example = m.get("example").cloned().unwrap_or_else(|| example_of(doc, schema, 0));
                @if !example.is_null() {
                    details.example-block {
                        summary { "Example" }
                        pre { code { (pretty(&example)) } }
                    }
                }
            }
        }
    }
}

fn responses(doc: &Doc<'_>, op: &Value) -> Markup {
    let Some(responses) = op.get("responses").and_then(Value::as_object) else {
        return html! {};
    };
    html! {
        h4 { "Responses" }
        div.table-wrap {
            table.responses {
                thead { tr { th scope="col" { "Status" } th scope="col" { "Description" } th scope="col" { "Body" } } }
                tbody {
                    @for (status, response) in responses {
                        @let response = doc.resolve(response);
                        @let description = response.get("description").and_then(Value::as_str).filter(|d| !d.is_empty());
                        tr {
                            th scope="row" { span class={ "status status-" (status.chars().next().unwrap_or('x')) } { (status) } }
                            td {
                                @match description {
                                    Some(d) => (prose(d)),
                                    None => (reason(status)),
                                }
                                @if let Some(headers) = response.get("headers").and_then(Value::as_object) {
                                    p.headers {
                                        "Headers: "
                                        @for (i, (name, h)) in headers.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            code { (name) }
                                            @if let Some(s) = h.get("schema") { " " (type_label(s)) }
                                        }
                                    }
                                }
                            }
                            td {
                                @match response.get("content").and_then(Value::as_object).filter(|c| !c.is_empty()) {
                                    Some(content) => {
                                        @for (media, m) in content {
                                            div.media-line {
                                                code.media-type { (media) }
                                                @if let Some(s) = m.get("schema") { " " (type_label(s)) }
                                            }
                                        }
                                    }
                                    None => { span.muted { "no body" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn reason(status: &str) -> String {
    match status
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        Some(code) => code.canonical_reason().unwrap_or("").to_owned(),
        None if status == "default" => "Any other status".to_owned(),
        None => String::new(),
    }
}

/// A form to send the operation from the page; hidden until the script
/// runs, since it does nothing without it.
fn try_it(doc: &Doc<'_>, op: &Operation<'_>, params: &[&Value], body: Option<&Value>) -> Markup {
    let media = body
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
        .and_then(|c| c.iter().next());
    let secured = op
        .op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    // Templated parameter names (`attr.{key}`) are not sent as they are.
    let fields: Vec<&Value> = params
        .iter()
        .copied()
        .filter(|p| {
            matches!(
                p.get("in").and_then(Value::as_str),
                Some("path" | "query" | "header")
            ) && !str_at(Some(p), "name").unwrap_or("{").contains('{')
        })
        .collect();
    let example = media.map(|(media, m)| {
        let value = m
            .get("example")
            .cloned()
            .unwrap_or_else(|| example_of(doc, m.get("schema").unwrap_or(&Value::Null), 0));
        if media.contains("x-www-form-urlencoded") {
            form_encoded(&value)
        } else {
            pretty(&value)
        }
    });
    let id = &op.anchor;
    html! {
        details.try hidden {
            summary { "Try it" }
            form.try-form data-method=(op.method.to_ascii_uppercase()) data-path=(op.path)
                data-auth=(if secured { "bearer" } else { "none" })
                data-content-type=[media.map(|(m, _)| m.as_str())] {
                @for p in &fields {
                    @let name = str_at(Some(p), "name").unwrap_or("");
                    @let place = str_at(Some(p), "in").unwrap_or("");
                    @let field = format!("{id}-{place}-{}", slug(name));
                    @let required = p.get("required").and_then(Value::as_bool) == Some(true);
                    div.field {
                        label for=(field) { code { (name) } " " span.muted { (place) } @if required { " " span.required { "required" } } }
                        input #(field) type="text" data-in=(place) data-name=(name) required[required]
                            autocomplete="off" spellcheck="false"
                            placeholder=[p.get("example").map(compact)];
                    }
                }
                @if let Some(example) = &example {
                    div.field {
                        label for={ (id) "-body" } { "Body " span.muted { (media.map(|(m, _)| m.as_str()).unwrap_or("")) } }
                        textarea #{ (id) "-body" } data-in="body" rows=(example.lines().count().clamp(3, 16)) spellcheck="false" { (example) }
                    }
                }
                div.try-actions {
                    button type="submit" { "Send " (op.method.to_ascii_uppercase()) }
                    @if secured { span.muted { "with the bearer token above" } }
                }
                output.try-result aria-live="polite" {}
            }
        }
    }
}

fn schema_section(
    doc: &Doc<'_>,
    name: &str,
    schema: &Value,
    used_by: Option<&Users<'_>>,
) -> Markup {
    let anchor = schema_anchor(name);
    html! {
        article.schema #(anchor) aria-labelledby={ (anchor) "-title" } {
            h3 #{ (anchor) "-title" } {
                code { (name) }
                " " span.schema-type { (type_label(schema)) }
                a.anchor href={ "#" (anchor) } aria-label="Link to this schema" { "#" }
            }
            @if let Some(d) = schema.get("description").and_then(Value::as_str) { (prose(d)) }
            (facts(doc, schema))
            (schema_body(doc, schema, 0))
            @if let Some(e) = first_example(schema) {
                p.example { "Example: " code { (compact(e)) } }
            }
            @if let Some(users) = used_by {
                @if !users.operations.is_empty() {
                    p.used-by {
                        "Used by "
                        @for (i, op) in users.operations.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "#" (op.anchor) } { (method_badge(op.method)) " " code { (op.path) } }
                        }
                    }
                }
                @if !users.schemas.is_empty() {
                    p.used-by {
                        "Part of "
                        @for (i, s) in users.schemas.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "#" (schema_anchor(s)) } { code { (s) } }
                        }
                    }
                }
            }
        }
    }
}

/// What an object's fields are, or an enum's values; nothing for scalars
/// (their type and facts say it all).
fn schema_body(doc: &Doc<'_>, schema: &Value, depth: usize) -> Markup {
    if depth > MAX_DEPTH {
        return html! {};
    }
    let (props, required) = object_fields(doc, schema);
    if !props.is_empty() {
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        return html! {
            div.table-wrap {
                table.fields {
                    thead { tr { th scope="col" { "Field" } th scope="col" { "Type" } th scope="col" { "Description" } } }
                    tbody {
                        @for (name, prop) in &props {
                            tr {
                                th scope="row" {
                                    code { (name) }
                                    @if required.contains(name.as_str()) { " " span.required title="required" { "required" } }
                                }
                                td.type-cell { (type_label(prop)) }
                                td {
                                    @if let Some(d) = prop.get("description").and_then(Value::as_str) { (prose(d)) }
                                    (facts(doc, prop))
                                    @if let Some(e) = first_example(prop) { p.example { "Example: " code { (compact(e)) } } }
                                    @if prop.get("$ref").is_none() { (schema_body(doc, inline_item(prop), depth + 1)) }
                                }
                            }
                        }
                    }
                }
            }
            @if closed { p.muted.closed { "No other fields are accepted." } }
        };
    }
    let variants: Vec<&Value> = ["oneOf", "anyOf"]
        .iter()
        .filter_map(|key| schema.get(*key).and_then(Value::as_array))
        .flatten()
        .filter(|v| v.get("$ref").is_none() && !is_null_type(v))
        .filter(|v| !object_fields(doc, v).0.is_empty())
        .collect();
    html! {
        @for (i, variant) in variants.iter().enumerate() {
            div.variant {
                p.variant-title {
                    @match discriminator(variant) {
                        Some((field, value)) => { "When " code { (field) } " is " code { (value) } }
                        None => { "Shape " (i + 1) }
                    }
                }
                @if let Some(d) = variant.get("description").and_then(Value::as_str) { (prose(d)) }
                (schema_body(doc, variant, depth + 1))
            }
        }
    }
}

/// The field that tells an alternative from the others: one that can hold
/// a single value (serde's tagged enums).
fn discriminator(variant: &Value) -> Option<(&str, String)> {
    let props = variant.get("properties")?.as_object()?;
    props.iter().find_map(|(name, p)| {
        let value = p.get("const").or_else(|| {
            p.get("enum")
                .and_then(Value::as_array)
                .filter(|e| e.len() == 1)
                .and_then(|e| e.first())
        })?;
        Some((name.as_str(), scalar(value)))
    })
}

/// For an inline array, its item schema; otherwise the schema itself.
fn inline_item(schema: &Value) -> &Value {
    match schema.get("items") {
        Some(items) if items.get("$ref").is_none() => items,
        _ => schema,
    }
}

/// The fields of an object schema, with those of the schemas it is
/// composed of (`allOf`), and which of them are required.
fn object_fields<'a>(
    doc: &Doc<'a>,
    schema: &'a Value,
) -> (Vec<(String, &'a Value)>, BTreeSet<&'a str>) {
    let mut props = Vec::new();
    let mut required = BTreeSet::new();
    collect_fields(doc, schema, &mut props, &mut required, 0);
    (props, required)
}

fn collect_fields<'a>(
    doc: &Doc<'a>,
    schema: &'a Value,
    props: &mut Vec<(String, &'a Value)>,
    required: &mut BTreeSet<&'a str>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            collect_fields(doc, doc.resolve(part), props, required, depth + 1);
        }
    }
    if let Some(own) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in own {
            if !props.iter().any(|(n, _)| n == name) {
                props.push((name.clone(), prop));
            }
        }
    }
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        required.insert(name);
    }
}

/// A short type: `string (date-time)`, a link to a named schema,
/// `array of …`, alternatives, with `| null` when it may be null.
fn type_label(schema: &Value) -> Markup {
    type_label_at(schema, 0)
}

fn type_label_at(schema: &Value, depth: usize) -> Markup {
    if depth > MAX_DEPTH {
        return html! { span.type { "…" } };
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return html! { a.type-ref href={ "#" (schema_anchor(name)) } { (name) } };
    }
    for (key, sep) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " & ")] {
        if let Some(parts) = schema.get(key).and_then(Value::as_array) {
            let nullable = parts.iter().any(is_null_type);
            let parts: Vec<&Value> = parts.iter().filter(|p| !is_null_type(p)).collect();
            let shapes = parts
                .iter()
                .filter(|p| p.get("properties").is_some())
                .count();
            if key != "allOf" && shapes > 1 {
                return html! {
                    span.type {
                        "one of " (parts.len()) " shapes"
                        @if nullable { span.null { " | null" } }
                    }
                };
            }
            return html! {
                span.type {
                    @for (i, part) in parts.iter().enumerate() {
                        @if i > 0 { (sep) }
                        (type_label_at(part, depth + 1))
                    }
                    @if nullable { span.null { " | null" } }
                }
            };
        }
    }
    let (types, nullable) = types_of(schema);
    let format = schema.get("format").and_then(Value::as_str);
    html! {
        span.type {
            @if types.is_empty() {
                @if schema.get("properties").is_some() { "object" }
                @else if schema.get("enum").is_some() || schema.get("const").is_some() { "value" }
                @else { "any JSON" }
            }
            @for (i, t) in types.iter().enumerate() {
                @if i > 0 { " | " }
                @match *t {
                    "array" => {
                        "array of "
                        (schema.get("items").map(|items| type_label_at(items, depth + 1)).unwrap_or_else(|| html! { "any" }))
                    }
                    "object" => {
                        @match schema.get("additionalProperties") {
                            Some(extra) if extra.is_object() && schema.get("properties").is_none() => {
                                "map of string → " (type_label_at(extra, depth + 1))
                            }
                            _ => { "object" }
                        }
                    }
                    other => { (other) }
                }
            }
            @if let Some(f) = format { " " span.format { "(" (f) ")" } }
            @if nullable { span.null { " | null" } }
        }
    }
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The non-null types of a schema and whether it admits null.
fn types_of(schema: &Value) -> (Vec<&str>, bool) {
    let mut types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null") || schema.get("nullable") == Some(&Value::Bool(true));
    types.retain(|t| *t != "null");
    (types, nullable)
}

/// Constraints and notes: enum values, bounds, lengths, pattern, default.
fn facts(doc: &Doc<'_>, schema: &Value) -> Markup {
    let mut items: Vec<Markup> = Vec::new();
    let target = if schema.get("$ref").is_some() {
        // A named schema's facts are shown with it; enums are worth repeating.
        let resolved = doc.resolve(schema);
        if resolved.get("enum").is_none() {
            return html! {};
        }
        resolved
    } else {
        schema
    };
    if let Some(values) = target
        .get("enum")
        .and_then(Value::as_array)
        .filter(|e| e.len() > 1)
    {
        items.push(html! {
            "One of: "
            @for (i, v) in values.iter().enumerate() {
                @if i > 0 { ", " }
                code { (scalar(v)) }
            }
        });
    }
    let single = target
        .get("enum")
        .and_then(Value::as_array)
        .filter(|e| e.len() == 1)
        .and_then(|e| e.first());
    if let Some(v) = target.get("const").or(single) {
        items.push(html! { "Always " code { (scalar(v)) } });
    }
    let bound = |key: &str| target.get(key).map(compact);
    for (key, label) in [
        ("minimum", "≥ "),
        ("exclusiveMinimum", "> "),
        ("maximum", "≤ "),
        ("exclusiveMaximum", "< "),
    ] {
        if let Some(v) = bound(key) {
            items.push(html! { (label) code { (v) } });
        }
    }
    for (key, label) in [
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
    ] {
        if let Some(v) = bound(key) {
            items.push(html! { (label.replace("{}", &v)) });
        }
    }
    if target.get("uniqueItems") == Some(&Value::Bool(true)) {
        items.push(html! { "unique items" });
    }
    if let Some(p) = target.get("pattern").and_then(Value::as_str) {
        items.push(html! { "Pattern " code { (p) } });
    }
    if let Some(d) = target.get("default") {
        items.push(html! { "Default " code { (compact(d)) } });
    }
    if target.get("readOnly") == Some(&Value::Bool(true)) {
        items.push(html! { "read-only" });
    }
    if target.get("writeOnly") == Some(&Value::Bool(true)) {
        items.push(html! { "write-only" });
    }
    if target.get("deprecated") == Some(&Value::Bool(true)) {
        items.push(html! { span.deprecated { "deprecated" } });
    }
    if items.is_empty() {
        return html! {};
    }
    html! {
        ul.facts {
            @for item in items { li { (item) } }
        }
    }
}

fn first_example(schema: &Value) -> Option<&Value> {
    schema
        .get("example")
        .or_else(|| schema.get("examples").and_then(|e| e.get(0)))
}

/// A plausible value for a schema, for the request body examples: the
/// schema's own example when it has one, else one made from its type.
fn example_of(doc: &Doc<'_>, schema: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH + 2 {
        return Value::Null;
    }
    if let Some(e) = first_example(schema) {
        return e.clone();
    }
    if schema.get("$ref").is_some() {
        return example_of(doc, doc.resolve(schema), depth + 1);
    }
    if let Some(v) = schema
        .get("default")
        .or_else(|| schema.get("const"))
        .or_else(|| schema.get("enum").and_then(|e| e.get(0)))
    {
        return v.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(parts) = schema.get(key).and_then(Value::as_array) {
            return parts
                .iter()
                .find(|p| !is_null_type(p))
                .map(|p| example_of(doc, p, depth + 1))
                .unwrap_or(Value::Null);
        }
    }
    let (props, required) = object_fields(doc, schema);
    if !props.is_empty() {
        // Required fields, and the optional ones that show an example.
        let all = required.is_empty();
        let mut out = Map::new();
        for (name, prop) in props {
            if all || required.contains(name.as_str()) || first_example(prop).is_some() {
                out.insert(name, example_of(doc, prop, depth + 1));
            }
        }
        return Value::Object(out);
    }
    let (types, _) = types_of(schema);
    match types.first().copied() {
        Some("string") => Value::String(
            match schema.get("format").and_then(Value::as_str) {
                Some("date-time") => "2025-01-01T12:00:00Z",
                Some("date") => "2025-01-01",
                Some("uuid") => "00000000-0000-0000-0000-000000000000",
                Some("email") => "user@example.com",
                _ => "string",
            }
            .to_owned(),
        ),
        Some("integer" | "number") => schema.get("minimum").cloned().unwrap_or(Value::from(0)),
        Some("boolean") => Value::Bool(true),
        Some("array") => Value::Array(
            schema
                .get("items")
                .map(|items| vec![example_of(doc, items, depth + 1)])
                .unwrap_or_default(),
        ),
        Some("object") => Value::Object(Map::new()),
        _ if depth > 0 => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

/// For each named schema, the operations and schemas that name it.
struct Users<'a> {
    operations: Vec<&'a Operation<'a>>,
    schemas: BTreeSet<&'a str>,
}

fn schema_users<'a>(doc: &'a Doc<'a>) -> BTreeMap<&'a str, Users<'a>> {
    let mut out: BTreeMap<&'a str, Users<'a>> = BTreeMap::new();
    for op in &doc.operations {
        let mut names = BTreeSet::new();
        refs_in(op.op, &mut names);
        for name in names {
            let u = out.entry(name).or_insert_with(Users::empty);
            u.operations.push(op);
        }
    }
    if let Some(schemas) = doc.schemas() {
        for (owner, schema) in schemas {
            let mut names = BTreeSet::new();
            refs_in(schema, &mut names);
            for name in names.into_iter().filter(|n| *n != owner) {
                out.entry(name)
                    .or_insert_with(Users::empty)
                    .schemas
                    .insert(owner);
            }
        }
    }
    out
}

impl Users<'_> {
    fn empty() -> Self {
        Self {
            operations: Vec::new(),
            schemas: BTreeSet::new(),
        }
    }
}

/// The names of the component schemas a value refers to.
fn refs_in<'a>(value: &'a Value, names: &mut BTreeSet<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            names.insert(name);
                        }
                    }
                    _ => refs_in(v, names),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs_in(v, names)),
        _ => {}
    }
}

fn method_badge(method: &str) -> Markup {
    html! {
        span class={ "method method-" (method) } { (method.to_ascii_uppercase()) }
    }
}

/// A path that may wrap after its slashes (narrow sidebars).
fn breakable_path(path: &str) -> Markup {
    html! {
        @for (i, segment) in path.split('/').enumerate() {
            @if i > 0 { "/" wbr; }
            (segment)
        }
    }
}

/// A path with its `{parameters}` set apart.
fn path_markup(path: &str) -> Markup {
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        parts.push((false, &rest[..start]));
        parts.push((true, &rest[start..=start + len]));
        rest = &rest[start + len + 1..];
    }
    parts.push((false, rest));
    html! {
        @for (param, text) in parts {
            @if param { span.path-param { (text) } } @else { (text) }
        }
    }
}

/// Markdown-ish prose: paragraphs, `-` lists and fenced code blocks, with
/// `code` spans; everything else is plain, escaped text.
fn prose(text: &str) -> Markup {
    html! {
        @for block in blocks(text) {
            @match block {
                Block::Para(p) => p { (inline(&p)) },
                Block::List(items) => ul { @for item in items { li { (inline(&item)) } } },
                Block::Code(code) => pre { code { (code) } },
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Block {
    Para(String),
    List(Vec<String>),
    Code(String),
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("```") {
            let mut code = Vec::new();
            for l in lines.by_ref() {
                if l.trim().starts_with("```") {
                    break;
                }
                code.push(l);
            }
            out.push(Block::Code(code.join("\n")));
        } else if let Some(first) = list_item(trimmed) {
            let mut items = vec![first.to_owned()];
            while let Some(next) = lines.peek().map(|l| l.trim()) {
                if next.is_empty() || next.starts_with("```") {
                    break;
                }
                match list_item(next) {
                    Some(item) => items.push(item.to_owned()),
                    None => {
                        if let Some(last) = items.last_mut() {
                            last.push(' ');
                            last.push_str(next);
                        }
                    }
                }
                lines.next();
            }
            out.push(Block::List(items));
        } else {
            let mut para = trimmed.trim_start_matches('#').trim_start().to_owned();
            while let Some(next) = lines.peek().map(|l| l.trim()) {
                if next.is_empty() || next.starts_with("```") || list_item(next).is_some() {
                    break;
                }
                para.push(' ');
                para.push_str(next);
                lines.next();
            }
            out.push(Block::Para(para));
        }
    }
    out
}

fn list_item(line: &str) -> Option<&str> {
    line.strip_prefix("- ").or_else(|| line.strip_prefix("* "))
}

/// Text with its `code` spans; an unpaired backtick stays as it is.
fn inline(text: &str) -> Markup {
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        parts.push((false, &rest[..start]));
        parts.push((true, &rest[start + 1..start + 1 + len]));
        rest = &rest[start + 2 + len..];
    }
    parts.push((false, rest));
    html! {
        @for (code, text) in parts {
            @if code { code { (text) } } @else { (text) }
        }
    }
}

fn schema_anchor(name: &str) -> String {
    format!("schema-{}", slug(name))
}

/// An anchor-safe form of a name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn str_at<'a>(value: Option<&'a Value>, key: &str) -> Option<&'a str> {
    value?.get(key)?.as_str()
}

/// A JSON value as a string: strings bare, everything else as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compact(value: &Value) -> String {
    value.to_string()
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn form_encoded(value: &Value) -> String {
    let Some(fields) = value.as_object() else {
        return String::new();
    };
    fields
        .iter()
        .map(|(name, v)| format!("{}={}", percent(name), percent(&scalar(v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn page(doc: &Value) -> String {
        render(doc, "1", "2").into_string()
    }

    fn sample() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "Shop <API>", "version": "1.0", "description": "Sells `things` & more.\n\nSecond paragraph."},
            "tags": [{"name": "items", "description": "Items <b>bold</b>"}],
            "paths": {
                "/v1/items/{id}": {
                    "get": {
                        "tags": ["items"],
                        "operationId": "get_item",
                        "summary": "One item.",
                        "parameters": [
                            {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                            {"name": "limit", "in": "query", "schema": {"type": ["integer", "null"], "format": "int32", "minimum": 1, "maximum": 200}}
                        ],
                        "responses": {
                            "200": {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}},
                            "404": {"description": "", "content": {"application/problem+json": {"schema": {"type": "object"}}}}
                        },
                        "security": [{"bearer": ["admin"]}]
                    },
                    "put": {
                        "operationId": "put_item",
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}},
                        "responses": {"204": {"description": "Stored."}}
                    }
                }
            },
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
                "schemas": {
                    "Item": {
                        "type": "object",
                        "description": "An item for sale.",
                        "required": ["name", "kind"],
                        "properties": {
                            "name": {"type": "string", "example": "mug"},
                            "kind": {"$ref": "#/components/schemas/Kind"},
                            "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Kind"}},
                            "note": {"type": ["string", "null"], "description": "Free <i>text</i>.", "maxLength": 80},
                            "dims": {"type": "object", "required": ["w"], "properties": {"w": {"type": "integer"}}}
                        },
                        "additionalProperties": false
                    },
                    "Kind": {"type": "string", "enum": ["plain", "fancy"]}
                }
            }
        })
    }

    #[test]
    fn everything_from_the_document_is_escaped() {
        let mut doc = sample();
        doc["info"]["title"] = json!("<script>alert(1)</script>");
        doc["paths"]["/v1/items/{id}"]["get"]["summary"] =
            json!("Use `<img src=x onerror=y>` \"here\"");
        let html = page(&doc);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<img"));
        assert!(html.contains("<code>&lt;img src=x onerror=y&gt;</code> &quot;here&quot;"));
        assert!(html.contains("Items &lt;b&gt;bold&lt;/b&gt;"));
        assert!(html.contains("Free &lt;i&gt;text&lt;/i&gt;."));
    }

    #[test]
    fn operations_show_parameters_security_and_responses() {
        let html = page(&sample());
        assert!(
            html.contains(r##"<a href="#op-get_item">"##),
            "in the table of contents"
        );
        assert!(html.contains(r#"id="op-get_item""#));
        assert!(html.contains(r#"<span class="method method-get">GET</span>"#));
        assert!(html.contains(r#"/v1/items/<span class="path-param">{id}</span>"#));
        assert!(html.contains("Bearer token (JWT)"));
        assert!(html.contains("roles: <code>admin</code>"));
        assert!(html.contains("<code>limit</code>"));
        assert!(html.contains("int32"));
        assert!(html.contains("≥ <code>1</code>") && html.contains("≤ <code>200</code>"));
        assert!(html.contains(r#"<span class="status status-4">404</span>"#));
        assert!(
            html.contains("Not Found"),
            "an empty description falls back to the reason"
        );
        assert!(html.contains("Stored."));
        assert!(html.contains("no body"));
        assert!(html.contains("/openapi.json"));
        assert!(
            html.contains(r#"<h2 id="tag-other">other</h2>"#),
            "untagged operations are kept"
        );
    }

    #[test]
    fn schemas_show_fields_types_enums_and_links() {
        let html = page(&sample());
        assert!(html.contains(r#"id="schema-Item""#));
        assert!(html.contains(r##"<a class="type-ref" href="#schema-Kind">Kind</a>"##));
        assert!(html.contains(r##"array of <a class="type-ref" href="#schema-Kind">Kind</a>"##));
        assert!(html.contains("One of: <code>plain</code>, <code>fancy</code>"));
        assert!(html.contains(r#"<span class="null"> | null</span>"#));
        assert!(html.contains("at most 80 characters"));
        assert!(html.contains(r#"Example: <code>&quot;mug&quot;</code>"#));
        assert!(html.contains("No other fields are accepted."));
        // The nested inline object gets its own table.
        assert!(html.contains("<code>w</code>"));
        // Required marks: name and kind, not note.
        let item = &html[html.find(r#"id="schema-Item""#).unwrap()..];
        let row = |field: &str| {
            let start = item.find(&format!("<code>{field}</code>")).unwrap();
            &item[start..start + item[start..].find("</th>").unwrap()]
        };
        assert!(row("name").contains("required"));
        assert!(row("kind").contains("required"));
        assert!(!row("note").contains("required"));
        // Links back to what uses a schema.
        let kind = &html[html.find(r#"id="schema-Kind""#).unwrap()..];
        assert!(kind.contains(r##"Part of <a href="#schema-Item">"##));
        assert!(item.contains(r##"Used by <a href="#op-get_item">"##));
    }

    #[test]
    fn tagged_alternatives_show_each_shape() {
        let mut doc = sample();
        doc["components"]["schemas"]["Cause"] = json!({
            "description": "Why.",
            "oneOf": [
                {"type": "object", "required": ["kind", "ids"], "properties": {
                    "kind": {"type": "string", "enum": ["dead_letter"]},
                    "ids": {"type": "array", "items": {"type": "string"}}}},
                {"type": "object", "required": ["kind"], "properties": {
                    "kind": {"type": "string", "enum": ["breaker_open"]},
                    "breaker": {"type": "string", "description": "open or half_open."}}}
            ]
        });
        let html = page(&doc);
        let cause = &html[html.find(r#"id="schema-Cause""#).unwrap()..];
        assert!(cause.contains("one of 2 shapes"));
        assert!(cause.contains("When <code>kind</code> is <code>dead_letter</code>"));
        assert!(cause.contains("When <code>kind</code> is <code>breaker_open</code>"));
        assert!(cause.contains("open or half_open."));
        assert!(cause.contains("Always <code>breaker_open</code>"));
    }

    #[test]
    fn request_bodies_get_an_example_from_their_schema() {
        let doc = sample();
        let d = Doc::new(&doc);
        let example = example_of(&d, &json!({"$ref": "#/components/schemas/Item"}), 0);
        assert_eq!(
            example,
            json!({"name": "mug", "kind": "plain"}),
            "required fields and those with an example"
        );
        let html = page(&doc);
        assert!(html.contains(r#"data-method="PUT""#));
        assert!(html.contains("&quot;kind&quot;: &quot;plain&quot;"));
    }

    #[test]
    fn prose_keeps_paragraphs_lists_and_code() {
        assert_eq!(
            blocks("One\nline.\n\n- a\n  continued\n- `b`\n\n```\nx < y\n```\nEnd."),
            vec![
                Block::Para("One line.".into()),
                Block::List(vec!["a continued".into(), "`b`".into()]),
                Block::Code("x < y".into()),
                Block::Para("End.".into()),
            ]
        );
        assert_eq!(
            inline("a `b` c ` d").into_string(),
            "a <code>b</code> c ` d"
        );
    }

    #[test]
    fn the_page_refers_to_no_other_host() {
        let mut doc = sample();
        doc["info"]["license"] = json!({"name": "MIT", "url": "https://example.com/license"});
        doc["externalDocs"] = json!({"url": "https://example.com/docs"});
        let html = page(&doc);
        for attr in ["href=\"", "src=\"", "action=\""] {
            for value in html.split(attr).skip(1) {
                let value = &value[..value.find('"').unwrap()];
                assert!(
                    value.starts_with('#') || (value.starts_with('/') && !value.starts_with("//")),
                    "{attr}{value}"
                );
            }
        }
    }
}
