//! The saga end to end, every path, on SQLite and on PostgreSQL (one process, in-process bus).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp, order_body};
use ordo_orders::domain::OrderStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn an_order_for_more_than_the_stock_is_cancelled_out_of_stock_and_holds_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let (_, product) = app.product_with_stock(3, "5.00").await;
    let order = app.create_order(&customer, &product, 4).await;
    let id = order["id"].as_str().unwrap();
    let cancelled = app.wait_for_status(&customer, id, "cancelled").await;
    assert_eq!(cancelled["cancellation_reason"], "out_of_stock");
    assert_eq!(app.available(&product).await, 3, "nothing held");
    let admin = app.token("admin").await;
    let reservation: Value = app
        .get(&admin, &format!("/v1/orders/{id}/reservation"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reservation["status"], "failed");
    assert_eq!(reservation["lines"], json!([]));
    common::problem(
        app.get(&customer, &format!("/v1/orders/{id}/reservation"))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    app.assert_invariants(&[]).await;
    app.assert_no_server_errors().await;
}

async fn prefer_wait_answers_with_the_sagas_first_decision(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let (_, product) = app.product_with_stock(1, "5.00").await;
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Prefer", "wait=10")
        .json(&order_body(&product, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "cancelled", "decided before the answer");
    assert_eq!(order["cancellation_reason"], "out_of_stock");

    let started = std::time::Instant::now();
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Prefer", "wait=10")
        .json(&order_body(&product, 1))
        .send()
        .await
        .unwrap();
    let order: Value = response.json().await.unwrap();
    assert_ne!(order["status"], "pending", "{order}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at the decision, not the limit"
    );
}

async fn five_hundred_buyers_of_the_last_ten_units_leave_exactly_ten_orders_standing(
    backend: Backend,
) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let (_, product) = app.product_with_stock(10, "99.00").await;
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let (http, url, token, body) = (
            app.http.clone(),
            app.url("/v1/orders"),
            customer.clone(),
            order_body(&product, 1),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let order: Value = r.json().await.unwrap();
            order["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    app.wait_for_quiet_bus().await;
    let mut standing = 0;
    let mut out_of_stock = 0;
    for id in &ids {
        let o: Value = app
            .get(&customer, &format!("/v1/orders/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if o["status"] == "cancelled" {
            assert_eq!(o["cancellation_reason"], "out_of_stock");
            out_of_stock += 1;
        } else {
            standing += 1;
        }
    }
    assert_eq!(standing, 10, "exactly the stock was sold");
    assert_eq!(out_of_stock, 490);
    assert_eq!(app.available(&product).await, 0);
    app.assert_invariants(&[
        OrderStatus::Confirmed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
    ])
    .await;
}

async fn sellers_manage_their_catalog_and_stock_and_orders_see_the_new_price(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let (seller, product) = app.product_with_stock(5, "10.00").await;
    let (_, other_seller) = app.new_client("seller").await;
    let customer = app.token("customer").await;

    let changed = app
        .http
        .patch(app.url(&format!("/v1/products/{product}")))
        .bearer_auth(&seller)
        .json(&json!({"price": "12.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let foreign = app
        .http
        .patch(app.url(&format!("/v1/products/{product}")))
        .bearer_auth(&other_seller)
        .json(&json!({"price": "0.01"}))
        .send()
        .await
        .unwrap();
    common::problem(foreign, StatusCode::NOT_FOUND).await;

    let restocked = app
        .post_json(
            &seller,
            &format!("/v1/products/{product}/stock"),
            &json!({"delta": 7, "reason": "restock"}),
        )
        .await;
    let level: Value = restocked.json().await.unwrap();
    assert_eq!(level["available"], 12);
    let too_much = app
        .post_json(
            &seller,
            &format!("/v1/products/{product}/stock"),
            &json!({"delta": -13, "reason": "correction"}),
        )
        .await;
    common::problem(too_much, StatusCode::CONFLICT).await;
    let bad = app
        .post_json(
            &seller,
            &format!("/v1/products/{product}/stock"),
            &json!({"delta": -1, "reason": "restock"}),
        )
        .await;
    let body = common::problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(common::fields(&body), ["delta"]);
    let not_a_seller = app
        .post_json(
            &customer,
            "/v1/products",
            &json!({"sku": "X", "name": "X", "price": "1.00", "currency": "EUR"}),
        )
        .await;
    common::problem(not_a_seller, StatusCode::FORBIDDEN).await;

    app.wait_for_quiet_bus().await;
    let order = app.create_order(&customer, &product, 2).await;
    assert_eq!(
        order["total"], "24.00",
        "priced from the projection of the change"
    );
    let held: Value = app
        .get(
            &app.token("admin").await,
            &format!("/v1/orders/{}/reservation", order["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        held["lines"],
        json!([{"product_id": product, "quantity": 2}]),
        "{held}"
    );

    // A seller's list is its own catalog; a customer's is everything.
    let own: Value = app.get(&seller, "/v1/products").await.json().await.unwrap();
    let own: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(own, [product.as_str()]);
    let all: Value = app
        .get(&customer, "/v1/products")
        .await
        .json()
        .await
        .unwrap();
    assert!(all["items"].as_array().unwrap().len() > 1);
    let peek = app
        .get(
            &seller,
            &format!("/v1/products?seller={}", app.client_id("seller")),
        )
        .await;
    common::problem(peek, StatusCode::FORBIDDEN).await;
    app.assert_no_server_errors().await;
}

on_both_backends! {
    an_order_for_more_than_the_stock_is_cancelled_out_of_stock_and_holds_nothing,
    prefer_wait_answers_with_the_sagas_first_decision,
    five_hundred_buyers_of_the_last_ten_units_leave_exactly_ten_orders_standing,
    sellers_manage_their_catalog_and_stock_and_orders_see_the_new_price,
}
