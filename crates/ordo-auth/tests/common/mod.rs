//! The client store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped, saying so, when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_auth::{ClientStore, MIGRATIONS, PG_MIGRATIONS, PgClientStore, SqliteClientStore};
use ordo_postgres::testing::TestDatabase;
use ordo_postgres::{PgDatabase, PgOptions};
use ordo_sqlite::{Database, DatabaseOptions};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

/// An auth database and the stores over it. Fields drop in order: the
/// stores (and their connections) before the database they use.
pub struct Backend {
    pub store: Arc<dyn ClientStore>,
    /// A second store over the same database with its own connections, as
    /// another process would have (the same store on SQLite, where one
    /// writer serves the process).
    pub other_process: Arc<dyn ClientStore>,
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
        "auth",
        &dir.path().join("auth.db"),
        &[MIGRATIONS],
        DatabaseOptions::default(),
    )
    .unwrap();
    let store: Arc<dyn ClientStore> = Arc::new(SqliteClientStore::new(db));
    Backend {
        other_process: store.clone(),
        store,
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
    let options = PgOptions {
        pool_size: 2,
        ..Default::default()
    };
    let db = PgDatabase::connect(database.url(), "auth", &PG_MIGRATIONS, &options)
        .await
        .unwrap();
    let other = PgDatabase::connect(database.url(), "auth", &PG_MIGRATIONS, &options)
        .await
        .unwrap();
    Some(Backend {
        store: Arc::new(PgClientStore::new(db)),
        other_process: Arc::new(PgClientStore::new(other)),
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
