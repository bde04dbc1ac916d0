//! Opening every store: one SQLite file per service (plus the auth and bus
//! files) in the embedded default, or one schema per service in a
//! PostgreSQL database when a database URL is set. Past this module,
//! nothing knows which backend holds the data.

use std::sync::Arc;

use anyhow::Context;
use ordo_auth::{ClientStore, PgClientStore, SessionStore, SqliteClientStore};
use ordo_bus::{DeadLetterStore, OutboxStore};
use ordo_delivery::{PgShipmentStore, ShipmentStore, SqliteShipmentStore};
use ordo_http::idempotency_store::IdempotencyStore;
use ordo_inventory::{PgInventoryStore, ProductStore, SqliteInventoryStore, StockStore};
use ordo_kernel::{MigrationSet, StoreError};
use ordo_orders::{OrderStore, PgOrderStore, SqliteOrderStore};
use ordo_payments::{PaymentStore, PgPaymentStore, SqlitePaymentStore};
use ordo_postgres::{PgDatabase, PgDeadLetters, PgIdempotency, PgOptions, PgOutbox};
use ordo_sqlite::{DatabaseOptions, SqliteDeadLetters, SqliteIdempotency, SqliteOutbox};

use crate::config::Config;

/// A database (SQLite file or PostgreSQL schema), as operations see it.
#[derive(Clone, Debug)]
pub enum DatabaseHandle {
    Sqlite(ordo_sqlite::Database),
    Postgres(PgDatabase),
}

impl DatabaseHandle {
    pub fn name(&self) -> &str {
        match self {
            Self::Sqlite(db) => db.name(),
            Self::Postgres(db) => db.schema(),
        }
    }

    /// Where it lives, for `ordo migrate`.
    pub fn location(&self) -> String {
        match self {
            Self::Sqlite(db) => db.path().display().to_string(),
            Self::Postgres(db) => format!("schema {}", db.schema()),
        }
    }

    /// One round trip, for the readiness check.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(db) => db
                .read(|conn| {
                    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                        .map_err(ordo_sqlite::store_error)
                })
                .await
                .map(drop),
            Self::Postgres(db) => db.ping().await,
        }
    }

    /// Stops the SQLite writer after its last command (PostgreSQL pools
    /// close when dropped).
    pub fn close(self) {
        if let Self::Sqlite(db) = self {
            db.close();
        }
    }
}

/// The orders service's stores.
#[derive(Clone)]
pub struct OrdersStores {
    pub orders: Arc<dyn OrderStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
}

/// The inventory service's stores.
#[derive(Clone)]
pub struct InventoryStores {
    pub products: Arc<dyn ProductStore>,
    pub stock: Arc<dyn StockStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
}

/// The payments service's stores.
#[derive(Clone)]
pub struct PaymentsStores {
    pub payments: Arc<dyn PaymentStore>,
    pub outbox: Arc<dyn OutboxStore>,
}

/// The delivery service's stores.
#[derive(Clone)]
pub struct DeliveryStores {
    pub shipments: Arc<dyn ShipmentStore>,
    pub outbox: Arc<dyn OutboxStore>,
}

/// The stores of the services this process runs (the configuration's
/// `services`), behind their traits, plus the API clients and the dead
/// letters every process needs. A service this process does not run has
/// no store here: its data is only reachable through its events.
#[derive(Clone)]
pub struct Stores {
    pub databases: Vec<DatabaseHandle>,
    pub clients: Arc<dyn ClientStore>,
    /// Console sessions, in the same store as the clients.
    pub sessions: Arc<dyn SessionStore>,
    /// The audit log of admin actions, in the auth database.
    pub audit: Arc<dyn ordo_auth::AuditStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub orders: Option<OrdersStores>,
    pub inventory: Option<InventoryStores>,
    pub payments: Option<PaymentsStores>,
    pub delivery: Option<DeliveryStores>,
}

impl Stores {
    /// Opens (and migrates) the databases of the configured services and
    /// the shared ones: PostgreSQL schemas when the configuration has a
    /// database URL, else SQLite files under the data directory.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match &config.database_url {
            // Six schemas connect at once: a large future, kept on the heap.
            Some(url) => Box::pin(Self::open_postgres(config, url.expose())).await,
            None => Self::open_sqlite(config),
        }
    }

    fn open_sqlite(config: &Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str, migrations: &[MigrationSet]| {
            ordo_sqlite::Database::open(
                name,
                &dir.join(format!("{name}.db")),
                migrations,
                DatabaseOptions::default(),
            )
        };
        let mut databases = Vec::new();
        let mut service = |name: &'static str, migrations: &[MigrationSet]| {
            if !config.runs(name) {
                return Ok::<_, anyhow::Error>(None);
            }
            let db = open(name, migrations)?;
            databases.push(DatabaseHandle::Sqlite(db.clone()));
            Ok(Some(db))
        };
        let orders = service("orders", &ordo_orders::MIGRATIONS)?.map(|db| OrdersStores {
            orders: Arc::new(SqliteOrderStore::new(db.clone())),
            outbox: Arc::new(SqliteOutbox::new("orders", db.clone())),
            idempotency: Arc::new(SqliteIdempotency::new(db)),
        });
        let inventory = service("inventory", &ordo_inventory::MIGRATIONS)?.map(|db| {
            let store = Arc::new(SqliteInventoryStore::new(db.clone()));
            InventoryStores {
                products: store.clone(),
                stock: store,
                outbox: Arc::new(SqliteOutbox::new("inventory", db.clone())),
                idempotency: Arc::new(SqliteIdempotency::new(db)),
            }
        });
        let payments = service("payments", &ordo_payments::MIGRATIONS)?.map(|db| PaymentsStores {
            payments: Arc::new(SqlitePaymentStore::new(db.clone())),
            outbox: Arc::new(SqliteOutbox::new("payments", db)),
        });
        let delivery = service("delivery", &ordo_delivery::MIGRATIONS)?.map(|db| DeliveryStores {
            shipments: Arc::new(SqliteShipmentStore::new(db.clone())),
            outbox: Arc::new(SqliteOutbox::new("delivery", db)),
        });
        let auth = open("auth", &[ordo_auth::MIGRATIONS])?;
        let bus = open("bus", &[ordo_sqlite::BUS_MIGRATIONS])?;
        databases.push(DatabaseHandle::Sqlite(auth.clone()));
        databases.push(DatabaseHandle::Sqlite(bus.clone()));
        let audit = Arc::new(ordo_auth::SqliteAuditStore::new(auth.clone()));
        let clients = Arc::new(SqliteClientStore::new(auth));
        Ok(Self {
            databases,
            clients: clients.clone(),
            sessions: clients,
            audit,
            dead_letters: Arc::new(SqliteDeadLetters::new(bus)),
            orders,
            inventory,
            payments,
            delivery,
        })
    }

    async fn open_postgres(config: &Config, url: &str) -> anyhow::Result<Self> {
        let services = PgOptions {
            pool_size: config.database_pool_size,
            read_url: config
                .read_database_url
                .as_ref()
                .map(|u| u.expose().to_owned()),
            ..PgOptions::default()
        };
        // Auth and the dead letters see little traffic.
        let small = PgOptions {
            pool_size: config.database_pool_size.min(4),
            ..services.clone()
        };
        let connect = |schema: &'static str, sets: &'static [MigrationSet], options: PgOptions| {
            let url = url.to_owned();
            let wanted = schema == "auth" || schema == "bus" || config.runs(schema);
            async move {
                if !wanted {
                    return Ok(None);
                }
                PgDatabase::connect(&url, schema, sets, &options)
                    .await
                    .map(Some)
                    .with_context(|| format!("opening the {schema} schema"))
            }
        };
        let (orders, inventory, payments, delivery, auth, bus) = tokio::try_join!(
            connect("orders", &ordo_orders::PG_MIGRATIONS, services.clone()),
            connect(
                "inventory",
                &ordo_inventory::PG_MIGRATIONS,
                services.clone()
            ),
            connect("payments", &ordo_payments::PG_MIGRATIONS, services.clone()),
            connect("delivery", &ordo_delivery::PG_MIGRATIONS, services.clone()),
            connect("auth", &ordo_auth::PG_MIGRATIONS, small.clone()),
            connect("bus", &[ordo_postgres::BUS_MIGRATIONS], small),
        )?;
        let (Some(auth), Some(bus)) = (auth, bus) else {
            anyhow::bail!("the auth and bus schemas are always opened");
        };
        let databases = [&orders, &inventory, &payments, &delivery]
            .into_iter()
            .flatten()
            .chain([&auth, &bus])
            .map(|db| DatabaseHandle::Postgres(db.clone()))
            .collect();
        let audit = Arc::new(ordo_auth::PgAuditStore::new(auth.clone()));
        let clients = Arc::new(PgClientStore::new(auth));
        Ok(Self {
            databases,
            clients: clients.clone(),
            sessions: clients,
            audit,
            dead_letters: Arc::new(PgDeadLetters::new(bus)),
            orders: orders.map(|db| OrdersStores {
                orders: Arc::new(PgOrderStore::new(db.clone())),
                outbox: Arc::new(PgOutbox::new("orders", db.clone())),
                idempotency: Arc::new(PgIdempotency::new(db)),
            }),
            inventory: inventory.map(|db| {
                let store = Arc::new(PgInventoryStore::new(db.clone()));
                InventoryStores {
                    products: store.clone(),
                    stock: store,
                    outbox: Arc::new(PgOutbox::new("inventory", db.clone())),
                    idempotency: Arc::new(PgIdempotency::new(db)),
                }
            }),
            payments: payments.map(|db| PaymentsStores {
                payments: Arc::new(PgPaymentStore::new(db.clone())),
                outbox: Arc::new(PgOutbox::new("payments", db)),
            }),
            delivery: delivery.map(|db| DeliveryStores {
                shipments: Arc::new(PgShipmentStore::new(db.clone())),
                outbox: Arc::new(PgOutbox::new("delivery", db)),
            }),
        })
    }

    /// The outboxes of the services this process runs.
    pub fn outboxes(&self) -> Vec<Arc<dyn OutboxStore>> {
        [
            self.orders.as_ref().map(|s| s.outbox.clone()),
            self.inventory.as_ref().map(|s| s.outbox.clone()),
            self.delivery.as_ref().map(|s| s.outbox.clone()),
            self.payments.as_ref().map(|s| s.outbox.clone()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The invariant checker over these stores; it needs the orders and
    /// inventory stores (open every service to check everything).
    pub fn checker(&self) -> anyhow::Result<ordo_invariants::Checker> {
        let (Some(orders), Some(inventory)) = (&self.orders, &self.inventory) else {
            anyhow::bail!("the invariant checker needs the orders and inventory stores");
        };
        Ok(ordo_invariants::Checker {
            orders: orders.orders.clone(),
            orders_outbox: orders.outbox.clone(),
            stock: inventory.stock.clone(),
            payments: self.payments.as_ref().map(|p| {
                Arc::new(ordo_invariants::PaymentsLedger(p.payments.clone()))
                    as Arc<dyn ordo_invariants::PaymentsView>
            }),
            shipments: self.delivery.as_ref().map(|d| {
                Arc::new(ordo_invariants::DeliveryView(d.shipments.clone()))
                    as Arc<dyn ordo_invariants::ShipmentsView>
            }),
        })
    }

    pub fn databases(&self) -> &[DatabaseHandle] {
        &self.databases
    }
}
