//! What the payments tests share: a simulator on a real port, clients with
//! short timeouts, a manual monotonic clock, a service over SQLite or
//! PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backend;

use backend::Backend;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ordo_bus::{Envelope, EventContext, EventPayload, Handler, OutboxStore, RetryPolicy};
use ordo_events::{OrderCancelled, OrderConfirmed};
use ordo_kernel::{ClientId, Currency, EventId, OrderId, SystemClock, UlidGen};
use ordo_payments::gateway::MonotonicClock;
use ordo_payments::{
    Gateway, GatewayConfig, HttpGateway, PaymentStore, PaymentsConfig, PaymentsService, Simulator,
    SimulatorConfig,
};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use ulid::Ulid;

/// Serves `router` on a fresh port of 127.0.0.1; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// An address nothing listens on.
pub fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The simulator's delays, shrunk to fit [`fast_gateway`]'s timeout.
pub fn fast_simulator() -> SimulatorConfig {
    SimulatorConfig {
        timeout_delay: Duration::from_secs(3),
        slow_delay: Duration::from_millis(150),
    }
}

/// Short timeouts and backoff; a breaker that only opens when a test
/// means it to.
pub fn fast_gateway() -> GatewayConfig {
    GatewayConfig {
        call_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        breaker_threshold: 100,
        breaker_cooldown: Duration::from_secs(60),
    }
}

/// Monotonic time that only moves when told to.
pub struct ManualClock(Mutex<Instant>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Instant::now())))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl MonotonicClock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

pub fn new_order() -> OrderId {
    OrderId::from_ulid(Ulid::new())
}

pub fn new_client() -> ClientId {
    ClientId::from_ulid(Ulid::new())
}

pub fn envelope<E: EventPayload>(order: OrderId, payload: &E) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        Utc::now(),
        order.to_string(),
        None,
        &EventContext::from_request("req-test"),
        payload,
    )
    .unwrap()
}

pub fn confirmed(order: OrderId, customer: ClientId, total: &str, token: &str) -> Envelope {
    envelope(
        order,
        &OrderConfirmed {
            order_id: order,
            customer_id: customer,
            total: dec(total),
            currency: eur(),
            payment_token: token.to_owned(),
        },
    )
}

pub fn cancelled(order: OrderId) -> Envelope {
    envelope(
        order,
        &OrderCancelled {
            order_id: order,
            reason: "customer_cancelled".to_owned(),
            from_status: "paid".to_owned(),
        },
    )
}

/// A payments service over a fresh database, charging through `gateway`.
pub struct Harness {
    pub service: Arc<PaymentsService>,
    pub store: Arc<dyn PaymentStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub handler: Arc<dyn Handler>,
    /// Dropped last: the database outlives everything using it.
    _backend: Backend,
}

impl Harness {
    /// Over a fresh SQLite file.
    pub fn new(gateway: Arc<dyn Gateway>, config: PaymentsConfig) -> Self {
        Self::on(backend::sqlite(), gateway, config)
    }

    pub fn on(backend: Backend, gateway: Arc<dyn Gateway>, config: PaymentsConfig) -> Self {
        let service = Arc::new(
            PaymentsService::new(
                backend.store.clone(),
                gateway,
                Arc::new(SystemClock),
                Arc::new(UlidGen::new()),
            )
            .with_config(config),
        );
        let handler = ordo_payments::consumers(service.clone())
            .pop()
            .unwrap()
            .handler;
        Self {
            service,
            store: backend.store.clone(),
            outbox: backend.outbox.clone(),
            handler,
            _backend: backend,
        }
    }

    /// The types of the events published about `order`, in order.
    pub async fn published(&self, order: OrderId) -> Vec<Envelope> {
        self.outbox
            .events_for_subject(&order.to_string())
            .await
            .unwrap()
    }

    pub async fn published_types(&self, order: OrderId) -> Vec<String> {
        self.published(order)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

/// A simulator on its own port and an HTTP client of it.
pub async fn simulator_and_client() -> (Simulator, Arc<HttpGateway>) {
    let simulator = Simulator::new(fast_simulator());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(simulator.clone().serve(listener, std::future::pending()));
    let gateway = Arc::new(HttpGateway::new(url, fast_gateway()).unwrap());
    (simulator, gateway)
}

/// A service over SQLite charging through a fresh simulator.
pub async fn harness() -> (Harness, Simulator) {
    harness_on(backend::sqlite()).await
}

/// A service over `backend` charging through a fresh simulator.
pub async fn harness_on(backend: Backend) -> (Harness, Simulator) {
    let (simulator, gateway) = simulator_and_client().await;
    (
        Harness::on(backend, gateway, PaymentsConfig::default()),
        simulator,
    )
}
