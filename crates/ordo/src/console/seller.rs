//! The seller's console: the orders that hold the seller's products (its
//! lines and its subtotal only), its catalog, and each product's stock with
//! its movements. Every read and change is the inventory and orders
//! services' own, with their scoping: a seller sees and changes its own
//! products only.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use ordo_bus::EventContext;
use ordo_http::{ApiError, FieldError, RequestId, Role};
use ordo_inventory::Adjustment;
use ordo_inventory::catalog::Product;
use ordo_inventory::service::{ProductDraft, ProductEdit, StockEdit};
use ordo_inventory::stock::StockLevel;
use ordo_kernel::ProductId;
use serde::Deserialize;

use super::customer::{OrderListPage, OrdersQuery};
use super::session::{CsrfForm, Viewer};
use super::{ConsoleState, Page, PageError, layout};

/// At or below this many available units, an active product is low.
pub const LOW_STOCK: i64 = 5;
/// How many products a catalog page shows.
const PRODUCTS_PAGE: usize = 50;
/// How many movements a product page shows.
const MOVEMENTS_SHOWN: usize = 50;

/// The seller pages are the seller's own catalog and orders; admins manage
/// products through the API and their own pages.
fn require_seller(viewer: &Viewer) -> Result<(), PageError> {
    Ok(viewer.principal().require(&[Role::Seller])?)
}

fn parse_product(id: &str) -> Result<ProductId, PageError> {
    ProductId::parse(id).map_err(|_| PageError::not_found("no such product"))
}

/// Field errors of a failed change, or the failure itself.
enum Refusal {
    Fields(Vec<(String, String)>),
    /// A conflict with the product's current state, told on the form.
    Conflict(String),
}

fn refusal(err: ApiError) -> Result<(Refusal, StatusCode), PageError> {
    match err {
        ApiError::Validation { errors, .. } => Ok((
            Refusal::Fields(errors.into_iter().map(|f| (f.field, f.message)).collect()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )),
        ApiError::Conflict { detail, .. } => Ok((Refusal::Conflict(detail), StatusCode::CONFLICT)),
        other => Err(other.into()),
    }
}

/// The attributes textarea: a JSON object, or empty for none.
fn parse_attributes(text: &str) -> Result<serde_json::Value, FieldError> {
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(text)
        .map_err(|e| FieldError::new("attributes", format!("is not valid JSON: {e}")))
}

fn error_of<'a>(errors: &'a [(String, String)], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|(f, _)| f == field)
        .map(|(_, m)| m.as_str())
}

/// A labelled input with its hint or error.
fn field(
    id: &str,
    label: &str,
    kind: &str,
    value: &str,
    errors: &[(String, String)],
    hint: Option<&str>,
    required: bool,
) -> Markup {
    let error = error_of(errors, id);
    let described = match (error.is_some(), hint.is_some()) {
        (true, _) => Some(format!("{id}-error")),
        (false, true) => Some(format!("{id}-hint")),
        _ => None,
    };
    html! {
        div.field {
            label for=(id) { (label) @if !required { " " span.hint { "(optional)" } } }
            @if kind == "textarea" {
                textarea id=(id) name=(id) rows="4" spellcheck="false"
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[described.as_deref()] { (value) }
            } @else {
                input id=(id) type=(kind) name=(id) value=(value) required[required]
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[described.as_deref()];
            }
            @if let Some(e) = error { div.error id={ (id) "-error" } { (e) } }
            @else if let Some(h) = hint { div.hint id={ (id) "-hint" } { (h) } }
        }
    }
}

fn stock_badge(product: &Product, available: i64) -> Markup {
    html! {
        @if !product.active {
            span.badge { "withdrawn" }
        } @else if available <= 0 {
            span.badge.bad { "out of stock" }
        } @else if available <= LOW_STOCK {
            span.badge.warn { "low stock" }
        }
    }
}

fn is_low(product: &Product, available: i64) -> bool {
    product.active && available <= LOW_STOCK
}

// --- Orders ------------------------------------------------------------------

/// `GET /seller/orders`: the orders that hold the seller's products, each
/// narrowed to the seller's lines by the orders service.
pub async fn orders(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<OrdersQuery>,
) -> Page {
    require_seller(&viewer)?;
    let list = OrderListPage::load(&state, &viewer, &q).await?;
    let empty = match list.status {
        Some(s) => format!("No {} orders of your products.", s.as_str()),
        None => "No orders of your products yet.".to_owned(),
    };
    Ok(layout::page(
        &viewer,
        "Orders",
        "/seller/orders",
        html! {
            div.page-head { h1 { "Orders" } a.button.secondary href="/seller/products" { "Catalog & stock" } }
            p.sub { "Orders that hold your products. Each shows your lines and your subtotal only." }
            (list.render("/seller/orders", true, &empty))
        },
    ))
}

// --- The catalog -------------------------------------------------------------

#[derive(Deserialize)]
pub struct ProductsQuery {
    after: Option<String>,
}

/// `GET /seller/products`: the seller's products with their stock, low
/// stock highlighted.
pub async fn products(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Query(q): Query<ProductsQuery>,
) -> Page {
    require_seller(&viewer)?;
    let after = q
        .after
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| ProductId::parse(a).map_err(|_| ApiError::field("after", "is not a product id")))
        .transpose()?;
    let mut rows = state
        .inventory()?
        .products_with_stock(viewer.principal(), after, PRODUCTS_PAGE + 1)
        .await?;
    let next = (rows.len() > PRODUCTS_PAGE).then(|| {
        rows.truncate(PRODUCTS_PAGE);
        rows.last().map(|(p, _)| p.id)
    });
    let low = rows.iter().filter(|(p, l)| is_low(p, l.available)).count();
    Ok(layout::page(
        &viewer,
        "Catalog & stock",
        "/seller/products",
        html! {
            div.page-head { h1 { "Catalog & stock" } a.button href="/seller/products/new" { "New product" } }
            @if rows.is_empty() && after.is_none() {
                div.card.empty {
                    p { "No products yet — create your first." }
                    p { a.button href="/seller/products/new" { "Create a product" } }
                }
            } @else {
                @if low > 0 {
                    (layout::notice("warn", &format!(
                        "{low} product{} on this page {} low on stock ({LOW_STOCK} or fewer units available).",
                        if low == 1 { "" } else { "s" }, if low == 1 { "is" } else { "are" })))
                }
                div.card {
                    div.table-wrap {
                        table {
                            caption.muted.small { "Units by bucket: available to order, reserved by unpaid orders, allocated to paid ones, committed once shipped." }
                            thead { tr {
                                th { "Product" } th.num { "Price" }
                                th.num { "Available" } th.num.hide-sm { "Reserved" } th.num.hide-sm { "Allocated" } th.num.hide-sm { "Committed" }
                                th { "State" }
                            } }
                            tbody {
                                @for (p, l) in &rows {
                                    tr class=[is_low(p, l.available).then_some("low")] {
                                        td { a href={ "/seller/products/" (p.id) } { (p.name) } br; span.muted.small.mono { (p.sku) } }
                                        td.num { (p.currency.format(p.price)) " " span.muted.small { (p.currency.as_str()) } }
                                        td.num { strong { (l.available) } }
                                        td.num.hide-sm { (l.reserved) }
                                        td.num.hide-sm { (l.allocated) }
                                        td.num.hide-sm { (l.committed) }
                                        td { @if p.active { span.badge.ok { "for sale" } " " } (stock_badge(p, l.available)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(Some(next)) = next {
                    nav.pager aria-label="Pages" { span {} a.button.secondary href={ "/seller/products?after=" (next) } { "More products" } }
                }
            }
        },
    ))
}

// --- A new product -----------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct NewProductForm {
    #[serde(default)]
    sku: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    attributes: String,
    #[serde(default)]
    initial_stock: String,
}

fn new_product_page(
    viewer: &Viewer,
    form: &NewProductForm,
    refused: Option<&Refusal>,
    status: StatusCode,
) -> Response {
    let (errors, conflict): (&[(String, String)], Option<&str>) = match refused {
        Some(Refusal::Fields(e)) => (e, None),
        Some(Refusal::Conflict(c)) => (&[], Some(c)),
        None => (&[], None),
    };
    let markup = layout::page(
        viewer,
        "New product",
        "/seller/products",
        html! {
            p.small { a href="/seller/products" { "← Catalog & stock" } }
            div.page-head { h1 { "New product" } }
            (layout::form_errors(errors))
            @if let Some(c) = conflict { div.alert.bad role="alert" { (c) } }
            form method="post" action="/seller/products/new" {
                (viewer.csrf_field())
                div.grid.grid-2 {
                    section.card {
                        h2 { "Product" }
                        (field("sku", "SKU", "text", &form.sku, errors, Some("Your unique code for it, up to 64 characters."), true))
                        (field("name", "Name", "text", &form.name, errors, None, true))
                        div.fields-2 {
                            (field("price", "Price", "text", &form.price, errors, Some("For example 9.99"), true))
                            (field("currency", "Currency", "text", &form.currency, errors, Some("Three letters, e.g. EUR"), true))
                        }
                    }
                    section.card {
                        h2 { "Stock and attributes" }
                        (field("initial_stock", "Units in stock", "number", &form.initial_stock, errors, Some("Recorded as your first movement."), false))
                        (field("attributes", "Attributes (a JSON object)", "textarea", &form.attributes, errors, Some("For example {\"colour\": \"blue\"}"), false))
                        button type="submit" { "Create product" }
                    }
                }
            }
        },
    );
    (status, markup).into_response()
}

/// `GET /seller/products/new`.
pub async fn new_product(viewer: Viewer) -> Result<Response, PageError> {
    require_seller(&viewer)?;
    let form = NewProductForm {
        currency: "EUR".to_owned(),
        initial_stock: "0".to_owned(),
        attributes: "{}".to_owned(),
        ..NewProductForm::default()
    };
    Ok(new_product_page(&viewer, &form, None, StatusCode::OK))
}

/// `POST /seller/products/new`: the API's create, its checks and messages.
pub async fn create_product(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    CsrfForm { viewer, form }: CsrfForm<NewProductForm>,
) -> Result<Response, PageError> {
    require_seller(&viewer)?;
    let inventory = state.inventory()?;
    // What the console reads from text itself; the service checks the rest.
    let mut errors = Vec::new();
    let attributes = parse_attributes(&form.attributes)
        .map_err(|e| errors.push((e.field, e.message)))
        .ok();
    let initial_stock = match form.initial_stock.trim() {
        "" => None,
        n => n
            .parse::<i64>()
            .map_err(|_| {
                errors.push((
                    "initial_stock".to_owned(),
                    "must be a whole number".to_owned(),
                ))
            })
            .ok(),
    };
    if !errors.is_empty() {
        let refused = Refusal::Fields(errors);
        return Ok(new_product_page(
            &viewer,
            &form,
            Some(&refused),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let draft = ProductDraft {
        sku: form.sku.clone(),
        name: form.name.clone(),
        price: form.price.clone(),
        currency: form.currency.trim().to_uppercase(),
        attributes,
        initial_stock,
    };
    let outcome = inventory
        .create_product(
            viewer.principal(),
            draft,
            &EventContext::from_request(request_id),
        )
        .await
        .map_err(ApiError::from);
    match outcome {
        Ok(product) => {
            Ok(Redirect::to(&format!("/seller/products/{}?created=1", product.id)).into_response())
        }
        Err(e) => {
            let (refused, status) = refusal(e)?;
            Ok(new_product_page(&viewer, &form, Some(&refused), status))
        }
    }
}

// --- A product and its stock -------------------------------------------------

#[derive(Deserialize)]
pub struct ProductQuery {
    created: Option<String>,
    saved: Option<String>,
    stock: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct EditForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    attributes: String,
    /// A checkbox: present when checked.
    active: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct StockForm {
    #[serde(default)]
    delta: String,
    #[serde(default)]
    reason: String,
}

/// What the product page shows besides the product: the values and
/// refusals of a form sent back, and a notice.
#[derive(Default)]
struct Forms {
    edit: Option<(EditForm, Refusal)>,
    stock: Option<(StockForm, Refusal)>,
    notice: Option<&'static str>,
}

fn refusal_parts(refused: Option<&Refusal>) -> (&[(String, String)], Option<&str>) {
    match refused {
        Some(Refusal::Fields(e)) => (e, None),
        Some(Refusal::Conflict(c)) => (&[], Some(c)),
        None => (&[], None),
    }
}

fn stock_card(product: &Product, level: &StockLevel) -> Markup {
    html! {
        section.card aria-labelledby="stock-h" {
            div.row.spread { h2 #stock-h { "Stock" } (stock_badge(product, level.available)) }
            div.grid.stats {
                @for (value, label) in [(level.available, "available"), (level.reserved, "reserved"), (level.allocated, "allocated"), (level.committed, "committed")] {
                    div.stat { span.value { (value) } span.label { (label) } }
                }
            }
            @if is_low(product, level.available) {
                p.small.muted { "Low stock: " (LOW_STOCK) " or fewer units can be ordered. Restock below." }
            }
        }
    }
}

fn stock_form(
    viewer: &Viewer,
    product: &Product,
    values: &StockForm,
    refused: Option<&Refusal>,
) -> Markup {
    let (errors, conflict) = refusal_parts(refused);
    let reason = if values.reason.is_empty() {
        "restock"
    } else {
        values.reason.as_str()
    };
    html! {
        section.card aria-labelledby="adjust-h" {
            h2 #adjust-h { "Restock or correct" }
            (layout::form_errors(errors))
            @if let Some(c) = conflict { div.alert.bad role="alert" { (c) } }
            form method="post" action={ "/seller/products/" (product.id) "/stock" } {
                (viewer.csrf_field())
                fieldset {
                    legend { "Reason" }
                    div.choices {
                        label.choice {
                            input type="radio" name="reason" value="restock" checked[reason == "restock"] required;
                            span { strong { "Restock" } br; span.muted.small { "Units arrived: adds them." } }
                        }
                        label.choice {
                            input type="radio" name="reason" value="correction" checked[reason == "correction"];
                            span { strong { "Correction" } br; span.muted.small { "The count was off: adds, or with a minus, removes units." } }
                        }
                    }
                    @if let Some(e) = error_of(errors, "reason") { div.error { (e) } }
                }
                (field("delta", "Units", "number", &values.delta, errors,
                    Some("A whole number; negative removes units (corrections only)."), true))
                button type="submit" { "Record movement" }
            }
        }
    }
}

fn edit_form(
    viewer: &Viewer,
    product: &Product,
    values: &EditForm,
    refused: Option<&Refusal>,
) -> Markup {
    let (errors, conflict) = refusal_parts(refused);
    html! {
        section.card aria-labelledby="details-h" {
            h2 #details-h { "Details" }
            (layout::form_errors(errors))
            @if let Some(c) = conflict { div.alert.bad role="alert" { (c) } }
            form method="post" action={ "/seller/products/" (product.id) } {
                (viewer.csrf_field())
                (field("name", "Name", "text", &values.name, errors, None, true))
                (field("price", &format!("Price ({})", product.currency.as_str()), "text", &values.price, errors,
                    Some("For example 9.99; new orders pay the new price."), true))
                (field("attributes", "Attributes (a JSON object)", "textarea", &values.attributes, errors, None, false))
                div.field {
                    label.choice {
                        input #active type="checkbox" name="active" value="on" checked[values.active.is_some()];
                        span { strong { "For sale" } br; span.muted.small { "Unchecked withdraws it: customers no longer see or order it." } }
                    }
                }
                button type="submit" { "Save changes" }
            }
        }
    }
}

fn movements_card(viewer: &Viewer, movements: &[Adjustment]) -> Markup {
    let me = viewer.principal().client_id.to_string();
    let now = Utc::now();
    html! {
        section.card aria-labelledby="movements-h" {
            h2 #movements-h { "Movements" }
            @if movements.is_empty() {
                p.muted { "No movements yet: a restock records the first." }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr { th { "When" } th.num { "Change" } th { "Reason" } th.hide-sm { "By" } } }
                        tbody {
                            @for m in movements {
                                tr {
                                    td title=(m.at.to_rfc3339()) { (layout::time(m.at)) br; span.muted.small { (layout::ago(m.at, now)) } }
                                    td.num { strong { @if m.delta > 0 { "+" } (m.delta) } }
                                    td { (m.reason) }
                                    td.hide-sm { @if m.actor == me { "you" } @else { span.mono.small { (m.actor) } } }
                                }
                            }
                        }
                    }
                }
                @if movements.len() >= MOVEMENTS_SHOWN {
                    p.muted.small { "The latest " (MOVEMENTS_SHOWN) " movements." }
                }
            }
        }
    }
}

fn values_of(product: &Product) -> EditForm {
    EditForm {
        name: product.name.clone(),
        price: product.currency.format(product.price),
        attributes: serde_json::to_string_pretty(&product.attributes)
            .unwrap_or_else(|_| product.attributes.to_string()),
        active: product.active.then(|| "on".to_owned()),
    }
}

async fn product_page(
    viewer: &Viewer,
    state: &ConsoleState,
    id: ProductId,
    forms: Forms,
    status: StatusCode,
) -> Result<Response, PageError> {
    let inventory = state.inventory()?;
    let principal = viewer.principal();
    let product = inventory.managed_product(principal, id).await?;
    let level = inventory.stock_level(principal, id).await?;
    let movements = inventory.movements(principal, id, MOVEMENTS_SHOWN).await?;
    let (edit_values, edit_refused) = match forms.edit {
        Some((values, refused)) => (values, Some(refused)),
        None => (values_of(&product), None),
    };
    let (stock_values, stock_refused) = match forms.stock {
        Some((values, refused)) => (values, Some(refused)),
        None => (StockForm::default(), None),
    };
    let markup = layout::page(
        viewer,
        &product.name,
        "/seller/products",
        html! {
            p.small { a href="/seller/products" { "← Catalog & stock" } }
            div.page-head {
                h1 { (product.name) }
                span { @if product.active { span.badge.ok { "for sale" } } @else { span.badge { "withdrawn" } } }
            }
            p.sub {
                span.mono { (product.sku) } " · " (product.currency.format(product.price)) " " (product.currency.as_str())
                " · version " (product.version) " · changed " (layout::time(product.updated_at))
            }
            @if let Some(n) = forms.notice { (layout::notice("ok", n)) }
            div.stack {
                div.grid.grid-2 {
                    div.stack {
                        (stock_card(&product, &level))
                        (stock_form(viewer, &product, &stock_values, stock_refused.as_ref()))
                    }
                    (edit_form(viewer, &product, &edit_values, edit_refused.as_ref()))
                }
                (movements_card(viewer, &movements))
            }
        },
    );
    Ok((status, markup).into_response())
}

/// `GET /seller/products/{id}`.
pub async fn product(
    viewer: Viewer,
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Query<ProductQuery>,
) -> Result<Response, PageError> {
    require_seller(&viewer)?;
    let id = parse_product(&id)?;
    let notice = if q.created.is_some() {
        Some("The product is created and for sale.")
    } else if q.saved.is_some() {
        Some("Saved.")
    } else if q.stock.is_some() {
        Some("The movement is recorded.")
    } else {
        None
    };
    let forms = Forms {
        notice,
        ..Forms::default()
    };
    product_page(&viewer, &state, id, forms, StatusCode::OK).await
}

/// `POST /seller/products/{id}`: the API's product change.
pub async fn edit_product(
    State(state): State<ConsoleState>,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    CsrfForm { viewer, form }: CsrfForm<EditForm>,
) -> Result<Response, PageError> {
    require_seller(&viewer)?;
    let id = parse_product(&id)?;
    let attributes = match parse_attributes(&form.attributes) {
        Ok(a) => a,
        Err(e) => {
            let refused = Refusal::Fields(vec![(e.field, e.message)]);
            let forms = Forms {
                edit: Some((form, refused)),
                ..Forms::default()
            };
            return product_page(&viewer, &state, id, forms, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        }
    };
    let edit = ProductEdit {
        name: Some(form.name.clone()),
        price: Some(form.price.clone()),
        attributes: Some(attributes),
        active: Some(form.active.is_some()),
    };
    match state
        .inventory()?
        .update_product(
            viewer.principal(),
            id,
            edit,
            &EventContext::from_request(request_id),
        )
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/seller/products/{id}?saved=1")).into_response()),
        Err(e) => {
            let (refused, status) = refusal(e.into())?;
            let forms = Forms {
                edit: Some((form, refused)),
                ..Forms::default()
            };
            product_page(&viewer, &state, id, forms, status).await
        }
    }
}

/// `POST /seller/products/{id}/stock`: a restock or correction, the same
/// movement the API records.
pub async fn adjust_stock(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    CsrfForm { viewer, form }: CsrfForm<StockForm>,
) -> Result<Response, PageError> {
    require_seller(&viewer)?;
    let id = parse_product(&id)?;
    let outcome = match form.delta.trim().parse::<i64>() {
        Ok(delta) => state
            .inventory()?
            .adjust_stock(
                viewer.principal(),
                id,
                StockEdit {
                    delta,
                    reason: form.reason.clone(),
                },
            )
            .await
            .map_err(ApiError::from),
        Err(_) => Err(ApiError::field(
            "delta",
            "must be a non-zero whole number within ±1000000000",
        )),
    };
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/seller/products/{id}?stock=1")).into_response()),
        Err(e) => {
            let (refused, status) = refusal(e)?;
            let forms = Forms {
                stock: Some((form, refused)),
                ..Forms::default()
            };
            product_page(&viewer, &state, id, forms, status).await
        }
    }
}
