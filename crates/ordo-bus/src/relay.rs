//! The outbox relay: committed outbox rows to the publisher.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{BusError, OutboxStore, Publisher};

/// Publishes every committed outbox row, marking it once the publisher has
/// accepted it. Woken by the store's commit notification; it never polls
/// on a timer while there is nothing to do.
pub struct Relay {
    outbox: Arc<dyn OutboxStore>,
    publisher: Arc<dyn Publisher>,
    max_in_flight: usize,
    retry_after: Duration,
}

/// A running relay. `drain` asks it to publish what is committed and stop.
pub struct RelayHandle {
    drain: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Publishes the remaining backlog (for at most `grace`) and stops.
    pub async fn drain(self) {
        self.drain.cancel();
        if let Err(err) = self.task.await {
            warn!(error = %err, "outbox relay task ended abnormally");
        }
    }
}

impl Relay {
    pub fn new(outbox: Arc<dyn OutboxStore>, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            outbox,
            publisher,
            max_in_flight: 512,
            retry_after: Duration::from_millis(500),
        }
    }

    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    pub fn spawn(self, grace: Duration) -> RelayHandle {
        let drain = CancellationToken::new();
        let task = tokio::spawn(self.run(drain.clone(), grace));
        RelayHandle { drain, task }
    }

    async fn run(self, drain: CancellationToken, grace: Duration) {
        let service = self.outbox.service().to_owned();
        let wake = self.outbox.wakeup();
        let mut in_flight: JoinSet<(i64, Result<(), BusError>)> = JoinSet::new();
        let mut published: Vec<i64> = Vec::new();
        let mut failed: Vec<i64> = Vec::new();
        let mut paused_until: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        // Whether rows may be waiting: at the start, after a wake-up, a
        // full claim or a pause. A publish that completes is no reason to
        // claim again: the rows committed since then woke the relay.
        let mut claim_due = true;

        loop {
            while let Some(done) = in_flight.try_join_next() {
                collect(done, &mut published, &mut failed);
            }
            if !published.is_empty() {
                match self.outbox.mark_published(&published).await {
                    Ok(()) => published.clear(),
                    Err(err) => {
                        // Left unmarked they are published again later; the
                        // consumers' inboxes make that harmless.
                        warn!(%service, error = %err, "could not mark outbox rows published");
                        self.outbox.release(&published).await;
                        published.clear();
                        paused_until = Some(Instant::now() + self.retry_after);
                    }
                }
            }
            if !failed.is_empty() {
                self.outbox.release(&failed).await;
                failed.clear();
                paused_until = Some(Instant::now() + self.retry_after);
            }

            let paused = paused_until.is_some_and(|t| Instant::now() < t);
            let capacity = self.max_in_flight.saturating_sub(in_flight.len());
            let mut claimed = 0;
            if capacity > 0 && !paused && (claim_due || drain_deadline.is_some()) {
                claim_due = false;
                match self.outbox.claim(capacity).await {
                    Ok(rows) => {
                        claimed = rows.len();
                        for row in rows {
                            let publisher = self.publisher.clone();
                            in_flight.spawn(async move {
                                (row.seq, publisher.publish(&row.envelope).await)
                            });
                        }
                    }
                    Err(err) => {
                        warn!(%service, error = %err, "could not claim outbox rows");
                        paused_until = Some(Instant::now() + self.retry_after);
                        claim_due = true;
                    }
                }
            }

            if let Some(deadline) = drain_deadline {
                if in_flight.is_empty() && claimed == 0 && published.is_empty() {
                    info!(%service, "outbox relay drained");
                    return;
                }
                if Instant::now() >= deadline {
                    info!(%service, in_flight = in_flight.len(), "outbox relay stopped before draining");
                    in_flight.shutdown().await;
                    return;
                }
            }
            if claimed > 0 && claimed == capacity {
                // More may be waiting; claim again once a slot frees up.
                claim_due = true;
                if let Some(done) = in_flight.join_next().await {
                    collect(done, &mut published, &mut failed);
                }
                continue;
            }
            // A claim short of capacity took every row committed before it;
            // a later commit wakes the relay (its wake-up is kept until
            // waited for), so there is no need to claim again now.

            let pause = paused_until.map(|t| t.max(Instant::now()));
            tokio::select! {
                () = wake.notified() => claim_due = true,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    collect(done, &mut published, &mut failed);
                }
                () = drain.cancelled(), if drain_deadline.is_none() => {
                    debug!(%service, "outbox relay draining");
                    drain_deadline = Some(Instant::now() + grace);
                }
                () = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)), if pause.is_some() => {
                    paused_until = None;
                    claim_due = true;
                }
                () = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {}
            }
        }
    }
}

fn collect(
    done: Result<(i64, Result<(), BusError>), tokio::task::JoinError>,
    published: &mut Vec<i64>,
    failed: &mut Vec<i64>,
) {
    match done {
        Ok((seq, Ok(()))) => published.push(seq),
        Ok((seq, Err(err))) => {
            debug!(seq, error = %err, "publish failed; the row stays in the outbox");
            failed.push(seq);
        }
        Err(err) => warn!(error = %err, "publish task failed"),
    }
}
