//! The payments HTTP API over a real socket: who sees what, and refunds
//! answered as problems that name the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;

use axum::extract::Request;
use axum::middleware::Next;
use common::{Harness, confirmed, harness, new_client, new_order, serve};
use ordo_http::{Principal, Role};
use ordo_kernel::{ClientId, OrderId};
use ordo_payments::PaymentsState;
use ordo_payments::simulator::TOK_VISA;
use serde_json::{Value, json};

/// Stands in for the authentication layer: the caller is named by test
/// headers.
async fn test_principal(mut req: Request, next: Next) -> axum::response::Response {
    let named = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        header("x-test-role").zip(header("x-test-client"))
    };
    if let Some((role, client)) = named {
        let principal = Principal {
            role: Role::parse(&role).unwrap(),
            client_id: ClientId::from_str(&client).unwrap(),
        };
        req.extensions_mut().insert(principal);
    }
    next.run(req).await
}

struct Api {
    url: String,
    http: reqwest::Client,
    h: Harness,
}

impl Api {
    async fn start() -> Self {
        let (h, _simulator) = harness().await;
        let (router, _openapi) = ordo_payments::router(PaymentsState {
            service: h.service.clone(),
        })
        .split_for_parts();
        let url = serve(router.layer(axum::middleware::from_fn(test_principal))).await;
        Self {
            url,
            http: reqwest::Client::new(),
            h,
        }
    }

    async fn paid_order(&self, customer: ClientId, total: &str) -> (OrderId, String) {
        let order = new_order();
        self.h
            .handler
            .handle(&confirmed(order, customer, total, TOK_VISA))
            .await
            .unwrap();
        let payment = self.h.store.for_order(order).await.unwrap().unwrap();
        (order, payment.id.to_string())
    }

    fn as_(
        &self,
        rb: reqwest::RequestBuilder,
        role: &str,
        client: ClientId,
    ) -> reqwest::RequestBuilder {
        rb.header("x-test-role", role)
            .header("x-test-client", client.to_string())
    }

    async fn get(&self, path: &str, role: &str, client: ClientId) -> (u16, Value) {
        let resp = self
            .as_(self.http.get(format!("{}{path}", self.url)), role, client)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn refund(&self, payment: &str, body: Value, role: &str) -> (u16, Value) {
        let resp = self
            .as_(
                self.http
                    .post(format!("{}/v1/payments/{payment}/refund", self.url))
                    .json(&body),
                role,
                new_client(),
            )
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn a_customer_reads_the_payments_of_their_order_as_decimal_strings() {
    let api = Api::start().await;
    let customer = new_client();
    let (order, payment) = api.paid_order(customer, "19.9").await;
    let (status, body) = api
        .get(
            &format!("/v1/orders/{order}/payments"),
            "customer",
            customer,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let item = &body["items"][0];
    assert_eq!(item["id"], payment);
    assert_eq!(item["status"], "captured");
    assert_eq!(item["amount"], "19.90");
    assert_eq!(item["captured"], "19.90");
    assert_eq!(item["refunded"], "0.00");
    assert_eq!(item["refundable"], "19.90");
    assert_eq!(item["currency"], "EUR");
    assert_eq!(item["refunds"], json!([]));
}

#[tokio::test]
async fn another_customers_order_is_not_found_and_sellers_are_forbidden() {
    let api = Api::start().await;
    let (order, _) = api.paid_order(new_client(), "5.00").await;
    let path = format!("/v1/orders/{order}/payments");
    let (status, body) = api.get(&path, "customer", new_client()).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api.get(&path, "seller", new_client()).await;
    assert_eq!(status, 403);
    let (status, body) = api.get(&path, "admin", new_client()).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (status, _) = api
        .get("/v1/orders/not-an-order/payments", "admin", new_client())
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_refunds_part_of_a_payment_then_the_rest() {
    let api = Api::start().await;
    let (_, payment) = api.paid_order(new_client(), "20.00").await;
    let (status, body) = api
        .refund(
            &payment,
            json!({"amount": "5.00", "reason": "damaged"}),
            "admin",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["refund"]["amount"], "5.00");
    assert_eq!(body["refund"]["reason"], "damaged");
    assert_eq!(body["refund"]["status"], "succeeded");
    assert_eq!(body["payment"]["status"], "partially_refunded");
    assert_eq!(body["payment"]["refundable"], "15.00");

    let (status, body) = api.refund(&payment, json!({}), "admin").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["refund"]["amount"], "15.00");
    assert_eq!(body["payment"]["status"], "refunded");
    assert_eq!(body["payment"]["refunds"].as_array().unwrap().len(), 2);

    let (status, body) = api.refund(&payment, json!({}), "admin").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "/problems/nothing-to-refund");
}

#[tokio::test]
async fn a_refund_beyond_what_is_left_is_refused_naming_the_amount() {
    let api = Api::start().await;
    let (_, payment) = api.paid_order(new_client(), "20.00").await;
    for bad in [
        json!({"amount": "20.01"}),
        json!({"amount": "abc"}),
        json!({"amount": 5}),
        json!({"amount": "-1"}),
        json!({"amount": "1.001"}),
    ] {
        let (status, body) = api.refund(&payment, bad.clone(), "admin").await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "amount", "{bad}: {body}");
    }
    let (status, body) = api
        .refund(&payment, json!({"amount": "1.00", "extra": true}), "admin")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "extra");
}

#[tokio::test]
async fn only_an_admin_may_refund_and_an_unknown_payment_is_not_found() {
    let api = Api::start().await;
    let (_, payment) = api.paid_order(new_client(), "20.00").await;
    let (status, _) = api.refund(&payment, json!({}), "customer").await;
    assert_eq!(status, 403);
    let (status, _) = api.refund(&payment, json!({}), "seller").await;
    assert_eq!(status, 403);
    let unknown = format!("pay_{}", ulid::Ulid::new());
    let (status, _) = api.refund(&unknown, json!({}), "admin").await;
    assert_eq!(status, 404);
    let (status, _) = api.refund("nonsense", json!({}), "admin").await;
    assert_eq!(status, 404);
}
