//! The orders store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_bus::OutboxStore;
use ordo_orders::{MIGRATIONS, OrderStore, PG_MIGRATIONS, PgOrderStore, SqliteOrderStore};
use ordo_postgres::testing::TestDatabase;
use ordo_postgres::{PgDatabase, PgOptions, PgOutbox};
use ordo_sqlite::{Database, DatabaseOptions, SqliteOutbox};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

/// An orders database and the stores over it. Fields drop in order: the
/// stores (and their connections) before the database they use.
pub struct Backend {
    pub store: Arc<dyn OrderStore>,
    pub outbox: Arc<dyn OutboxStore>,
    /// The PostgreSQL database's URL (None on SQLite).
    pub database_url: Option<String>,
    _guard: Guard,
}

enum Guard {
    Sqlite(TempDir),
    Postgres {
        _database: TestDatabase,
        _permit: SemaphorePermit<'static>,
    },
}

/// PostgreSQL tests of one binary at once, at most: each holds a few
/// connections of a server that others share.
static POSTGRES_SLOTS: Semaphore = Semaphore::const_new(4);

pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        "orders",
        &dir.path().join("orders.db"),
        &MIGRATIONS,
        DatabaseOptions::default(),
    )
    .unwrap();
    Backend {
        store: Arc::new(SqliteOrderStore::new(db.clone())),
        outbox: Arc::new(SqliteOutbox::new("orders", db)),
        database_url: None,
        _guard: Guard::Sqlite(dir),
    }
}

/// `None`, after saying so, when no test server is configured.
pub async fn postgres() -> Option<Backend> {
    let permit = POSTGRES_SLOTS.acquire().await.unwrap();
    let Some(database) = TestDatabase::create().await else {
        eprintln!("ORDO_TEST_DATABASE_URL is not set: the PostgreSQL run is skipped");
        return None;
    };
    let db = PgDatabase::connect(
        database.url(),
        "orders",
        &PG_MIGRATIONS,
        &PgOptions {
            pool_size: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Some(Backend {
        store: Arc::new(PgOrderStore::new(db.clone())),
        outbox: Arc::new(PgOutbox::new("orders", db)),
        database_url: Some(database.url().to_owned()),
        _guard: Guard::Postgres {
            _database: database,
            _permit: permit,
        },
    })
}

/// Generates, for each named `async fn(Backend)` of the calling module, a
/// test on SQLite (`sqlite::<name>`) and one on PostgreSQL
/// (`postgres::<name>`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = super::common::postgres().await else {
                        return;
                    };
                    super::$name(backend).await;
                }
            )*
        }
    };
}
