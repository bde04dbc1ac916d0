//! Bad input gets a 4xx problem that names the field, and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestApp, fields, order_body, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn order_count(app: &TestApp, token: &str) -> usize {
    let listed: Value = app
        .get(token, "/v1/orders?limit=200")
        .await
        .json()
        .await
        .unwrap();
    listed["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn every_kind_of_bad_order_is_refused_with_the_field_named_and_nothing_written() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let usd_free = app.product_id(1).await;
    let good = order_body(&product, 1);
    let with = |path: &str, value: Value| {
        let mut body = good.clone();
        let mut target = &mut body;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            target = match part.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*part],
            };
        }
        target[parts[parts.len() - 1]] = value;
        body
    };
    let unknown_product = "prd_01J00000000000000000000000";
    let cases: Vec<(&str, Value, StatusCode, Vec<&str>)> = vec![
        (
            "quantity zero",
            with("items.0.quantity", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].quantity"],
        ),
        (
            "negative quantity",
            with("items.0.quantity", json!(-3)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].quantity"],
        ),
        (
            "absurd quantity",
            with("items.0.quantity", json!(1_000_000_000_000_i64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].quantity"],
        ),
        (
            "overflowing quantity",
            with("items.0.quantity", json!(1e30)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].quantity"],
        ),
        (
            "text quantity",
            with("items.0.quantity", json!("two")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].quantity"],
        ),
        (
            "unknown product",
            with("items.0.product_id", json!(unknown_product)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].product_id"],
        ),
        (
            "not a product id",
            with("items.0.product_id", json!("ord_x")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].product_id"],
        ),
        (
            "a price from the client",
            with("items.0.unit_price", json!("0.01")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[0].unit_price"],
        ),
        (
            "unknown top-level field",
            with("discount", json!(100)),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["discount"],
        ),
        (
            "missing address",
            {
                let mut b = good.clone();
                b.as_object_mut().unwrap().remove("shipping_address");
                b
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["shipping_address"],
        ),
        (
            "empty city",
            with("shipping_address.city", json!("  ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["shipping_address.city"],
        ),
        (
            "bad country",
            with("shipping_address.country", json!("Germany")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["shipping_address.country"],
        ),
        (
            "no lines",
            with("items", json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items"],
        ),
        (
            "attributes not an object",
            with("attributes", json!([1, 2])),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["attributes"],
        ),
        (
            "empty payment token",
            with("payment.token", json!("")),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["payment.token"],
        ),
        (
            "the same product twice",
            json!({
                "items": [{"product_id": product, "quantity": 1}, {"product_id": product, "quantity": 2}],
                "shipping_address": good["shipping_address"], "payment": good["payment"]
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[1].product_id"],
        ),
        (
            "several problems at once",
            json!({
                "items": [{"product_id": unknown_product, "quantity": 1}, {"product_id": usd_free, "quantity": 0}],
                "shipping_address": good["shipping_address"], "payment": good["payment"]
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["items[1].quantity"],
        ),
    ];
    for (what, body, status, expected) in cases {
        let response = app.post_json(&customer, "/v1/orders", &body).await;
        let body = problem(response, status).await;
        assert_eq!(fields(&body), expected, "{what}: {body}");
    }

    let malformed = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("content-type", "application/json")
        .body(r#"{"items": [{"product_id": "#)
        .send()
        .await
        .unwrap();
    let body = problem(malformed, StatusCode::BAD_REQUEST).await;
    assert!(!fields(&body).is_empty());

    let not_json = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let mut huge = good.clone();
    huge["attributes"] = json!({"padding": "x".repeat(2 * 1024 * 1024)});
    let response = app.post_json(&customer, "/v1/orders", &huge).await;
    let body = problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(fields(&body), ["body"]);
    let with_key = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "big-one")
        .json(&huge)
        .send()
        .await
        .unwrap();
    problem(with_key, StatusCode::PAYLOAD_TOO_LARGE).await;

    assert_eq!(
        order_count(&app, &customer).await,
        0,
        "no order was written"
    );
    app.assert_no_server_errors().await;
    let admin = app.token("admin").await;
    let bus: Value = app
        .get(&admin, "/v1/admin/outbox")
        .await
        .json()
        .await
        .unwrap();
    let orders_backlog = bus["outboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["service"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders_backlog["backlog"], 0);
    let dir = app.stop().await;
    let db = ordo_sqlite::Database::open(
        "check",
        &dir.path().join("orders.db"),
        &[],
        Default::default(),
    )
    .unwrap();
    let outbox_rows: i64 = db
        .read(|c| {
            c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
                .map_err(ordo_sqlite::store_error)
        })
        .await
        .unwrap();
    assert_eq!(outbox_rows, 0, "no event was written");
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_problems_too() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    problem(
        app.get(&customer, "/v1/nowhere").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get(&customer, "/v1/orders/not-an-id").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get(&customer, "/v1/orders/ord_01J00000000000000000000000")
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let delete = app
        .http
        .delete(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    problem(delete, StatusCode::METHOD_NOT_ALLOWED).await;
    app.assert_no_server_errors().await;
}

fn assert_security_headers(response: &reqwest::Response, what: &str) {
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert!(h.contains_key("referrer-policy"), "{what}");
    assert!(h.contains_key("content-security-policy"), "{what}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;

    let ok = app.get(&customer, "/v1/products").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_security_headers(&ok, "an API 200");
    assert_eq!(ok.headers()["referrer-policy"], "no-referrer");
    assert_eq!(
        ok.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(ok.headers()["cache-control"], "no-store", "authenticated");

    let unauthorized = app.http.get(app.url("/v1/orders")).send().await.unwrap();
    assert_security_headers(&unauthorized, "a 401");
    assert!(!unauthorized.headers().contains_key("cache-control"));
    problem(unauthorized, StatusCode::UNAUTHORIZED).await;

    let fallback = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_security_headers(&fallback, "the 404 fallback");
    problem(fallback, StatusCode::NOT_FOUND).await;

    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    assert_security_headers(&page, "a console page");
    assert_eq!(
        page.headers()["referrer-policy"],
        "same-origin",
        "the console's own"
    );
    assert_ne!(
        page.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'",
        "the console's own"
    );

    for path in ["/metrics", "/health/live", "/docs"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert!(response.status().is_success(), "{path}");
        assert_security_headers(&response, path);
    }
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn errors_of_the_http_stack_itself_are_problems() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;

    let put = app
        .http
        .put(app.url("/v1/products"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    problem(put, StatusCode::METHOD_NOT_ALLOWED).await;

    let huge = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE).await;

    let long = app
        .http
        .get(app.url(&format!("/v1/products?q={}", "a".repeat(20 * 1024))))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_security_headers(&long, "a 414");
    let body = problem(long, StatusCode::URI_TOO_LONG).await;
    assert_eq!(body["type"], "/problems/uri-too-long");

    let big_header = app
        .http
        .get(app.url("/v1/products"))
        .bearer_auth(&customer)
        .header("x-padding", "p".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    let body = problem(big_header, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    assert_eq!(body["type"], "/problems/request-header-fields-too-large");

    // Past hyper's own limit (a 64 KiB target) the server answers before
    // any service runs: a bare 414 (see `ordo_http::request::MAX_URI_LEN`).
    // No HTTP client builds such a URI, so it goes over a raw socket.
    let answer = raw_request(
        &app,
        &format!(
            "GET /v1/products?q={} HTTP/1.1\r\nHost: ordo\r\n\r\n",
            "a".repeat(70 * 1024)
        ),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 414"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    app.assert_no_server_errors().await;
}

/// Sends `request` as is and reads the answer until the server closes.
async fn raw_request(app: &TestApp, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}
