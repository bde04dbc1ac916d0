//! The delivery HTTP API over a real store: who sees what, and the
//! problems bad or untimely courier events get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt;
use ordo_bus::{Envelope, EventContext, Handler};
use ordo_delivery::store::ShipmentStore;
use ordo_delivery::{DeliveryService, DeliveryState, MIGRATIONS, SqliteShipmentStore};
use ordo_events::{Address, OrderLine, OrderPaid};
use ordo_http::{Principal, Role};
use ordo_kernel::{ClientId, Currency, EventId, OrderId, ProductId, SystemClock, UlidGen};
use ordo_sqlite::{Database, DatabaseOptions};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use ulid::Ulid;

struct TestApi {
    _dir: TempDir,
    state: DeliveryState,
    store: Arc<SqliteShipmentStore>,
    reactions: Arc<dyn Handler>,
}

impl TestApi {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            "delivery",
            &dir.path().join("delivery.db"),
            &MIGRATIONS,
            DatabaseOptions::default(),
        )
        .unwrap();
        let store = Arc::new(SqliteShipmentStore::new(db));
        let service = Arc::new(DeliveryService::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(UlidGen::new()),
        ));
        Self {
            _dir: dir,
            reactions: ordo_delivery::consumers(service.clone())[0].handler.clone(),
            state: DeliveryState { service },
            store,
        }
    }

    /// A paid order of `customer`, one line of each of two sellers; returns
    /// the order and its shipment id.
    async fn shipped_order(&self, customer: ClientId) -> (OrderId, String) {
        let order = OrderId::from_ulid(Ulid::new());
        let items = (0..2)
            .map(|_| OrderLine {
                product_id: ProductId::from_ulid(Ulid::new()),
                sku: "SKU".into(),
                seller_id: ClientId::from_ulid(Ulid::new()),
                quantity: 1,
                unit_price: Default::default(),
            })
            .collect();
        let paid = Envelope::new(
            EventId::from_ulid(Ulid::new()),
            Utc::now(),
            order.to_string(),
            Some(3),
            &EventContext::from_request("req"),
            &OrderPaid {
                order_id: order,
                customer_id: customer,
                items,
                shipping_address: Address {
                    name: "N".into(),
                    line1: "L".into(),
                    line2: None,
                    city: "C".into(),
                    postal_code: "1".into(),
                    country: "DE".into(),
                },
                total: Default::default(),
                currency: Currency::parse("EUR").unwrap(),
            },
        )
        .unwrap();
        self.reactions.handle(&paid).await.unwrap();
        let shipment = self.store.find_by_order(order).await.unwrap().unwrap();
        (order, shipment.id.to_string())
    }

    /// Calls the API as `caller`; returns the status, the content type and
    /// the JSON body.
    async fn call(
        &self,
        caller: &Principal,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let app: Router = ordo_delivery::router(self.state.clone()).into();
        let app = app.layer(axum::Extension(caller.clone()));
        let mut request = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, value)
    }

    async fn post_event(
        &self,
        caller: &Principal,
        shipment: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(
                caller,
                Method::POST,
                &format!("/v1/shipments/{shipment}/events"),
                Some(body),
            )
            .await;
        (status, body)
    }
}

fn principal(role: Role) -> Principal {
    Principal {
        client_id: ClientId::from_ulid(Ulid::new()),
        role,
    }
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_courier_walks_a_shipment_to_delivered_over_http() {
    let api = TestApi::start();
    let (_, shipment) = api.shipped_order(principal(Role::Customer).client_id).await;
    let courier = principal(Role::Courier);

    let (status, body) = api
        .post_event(&courier, &shipment, json!({"type": "picked_up"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "picked_up");
    assert_eq!(body["next_waypoint"], 2);

    let (status, body) = api
        .post_event(
            &courier,
            &shipment,
            json!({"type": "waypoint_reached", "waypoint": 2, "location": "depot",
                   "eta": "2030-01-01T12:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "in_transit");
    assert_eq!(body["eta"], "2030-01-01T12:00:00Z");
    assert_eq!(body["waypoints"][1]["reached"], true);
    assert_eq!(body["waypoints"][2]["reached"], false);

    let (status, body) = api
        .post_event(&courier, &shipment, json!({"type": "delivered"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["next_waypoint"], Value::Null);
    let events: Vec<_> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["picked_up", "waypoint_reached", "delivered"]);
    assert_eq!(body["events"][1]["location"], "depot");
}

#[tokio::test]
async fn an_event_the_state_does_not_allow_is_a_conflict_problem() {
    let api = TestApi::start();
    let (_, shipment) = api.shipped_order(principal(Role::Customer).client_id).await;
    let courier = principal(Role::Courier);
    api.post_event(&courier, &shipment, json!({"type": "picked_up"}))
        .await;

    let (status, content_type, body) = api
        .call(
            &courier,
            Method::POST,
            &format!("/v1/shipments/{shipment}/events"),
            Some(json!({"type": "picked_up"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "/problems/invalid-courier-event");
    assert_eq!(body["detail"], "the shipment was already picked up");

    let (status, body) = api
        .post_event(
            &courier,
            &shipment,
            json!({"type": "waypoint_reached", "waypoint": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["detail"], "waypoint 2 comes next, not waypoint 3");

    // A waypoint the route does not have is bad input.
    let (status, body) = api
        .post_event(
            &courier,
            &shipment,
            json!({"type": "waypoint_reached", "waypoint": 9}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&body), ["waypoint"]);
}

#[tokio::test]
async fn bad_courier_events_are_422s_naming_the_field() {
    let api = TestApi::start();
    let (_, shipment) = api.shipped_order(principal(Role::Customer).client_id).await;
    let courier = principal(Role::Courier);
    let cases = [
        (json!({"type": "teleported"}), vec!["type"]),
        (json!({"type": "picked_up", "speed": 3}), vec!["speed"]),
        (json!({"waypoint": 2}), vec!["type"]),
        (json!({"type": "waypoint_reached"}), vec!["waypoint"]),
        (
            json!({"type": "waypoint_reached", "waypoint": 0, "eta": "tomorrow"}),
            vec!["waypoint", "eta"],
        ),
        (
            json!({"type": "waypoint_reached", "waypoint": "two"}),
            vec!["waypoint"],
        ),
        (json!({"type": "failed"}), vec!["reason"]),
        (json!({"type": "failed", "reason": "  "}), vec!["reason"]),
        (json!({"type": "delivered", "reason": "x"}), vec!["reason"]),
        (
            json!({"type": "picked_up", "waypoint": 1}),
            vec!["waypoint"],
        ),
    ];
    for (body, expected) in cases {
        let (status, problem) = api.post_event(&courier, &shipment, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(fields(&problem), expected, "{body}");
    }
    // Nothing moved.
    let (_, _, view) = api
        .call(
            &courier,
            Method::GET,
            &format!("/v1/shipments/{shipment}"),
            None,
        )
        .await;
    assert_eq!(view["status"], "created");
}

#[tokio::test]
async fn only_couriers_and_admins_post_courier_events() {
    let api = TestApi::start();
    let customer = principal(Role::Customer);
    let (_, shipment) = api.shipped_order(customer.client_id).await;
    for caller in [customer, principal(Role::Seller)] {
        let (status, _) = api
            .post_event(&caller, &shipment, json!({"type": "picked_up"}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = api
        .post_event(
            &principal(Role::Admin),
            &shipment,
            json!({"type": "picked_up"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_customer_sees_its_own_shipment_and_nobody_elses() {
    let api = TestApi::start();
    let customer = principal(Role::Customer);
    let (order, shipment) = api.shipped_order(customer.client_id).await;
    for uri in [
        format!("/v1/shipments/{shipment}"),
        format!("/v1/orders/{order}/shipment"),
    ] {
        for caller in [
            &customer,
            &principal(Role::Courier),
            &principal(Role::Admin),
        ] {
            let (status, _, body) = api.call(caller, Method::GET, &uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(body["id"], shipment.as_str());
            assert_eq!(body["order_id"], order.to_string());
            assert_eq!(body["parcels"].as_array().unwrap().len(), 2);
            assert_eq!(body["waypoints"].as_array().unwrap().len(), 3);
        }
        let (status, content_type, _) = api
            .call(&principal(Role::Customer), Method::GET, &uri, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(content_type, "application/problem+json");
    }
    for uri in [
        "/v1/shipments/nonsense".to_owned(),
        "/v1/orders/nonsense/shipment".to_owned(),
        format!("/v1/orders/{}/shipment", OrderId::from_ulid(Ulid::new())),
    ] {
        let (status, _, _) = api.call(&customer, Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[test]
fn the_openapi_document_describes_the_delivery_routes() {
    let api = TestApi::start();
    let (_, doc) = ordo_delivery::router(api.state.clone()).split_for_parts();
    let paths: Vec<_> = doc.paths.paths.keys().cloned().collect();
    for path in [
        "/v1/shipments/{id}",
        "/v1/shipments/{id}/events",
        "/v1/orders/{id}/shipment",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} in {paths:?}");
    }
    let schemas = doc.components.map(|c| c.schemas).unwrap_or_default();
    for schema in ["CourierEventRequest", "ShipmentView", "CourierEventType"] {
        assert!(schemas.contains_key(schema), "{schema}");
    }
}
