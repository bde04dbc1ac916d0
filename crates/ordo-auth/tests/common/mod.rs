//! The client store on each backend, for the suites that run on both:
//! SQLite in a temporary directory, PostgreSQL in a throw-away database
//! (skipped, saying so, when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ordo_auth::{
    ClientStore, MIGRATIONS, PG_MIGRATIONS, PgClientStore, SessionStore, SqliteClientStore,
};
use ordo_postgres::testing::TestDatabase;
use ordo_sqlite::{Database, DatabaseOptions};
use tempfile::TempDir;

/// An auth database and the stores over it. Fields drop in order: the
/// stores (and their connections) before the database they use.
pub struct Backend {
    pub store: Arc<dyn ClientStore>,
    /// A second store over the same database with its own connections, as
    /// another process would have (the same store on SQLite, where one
    /// writer serves the process).
    pub other_process: Arc<dyn ClientStore>,
    /// The console sessions of `store` and of `other_process`.
    pub sessions: Arc<dyn SessionStore>,
    pub other_sessions: Arc<dyn SessionStore>,
    _guard: Guard,
}

enum Guard {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        "auth",
        &dir.path().join("auth.db"),
        &[MIGRATIONS],
        DatabaseOptions::default(),
    )
    .unwrap();
    let concrete = Arc::new(SqliteClientStore::new(db));
    let store: Arc<dyn ClientStore> = concrete.clone();
    let sessions: Arc<dyn SessionStore> = concrete;
    Backend {
        other_process: store.clone(),
        store,
        other_sessions: sessions.clone(),
        sessions,
        _guard: Guard::Sqlite(dir),
    }
}

/// `None` when no test server is configured.
pub async fn postgres() -> Option<Backend> {
    let database = TestDatabase::create().await?;
    let db = database.connect("auth", &PG_MIGRATIONS).await;
    // Its own pools: another process.
    let other = database.connect("auth", &PG_MIGRATIONS).await;
    let (one, two) = (
        Arc::new(PgClientStore::new(db)),
        Arc::new(PgClientStore::new(other)),
    );
    Some(Backend {
        store: one.clone(),
        other_process: two.clone(),
        sessions: one,
        other_sessions: two,
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
