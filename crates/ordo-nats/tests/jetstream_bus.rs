//! The bus's delivery contract, run on both buses: the in-process bus and
//! JetStream on a real NATS server (`ORDO_TEST_NATS_URL`) — every event to
//! each consumer subscribed to its type, a failed attempt retried after a
//! backoff, the last one parked, a parked event replayed on request. Then
//! what only a broker has: replicas sharing a consumer, the duplicate
//! window. Every JetStream test has its own stream and subjects, deleted at
//! the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ordo_bus::{
    Consumer, DeadLetterStatus, DeadLetterStore, Envelope, EventContext, EventPayload, Handler,
    HandlerError, LocalBus, Publisher, RetryPolicy,
};
use ordo_kernel::EventId;
use ordo_nats::{JetStreamBus, JetStreamSettings};
use ordo_sqlite::{DatabaseOptions, SqliteDeadLetters};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

#[derive(Serialize, Deserialize)]
struct Pinged {}
impl EventPayload for Pinged {
    const TYPE: &'static str = "test.pinged.v1";
    const SOURCE: &'static str = "/ordo/test";
}

/// A type the test consumer does not subscribe to.
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

/// `None` (and the test passes, saying so) without a NATS server.
fn nats_url() -> Option<String> {
    let url = std::env::var("ORDO_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: set ORDO_TEST_NATS_URL to run the JetStream tests");
    }
    url
}

/// A stream of its own, deleted on drop.
struct TestStream {
    settings: JetStreamSettings,
    admin: JetStreamBus,
}

impl TestStream {
    async fn new(url: &str, duplicate_window: Duration) -> Self {
        let unique = Ulid::new().to_string().to_lowercase();
        let settings = JetStreamSettings {
            stream: format!("ORDO_TEST_{unique}"),
            subject_prefix: format!("ordo_test_{unique}"),
            duplicate_window,
            ack_wait: Duration::from_secs(5),
            ..JetStreamSettings::new(url)
        };
        let admin = JetStreamBus::connect(settings.clone()).await.unwrap();
        Self { settings, admin }
    }

    /// Another process's connection to the same stream.
    async fn replica(&self) -> JetStreamBus {
        JetStreamBus::connect(self.settings.clone()).await.unwrap()
    }

    async fn messages(&self) -> u64 {
        self.admin.stream_messages().await.unwrap()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        // The runtime may be going away: delete on a thread of its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let _ = admin.delete_stream().await;
            });
        })
        .join()
        .unwrap();
    }
}

/// Each event's attempts: which replica made it, and when.
type Attempts = Arc<Mutex<HashMap<String, Vec<(usize, tokio::time::Instant)>>>>;

/// Records each attempt; fails the first `fail_first` attempts of every
/// event (all of them when `u32::MAX`).
struct Recorder {
    replica: usize,
    fail_first: u32,
    attempts: Attempts,
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let list = attempts.entry(event.id.to_string()).or_default();
            list.push((self.replica, tokio::time::Instant::now()));
            list.len() as u32
        };
        if attempt <= self.fail_first {
            return Err(anyhow::anyhow!("attempt {attempt} fails on purpose").into());
        }
        Ok(())
    }
}

struct Replica {
    bus: LocalBus,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// A process hosting the test consumer; fed by `jet`'s durable
    /// consumer, or, without it, by publishing to its in-process bus.
    async fn start(
        jet: Option<&JetStreamBus>,
        index: usize,
        fail_first: u32,
        policy: RetryPolicy,
        attempts: &Attempts,
        dead_letters: Option<Arc<dyn DeadLetterStore>>,
    ) -> (Self, Arc<dyn DeadLetterStore>) {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = dead_letters.unwrap_or_else(|| {
            let db = ordo_sqlite::Database::open(
                "bus",
                &dir.path().join("bus.db"),
                &[ordo_sqlite::BUS_MIGRATIONS],
                DatabaseOptions::default(),
            )
            .unwrap();
            Arc::new(SqliteDeadLetters::new(db))
        });
        let mut consumer = Consumer::new(
            "test.recorder",
            &[Pinged::TYPE],
            Arc::new(Recorder {
                replica: index,
                fail_first,
                attempts: attempts.clone(),
            }),
        );
        consumer.concurrency = 4;
        let stop = CancellationToken::new();
        let bus = LocalBus::new(vec![consumer], dead_letters.clone(), policy, stop.clone());
        let tasks = jet.map_or_else(Vec::new, |jet| jet.spawn_consumers(&bus, stop.clone()));
        (
            Self {
                bus,
                stop,
                tasks,
                _dir: dir,
            },
            dead_letters,
        )
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- The contract, on both buses ------------------------------------------

#[derive(Debug, Clone, Copy)]
enum On {
    Local,
    JetStream,
}

/// One process with the test consumer, and how events reach it.
struct Setup {
    replica: Replica,
    dead_letters: Arc<dyn DeadLetterStore>,
    publisher: Arc<dyn Publisher>,
    _stream: Option<TestStream>,
}

impl Setup {
    /// `None` for JetStream without a NATS server.
    async fn new(
        on: On,
        fail_first: u32,
        policy: RetryPolicy,
        attempts: &Attempts,
    ) -> Option<Self> {
        match on {
            On::Local => {
                let (replica, dead_letters) =
                    Replica::start(None, 0, fail_first, policy, attempts, None).await;
                Some(Self {
                    publisher: Arc::new(replica.bus.clone()),
                    replica,
                    dead_letters,
                    _stream: None,
                })
            }
            On::JetStream => {
                let url = nats_url()?;
                let stream = TestStream::new(&url, Duration::from_secs(120)).await;
                let (replica, dead_letters) = Replica::start(
                    Some(&stream.replica().await),
                    0,
                    fail_first,
                    policy,
                    attempts,
                    None,
                )
                .await;
                Some(Self {
                    publisher: stream.admin.publisher("test"),
                    replica,
                    dead_letters,
                    _stream: Some(stream),
                })
            }
        }
    }

    /// Publishes as a relay does; the in-process bus resolves only once
    /// the event is handled or parked, so it runs on a task of its own.
    fn publish(&self, event: &Envelope) -> tokio::task::JoinHandle<()> {
        let publisher = self.publisher.clone();
        let event = event.clone();
        tokio::spawn(async move { publisher.publish(&event).await.unwrap() })
    }
}

macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::On::Local).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::On::JetStream).await;
                }
            )*
        }
    };
}

on_both_buses!(
    each_event_reaches_its_subscribed_consumer_once_and_no_other_type_does,
    a_failed_attempt_is_retried_after_a_backoff_until_it_succeeds,
    an_event_out_of_attempts_is_parked_then_replayed_on_request,
);

async fn each_event_reaches_its_subscribed_consumer_once_and_no_other_type_does(on: On) {
    let attempts = Attempts::default();
    let Some(setup) = Setup::new(on, 0, policy(3), &attempts).await else {
        return;
    };
    let events: Vec<Envelope> = (0..50).map(|i| pinged(&format!("s-{i}"))).collect();
    let unheard = event("s-x", &Unheard {});
    let mut published = vec![setup.publish(&unheard)];
    published.extend(events.iter().map(|e| setup.publish(e)));
    for task in published {
        task.await.unwrap();
    }
    eventually("every event handled", || {
        attempts.lock().unwrap().len() == events.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), events.len());
    for event in &events {
        assert_eq!(attempts[&event.id.to_string()].len(), 1, "{}", event.id);
    }
    assert!(!attempts.contains_key(&unheard.id.to_string()));
    let stats = setup.replica.bus.stats();
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 50);
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 0);
    setup.replica.stop().await;
}

async fn a_failed_attempt_is_retried_after_a_backoff_until_it_succeeds(on: On) {
    let attempts = Attempts::default();
    let Some(setup) = Setup::new(on, 2, policy(5), &attempts).await else {
        return;
    };
    let event = pinged("s-retry");
    setup.publish(&event).await.unwrap();
    let id = event.id.to_string();
    eventually("three attempts", || {
        attempts
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|a| a.len() == 3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let times: Vec<_> = attempts.lock().unwrap()[&id].iter().map(|a| a.1).collect();
    assert_eq!(times.len(), 3, "the third attempt succeeded: no fourth");
    // Backoff: at least half the policy's ceiling between attempts.
    assert!(times[1] - times[0] >= Duration::from_millis(100));
    assert!(times[2] - times[1] >= Duration::from_millis(200));
    let stats = setup.replica.bus.stats();
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 2);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(setup.dead_letters.count_open().await.unwrap(), 0);
    setup.replica.stop().await;
}

async fn an_event_out_of_attempts_is_parked_then_replayed_on_request(on: On) {
    let attempts = Attempts::default();
    let Some(setup) = Setup::new(on, 3, policy(3), &attempts).await else {
        return;
    };
    let poison = pinged("s-poison");
    let other = pinged("s-other");
    setup.publish(&poison);
    setup.publish(&other);
    let dead_letters = setup.dead_letters.clone();
    let letters = loop {
        let letters = dead_letters.list(10).await.unwrap();
        if letters.len() == 2 {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let letter = letters
        .iter()
        .find(|l| l.event_id == poison.id.to_string())
        .unwrap();
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.consumer, "test.recorder");
    assert_eq!(letter.status, DeadLetterStatus::Parked);
    // Parked means done with: nothing hands it over again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts.lock().unwrap()[&poison.id.to_string()].len(), 3);

    // The fourth attempt succeeds: a replay delivers it once more.
    dead_letters.request_replay(&letter.id).await.unwrap();
    let replayer = tokio::spawn(
        setup
            .replica
            .bus
            .clone()
            .run_replayer(Duration::from_millis(100)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead_letters.get(&letter.id).await.unwrap().status != DeadLetterStatus::Replayed {
        assert!(tokio::time::Instant::now() < deadline, "replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts.lock().unwrap()[&poison.id.to_string()].len(), 4);
    assert_eq!(
        dead_letters.get(&letters[0].id).await.unwrap().attempts,
        3,
        "the other letter was left alone"
    );
    setup.replica.stop().await;
    replayer.await.unwrap();
}

// --- What only a broker does ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_repeated_within_the_duplicate_window_is_stored_once() {
    let Some(url) = nats_url() else { return };
    let stream = TestStream::new(&url, Duration::from_secs(120)).await;
    let publisher = stream.admin.publisher("test");
    let event = pinged("s-1");
    for _ in 0..3 {
        publisher.publish(&event).await.unwrap();
    }
    assert_eq!(stream.messages().await, 1);
    publisher.publish(&pinged("s-1")).await.unwrap();
    assert_eq!(stream.messages().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_durable_consumer_and_each_event_is_handled_once() {
    let Some(url) = nats_url() else { return };
    let stream = TestStream::new(&url, Duration::from_secs(120)).await;
    let attempts = Arc::default();
    let (a, dead_letters) = Replica::start(
        Some(&stream.replica().await),
        0,
        0,
        policy(5),
        &attempts,
        None,
    )
    .await;
    let (b, _) = Replica::start(
        Some(&stream.replica().await),
        1,
        0,
        policy(5),
        &attempts,
        Some(dead_letters),
    )
    .await;
    let publisher = stream.admin.publisher("test");
    let events: Vec<Envelope> = (0..300).map(|i| pinged(&format!("s-{i}"))).collect();
    for event in &events {
        publisher.publish(event).await.unwrap();
    }
    eventually("every event handled", || {
        attempts.lock().unwrap().len() == events.len()
    })
    .await;
    // Nothing more arrives: no event went to both replicas.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = attempts.lock().unwrap().clone();
    for event in &events {
        assert_eq!(attempts[&event.id.to_string()].len(), 1, "{}", event.id);
    }
    let by_replica = |r: usize| attempts.values().filter(|a| a[0].0 == r).count();
    assert!(
        by_replica(0) > 0 && by_replica(1) > 0,
        "both replicas take a share: {} and {}",
        by_replica(0),
        by_replica(1)
    );
    assert_eq!(
        a.bus.stats().delivered.load(Ordering::Relaxed) as usize,
        by_replica(0)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_again_after_the_duplicate_window_is_delivered_again() {
    // What the broker does not promise, shown: after the window a relay's
    // retry is a second message. The inbox absorbs it (see the app's
    // distributed tests); the broker alone does not.
    let Some(url) = nats_url() else { return };
    let stream = TestStream::new(&url, Duration::from_secs(1)).await;
    let attempts = Arc::default();
    let (replica, _) = Replica::start(
        Some(&stream.replica().await),
        0,
        0,
        policy(3),
        &attempts,
        None,
    )
    .await;
    let publisher = stream.admin.publisher("test");
    let event = pinged("s-late");
    publisher.publish(&event).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publisher.publish(&event).await.unwrap();
    assert_eq!(stream.messages().await, 2);
    let id = event.id.to_string();
    eventually("two deliveries", || {
        attempts
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_other_settings_updates_the_stream_it_finds() {
    let Some(url) = nats_url() else { return };
    let stream = TestStream::new(&url, Duration::from_secs(120)).await;
    let publisher = stream.admin.publisher("test");
    let event = pinged("s-update");
    publisher.publish(&event).await.unwrap();
    // A process started with a one-second window updates the stream.
    let updated = JetStreamBus::connect(JetStreamSettings {
        duplicate_window: Duration::from_secs(1),
        ..stream.settings.clone()
    })
    .await
    .unwrap();
    assert_eq!(stream.messages().await, 1, "the stream kept its events");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    updated.publisher("test").publish(&event).await.unwrap();
    assert_eq!(
        stream.messages().await,
        2,
        "past the new window a repeated publish is stored again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_are_not_nats_names_are_refused_before_connecting() {
    let bad = JetStreamSettings {
        stream: "has.dots".to_owned(),
        ..JetStreamSettings::new("nats://127.0.0.1:1")
    };
    let err = JetStreamBus::connect(bad).await.err().unwrap();
    assert!(err.to_string().contains("stream"), "{err}");
    let bad = JetStreamSettings {
        subject_prefix: "a.*".to_owned(),
        ..JetStreamSettings::new("nats://127.0.0.1:1")
    };
    assert!(JetStreamBus::connect(bad).await.is_err());
}
