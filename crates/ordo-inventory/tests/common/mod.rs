//! The inventory store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_bus::OutboxStore;
use ordo_inventory::{
    MIGRATIONS, PG_MIGRATIONS, PgInventoryStore, ProductStore, SqliteInventoryStore, StockStore,
};
use ordo_postgres::testing::TestDatabase;
use ordo_postgres::{PgDatabase, PgOptions, PgOutbox};
use ordo_sqlite::{Database, DatabaseOptions, SqliteOutbox};
use tempfile::TempDir;

/// An inventory database and the stores over it. Fields drop in order:
/// the stores (and their connections) before the database they use.
pub struct Backend {
    pub products: Arc<dyn ProductStore>,
    pub stock: Arc<dyn StockStore>,
    pub outbox: Arc<dyn OutboxStore>,
    _guard: Guard,
}

enum Guard {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        "inventory",
        &dir.path().join("inventory.db"),
        &MIGRATIONS,
        DatabaseOptions::default(),
    )
    .unwrap();
    let store = Arc::new(SqliteInventoryStore::new(db.clone()));
    Backend {
        products: store.clone(),
        stock: store,
        outbox: Arc::new(SqliteOutbox::new("inventory", db)),
        _guard: Guard::Sqlite(dir),
    }
}

/// `None` when no test server is configured.
pub async fn postgres() -> Option<Backend> {
    let database = TestDatabase::create().await?;
    let db = PgDatabase::connect(
        database.url(),
        "inventory",
        &PG_MIGRATIONS,
        &PgOptions {
            pool_size: 4,
            // No second chances: a deadlock or a serialization failure
            // fails the test instead of being retried away.
            max_retries: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let store = Arc::new(PgInventoryStore::new(db.clone()));
    Some(Backend {
        products: store.clone(),
        stock: store,
        outbox: Arc::new(PgOutbox::new("inventory", db)),
        _guard: Guard::Postgres(database),
    })
}

/// For each named `async fn(Backend)` of the calling module, a test on
/// SQLite (`sqlite::<name>`) and one on PostgreSQL (`postgres::<name>`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        ordo_postgres::on_both_backends! {
            sqlite: super::common::sqlite(),
            postgres: super::common::postgres().await,
            worker_threads: 4,
            tests: [$($name),*],
        }
    };
}
