//! Throw-away databases for tests against a real PostgreSQL server.
//!
//! `ORDO_TEST_DATABASE_URL` names a server (and a database to connect to
//! for administration); each [`TestDatabase`] creates a database with a
//! unique name there and drops it (terminating its connections) when
//! dropped. Without the variable, [`TestDatabase::create`] returns `None`
//! and the caller skips: CI sets the variable and checks the server first.
//!
//! [`on_both_backends!`](crate::on_both_backends) turns one test body into
//! a test per backend.

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::NoTls;

pub const URL_VARIABLE: &str = "ORDO_TEST_DATABASE_URL";

/// Test databases of one test binary alive at once, at most: each test
/// holds a few connections of a server that other binaries share.
static SLOTS: Semaphore = Semaphore::const_new(4);

pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
    /// Released after the database is dropped (fields drop after `drop`).
    _slot: SemaphorePermit<'static>,
}

impl TestDatabase {
    /// A fresh, empty database, or `None` when no test server is set.
    ///
    /// # Panics
    /// When the variable is set but the server cannot create a database: a
    /// configured server that does not work is a failure, not a skip.
    pub async fn create() -> Option<Self> {
        let admin_url = std::env::var(URL_VARIABLE).ok()?;
        let Ok(slot) = SLOTS.acquire().await else {
            unreachable!("the slots semaphore is never closed")
        };
        let name = format!("ordo_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let result = async {
            let client = admin_client(&admin_url).await?;
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            panic!("{URL_VARIABLE} is set but creating a test database failed: {err:#}");
        }
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
            _slot: slot,
        })
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `schema` of this database with `sets` applied, over a pool of 4
    /// connections (each call its own pool, as another process would have).
    ///
    /// # Panics
    /// When the schema cannot be opened.
    pub async fn connect(
        &self,
        schema: &str,
        sets: &[ordo_kernel::MigrationSet],
    ) -> crate::PgDatabase {
        let options = crate::PgOptions {
            pool_size: 4,
            ..crate::PgOptions::default()
        };
        match crate::PgDatabase::connect(&self.url, schema, sets, &options).await {
            Ok(db) => db,
            Err(err) => panic!(
                "opening schema {schema} of test database {}: {err:#}",
                self.name
            ),
        }
    }
}

async fn admin_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = url
        .parse::<tokio_postgres::Config>()?
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime; the cleanup gets its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = admin_client(&admin_url).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err:#}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}

/// Generates, for each named `async fn name(backend)` of the calling
/// module, a test per backend: `sqlite::name` and `postgres::name`.
/// `sqlite` makes the SQLite backend; `postgres` (which may `.await`) an
/// `Option` of the PostgreSQL one, `None` when no test server is set, and
/// the test then passes having said so. Both expressions are evaluated in
/// the generated modules, so `super::` names the calling module.
#[macro_export]
macro_rules! on_both_backends {
    (
        sqlite: $sqlite:expr,
        postgres: $postgres:expr,
        worker_threads: $threads:literal,
        tests: [$($name:ident),* $(,)?] $(,)?
    ) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $name() {
                    super::$name($sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $name() {
                    let Some(backend) = $postgres else {
                        eprintln!(
                            "{}: {} is not set; the PostgreSQL run is skipped",
                            stringify!($name),
                            $crate::testing::URL_VARIABLE
                        );
                        return;
                    };
                    super::$name(backend).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
