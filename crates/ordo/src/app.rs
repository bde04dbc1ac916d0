//! The application: every service of this process wired to its stores and
//! the bus, behind one router, launched on a given listener with a given
//! shutdown signal so that tests run the real thing on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use ordo_auth::{AuthService, AuthState, DEFAULT_SESSION_TTL, Sessions, StoreDirectory};
use ordo_bus::{Consumer, Faults, LocalBus, OutboxStore, Relay, RetryPolicy};
use ordo_delivery::{CourierSimulator, DeliveryService, DeliveryState};
use ordo_http::ApiError;
use ordo_http::auth::{Authenticator, require_auth};
use ordo_http::idempotency::{Idempotency, idempotency};
use ordo_http::metrics::{HttpMetrics, track};
use ordo_http::request::{BODY_LIMIT, request_id, request_limits, security_headers, timeout};
use ordo_inventory::{InventoryService, InventoryState};
use ordo_kernel::{Clock, IdGen, SystemClock, UlidGen};
use ordo_nats::{JetStreamBus, JetStreamSettings};
use ordo_orders::{OrdersService, OrdersState};
use ordo_payments::{
    GatewayConfig, HttpGateway, PaymentsService, PaymentsState, Simulator, SimulatorConfig,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::{debug, info, warn};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::chaos::Chaos;
use crate::config::{Config, CourierSim};
use crate::console::{ConsoleState, LinkSigner};
use crate::demo::{self, DemoCredentials};
use crate::ops::{self, OpsState, ScrapeGauges};
use crate::stores::Stores;
use crate::stuck::StuckOrders;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ordo API", description = "Order processing: orders, catalog, payments, delivery."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "orders", description = "Orders and their timeline"),
        (name = "catalog", description = "Products, stock and reservations"),
        (name = "payments", description = "Payments and refunds"),
        (name = "delivery", description = "Shipments and courier events"),
        (name = "admin", description = "API clients, dead letters, outbox, stuck orders, audit log"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Builds an [`App`]; tests add consumers of their own.
pub struct AppBuilder {
    config: Config,
    extra_consumers: Vec<Consumer>,
    faults: Faults,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
}

pub struct App {
    config: Config,
    listener: TcpListener,
    router: Router,
    stores: Stores,
    bus: LocalBus,
    broker: Option<JetStreamBus>,
    orders: Option<Arc<OrdersService>>,
    outboxes: Vec<Arc<dyn OutboxStore>>,
    idempotency: Vec<Idempotency>,
    inventory: Option<Arc<InventoryService>>,
    delivery: Option<Arc<DeliveryService>>,
    /// The built-in gateway simulator and its port.
    simulator: Option<(TcpListener, Simulator)>,
    chaos: Chaos,
    sessions: Arc<Sessions>,
    stop: CancellationToken,
    demo_credentials: Option<DemoCredentials>,
}

impl AppBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            extra_consumers: Vec::new(),
            faults: Faults::default(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UlidGen::new()),
        }
    }

    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.extra_consumers.push(consumer);
        self
    }

    /// Faults the in-process bus injects (tests of idempotency).
    pub fn bus_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Wires the services this process runs (`config.services`): their
    /// stores, reactions, routes and background work. Auth, health,
    /// metrics and the admin views of the bus are served by every process.
    pub async fn build(self) -> anyhow::Result<App> {
        let Self {
            config,
            extra_consumers,
            faults,
            clock,
            ids,
        } = self;
        let stores = Stores::open(&config).await?;
        let broker = match &config.nats_url {
            Some(url) => Some(
                JetStreamBus::connect(JetStreamSettings {
                    stream: config.nats_stream.clone(),
                    subject_prefix: config.nats_subject_prefix.clone(),
                    replicas: config.nats_replicas,
                    duplicate_window: config.nats_duplicate_window,
                    ack_wait: config.nats_ack_wait,
                    client_name: format!("ordo {}", config.services.join(",")),
                    ..JetStreamSettings::new(url.expose())
                })
                .await?,
            ),
            None => None,
        };
        let auth = Arc::new(
            AuthService::start(
                stores.clients.clone(),
                clock.clone(),
                ids.clone(),
                &config.jwt_issuer,
                &config.jwt_audience,
                config.token_ttl,
            )
            .await?,
        );
        let inventory = stores.inventory.as_ref().map(|s| {
            Arc::new(InventoryService::new(
                s.products.clone(),
                s.stock.clone(),
                clock.clone(),
                ids.clone(),
                config.reservation_ttl,
            ))
        });
        // The demo needs the catalog: a process running inventory makes it.
        let demo_credentials = match (&inventory, config.demo) {
            (Some(inventory), true) => {
                demo::first_start(&stores, &auth, inventory, &config.data_dir).await?
            }
            _ => None,
        };

        let stop = CancellationToken::new();
        let orders = stores.orders.as_ref().map(|s| {
            Arc::new(OrdersService::new(
                s.orders.clone(),
                clock.clone(),
                ids.clone(),
            ))
        });
        let delivery = stores.delivery.as_ref().map(|s| {
            Arc::new(DeliveryService::new(
                s.shipments.clone(),
                clock.clone(),
                ids.clone(),
            ))
        });
        // The payment gateway: the configured one, or the built-in simulator
        // on its own loopback port, reached over real HTTP either way.
        let mut simulator = None;
        let payments = match &stores.payments {
            Some(s) => {
                let gateway_url = match &config.gateway_url {
                    Some(url) => url.clone(),
                    None => {
                        let listener = TcpListener::bind(("127.0.0.1", 0))
                            .await
                            .context("binding the gateway simulator")?;
                        let url = format!("http://{}", listener.local_addr()?);
                        simulator = Some((listener, Simulator::new(SimulatorConfig::default())));
                        url
                    }
                };
                let gateway = Arc::new(HttpGateway::new(gateway_url, GatewayConfig::default())?);
                let service = Arc::new(PaymentsService::new(
                    s.payments.clone(),
                    gateway.clone(),
                    clock.clone(),
                    ids.clone(),
                ));
                Some((service, gateway))
            }
            None => None,
        };
        let mut consumers = Vec::new();
        if let Some(orders) = &orders {
            consumers.extend(ordo_orders::reactions::consumers(orders.clone()));
        }
        if let Some((payments, _)) = &payments {
            consumers.extend(ordo_payments::consumers(payments.clone()));
        }
        if let Some(inventory) = &inventory {
            consumers.extend(ordo_inventory::consumers(inventory.clone()));
        }
        if let Some(delivery) = &delivery {
            consumers.extend(ordo_delivery::consumers(delivery.clone()));
        }
        consumers.extend(extra_consumers);
        let policy = RetryPolicy {
            max_attempts: config.bus_max_attempts,
            base: config.bus_retry_base,
            max_delay: config.bus_retry_max,
        };
        let bus = LocalBus::new(consumers, stores.dead_letters.clone(), policy, stop.clone())
            .with_faults(faults);
        let chaos = Chaos::new(
            config.chaos,
            simulator.as_ref().map(|(_, s)| s.faults()),
            bus.clone(),
        );
        let outboxes = stores.outboxes();

        let sessions = Arc::new(Sessions::new(
            auth.clone(),
            stores.sessions.clone(),
            DEFAULT_SESSION_TTL,
        ));
        let authenticator = Authenticator::new(
            auth.jwt(),
            Arc::new(StoreDirectory(stores.clients.clone())),
            Duration::from_secs(5),
        )
        .with_sessions(sessions.clone());

        let mut registry = Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        let gauges = Arc::new(ScrapeGauges::default());
        ops::register_bus_metrics(&mut registry, bus.stats(), gauges.clone());
        crate::chaos::register_metrics(&mut registry, chaos.clone());
        if let Some((_, gateway)) = &payments {
            ordo_payments::metrics::register(&mut registry, gateway.clone());
        }
        let ops_state = OpsState {
            databases: stores.databases().to_vec(),
            outboxes: outboxes.clone(),
            dead_letters: stores.dead_letters.clone(),
            bus: bus.clone(),
            broker: broker.clone(),
            registry: Arc::new(registry),
            gauges,
        };
        let auth_state = AuthState {
            service: auth.clone(),
            authenticator: authenticator.clone(),
            clock: clock.clone(),
        };

        let mut idempotency = Vec::new();
        // No request runs past the request timeout: a key still in flight
        // after it was left by a process that died or a request cut off.
        let lock_ttl = config.request_timeout + Duration::from_secs(5);
        let mut authenticated = OpenApiRouter::new()
            .merge(ordo_auth::admin_router(auth_state.clone()))
            .merge(ops::admin_router(ops_state.clone()))
            .merge(crate::chaos::admin_router(chaos.clone()));
        if let (Some(service), Some(s)) = (&orders, &stores.orders) {
            let layer =
                Idempotency::new(s.idempotency.clone(), clock.clone()).with_lock_ttl(lock_ttl);
            let state = OrdersState {
                service: service.clone(),
            };
            authenticated = authenticated
                .merge(ordo_orders::router(state.clone()))
                .merge(
                    ordo_orders::create_router(state)
                        .layer(from_fn_with_state(layer.clone(), idempotency_layer)),
                );
            idempotency.push(layer);
        }
        if let (Some(service), Some(s)) = (&inventory, &stores.inventory) {
            let layer =
                Idempotency::new(s.idempotency.clone(), clock.clone()).with_lock_ttl(lock_ttl);
            let state = InventoryState {
                products: s.products.clone(),
                service: service.clone(),
            };
            authenticated = authenticated
                .merge(ordo_inventory::router(state.clone()))
                .merge(
                    ordo_inventory::create_router(state)
                        .layer(from_fn_with_state(layer.clone(), idempotency_layer)),
                );
            idempotency.push(layer);
        }
        // Stuck orders are found where the orders store is; the other
        // services' causes are checked when this process runs them.
        let stuck_orders = stores.orders.as_ref().map(|s| {
            let mut finder =
                StuckOrders::new(s.orders.clone(), stores.dead_letters.clone(), clock.clone());
            if let Some((_, gateway)) = &payments {
                finder = finder.with_gateway(gateway.clone());
            }
            if let Some(d) = &stores.delivery {
                finder = finder.with_shipments(d.shipments.clone());
            }
            if let Some(i) = &stores.inventory {
                finder = finder.with_holds(i.stock.clone());
            }
            Arc::new(finder)
        });
        if let Some(finder) = &stuck_orders {
            authenticated = authenticated.merge(crate::stuck::admin_router(finder.clone()));
        }
        let audit_log = Arc::new(ordo_auth::AuditLog::new(
            stores.audit.clone(),
            clock.clone(),
            ids.clone(),
        ));
        authenticated = authenticated.merge(crate::audit::admin_router(audit_log.clone()));
        if let Some((service, _)) = &payments {
            authenticated = authenticated.merge(ordo_payments::router(PaymentsState {
                service: service.clone(),
            }));
        }
        if let Some(service) = &delivery {
            authenticated = authenticated.merge(ordo_delivery::router(DeliveryState {
                service: service.clone(),
            }));
        }
        // Inside authentication: the audit reads the principal it found.
        let authenticated = authenticated
            .layer(from_fn_with_state(
                audit_log.clone(),
                crate::audit::record_admin_requests,
            ))
            .layer(from_fn_with_state(authenticator, require_auth));
        let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(ordo_auth::token_router(auth_state.clone()))
            .merge(authenticated)
            .split_for_parts();
        let openapi_json = api
            .to_pretty_json()
            .context("rendering the OpenAPI document")?;

        let console = crate::console::router(ConsoleState {
            sessions: sessions.clone(),
            orders: orders.clone(),
            inventory: inventory.clone(),
            payments: payments.as_ref().map(|(service, _)| service.clone()),
            delivery: delivery.clone(),
            links: Arc::new(LinkSigner::new(auth.link_key())?),
            secure_cookies: false,
            demo_credentials: config.demo.then(|| {
                demo::credentials_path(&config.data_dir)
                    .display()
                    .to_string()
            }),
            chaos: Some(chaos.clone()),
            stuck: stuck_orders.clone(),
            ops: Some(ops_state.clone()),
            auth: Some(auth_state),
            audit: Some(audit_log.clone()),
            gateway: payments.as_ref().map(|(_, gateway)| gateway.clone()),
        });

        let request_timeout = config.request_timeout;
        let router = api_router
            .merge(console)
            .route("/assets/{name}", get(crate::assets::serve))
            .merge(crate::reference::router(&api)?)
            .route(
                "/openapi.json",
                get(move || async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        openapi_json,
                    )
                }),
            )
            .route("/health/live", get(ops::live))
            .route(
                "/health/ready",
                get(ops::ready).with_state(ops_state.clone()),
            )
            .route("/metrics", get(ops::metrics).with_state(ops_state))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(from_fn(move |req, next| {
                timeout(request_timeout, req, next)
            }))
            .layer(from_fn(request_limits))
            .layer(from_fn_with_state(http_metrics, track))
            .layer(from_fn(request_id))
            // Outermost: its headers and problem bodies cover every answer.
            .layer(from_fn(security_headers));

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        Ok(App {
            config,
            listener,
            router,
            stores,
            bus,
            broker,
            orders,
            outboxes,
            idempotency,
            inventory,
            delivery,
            simulator,
            chaos,
            stop,
            sessions,
            demo_credentials,
        })
    }
}

async fn idempotency_layer(
    state: axum::extract::State<Idempotency>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    idempotency(state, req, next).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
}

impl App {
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder::new(config)
    }

    pub async fn build(config: Config) -> anyhow::Result<Self> {
        AppBuilder::new(config).build().await
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The demo credentials, when this start created them.
    pub fn demo_credentials(&self) -> Option<&DemoCredentials> {
        self.demo_credentials.as_ref()
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The chaos controls of this process.
    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }

    /// The invariant checker over this application's stores (it needs
    /// the orders and inventory services).
    pub fn checker(&self) -> anyhow::Result<ordo_invariants::Checker> {
        self.stores.checker()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes the
    /// requests in flight, drains the outbox relays and stops the bus.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            router,
            stores,
            bus,
            broker,
            orders,
            outboxes,
            idempotency,
            inventory,
            delivery,
            simulator,
            chaos: _,
            stop,
            sessions,
            demo_credentials: _,
        } = self;
        let mut tasks = Vec::new();
        let gateway_simulator = simulator.map(|(listener, simulator)| {
            tokio::spawn(simulator.serve(listener, stop.clone().cancelled_owned()))
        });
        tasks.push(tokio::spawn(maintenance(
            idempotency,
            outboxes.clone(),
            sessions,
            stop.clone(),
        )));
        let relays: Vec<_> = outboxes
            .into_iter()
            .map(|outbox| {
                let publisher: Arc<dyn ordo_bus::Publisher> = match &broker {
                    Some(broker) => broker.publisher(outbox.service()),
                    None => Arc::new(bus.clone()),
                };
                Relay::new(outbox, publisher).spawn(config.shutdown_grace)
            })
            .collect();
        // In distributed mode the broker delivers to this process's
        // consumers, and the orders service hears of every order change,
        // whichever replica made it (SSE, `Prefer: wait`).
        let consumers = match &broker {
            Some(broker) => {
                if let Some(orders) = &orders {
                    tasks.push(tokio::spawn(share_order_changes(
                        broker.clone(),
                        orders.clone(),
                        stop.clone(),
                    )));
                }
                broker.spawn_consumers(&bus, stop.clone())
            }
            None => Vec::new(),
        };
        tasks.push(tokio::spawn(
            bus.clone().run_replayer(config.dlq_poll_interval),
        ));
        if let Some(inventory) = inventory {
            tasks.push(tokio::spawn(inventory.run_expiry(stop.clone())));
        }
        if let (Some(delivery), CourierSim::Pace(pace)) = (delivery, config.courier_sim) {
            tasks.push(tokio::spawn(
                CourierSimulator::new(delivery, pace).run(stop.clone()),
            ));
        }

        info!(listen = %listener.local_addr()?, services = ?config.services, "ordo is serving");
        // Open event streams end when shutdown begins: a graceful shutdown
        // waits for every response, and a stream would not finish.
        let shutdown = async move {
            shutdown.await;
            if let Some(orders) = &orders {
                orders.stop_following();
            }
        };
        // The peer address, for throttling failed authentication.
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        info!("no longer accepting requests; draining the outbox");
        futures::future::join_all(relays.into_iter().map(|r| r.drain())).await;
        stop.cancel();
        if let Some(task) = gateway_simulator {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => warn!(error = %err, "the gateway simulator failed"),
                Err(err) => warn!(error = %err, "the gateway simulator task failed"),
            }
        }
        for task in tasks.into_iter().chain(consumers) {
            if let Err(err) = task.await {
                warn!(error = %err, "background task ended abnormally");
            }
        }
        drop(bus);
        for db in stores.databases {
            db.close();
        }
        info!("stopped");
        served.context("serving HTTP")
    }
}

/// Keeps the orders replicas told of each other's order changes (a status
/// committed, a timeline entry appended), for their event streams and
/// `Prefer: wait`.
async fn share_order_changes(
    broker: JetStreamBus,
    orders: Arc<OrdersService>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let heard = match broker.follow_changes("orders").await {
        Ok(heard) => heard,
        Err(err) => {
            warn!(error = %format!("{err:#}"),
                "cannot hear other replicas' order changes; event streams see them within 5 s");
            return;
        }
    };
    let mut heard = std::pin::pin!(heard);
    let mut here = orders.subscribe_changed_here();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            key = heard.next() => match key {
                Some(key) => {
                    if let Ok(id) = ordo_kernel::OrderId::parse(&key) {
                        orders.order_changed(id);
                    }
                }
                None => return,
            },
            id = here.recv() => match id {
                Ok(id) => {
                    if let Err(err) = broker.announce_change("orders", &id.to_string()).await {
                        debug!(error = %format!("{err:#}"), "an order change not announced");
                    }
                }
                // Others re-read on their own within seconds.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Published outbox rows are kept this long, as a record of what a
/// service said.
const OUTBOX_RETENTION: chrono::Duration = chrono::Duration::days(7);
/// Inbox rows are kept far longer than any redelivery can come late.
const INBOX_RETENTION: chrono::Duration = chrono::Duration::days(14);

/// Hourly housekeeping: idempotency keys past their retention, published
/// outbox rows, old inbox rows and expired console sessions.
async fn maintenance(
    layers: Vec<Idempotency>,
    outboxes: Vec<Arc<dyn OutboxStore>>,
    sessions: Arc<Sessions>,
    stop: CancellationToken,
) {
    loop {
        let now = chrono::Utc::now();
        for idempotency in &layers {
            let retention = chrono::Duration::from_std(idempotency.retention())
                .unwrap_or(chrono::Duration::days(1));
            match idempotency.store().purge(now - retention).await {
                Ok(0) => {}
                Ok(n) => info!(purged = n, "expired idempotency keys deleted"),
                Err(err) => warn!(error = %err, "could not purge idempotency keys"),
            }
        }
        for outbox in &outboxes {
            match outbox
                .purge(now - OUTBOX_RETENTION, now - INBOX_RETENTION)
                .await
            {
                Ok((0, 0)) => {}
                Ok((published, inbox)) => {
                    info!(
                        service = outbox.service(),
                        published, inbox, "old outbox and inbox rows deleted"
                    );
                }
                Err(err) => {
                    warn!(service = outbox.service(), error = %err, "could not purge the outbox and inbox")
                }
            }
        }
        match sessions.purge().await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "expired console sessions deleted"),
            Err(err) => warn!(error = %err, "could not purge console sessions"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    info!("shutdown requested");
}
