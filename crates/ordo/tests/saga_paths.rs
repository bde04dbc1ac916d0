//! Every path of the saga through HTTP: paid and delivered, declined,
//! expired, cancelled at each step, a gateway that times out after the
//! charge, and a mixed crowd with duplicated deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp, order_body, problem};
use ordo_app::config::CourierSim;
use ordo_bus::Faults;
use ordo_orders::domain::OrderStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn order_with_token(product: &str, quantity: i64, token: &str) -> Value {
    let mut body = order_body(product, quantity);
    body["payment"]["token"] = json!(token);
    body
}

async fn place(app: &TestApp, customer: &str, body: &Value) -> String {
    let response = app.post_json(customer, "/v1/orders", body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

async fn payments(app: &TestApp, customer: &str, order: &str) -> Vec<Value> {
    let body: Value = app
        .get(customer, &format!("/v1/orders/{order}/payments"))
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().cloned().unwrap_or_default()
}

fn own_events(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("order."))
        .collect()
}

async fn an_order_is_paid_shipped_and_delivered_with_the_whole_story_in_its_timeline(
    backend: Backend,
) {
    let app = TestApp::spawn_on_with(
        backend,
        |b| b,
        |c| c.courier_sim = CourierSim::Pace(Duration::from_millis(30)),
    )
    .await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    // A second seller: two parcels, two pickups, then the door.
    let (_, other) = app.product_with_stock(5, "3.50").await;
    let before = app.available(&product).await;
    let mut body = order_body(&product, 2);
    body["items"] =
        json!([{"product_id": product, "quantity": 2}, {"product_id": other, "quantity": 1}]);
    let id = place(&app, &customer, &body).await;
    app.wait_for_status(&customer, &id, "delivered").await;
    app.wait_for_quiet_bus().await;
    // Delivered is final: never stuck, however short the thresholds.
    let admin = app.token("admin").await;
    let report: Value = app
        .get(
            &admin,
            "/v1/admin/stuck-orders?pending=1ms&confirmed=1ms&paid=1ms&shipped=1ms",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["stages"].as_array().unwrap().len(), 4, "{report}");
    assert!(!report.to_string().contains(&id), "{report}");

    let timeline = app.timeline(&customer, &id).await;
    assert_eq!(
        own_events(&timeline),
        [
            "order.created",
            "order.confirmed",
            "order.paid",
            "order.shipped",
            "order.delivered"
        ]
    );
    let types: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for step in [
        "inventory.reserved",
        "payment.succeeded",
        "shipment.created",
        "shipment.picked_up",
        "shipment.waypoint_reached",
        "shipment.delivered",
        "inventory.committed",
    ] {
        assert!(types.contains(&step), "{step} in {types:?}");
    }
    // Everything the order request set off carries its correlation id; the
    // courier's reports start chains of their own.
    let correlation = timeline[0]["correlation_id"].clone();
    let set_off = [
        "inventory.reserved",
        "order.confirmed",
        "payment.succeeded",
        "order.paid",
        "shipment.created",
    ];
    assert!(
        timeline
            .iter()
            .filter(|e| set_off.contains(&e["type"].as_str().unwrap()))
            .all(|e| e["correlation_id"] == correlation),
        "one correlation id from the order to its shipment: {timeline:#?}"
    );
    assert!(timeline.iter().all(|e| e["actor"].is_string()));
    assert_eq!(app.available(&product).await, before - 2);
    assert_eq!(app.available(&other).await, 4);
    let paid = payments(&app, &customer, &id).await;
    assert_eq!(paid.len(), 1);
    let courier = app.token("courier").await;
    let shipment: Value = app
        .get(&courier, &format!("/v1/orders/{id}/shipment"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        shipment["parcels"].as_array().unwrap().len(),
        2,
        "{shipment}"
    );
    app.assert_invariants(&[]).await;
    app.assert_no_server_errors().await;
}

async fn a_declined_card_cancels_the_order_and_gives_the_stock_back(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(1).await;
    let before = app.available(&product).await;
    let id = place(
        &app,
        &customer,
        &order_with_token(&product, 3, "tok_declined"),
    )
    .await;
    let order = app.wait_for_status(&customer, &id, "cancelled").await;
    assert_eq!(order["cancellation_reason"], "payment_failed");
    app.wait_for_quiet_bus().await;
    assert_eq!(app.available(&product).await, before);
    app.assert_invariants(&[]).await;
}

async fn a_hold_that_expires_before_payment_cancels_the_order_and_a_late_payment_is_refunded(
    backend: Backend,
) {
    let app = TestApp::spawn_on_with(
        backend,
        |b| b,
        |c| c.reservation_ttl = Duration::from_millis(300),
    )
    .await;
    let customer = app.token("customer").await;
    let product = app.product_id(2).await;
    let before = app.available(&product).await;
    // tok_slow answers after the hold ran out.
    let id = place(&app, &customer, &order_with_token(&product, 1, "tok_slow")).await;
    let order = app.wait_for_status(&customer, &id, "cancelled").await;
    assert_eq!(order["cancellation_reason"], "reservation_expired");
    app.wait_for_quiet_bus().await;
    assert_eq!(app.available(&product).await, before, "stock back");
    // Whatever the slow gateway let through is given back.
    for payment in payments(&app, &customer, &id).await {
        assert_eq!(payment["captured"], payment["refunded"], "{payment}");
    }
    app.assert_invariants(&[]).await;
}

async fn a_customer_cancels_at_each_status_before_shipping_and_not_after(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(3).await;
    let before = app.available(&product).await;

    // confirmed: the slow gateway keeps it there for a while.
    let confirmed = place(&app, &customer, &order_with_token(&product, 1, "tok_slow")).await;
    app.wait_for_status(&customer, &confirmed, "confirmed")
        .await;
    let r = app
        .post_json(
            &customer,
            &format!("/v1/orders/{confirmed}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // pending: cancelled in the same breath as it was placed, or confirmed
    // by then; either way it unwinds.
    let early = place(&app, &customer, &order_body(&product, 1)).await;
    let r = app
        .post_json(&customer, &format!("/v1/orders/{early}/cancel"), &json!({}))
        .await;
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&r.status()),
        "{}",
        r.status()
    );

    // paid: no courier runs in this test, so it waits there.
    let paid = place(&app, &customer, &order_body(&product, 2)).await;
    app.wait_for_status(&customer, &paid, "paid").await;
    let r = app
        .post_json(&customer, &format!("/v1/orders/{paid}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "delivery is asked first");
    app.wait_for_status(&customer, &paid, "cancelled").await;

    // shipped: too late.
    let shipped = place(&app, &customer, &order_body(&product, 1)).await;
    app.wait_for_status(&customer, &shipped, "paid").await;
    let courier = app.token("courier").await;
    common::eventually("the shipment exists", || async {
        app.get(&courier, &format!("/v1/orders/{shipped}/shipment"))
            .await
            .status()
            == StatusCode::OK
    })
    .await;
    let shipment: Value = app
        .get(&courier, &format!("/v1/orders/{shipped}/shipment"))
        .await
        .json()
        .await
        .unwrap();
    let shipment_id = shipment["id"].as_str().unwrap();
    let r = app
        .post_json(
            &courier,
            &format!("/v1/shipments/{shipment_id}/events"),
            &json!({"type": "picked_up"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    app.wait_for_status(&customer, &shipped, "shipped").await;
    let r = app
        .post_json(
            &customer,
            &format!("/v1/orders/{shipped}/cancel"),
            &json!({}),
        )
        .await;
    let body = problem(r, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("shipped"));

    app.wait_for_quiet_bus().await;
    for id in [&confirmed, &paid] {
        let o: Value = app
            .get(&customer, &format!("/v1/orders/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(o["status"], "cancelled");
        assert_eq!(o["cancellation_reason"], "customer_cancelled");
    }
    let refunded = payments(&app, &customer, &paid).await;
    assert_eq!(refunded.len(), 1, "{refunded:?}");
    // Only the shipped order's unit is gone.
    assert_eq!(app.available(&product).await, before - 1);
    app.assert_invariants(&[OrderStatus::Shipped]).await;
    app.assert_no_server_errors().await;
}

async fn a_cancel_that_races_the_courier_is_settled_by_the_pickup(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(5).await;
    let id = place(&app, &customer, &order_body(&product, 1)).await;
    app.wait_for_status(&customer, &id, "paid").await;
    // The courier has it; the customer's cancel comes a moment later,
    // before or after orders heard of the pickup.
    app.pick_up(&id).await;
    let r = app
        .post_json(&customer, &format!("/v1/orders/{id}/cancel"), &json!({}))
        .await;
    assert!(
        [StatusCode::ACCEPTED, StatusCode::CONFLICT].contains(&r.status()),
        "{}",
        r.status()
    );

    let order = app.wait_for_status(&customer, &id, "shipped").await;
    assert!(
        order.get("cancellation_requested").is_none(),
        "the request was refused: {order}"
    );
    app.wait_for_quiet_bus().await;
    let paid = payments(&app, &customer, &id).await;
    assert_eq!(
        paid[0]["refunded"], "0.00",
        "nothing refunded for goods on their way"
    );
    app.assert_invariants(&[OrderStatus::Shipped]).await;
}

async fn a_gateway_timeout_after_a_capture_still_captures_exactly_once(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(4).await;
    let id = place(
        &app,
        &customer,
        &order_with_token(&product, 1, "tok_timeout"),
    )
    .await;
    app.wait_for_status(&customer, &id, "paid").await;
    app.wait_for_quiet_bus().await;
    let paid = payments(&app, &customer, &id).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0]["captured"], paid[0]["amount"], "{paid:?}");
    app.assert_invariants(&[OrderStatus::Paid]).await;
}

async fn two_thousand_mixed_orders_with_declines_cancels_and_duplicates_break_no_invariant(
    backend: Backend,
) {
    let app = TestApp::spawn_on_with(
        backend,
        |b| {
            b.bus_faults(Faults {
                duplicate_rate: 0.2,
            })
        },
        |c| c.courier_sim = CourierSim::Pace(Duration::from_millis(20)),
    )
    .await;
    let customer = app.token("customer").await;
    let products: Vec<String> = app
        .products()
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let seller = app.token("seller").await;
    for product in &products {
        let r = app
            .post_json(
                &seller,
                &format!("/v1/products/{product}/stock"),
                &json!({"delta": 1000, "reason": "restock"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for n in 0..2000_u32 {
        let (http, base, token) = (app.http.clone(), app.base.clone(), customer.clone());
        let product = products[(n as usize) % products.len()].clone();
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let token_kind = if n % 10 < 3 {
                "tok_declined"
            } else {
                "tok_visa"
            };
            let r = http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&token)
                .json(&order_with_token(
                    &product,
                    1 + i64::from(n % 3),
                    token_kind,
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let order: Value = r.json().await.unwrap();
            if n % 7 == 0 {
                let id = order["id"].as_str().unwrap();
                let r = http
                    .post(format!("{base}/v1/orders/{id}/cancel"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    [StatusCode::OK, StatusCode::ACCEPTED, StatusCode::CONFLICT]
                        .contains(&r.status()),
                    "{}",
                    r.status()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.wait_until_every_order_is_final().await;
    app.assert_invariants(&[]).await;
    app.assert_no_server_errors().await;
}

on_both_backends! {
    an_order_is_paid_shipped_and_delivered_with_the_whole_story_in_its_timeline,
    a_declined_card_cancels_the_order_and_gives_the_stock_back,
    a_hold_that_expires_before_payment_cancels_the_order_and_a_late_payment_is_refunded,
    a_customer_cancels_at_each_status_before_shipping_and_not_after,
    a_cancel_that_races_the_courier_is_settled_by_the_pickup,
    a_gateway_timeout_after_a_capture_still_captures_exactly_once,
    two_thousand_mixed_orders_with_declines_cancels_and_duplicates_break_no_invariant,
}
