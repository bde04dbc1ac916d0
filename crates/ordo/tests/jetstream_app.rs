//! The whole application on PostgreSQL and NATS JetStream in one process:
//! the saga runs through the broker, and an event the broker hands over
//! again after its duplicate window is applied once, because the inbox,
//! not the broker, makes effects exactly-once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp};
use ordo_app::config::{CourierSim, Secret};
use ordo_nats::{JetStreamBus, JetStreamSettings};
use serde_json::Value;

/// Runs only with both servers (CI sets both variables).
fn servers() -> Option<String> {
    let nats = std::env::var("ORDO_TEST_NATS_URL").ok();
    let pg = std::env::var_os(ordo_postgres::testing::URL_VARIABLE);
    if nats.is_none() || pg.is_none() {
        eprintln!("skipped: set ORDO_TEST_DATABASE_URL and ORDO_TEST_NATS_URL");
        return None;
    }
    nats
}

struct Distributed {
    app: TestApp,
    broker: JetStreamBus,
}

impl Distributed {
    /// The app with a stream of its own whose duplicate window is
    /// `duplicate_window`.
    async fn spawn(nats: &str, duplicate_window: Duration) -> Self {
        let unique = ulid::Ulid::new().to_string().to_lowercase();
        let settings = JetStreamSettings {
            stream: format!("ORDO_TEST_{unique}"),
            subject_prefix: format!("ordo_test_{unique}"),
            duplicate_window,
            ack_wait: Duration::from_secs(5),
            ..JetStreamSettings::new(nats)
        };
        let app = TestApp::spawn_on_with(
            Backend::Postgres,
            |b| b,
            |config| {
                config.nats_url = Some(Secret::new(nats));
                config.nats_stream = settings.stream.clone();
                config.nats_subject_prefix = settings.subject_prefix.clone();
                config.nats_duplicate_window = settings.duplicate_window;
                config.nats_ack_wait = settings.ack_wait;
                config.courier_sim = CourierSim::Pace(Duration::from_millis(20));
            },
        )
        .await;
        let broker = JetStreamBus::connect(settings).await.unwrap();
        Self { app, broker }
    }

    async fn finish(self) {
        self.app.stop().await;
        self.broker.delete_stream().await.unwrap();
    }

    async fn deliveries(&self) -> u64 {
        let admin = self.app.token("admin").await;
        let body: Value = self
            .app
            .get(&admin, "/v1/admin/outbox")
            .await
            .json()
            .await
            .unwrap();
        body["delivered"].as_u64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_through_jetstream_and_every_order_settles() {
    let Some(nats) = servers() else { return };
    let d = Distributed::spawn(&nats, Duration::from_secs(120)).await;
    let customer = d.app.token("customer").await;
    let product = d.app.product_id(0).await;
    let before = d.app.available(&product).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut body = common::order_body(&product, 1);
        if i % 5 == 0 {
            body["payment"]["token"] = "tok_declined".into();
        }
        let response = d.app.post_json(&customer, "/v1/orders", &body).await;
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    d.app.wait_until_every_order_is_final().await;
    d.app.assert_invariants(&[]).await;
    let declined = d.app.wait_for_status(&customer, &ids[0], "cancelled").await;
    assert_eq!(declined["cancellation_reason"], "payment_failed");
    d.app.wait_for_status(&customer, &ids[1], "delivered").await;
    // 16 delivered orders took a unit each; the declined ones gave theirs back.
    assert_eq!(d.app.available(&product).await, before - 16);
    // The console is served in distributed mode too, on its own policy.
    let page = d.app.http.get(d.app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains("http://") && !html.contains("https://"));
    d.app.assert_no_server_errors().await;
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_redelivered_after_the_duplicate_window_is_applied_once() {
    let Some(nats) = servers() else { return };
    let d = Distributed::spawn(&nats, Duration::from_secs(1)).await;
    let customer = d.app.token("customer").await;
    let product = d.app.product_id(0).await;
    let before = d.app.available(&product).await;
    let order = d.app.create_order(&customer, &product, 2).await;
    let id = order["id"].as_str().unwrap().to_owned();
    d.app.wait_for_status(&customer, &id, "delivered").await;
    d.app.wait_for_quiet_bus().await;
    let timeline = d.app.timeline(&customer, &id).await;
    let delivered_before = d.deliveries().await;

    // Every event of the order, from every service, published again as a
    // relay retrying after a lost acknowledgement would: well past the
    // window, so the stream stores each a second time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stores = &d.app.stores;
    let mut republished = 0;
    for (service, outbox) in [
        ("orders", stores.orders.as_ref().unwrap().outbox.clone()),
        (
            "inventory",
            stores.inventory.as_ref().unwrap().outbox.clone(),
        ),
        ("payments", stores.payments.as_ref().unwrap().outbox.clone()),
        ("delivery", stores.delivery.as_ref().unwrap().outbox.clone()),
    ] {
        for event in outbox.events_for_subject(&id).await.unwrap() {
            d.broker.publish_as(service, &event).await.unwrap();
            republished += 1;
        }
    }
    assert!(republished >= 10, "the order's events: {republished}");
    d.app.wait_for_quiet_bus().await;

    // The consumers were handed the copies (and said they were done)...
    assert!(
        d.deliveries().await > delivered_before,
        "the copies reached the consumers"
    );
    // ...and nothing happened twice.
    assert_eq!(d.app.timeline(&customer, &id).await, timeline);
    assert_eq!(d.app.available(&product).await, before - 2);
    d.app.assert_invariants(&[]).await;
    let current: Value = d
        .app
        .get(&customer, &format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["status"], "delivered");
    d.finish().await;
}
