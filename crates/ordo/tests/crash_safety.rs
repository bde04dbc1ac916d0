//! Acknowledged means durable: kill -9 under load loses no 2xx order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::order_body;
use common::process::{Server, demo_token as token};
use ordo_bus::OutboxStore;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_a_kill_9_with_exactly_one_created_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let customer = token(&http, &base, dir.path(), "customer").await;
    let admin = token(&http, &base, dir.path(), "admin").await;
    common::eventually("the demo catalog reached the orders projection", || async {
        let body: Value = http
            .get(format!("{base}/v1/admin/outbox"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["outboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["backlog"] == 0)
    })
    .await;
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

    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let (http, base, customer, product) = (
            http.clone(),
            base.clone(),
            customer.clone(),
            product.clone(),
        );
        let (acknowledged, answered) = (acknowledged.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&customer)
                .json(&order_body(&product, 1))
                .send()
                .await;
            if let Ok(response) = response {
                let status = response.status();
                if let Ok(body) = response.json::<Value>().await {
                    assert!(
                        status.is_success() || status.is_server_error(),
                        "{status}: {body}"
                    );
                    if status == StatusCode::CREATED {
                        let mut acknowledged = acknowledged.lock().unwrap();
                        acknowledged.push(body["id"].as_str().unwrap().to_owned());
                        if acknowledged.len() == 100 {
                            answered.notify_one();
                        }
                    }
                }
            }
        }));
    }
    // Kill while the load is in full swing.
    answered.notified().await;
    server.kill_9();
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < 500,
        "the kill landed mid-run ({} acknowledged)",
        acknowledged.len()
    );

    let mut server = Server::start(dir.path(), &[]);
    let base = server.base.clone();
    let customer = token(&http, &base, dir.path(), "customer").await;
    for id in &acknowledged {
        let response = http
            .get(format!("{base}/v1/orders/{id}"))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged order {id} exists after the crash"
        );
    }
    server.terminate();

    let db = ordo_sqlite::Database::open(
        "check",
        &dir.path().join("orders.db"),
        &[],
        Default::default(),
    )
    .unwrap();
    let outbox = ordo_sqlite::SqliteOutbox::new("orders", db.clone());
    let stored: Vec<String> = db
        .read(|c| {
            let mut s = c
                .prepare("SELECT id FROM orders")
                .map_err(ordo_sqlite::store_error)?;
            let ids = s
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(ordo_sqlite::store_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(ordo_sqlite::store_error)?;
            Ok(ids)
        })
        .await
        .unwrap();
    let stored_set: HashSet<&String> = stored.iter().collect();
    for id in &acknowledged {
        assert!(stored_set.contains(id));
    }
    // Every stored order, acknowledged or not, was written with its event.
    for id in &stored {
        let events = outbox.events_for_subject(id).await.unwrap();
        let created = events
            .iter()
            .filter(|e| e.event_type == "order.created.v1")
            .count();
        assert_eq!(created, 1, "order {id} has exactly one order.created");
    }
}
