//! The relay and the in-process bus together, over in-memory outbox and
//! dead-letter stores: what the embedded mode promises a consumer.
//!
//! Nothing here sleeps to synchronise: tests wait for a condition with
//! [`eventually`], which gives up after 10 seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use ordo_bus::{
    Consumer, DeadLetter, DeadLetterStatus, DeadLetterStore, Envelope, EventContext, EventPayload,
    Handler, HandlerError, LocalBus, NewDeadLetter, OutboxRow, OutboxStore, Relay, RelayHandle,
    RetryPolicy,
};
use ordo_kernel::{EventId, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

// --- Events -----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Pinged {}
impl EventPayload for Pinged {
    const TYPE: &'static str = "test.pinged.v1";
    const SOURCE: &'static str = "/ordo/test";
}

#[derive(Serialize, Deserialize)]
struct Ponged {}
impl EventPayload for Ponged {
    const TYPE: &'static str = "test.ponged.v1";
    const SOURCE: &'static str = "/ordo/test";
}

/// A type no consumer subscribes to.
#[derive(Serialize, Deserialize)]
struct Unheard {}
impl EventPayload for Unheard {
    const TYPE: &'static str = "test.unheard.v1";
    const SOURCE: &'static str = "/ordo/test";
}

fn event<E: EventPayload>(subject: &str, payload: &E) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        Utc::now(),
        subject,
        None,
        &EventContext::from_request("req-test"),
        payload,
    )
    .unwrap()
}

fn pinged(subject: &str) -> Envelope {
    event(subject, &Pinged {})
}

fn ponged(subject: &str) -> Envelope {
    event(subject, &Ponged {})
}

fn sorted_ids<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Vec<EventId> {
    let mut ids: Vec<EventId> = events.into_iter().map(|e| e.id).collect();
    ids.sort();
    ids
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// Waits until `condition` holds, polling every few milliseconds, and fails
/// the test after 10 seconds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// --- An in-memory outbox ----------------------------------------------------

/// An outbox with `SqliteOutbox`'s semantics: a claimed row is leased, and
/// skipped by later claims, until it is marked published or released.
#[derive(Default)]
struct MemoryOutbox {
    wakeup: Arc<Notify>,
    state: Mutex<OutboxState>,
    /// Claims answered so far.
    claims: AtomicUsize,
}

#[derive(Default)]
struct OutboxState {
    next_seq: i64,
    rows: Vec<StoredRow>,
    leased: HashSet<i64>,
}

struct StoredRow {
    seq: i64,
    envelope: Envelope,
    published: bool,
}

impl MemoryOutbox {
    /// Commits `events` together and wakes the relay, as a service write does.
    fn commit(&self, events: &[Envelope]) {
        self.commit_quietly(events);
        self.wakeup.notify_one();
    }

    /// Commits `events` without the wake-up.
    fn commit_quietly(&self, events: &[Envelope]) {
        let mut state = lock(&self.state);
        for envelope in events {
            state.next_seq += 1;
            let seq = state.next_seq;
            state.rows.push(StoredRow {
                seq,
                envelope: envelope.clone(),
                published: false,
            });
        }
    }

    fn is_published(&self, event: &Envelope) -> bool {
        lock(&self.state)
            .rows
            .iter()
            .any(|r| r.envelope.id == event.id && r.published)
    }

    fn unpublished(&self) -> usize {
        lock(&self.state)
            .rows
            .iter()
            .filter(|r| !r.published)
            .count()
    }

    fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl OutboxStore for MemoryOutbox {
    fn service(&self) -> &str {
        "test"
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut state = lock(&self.state);
        let OutboxState { rows, leased, .. } = &mut *state;
        let claimed: Vec<OutboxRow> = rows
            .iter()
            .filter(|r| !r.published && !leased.contains(&r.seq))
            .take(limit)
            .map(|r| OutboxRow {
                seq: r.seq,
                envelope: r.envelope.clone(),
            })
            .collect();
        leased.extend(claimed.iter().map(|r| r.seq));
        // Counted before the lock is let go: once a test sees the count,
        // rows committed afterwards were not seen by this claim.
        self.claims.fetch_add(1, Ordering::SeqCst);
        Ok(claimed)
    }

    async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        for row in state.rows.iter_mut().filter(|r| seqs.contains(&r.seq)) {
            row.published = true;
        }
        for seq in seqs {
            state.leased.remove(seq);
        }
        Ok(())
    }

    async fn release(&self, seqs: &[i64]) {
        let mut state = lock(&self.state);
        for seq in seqs {
            state.leased.remove(seq);
        }
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(self.unpublished() as u64)
    }

    async fn events_for_subject(&self, subject: &str) -> Result<Vec<Envelope>, StoreError> {
        Ok(lock(&self.state)
            .rows
            .iter()
            .filter(|r| r.envelope.subject == subject)
            .map(|r| r.envelope.clone())
            .collect())
    }
}

// --- An in-memory dead-letter store -----------------------------------------

/// One letter per `(consumer, event)`, like `SqliteDeadLetters`.
#[derive(Default)]
struct MemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
    /// Times the replayer asked for replay requests.
    scans: AtomicUsize,
}

impl MemoryDeadLetters {
    fn letters(&self) -> Vec<DeadLetter> {
        lock(&self.letters).clone()
    }

    fn letter_for(&self, event: &Envelope) -> Option<DeadLetter> {
        let event_id = event.id.to_string();
        lock(&self.letters)
            .iter()
            .find(|l| l.event_id == event_id)
            .cloned()
    }

    fn status_of(&self, event: &Envelope) -> Option<DeadLetterStatus> {
        self.letter_for(event).map(|l| l.status)
    }

    fn scans(&self) -> usize {
        self.scans.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn park(&self, letter: NewDeadLetter) -> Result<(), StoreError> {
        let mut letters = lock(&self.letters);
        let event_id = letter.envelope.id.to_string();
        if let Some(existing) = letters
            .iter_mut()
            .find(|l| l.consumer == letter.consumer && l.event_id == event_id)
        {
            existing.error = letter.error;
            existing.attempts += letter.attempts;
            existing.status = DeadLetterStatus::Parked;
            existing.parked_at = Utc::now();
            return Ok(());
        }
        let id = format!("dlq_{}", letters.len() + 1);
        letters.push(DeadLetter {
            id,
            consumer: letter.consumer,
            event_id,
            event_type: letter.envelope.event_type.clone(),
            subject: letter.envelope.subject.clone(),
            error: letter.error,
            attempts: letter.attempts,
            status: DeadLetterStatus::Parked,
            parked_at: Utc::now(),
            replayed_at: None,
            envelope: letter.envelope,
        });
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.letters().into_iter().rev().take(limit).collect())
    }

    async fn get(&self, id: &str) -> Result<DeadLetter, StoreError> {
        self.letters()
            .into_iter()
            .find(|l| l.id == id)
            .ok_or(StoreError::NotFound)
    }

    async fn request_replay(&self, id: &str) -> Result<DeadLetter, StoreError> {
        let mut letters = lock(&self.letters);
        let letter = letters
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or(StoreError::NotFound)?;
        if letter.status == DeadLetterStatus::Replayed {
            return Err(StoreError::Conflict("already replayed".to_owned()));
        }
        letter.status = DeadLetterStatus::ReplayRequested;
        Ok(letter.clone())
    }

    async fn replay_requests(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .letters()
            .into_iter()
            .filter(|l| l.status == DeadLetterStatus::ReplayRequested)
            .collect())
    }

    async fn mark_replayed(&self, id: &str) -> Result<(), StoreError> {
        let mut letters = lock(&self.letters);
        let letter = letters
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or(StoreError::NotFound)?;
        letter.status = DeadLetterStatus::Replayed;
        letter.replayed_at = Some(Utc::now());
        Ok(())
    }

    async fn count_open(&self) -> Result<u64, StoreError> {
        Ok(self
            .letters()
            .iter()
            .filter(|l| l.status != DeadLetterStatus::Replayed)
            .count() as u64)
    }
}

// --- A handler that records what it was given -------------------------------

/// What a [`Probe`] does with one attempt.
#[derive(Debug, Clone, Copy)]
enum Reaction {
    Succeed,
    Fail,
    Panic,
    /// Waits until the test opens the probe's gate, then fails.
    FailAfterGate,
}

type React = dyn Fn(&Envelope, u32) -> Reaction + Send + Sync;

/// A handler that counts every attempt per event, records the events it
/// handled, and reacts to each attempt as its `react` function says.
struct Probe {
    react: Box<React>,
    gate: Semaphore,
    attempts: Mutex<HashMap<EventId, u32>>,
    handled: Mutex<Vec<EventId>>,
}

impl Probe {
    fn new(react: impl Fn(&Envelope, u32) -> Reaction + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            react: Box::new(react),
            gate: Semaphore::new(0),
            attempts: Mutex::default(),
            handled: Mutex::default(),
        })
    }

    fn succeeding() -> Arc<Self> {
        Self::new(|_, _| Reaction::Succeed)
    }

    /// Lets every attempt waiting at the gate, and every later one, through.
    fn open_gate(&self) {
        self.gate.close();
    }

    fn attempts(&self, event: &Envelope) -> u32 {
        lock(&self.attempts).get(&event.id).copied().unwrap_or(0)
    }

    /// The events handled successfully, sorted.
    fn handled(&self) -> Vec<EventId> {
        let mut ids = lock(&self.handled).clone();
        ids.sort();
        ids
    }
}

#[async_trait::async_trait]
impl Handler for Probe {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = lock(&self.attempts);
            let n = attempts.entry(event.id).or_default();
            *n += 1;
            *n
        };
        match (self.react)(event, attempt) {
            Reaction::Succeed => {
                lock(&self.handled).push(event.id);
                Ok(())
            }
            Reaction::Fail => Err(anyhow::anyhow!("boom on attempt {attempt}").into()),
            Reaction::Panic => panic!("kaboom"),
            Reaction::FailAfterGate => {
                // The gate is opened by closing the semaphore.
                let _ = self.gate.acquire().await;
                Err(anyhow::anyhow!("boom on attempt {attempt}").into())
            }
        }
    }
}

// --- The platform under test ------------------------------------------------

struct Platform {
    outbox: Arc<MemoryOutbox>,
    dead_letters: Arc<MemoryDeadLetters>,
    bus: LocalBus,
    relay: RelayHandle,
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

impl Platform {
    fn start(consumers: Vec<Consumer>, max_attempts: u32) -> Self {
        Self::start_over(Arc::default(), consumers, max_attempts)
    }

    /// Starts a bus and a relay over an outbox that may already hold rows.
    fn start_over(outbox: Arc<MemoryOutbox>, consumers: Vec<Consumer>, max_attempts: u32) -> Self {
        let dead_letters = Arc::new(MemoryDeadLetters::default());
        let bus = LocalBus::new(
            consumers,
            dead_letters.clone(),
            fast_retries(max_attempts),
            CancellationToken::new(),
        );
        let relay =
            Relay::new(outbox.clone(), Arc::new(bus.clone())).spawn(Duration::from_secs(10));
        Self {
            outbox,
            dead_letters,
            bus,
            relay,
        }
    }
}

// --- Delivery ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_reaches_every_subscribed_consumer_and_is_marked_published() {
    let outbox = Arc::new(MemoryOutbox::default());
    // Committed before the relay starts, as after a restart.
    let mut events: Vec<Envelope> = (0..5).map(|i| pinged(&format!("ord_{i}"))).collect();
    outbox.commit(&events);

    let billing = Probe::succeeding();
    let shipping = Probe::succeeding();
    let platform = Platform::start_over(
        outbox,
        vec![
            Consumer::new("billing", &[Pinged::TYPE], billing.clone()),
            Consumer::new("shipping", &[Pinged::TYPE, Ponged::TYPE], shipping.clone()),
        ],
        3,
    );
    // Committed while it runs, in many small transactions.
    for i in 0..20 {
        let batch = [pinged(&format!("ord_{i}")), ponged(&format!("ord_{i}"))];
        platform.outbox.commit(&batch);
        events.extend(batch);
    }

    eventually("every outbox row is published", || {
        platform.outbox.unpublished() == 0
    })
    .await;
    assert!(events.iter().all(|e| platform.outbox.is_published(e)));
    // Each exactly once: the lists would hold duplicates otherwise.
    assert_eq!(
        billing.handled(),
        sorted_ids(events.iter().filter(|e| e.is::<Pinged>()))
    );
    assert_eq!(shipping.handled(), sorted_ids(&events));
    let stats = platform.bus.stats();
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 25 + 45);
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 0);
    assert!(platform.dead_letters.letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_not_handed_event_types_it_did_not_subscribe_to() {
    let billing = Probe::succeeding();
    let audit = Probe::succeeding();
    let platform = Platform::start(
        vec![
            Consumer::new("billing", &[Pinged::TYPE], billing.clone()),
            Consumer::new("audit", &[Ponged::TYPE], audit.clone()),
        ],
        3,
    );
    let ping = pinged("ord_1");
    let pong = ponged("ord_1");
    let unheard = event("ord_1", &Unheard {});
    platform
        .outbox
        .commit(&[ping.clone(), pong.clone(), unheard.clone()]);

    eventually("every outbox row is published", || {
        platform.outbox.unpublished() == 0
    })
    .await;
    assert_eq!(billing.handled(), vec![ping.id]);
    assert_eq!(audit.handled(), vec![pong.id]);
    assert_eq!(billing.attempts(&pong), 0);
    assert_eq!(audit.attempts(&ping), 0);
    // Nobody listens for it, and it is published all the same.
    assert!(platform.outbox.is_published(&unheard));
}

// --- Failures ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_twice_is_retried_and_its_row_is_published_once_it_succeeds() {
    let shipping = Probe::new(|_, attempt| {
        if attempt <= 2 {
            Reaction::Fail
        } else {
            Reaction::Succeed
        }
    });
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        5,
    );
    let event = pinged("ord_1");
    platform.outbox.commit(std::slice::from_ref(&event));

    eventually("the row is published", || {
        platform.outbox.is_published(&event)
    })
    .await;
    assert_eq!(shipping.attempts(&event), 3);
    assert_eq!(shipping.handled(), vec![event.id]);
    assert!(platform.dead_letters.letters().is_empty());
    let stats = platform.bus.stats();
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 2);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_after_its_last_attempt_while_other_events_keep_flowing() {
    let shipping = Probe::new(|event, _| {
        if event.subject == "ord_poison" {
            Reaction::FailAfterGate
        } else {
            Reaction::Succeed
        }
    });
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        3,
    );
    let poison = pinged("ord_poison");
    platform.outbox.commit(std::slice::from_ref(&poison));
    let healthy: Vec<Envelope> = (0..10).map(|i| pinged(&format!("ord_{i}"))).collect();
    for event in &healthy {
        platform.outbox.commit(std::slice::from_ref(event));
    }

    // The poison event is stuck in its first attempt; the others go by.
    eventually("the healthy events are published", || {
        healthy.iter().all(|e| platform.outbox.is_published(e))
    })
    .await;
    assert_eq!(shipping.handled(), sorted_ids(&healthy));
    assert!(!platform.outbox.is_published(&poison));
    assert!(platform.dead_letters.letters().is_empty());

    shipping.open_gate();
    eventually("the poison row is published", || {
        platform.outbox.is_published(&poison)
    })
    .await;
    assert_eq!(
        shipping.attempts(&poison),
        3,
        "attempted exactly max_attempts times"
    );
    let letters = platform.dead_letters.letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.consumer, "shipping");
    assert_eq!(letter.event_id, poison.id.to_string());
    assert_eq!(letter.event_type, Pinged::TYPE);
    assert_eq!(letter.subject, "ord_poison");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.error, "boom on attempt 3");
    assert_eq!(letter.status, DeadLetterStatus::Parked);
    assert_eq!(letter.envelope.id, poison.id);
    assert!(!shipping.handled().contains(&poison.id));
    let stats = platform.bus.stats();
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_counts_as_a_failed_attempt_not_a_crash() {
    let shipping = Probe::new(|event, _| {
        if event.subject == "ord_explosive" {
            Reaction::Panic
        } else {
            Reaction::Succeed
        }
    });
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        2,
    );
    let explosive = pinged("ord_explosive");
    let calm = pinged("ord_calm");
    platform.outbox.commit(&[explosive.clone(), calm.clone()]);

    eventually("both rows are published", || {
        platform.outbox.unpublished() == 0
    })
    .await;
    assert_eq!(shipping.attempts(&explosive), 2);
    let letter = platform.dead_letters.letter_for(&explosive).unwrap();
    assert_eq!(letter.error, "handler panicked: kaboom");
    assert_eq!(letter.attempts, 2);
    assert_eq!(shipping.handled(), vec![calm.id]);

    // The relay and the bus are still there for the next event.
    let later = pinged("ord_later");
    platform.outbox.commit(std::slice::from_ref(&later));
    eventually("a later event is published", || {
        platform.outbox.is_published(&later)
    })
    .await;
    assert!(shipping.handled().contains(&later.id));
}

// --- Replay -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_delivered_exactly_once_more_and_marked_replayed() {
    let broken = Arc::new(AtomicBool::new(true));
    let shipping = Probe::new({
        let broken = broken.clone();
        move |_, _| {
            if broken.load(Ordering::SeqCst) {
                Reaction::Fail
            } else {
                Reaction::Succeed
            }
        }
    });
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        2,
    );
    // Its own timer never fires during the test: only wake-ups drive it.
    tokio::spawn(platform.bus.clone().run_replayer(Duration::from_secs(3600)));

    let event = pinged("ord_1");
    platform.outbox.commit(std::slice::from_ref(&event));
    eventually("the event is parked and its row published", || {
        platform.outbox.is_published(&event) && platform.dead_letters.letter_for(&event).is_some()
    })
    .await;
    let letter = platform.dead_letters.letter_for(&event).unwrap();
    assert_eq!(letter.status, DeadLetterStatus::Parked);
    assert!(shipping.handled().is_empty());
    eventually("the replayer has looked for requests once", || {
        platform.dead_letters.scans() >= 1
    })
    .await;

    // The operator fixes the cause and asks for a replay.
    broken.store(false, Ordering::SeqCst);
    let requested = platform
        .dead_letters
        .request_replay(&letter.id)
        .await
        .unwrap();
    assert_eq!(requested.status, DeadLetterStatus::ReplayRequested);
    platform.bus.wake_replayer();

    eventually("the letter is marked replayed", || {
        platform.dead_letters.status_of(&event) == Some(DeadLetterStatus::Replayed)
    })
    .await;
    assert_eq!(shipping.handled(), vec![event.id]);
    assert_eq!(shipping.attempts(&event), 3);
    assert!(
        platform
            .dead_letters
            .letter_for(&event)
            .unwrap()
            .replayed_at
            .is_some()
    );
    assert_eq!(platform.bus.stats().replayed.load(Ordering::Relaxed), 1);

    // Woken again, the replayer finds nothing left to deliver.
    let scans = platform.dead_letters.scans();
    platform.bus.wake_replayer();
    eventually("the replayer has looked again", || {
        platform.dead_letters.scans() > scans
    })
    .await;
    assert_eq!(shipping.handled(), vec![event.id]);
    assert_eq!(shipping.attempts(&event), 3);
}

// --- Shutdown ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_relay_publishes_the_rows_already_committed_before_it_stops() {
    let shipping = Probe::succeeding();
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        3,
    );
    eventually("the relay has found the outbox empty", || {
        platform.outbox.claims() >= 1
    })
    .await;

    // Committed without a wake-up: the idle relay does not know about them,
    // so only the drain can publish them.
    let events: Vec<Envelope> = (0..5).map(|i| pinged(&format!("ord_{i}"))).collect();
    platform.outbox.commit_quietly(&events);
    assert_eq!(platform.outbox.unpublished(), 5);

    platform.relay.drain().await;
    assert_eq!(platform.outbox.unpublished(), 0);
    assert_eq!(shipping.handled(), sorted_ids(&events));
}

// --- Chaos: pauses and duplicates set at run time ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_service_holds_its_deliveries_without_failing_until_it_resumes() {
    let billing = Probe::succeeding();
    let shipping = Probe::succeeding();
    let platform = Platform::start(
        vec![
            Consumer::new("billing.orders", &[Pinged::TYPE], billing.clone()),
            Consumer::new("shipping.orders", &[Pinged::TYPE], shipping.clone()),
        ],
        3,
    );
    assert_eq!(platform.bus.services(), ["billing", "shipping"]);
    platform.bus.pause("shipping");
    assert_eq!(platform.bus.paused(), ["shipping"]);
    let event = pinged("ord_1");
    platform.outbox.commit(std::slice::from_ref(&event));

    eventually("billing handles it", || billing.handled() == vec![event.id]).await;
    assert_eq!(shipping.attempts(&event), 0, "held, not attempted");
    assert!(!platform.outbox.is_published(&event));

    platform.bus.resume("shipping");
    eventually("the row is published", || {
        platform.outbox.is_published(&event)
    })
    .await;
    assert_eq!(shipping.handled(), vec![event.id]);
    let stats = platform.bus.stats();
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 0);
    assert!(platform.dead_letters.letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_held_by_a_pause_ends_when_the_bus_stops_and_is_not_dead_lettered() {
    use ordo_bus::Publisher;
    let shipping = Probe::succeeding();
    let dead_letters = Arc::new(MemoryDeadLetters::default());
    let stop = CancellationToken::new();
    let bus = LocalBus::new(
        vec![Consumer::new(
            "shipping.orders",
            &[Pinged::TYPE],
            shipping.clone(),
        )],
        dead_letters.clone(),
        fast_retries(1),
        stop.clone(),
    );
    bus.set_paused(["shipping".to_owned()]);
    let event = pinged("ord_1");
    let publish = tokio::spawn({
        let bus = bus.clone();
        let event = event.clone();
        async move { bus.publish(&event).await }
    });
    let attempt = tokio::spawn({
        let bus = bus.clone();
        let event = event.clone();
        async move { bus.attempt("shipping.orders", &event).await }
    });
    stop.cancel();
    assert!(matches!(
        publish.await.unwrap(),
        Err(ordo_bus::BusError::ShuttingDown)
    ));
    assert!(attempt.await.unwrap().is_err());
    assert_eq!(shipping.attempts(&event), 0);
    assert!(dead_letters.letters().is_empty());
    assert_eq!(bus.stats().failed_attempts.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duplicate_rate_changes_while_the_bus_runs() {
    let shipping = Probe::succeeding();
    let platform = Platform::start(
        vec![Consumer::new("shipping", &[Pinged::TYPE], shipping.clone())],
        3,
    );
    platform.bus.set_duplicate_rate(1.0);
    assert_eq!(platform.bus.duplicate_rate(), 1.0);
    let twice = pinged("ord_twice");
    platform.outbox.commit(std::slice::from_ref(&twice));
    eventually("the row is published", || {
        platform.outbox.is_published(&twice)
    })
    .await;
    assert_eq!(shipping.attempts(&twice), 2);
    // Through a broker's delivery too.
    let brokered = pinged("ord_brokered");
    platform.bus.attempt("shipping", &brokered).await.unwrap();
    assert_eq!(shipping.attempts(&brokered), 2);

    platform.bus.set_duplicate_rate(0.0);
    let once = pinged("ord_once");
    platform.outbox.commit(std::slice::from_ref(&once));
    eventually("the row is published", || {
        platform.outbox.is_published(&once)
    })
    .await;
    assert_eq!(shipping.attempts(&once), 1);
}
