//! The test harness: the real application on port 0 over a fresh data
//! directory, and helpers that read as the API's vocabulary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod process;

use std::future::Future;
use std::time::Duration;

use ordo_app::config::{Config, Secret};
use ordo_app::demo::DemoCredentials;
use ordo_app::{App, AppBuilder};
use ordo_postgres::testing::TestDatabase;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Where a test application keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files in a fresh data directory.
    Sqlite,
    /// A fresh database on the server named by `ORDO_TEST_DATABASE_URL`.
    Postgres,
}

/// Generates, for each named `async fn name(backend: Backend)`, a test per
/// backend: `sqlite::name` and `postgres::name`. The PostgreSQL one says so
/// and passes when `ORDO_TEST_DATABASE_URL` is unset (CI sets it).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        ordo_postgres::on_both_backends! {
            sqlite: $crate::common::Backend::Sqlite,
            postgres: std::env::var_os(ordo_postgres::testing::URL_VARIABLE)
                .map(|_| $crate::common::Backend::Postgres),
            worker_threads: 2,
            tests: [$($name),*],
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: TempDir,
    pub credentials: DemoCredentials,
    pub checker: ordo_invariants::Checker,
    /// The stores of every service, as the application opened them.
    pub stores: ordo_app::stores::Stores,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Dropped (and the database with it) after the application.
    database: Option<TestDatabase>,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_data_dir(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bus_retry_base = Duration::from_millis(5);
    config.bus_retry_max = Duration::from_millis(50);
    config.dlq_poll_interval = Duration::from_millis(100);
    config.shutdown_grace = Duration::from_secs(2);
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|b| b, |_| {}).await
    }

    pub async fn spawn_with(
        customize: impl FnOnce(AppBuilder) -> AppBuilder,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        Self::spawn_on_with(Backend::Sqlite, customize, configure).await
    }

    pub async fn spawn_on(backend: Backend) -> Self {
        Self::spawn_on_with(backend, |b| b, |_| {}).await
    }

    pub async fn spawn_on_with(
        backend: Backend,
        customize: impl FnOnce(AppBuilder) -> AppBuilder,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(data_dir.path());
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let database = TestDatabase::create()
                    .await
                    .expect("ORDO_TEST_DATABASE_URL names the test server");
                config.database_url = Some(Secret::new(database.url()));
                config.database_pool_size = 4;
                Some(database)
            }
        };
        configure(&mut config);
        let app = customize(App::builder(config)).build().await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let checker = app.checker().unwrap();
        let stores = app.stores().clone();
        let credentials = app
            .demo_credentials()
            .cloned()
            .expect("a fresh store creates demo clients");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let test_app = Self {
            base,
            http: reqwest::Client::new(),
            data_dir,
            credentials,
            checker,
            stores,
            shutdown: Some(tx),
            task: Some(task),
            database,
        };
        test_app.wait_for_catalog().await;
        test_app
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// Asserts that no request served so far was answered with a 5xx.
    pub async fn assert_no_server_errors(&self) {
        let metrics = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let failures: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("http_requests_total{") && l.contains("status=\"5"))
            .collect();
        assert!(failures.is_empty(), "server errors: {failures:?}");
    }

    /// Waits for the bus to be quiet, then asserts DESIGN.md's invariants.
    pub async fn assert_invariants(&self, may_wait_in: &[ordo_orders::domain::OrderStatus]) {
        self.wait_for_quiet_bus().await;
        let violations = self
            .checker
            .check(&ordo_invariants::Expectations {
                may_wait_in: may_wait_in.to_vec(),
            })
            .await
            .unwrap();
        assert!(
            violations.is_empty(),
            "{} violations: {violations:#?}",
            violations.len()
        );
    }

    /// Waits until every order is final, for as long as orders keep
    /// settling (see [`wait_until_every_order_is_final`]).
    pub async fn wait_until_every_order_is_final(&self) {
        wait_until_every_order_is_final(&self.checker, &self.stores, Duration::from_secs(60)).await;
    }

    /// The courier picks up order `order_id`'s shipment, once delivery
    /// has made it.
    pub async fn pick_up(&self, order_id: &str) {
        let courier = self.token("courier").await;
        let path = format!("/v1/orders/{order_id}/shipment");
        eventually("the shipment exists", || async {
            self.get(&courier, &path).await.status() == StatusCode::OK
        })
        .await;
        let shipment: Value = self.get(&courier, &path).await.json().await.unwrap();
        let shipment_id = shipment["id"].as_str().unwrap();
        let r = self
            .post_json(
                &courier,
                &format!("/v1/shipments/{shipment_id}/events"),
                &json!({"type": "picked_up"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// A product of a new seller with `stock` units; (seller token, id).
    pub async fn product_with_stock(&self, stock: i64, price: &str) -> (String, String) {
        let (_, seller) = self.new_client("seller").await;
        let sku = format!("SKU-{}", ulid_like());
        let response = self
            .post_json(
                &seller,
                "/v1/products",
                &json!({"sku": sku, "name": "Limited edition", "price": price, "currency": "EUR",
                        "initial_stock": stock}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let product: Value = response.json().await.unwrap();
        let id = product["id"].as_str().unwrap().to_owned();
        self.wait_for_quiet_bus().await;
        (seller, id)
    }

    /// Units of `product` that can be ordered now.
    pub async fn available(&self, product: &str) -> i64 {
        let token = self.token("customer").await;
        let p: Value = self
            .get(&token, &format!("/v1/products/{product}"))
            .await
            .json()
            .await
            .unwrap();
        p["available"].as_i64().unwrap()
    }

    /// Polls the order until its status is `status`.
    pub async fn wait_for_status(&self, token: &str, order_id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let last: Value = self
                .get(token, &format!("/v1/orders/{order_id}"))
                .await
                .json()
                .await
                .unwrap();
            if last["status"] == status {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} never became {status}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn token_for(&self, client_id: &str, secret: &str) -> String {
        let response = self
            .http
            .post(self.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A token for the demo client of `role`.
    pub async fn token(&self, role: &str) -> String {
        let c = &self.credentials[role];
        self.token_for(&c.client_id, &c.client_secret).await
    }

    pub fn client_id(&self, role: &str) -> String {
        self.credentials[role].client_id.clone()
    }

    /// A new client of `role`, created through the admin API; its token.
    pub async fn new_client(&self, role: &str) -> (String, String) {
        let admin = self.token("admin").await;
        let response = self
            .http
            .post(self.url("/v1/admin/clients"))
            .bearer_auth(admin)
            .json(&json!({"role": role, "name": format!("test {role}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        let id = body["client_id"].as_str().unwrap().to_owned();
        let token = self
            .token_for(&id, body["client_secret"].as_str().unwrap())
            .await;
        (id, token)
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn products(&self) -> Vec<Value> {
        let token = self.token("customer").await;
        let body: Value = self.get(&token, "/v1/products").await.json().await.unwrap();
        body["items"].as_array().unwrap().clone()
    }

    pub async fn product_id(&self, index: usize) -> String {
        self.products().await[index]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Orders are priced from the catalog projection that product.upserted
    /// feeds; wait until every committed event has been handled.
    async fn wait_for_catalog(&self) {
        self.wait_for_quiet_bus().await;
    }

    /// Waits until no outbox holds an unpublished event and no consumer
    /// lags: every event committed so far has been handled (or parked) by
    /// every consumer.
    pub async fn wait_for_quiet_bus(&self) {
        let admin = self.token("admin").await;
        eventually("every outbox is drained", || async {
            let body: Value = self
                .get(&admin, "/v1/admin/outbox")
                .await
                .json()
                .await
                .unwrap();
            let drained = body["outboxes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["backlog"] == 0);
            // With a broker, published is not yet handled: its consumers
            // must have acknowledged everything too.
            let caught_up = body["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["lag"].is_null() || c["lag"] == 0);
            drained && caught_up
        })
        .await;
    }

    pub async fn create_order(&self, token: &str, product_id: &str, quantity: i64) -> Value {
        let response = self
            .post_json(token, "/v1/orders", &order_body(product_id, quantity))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn timeline(&self, token: &str, order_id: &str) -> Vec<Value> {
        let body: Value = self
            .get(token, &format!("/v1/orders/{order_id}/timeline"))
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Each service's count of committed, unpublished events.
pub async fn outbox_backlogs(stores: &ordo_app::stores::Stores) -> Vec<(String, u64)> {
    let mut backlogs = Vec::new();
    for outbox in stores.outboxes() {
        backlogs.push((outbox.service().to_owned(), outbox.backlog().await.unwrap()));
    }
    backlogs
}

/// Waits until every order is final, for as long as orders keep
/// settling: fails once `stall` passes with no order reaching a final
/// state (a stall, not a slow machine), naming the orders left, the
/// outbox backlogs and the dead letters.
pub async fn wait_until_every_order_is_final(
    checker: &ordo_invariants::Checker,
    stores: &ordo_app::stores::Stores,
    stall: Duration,
) {
    let mut fewest = usize::MAX;
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let open: Vec<_> = checker
            .check(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|v| v.invariant == 2)
            .collect();
        if open.is_empty() {
            return;
        }
        if open.len() < fewest {
            fewest = open.len();
            last_progress = tokio::time::Instant::now();
        }
        if last_progress.elapsed() >= stall {
            let parked = stores.dead_letters.list(10).await.unwrap();
            panic!(
                "{} orders stopped settling for {stall:?}: {:#?}\n\
                 outbox backlogs: {:?}\ndead letters: {parked:#?}",
                open.len(),
                &open[..open.len().min(10)],
                outbox_backlogs(stores).await,
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn order_body(product_id: &str, quantity: i64) -> Value {
    json!({
        "items": [{"product_id": product_id, "quantity": quantity}],
        "shipping_address": {
            "name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin",
            "postal_code": "10117", "country": "DE"
        },
        "payment": {"token": "tok_visa"},
        "attributes": {"gift": true}
    })
}

/// Polls `condition` until it holds, for at most 90 seconds (generous: a
/// loaded two-core machine runs the PostgreSQL and SQLite variants of a
/// test side by side; a condition that never holds still fails).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
