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
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
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
async fn the_command_line_migrates_shows_config_and_creates_clients() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = cli(dir.path(), &["migrate"]);
    assert!(migrated.contains("orders: migrated"));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["config", "--data-dir"])
        .arg(dir.path())
        .env("ORDO_LISTEN", "127.0.0.1:9999")
        .env("ORDO_COURIER_SIM", "2s")
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["listen"], "127.0.0.1:9999");
    assert_eq!(config["courier_sim"], "2000ms");

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
