//! One service's schema in a PostgreSQL database: a pool of connections
//! whose `search_path` is that schema, an optional pool on a read replica,
//! and transactions retried when PostgreSQL asks for it.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use futures::future::BoxFuture;
use ordo_kernel::{MigrationSet, StoreError};
use tokio::sync::Notify;
use tokio_postgres::NoTls;

use crate::{migrate, store_error};

/// How a [`PgDatabase`] connects.
#[derive(Clone)]
pub struct PgOptions {
    /// Connections per service schema (writes and reads share them unless a
    /// replica is given).
    pub pool_size: usize,
    /// A read replica serving the queries the caller marks as reads.
    pub read_url: Option<String>,
    /// How many times a transaction that failed with a serialization
    /// failure or a deadlock is run again.
    pub max_retries: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            read_url: None,
            max_retries: 8,
        }
    }
}

/// A service schema. Cheap to clone.
#[derive(Clone)]
pub struct PgDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    schema: String,
    url: String,
    writer: Pool,
    reader: Pool,
    /// Connections that commit without waiting for the WAL flush, for the
    /// relays' leases and marks: losing one in a crash only means a row is
    /// claimed or published again, which the inboxes absorb.
    bookkeeping: Pool,
    max_retries: u32,
    outbox_wakeup: Arc<Notify>,
    /// Signals the announcer: rows were committed to the outbox.
    announce: Arc<Notify>,
    announcer: tokio::task::JoinHandle<()>,
    /// The backend process id of the announcer's connection (0 before it
    /// connects): this process's relays were woken directly and ignore
    /// its notifications.
    announcer_pid: Arc<AtomicI32>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.announcer.abort();
    }
}

tokio::task_local! {
    /// Whether the transaction [`PgDatabase::transaction`] is running has
    /// appended to the outbox.
    static OUTBOX_WRITTEN: Cell<bool>;
}

/// Called by `outbox_append`: the transaction being run wrote an event.
pub(crate) fn note_outbox_write() {
    // Outside `PgDatabase::transaction` nobody is told; relays find the
    // rows on their periodic check.
    let _ = OUTBOX_WRITTEN.try_with(|written| written.set(true));
}

/// Tells relays in other processes that the outbox of `channel`'s schema
/// has new rows: `NOTIFY` on a connection of its own, after the commits
/// (see the platform migration for why not inside them), without waiting
/// for a WAL flush (a notification is no data). Signals that arrive while
/// one is being sent fold into the next, so a burst of commits costs a
/// notification or two. Connects on the first signal.
async fn announce_commits(
    url: String,
    channel: String,
    signal: Arc<Notify>,
    own_pid: Arc<AtomicI32>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        signal.notified().await;
        let connected = async {
            let (client, connection) = config(&url, None)?.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            client.batch_execute("SET synchronous_commit = off").await?;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await?
                .get(0);
            own_pid.store(pid, Ordering::Relaxed);
            anyhow::Ok((client, driver))
        }
        .await;
        let (client, driver) = match connected {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%channel, error = %err, "cannot connect to announce outbox rows");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                signal.notify_one();
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let notify = format!("NOTIFY {channel}");
        loop {
            if let Err(err) = client.batch_execute(&notify).await {
                tracing::warn!(%channel, error = %err, "could not announce outbox rows");
                break;
            }
            signal.notified().await;
        }
        driver.abort();
    }
}

// By hand: the replica's URL may hold a password.
impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field(
                "read_url",
                &self.read_url.as_deref().map(ordo_kernel::redact_url),
            )
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

/// A schema name is spliced into SQL and connection options, so it is kept
/// to lower-case identifiers.
fn check_schema(schema: &str) -> anyhow::Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(ok, "invalid schema name {schema:?}");
    Ok(())
}

/// The channel relays of `schema` listen on.
pub(crate) fn outbox_channel(schema: &str) -> String {
    format!("ordo_outbox_{schema}")
}

/// Session settings of the connections that keep the relays' books.
const ASYNC_COMMIT: &str = " -c synchronous_commit=off";

pub(crate) fn config(url: &str, schema: Option<&str>) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid database URL: {e}"))?;
    if config.get_application_name().is_none() {
        config.application_name("ordo");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    Ok(config)
}

fn pool(url: &str, schema: &str, size: usize, settings: &str) -> anyhow::Result<Pool> {
    let mut config = config(url, Some(schema))?;
    if !settings.is_empty() {
        let options = format!("{}{settings}", config.get_options().unwrap_or_default());
        config.options(options);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

impl PgDatabase {
    /// Connects to `url`, creates `schema` if needed and applies `sets`
    /// there (serialised across processes by an advisory lock).
    pub async fn connect(
        url: &str,
        schema: &str,
        sets: &[MigrationSet],
        options: &PgOptions,
    ) -> anyhow::Result<Self> {
        check_schema(schema)?;
        migrate::apply(url, schema, sets).await?;
        let writer = pool(url, schema, options.pool_size, "")?;
        let bookkeeping = pool(url, schema, 2, ASYNC_COMMIT)?;
        let reader = match &options.read_url {
            Some(read_url) => pool(read_url, schema, options.pool_size, "")?,
            None => writer.clone(),
        };
        let announce = Arc::new(Notify::new());
        let announcer_pid = Arc::new(AtomicI32::new(0));
        let db = Self {
            inner: Arc::new(Inner {
                schema: schema.to_owned(),
                url: url.to_owned(),
                writer,
                reader,
                bookkeeping,
                max_retries: options.max_retries,
                outbox_wakeup: Arc::new(Notify::new()),
                announce: announce.clone(),
                announcer: tokio::spawn(announce_commits(
                    url.to_owned(),
                    outbox_channel(schema),
                    announce,
                    announcer_pid.clone(),
                )),
                announcer_pid,
            }),
        };
        // Fail at start, not on the first request, when the server is away.
        let _conn = db.conn().await.map_err(|e| {
            anyhow::anyhow!(
                "connecting to PostgreSQL at {}: {e}",
                ordo_kernel::redact_url(url)
            )
        })?;
        Ok(db)
    }

    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// Notified when this schema's outbox has new rows (see `PgOutbox`).
    pub fn outbox_wakeup(&self) -> Arc<Notify> {
        self.inner.outbox_wakeup.clone()
    }

    /// The backend pid whose notifications this process sent itself.
    pub(crate) fn announcer_pid(&self) -> Arc<AtomicI32> {
        self.inner.announcer_pid.clone()
    }

    /// Rows were committed to this schema's outbox: wakes this process's
    /// relays now and other processes' through a notification.
    /// [`PgDatabase::transaction`] calls it after a commit that appended.
    pub fn outbox_committed(&self) {
        self.inner.outbox_wakeup.notify_one();
        self.inner.announce.notify_one();
    }

    /// A connection of the primary.
    pub async fn conn(&self) -> Result<Object, StoreError> {
        self.inner
            .writer
            .get()
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("PostgreSQL pool: {e}")))
    }

    /// A connection whose commits do not wait for the WAL flush (see
    /// `Inner::bookkeeping`); never for data a caller was promised.
    pub(crate) async fn bookkeeping_conn(&self) -> Result<Object, StoreError> {
        self.inner
            .bookkeeping
            .get()
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("PostgreSQL pool: {e}")))
    }

    /// A connection for reads: the replica when one is configured. Reads
    /// that must see the caller's own writes use [`PgDatabase::conn`].
    pub async fn read_conn(&self) -> Result<Object, StoreError> {
        self.inner
            .reader
            .get()
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("PostgreSQL pool: {e}")))
    }

    /// One round trip on the primary, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1").await.map_err(store_error)?;
        Ok(())
    }

    /// Vacuums this schema's tables and refreshes the planner's statistics
    /// (after a bulk load: the vacuum also sets the visibility map that
    /// index-only scans rely on).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let tables = conn
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
                &[],
            )
            .await
            .map_err(store_error)?;
        for table in tables {
            let name: &str = table.get(0);
            conn.batch_execute(&format!(
                "VACUUM (ANALYZE) \"{}\"",
                name.replace('"', "\"\"")
            ))
            .await
            .map_err(store_error)?;
        }
        Ok(())
    }

    /// This schema's tables the planner estimates at `min_rows` rows or
    /// more.
    pub async fn large_tables(&self, min_rows: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.reltuples >= $1
                 ORDER BY c.relname",
                &[&(min_rows as f32)],
            )
            .await
            .map_err(store_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Runs `work` in a READ COMMITTED transaction and commits it. A
    /// serialization failure or a deadlock rolls back and runs `work`
    /// again (with a short jittered pause), up to the configured times;
    /// any other error rolls back and is returned.
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'a> Fn(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, StoreError>> + Send + Sync,
    {
        let mut attempt = 0;
        loop {
            match self.try_transaction(&work).await {
                Err(Retry::Again(err)) if attempt < self.inner.max_retries => {
                    attempt += 1;
                    tracing::debug!(schema = %self.inner.schema, attempt, error = %err, "transaction retried");
                    let pause = rand::random_range(1..=(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(Retry::Again(err) | Retry::Fail(err)) => return Err(err),
                Ok(value) => return Ok(value),
            }
        }
    }

    async fn try_transaction<T, F>(&self, work: &F) -> Result<T, Retry>
    where
        F: for<'a> Fn(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, StoreError>>,
    {
        let mut conn = self.conn().await.map_err(Retry::Fail)?;
        let tx = conn.transaction().await.map_err(classify)?;
        let (result, wrote) = OUTBOX_WRITTEN
            .scope(Cell::new(false), async {
                let result = work(&tx).await;
                (result, OUTBOX_WRITTEN.with(Cell::get))
            })
            .await;
        let value = match result {
            Ok(value) => value,
            Err(err) => {
                // Dropping the transaction rolls it back.
                drop(tx);
                return Err(if is_retryable_store_error(&err) {
                    Retry::Again(err)
                } else {
                    Retry::Fail(err)
                });
            }
        };
        tx.commit().await.map_err(classify)?;
        if wrote {
            self.outbox_committed();
        }
        Ok(value)
    }
}

enum Retry {
    Again(StoreError),
    Fail(StoreError),
}

fn classify(err: tokio_postgres::Error) -> Retry {
    if is_retryable(&err) {
        Retry::Again(store_error(err))
    } else {
        Retry::Fail(store_error(err))
    }
}

pub(crate) fn is_retryable(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        err.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
    )
}

/// `store_error` keeps the driver error in the chain, so a retryable one can
/// be recognised after the work closure converted it.
fn is_retryable_store_error(err: &StoreError) -> bool {
    match err {
        StoreError::Other(e) => e.chain().any(|c| {
            c.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(is_retryable)
        }),
        _ => false,
    }
}
