//! The orders API end to end: create, read, list, cancel, timeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestApp, eventually, fields, order_body, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_order_is_created_read_listed_cancelled_and_its_timeline_tells_the_story() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.products().await[1].clone();
    let product_id = product["id"].as_str().unwrap();

    let response = app
        .post_json(&customer, "/v1/orders", &order_body(product_id, 2))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/orders/{id}"));
    assert_eq!(created["status"], "pending");
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["customer_id"], app.client_id("customer"));
    // Priced from the catalog: the client sent no price.
    let price: f64 = product["price"].as_str().unwrap().parse().unwrap();
    assert_eq!(created["items"][0]["unit_price"], product["price"]);
    assert_eq!(created["total"], format!("{:.2}", price * 2.0));
    assert_eq!(created["attributes"], json!({"gift": true}));

    let fetched: Value = app.get(&customer, &location).await.json().await.unwrap();
    assert_eq!(fetched["id"], created["id"]);
    assert_eq!(fetched["items"], created["items"]);
    // Stock is reserved and the card charged: the saga has it paid.
    app.wait_for_status(&customer, id, "paid").await;

    let listed: Value = app.get(&customer, "/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], id);

    let response = app
        .post_json(&customer, &format!("/v1/orders/{id}/cancel"), &json!({}))
        .await;
    // Paid: a courier could be picking it up, so delivery is asked first.
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let requested: Value = response.json().await.unwrap();
    assert_eq!(requested["status"], "paid");
    assert_eq!(requested["cancellation_requested"], "customer_cancelled");
    let cancelled = app.wait_for_status(&customer, id, "cancelled").await;
    assert_eq!(cancelled["cancellation_reason"], "customer_cancelled");

    // Cancelling twice is a conflict, not a second event.
    let twice = app
        .post_json(&customer, &format!("/v1/orders/{id}/cancel"), &json!({}))
        .await;
    problem(twice, StatusCode::CONFLICT).await;

    eventually("the timeline holds both events", || async {
        app.timeline(&customer, id).await.len() >= 2
    })
    .await;
    app.wait_for_quiet_bus().await;
    let timeline = app.timeline(&customer, id).await;
    let types: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let own: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| t.starts_with("order."))
        .collect();
    assert_eq!(
        own,
        [
            "order.created",
            "order.confirmed",
            "order.paid",
            "order.cancellation_requested",
            "order.cancelled"
        ],
        "{types:?}"
    );
    for foreign in [
        "inventory.reserved",
        "inventory.released",
        "payment.succeeded",
        "payment.refunded",
    ] {
        assert_eq!(
            types.iter().filter(|t| **t == foreign).count(),
            1,
            "{types:?}"
        );
    }
    let seqs: Vec<i64> = timeline
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=timeline.len() as i64).collect::<Vec<_>>());
    assert_eq!(timeline[0]["actor"], app.client_id("customer"));
    assert!(
        timeline[0]["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    let cancelled = timeline
        .iter()
        .find(|e| e["type"] == "order.cancelled")
        .unwrap();
    assert_eq!(cancelled["data"]["reason"], "customer_cancelled");
    assert_eq!(cancelled["data"]["from_status"], "paid");
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn the_request_id_becomes_the_correlation_id_of_the_event() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .header("x-request-id", "checkout-42")
        .json(&order_body(&product, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "checkout-42");
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    eventually("the timeline shows the order", || async {
        !app.timeline(&customer, id).await.is_empty()
    })
    .await;
    assert_eq!(
        app.timeline(&customer, id).await[0]["correlation_id"],
        "checkout-42"
    );
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn lists_walk_in_cursor_pages_and_filter_by_status_and_creation_time() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            app.create_order(&customer, &product, 1).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let cancel = &ids[2];
    app.post_json(
        &customer,
        &format!("/v1/orders/{cancel}/cancel"),
        &json!({}),
    )
    .await;
    app.wait_for_quiet_bus().await;

    let mut seen = Vec::new();
    let mut path = "/v1/orders?limit=3".to_owned();
    loop {
        let page: Value = app.get(&customer, &path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/orders?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every order once, newest first");

    let cancelled: Value = app
        .get(&customer, "/v1/orders?status=cancelled")
        .await
        .json()
        .await
        .unwrap();
    let cancelled: Vec<&str> = cancelled["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(cancelled, [cancel.as_str()]);
    let pending: Value = app
        .get(&customer, "/v1/orders?status=paid&limit=200")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["items"].as_array().unwrap().len(), 6);

    let first: Value = app
        .get(&customer, &format!("/v1/orders/{}", ids[0]))
        .await
        .json()
        .await
        .unwrap();
    let fourth: Value = app
        .get(&customer, &format!("/v1/orders/{}", ids[3]))
        .await
        .json()
        .await
        .unwrap();
    let from = fourth["created_at"].as_str().unwrap();
    let window: Value = app
        .http
        .get(app.url("/v1/orders"))
        .bearer_auth(&customer)
        .query(&[
            ("created_from", first["created_at"].as_str().unwrap()),
            ("created_to", from),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let window: Vec<&str> = window["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(window, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);

    for bad in [
        "status=lost",
        "cursor=nope",
        "created_from=yesterday",
        "limit=0",
        "colour=red",
    ] {
        let body = problem(
            app.get(&customer, &format!("/v1/orders?{bad}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let field = bad.split('=').next().unwrap();
        assert_eq!(fields(&body), [field], "{bad}");
    }
    app.assert_no_server_errors().await;
}

#[tokio::test]
async fn customers_see_only_their_own_orders_and_sellers_those_with_their_products() {
    let app = TestApp::spawn().await;
    let alice = app.token("customer").await;
    let (_, bob) = app.new_client("customer").await;
    let (_, other_seller) = app.new_client("seller").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&alice, &product, 1).await;
    let id = order["id"].as_str().unwrap();

    problem(
        app.get(&bob, &format!("/v1/orders/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.get(&bob, &format!("/v1/orders/{id}/timeline")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        app.post_json(&bob, &format!("/v1/orders/{id}/cancel"), &json!({}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let bobs: Value = app.get(&bob, "/v1/orders").await.json().await.unwrap();
    assert_eq!(bobs["items"], json!([]));
    let still: Value = app
        .get(&alice, &format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(still["status"], "cancelled", "bob's cancel changed nothing");

    // The demo seller sells the product; another seller does not.
    let seller = app.token("seller").await;
    assert_eq!(
        app.get(&seller, &format!("/v1/orders/{id}")).await.status(),
        StatusCode::OK
    );
    let sellers: Value = app.get(&seller, "/v1/orders").await.json().await.unwrap();
    assert_eq!(sellers["items"][0]["id"], id);
    problem(
        app.get(&other_seller, &format!("/v1/orders/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let admin = app.token("admin").await;
    assert_eq!(
        app.get(&admin, &format!("/v1/orders/{id}")).await.status(),
        StatusCode::OK
    );
    let by_customer: Value = app
        .get(
            &admin,
            &format!("/v1/orders?customer={}", app.client_id("customer")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_customer["items"].as_array().unwrap().len(), 1);

    // Roles that may not do a thing are told so.
    problem(
        app.get(&alice, "/v1/admin/clients").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        app.get(&alice, "/v1/admin/dead-letters").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        app.post_json(&seller, "/v1/orders", &order_body(&product, 1))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let courier = app.token("courier").await;
    problem(app.get(&courier, "/v1/orders").await, StatusCode::FORBIDDEN).await;
    app.assert_no_server_errors().await;
}

/// The ids of the caller's orders that `query` lists, newest first.
#[tokio::test]
async fn a_seller_reads_only_its_lines_and_subtotal_and_no_payloads_of_a_multi_seller_order() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let created: Value = app
        .post_json(
            &admin,
            "/v1/admin/clients",
            &json!({"role": "seller", "name": "second seller"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let other = app
        .token_for(
            created["client_id"].as_str().unwrap(),
            created["client_secret"].as_str().unwrap(),
        )
        .await;
    let theirs: Value = app
        .post_json(
            &other,
            "/v1/products",
            &json!({"sku": "SECOND-1", "name": "Second seller's lamp", "price": "70.00",
                    "currency": "EUR", "initial_stock": 5}),
        )
        .await
        .json()
        .await
        .unwrap();
    let mine = app.product_id(0).await;
    app.wait_for_quiet_bus().await;
    let mut body = order_body(&mine, 1);
    body["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({"product_id": theirs["id"], "quantity": 1}));
    let customer = app.token("customer").await;
    let response = app.post_json(&customer, "/v1/orders", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    app.wait_for_quiet_bus().await;

    let seller = app.token("seller").await;
    let seen: Value = app
        .get(&seller, &format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let items = seen["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["product_id"], mine.as_str());
    assert_eq!(seen["total"], items[0]["line_total"], "its subtotal");
    let listed: Value = app.get(&seller, "/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["items"].as_array().unwrap().len(), 1);
    let timeline = app.timeline(&seller, id).await;
    assert!(!timeline.is_empty());
    assert!(
        timeline.iter().all(|e| e["data"] == json!({})),
        "no payloads: {timeline:?}"
    );
    // Its customer still reads the whole order.
    let whole: Value = app
        .get(&customer, &format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["items"].as_array().unwrap().len(), 2);
    assert_eq!(whole["total"], order["total"]);
}

async fn listed(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let response = app.get(token, &format!("/v1/orders?{query}")).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    let page: Value = response.json().await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn lists_filter_by_attribute_containment(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let mut ids = Vec::new();
    for attributes in [
        json!({"gift": true, "channel": "web", "code": "42"}),
        json!({"gift": false, "channel": "app", "code": 42, "weight": 1.5, "note": null}),
        json!({"channel": "web", "campaign": "black friday", "tags": ["gift"]}),
    ] {
        let mut body = order_body(&product, 1);
        body["attributes"] = attributes;
        let response = app.post_json(&customer, "/v1/orders", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let [web_gift, app_order, campaign] = [&ids[0], &ids[1], &ids[2]].map(String::as_str);

    for (query, expected) in [
        ("attr.gift=true", vec![web_gift]),
        ("attr.gift=false", vec![app_order]),
        ("attr.channel=web", vec![campaign, web_gift]),
        ("attr.channel=web&attr.gift=true", vec![web_gift]),
        // A number, or the string of its digits when quoted.
        ("attr.code=42", vec![app_order]),
        ("attr.code=%2242%22", vec![web_gift]),
        ("attr.weight=1.5", vec![app_order]),
        ("attr.note=null", vec![app_order]),
        ("attr.campaign=black+friday", vec![campaign]),
        ("attr.campaign=%22black%20friday%22", vec![campaign]),
        // Containment of the key's own value: not inside arrays.
        ("attr.tags=gift", vec![]),
        ("attr.channel=fax", vec![]),
        ("attr.channel=web&limit=1", vec![campaign]),
        ("attr.channel=web&status=cancelled", vec![]),
    ] {
        assert_eq!(listed(&app, &customer, query).await, expected, "{query}");
    }
    // The cursor walks the filtered list.
    let page: Value = app
        .get(&customer, "/v1/orders?attr.channel=web&limit=1")
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();
    assert_eq!(
        listed(
            &app,
            &customer,
            &format!("attr.channel=web&limit=1&cursor={cursor}")
        )
        .await,
        [web_gift]
    );
    // Another customer's orders stay out of a customer's filtered list.
    let (_, bob) = app.new_client("customer").await;
    assert!(listed(&app, &bob, "attr.channel=web").await.is_empty());

    let nine: String = (0..9).map(|i| format!("attr.k{i}=1&")).collect();
    for (query, field) in [
        ("attr.=x", "attr."),
        ("attr.bad%20key=x", "attr.bad key"),
        ("attr.a.b=x", "attr.a.b"),
        ("attr.gift=true&attr.gift=false", "attr.gift"),
        (nine.trim_end_matches('&'), "attr"),
    ] {
        let body = problem(
            app.get(&customer, &format!("/v1/orders?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(fields(&body), [field], "{query}");
    }
    app.assert_no_server_errors().await;
}

on_both_backends!(lists_filter_by_attribute_containment);
