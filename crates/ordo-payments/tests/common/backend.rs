//! The payments store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped, saying so, when `ORDO_TEST_DATABASE_URL` is unset).

use std::sync::Arc;

use ordo_bus::OutboxStore;
use ordo_payments::{MIGRATIONS, PG_MIGRATIONS, PaymentStore, PgPaymentStore, SqlitePaymentStore};
use ordo_postgres::PgOutbox;
use ordo_postgres::testing::TestDatabase;
use ordo_sqlite::{Database, DatabaseOptions, SqliteOutbox};
use tempfile::TempDir;

/// A payments database and the stores over it. Fields drop in order: the
/// stores (and their connections) before the database they use.
pub struct Backend {
    pub store: Arc<dyn PaymentStore>,
    pub outbox: Arc<dyn OutboxStore>,
    /// A second store over the same database with its own connections, as
    /// another process would have (the same store on SQLite, where one
    /// writer serves every process).
    pub other_process: Arc<dyn PaymentStore>,
    pub kind: Kind,
    _guard: Guard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

enum Guard {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        "payments",
        &dir.path().join("payments.db"),
        &MIGRATIONS,
        DatabaseOptions::default(),
    )
    .unwrap();
    let store: Arc<dyn PaymentStore> = Arc::new(SqlitePaymentStore::new(db.clone()));
    Backend {
        other_process: store.clone(),
        store,
        outbox: Arc::new(SqliteOutbox::new("payments", db)),
        kind: Kind::Sqlite,
        _guard: Guard::Sqlite(dir),
    }
}

/// `None` when no test server is configured.
pub async fn postgres() -> Option<Backend> {
    let database = TestDatabase::create().await?;
    let db = database.connect("payments", &PG_MIGRATIONS).await;
    // Its own pools: another process.
    let other = database.connect("payments", &PG_MIGRATIONS).await;
    Some(Backend {
        store: Arc::new(PgPaymentStore::new(db.clone())),
        other_process: Arc::new(PgPaymentStore::new(other)),
        outbox: Arc::new(PgOutbox::new("payments", db)),
        kind: Kind::Postgres,
        _guard: Guard::Postgres(database),
    })
}

/// For each named `async fn(Backend)` of the calling module, a test on
/// SQLite (`sqlite::<name>`) and one on PostgreSQL (`postgres::<name>`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        ordo_postgres::on_both_backends! {
            sqlite: super::common::backend::sqlite(),
            postgres: super::common::backend::postgres().await,
            worker_threads: 4,
            tests: [$($name),*],
        }
    };
}
