//! `ordo serve --database-url postgres://…`: the real binary on a fresh
//! PostgreSQL database runs the demo end to end, and a restart keeps
//! everything (the demo is created once, in the database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Server, cli, demo_token};
use common::{eventually, order_body};
use ordo_postgres::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_on_postgresql_and_survives_a_restart() {
    let Some(database) = TestDatabase::create().await else {
        eprintln!("ORDO_TEST_DATABASE_URL is not set; the PostgreSQL run is skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let migrated = cli(dir.path(), &["migrate", "--database-url", database.url()]);
    for schema in ["orders", "inventory", "payments", "delivery", "auth", "bus"] {
        assert!(
            migrated.contains(&format!("{schema}: migrated (schema {schema})")),
            "{migrated}"
        );
    }

    // The read pool points at the same server: the GET endpoints go
    // through it, as they would to a replica.
    let env = [
        ("ORDO_DATABASE_URL", database.url()),
        ("ORDO_READ_DATABASE_URL", database.url()),
        ("ORDO_COURIER_SIM", "20ms"),
    ];
    let mut server = Server::start(dir.path(), &env);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let customer = demo_token(&http, &base, dir.path(), "customer").await;
    let ready: Value = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    let products: Value = http
        .get(format!("{base}/v1/products"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = products["items"][0]["id"].as_str().unwrap().to_owned();
    // The catalog reaches the orders projection through the outbox.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let order = loop {
        let response = http
            .post(format!("{base}/v1/orders"))
            .bearer_auth(&customer)
            .json(&order_body(&product, 1))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::CREATED {
            let body: Value = response.json().await.unwrap();
            break body["id"].as_str().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no order was accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let status = |http: reqwest::Client, base: String, token: String, order: String| async move {
        let body: Value = http
            .get(format!("{base}/v1/orders/{order}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["status"].as_str().unwrap_or_default().to_owned()
    };
    eventually("the order is delivered", || {
        let s = status(http.clone(), base.clone(), customer.clone(), order.clone());
        async move { s.await == "delivered" }
    })
    .await;
    server.terminate();

    // A second start finds the demo in the database and creates nothing.
    let credentials = std::fs::read(dir.path().join("demo-credentials.json")).unwrap();
    let server = Server::start(dir.path(), &env);
    assert_eq!(
        std::fs::read(dir.path().join("demo-credentials.json")).unwrap(),
        credentials
    );
    let base = server.base.clone();
    let customer = demo_token(&http, &base, dir.path(), "customer").await;
    assert_eq!(
        status(http.clone(), base, customer, order).await,
        "delivered"
    );
}
