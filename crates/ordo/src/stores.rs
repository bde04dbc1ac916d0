//! Opening every store of the embedded mode: one SQLite file per service,
//! plus the auth and bus files.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ordo_auth::{ClientStore, SqliteClientStore};
use ordo_bus::DeadLetterStore;
use ordo_delivery::{ShipmentStore, SqliteShipmentStore};
use ordo_inventory::{ProductStore, SqliteInventoryStore, StockStore};
use ordo_orders::{OrderStore, SqliteOrderStore};
use ordo_payments::{PaymentStore, SqlitePaymentStore};
use ordo_sqlite::{
    BUS_MIGRATIONS, Database, DatabaseOptions, SqliteDeadLetters, SqliteIdempotency, SqliteOutbox,
};

use crate::config::Config;

/// The databases and the stores over them.
#[derive(Clone)]
pub struct Stores {
    pub orders_db: Database,
    pub inventory_db: Database,
    pub auth_db: Database,
    pub bus_db: Database,
    pub delivery_db: Database,
    pub payments_db: Database,
    pub payments: Arc<dyn PaymentStore>,
    pub payments_outbox: Arc<SqliteOutbox>,
    pub shipments: Arc<dyn ShipmentStore>,
    pub delivery_outbox: Arc<SqliteOutbox>,
    pub orders: Arc<dyn OrderStore>,
    pub products: Arc<dyn ProductStore>,
    pub stock: Arc<dyn StockStore>,
    pub clients: Arc<dyn ClientStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub orders_outbox: Arc<SqliteOutbox>,
    pub inventory_outbox: Arc<SqliteOutbox>,
    pub orders_idempotency: Arc<SqliteIdempotency>,
    pub inventory_idempotency: Arc<SqliteIdempotency>,
}

fn open(
    name: &str,
    dir: &Path,
    migrations: &[ordo_sqlite::MigrationSet],
) -> anyhow::Result<Database> {
    Database::open(
        name,
        &dir.join(format!("{name}.db")),
        migrations,
        DatabaseOptions::default(),
    )
}

impl Stores {
    /// Opens (and migrates) every database under the data directory.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let orders_db = open("orders", dir, &ordo_orders::MIGRATIONS)?;
        let inventory_db = open("inventory", dir, &ordo_inventory::MIGRATIONS)?;
        let auth_db = open("auth", dir, &[ordo_auth::MIGRATIONS])?;
        let bus_db = open("bus", dir, &[BUS_MIGRATIONS])?;
        let delivery_db = open("delivery", dir, &ordo_delivery::MIGRATIONS)?;
        let payments_db = open("payments", dir, &ordo_payments::MIGRATIONS)?;
        let inventory = Arc::new(SqliteInventoryStore::new(inventory_db.clone()));
        Ok(Self {
            orders: Arc::new(SqliteOrderStore::new(orders_db.clone())),
            products: inventory.clone(),
            stock: inventory,
            clients: Arc::new(SqliteClientStore::new(auth_db.clone())),
            dead_letters: Arc::new(SqliteDeadLetters::new(bus_db.clone())),
            orders_outbox: Arc::new(SqliteOutbox::new("orders", orders_db.clone())),
            inventory_outbox: Arc::new(SqliteOutbox::new("inventory", inventory_db.clone())),
            orders_idempotency: Arc::new(SqliteIdempotency::new(orders_db.clone())),
            inventory_idempotency: Arc::new(SqliteIdempotency::new(inventory_db.clone())),
            shipments: Arc::new(SqliteShipmentStore::new(delivery_db.clone())),
            payments: Arc::new(SqlitePaymentStore::new(payments_db.clone())),
            payments_outbox: Arc::new(SqliteOutbox::new("payments", payments_db.clone())),
            delivery_outbox: Arc::new(SqliteOutbox::new("delivery", delivery_db.clone())),
            orders_db,
            inventory_db,
            auth_db,
            bus_db,
            delivery_db,
            payments_db,
        })
    }

    pub fn databases(&self) -> [&Database; 4] {
        [
            &self.orders_db,
            &self.inventory_db,
            &self.auth_db,
            &self.bus_db,
        ]
    }
}
