//! The console over HTTP: sessions, CSRF, roles and scoping, and that its
//! actions take the same paths as the API's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestApp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

/// A browser's view of the console: its session cookie and CSRF token.
pub struct Console {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

/// The value of `name="csrf"`'s hidden input in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().map(str::to_owned)
}

fn cookie_value(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

impl Console {
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Signs in through the sign-in form with a client's credentials.
    pub async fn sign_in_as(app: &TestApp, client_id: &str, secret: &str) -> Console {
        Self::sign_in_to(app, client_id, secret, None).await
    }

    /// Signs in, then lands on `next` (the sign-in form's own field)
    /// instead of the role's home.
    pub async fn sign_in_to(
        app: &TestApp,
        client_id: &str,
        secret: &str,
        next: Option<&str>,
    ) -> Console {
        let http = Self::client();
        let page = http.get(app.url("/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let signin = cookie_value(&page, "ordo_signin").expect("a sign-in CSRF cookie");
        let form_csrf = csrf_of(&page.text().await.unwrap()).expect("a CSRF field");
        let signed_in = http
            .post(app.url("/sign-in"))
            .header(COOKIE, format!("ordo_signin={signin}"))
            .form(&[
                ("client_id", client_id),
                ("client_secret", secret),
                ("csrf", &form_csrf),
                ("next", next.unwrap_or("")),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER, "signed in");
        let session = cookie_value(&signed_in, "ordo_session").expect("a session cookie");
        let cookie = format!("ordo_session={session}");
        let home = signed_in.headers()[LOCATION].to_str().unwrap().to_owned();
        let page = http
            .get(app.url(&home))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        let csrf = csrf_of(&page.text().await.unwrap()).expect("the session's CSRF token");
        Console {
            base: app.base.clone(),
            http,
            cookie,
            csrf,
        }
    }

    /// Signs in as the demo client of `role`.
    pub async fn sign_in(app: &TestApp, role: &str) -> Console {
        let creds = &app.credentials[role];
        Self::sign_in_as(app, &creds.client_id, &creds.client_secret).await
    }

    /// Signs in as the demo admin, landing on an operations page.
    pub async fn sign_in_admin(app: &TestApp) -> Console {
        let creds = &app.credentials["admin"];
        Self::sign_in_to(
            app,
            &creds.client_id,
            &creds.client_secret,
            Some("/admin/clients"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &self.csrf));
        self.post_without_csrf(path, &fields).await
    }

    pub async fn post_without_csrf(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Event types and actors of an order's timeline, without ids and times.
fn shape(timeline: &[Value]) -> Vec<(String, String)> {
    timeline
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_console_is_served_at_the_root_with_a_strict_policy_and_no_other_host() {
    let app = TestApp::spawn().await;
    let page = Console::client().get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
    // Its assets are embedded and cached by version.
    let css = html
        .split("href=\"")
        .find(|s| s.starts_with("/assets/console.css"))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let asset = Console::client().get(app.url(&css)).send().await.unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_and_a_form_without_csrf_is_403() {
    let app = TestApp::spawn().await;
    let http = Console::client();
    let page = http.get(app.url("/")).send().await.unwrap();
    let signin = cookie_value(&page, "ordo_signin").unwrap();
    let csrf = csrf_of(&page.text().await.unwrap()).unwrap();
    let customer = &app.credentials["customer"];
    let refused = http
        .post(app.url("/sign-in"))
        .header(COOKIE, format!("ordo_signin={signin}"))
        .form(&[
            ("client_id", customer.client_id.as_str()),
            ("client_secret", "sec_wrong"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&refused, "ordo_session").is_none());
    // A sign-in form posted from elsewhere has no matching cookie.
    let forged = http
        .post(app.url("/sign-in"))
        .form(&[
            ("client_id", customer.client_id.as_str()),
            ("client_secret", customer.client_secret.as_str()),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let console = Console::sign_in(&app, "customer").await;
    let order = app
        .create_order(&app.token("customer").await, &app.product_id(0).await, 1)
        .await;
    let id = order["id"].as_str().unwrap();
    let without = console
        .post_without_csrf(&format!("/orders/{id}/cancel"), &[])
        .await;
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let forged = console
        .post_without_csrf(&format!("/orders/{id}/cancel"), &[("csrf", "forged")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn throttled_console_sign_ins_lock_the_client_out_of_the_token_endpoint_too() {
    let app = TestApp::spawn().await;
    let http = Console::client();
    let customer = &app.credentials["customer"];
    let sign_in = |secret: &'static str| {
        let http = http.clone();
        let (app, customer) = (&app, customer);
        async move {
            let page = http.get(app.url("/")).send().await.unwrap();
            let signin = cookie_value(&page, "ordo_signin").unwrap();
            let csrf = csrf_of(&page.text().await.unwrap()).unwrap();
            let secret = if secret.is_empty() {
                customer.client_secret.as_str()
            } else {
                secret
            };
            http.post(app.url("/sign-in"))
                .header(COOKIE, format!("ordo_signin={signin}"))
                .form(&[
                    ("client_id", customer.client_id.as_str()),
                    ("client_secret", secret),
                    ("csrf", &csrf),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..10 {
        assert_eq!(
            sign_in("sec_wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = sign_in("sec_wrong").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
    assert!(
        locked
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    // The right secret waits too, at the console and at the token endpoint.
    let right = sign_in("").await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(cookie_value(&right, "ordo_session").is_none());
    let token = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", customer.client_id.as_str()),
            ("client_secret", customer.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(token.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn session_cookies_are_http_only_same_site_and_secure_behind_a_tls_proxy() {
    let app = TestApp::spawn().await;
    let customer = &app.credentials["customer"];
    for (proto, secure) in [(None, false), (Some("https"), true)] {
        let http = Console::client();
        let mut page = http.get(app.url("/"));
        if let Some(p) = proto {
            page = page.header("X-Forwarded-Proto", p);
        }
        let page = page.send().await.unwrap();
        let signin = cookie_value(&page, "ordo_signin").unwrap();
        let csrf = csrf_of(&page.text().await.unwrap()).unwrap();
        let mut post = http
            .post(app.url("/sign-in"))
            .header(COOKIE, format!("ordo_signin={signin}"))
            .form(&[
                ("client_id", customer.client_id.as_str()),
                ("client_secret", customer.client_secret.as_str()),
                ("csrf", &csrf),
            ]);
        if let Some(p) = proto {
            post = post.header("X-Forwarded-Proto", p);
        }
        let signed_in = post.send().await.unwrap();
        let set = signed_in
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("ordo_session="))
            .unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        assert!(set.contains("Max-Age="), "it expires: {set}");
        assert_eq!(set.contains("Secure"), secure, "{set}");
    }
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, "customer").await;
    assert_eq!(console.get("/orders").await.status(), StatusCode::OK);
    let out = console.post("/sign-out", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    // The same cookie, kept by someone else, opens nothing any more.
    let after = console.get("/orders").await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(
        after.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/?next=")
    );
    let api = console.get("/v1/orders").await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_cookie_reads_the_api_with_the_callers_scope_but_never_writes() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, "customer").await;
    let mine = app
        .create_order(&app.token("customer").await, &app.product_id(0).await, 1)
        .await;
    let id = mine["id"].as_str().unwrap();
    assert_eq!(
        console.get(&format!("/v1/orders/{id}")).await.status(),
        StatusCode::OK
    );
    let created: Value = app
        .post_json(
            &app.token("admin").await,
            "/v1/admin/clients",
            &serde_json::json!({"role": "customer", "name": "another shopper"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let other = Console::sign_in_as(
        &app,
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        other.get(&format!("/v1/orders/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        other.get(&format!("/orders/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // A cookie never authorizes a write: another site could make a
    // browser send it.
    let write = console
        .http
        .post(format!("{}/v1/orders/{id}/cancel", console.base))
        .header(COOKIE, &console.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    // A customer has no admin pages.
    let admin = console.get("/admin").await.status();
    assert!(admin == StatusCode::FORBIDDEN || admin == StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_console_cancel_and_an_api_cancel_publish_the_same_events() {
    let app =
        TestApp::spawn_with(|b| b, |c| c.courier_sim = ordo_app::config::CourierSim::Off).await;
    let token = app.token("customer").await;
    let product = app.product_id(0).await;
    let console = Console::sign_in(&app, "customer").await;

    let by_api = app.create_order(&token, &product, 1).await;
    let by_console = app.create_order(&token, &product, 1).await;
    app.wait_for_quiet_bus().await;
    let api_id = by_api["id"].as_str().unwrap();
    let console_id = by_console["id"].as_str().unwrap();

    let api = app
        .post_json(&token, &format!("/v1/orders/{api_id}/cancel"), &Value::Null)
        .await;
    assert!(api.status().is_success(), "{}", api.status());
    let page = console
        .post(&format!("/orders/{console_id}/cancel"), &[])
        .await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let location = page.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("/orders/{console_id}?cancel=")));
    app.wait_for_quiet_bus().await;

    let api_timeline = app.timeline(&token, api_id).await;
    let console_timeline = app.timeline(&token, console_id).await;
    assert_eq!(shape(&console_timeline), shape(&api_timeline));
    assert!(
        shape(&console_timeline)
            .iter()
            .any(|(t, reason)| t.starts_with("order.cancelled") && reason == "customer_cancelled")
    );
    // The page reports it in words.
    let html = console.get(&location).await.text().await.unwrap();
    assert!(html.contains("the customer cancelled it"), "{html}");
}

/// A checkout form for `lines` (product, quantity) to Berlin with the
/// approved test card.
fn checkout_form<'a>(lines: &[(&'a str, &'a str)], key: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form: Vec<(&str, &str)> = lines
        .iter()
        .flat_map(|(product, quantity)| [("product", *product), ("quantity", *quantity)])
        .collect();
    form.extend([
        ("name", "Ada Lovelace"),
        ("line1", "Unter den Linden 1"),
        ("city", "Berlin"),
        ("postal_code", "10117"),
        ("country", "DE"),
        ("card", "tok_visa"),
        ("idempotency_key", key),
    ]);
    form
}

#[tokio::test]
async fn the_shop_checks_out_several_products_in_one_order_or_one_with_buy() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, "customer").await;
    let (a, b, c) = (
        app.product_id(0).await,
        app.product_id(1).await,
        app.product_id(2).await,
    );
    // The shop's form sends every card; those left at 0 are not ordered.
    let page = console
        .get(&format!(
            "/shop/checkout?product={a}&quantity=2&product={b}&quantity=0&product={c}&quantity=1"
        ))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("name=\"product\"").count(), 2, "{html}");
    assert!(html.contains(&a) && html.contains(&c) && !html.contains(&b));
    // "Buy" on one card: that product alone.
    let one = console
        .get(&format!(
            "/shop/checkout?product={a}&quantity=0&product={b}&quantity=3&only={b}"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(one.matches("name=\"product\"").count(), 1);
    assert!(one.contains(&b) && !one.contains(&a));
    // Nothing chosen: back to the shop, which says why.
    let none = console
        .get(&format!("/shop/checkout?product={a}&quantity=0"))
        .await;
    assert_eq!(none.status(), StatusCode::SEE_OTHER);

    let placed = console
        .post(
            "/shop/checkout",
            &checkout_form(&[(&a, "2"), (&c, "1")], "console-two-lines"),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::SEE_OTHER);
    let token = app.token("customer").await;
    let list: Value = app.get(&token, "/v1/orders").await.json().await.unwrap();
    let items = list["items"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["product_id"], a.as_str());
    assert_eq!(items[0]["quantity"], 2);
    assert_eq!(items[1]["product_id"], c.as_str());

    // A bad second line is named by its index, and nothing is ordered.
    let refused = console
        .post(
            "/shop/checkout",
            &checkout_form(&[(&a, "1"), (&c, "many")], "console-bad-line"),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("items[1].quantity"));
    let list: Value = app.get(&token, "/v1/orders").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn checkout_places_one_order_per_form_and_names_bad_fields() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, "customer").await;
    let product = app.product_id(0).await;
    let form = [
        ("product", product.as_str()),
        ("quantity", "2"),
        ("name", "Ada Lovelace"),
        ("line1", "Unter den Linden 1"),
        ("city", "Berlin"),
        ("postal_code", "10117"),
        ("country", "de"),
        ("card", "tok_visa"),
        ("idempotency_key", "console-form-1"),
    ];
    let first = console.post("/shop/checkout", &form).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let again = console.post("/shop/checkout", &form).await;
    assert_eq!(
        first.headers()[LOCATION],
        again.headers()[LOCATION],
        "a double submit makes one order"
    );
    let token = app.token("customer").await;
    let list: Value = app.get(&token, "/v1/orders").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["items"][0]["quantity"], 2);

    let mut bad = form;
    bad[1] = ("quantity", "0");
    bad[3] = ("line1", "");
    bad[8] = ("idempotency_key", "console-form-2");
    let refused = console.post("/shop/checkout", &bad).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.unwrap();
    assert!(html.contains("shipping_address.line1"), "{html}");
    assert!(html.contains("items[0].quantity"), "{html}");
    let list: Value = app.get(&token, "/v1/orders").await.json().await.unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing half-written"
    );
}

// --- Admin operations ----------------------------------------------------------

/// The text of the first element carrying `attribute` in a page.
fn text_after(html: &str, attribute: &str) -> Option<String> {
    let at = html.find(attribute)?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    rest[start..].split('<').next().map(str::to_owned)
}

/// The value of `attribute="…"` in a page.
fn attribute_value(html: &str, attribute: &str) -> Option<String> {
    let marker = format!("{attribute}=\"");
    let at = html.find(&marker)? + marker.len();
    html[at..].split('"').next().map(str::to_owned)
}

async fn audit_entries(app: &TestApp) -> Vec<Value> {
    let admin = app.token("admin").await;
    let body: Value = app
        .get(&admin, "/v1/admin/audit?limit=500")
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn ops_a_client_created_in_the_console_shows_its_secret_once_and_is_revoked_as_by_the_api() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in_admin(&app).await;

    let created = console
        .post(
            "/admin/clients",
            &[("role", "customer"), ("name", "Console shop")],
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let html = created.text().await.unwrap();
    assert!(html.contains("shown only this once"), "{html}");
    let id = attribute_value(&html, "data-client-id").unwrap();
    let secret = text_after(&html, "data-secret").unwrap();
    assert!(secret.starts_with("sec_"), "{secret}");
    let token = app.token_for(&id, &secret).await;
    assert_eq!(app.get(&token, "/v1/orders").await.status(), StatusCode::OK);
    // Once: the list names the client, never its secret.
    let list = console.get("/admin/clients").await.text().await.unwrap();
    assert!(list.contains("Console shop") && list.contains(&id));
    assert!(!list.contains(&secret));
    // The API's rules: a bad role or name is named.
    let refused = console
        .post("/admin/clients", &[("role", "root"), ("name", "x")])
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("must be one of"));
    let long = "n".repeat(201);
    let refused = console
        .post("/admin/clients", &[("role", "seller"), ("name", &long)])
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("1 to 200 characters")
    );

    // Revoked in the console: its token stops working at once.
    let revoked = console
        .post(&format!("/admin/clients/{id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get(&token, "/v1/orders").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let page = console
        .get(revoked.headers()[LOCATION].to_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("is revoked"), "{page}");

    // And the log reads the same as for a revoke through the API.
    let (other, _) = app.new_client("seller").await;
    let admin = app.token("admin").await;
    let by_api = app
        .post_json(
            &admin,
            &format!("/v1/admin/clients/{other}/revoke"),
            &Value::Null,
        )
        .await;
    assert_eq!(by_api.status(), StatusCode::OK);
    let entries = audit_entries(&app).await;
    let revoke_of = |client: &str| {
        entries
            .iter()
            .find(|e| e["target"] == format!("/v1/admin/clients/{client}/revoke"))
            .unwrap_or_else(|| panic!("a revoke of {client}: {entries:#?}"))
            .clone()
    };
    let (in_console, in_api) = (revoke_of(&id), revoke_of(&other));
    for key in ["action", "actor", "status"] {
        assert_eq!(in_console[key], in_api[key], "{key}");
    }
    assert_eq!(in_console["action"], "POST /v1/admin/clients/{id}/revoke");
    assert_eq!(in_console["status"], 200);
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "POST /v1/admin/clients" && e["status"] == 201)
    );
    let audit = console.get("/admin/audit").await.text().await.unwrap();
    assert!(
        audit.contains(&format!("/v1/admin/clients/{id}/revoke")),
        "{audit}"
    );

    // An admin cannot lock itself out, in the console or through the API.
    let me = app.client_id("admin");
    let refused = console
        .post(&format!("/admin/clients/{me}/revoke"), &[])
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("cannot revoke the client it is signed in as")
    );
    let refused = app
        .post_json(
            &admin,
            &format!("/v1/admin/clients/{me}/revoke"),
            &Value::Null,
        )
        .await;
    let problem = common::problem(refused, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "/problems/cannot-revoke-self");
    assert_eq!(console.get("/admin/clients").await.status(), StatusCode::OK);

    // Forms need the session's token; the pages need an admin.
    let forged = console
        .post_without_csrf("/admin/clients", &[("role", "admin")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let customer = Console::sign_in(&app, "customer").await;
    for path in [
        "/admin/clients",
        "/admin/stuck",
        "/admin/dead-letters",
        "/admin/audit",
        "/admin/chaos",
    ] {
        assert_eq!(
            customer.get(path).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let refused = customer
        .post(&format!("/admin/clients/{me}/revoke"), &[])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    app.assert_no_server_errors().await;
}

async fn chaos_status(app: &TestApp) -> Value {
    let admin = app.token("admin").await;
    app.get(&admin, "/v1/admin/chaos")
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn ops_chaos_set_in_the_console_is_what_the_api_reports_and_shows_on_every_admin_page() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in_admin(&app).await;
    let set = console
        .post(
            "/admin/chaos",
            &[
                ("control", "gateway"),
                ("decline_percent", "30"),
                ("slow_percent", "5"),
            ],
        )
        .await;
    assert_eq!(set.status(), StatusCode::SEE_OTHER);
    let paused = console
        .post(
            "/admin/chaos",
            &[("control", "pause"), ("service", "payments")],
        )
        .await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    let status = chaos_status(&app).await;
    assert_eq!(status["state"]["gateway"]["decline_percent"], 30);
    assert_eq!(status["state"]["gateway"]["slow_percent"], 5);
    assert_eq!(status["state"]["paused"], serde_json::json!(["payments"]));
    for path in [
        "/admin/stuck",
        "/admin/dead-letters",
        "/admin/clients",
        "/admin/audit",
    ] {
        let html = console.get(path).await.text().await.unwrap();
        assert!(html.contains("Chaos is active"), "{path}");
        assert!(
            html.contains("gateway: 30 % of charges are declined"),
            "{path}"
        );
        assert!(html.contains("payments: consumers paused"), "{path}");
    }

    // The controls' own rules: shares of one roll add up to 100 at most.
    let refused = console
        .post(
            "/admin/chaos",
            &[
                ("control", "gateway"),
                ("decline_percent", "80"),
                ("transient_percent", "30"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("more than 100 %"));
    let refused = console
        .post(
            "/admin/chaos",
            &[("control", "duplicate"), ("duplicate_percent", "lots")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        chaos_status(&app).await["state"]["gateway"]["decline_percent"],
        30
    );

    let resumed = console
        .post(
            "/admin/chaos",
            &[("control", "resume"), ("service", "payments")],
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        chaos_status(&app).await["state"]["paused"],
        serde_json::json!([])
    );
    let off = console.post("/admin/chaos", &[("control", "off")]).await;
    assert_eq!(off.status(), StatusCode::SEE_OTHER);
    let status = chaos_status(&app).await;
    assert_eq!(status["active"], serde_json::json!([]));
    let html = console.get("/admin/chaos").await.text().await.unwrap();
    assert!(!html.contains("Chaos is active"));

    let actions: Vec<String> = audit_entries(&app)
        .await
        .iter()
        .filter(|e| e["target"] == "/v1/admin/chaos")
        .map(|e| format!("{} {}", e["action"].as_str().unwrap(), e["status"]))
        .collect();
    assert_eq!(
        actions,
        [
            "DELETE /v1/admin/chaos 200",
            "PUT /v1/admin/chaos 200",
            "PUT /v1/admin/chaos 422",
            "PUT /v1/admin/chaos 422",
            "PUT /v1/admin/chaos 200",
            "PUT /v1/admin/chaos 200",
        ],
        "newest first"
    );
    let forged = console
        .post_without_csrf("/admin/chaos", &[("control", "off")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ops_with_chaos_disabled_by_setting_the_console_says_how_to_enable_it_and_refuses() {
    let app = TestApp::spawn_with(|b| b, |c| c.chaos = false).await;
    let console = Console::sign_in_admin(&app).await;
    let html = console.get("/admin/chaos").await.text().await.unwrap();
    assert!(html.contains("Chaos controls are disabled on this server"));
    assert!(html.contains("--chaos") && html.contains("disabled"));
    let refused = console
        .post(
            "/admin/chaos",
            &[("control", "gateway"), ("decline_percent", "100")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("start it with --chaos")
    );
    assert_eq!(
        chaos_status(&app).await["state"]["gateway"]["decline_percent"],
        0
    );
}

/// A consumer of order.created that fails while `poisoned` is set.
struct Poison {
    poisoned: std::sync::atomic::AtomicBool,
    handled: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl ordo_bus::Handler for Poison {
    async fn handle(&self, _event: &ordo_bus::Envelope) -> Result<(), ordo_bus::HandlerError> {
        use std::sync::atomic::Ordering;
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(anyhow::anyhow!("cannot digest this event").into());
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_the_stuck_page_lists_an_order_with_a_dead_letter_and_its_replay_action_replays_it() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let poison = Arc::new(Poison {
        poisoned: true.into(),
        handled: 0.into(),
    });
    let handler: Arc<dyn ordo_bus::Handler> = poison.clone();
    let app = TestApp::spawn_with(
        |b| {
            b.consumer(ordo_bus::Consumer::new(
                "test.poison",
                &["order.created.v1"],
                handler,
            ))
        },
        |c| {
            c.bus_max_attempts = 2;
            c.courier_sim = ordo_app::config::CourierSim::Off;
        },
    )
    .await;
    let customer = app.token("customer").await;
    let order = app
        .create_order(&customer, &app.product_id(0).await, 1)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&customer, &order_id, "paid").await;
    app.wait_for_quiet_bus().await;
    let console = Console::sign_in_admin(&app).await;

    let thresholds = "pending=1ms&confirmed=1ms&paid=1ms&shipped=1ms";
    let page = console.get(&format!("/admin/stuck?{thresholds}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("/admin/orders/{order_id}")),
        "{html}"
    );
    assert!(
        html.contains("dead letter") && html.contains("test.poison"),
        "{html}"
    );
    assert!(html.contains("waiting for a courier"), "{html}");
    assert!(html.contains("action=\"/admin/stuck/replay\""));
    assert!(html.contains(&format!("action=\"/orders/{order_id}/cancel\"")));
    let letters = console
        .get("/admin/dead-letters")
        .await
        .text()
        .await
        .unwrap();
    let letter_id = attribute_value(&letters, "<tr id").unwrap();
    assert!(html.contains(&letter_id), "the stuck page names the letter");

    // Not stuck by the defaults; a bad threshold is named.
    let defaults = console.get("/admin/stuck").await.text().await.unwrap();
    assert!(!defaults.contains(&format!("/admin/orders/{order_id}")));
    let bad = console.get("/admin/stuck?paid=soon").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("must be a duration"));

    // Fixed; the operator replays from the stuck page.
    poison.poisoned.store(false, Ordering::SeqCst);
    let replayed = console
        .post(
            "/admin/stuck/replay",
            &[("order", order_id.as_str()), ("paid", "1ms")],
        )
        .await;
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    let location = replayed.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.contains("replayed=1") && location.contains("paid=1ms"),
        "{location}"
    );
    common::eventually("the replay is delivered", || async {
        poison.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let page = console.get(&location).await.text().await.unwrap();
    assert!(
        page.contains("Replay requested for 1 dead letter"),
        "{page}"
    );
    // Replayed once: the dead-letter page's replay is refused the second time.
    common::eventually("the letter is marked replayed", || async {
        let admin = app.token("admin").await;
        let body: Value = app
            .get(&admin, "/v1/admin/dead-letters")
            .await
            .json()
            .await
            .unwrap();
        body["items"][0]["status"] == "replayed"
    })
    .await;
    let again = console
        .post(&format!("/admin/dead-letters/{letter_id}/replay"), &[])
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(poison.handled.load(Ordering::SeqCst), 1);
    let entries = audit_entries(&app).await;
    let statuses: Vec<&Value> = entries
        .iter()
        .filter(|e| e["target"] == format!("/v1/admin/dead-letters/{letter_id}/replay"))
        .map(|e| &e["status"])
        .collect();
    assert_eq!(statuses, [409, 202], "{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|e| e["action"] == "POST /v1/admin/dead-letters/{id}/replay")
    );
    let without = console
        .post_without_csrf("/admin/stuck/replay", &[("order", order_id.as_str())])
        .await;
    assert_eq!(without.status(), StatusCode::FORBIDDEN);

    // The page's cancel action is the API's cancel, logged as such.
    let cancelled = console
        .post(&format!("/orders/{order_id}/cancel"), &[])
        .await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    let entries = audit_entries(&app).await;
    assert_eq!(entries[0]["action"], "POST /v1/orders/{id}/cancel");
    assert_eq!(
        entries[0]["target"],
        format!("/v1/orders/{order_id}/cancel")
    );
    assert_eq!(
        entries[0]["status"], 202,
        "a paid order: delivery settles it"
    );
}

/// The seller's pages: its lines of orders, its catalog and stock.
mod seller {
    use super::*;
    use ordo_kernel::ProductId;
    use serde_json::json;

    /// A new seller client: its console, its API token and its id.
    pub async fn new_seller(app: &TestApp) -> (Console, String, String) {
        let admin = app.token("admin").await;
        let created: Value = app
            .post_json(
                &admin,
                "/v1/admin/clients",
                &json!({"role": "seller", "name": "test seller"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let id = created["client_id"].as_str().unwrap().to_owned();
        let secret = created["client_secret"].as_str().unwrap();
        let token = app.token_for(&id, secret).await;
        (Console::sign_in_as(app, &id, secret).await, token, id)
    }

    /// A product of the seller with `token`, created through the API.
    pub async fn product(
        app: &TestApp,
        token: &str,
        name: &str,
        price: &str,
        stock: i64,
    ) -> String {
        let r = app
            .post_json(
                token,
                "/v1/products",
                &json!({"sku": format!("SKU-{name}"), "name": name, "price": price,
                        "currency": "EUR", "initial_stock": stock}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn a_seller_sees_only_its_lines_and_subtotal_of_a_multi_seller_order() {
        let app = TestApp::spawn().await;
        let (alpha, alpha_token, _) = new_seller(&app).await;
        let (beta, beta_token, _) = new_seller(&app).await;
        let kettle = product(&app, &alpha_token, "Alpha kettle", "30.00", 10).await;
        let teapot = product(&app, &beta_token, "Beta teapot", "12.50", 10).await;
        app.wait_for_quiet_bus().await;
        let mut body = common::order_body(&kettle, 2);
        body["items"] = json!([{"product_id": kettle, "quantity": 2},
                               {"product_id": teapot, "quantity": 1}]);
        let customer = app.token("customer").await;
        let r = app.post_json(&customer, "/v1/orders", &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let order: Value = r.json().await.unwrap();
        let id = order["id"].as_str().unwrap();
        // Paid by now: the timeline holds the payment of the whole order.
        app.wait_for_quiet_bus().await;

        let list = alpha.get("/seller/orders").await;
        assert_eq!(list.status(), StatusCode::OK);
        let html = list.text().await.unwrap();
        assert!(html.contains(&format!("/orders/{id}")), "{html}");
        assert!(
            html.contains("Alpha kettle") && !html.contains("Beta teapot"),
            "{html}"
        );
        assert!(html.contains("60.00") && !html.contains("72.50"), "{html}");

        let page = alpha.get(&format!("/orders/{id}")).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let lines = items_card(&html);
        assert!(
            lines.contains("Alpha kettle") && lines.contains("60.00"),
            "{lines}"
        );
        assert!(lines.contains("Your subtotal"), "{lines}");
        assert!(
            !html.contains("Beta teapot") && !html.contains("72.50"),
            "{html}"
        );
        // Nor where it goes: the address is the customer's.
        assert!(!html.contains("Unter den Linden"), "{html}");

        let html = beta
            .get(&format!("/orders/{id}"))
            .await
            .text()
            .await
            .unwrap();
        let lines = items_card(&html);
        assert!(
            lines.contains("Beta teapot") && lines.contains("12.50"),
            "{lines}"
        );
        assert!(
            !html.contains("Alpha kettle") && !html.contains("72.50"),
            "{html}"
        );
    }

    /// The order page's card of lines.
    fn items_card(html: &str) -> &str {
        let start = html.find("Your lines").expect("a seller's lines card");
        let end = html[start..].find("</section>").unwrap();
        &html[start..start + end]
    }

    #[tokio::test]
    async fn a_console_restock_is_the_movement_the_api_makes_and_the_api_sees_it() {
        let app = TestApp::spawn().await;
        let (console, token, seller_id) = new_seller(&app).await;
        let id = product(&app, &token, "Low lamp", "19.90", 3).await;

        let list = console.get("/seller/products").await.text().await.unwrap();
        assert!(
            list.contains("<tr class=\"low\">") && list.contains("low stock"),
            "{list}"
        );

        let r = console
            .post(
                &format!("/seller/products/{id}/stock"),
                &[("reason", "restock"), ("delta", "7")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
        assert_eq!(location, format!("/seller/products/{id}?stock=1"));
        assert_eq!(app.available(&id).await, 10);

        let r = app
            .post_json(
                &token,
                &format!("/v1/products/{id}/stock"),
                &json!({"delta": 2, "reason": "restock"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let stock = &app.stores.inventory.as_ref().unwrap().stock;
        let movements = stock
            .movements(ProductId::parse(&id).unwrap(), 10)
            .await
            .unwrap();
        let shape: Vec<(i64, &str, &str)> = movements
            .iter()
            .map(|m| (m.delta, m.reason.as_str(), m.actor.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (2, "restock", seller_id.as_str()),
                (7, "restock", seller_id.as_str()),
                (3, "initial", seller_id.as_str()),
            ]
        );

        let page = console.get(&location).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("The movement is recorded."), "{html}");
        assert!(html.contains("+7") && html.contains("+2"), "{html}");
        // A correction below zero is refused with the service's words.
        let r = console
            .post(
                &format!("/seller/products/{id}/stock"),
                &[("reason", "correction"), ("delta", "-50")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("only 12 units are available to remove")
        );
        assert_eq!(app.available(&id).await, 12);
    }

    #[tokio::test]
    async fn an_edit_with_a_bad_price_is_422_naming_the_field_and_a_good_one_saves() {
        let app = TestApp::spawn().await;
        let (console, token, _) = new_seller(&app).await;
        let id = product(&app, &token, "Mug", "9.99", 20).await;
        let path = format!("/seller/products/{id}");
        let r = console
            .post(
                &path,
                &[
                    ("name", "Mug"),
                    ("price", "nine"),
                    ("attributes", "{}"),
                    ("active", "on"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = r.text().await.unwrap();
        assert!(html.contains("<code>price</code>"), "{html}");
        assert!(html.contains("must be a decimal string"), "{html}");
        assert!(
            html.contains("value=\"nine\""),
            "the form keeps what was sent: {html}"
        );

        let r = console
            .post(
                &path,
                &[("name", "Mug"), ("price", "9.99"), ("attributes", "[1]")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.text().await.unwrap().contains("must be a JSON object"));

        let r = console
            .post(
                &path,
                &[
                    ("name", "Big mug"),
                    ("price", "11.50"),
                    ("attributes", "{\"ml\": 400}"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], format!("{path}?saved=1").as_str());
        let p: Value = app
            .get(&token, &format!("/v1/products/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(p["name"], "Big mug");
        assert_eq!(p["price"], "11.50");
        assert_eq!(p["attributes"], json!({"ml": 400}));
        assert_eq!(p["active"], false, "an unchecked box withdraws it");
    }

    #[tokio::test]
    async fn seller_forms_without_csrf_are_403_and_change_nothing() {
        let app = TestApp::spawn().await;
        let (console, token, _) = new_seller(&app).await;
        let id = product(&app, &token, "Bowl", "5.00", 4).await;
        let r = console
            .post_without_csrf(
                &format!("/seller/products/{id}/stock"),
                &[("reason", "restock"), ("delta", "5")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = console
            .post_without_csrf(
                "/seller/products/new",
                &[
                    ("sku", "X"),
                    ("name", "X"),
                    ("price", "1.00"),
                    ("currency", "EUR"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.available(&id).await, 4);
    }

    #[tokio::test]
    async fn others_get_403_on_seller_pages_and_a_seller_404_on_anothers_product() {
        let app = TestApp::spawn().await;
        let customer = Console::sign_in(&app, "customer").await;
        for path in ["/seller/products", "/seller/orders", "/seller/products/new"] {
            assert_eq!(
                customer.get(path).await.status(),
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        let courier = Console::sign_in(&app, "courier").await;
        assert_eq!(
            courier.get("/seller/products").await.status(),
            StatusCode::FORBIDDEN
        );
        let (_, token, _) = new_seller(&app).await;
        let theirs = product(&app, &token, "Vase", "40.00", 1).await;
        let (other, _, _) = new_seller(&app).await;
        assert_eq!(
            other
                .get(&format!("/seller/products/{theirs}"))
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        let r = other
            .post(
                &format!("/seller/products/{theirs}/stock"),
                &[("reason", "restock"), ("delta", "5")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.available(&theirs).await, 1);
        let empty = other.get("/seller/products").await.text().await.unwrap();
        assert!(empty.contains("No products yet"), "{empty}");
    }

    #[tokio::test]
    async fn a_product_created_in_the_console_is_in_the_catalog_with_its_stock() {
        let app = TestApp::spawn().await;
        let (console, token, seller_id) = new_seller(&app).await;
        let form = [
            ("sku", "CON-1"),
            ("name", "Console chair"),
            ("price", "120.00"),
            ("currency", "eur"),
            ("initial_stock", "8"),
            ("attributes", "{\"wood\": \"oak\"}"),
        ];
        let r = console.post("/seller/products/new", &form).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
        let id = location
            .strip_prefix("/seller/products/")
            .and_then(|rest| rest.strip_suffix("?created=1"))
            .unwrap()
            .to_owned();
        let p: Value = app
            .get(&token, &format!("/v1/products/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (p["available"].as_i64(), p["seller_id"].as_str()),
            (Some(8), Some(seller_id.as_str()))
        );
        assert_eq!(p["currency"], "EUR");
        let again = console.post("/seller/products/new", &form).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(
            again
                .text()
                .await
                .unwrap()
                .contains("a product with this sku exists")
        );
    }
}

/// The courier's pages: active shipments, and reporting from the page.
mod courier {
    use super::*;

    async fn shipment_of(app: &TestApp, order_id: &str) -> String {
        let courier = app.token("courier").await;
        let path = format!("/v1/orders/{order_id}/shipment");
        common::eventually("the shipment exists", || async {
            app.get(&courier, &path).await.status() == StatusCode::OK
        })
        .await;
        let s: Value = app.get(&courier, &path).await.json().await.unwrap();
        s["id"].as_str().unwrap().to_owned()
    }

    async fn api_status(app: &TestApp, shipment: &str) -> Value {
        let courier = app.token("courier").await;
        app.get(&courier, &format!("/v1/shipments/{shipment}"))
            .await
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_courier_reports_picked_up_from_the_page_and_the_api_sees_it() {
        let app =
            TestApp::spawn_with(|b| b, |c| c.courier_sim = ordo_app::config::CourierSim::Off).await;
        let customer = app.token("customer").await;
        let order = app
            .create_order(&customer, &app.product_id(0).await, 1)
            .await;
        let shipment = shipment_of(&app, order["id"].as_str().unwrap()).await;
        let console = Console::sign_in(&app, "courier").await;

        let list = console.get("/courier").await;
        assert_eq!(list.status(), StatusCode::OK);
        let html = list.text().await.unwrap();
        assert!(
            html.contains(&format!("/courier/shipments/{shipment}")),
            "{html}"
        );
        assert!(html.contains("data-refresh=\"5000\""), "{html}");
        let fragment = console
            .get("/courier?fragment=list")
            .await
            .text()
            .await
            .unwrap();
        assert!(
            fragment.contains(&shipment) && !fragment.contains("<html"),
            "{fragment}"
        );

        let path = format!("/courier/shipments/{shipment}");
        let page = console.get(&path).await.text().await.unwrap();
        assert!(page.contains("value=\"picked_up\""), "{page}");
        let r = console
            .post(&format!("{path}/events"), &[("type", "picked_up")])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[LOCATION],
            format!("{path}?reported=picked_up").as_str()
        );
        assert_eq!(api_status(&app, &shipment).await["status"], "picked_up");
        let page = console
            .get(&format!("{path}?reported=picked_up"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("Reported: picked up.") && page.contains("by you"),
            "{page}"
        );

        // The same rules and words as the API: a repeat is a conflict, a
        // stop the route does not have names the field.
        let again = console
            .post(&format!("{path}/events"), &[("type", "picked_up")])
            .await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(again.text().await.unwrap().contains("already picked up"));
        let far = console
            .post(
                &format!("{path}/events"),
                &[("type", "waypoint_reached"), ("waypoint", "99")],
            )
            .await;
        assert_eq!(far.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(far.text().await.unwrap().contains("<code>waypoint</code>"));
        let no_reason = console
            .post(
                &format!("{path}/events"),
                &[("type", "failed"), ("reason", " ")],
            )
            .await;
        assert_eq!(no_reason.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            no_reason
                .text()
                .await
                .unwrap()
                .contains("<code>reason</code>")
        );

        let r = console
            .post(&format!("{path}/events"), &[("type", "delivered")])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(api_status(&app, &shipment).await["status"], "delivered");
        let list = console.get("/courier").await.text().await.unwrap();
        assert!(
            !list.contains(&shipment),
            "a delivered shipment is not active: {list}"
        );
    }

    #[tokio::test]
    async fn only_couriers_and_admins_use_the_courier_pages() {
        let app =
            TestApp::spawn_with(|b| b, |c| c.courier_sim = ordo_app::config::CourierSim::Off).await;
        let token = app.token("customer").await;
        let order = app.create_order(&token, &app.product_id(0).await, 1).await;
        let shipment = shipment_of(&app, order["id"].as_str().unwrap()).await;
        let customer = Console::sign_in(&app, "customer").await;
        assert_eq!(
            customer.get("/courier").await.status(),
            StatusCode::FORBIDDEN
        );
        let path = format!("/courier/shipments/{shipment}");
        assert_eq!(customer.get(&path).await.status(), StatusCode::FORBIDDEN);
        let r = customer
            .post(&format!("{path}/events"), &[("type", "picked_up")])
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let courier = Console::sign_in(&app, "courier").await;
        let r = courier
            .post_without_csrf(&format!("{path}/events"), &[("type", "picked_up")])
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(api_status(&app, &shipment).await["status"], "created");
    }
}

// --- The admin overview, order search and order view -------------------------

/// The counts of the overview's status cards, by status.
fn status_counts(html: &str) -> Vec<(String, u64)> {
    html.split("<span class=\"value\">")
        .skip(1)
        .filter_map(|rest| {
            let (value, rest) = rest.split_once("</span>")?;
            let label = rest
                .strip_prefix("<span class=\"label\">")?
                .split('<')
                .next()?;
            let status = [
                "pending",
                "confirmed",
                "paid",
                "shipped",
                "delivered",
                "cancelled",
            ]
            .into_iter()
            .find(|s| *s == label)?;
            Some((status.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn text(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    response.text().await.unwrap()
}

#[tokio::test]
async fn admin_overview_counts_an_order_placed_through_the_api() {
    let app = TestApp::spawn().await;
    let admin = Console::sign_in(&app, "admin").await;
    let before = text(admin.get("/admin").await, StatusCode::OK).await;
    assert!(before.contains("data-refresh=\"3000\"") && before.contains("<svg"));
    assert!(
        before.contains("Circuit breaker"),
        "the gateway's breaker is shown"
    );
    assert_eq!(
        status_counts(&before).iter().map(|(_, n)| n).sum::<u64>(),
        0
    );

    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let mut body = common::order_body(&product, 1);
    body["payment"]["token"] = "tok_declined".into();
    let order: Value = app
        .post_json(&customer, "/v1/orders", &body)
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&customer, id, "cancelled").await;

    let region = text(admin.get("/admin?fragment=overview").await, StatusCode::OK).await;
    assert!(!region.contains("<html"), "the fragment is the region only");
    let counts = status_counts(&region);
    assert_eq!(counts.len(), 6, "{region}");
    assert!(counts.contains(&("cancelled".to_owned(), 1)), "{counts:?}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 1);
    assert!(
        region.contains("payment failed"),
        "the cancellation's reason"
    );
    // The API says the same.
    let api: Value = app
        .get(&app.token("admin").await, "/v1/admin/overview")
        .await
        .json()
        .await
        .unwrap();
    let cancelled = api["by_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "cancelled")
        .unwrap()["count"]
        .clone();
    assert_eq!(cancelled, 1);
    assert_eq!(api["cancellations"][0]["key"], "payment_failed");
}

#[tokio::test]
async fn admin_search_filters_by_status_and_attribute_and_names_a_bad_created_from() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let mut declined = common::order_body(&product, 1);
    declined["payment"]["token"] = "tok_declined".into();
    declined["attributes"] = serde_json::json!({"channel": "web"});
    let declined: Value = app
        .post_json(&customer, "/v1/orders", &declined)
        .await
        .json()
        .await
        .unwrap();
    let declined = declined["id"].as_str().unwrap().to_owned();
    // order_body marks it a gift.
    let gift = app.create_order(&customer, &product, 1).await;
    let gift = gift["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&customer, &declined, "cancelled").await;

    let admin = Console::sign_in(&app, "admin").await;
    let all = text(admin.get("/admin/orders").await, StatusCode::OK).await;
    assert!(all.contains(&declined) && all.contains(&gift));
    let cancelled = text(
        admin.get("/admin/orders?status=cancelled").await,
        StatusCode::OK,
    )
    .await;
    assert!(cancelled.contains(&declined) && !cancelled.contains(&gift));
    let gifts = text(
        admin.get("/admin/orders?attributes=gift%3Dtrue").await,
        StatusCode::OK,
    )
    .await;
    assert!(gifts.contains(&gift) && !gifts.contains(&declined));
    let by_customer = text(
        admin
            .get(&format!(
                "/admin/orders?customer={}&attributes=channel%3Dweb",
                app.client_id("customer")
            ))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(by_customer.contains(&declined) && !by_customer.contains(&gift));

    let bad = text(
        admin.get("/admin/orders?created_from=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(bad.contains("<code>created_from</code>"), "{bad}");
    assert!(!bad.contains(&gift), "no results beside the error");
    let bad = text(
        admin.get("/admin/orders?attributes=a%20b%3D1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(bad.contains("<code>attr.a b</code>"), "{bad}");
    // A datetime-local value is read as UTC.
    let ranged = text(
        admin
            .get("/admin/orders?created_from=2000-01-01T00%3A00&created_to=2001-01-01T00%3A00")
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(ranged.contains("No order matches."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_order_page_shows_the_reservation_payment_and_shipment_of_a_delivered_order() {
    let app = TestApp::spawn_with(
        |b| b,
        |c| {
            c.courier_sim = ordo_app::config::CourierSim::Pace(std::time::Duration::from_millis(10))
        },
    )
    .await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&customer, id, "delivered").await;
    app.wait_for_quiet_bus().await;

    let admin = Console::sign_in(&app, "admin").await;
    let page = text(
        admin.get(&format!("/admin/orders/{id}")).await,
        StatusCode::OK,
    )
    .await;
    for part in [
        "Reservation",
        "Payment",
        "Shipment",
        "Timeline",
        "Courier log",
    ] {
        assert!(
            page.contains(&format!("<h2>{part}</h2>"))
                || page.contains(&format!("<h3>{part}</h3>")),
            "{part}"
        );
    }
    assert!(
        page.contains(">committed</span>"),
        "the reservation's state: {page}"
    );
    assert!(page.contains(">captured</span>"), "the payment's state");
    assert!(page.contains("capture"), "its gateway calls");
    assert!(page.contains(">delivered</span>"), "the shipment's state");
    assert!(page.contains("order.delivered"), "the timeline");
    // The live region re-renders on its own.
    let region = text(
        admin
            .get(&format!("/admin/orders/{id}?fragment=live"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(region.contains("Reservation") && !region.contains("<html"));
}

#[tokio::test]
async fn admin_partial_refund_in_the_console_is_what_the_api_reports() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&customer, id, "paid").await;
    let payments = || async {
        let body: Value = app
            .get(&customer, &format!("/v1/orders/{id}/payments"))
            .await
            .json()
            .await
            .unwrap();
        body["items"][0].clone()
    };
    let payment = payments().await;
    let payment_id = payment["id"].as_str().unwrap();
    assert_eq!(payment["refunded"], "0.00");

    let admin = Console::sign_in(&app, "admin").await;
    let path = format!("/admin/payments/{payment_id}/refund");
    let done = admin
        .post(
            &path,
            &[("order", id), ("amount", "1.50"), ("reason", "goodwill")],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        done.headers()[LOCATION].to_str().unwrap(),
        format!("/admin/orders/{id}?refunded=1")
    );
    let payment = payments().await;
    assert_eq!(payment["refunded"], "1.50");
    assert_eq!(payment["refunds"][0]["reason"], "goodwill");

    // More than is left: the API's problem, naming the field.
    let refused = admin
        .post(
            &path,
            &[("order", id), ("amount", "100000"), ("reason", "")],
        )
        .await;
    let page = text(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(page.contains("<code>amount</code>"), "{page}");
    let refused = admin.post(&path, &[("order", id), ("amount", "abc")]).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(payments().await["refunded"], "1.50");
    // Without the session's token nothing happens.
    let forged = admin
        .post_without_csrf(&path, &[("order", id), ("amount", "1.00")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(payments().await["refunded"], "1.50");
}

#[tokio::test]
async fn admin_pages_are_403_for_a_customer() {
    let app = TestApp::spawn().await;
    let customer_token = app.token("customer").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&customer_token, &product, 1).await;
    let id = order["id"].as_str().unwrap();
    let customer = Console::sign_in(&app, "customer").await;
    for path in [
        "/admin".to_owned(),
        "/admin?fragment=overview".to_owned(),
        "/admin/orders".to_owned(),
        format!("/admin/orders/{id}"),
    ] {
        assert_eq!(
            customer.get(&path).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let refund = customer
        .post(
            "/admin/payments/pay_01J00000000000000000000000/refund",
            &[("order", id)],
        )
        .await;
    assert_eq!(refund.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get(&customer_token, "/v1/admin/overview")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}
