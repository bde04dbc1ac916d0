//! Opening every store: one SQLite file per service (plus the auth and bus
//! files) in the embedded default, or one schema per service in a
//! PostgreSQL database when a database URL is set. Past this module,
//! nothing knows which backend holds the data.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ordo_auth::{ClientStore, PgClientStore, SqliteClientStore};
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

/// The stores of every service, behind their traits.
#[derive(Clone)]
pub struct Stores {
    pub databases: Vec<DatabaseHandle>,
    pub orders: Arc<dyn OrderStore>,
    pub products: Arc<dyn ProductStore>,
    pub stock: Arc<dyn StockStore>,
    pub payments: Arc<dyn PaymentStore>,
    pub shipments: Arc<dyn ShipmentStore>,
    pub clients: Arc<dyn ClientStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub orders_outbox: Arc<dyn OutboxStore>,
    pub inventory_outbox: Arc<dyn OutboxStore>,
    pub payments_outbox: Arc<dyn OutboxStore>,
    pub delivery_outbox: Arc<dyn OutboxStore>,
    pub orders_idempotency: Arc<dyn IdempotencyStore>,
    pub inventory_idempotency: Arc<dyn IdempotencyStore>,
}

impl Stores {
    /// Opens (and migrates) every database: PostgreSQL schemas when the
    /// configuration has a database URL, else SQLite files under the data
    /// directory.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match &config.database_url {
            // Six schemas connect at once: a large future, kept on the heap.
            Some(url) => Box::pin(Self::open_postgres(config, url.expose())).await,
            None => Self::open_sqlite(&config.data_dir),
        }
    }

    fn open_sqlite(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str, migrations: &[MigrationSet]| {
            ordo_sqlite::Database::open(
                name,
                &dir.join(format!("{name}.db")),
                migrations,
                DatabaseOptions::default(),
            )
        };
        let orders = open("orders", &ordo_orders::MIGRATIONS)?;
        let inventory = open("inventory", &ordo_inventory::MIGRATIONS)?;
        let payments = open("payments", &ordo_payments::MIGRATIONS)?;
        let delivery = open("delivery", &ordo_delivery::MIGRATIONS)?;
        let auth = open("auth", &[ordo_auth::MIGRATIONS])?;
        let bus = open("bus", &[ordo_sqlite::BUS_MIGRATIONS])?;
        let inventory_store = Arc::new(SqliteInventoryStore::new(inventory.clone()));
        Ok(Self {
            orders: Arc::new(SqliteOrderStore::new(orders.clone())),
            products: inventory_store.clone(),
            stock: inventory_store,
            payments: Arc::new(SqlitePaymentStore::new(payments.clone())),
            shipments: Arc::new(SqliteShipmentStore::new(delivery.clone())),
            clients: Arc::new(SqliteClientStore::new(auth.clone())),
            dead_letters: Arc::new(SqliteDeadLetters::new(bus.clone())),
            orders_outbox: Arc::new(SqliteOutbox::new("orders", orders.clone())),
            inventory_outbox: Arc::new(SqliteOutbox::new("inventory", inventory.clone())),
            payments_outbox: Arc::new(SqliteOutbox::new("payments", payments.clone())),
            delivery_outbox: Arc::new(SqliteOutbox::new("delivery", delivery.clone())),
            orders_idempotency: Arc::new(SqliteIdempotency::new(orders.clone())),
            inventory_idempotency: Arc::new(SqliteIdempotency::new(inventory.clone())),
            databases: [orders, inventory, payments, delivery, auth, bus]
                .into_iter()
                .map(DatabaseHandle::Sqlite)
                .collect(),
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
            async move {
                PgDatabase::connect(&url, schema, sets, &options)
                    .await
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
        let inventory_store = Arc::new(PgInventoryStore::new(inventory.clone()));
        Ok(Self {
            orders: Arc::new(PgOrderStore::new(orders.clone())),
            products: inventory_store.clone(),
            stock: inventory_store,
            payments: Arc::new(PgPaymentStore::new(payments.clone())),
            shipments: Arc::new(PgShipmentStore::new(delivery.clone())),
            clients: Arc::new(PgClientStore::new(auth.clone())),
            dead_letters: Arc::new(PgDeadLetters::new(bus.clone())),
            orders_outbox: Arc::new(PgOutbox::new("orders", orders.clone())),
            inventory_outbox: Arc::new(PgOutbox::new("inventory", inventory.clone())),
            payments_outbox: Arc::new(PgOutbox::new("payments", payments.clone())),
            delivery_outbox: Arc::new(PgOutbox::new("delivery", delivery.clone())),
            orders_idempotency: Arc::new(PgIdempotency::new(orders.clone())),
            inventory_idempotency: Arc::new(PgIdempotency::new(inventory.clone())),
            databases: [orders, inventory, payments, delivery, auth, bus]
                .into_iter()
                .map(DatabaseHandle::Postgres)
                .collect(),
        })
    }

    pub fn databases(&self) -> &[DatabaseHandle] {
        &self.databases
    }
}
