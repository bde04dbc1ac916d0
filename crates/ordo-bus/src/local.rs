//! The in-process bus of the embedded mode.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::{
    BusError, DeadLetter, DeadLetterStore, Envelope, NewDeadLetter, Publisher, RetryPolicy,
};

/// Why a handler could not apply an event; the event is retried.
#[derive(Debug)]
pub struct HandlerError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for HandlerError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// A consumer's reaction to one event. It must be idempotent by way of the
/// inbox: the same event may be handed over more than once.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError>;
}

/// A named, durable subscriber: its name is the inbox key and the
/// dead-letter owner, so it must stay stable across releases.
#[derive(Clone)]
pub struct Consumer {
    pub name: String,
    /// Event types (`order.created.v1`) it reacts to.
    pub event_types: Vec<String>,
    pub handler: Arc<dyn Handler>,
    /// Deliveries to this consumer running at once.
    pub concurrency: usize,
}

impl Consumer {
    pub fn new(name: impl Into<String>, event_types: &[&str], handler: Arc<dyn Handler>) -> Self {
        Self {
            name: name.into(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            handler,
            concurrency: 64,
        }
    }
}

/// Counters of what the bus did, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct BusStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub replayed: AtomicU64,
}

struct Slot {
    consumer: Consumer,
    permits: Semaphore,
}

/// Faults the bus injects on purpose, for tests of the consumers'
/// idempotency. Off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Share of deliveries handed to the consumer a second time, at once.
    pub duplicate_rate: f64,
}

/// The service a consumer belongs to: its name up to the first dot
/// (`payments.orders` → `payments`).
pub fn service_of(consumer: &str) -> &str {
    consumer
        .split_once('.')
        .map_or(consumer, |(service, _)| service)
}

struct Inner {
    /// The duplicate rate's bits: adjustable while deliveries run.
    duplicate_rate: AtomicU64,
    /// Services whose consumers hold their deliveries.
    paused: watch::Sender<BTreeSet<String>>,
    slots: Vec<Slot>,
    by_type: HashMap<String, Vec<usize>>,
    dead_letters: Arc<dyn DeadLetterStore>,
    policy: RetryPolicy,
    stop: CancellationToken,
    stats: Arc<BusStats>,
    replay_wake: Notify,
}

/// Delivers each published event to every consumer subscribed to its type,
/// retrying with backoff and parking it in the dead-letter store after the
/// last attempt. `publish` resolves once every consumer has handled or
/// parked the event, which is when the relay may mark the outbox row.
///
/// With a broker (distributed mode) the broker delivers and redelivers;
/// the bus then only runs one attempt at a time for it ([`LocalBus::attempt`]),
/// parks what exhausted its attempts ([`LocalBus::park`]) and replays dead
/// letters, so counters, panics and dead letters are handled alike in both
/// modes.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

impl LocalBus {
    /// `stop` cancels deliveries waiting for a retry (they are delivered
    /// again from the outbox on the next start).
    pub fn new(
        consumers: Vec<Consumer>,
        dead_letters: Arc<dyn DeadLetterStore>,
        policy: RetryPolicy,
        stop: CancellationToken,
    ) -> Self {
        let mut by_type: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, consumer) in consumers.iter().enumerate() {
            for event_type in &consumer.event_types {
                by_type.entry(event_type.clone()).or_default().push(index);
            }
        }
        let slots = consumers
            .into_iter()
            .map(|consumer| Slot {
                permits: Semaphore::new(consumer.concurrency.max(1)),
                consumer,
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                duplicate_rate: AtomicU64::new(0f64.to_bits()),
                paused: watch::Sender::new(BTreeSet::new()),
                slots,
                by_type,
                dead_letters,
                policy,
                stop,
                stats: Arc::default(),
                replay_wake: Notify::new(),
            }),
        }
    }

    /// The same bus, injecting `faults`.
    pub fn with_faults(self, faults: Faults) -> Self {
        self.set_duplicate_rate(faults.duplicate_rate);
        self
    }

    /// The share (0 to 1) of deliveries handed over twice from now on.
    pub fn set_duplicate_rate(&self, rate: f64) {
        let rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.inner
            .duplicate_rate
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn duplicate_rate(&self) -> f64 {
        self.inner.duplicate_rate()
    }

    /// The services whose consumers this bus hosts, by [`service_of`].
    pub fn services(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .inner
            .slots
            .iter()
            .map(|s| service_of(&s.consumer.name))
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Holds every delivery to `services`' consumers (the others resume):
    /// a held delivery waits, neither failing nor counting as an attempt,
    /// until its service resumes or the bus stops.
    pub fn set_paused(&self, services: impl IntoIterator<Item = String>) {
        let services: BTreeSet<String> = services.into_iter().collect();
        self.inner.paused.send_if_modified(|paused| {
            let changed = *paused != services;
            *paused = services;
            changed
        });
    }

    pub fn pause(&self, service: &str) {
        self.inner
            .paused
            .send_if_modified(|paused| paused.insert(service.to_owned()));
    }

    pub fn resume(&self, service: &str) {
        self.inner
            .paused
            .send_if_modified(|paused| paused.remove(service));
    }

    /// The services whose consumers are paused.
    pub fn paused(&self) -> Vec<String> {
        self.inner.paused.borrow().iter().cloned().collect()
    }

    /// Whether the bus was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    pub fn stats(&self) -> Arc<BusStats> {
        self.inner.stats.clone()
    }

    pub fn consumer_names(&self) -> Vec<String> {
        self.inner
            .slots
            .iter()
            .map(|s| s.consumer.name.clone())
            .collect()
    }

    /// The consumers this process hosts.
    pub fn consumers(&self) -> Vec<Consumer> {
        self.inner
            .slots
            .iter()
            .map(|s| s.consumer.clone())
            .collect()
    }

    pub fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    /// One attempt of `consumer` at `event`, as a broker's delivery: the
    /// error (a panic included) when it failed. An event of a type the
    /// consumer does not react to, or for a consumer not hosted here, is
    /// done at once.
    pub async fn attempt(&self, consumer: &str, event: &Envelope) -> Result<(), String> {
        let Some(slot) = self.inner.slot(consumer) else {
            return Ok(());
        };
        if !slot.consumer.event_types.contains(&event.event_type) {
            return Ok(());
        }
        if self.inner.duplicate() {
            let (first, second) = futures::join!(
                self.inner.attempt(slot, event),
                self.inner.attempt(slot, event)
            );
            return first.and(second);
        }
        self.inner.attempt(slot, event).await
    }

    /// Parks `event` for `consumer` after its last failed attempt.
    pub async fn park(
        &self,
        consumer: &str,
        event: &Envelope,
        error: String,
        attempts: u32,
    ) -> Result<(), BusError> {
        self.inner.park(consumer, event, error, attempts).await
    }

    /// Wakes the replayer now rather than at its next check.
    pub fn wake_replayer(&self) {
        self.inner.replay_wake.notify_one();
    }

    /// Delivers dead letters an operator asked to replay, until `stop`.
    ///
    /// A replay can be requested from another process (`ordo dlq replay`)
    /// that has no way to signal this one, so besides being woken the
    /// replayer looks at the store every `interval`.
    pub async fn run_replayer(self, interval: Duration) {
        let inner = &self.inner;
        loop {
            match inner.dead_letters.replay_requests().await {
                Ok(letters) => {
                    for letter in letters {
                        self.replay(letter).await;
                    }
                }
                Err(err) => warn!(error = %err, "could not read dead-letter replay requests"),
            }
            tokio::select! {
                () = inner.stop.cancelled() => return,
                () = inner.replay_wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn replay(&self, letter: DeadLetter) {
        let Some(slot) = self.inner.slot(&letter.consumer) else {
            // Another process hosts this consumer.
            return;
        };
        match self.inner.deliver(slot, &letter.envelope).await {
            Ok(true) => {
                self.inner.stats.replayed.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = self.inner.dead_letters.mark_replayed(&letter.id).await {
                    warn!(error = %err, id = %letter.id, "could not mark a dead letter replayed");
                }
            }
            // Parked again, with its new error and attempts.
            Ok(false) => {}
            Err(err) => debug!(error = %err, "replay interrupted"),
        }
    }
}

impl Inner {
    fn slot(&self, consumer: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.consumer.name == consumer)
    }

    fn duplicate_rate(&self) -> f64 {
        f64::from_bits(self.duplicate_rate.load(Ordering::Relaxed))
    }

    /// Whether this delivery is to be handed over twice.
    fn duplicate(&self) -> bool {
        let rate = self.duplicate_rate();
        rate > 0.0 && rand::random::<f64>() < rate
    }

    /// Waits while `consumer`'s service is paused; an error once the bus
    /// stops meanwhile.
    async fn wait_while_paused(&self, consumer: &str) -> Result<(), String> {
        let service = service_of(consumer);
        if !self.paused.borrow().contains(service) {
            return Ok(());
        }
        debug!(%consumer, "consumer paused; the delivery waits");
        let mut paused = self.paused.subscribe();
        tokio::select! {
            resumed = paused.wait_for(|paused| !paused.contains(service)) => {
                resumed.map(|_| ()).map_err(|_| "the bus is shutting down".to_owned())
            }
            () = self.stop.cancelled() => Err("the bus is shutting down".to_owned()),
        }
    }

    /// One attempt: the error (a panic included) when it failed. A paused
    /// consumer's attempt starts once it resumes.
    async fn attempt(&self, slot: &Slot, event: &Envelope) -> Result<(), String> {
        self.wait_while_paused(&slot.consumer.name).await?;
        let outcome = {
            let _permit = slot
                .permits
                .acquire()
                .await
                .map_err(|_| "the bus is shutting down".to_owned())?;
            AssertUnwindSafe(slot.consumer.handler.handle(event))
                .catch_unwind()
                .await
        };
        let error = match outcome {
            Ok(Ok(())) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(err)) => err.to_string(),
            Err(panic) => panic_message(&panic),
        };
        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    async fn park(
        &self,
        consumer: &str,
        event: &Envelope,
        error: String,
        attempts: u32,
    ) -> Result<(), BusError> {
        error!(%consumer, event_id = %event.id, event_type = %event.event_type,
            attempts, %error, "event dead-lettered");
        self.dead_letters
            .park(NewDeadLetter {
                consumer: consumer.to_owned(),
                envelope: event.clone(),
                error,
                attempts,
            })
            .await
            .map_err(|e| BusError::Other(e.into()))?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `Ok(true)` when handled, `Ok(false)` when parked as a dead letter.
    async fn deliver(&self, slot: &Slot, event: &Envelope) -> Result<bool, BusError> {
        let consumer = &slot.consumer;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.attempt(slot, event).await {
                Ok(()) => return Ok(true),
                Err(error) => error,
            };
            if self.stop.is_cancelled() {
                return Err(BusError::ShuttingDown);
            }
            if attempt >= self.policy.max_attempts {
                self.park(&consumer.name, event, error, attempt).await?;
                return Ok(false);
            }
            warn!(consumer = %consumer.name, event_id = %event.id, event_type = %event.event_type,
                attempt, %error, "event handling failed; will retry");
            tokio::select! {
                () = tokio::time::sleep(self.policy.delay(attempt)) => {}
                () = self.stop.cancelled() => return Err(BusError::ShuttingDown),
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("handler panicked: {text}")
}

#[async_trait::async_trait]
impl Publisher for LocalBus {
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        let Some(indexes) = self.inner.by_type.get(&event.event_type) else {
            return Ok(());
        };
        let duplicate = |_: &usize| self.inner.duplicate();
        let deliveries = indexes
            .iter()
            .flat_map(|i| if duplicate(i) { vec![*i, *i] } else { vec![*i] })
            .map(|i| self.inner.deliver(&self.inner.slots[i], event));
        let results = join_all(deliveries).await;
        for result in results {
            result?;
        }
        Ok(())
    }
}
