//! Health, metrics, the API description, and the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Server, cli};
use common::{TestApp, order_body};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn health_metrics_and_the_api_description_are_served() {
    let app = TestApp::spawn().await;
    let live = app.http.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready: Value = app
        .http
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["orders_db"], "ok");

    let customer = app.token("customer").await;
    app.create_order(&customer, &app.product_id(0).await, 1)
        .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{method="POST",route="/v1/orders",status="201"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"ordo_outbox_backlog{service="orders"}"#));
    assert!(metrics.contains("ordo_bus_deliveries_total"));
    assert!(
        metrics.contains("ordo_payments_gateway_breaker_state 0"),
        "the breaker is closed: {metrics}"
    );

    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/orders",
        "/v1/orders/{id}",
        "/v1/orders/{id}/cancel",
        "/v1/orders/{id}/timeline",
        "/oauth/token",
        "/v1/products",
        "/v1/admin/clients",
        "/v1/admin/dead-letters",
        "/v1/admin/stuck-orders",
        "/v1/admin/audit",
        "/v1/admin/chaos",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    let stuck = &spec["paths"]["/v1/admin/stuck-orders"]["get"];
    assert!(stuck["responses"]["422"]["content"]["application/problem+json"].is_object());
    assert_eq!(stuck["security"][0]["bearer"], serde_json::json!([]));
    assert!(spec["components"]["schemas"]["CreateOrderRequest"].is_object());
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let page = docs.text().await.unwrap();
    assert!(
        page.contains("<html") && page.contains("Ordo API"),
        "the docs page carries the spec"
    );
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn the_docs_are_served_by_the_binary_and_refer_to_no_other_host() {
    let app = TestApp::spawn().await;
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header(&docs, "content-type").starts_with("text/html"));
    let csp = header(&docs, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let page = docs.text().await.unwrap();

    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() > 10);
    // The page's text, without its markup.
    let mut text = String::new();
    let mut in_tag = false;
    for c in page.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    for path in paths.keys() {
        assert!(text.contains(path.as_str()), "{path} is on the page");
    }
    for name in spec["components"]["schemas"].as_object().unwrap().keys() {
        assert!(page.contains(&format!(r#"id="schema-{name}""#)), "{name}");
    }
    for attr in ["href=\"", "src=\"", "action=\""] {
        for value in page.split(attr).skip(1) {
            let value = &value[..value.find('"').unwrap()];
            assert!(
                value.starts_with('#') || (value.starts_with('/') && !value.starts_with("//")),
                "{attr}{value}: only this origin"
            );
        }
    }
    assert!(!page.contains(" style="), "no inline styles");
    assert!(!page.contains("<script>"), "no inline scripts");

    for (asset, kind) in [
        ("/docs/reference.css", "text/css"),
        ("/docs/reference.js", "text/javascript"),
    ] {
        assert!(page.contains(asset), "{asset} is linked");
        let first = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert!(header(&first, "content-type").starts_with(kind));
        assert!(header(&first, "cache-control").contains("max-age"));
        let etag = header(&first, "etag");
        assert!(etag.starts_with('"'), "{etag}");
        assert!(!first.text().await.unwrap().is_empty());
        let again = app
            .http
            .get(app.url(asset))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn the_command_line_migrates_shows_config_and_creates_clients() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = cli(dir.path(), &["migrate"]);
    assert!(migrated.contains("orders: migrated"));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["config", "--data-dir"])
        .arg(dir.path())
        .env("ORDO_LISTEN", "127.0.0.1:9999")
        .env("ORDO_COURIER_SIM", "2s")
        .env("ORDO_CHAOS", "false")
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["listen"], "127.0.0.1:9999");
    assert_eq!(config["courier_sim"], "2000ms");
    assert_eq!(config["chaos"], false, "on with the demo unless told");
    let chaos_flag = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["config", "--no-demo", "--chaos"])
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&chaos_flag.stdout).unwrap();
    assert_eq!(config["chaos"], true);

    let postgres = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args([
            "config",
            "--database-url",
            "postgres://ordo:hunter2@db/ordo",
        ])
        .output()
        .unwrap();
    assert!(postgres.status.success());
    let config: Value = serde_json::from_slice(&postgres.stdout).unwrap();
    assert_eq!(config["database_url"], "postgres://ordo:[redacted]@db/ordo");
    let in_query = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args([
            "config",
            "--database-url",
            "postgres://u:pw@127.0.0.1/db?password=pw2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&in_query.stdout);
    assert!(in_query.status.success(), "{stdout}");
    assert!(
        !stdout.contains(":pw@") && !stdout.contains("pw2"),
        "neither password is shown: {stdout}"
    );
    let config: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        config["database_url"],
        "postgres://u:[redacted]@127.0.0.1/db?password=[redacted]"
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["config", "--database-url", "mysql://ordo:hunter2@db/ordo"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "an unsupported backend is refused, not ignored"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is redacted");

    let created: Value = serde_json::from_str(&cli(
        dir.path(),
        &["client", "create", "--role", "customer", "--name", "shop"],
    ))
    .unwrap();
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();

    // The credentials work against a server on the same data directory.
    let server = Server::start(dir.path(), &[("ORDO_DEMO", "false")]);
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/oauth/token", server.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let products: Value = http
        .get(format!("{}/v1/products", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        products["items"],
        serde_json::json!([]),
        "no demo catalog with ORDO_DEMO=false"
    );
    assert!(!dir.path().join("demo-credentials.json").exists());
    let refused = http
        .post(format!("{}/v1/orders", server.base))
        .bearer_auth(token)
        .json(&order_body("prd_01J00000000000000000000000", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_restart_keeps_clients_orders_and_tokens() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let order = app
        .create_order(&customer, &app.product_id(0).await, 2)
        .await;
    let dir = app.stop().await;
    let server = Server::start(dir.path(), &[]);
    let fetched = reqwest::Client::new()
        .get(format!(
            "{}/v1/orders/{}",
            server.base,
            order["id"].as_str().unwrap()
        ))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        fetched.status(),
        StatusCode::OK,
        "a token from before the restart still works"
    );
    let body: Value = fetched.json().await.unwrap();
    for field in [
        "id",
        "customer_id",
        "total",
        "currency",
        "items",
        "shipping_address",
        "created_at",
    ] {
        assert_eq!(body[field], order[field], "{field}");
    }
}

// --- Chaos controls ---------------------------------------------------------

async fn chaos(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .http
        .request(method, app.url("/v1/admin/chaos"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn set_chaos(app: &TestApp, admin: &str, body: Value) -> Value {
    let r = chaos(app, admin, reqwest::Method::PUT, Some(body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn gauge(metrics: &str, control: &str) -> f64 {
    let prefix = format!("ordo_chaos_active{{control=\"{control}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no gauge for {control}: {metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn chaos_controls_are_refused_unless_the_setting_enables_them() {
    let app = TestApp::spawn_with(|b| b, |c| c.chaos = false).await;
    let admin = app.token("admin").await;
    let r = chaos(&app, &admin, reqwest::Method::GET, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["enabled"], false);
    assert_eq!(status["active"], serde_json::json!([]));
    assert_eq!(status["gateway_simulator"], true);
    assert_eq!(
        status["services"],
        serde_json::json!(["orders", "inventory", "payments", "delivery"])
    );

    let body = serde_json::json!({"gateway": {"decline_percent": 100}});
    let refused = common::problem(
        chaos(&app, &admin, reqwest::Method::PUT, Some(body)).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(refused["type"], "/problems/chaos-disabled");
    assert!(
        refused["detail"].as_str().unwrap().contains("--chaos"),
        "{refused}"
    );
    common::problem(
        chaos(&app, &admin, reqwest::Method::DELETE, None).await,
        StatusCode::CONFLICT,
    )
    .await;
    let status: Value = chaos(&app, &admin, reqwest::Method::GET, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"]["gateway"]["decline_percent"], 0);

    let metrics = metrics(&app).await;
    assert!(metrics.contains("ordo_chaos_enabled 0"), "{metrics}");
    assert_eq!(gauge(&metrics, "gateway_decline"), 0.0);
}

#[tokio::test]
async fn chaos_that_declines_every_charge_cancels_orders_and_shows_in_the_metrics() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let customer = app.token("customer").await;
    common::problem(
        chaos(&app, &customer, reqwest::Method::GET, None).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    common::problem(
        chaos(&app, &customer, reqwest::Method::DELETE, None).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    let invalid = serde_json::json!({
        "gateway": {"decline_percent": 60, "transient_percent": 50},
        "paused": ["billing"],
        "duplicate_percent": 101,
    });
    let problem = common::problem(
        chaos(&app, &admin, reqwest::Method::PUT, Some(invalid)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        common::fields(&problem),
        ["duplicate_percent", "gateway", "paused[0]"]
    );

    let status = set_chaos(
        &app,
        &admin,
        serde_json::json!({"gateway": {"decline_percent": 100}, "duplicate_percent": 100}),
    )
    .await;
    assert_eq!(
        status["active"],
        serde_json::json!([
            "gateway: 100 % of charges are declined",
            "bus: 100 % of deliveries duplicated"
        ])
    );
    assert_eq!(status["state"]["gateway"]["transient_percent"], 0);
    let metrics_now = metrics(&app).await;
    assert!(
        metrics_now.contains("ordo_chaos_enabled 1"),
        "{metrics_now}"
    );
    assert_eq!(gauge(&metrics_now, "gateway_decline"), 1.0);
    assert_eq!(gauge(&metrics_now, "bus_duplicate"), 1.0);
    assert_eq!(gauge(&metrics_now, "gateway_transient"), 0.0);
    assert_eq!(gauge(&metrics_now, "pause_payments"), 0.0);

    let product = app.product_id(0).await;
    let declined = app.create_order(&customer, &product, 1).await;
    let declined = declined["id"].as_str().unwrap();
    let order = app.wait_for_status(&customer, declined, "cancelled").await;
    assert_eq!(order["cancellation_reason"], "payment_failed");

    let r = chaos(&app, &admin, reqwest::Method::DELETE, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["active"], serde_json::json!([]));
    assert_eq!(gauge(&metrics(&app).await, "gateway_decline"), 0.0);
    let paid = app.create_order(&customer, &product, 1).await;
    app.wait_for_status(&customer, paid["id"].as_str().unwrap(), "paid")
        .await;
    app.assert_invariants(&[ordo_orders::domain::OrderStatus::Paid])
        .await;
}

#[tokio::test]
async fn chaos_that_fails_every_charge_transiently_fails_the_payment_once_its_retries_run_out() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let customer = app.token("customer").await;
    set_chaos(
        &app,
        &admin,
        serde_json::json!({"gateway": {"transient_percent": 100}}),
    )
    .await;
    assert_eq!(gauge(&metrics(&app).await, "gateway_transient"), 1.0);
    let order = app
        .create_order(&customer, &app.product_id(0).await, 1)
        .await;
    let id = order["id"].as_str().unwrap();
    let order = app.wait_for_status(&customer, id, "cancelled").await;
    assert_eq!(order["cancellation_reason"], "payment_failed");
    let payments: Value = app
        .get(&customer, &format!("/v1/orders/{id}/payments"))
        .await
        .json()
        .await
        .unwrap();
    let payment = &payments["items"][0];
    assert_eq!(payment["status"], "failed", "{payments}");
    assert_eq!(payment["failure_reason"], "gateway_unavailable");
    assert_eq!(payment["captured"], "0.00");
    app.assert_invariants(&[]).await;
}

#[tokio::test]
async fn chaos_pausing_a_service_holds_an_order_until_it_resumes_and_the_server_still_stops() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let customer = app.token("customer").await;
    let status = set_chaos(&app, &admin, serde_json::json!({"paused": ["payments"]})).await;
    assert_eq!(
        status["active"],
        serde_json::json!(["payments: consumers paused"])
    );
    assert_eq!(gauge(&metrics(&app).await, "pause_payments"), 1.0);

    let product = app.product_id(0).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&customer, id, "confirmed").await;
    // Held: for a while, nothing charges it, and nothing fails.
    let held_until = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while tokio::time::Instant::now() < held_until {
        let order: Value = app
            .get(&customer, &format!("/v1/orders/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], "confirmed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let bus: Value = app
        .get(&admin, "/v1/admin/outbox")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bus["dead_lettered"], 0);

    // Resumed by a state without the pause.
    let status = set_chaos(&app, &admin, serde_json::json!({})).await;
    assert_eq!(status["state"]["paused"], serde_json::json!([]));
    app.wait_for_status(&customer, id, "paid").await;
    app.wait_for_quiet_bus().await;
    assert_eq!(
        app.get(&admin, "/v1/admin/outbox")
            .await
            .json::<Value>()
            .await
            .unwrap()["failed_attempts"],
        0
    );

    // A server with paused consumers and a held order stops all the same.
    set_chaos(&app, &admin, serde_json::json!({"paused": ["orders"]})).await;
    let held = app.create_order(&customer, &product, 1).await;
    assert_eq!(held["status"], "pending");
    tokio::time::timeout(std::time::Duration::from_secs(30), app.stop())
        .await
        .expect("the server stops while consumers are paused");
}
