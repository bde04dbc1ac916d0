//! Idempotency-Key on POST /v1/orders, with Stripe's semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestApp, order_body, problem};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn fifty_concurrent_posts_with_one_key_make_exactly_one_order() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let body = order_body(&app.product_id(0).await, 3);
    let mut requests = Vec::new();
    for _ in 0..50 {
        let (http, url, token, body) = (
            app.http.clone(),
            app.url("/v1/orders"),
            customer.clone(),
            body.clone(),
        );
        requests.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "checkout-7f3a")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let bytes = r.bytes().await.unwrap();
            (status, bytes)
        }));
    }
    let mut created = Vec::new();
    for request in requests {
        let (status, bytes) = request.await.unwrap();
        match status {
            StatusCode::CREATED => created.push(bytes),
            StatusCode::CONFLICT => {
                let problem: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(problem["type"], "/problems/idempotency-key-in-flight");
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&bytes)),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "every 201 carries the same order"
    );

    let listed: Value = app.get(&customer, "/v1/orders").await.json().await.unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "exactly one order"
    );

    // After completion: the stored response, byte for byte.
    let replay = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "checkout-7f3a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let order: Value = serde_json::from_slice(&created[0]).unwrap();
    assert_eq!(
        replay.headers()["location"].to_str().unwrap(),
        format!("/v1/orders/{}", order["id"].as_str().unwrap())
    );
    assert_eq!(replay.bytes().await.unwrap(), created[0]);

    // Same key, another body: refused, nothing created.
    let other = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "checkout-7f3a")
        .json(&order_body(&app.product_id(1).await, 1))
        .send()
        .await
        .unwrap();
    let body = problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["type"], "/problems/idempotency-key-reused");
    let listed: Value = app.get(&customer, "/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn keys_belong_to_the_client_that_sent_them() {
    let app = TestApp::spawn().await;
    let alice = app.token("customer").await;
    let (_, bob) = app.new_client("customer").await;
    let body = order_body(&app.product_id(0).await, 1);
    let send = |token: String| {
        app.http
            .post(app.url("/v1/orders"))
            .bearer_auth(token)
            .header("Idempotency-Key", "same-key")
            .json(&body)
            .send()
    };
    let a: Value = send(alice.clone()).await.unwrap().json().await.unwrap();
    let b: Value = send(bob.clone()).await.unwrap().json().await.unwrap();
    assert_ne!(a["id"], b["id"], "bob's request is his own");
    assert_ne!(a["customer_id"], b["customer_id"]);
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn a_rejected_request_replays_its_answer_and_a_malformed_key_is_named() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "k1")
        .json(&order_body(&app.product_id(0).await, 0))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    // The stored 422 replays for the same request.
    let again = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "k1")
        .json(&order_body(&app.product_id(0).await, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    let bad_key = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&order_body(&app.product_id(0).await, 1))
        .send()
        .await
        .unwrap();
    let body = problem(bad_key, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(common::fields(&body), ["Idempotency-Key"]);
    app.assert_no_server_errors().await;
}
