//! The platform tables against a real PostgreSQL server: the outbox and
//! inbox, the dead letters and the idempotency keys, each through the trait
//! its platform crate defines, with the same expectations as the SQLite
//! suite (crates/ordo-sqlite/tests/platform_stores.rs), and what only a
//! shared server has: several relays on one outbox, notifications from
//! other processes, leases that run out, retried deadlocks.
//!
//! Each test creates its own database (`ORDO_TEST_DATABASE_URL`) and drops
//! it; without the variable the tests say so and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ordo_bus::{
    BusError, DeadLetterStatus, DeadLetterStore, Envelope, EventContext, EventPayload, InboxKey,
    NewDeadLetter, OutboxStore, Publisher, Relay,
};
use ordo_http::idempotency_store::{Begin, IdempotencyStore, StoredResponse};
use ordo_kernel::{EventId, StoreError};
use ordo_postgres::testing::TestDatabase;
use ordo_postgres::{
    BUS_MIGRATIONS, PLATFORM_MIGRATIONS, PgDatabase, PgDeadLetters, PgIdempotency, PgOptions,
    PgOutbox, outbox_append, record_inbox, store_error,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use ulid::Ulid;

// --- Helpers ----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Noted {
    n: u32,
}
impl EventPayload for Noted {
    const TYPE: &'static str = "test.noted.v1";
    const SOURCE: &'static str = "/ordo/test";
}

fn noted(subject: &str, n: u32) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        Utc::now(),
        subject,
        Some(i64::from(n)),
        &EventContext::from_request("req-test"),
        &Noted { n },
    )
    .unwrap()
}

fn ids(events: &[Envelope]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// A test database, or `None` (and a line saying so) without a server.
async fn server(test: &str) -> Option<TestDatabase> {
    let db = TestDatabase::create().await;
    if db.is_none() {
        eprintln!("{test}: ORDO_TEST_DATABASE_URL is not set; the PostgreSQL run is skipped");
    }
    db
}

fn options() -> PgOptions {
    PgOptions {
        pool_size: 4,
        ..PgOptions::default()
    }
}

async fn service_db(server: &TestDatabase) -> PgDatabase {
    PgDatabase::connect(server.url(), "service", &[PLATFORM_MIGRATIONS], &options())
        .await
        .unwrap()
}

async fn bus_db(server: &TestDatabase) -> PgDatabase {
    PgDatabase::connect(server.url(), "bus", &[BUS_MIGRATIONS], &options())
        .await
        .unwrap()
}

/// Appends `events` to the outbox in one transaction.
async fn append(db: &PgDatabase, events: &[Envelope]) {
    db.transaction(|tx| {
        let events = events.to_vec();
        Box::pin(async move {
            for event in &events {
                outbox_append(tx, event).await?;
            }
            Ok(())
        })
    })
    .await
    .unwrap();
}

async fn record(db: &PgDatabase, consumer: &str, event_id: &str) -> bool {
    let key = InboxKey {
        consumer: consumer.to_owned(),
        event_id: event_id.to_owned(),
    };
    db.transaction(|tx| {
        let key = key.clone();
        Box::pin(async move { record_inbox(tx, Some(&key)).await })
    })
    .await
    .unwrap()
}

async fn count(db: &PgDatabase, sql: &str) -> i64 {
    db.conn()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

// --- Migrations ---------------------------------------------------------------

#[tokio::test]
async fn processes_starting_together_migrate_a_schema_once() {
    let Some(server) = server("migrations").await else {
        return;
    };
    let url = server.url().to_owned();
    let starts = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            PgDatabase::connect(&url, "service", &[PLATFORM_MIGRATIONS], &options()).await
        })
    });
    for start in futures::future::join_all(starts).await {
        start.unwrap().unwrap();
    }
    let db = service_db(&server).await;
    // Each migration recorded once, however many processes raced.
    assert_eq!(
        count(&db, "SELECT count(*) FROM schema_migrations").await,
        PLATFORM_MIGRATIONS.migrations.len() as i64
    );
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_stops_the_start() {
    let Some(server) = server("migrations").await else {
        return;
    };
    service_db(&server).await;
    const CHANGED: ordo_postgres::MigrationSet = ordo_postgres::MigrationSet {
        name: "platform",
        migrations: &[ordo_postgres::Migration {
            version: 1,
            name: "outbox, inbox and idempotency keys",
            sql: "SELECT 1",
        }],
    };
    let err = PgDatabase::connect(server.url(), "service", &[CHANGED], &options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("was changed"), "{err}");
}

#[tokio::test]
async fn an_invalid_schema_name_is_refused() {
    let Some(server) = server("migrations").await else {
        return;
    };
    let err = PgDatabase::connect(server.url(), "a; DROP", &[], &options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid schema name"), "{err}");
}

// --- Transactions -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retried_and_both_transactions_commit() {
    let Some(server) = server("deadlock").await else {
        return;
    };
    let db = service_db(&server).await;
    db.conn()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE counters (id INT PRIMARY KEY, n INT NOT NULL);
             INSERT INTO counters VALUES (1, 0), (2, 0);",
        )
        .await
        .unwrap();
    // Two transactions lock the same rows in opposite orders, pausing in
    // between: PostgreSQL aborts one of them, which runs again.
    let run = |first: i32, second: i32| {
        let db = db.clone();
        tokio::spawn(async move {
            db.transaction(|tx| {
                Box::pin(async move {
                    tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&first])
                        .await
                        .map_err(store_error)?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&second])
                        .await
                        .map_err(store_error)?;
                    Ok(())
                })
            })
            .await
        })
    };
    let (a, b) = tokio::join!(run(1, 2), run(2, 1));
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    assert_eq!(count(&db, "SELECT sum(n)::BIGINT FROM counters").await, 4);
}

#[tokio::test]
async fn a_failed_transaction_writes_nothing_and_a_unique_violation_is_a_conflict() {
    let Some(server) = server("rollback").await else {
        return;
    };
    let db = service_db(&server).await;
    let event = noted("ord_1", 1);
    append(&db, std::slice::from_ref(&event)).await;
    let other = noted("ord_1", 2);
    let err = db
        .transaction(|tx| {
            let (other, event) = (other.clone(), event.clone());
            Box::pin(async move {
                outbox_append(tx, &other).await?;
                outbox_append(tx, &event).await
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 1);
}

// --- Outbox -------------------------------------------------------------------

#[tokio::test]
async fn committed_outbox_rows_are_claimed_in_order_and_only_once_while_leased() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    let events: Vec<Envelope> = (0..5).map(|n| noted("ord_1", n)).collect();
    append(&db, &events).await;

    let first = outbox.claim(3).await.unwrap();
    let second = outbox.claim(10).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.envelope.id).collect::<Vec<_>>(),
        ids(&events[..3])
    );
    assert_eq!(
        second.iter().map(|r| r.envelope.id).collect::<Vec<_>>(),
        ids(&events[3..])
    );
    assert!(outbox.claim(10).await.unwrap().is_empty());
    assert_eq!(outbox.backlog().await.unwrap(), 5);
}

#[tokio::test]
async fn a_published_row_leaves_the_backlog_and_is_never_claimed_again() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::with_lease("orders", db.clone(), Duration::from_millis(50));
    append(&db, &[noted("ord_1", 1), noted("ord_1", 2)]).await;
    let claimed = outbox.claim(10).await.unwrap();
    outbox.mark_published(&[claimed[0].seq]).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The unpublished one's lease ran out; the published one stays done.
    let again = outbox.claim(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, claimed[1].seq);
}

#[tokio::test]
async fn released_rows_can_be_claimed_again_at_once() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    append(&db, &[noted("ord_1", 1)]).await;
    let claimed = outbox.claim(10).await.unwrap();
    outbox.release(&[claimed[0].seq]).await;
    assert_eq!(outbox.claim(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rows_leased_by_a_relay_that_died_are_claimed_by_another_after_the_lease() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let crashed = PgOutbox::with_lease("orders", db.clone(), Duration::from_millis(200));
    append(&db, &[noted("ord_1", 1)]).await;
    assert_eq!(crashed.claim(10).await.unwrap().len(), 1);
    drop(crashed);
    let other = PgOutbox::with_lease("orders", db.clone(), Duration::from_millis(200));
    assert!(other.claim(10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other.claim(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_commit_in_another_process_wakes_the_relay() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    let wakeup = outbox.wakeup();
    // Let the listener start and consume its initial wake-up.
    tokio::time::timeout(Duration::from_secs(5), wakeup.notified())
        .await
        .unwrap();
    // Another process: its own pools, same schema.
    let writer = service_db(&server).await;
    let notified = wakeup.notified();
    append(&writer, &[noted("ord_1", 1)]).await;
    tokio::time::timeout(Duration::from_secs(2), notified)
        .await
        .expect("the commit's notification woke the relay");
}

#[tokio::test]
async fn a_commit_that_wrote_an_event_wakes_the_relay_of_its_own_process_and_others_do_not() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    let wakeup = outbox.wakeup();
    tokio::time::timeout(Duration::from_secs(5), wakeup.notified())
        .await
        .unwrap();
    // A transaction without an event wakes nobody (the periodic check
    // comes every 5 s).
    let quiet = wakeup.notified();
    db.transaction(|tx| {
        Box::pin(async move {
            tx.batch_execute("SELECT 1")
                .await
                .map_err(ordo_postgres::store_error)
        })
    })
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), quiet)
            .await
            .is_err(),
        "a commit without an event woke the relay"
    );
    // Well under the periodic check: the commit itself woke it.
    let notified = wakeup.notified();
    append(&db, &[noted("ord_1", 1)]).await;
    tokio::time::timeout(Duration::from_secs(1), notified)
        .await
        .expect("the commit woke the relay of its own process");
}

#[tokio::test]
async fn events_for_a_subject_come_in_outbox_order_published_or_not() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    let a: Vec<Envelope> = (0..3).map(|n| noted("ord_a", n)).collect();
    append(&db, &a[..2]).await;
    append(&db, &[noted("ord_b", 1)]).await;
    append(&db, &a[2..]).await;
    let claimed = outbox.claim(1).await.unwrap();
    outbox.mark_published(&[claimed[0].seq]).await.unwrap();
    let events = outbox.events_for_subject("ord_a").await.unwrap();
    assert_eq!(ids(&events), ids(&a));
    assert_eq!(
        outbox
            .event(&a[1].id.to_string())
            .await
            .unwrap()
            .map(|e| e.id),
        Some(a[1].id)
    );
    assert!(outbox.event("evt_unknown").await.unwrap().is_none());
}

#[tokio::test]
async fn the_purge_keeps_unpublished_rows_and_recent_inbox_entries() {
    let Some(server) = server("outbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let outbox = PgOutbox::new("orders", db.clone());
    append(&db, &[noted("ord_1", 1), noted("ord_1", 2)]).await;
    let claimed = outbox.claim(1).await.unwrap();
    outbox.mark_published(&[claimed[0].seq]).await.unwrap();
    assert!(record(&db, "shipping", "evt_1").await);
    let (kept_outbox, kept_inbox) = outbox
        .purge(
            Utc::now() - chrono::Duration::hours(1),
            Utc::now() - chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!((kept_outbox, kept_inbox), (0, 0));
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(outbox.purge(later, later).await.unwrap(), (1, 1));
    assert_eq!(outbox.backlog().await.unwrap(), 1);
}

// --- Inbox --------------------------------------------------------------------

#[tokio::test]
async fn the_inbox_records_an_event_once_per_consumer() {
    let Some(server) = server("inbox").await else {
        return;
    };
    let db = service_db(&server).await;
    assert!(record(&db, "shipping", "evt_1").await);
    assert!(!record(&db, "shipping", "evt_1").await);
    assert!(record(&db, "billing", "evt_1").await);
    assert_eq!(count(&db, "SELECT count(*) FROM inbox").await, 2);
}

#[tokio::test]
async fn a_transaction_that_fails_after_recording_leaves_no_inbox_row() {
    let Some(server) = server("inbox").await else {
        return;
    };
    let db = service_db(&server).await;
    let result: Result<(), StoreError> = db
        .transaction(|tx| {
            Box::pin(async move {
                let key = InboxKey {
                    consumer: "shipping".to_owned(),
                    event_id: "evt_1".to_owned(),
                };
                assert!(record_inbox(tx, Some(&key)).await?);
                Err(StoreError::Conflict("the effect failed".to_owned()))
            })
        })
        .await;
    assert!(result.is_err());
    assert_eq!(count(&db, "SELECT count(*) FROM inbox").await, 0);
    assert!(record(&db, "shipping", "evt_1").await);
}

// --- Two relays on one outbox -------------------------------------------------

/// Counts what it is asked to publish, per event id.
#[derive(Default)]
struct Counting {
    seen: Mutex<HashMap<EventId, u32>>,
}

#[async_trait::async_trait]
impl Publisher for Counting {
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        *self.seen.lock().unwrap().entry(event.id).or_default() += 1;
        Ok(())
    }
}

/// 64 writers commit `total` events with random pauses inside their
/// transactions (so sequence values commit out of order) while two relays,
/// each with its own connections, publish: every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_exactly_once_under_concurrent_writers() {
    let Some(server) = server("two relays").await else {
        return;
    };
    let total: usize = std::env::var("ORDO_TEST_RELAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let writers = 64;
    let per_writer = total.div_ceil(writers);
    let total = per_writer * writers;
    let writer_db = PgDatabase::connect(
        server.url(),
        "service",
        &[PLATFORM_MIGRATIONS],
        &PgOptions {
            pool_size: 32,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    // Each relay with its own connections, as in two processes.
    let (one, two) = (service_db(&server).await, service_db(&server).await);
    let (p1, p2) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
    let r1 = Relay::new(Arc::new(PgOutbox::new("service", one)), p1.clone())
        .with_max_in_flight(256)
        .spawn(Duration::from_secs(30));
    let r2 = Relay::new(Arc::new(PgOutbox::new("service", two)), p2.clone())
        .with_max_in_flight(256)
        .spawn(Duration::from_secs(30));

    let started = Instant::now();
    let tasks = (0..writers).map(|w| {
        let db = writer_db.clone();
        tokio::spawn(async move {
            let mut written = Vec::with_capacity(per_writer);
            // Several events per transaction, as a service's reaction
            // writes, with a pause before commit on some of them.
            for chunk in 0..per_writer.div_ceil(4) {
                let events: Vec<Envelope> = (0..4)
                    .filter(|i| chunk * 4 + i < per_writer)
                    .map(|i| noted(&format!("ord_{w}"), u32::try_from(chunk * 4 + i).unwrap()))
                    .collect();
                let pause = rand::random_range(0..4u64);
                db.transaction(|tx| {
                    let events = events.clone();
                    Box::pin(async move {
                        for event in &events {
                            outbox_append(tx, event).await?;
                        }
                        if pause == 0 {
                            tokio::time::sleep(Duration::from_millis(rand::random_range(1..5)))
                                .await;
                        }
                        Ok(())
                    })
                })
                .await
                .unwrap();
                written.extend(events.iter().map(|e| e.id));
            }
            written
        })
    });
    let mut written = Vec::with_capacity(total);
    for task in futures::future::join_all(tasks).await {
        written.extend(task.unwrap());
    }
    let wrote_in = started.elapsed();
    let check = PgOutbox::new("service", writer_db.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while check.backlog().await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the relays did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r1.drain().await;
    r2.drain().await;

    let (a, b) = (
        p1.seen.lock().unwrap().clone(),
        p2.seen.lock().unwrap().clone(),
    );
    let mut published: HashMap<EventId, u32> = a.clone();
    for (id, n) in &b {
        *published.entry(*id).or_default() += n;
    }
    assert_eq!(written.len(), total);
    let missing = written
        .iter()
        .filter(|id| !published.contains_key(id))
        .count();
    let twice = published.values().filter(|n| **n > 1).count();
    assert_eq!(missing, 0, "events never published");
    assert_eq!(twice, 0, "events published more than once");
    assert_eq!(published.len(), total);
    assert!(!a.is_empty() && !b.is_empty(), "both relays took part");
    eprintln!(
        "{total} events by {writers} writers in {wrote_in:?}; relay one published {}, relay two {}",
        a.len(),
        b.len()
    );
}

// --- Dead letters -------------------------------------------------------------

fn letter(consumer: &str, envelope: &Envelope, error: &str, attempts: u32) -> NewDeadLetter {
    NewDeadLetter {
        consumer: consumer.to_owned(),
        envelope: envelope.clone(),
        error: error.to_owned(),
        attempts,
    }
}

#[tokio::test]
async fn parked_letters_can_be_listed_fetched_replayed_and_counted() {
    let Some(server) = server("dead letters").await else {
        return;
    };
    let store = PgDeadLetters::new(bus_db(&server).await);
    let (a, b) = (noted("ord_1", 1), noted("ord_2", 1));
    store.park(letter("shipping", &a, "boom", 3)).await.unwrap();
    store.park(letter("billing", &b, "bang", 5)).await.unwrap();
    let listed = store.list(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].event_id, b.id.to_string());
    assert_eq!(store.count_open().await.unwrap(), 2);
    let fetched = store.get(&listed[1].id).await.unwrap();
    assert_eq!(fetched.envelope.id, a.id);
    assert_eq!(
        (fetched.attempts, fetched.status),
        (3, DeadLetterStatus::Parked)
    );

    let requested = store.request_replay(&fetched.id).await.unwrap();
    assert_eq!(requested.status, DeadLetterStatus::ReplayRequested);
    assert_eq!(store.replay_requests().await.unwrap().len(), 1);
    store.mark_replayed(&fetched.id).await.unwrap();
    let replayed = store.get(&fetched.id).await.unwrap();
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert!(replayed.replayed_at.is_some());
    assert_eq!(store.count_open().await.unwrap(), 1);
    assert!(matches!(
        store.request_replay(&fetched.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.request_replay("dlq_unknown").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get("dlq_unknown").await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn parking_the_same_event_for_the_same_consumer_again_updates_its_letter() {
    let Some(server) = server("dead letters").await else {
        return;
    };
    let store = PgDeadLetters::new(bus_db(&server).await);
    let a = noted("ord_1", 1);
    store.park(letter("shipping", &a, "boom", 3)).await.unwrap();
    let id = store.list(10).await.unwrap()[0].id.clone();
    store.request_replay(&id).await.unwrap();
    store
        .park(letter("shipping", &a, "again", 1))
        .await
        .unwrap();
    let letters = store.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, id);
    assert_eq!(letters[0].error, "again");
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].status, DeadLetterStatus::Parked);
}

// --- Idempotency keys ---------------------------------------------------------

const LOCK_TTL: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(24 * 3600);

fn created() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("location".to_owned(), "/v1/orders/ord_1".to_owned())],
        body: b"{\"id\":\"ord_1\"}".to_vec(),
    }
}

async fn begin_at(
    store: &PgIdempotency,
    key: &str,
    fingerprint: &str,
    now: chrono::DateTime<Utc>,
) -> Begin {
    store
        .begin("cli_1", key, fingerprint, now, LOCK_TTL, RETENTION)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_starts_replays_mismatches_and_is_taken_over() {
    let Some(server) = server("idempotency").await else {
        return;
    };
    let store = PgIdempotency::new(service_db(&server).await);
    let now = Utc::now();
    assert_eq!(begin_at(&store, "k1", "fp-a", now).await, Begin::Started);
    assert_eq!(begin_at(&store, "k1", "fp-a", now).await, Begin::InFlight);
    assert_eq!(begin_at(&store, "k1", "fp-b", now).await, Begin::Mismatch);
    store
        .complete("cli_1", "k1", &created(), now)
        .await
        .unwrap();
    assert_eq!(
        begin_at(&store, "k1", "fp-a", now).await,
        Begin::Replay(created())
    );

    // A released in-flight key starts again; a completed one is kept.
    assert_eq!(begin_at(&store, "k2", "fp-a", now).await, Begin::Started);
    store.release("cli_1", "k2").await.unwrap();
    assert_eq!(begin_at(&store, "k2", "fp-a", now).await, Begin::Started);
    store.release("cli_1", "k1").await.unwrap();
    assert_eq!(
        begin_at(&store, "k1", "fp-a", now).await,
        Begin::Replay(created())
    );

    // A lock older than its TTL belongs to a request that died.
    let later = now + chrono::Duration::seconds(61);
    assert_eq!(begin_at(&store, "k2", "fp-a", later).await, Begin::Started);
    // A key older than the retention counts as new, even with another body.
    let much_later = now + chrono::Duration::hours(25);
    assert_eq!(
        begin_at(&store, "k1", "fp-b", much_later).await,
        Begin::Started
    );

    assert_eq!(
        store
            .purge(now + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_start_exactly_once() {
    let Some(server) = server("idempotency").await else {
        return;
    };
    let store = Arc::new(PgIdempotency::new(service_db(&server).await));
    let now = Utc::now();
    let attempts = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { begin_at(&store, "same", "fp", now).await })
    });
    let results: Vec<Begin> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|b| **b == Begin::Started).count(), 1);
    assert_eq!(
        results.iter().filter(|b| **b == Begin::InFlight).count(),
        15
    );
}
