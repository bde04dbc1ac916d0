use std::cell::Cell;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ordo_kernel::StoreError;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::{error, warn};

use crate::MigrationSet;

/// How a database file is opened.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Commands committed together at most. 1 is a naive commit per command.
    pub max_batch: usize,
    pub readers: usize,
    pub busy_timeout: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            readers: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The connection a write command runs on: inside a savepoint of the
/// group's transaction.
pub struct WriteTx<'a> {
    conn: &'a Connection,
    outbox_written: &'a Cell<bool>,
}

impl WriteTx<'_> {
    /// Records that this command wrote outbox rows, so the relay is woken
    /// once the group commits.
    pub(crate) fn mark_outbox_written(&self) {
        self.outbox_written.set(true);
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

trait Job: Send {
    /// Runs the command; `false` when it failed and its savepoint must be
    /// rolled back.
    fn run(&mut self, tx: &WriteTx<'_>) -> bool;
    /// Hands the result over once the group's commit is known.
    fn finish(self: Box<Self>, commit: &Result<(), String>);
}

struct TypedJob<T, F> {
    command: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &WriteTx<'_>) -> bool {
        let Some(command) = self.command.take() else {
            return false;
        };
        let result = command(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: &Result<(), String>) {
        let this = *self;
        let result = match (this.result, commit) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(msg)) => {
                Err(StoreError::Other(anyhow::anyhow!("commit failed: {msg}")))
            }
            (None, Err(msg)) => Err(StoreError::Other(anyhow::anyhow!(
                "transaction failed: {msg}"
            ))),
            (None, Ok(())) => Err(StoreError::Other(anyhow::anyhow!("command did not run"))),
        };
        // The caller may have gone away (request cancelled); the write stands.
        let _ = this.reply.send(result);
    }
}

struct ReaderPool {
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

struct Inner {
    name: String,
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: ReaderPool,
    outbox_wakeup: Arc<Notify>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One SQLite file: a group-committing writer thread and a reader pool.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .finish()
    }
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before it is acknowledged, power loss
    // included; NORMAL could lose the last transactions.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each command of a group runs in a savepoint, whose sub-journal would
    // otherwise be written to a temporary file for every command.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Database {
    /// Opens (creating if needed) the file, applies the migrations and
    /// starts the writer thread.
    pub fn open(
        name: &str,
        path: &Path,
        migrations: &[MigrationSet],
        options: DatabaseOptions,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        let mut writer = Connection::open(path)
            .with_context(|| format!("opening the {name} database at {}", path.display()))?;
        configure(&writer, options.busy_timeout)?;
        crate::migrate::apply(&mut writer, migrations)
            .with_context(|| format!("migrating the {name} database"))?;

        let mut idle = Vec::with_capacity(options.readers);
        for _ in 0..options.readers.max(1) {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&conn, options.busy_timeout)?;
            conn.pragma_update(None, "query_only", "ON")?;
            idle.push(conn);
        }

        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(8192);
        let outbox_wakeup = Arc::new(Notify::new());
        let wake = outbox_wakeup.clone();
        let max_batch = options.max_batch.max(1);
        let thread_name = format!("sqlite-{name}");
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || writer_loop(writer, rx, max_batch, &wake))?;

        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                path: path.to_owned(),
                writer: tx,
                readers: ReaderPool {
                    permits: Semaphore::new(idle.len()),
                    idle: Mutex::new(idle),
                },
                outbox_wakeup,
                writer_thread: Mutex::new(Some(handle)),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Notified after each commit that wrote outbox rows.
    pub fn outbox_wakeup(&self) -> Arc<Notify> {
        self.inner.outbox_wakeup.clone()
    }

    /// Runs `command` in the next group transaction and returns its result
    /// once the group is durably committed. An error from `command` undoes
    /// its own writes only.
    pub async fn write<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = Box::new(TypedJob {
            command: Some(command),
            result: None,
            reply,
        });
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `query` on a pooled read connection.
    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let _permit = inner
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = lock(&inner.readers.idle).pop().ok_or(StoreError::Closed)?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = query(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("read task failed: {e}")))?;
        lock(&inner.readers.idle).push(conn);
        result
    }

    /// Stops the writer once the commands already queued are committed.
    /// Other clones of this handle keep the channel open until dropped.
    pub fn close(self) {
        let handle = lock(&self.inner.writer_thread).take();
        let inner = Arc::try_unwrap(self.inner);
        if let (Ok(inner), Some(handle)) = (inner, handle) {
            drop(inner.writer);
            if handle.join().is_err() {
                error!("the SQLite writer thread panicked");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    outbox_wakeup: &Notify,
) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outbox_written = Cell::new(false);
        let commit = run_group(&mut conn, &mut jobs, &outbox_written).map_err(|e| {
            warn!(error = %e, batch = jobs.len(), "group commit failed");
            e.to_string()
        });
        if commit.is_ok() && outbox_written.get() {
            outbox_wakeup.notify_one();
        }
        for job in jobs.drain(..) {
            job.finish(&commit);
        }
    }
}

fn run_group(
    conn: &mut Connection,
    jobs: &mut [Box<dyn Job>],
    outbox_written: &Cell<bool>,
) -> rusqlite::Result<()> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in jobs.iter_mut() {
        let mut savepoint = tx.savepoint()?;
        let command_wrote_outbox = Cell::new(false);
        let ok = job.run(&WriteTx {
            conn: &savepoint,
            outbox_written: &command_wrote_outbox,
        });
        if ok {
            savepoint.commit()?;
            if command_wrote_outbox.get() {
                outbox_written.set(true);
            }
        } else {
            savepoint.rollback()?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Database {
        Database::open("test", &dir.join("t.db"), &[], DatabaseOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn concurrent_writes_all_commit_and_a_failing_one_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(|tx| {
            tx.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
                .map_err(crate::store_error)
        })
        .await
        .unwrap();

        let mut tasks = Vec::new();
        for n in 0..200_i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |tx| {
                    tx.execute("INSERT INTO t (n) VALUES (?1)", [n])
                        .map_err(crate::store_error)?;
                    if n % 10 == 0 {
                        // Written, then failed: the savepoint undoes it.
                        return Err(StoreError::Conflict("rejected".into()));
                    }
                    Ok(n)
                })
                .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 180);
        let count: i64 = db
            .read(|c| {
                c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .map_err(crate::store_error)
            })
            .await
            .unwrap();
        assert_eq!(count, 180);
    }

    #[tokio::test]
    async fn a_unique_violation_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let insert = |db: Database| async move {
            db.write(|tx| {
                tx.execute_batch("CREATE TABLE IF NOT EXISTS u (k TEXT PRIMARY KEY)")
                    .map_err(crate::store_error)?;
                tx.execute("INSERT INTO u VALUES ('a')", [])
                    .map_err(crate::store_error)
            })
            .await
        };
        insert(db.clone()).await.unwrap();
        assert!(matches!(insert(db).await, Err(StoreError::Conflict(_))));
    }

    #[tokio::test]
    async fn writes_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(|tx| {
            tx.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (42);")
                .map_err(crate::store_error)
        })
        .await
        .unwrap();
        db.close();
        let db = open(dir.path());
        let n: i64 = db
            .read(|c| {
                c.query_row("SELECT n FROM t", [], |r| r.get(0))
                    .map_err(crate::store_error)
            })
            .await
            .unwrap();
        assert_eq!(n, 42);
    }
}
