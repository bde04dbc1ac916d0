//! The platform tables against real SQLite files: the outbox and inbox, the
//! dead letters and the idempotency keys, each through the trait its
//! platform crate defines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ordo_bus::{
    Consumer, DeadLetterStatus, DeadLetterStore, Envelope, EventContext, EventPayload, Handler,
    HandlerError, LocalBus, NewDeadLetter, OutboxStore, Relay, RetryPolicy,
};
use ordo_http::idempotency_store::{Begin, IdempotencyStore, StoredResponse};
use ordo_kernel::{EventId, StoreError};
use ordo_sqlite::{
    BUS_MIGRATIONS, Database, DatabaseOptions, MigrationSet, PLATFORM_MIGRATIONS,
    SqliteDeadLetters, SqliteIdempotency, SqliteOutbox, inbox_record, outbox_append,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
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

fn open(dir: &TempDir, file: &str, migrations: &[MigrationSet]) -> Database {
    Database::open(
        file,
        &dir.path().join(file),
        migrations,
        DatabaseOptions::default(),
    )
    .unwrap()
}

/// A service database: the outbox, inbox and idempotency tables.
fn service_db(dir: &TempDir) -> Database {
    open(dir, "service.db", &[PLATFORM_MIGRATIONS])
}

/// The bus database: the dead letters.
fn bus_db(dir: &TempDir) -> Database {
    open(dir, "bus.db", &[BUS_MIGRATIONS])
}

/// Appends `events` to the outbox in one command.
async fn append(db: &Database, events: &[Envelope]) {
    let events = events.to_vec();
    db.write(move |tx| events.iter().try_for_each(|e| outbox_append(tx, e)))
        .await
        .unwrap();
}

async fn record(db: &Database, consumer: &'static str, event_id: &'static str) -> bool {
    db.write(move |tx| inbox_record(tx, consumer, event_id))
        .await
        .unwrap()
}

async fn inbox_rows(db: &Database) -> i64 {
    db.read(|conn| {
        conn.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0))
            .map_err(ordo_sqlite::store_error)
    })
    .await
    .unwrap()
}

/// Whether an enabled `Notified` has been notified, without waiting.
fn has_fired(notified: Pin<&mut Notified<'_>>) -> bool {
    notified
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// Waits until `condition` holds, polling every few milliseconds, and fails
/// the test after 10 seconds.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- Outbox -----------------------------------------------------------------

#[tokio::test]
async fn committed_outbox_rows_are_claimed_in_order_and_only_once_while_leased() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let events = [noted("ord_1", 1), noted("ord_2", 1), noted("ord_1", 2)];
    append(&db, &events).await;
    let outbox = SqliteOutbox::new("orders", db);
    assert_eq!(outbox.backlog().await.unwrap(), 3);

    let first = outbox.claim(2).await.unwrap();
    let rest = outbox.claim(10).await.unwrap();
    let claimed: Vec<EventId> = first.iter().chain(&rest).map(|r| r.envelope.id).collect();
    assert_eq!(
        (first.len(), rest.len()),
        (2, 1),
        "a claim takes at most its limit"
    );
    assert_eq!(claimed, ids(&events));
    assert!(first.iter().chain(&rest).map(|r| r.seq).is_sorted());
    assert_eq!(rest[0].envelope.subject, "ord_1");
    assert_eq!(rest[0].envelope.decode::<Noted>().unwrap().n, 2);

    assert!(
        outbox.claim(10).await.unwrap().is_empty(),
        "leased rows are not claimed again"
    );
    // Leased is not published.
    assert_eq!(outbox.backlog().await.unwrap(), 3);
}

#[tokio::test]
async fn a_published_row_leaves_the_backlog_and_is_never_claimed_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let events = [noted("ord_1", 1), noted("ord_1", 2)];
    append(&db, &events).await;
    let outbox = SqliteOutbox::new("orders", db);

    let rows = outbox.claim(10).await.unwrap();
    outbox.mark_published(&[rows[0].seq]).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap(), 1);

    outbox.release(&[rows[1].seq]).await;
    let again = outbox.claim(10).await.unwrap();
    assert_eq!(
        again.iter().map(|r| r.envelope.id).collect::<Vec<_>>(),
        vec![events[1].id]
    );
    outbox.mark_published(&[again[0].seq]).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap(), 0);
    outbox.release(&[rows[0].seq, rows[1].seq]).await;
    assert!(outbox.claim(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn released_rows_can_be_claimed_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let events = [noted("ord_1", 1), noted("ord_1", 2)];
    append(&db, &events).await;
    let outbox = SqliteOutbox::new("orders", db);

    let rows = outbox.claim(10).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    outbox.release(&seqs).await;
    let again = outbox.claim(10).await.unwrap();
    assert_eq!(again.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
}

#[tokio::test]
async fn a_restarted_relay_can_claim_the_rows_a_crashed_one_had_leased() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let events = [noted("ord_1", 1)];
    append(&db, &events).await;

    let crashed = SqliteOutbox::new("orders", db.clone());
    assert_eq!(crashed.claim(10).await.unwrap().len(), 1);
    let restarted = SqliteOutbox::new("orders", db);
    let rows = restarted.claim(10).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.envelope.id).collect::<Vec<_>>(),
        ids(&events)
    );
}

#[tokio::test]
async fn the_wakeup_fires_after_a_commit_that_wrote_outbox_rows_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let wakeup = SqliteOutbox::new("orders", db.clone()).wakeup();
    let notified = wakeup.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    // `write` returns after the commit, and the writer notifies before it
    // answers: no waiting is needed to see the wake-up, or its absence.
    assert!(record(&db, "shipping", "evt_1").await);
    assert!(
        !has_fired(notified.as_mut()),
        "a commit without outbox rows wakes nobody"
    );

    append(&db, &[noted("ord_1", 1)]).await;
    assert!(has_fired(notified.as_mut()));
}

#[tokio::test]
async fn an_outbox_row_appended_by_a_failed_command_is_rolled_back_and_not_announced() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let outbox = SqliteOutbox::new("orders", db.clone());
    let wakeup = outbox.wakeup();
    let notified = wakeup.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    let event = noted("ord_1", 1);
    let appended = event.clone();
    let result = db
        .write(move |tx| {
            outbox_append(tx, &appended)?;
            Err::<(), _>(StoreError::Conflict("rejected after appending".to_owned()))
        })
        .await;

    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert_eq!(outbox.backlog().await.unwrap(), 0);
    assert!(outbox.event(&event.id.to_string()).await.unwrap().is_none());
    assert!(!has_fired(notified.as_mut()));
}

#[tokio::test]
async fn events_for_a_subject_come_in_outbox_order_published_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let (first, other, second) = (noted("ord_1", 1), noted("ord_2", 1), noted("ord_1", 2));
    for event in [&first, &other, &second] {
        append(&db, std::slice::from_ref(event)).await;
    }
    let outbox = SqliteOutbox::new("orders", db);
    let rows = outbox.claim(1).await.unwrap();
    outbox.mark_published(&[rows[0].seq]).await.unwrap();

    let events = outbox.events_for_subject("ord_1").await.unwrap();
    assert_eq!(ids(&events), vec![first.id, second.id]);
    assert_eq!(events[1].sequence, Some(2));
    assert_eq!(events[1].correlationid, "req-test");
    assert_eq!(
        ids(&outbox.events_for_subject("ord_2").await.unwrap()),
        vec![other.id]
    );
    assert!(
        outbox
            .events_for_subject("ord_none")
            .await
            .unwrap()
            .is_empty()
    );
}

// --- Inbox ------------------------------------------------------------------

#[tokio::test]
async fn the_inbox_records_an_event_once_per_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);

    assert!(record(&db, "shipping", "evt_1").await);
    assert!(!record(&db, "shipping", "evt_1").await, "already applied");
    assert!(record(&db, "billing", "evt_1").await, "another consumer");
    assert!(record(&db, "shipping", "evt_2").await, "another event");
    assert_eq!(inbox_rows(&db).await, 3);
}

#[tokio::test]
async fn a_command_that_fails_after_recording_leaves_no_inbox_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);

    let result = db
        .write(|tx| {
            let first_time = inbox_record(tx, "shipping", "evt_1")?;
            assert!(first_time);
            Err::<(), _>(StoreError::Conflict("the effect failed".to_owned()))
        })
        .await;

    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert_eq!(inbox_rows(&db).await, 0);
    assert!(
        record(&db, "shipping", "evt_1").await,
        "the retry applies it"
    );
}

#[tokio::test]
async fn in_a_group_commit_only_the_failed_commands_lose_their_inbox_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);

    // Sent together so that the writer commits them in groups.
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |tx| {
                    inbox_record(tx, "shipping", &format!("evt_{n}"))?;
                    if n % 4 == 0 {
                        return Err(StoreError::Conflict("the effect failed".to_owned()));
                    }
                    Ok(())
                })
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 30);
    assert_eq!(inbox_rows(&db).await, 30);

    for n in 0..40 {
        let event_id = format!("evt_{n}");
        let fresh = db
            .write(move |tx| inbox_record(tx, "shipping", &event_id))
            .await
            .unwrap();
        assert_eq!(fresh, n % 4 == 0, "event {n}");
    }
}

// --- Dead letters -----------------------------------------------------------

fn letter(consumer: &str, envelope: &Envelope, error: &str, attempts: u32) -> NewDeadLetter {
    NewDeadLetter {
        consumer: consumer.to_owned(),
        envelope: envelope.clone(),
        error: error.to_owned(),
        attempts,
    }
}

#[tokio::test]
async fn parked_letters_can_be_listed_fetched_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDeadLetters::new(bus_db(&dir));
    let (a, b) = (noted("ord_1", 1), noted("ord_2", 1));
    let before = Utc::now();
    store.park(letter("shipping", &a, "boom", 3)).await.unwrap();
    store.park(letter("billing", &b, "bang", 8)).await.unwrap();

    let listed = store.list(10).await.unwrap();
    let consumers: Vec<&str> = listed.iter().map(|l| l.consumer.as_str()).collect();
    assert_eq!(consumers, vec!["billing", "shipping"], "the latest first");
    assert_eq!(store.list(1).await.unwrap().len(), 1);

    let shipping = store.get(&listed[1].id).await.unwrap();
    assert!(shipping.id.starts_with("dlq_"));
    assert_eq!(shipping.event_id, a.id.to_string());
    assert_eq!(shipping.event_type, Noted::TYPE);
    assert_eq!(shipping.subject, "ord_1");
    assert_eq!(shipping.error, "boom");
    assert_eq!(shipping.attempts, 3);
    assert_eq!(shipping.status, DeadLetterStatus::Parked);
    assert!(shipping.parked_at >= before && shipping.parked_at <= Utc::now());
    assert_eq!(shipping.replayed_at, None);
    assert_eq!(shipping.envelope.id, a.id);
    assert_eq!(shipping.envelope.decode::<Noted>().unwrap().n, 1);

    assert!(matches!(
        store.get("dlq_unknown").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.count_open().await.unwrap(), 2);
}

#[tokio::test]
async fn a_replay_is_refused_for_an_unknown_letter_and_for_one_already_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDeadLetters::new(bus_db(&dir));
    assert!(matches!(
        store.request_replay("dlq_unknown").await,
        Err(StoreError::NotFound)
    ));

    store
        .park(letter("shipping", &noted("ord_1", 1), "boom", 3))
        .await
        .unwrap();
    let id = store.list(1).await.unwrap()[0].id.clone();
    let requested = store.request_replay(&id).await.unwrap();
    assert_eq!(requested.status, DeadLetterStatus::ReplayRequested);
    let requests = store.replay_requests().await.unwrap();
    assert_eq!(
        requests.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    assert_eq!(
        store.count_open().await.unwrap(),
        1,
        "awaiting replay is still open"
    );

    store.mark_replayed(&id).await.unwrap();
    let replayed = store.get(&id).await.unwrap();
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert!(replayed.replayed_at.is_some());
    assert!(store.replay_requests().await.unwrap().is_empty());
    assert_eq!(store.count_open().await.unwrap(), 0);
    assert!(matches!(
        store.request_replay(&id).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn parking_the_same_event_for_the_same_consumer_again_updates_its_letter() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDeadLetters::new(bus_db(&dir));
    let event = noted("ord_1", 1);
    store
        .park(letter("shipping", &event, "boom", 3))
        .await
        .unwrap();
    let id = store.list(10).await.unwrap()[0].id.clone();
    store.request_replay(&id).await.unwrap();

    // The replay failed too.
    store
        .park(letter("shipping", &event, "boom again", 2))
        .await
        .unwrap();
    let letters = store.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, id);
    assert_eq!(letters[0].error, "boom again");
    assert_eq!(letters[0].attempts, 5);
    assert_eq!(letters[0].status, DeadLetterStatus::Parked);

    // Another consumer's failure on the same event is its own letter.
    store
        .park(letter("billing", &event, "bang", 1))
        .await
        .unwrap();
    assert_eq!(store.list(10).await.unwrap().len(), 2);
    assert_eq!(store.count_open().await.unwrap(), 2);
}

// --- Idempotency keys -------------------------------------------------------

const SCOPE: &str = "orders";
const LOCK_TTL: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(24 * 3600);

fn idempotency(dir: &TempDir) -> SqliteIdempotency {
    SqliteIdempotency::new(service_db(dir))
}

async fn begin_at(
    store: &SqliteIdempotency,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Begin {
    store
        .begin(SCOPE, key, fingerprint, now, LOCK_TTL, RETENTION)
        .await
        .unwrap()
}

async fn begin(store: &SqliteIdempotency, key: &str, fingerprint: &str) -> Begin {
    begin_at(store, key, fingerprint, Utc::now()).await
}

fn created() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), "/v1/orders/ord_1".to_owned()),
        ],
        body: b"{\"id\":\"ord_1\"}\n\xff\x00".to_vec(),
    }
}

#[tokio::test]
async fn a_new_key_starts_and_while_in_flight_is_refused_or_mismatched() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);

    assert_eq!(begin(&store, "key-1", "fp-a").await, Begin::Started);
    assert_eq!(begin(&store, "key-1", "fp-a").await, Begin::InFlight);
    assert_eq!(begin(&store, "key-1", "fp-b").await, Begin::Mismatch);
    assert_eq!(
        begin(&store, "key-2", "fp-a").await,
        Begin::Started,
        "keys are independent"
    );
    let other_scope = store
        .begin("payments", "key-1", "fp-a", Utc::now(), LOCK_TTL, RETENTION)
        .await
        .unwrap();
    assert_eq!(other_scope, Begin::Started, "scopes are independent");
}

#[tokio::test]
async fn a_completed_key_replays_its_response_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);
    assert_eq!(begin(&store, "key-1", "fp-a").await, Begin::Started);
    store
        .complete(SCOPE, "key-1", &created(), Utc::now())
        .await
        .unwrap();

    assert_eq!(
        begin(&store, "key-1", "fp-a").await,
        Begin::Replay(created())
    );
    assert_eq!(
        begin(&store, "key-1", "fp-a").await,
        Begin::Replay(created()),
        "as often as asked"
    );
    assert_eq!(begin(&store, "key-1", "fp-b").await, Begin::Mismatch);
}

#[tokio::test]
async fn a_released_key_can_start_again_but_a_completed_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);
    assert_eq!(begin(&store, "key-1", "fp-a").await, Begin::Started);
    store.release(SCOPE, "key-1").await.unwrap();
    assert_eq!(begin(&store, "key-1", "fp-b").await, Begin::Started);

    store
        .complete(SCOPE, "key-1", &created(), Utc::now())
        .await
        .unwrap();
    store.release(SCOPE, "key-1").await.unwrap();
    assert_eq!(
        begin(&store, "key-1", "fp-b").await,
        Begin::Replay(created())
    );
}

#[tokio::test]
async fn a_lock_older_than_its_ttl_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);
    let now = Utc::now();
    let then = now - chrono::Duration::minutes(10);
    assert_eq!(
        begin_at(&store, "key-1", "fp-a", then).await,
        Begin::Started
    );
    assert_eq!(
        begin_at(
            &store,
            "key-1",
            "fp-a",
            then + chrono::Duration::seconds(30)
        )
        .await,
        Begin::InFlight,
        "within its ttl the lock holds"
    );

    assert_eq!(begin_at(&store, "key-1", "fp-a", now).await, Begin::Started);
    assert_eq!(
        begin_at(&store, "key-1", "fp-a", now).await,
        Begin::InFlight,
        "the new holder's lock is fresh"
    );
}

#[tokio::test]
async fn a_key_older_than_its_retention_counts_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);
    let long_ago = Utc::now() - chrono::Duration::days(2);
    assert_eq!(
        begin_at(&store, "key-1", "fp-a", long_ago).await,
        Begin::Started
    );
    store
        .complete(SCOPE, "key-1", &created(), long_ago)
        .await
        .unwrap();

    assert_eq!(begin(&store, "key-1", "fp-b").await, Begin::Started);
    assert_eq!(begin(&store, "key-1", "fp-b").await, Begin::InFlight);
}

#[tokio::test]
async fn purge_deletes_the_keys_created_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = idempotency(&dir);
    let now = Utc::now();
    assert_eq!(
        begin_at(&store, "old", "fp-a", now - chrono::Duration::days(2)).await,
        Begin::Started
    );
    assert_eq!(begin_at(&store, "new", "fp-a", now).await, Begin::Started);

    assert_eq!(
        store.purge(now - chrono::Duration::days(1)).await.unwrap(),
        1
    );
    // Even with a retention that would still cover it, the old key is gone.
    let old = store
        .begin(
            SCOPE,
            "old",
            "fp-b",
            now,
            LOCK_TTL,
            Duration::from_secs(7 * 24 * 3600),
        )
        .await
        .unwrap();
    assert_eq!(old, Begin::Started);
    assert_eq!(begin_at(&store, "new", "fp-a", now).await, Begin::InFlight);
}

// --- Everything together ----------------------------------------------------

/// Records each event in the inbox, as a real consumer does with its effect,
/// and fails on the subject `ord_poison`.
struct InboxHandler {
    db: Database,
    handled: Mutex<Vec<EventId>>,
}

#[async_trait::async_trait]
impl Handler for InboxHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if event.subject == "ord_poison" {
            return Err(anyhow::anyhow!("cannot ship {}", event.subject).into());
        }
        let event_id = event.id.to_string();
        self.db
            .write(move |tx| inbox_record(tx, "shipping", &event_id))
            .await?;
        self.handled.lock().unwrap().push(event.id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_sqlite_delivers_committed_events_and_parks_a_poison_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let outbox = Arc::new(SqliteOutbox::new("orders", db.clone()));
    let dead_letters = Arc::new(SqliteDeadLetters::new(bus_db(&dir)));
    let handler = Arc::new(InboxHandler {
        db: db.clone(),
        handled: Mutex::default(),
    });
    let bus = LocalBus::new(
        vec![Consumer::new("shipping", &[Noted::TYPE], handler.clone())],
        dead_letters.clone(),
        RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        CancellationToken::new(),
    );
    let relay = Relay::new(outbox.clone(), Arc::new(bus)).spawn(Duration::from_secs(10));

    let healthy: Vec<Envelope> = (0..10).map(|n| noted("ord_1", n)).collect();
    for event in &healthy {
        append(&db, std::slice::from_ref(event)).await;
    }
    let poison = noted("ord_poison", 1);
    append(&db, std::slice::from_ref(&poison)).await;

    eventually("the outbox is empty", || {
        let outbox = outbox.clone();
        async move { outbox.backlog().await.unwrap() == 0 }
    })
    .await;
    let mut handled = handler.handled.lock().unwrap().clone();
    let mut expected = ids(&healthy);
    handled.sort();
    expected.sort();
    assert_eq!(handled, expected);
    assert_eq!(inbox_rows(&db).await, 10);
    let letters = dead_letters.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, poison.id.to_string());
    assert_eq!(letters[0].error, "cannot ship ord_poison");
    assert_eq!(letters[0].attempts, 2);
    relay.drain().await;
}

#[tokio::test]
async fn the_purge_keeps_unpublished_rows_and_recent_inbox_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = service_db(&dir);
    let events = [noted("ord_1", 1), noted("ord_1", 2)];
    append(&db, &events).await;
    assert!(record(&db, "c", "evt_a").await);
    let outbox = SqliteOutbox::new("orders", db.clone());
    let rows = outbox.claim(10).await.unwrap();
    outbox.mark_published(&[rows[0].seq]).await.unwrap();

    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(
        outbox.purge(long_ago, long_ago).await.unwrap(),
        (0, 0),
        "nothing old yet"
    );

    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(outbox.purge(later, later).await.unwrap(), (1, 1));
    // The unpublished row stays, and stays claimable.
    assert_eq!(outbox.backlog().await.unwrap(), 1);
    assert_eq!(outbox.events_for_subject("ord_1").await.unwrap().len(), 1);
    assert_eq!(inbox_rows(&db).await, 0);
}
