//! The delivery store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_bus::OutboxStore;
use ordo_delivery::{
    MIGRATIONS, PG_MIGRATIONS, PgShipmentStore, ShipmentStore, SqliteShipmentStore,
};
use ordo_postgres::PgOutbox;
use ordo_postgres::testing::TestDatabase;
use ordo_sqlite::{Database, DatabaseOptions, SqliteOutbox};
use tempfile::TempDir;

/// A delivery database and the stores over it. Fields drop in order: the
/// stores (and their connections) before the database they use.
pub struct Backend {
    pub store: Arc<dyn ShipmentStore>,
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
        "delivery",
        &dir.path().join("delivery.db"),
        &MIGRATIONS,
        DatabaseOptions::default(),
    )
    .unwrap();
    Backend {
        store: Arc::new(SqliteShipmentStore::new(db.clone())),
        outbox: Arc::new(SqliteOutbox::new("delivery", db)),
        _guard: Guard::Sqlite(dir),
    }
}

/// `None` when no test server is configured.
pub async fn postgres() -> Option<Backend> {
    let database = TestDatabase::create().await?;
    let db = database.connect("delivery", &PG_MIGRATIONS).await;
    Some(Backend {
        store: Arc::new(PgShipmentStore::new(db.clone())),
        outbox: Arc::new(PgOutbox::new("delivery", db)),
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
