//! The outbox and inbox tables of a service schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures::StreamExt;
use ordo_bus::{Envelope, InboxKey, OutboxRow, OutboxStore};
use ordo_kernel::StoreError;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{PgDatabase, store_error};

/// The statement of [`outbox_append`].
pub(crate) const OUTBOX_INSERT: &str =
    "INSERT INTO outbox (event_id, event_type, subject, envelope, created_at)
     VALUES ($1, $2, $3, $4, $5)";

/// Appends an event to the outbox, inside the caller's transaction; when
/// that is a [`PgDatabase::transaction`], the relays are woken after its
/// commit.
pub async fn outbox_append(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), StoreError> {
    let json = serde_json::to_string(envelope).map_err(|e| StoreError::Other(e.into()))?;
    let stmt = tx
        .prepare_cached(OUTBOX_INSERT)
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &envelope.id.to_string(),
            &envelope.event_type,
            &envelope.subject,
            &json,
            &envelope.time,
        ],
    )
    .await
    .map_err(store_error)?;
    crate::database::note_outbox_write();
    Ok(())
}

/// Records the claim, if there is one, inside the transaction of the
/// effect. `false` means the consumer already applied the event: the caller
/// must skip the effect.
pub async fn record_inbox(
    tx: &Transaction<'_>,
    inbox: Option<&InboxKey>,
) -> Result<bool, StoreError> {
    let Some(key) = inbox else {
        return Ok(true);
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .await
        .map_err(store_error)?;
    let inserted = tx
        .execute(&stmt, &[&key.consumer, &key.event_id])
        .await
        .map_err(store_error)?;
    Ok(inserted == 1)
}

/// How long a claimed row stays with the relay that claimed it, by
/// default. A relay that dies mid-publish leaves its rows to the others
/// after this.
const LEASE: Duration = Duration::from_secs(30);

/// The outbox of one service schema, shared by any number of relays in
/// any number of processes.
///
/// A claim leases rows (`leased_until`) in one statement that skips rows
/// another relay is claiming at that instant (`FOR UPDATE SKIP LOCKED`), so
/// relays never take the same row and never skip a row committed late with
/// a lower `seq`. Relays are woken by commits of their own process
/// directly, by other processes' notifications (LISTEN on a dedicated
/// connection) and, as a safety net for expired leases and a lost
/// notification, every few seconds.
pub struct PgOutbox {
    db: PgDatabase,
    service: String,
    lease: Duration,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgOutbox {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgOutbox {
    /// Starts listening for the schema's outbox notifications; call it
    /// inside the runtime.
    pub fn new(service: &str, db: PgDatabase) -> Self {
        Self::with_lease(service, db, LEASE)
    }

    /// As [`PgOutbox::new`], with claims leased for `lease`.
    pub fn with_lease(service: &str, db: PgDatabase, lease: Duration) -> Self {
        let listener = tokio::spawn(listen(
            db.url().to_owned(),
            crate::database::outbox_channel(db.schema()),
            db.outbox_wakeup(),
            db.announcer_pid(),
            lease,
        ));
        Self {
            db,
            service: service.to_owned(),
            lease,
            listener,
        }
    }

    /// The event with this id, if the outbox holds it.
    pub async fn event(&self, event_id: &str) -> Result<Option<Envelope>, StoreError> {
        let conn = self.db.conn().await?;
        let row = conn
            .query_opt(
                "SELECT envelope FROM outbox WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .map_err(store_error)?;
        row.map(|r| parse(&r.get::<_, String>(0))).transpose()
    }
}

fn parse(json: &str) -> Result<Envelope, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Other(e.into()))
}

async fn listen(
    url: String,
    channel: String,
    wakeup: Arc<Notify>,
    own_pid: Arc<AtomicI32>,
    lease: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&url, &channel, &wakeup, &own_pid, lease).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                tracing::warn!(%channel, error = %err, "outbox listener lost its connection");
            }
        }
        // Rows may have been written while nobody listened.
        wakeup.notify_one();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    url: &str,
    channel: &str,
    wakeup: &Notify,
    own_pid: &AtomicI32,
    lease: Duration,
) -> anyhow::Result<()> {
    let (client, mut connection) = crate::database::config(url, None)?.connect(NoTls).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.process_id()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    // Anything committed before LISTEN took effect.
    wakeup.notify_one();
    // The first check one period from now: the wake-up above covers now.
    let period = (lease / 2).min(Duration::from_secs(5));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            received = notifications.recv() => match received {
                // Our own announcement: the relay was woken at the commit.
                Some(pid) if pid == own_pid.load(Ordering::Relaxed) => {}
                Some(_) => wakeup.notify_one(),
                None => break,
            },
            _ = tick.tick() => wakeup.notify_one(),
        }
    }
    drop(client);
    driver.await??;
    Ok(())
}

#[async_trait::async_trait]
impl OutboxStore for PgOutbox {
    fn service(&self) -> &str {
        &self.service
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.db.outbox_wakeup()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let conn = self.db.bookkeeping_conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE outbox SET leased_until = now() + $2::bigint * interval '1 millisecond'
                 WHERE seq IN (
                     SELECT seq FROM outbox
                     WHERE published_at IS NULL AND (leased_until IS NULL OR leased_until < now())
                     ORDER BY seq LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING seq, envelope",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&limit, &lease_ms])
            .await
            .map_err(store_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.get(0);
            match parse(row.get(1)) {
                Ok(envelope) => claimed.push(OutboxRow { seq, envelope }),
                // Written by this code, so a bug or corruption; the lease
                // keeps it from blocking the others for a while.
                Err(err) => {
                    tracing::error!(service = %self.service, seq, error = %err, "unreadable outbox row");
                }
            }
        }
        claimed.sort_by_key(|r| r.seq);
        Ok(claimed)
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let conn = self.db.bookkeeping_conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE outbox SET published_at = now(), leased_until = NULL WHERE seq = ANY($1)",
            )
            .await
            .map_err(store_error)?;
        conn.execute(&stmt, &[&seqs]).await.map_err(store_error)?;
        Ok(())
    }

    async fn release(&self, seqs: &[i64]) {
        let result = async {
            let conn = self.db.bookkeeping_conn().await?;
            conn.execute(
                "UPDATE outbox SET leased_until = NULL WHERE seq = ANY($1) AND published_at IS NULL",
                &[&seqs],
            )
            .await
            .map_err(store_error)
        }
        .await;
        if let Err(err) = result {
            // The lease runs out on its own.
            tracing::warn!(service = %self.service, error = %err, "could not release outbox rows");
        }
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let conn = self.db.read_conn().await?;
        let row = conn
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await
            .map_err(store_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn events_for_subject(&self, subject: &str) -> Result<Vec<Envelope>, StoreError> {
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached("SELECT envelope FROM outbox WHERE subject = $1 ORDER BY seq")
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[&subject])
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| parse(row.get(0)))
            .collect()
    }

    async fn purge(
        &self,
        published_before: DateTime<Utc>,
        processed_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let conn = self.db.conn().await?;
        let outbox = conn
            .execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
                &[&published_before],
            )
            .await
            .map_err(store_error)?;
        let inbox = conn
            .execute(
                "DELETE FROM inbox WHERE processed_at < $1",
                &[&processed_before],
            )
            .await
            .map_err(store_error)?;
        Ok((outbox, inbox))
    }
}
