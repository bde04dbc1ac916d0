//! The payment store's contract, checked on SQLite and on PostgreSQL with
//! the same tests: each behaviour is an `async fn(Backend)` below, run on
//! both backends by `on_both_backends!`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::backend::{Backend, Kind};
use common::{dec, eur, new_client, new_order};
use ordo_bus::{Envelope, EventContext, EventPayload};
use ordo_events::{PaymentRefunded, PaymentSucceeded};
use ordo_kernel::{EventId, OrderId, StoreError};
use ordo_payments::PaymentStore;
use ordo_payments::domain::{
    Operation, Outcome, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus,
};
use ordo_payments::store::{
    AttemptResult, Created, InboxKey, NewAttempt, PaymentTotals, PaymentWrite, Saved,
};
use ulid::Ulid;

const CONSUMER: &str = "payments.orders";

// --- Helpers ----------------------------------------------------------------

/// Now, at the microsecond precision both backends keep.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap()
}

fn payment_of(order: OrderId, total: &str) -> Payment {
    Payment::new(
        PaymentId::from_ulid(Ulid::new()),
        order,
        new_client(),
        dec(total),
        eur(),
        "tok_visa".to_owned(),
        now(),
    )
}

fn attempt(payment: &Payment, operation: Operation, amount: Option<&str>) -> NewAttempt {
    NewAttempt {
        payment_id: payment.id,
        operation,
        idempotency_key: format!("{}_{}", operation.as_str(), Ulid::new()),
        amount: amount.map(dec),
        refund_id: None,
        started_at: now(),
    }
}

fn finished(payment: &Payment, seq: i64, outcome: Outcome, detail: Option<&str>) -> AttemptResult {
    AttemptResult {
        payment_id: payment.id,
        seq,
        outcome,
        detail: detail.map(str::to_owned),
        at: now(),
    }
}

fn fresh_inbox_key() -> InboxKey {
    InboxKey {
        consumer: CONSUMER.to_owned(),
        event_id: EventId::from_ulid(Ulid::new()).to_string(),
    }
}

fn event_about<E: EventPayload>(order: OrderId, payload: &E) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        now(),
        order.to_string(),
        None,
        &EventContext::from_request("req-test"),
        payload,
    )
    .unwrap()
}

fn succeeded_event(payment: &Payment) -> Envelope {
    event_about(
        payment.order_id,
        &PaymentSucceeded {
            order_id: payment.order_id,
            payment_id: payment.id.to_string(),
            amount: payment.captured,
            currency: payment.currency,
        },
    )
}

/// Creates a pending payment of `total` for a new order; returns it.
async fn create(b: &Backend, total: &str) -> Payment {
    let payment = payment_of(new_order(), total);
    let first = attempt(&payment, Operation::Authorize, Some(total));
    let created = b.store.create(payment.clone(), first).await.unwrap();
    assert_eq!(created, Created::Created { attempt: 1 });
    payment
}

/// A payment authorized and captured for its whole amount, stored.
async fn captured(b: &Backend, total: &str) -> Payment {
    let pending = create(b, total).await;
    let authorized = pending
        .authorize(pending.amount, "auth_1".to_owned(), now())
        .unwrap();
    let saved = b
        .store
        .save(PaymentWrite {
            payment: Some((authorized.clone(), pending.version)),
            finished: Some(finished(&pending, 1, Outcome::Succeeded, None)),
            next_attempt: Some(attempt(&authorized, Operation::Capture, Some(total))),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        saved,
        Saved::Done {
            next_attempt: Some(2)
        }
    );
    let captured = authorized
        .capture(authorized.authorized, "cap_1".to_owned(), now())
        .unwrap();
    b.store
        .save(PaymentWrite {
            payment: Some((captured.clone(), authorized.version)),
            finished: Some(finished(&authorized, 2, Outcome::Succeeded, None)),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    captured
}

async fn published_types(b: &Backend, order: OrderId) -> Vec<String> {
    b.outbox
        .events_for_subject(&order.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

// --- Creating and reading ---------------------------------------------------

async fn a_new_payment_is_stored_with_its_first_attempt(b: Backend) {
    let payment = payment_of(new_order(), "39.98");
    let first = attempt(&payment, Operation::Authorize, Some("39.98"));
    let created = b
        .store
        .create(payment.clone(), first.clone())
        .await
        .unwrap();
    assert_eq!(created, Created::Created { attempt: 1 });

    assert_eq!(b.store.get(payment.id).await.unwrap(), payment);
    assert_eq!(
        b.store.for_order(payment.order_id).await.unwrap(),
        Some(payment.clone())
    );
    let attempts = b.store.attempts(payment.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let stored = &attempts[0];
    assert_eq!(stored.payment_id, payment.id);
    assert_eq!(stored.seq, 1);
    assert_eq!(stored.operation, Operation::Authorize);
    assert_eq!(stored.idempotency_key, first.idempotency_key);
    assert_eq!(stored.amount, Some(dec("39.98")));
    assert_eq!(stored.refund_id, None);
    assert_eq!(stored.outcome, None);
    assert_eq!(stored.detail, None);
    assert_eq!(stored.started_at, first.started_at);
    assert_eq!(stored.finished_at, None);
    assert!(b.store.refunds(payment.id).await.unwrap().is_empty());
}

async fn a_second_payment_for_an_order_finds_the_first_and_writes_nothing(b: Backend) {
    let first = create(&b, "10.00").await;
    let second = payment_of(first.order_id, "10.00");
    let created = b
        .store
        .create(
            second.clone(),
            attempt(&second, Operation::Authorize, Some("10.00")),
        )
        .await
        .unwrap();
    assert_eq!(created, Created::Existing(Box::new(first.clone())));
    assert!(matches!(
        b.store.get(second.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(b.store.attempts(second.id).await.unwrap().is_empty());
    assert_eq!(b.store.attempts(first.id).await.unwrap().len(), 1);
}

async fn a_cancelled_order_gets_no_payment(b: Backend) {
    let order = new_order();
    let found = b
        .store
        .record_cancellation(order, "customer_cancelled", now())
        .await
        .unwrap();
    assert_eq!(found, None);
    let payment = payment_of(order, "5.00");
    let created = b
        .store
        .create(
            payment.clone(),
            attempt(&payment, Operation::Authorize, Some("5.00")),
        )
        .await
        .unwrap();
    assert_eq!(created, Created::OrderCancelled);
    assert_eq!(b.store.for_order(order).await.unwrap(), None);
    assert!(matches!(
        b.store.get(payment.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn an_unknown_payment_is_not_found_and_has_nothing_recorded(b: Backend) {
    let id = PaymentId::from_ulid(Ulid::new());
    assert!(matches!(b.store.get(id).await, Err(StoreError::NotFound)));
    assert_eq!(b.store.for_order(new_order()).await.unwrap(), None);
    assert_eq!(b.store.totals(new_order()).await.unwrap(), None);
    assert!(b.store.attempts(id).await.unwrap().is_empty());
    assert!(b.store.refunds(id).await.unwrap().is_empty());
    assert!(!b.store.is_cancelled(new_order()).await.unwrap());
    assert!(b.store.all_totals().await.unwrap().is_empty());
}

async fn decimal_amounts_keep_their_value(b: Backend) {
    let payment = create(&b, "1234567.89").await;
    let small = create(&b, "0.01").await;
    assert_eq!(
        b.store.get(payment.id).await.unwrap().amount,
        dec("1234567.89")
    );
    let stored = b.store.get(small.id).await.unwrap();
    assert_eq!(stored.amount, dec("0.01"));
    assert_eq!(stored.amount.to_string(), "0.01");
    assert_eq!(stored.captured, dec("0"));
}

// --- Attempts ---------------------------------------------------------------

async fn attempts_are_numbered_per_payment_and_listed_in_order(b: Backend) {
    let one = create(&b, "20.00").await;
    let two = create(&b, "30.00").await;
    let refund = RefundId::from_ulid(Ulid::new());
    let second = b
        .store
        .record_attempt(attempt(&one, Operation::Authorize, Some("20.00")))
        .await
        .unwrap();
    let third = b
        .store
        .record_attempt(NewAttempt {
            refund_id: Some(refund),
            ..attempt(&one, Operation::Refund, Some("5.00"))
        })
        .await
        .unwrap();
    let void = b
        .store
        .record_attempt(attempt(&one, Operation::Void, None))
        .await
        .unwrap();
    assert_eq!((second, third, void), (2, 3, 4));
    assert_eq!(
        b.store
            .record_attempt(attempt(&two, Operation::Authorize, Some("30.00")))
            .await
            .unwrap(),
        2
    );

    let attempts = b.store.attempts(one.id).await.unwrap();
    let seqs: Vec<i64> = attempts.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(attempts[2].operation, Operation::Refund);
    assert_eq!(attempts[2].refund_id, Some(refund));
    assert_eq!(attempts[2].amount, Some(dec("5.00")));
    assert_eq!(attempts[3].operation, Operation::Void);
    assert_eq!(attempts[3].amount, None);
}

async fn an_attempt_of_an_unknown_payment_is_refused(b: Backend) {
    let ghost = payment_of(new_order(), "1.00");
    let result = b
        .store
        .record_attempt(attempt(&ghost, Operation::Authorize, Some("1.00")))
        .await;
    assert!(matches!(result, Err(StoreError::Other(_))), "{result:?}");
    assert!(b.store.attempts(ghost.id).await.unwrap().is_empty());
}

async fn a_finished_attempt_keeps_its_outcome_and_detail(b: Backend) {
    let payment = create(&b, "8.00").await;
    let result = finished(&payment, 1, Outcome::Unavailable, Some("timeout"));
    let saved = b
        .store
        .save(PaymentWrite {
            finished: Some(result.clone()),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(saved, Saved::Done { next_attempt: None });
    let attempts = b.store.attempts(payment.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(Outcome::Unavailable));
    assert_eq!(attempts[0].detail.as_deref(), Some("timeout"));
    assert_eq!(attempts[0].finished_at, Some(result.at));
    // The payment itself was not touched.
    assert_eq!(b.store.get(payment.id).await.unwrap(), payment);
}

// --- Saving -----------------------------------------------------------------

async fn a_save_writes_the_payment_attempts_and_events_together(b: Backend) {
    let pending = create(&b, "39.98").await;
    let authorized = pending
        .authorize(pending.amount, "auth_1".to_owned(), now())
        .unwrap();
    let saved = b
        .store
        .save(PaymentWrite {
            payment: Some((authorized.clone(), pending.version)),
            finished: Some(finished(&pending, 1, Outcome::Succeeded, None)),
            next_attempt: Some(attempt(&authorized, Operation::Capture, Some("39.98"))),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        saved,
        Saved::Done {
            next_attempt: Some(2)
        }
    );
    let captured = authorized
        .capture(dec("39.98"), "cap_1".to_owned(), now())
        .unwrap();
    let inbox = fresh_inbox_key();
    b.store
        .save(PaymentWrite {
            payment: Some((captured.clone(), authorized.version)),
            finished: Some(finished(&authorized, 2, Outcome::Succeeded, None)),
            events: vec![succeeded_event(&captured)],
            inbox: Some(inbox.clone()),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();

    let stored = b.store.get(pending.id).await.unwrap();
    assert_eq!(stored, captured);
    assert_eq!(stored.status, PaymentStatus::Captured);
    assert_eq!(stored.version, 3);
    assert_eq!(stored.capture_ref.as_deref(), Some("cap_1"));
    let outcomes: Vec<_> = b
        .store
        .attempts(pending.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.operation, a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Operation::Authorize, Some(Outcome::Succeeded)),
            (Operation::Capture, Some(Outcome::Succeeded)),
        ]
    );
    assert!(b.store.is_processed(&inbox).await.unwrap());
    assert_eq!(
        published_types(&b, pending.order_id).await,
        [PaymentSucceeded::TYPE]
    );
}

async fn a_save_against_a_stale_version_conflicts_and_writes_nothing(b: Backend) {
    let payment = captured(&b, "12.00").await;
    let stale_version = payment.version - 1;
    let refunded = payment.refund(dec("2.00"), now()).unwrap();
    let inbox = fresh_inbox_key();
    let attempts_before = b.store.attempts(payment.id).await.unwrap();
    let result = b
        .store
        .save(PaymentWrite {
            payment: Some((refunded, stale_version)),
            finished: Some(finished(&payment, 1, Outcome::Declined, Some("nope"))),
            next_attempt: Some(attempt(&payment, Operation::Refund, Some("2.00"))),
            refund: Some(Refund::new(
                RefundId::from_ulid(Ulid::new()),
                payment.id,
                dec("2.00"),
                "requested_by_admin",
                now(),
            )),
            events: vec![succeeded_event(&payment)],
            inbox: Some(inbox.clone()),
        })
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    assert_eq!(b.store.get(payment.id).await.unwrap(), payment);
    assert_eq!(b.store.attempts(payment.id).await.unwrap(), attempts_before);
    assert!(b.store.refunds(payment.id).await.unwrap().is_empty());
    assert!(!b.store.is_processed(&inbox).await.unwrap());
    assert!(published_types(&b, payment.order_id).await.is_empty());
}

async fn a_save_of_an_unknown_payment_conflicts(b: Backend) {
    let ghost = payment_of(new_order(), "3.00");
    let authorized = ghost.authorize(dec("3.00"), "auth".into(), now()).unwrap();
    let result = b
        .store
        .save(PaymentWrite {
            payment: Some((authorized, ghost.version)),
            ..PaymentWrite::default()
        })
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
}

async fn an_event_saved_twice_is_applied_once(b: Backend) {
    let payment = create(&b, "4.00").await;
    let failed = payment.fail("card_declined", now()).unwrap();
    let inbox = fresh_inbox_key();
    let write = || PaymentWrite {
        payment: Some((failed.clone(), payment.version)),
        finished: Some(finished(
            &payment,
            1,
            Outcome::Declined,
            Some("card_declined"),
        )),
        events: vec![succeeded_event(&payment)],
        inbox: Some(inbox.clone()),
        ..PaymentWrite::default()
    };
    assert_eq!(
        b.store.save(write()).await.unwrap(),
        Saved::Done { next_attempt: None }
    );
    // The redelivery carries the version it read before the first write:
    // the inbox answers before the version is checked.
    assert_eq!(b.store.save(write()).await.unwrap(), Saved::Duplicate);
    assert_eq!(b.store.get(payment.id).await.unwrap(), failed);
    assert_eq!(published_types(&b, payment.order_id).await.len(), 1);
}

async fn refunds_are_recorded_pending_then_settled_and_listed_in_id_order(b: Backend) {
    let payment = captured(&b, "50.00").await;
    let first = Refund::new(
        RefundId::from_ulid(Ulid::new()),
        payment.id,
        dec("10.00"),
        "requested_by_admin",
        now(),
    );
    let saved = b
        .store
        .save(PaymentWrite {
            refund: Some(first.clone()),
            next_attempt: Some(NewAttempt {
                refund_id: Some(first.id),
                ..attempt(&payment, Operation::Refund, Some("10.00"))
            }),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        saved,
        Saved::Done {
            next_attempt: Some(3)
        }
    );
    assert_eq!(
        b.store.refunds(payment.id).await.unwrap(),
        vec![first.clone()]
    );

    let settled = first.succeed("rfd_1".to_owned(), now());
    let partly = payment.refund(dec("10.00"), now()).unwrap();
    b.store
        .save(PaymentWrite {
            payment: Some((partly.clone(), payment.version)),
            finished: Some(finished(&payment, 3, Outcome::Succeeded, None)),
            refund: Some(settled.clone()),
            events: vec![event_about(
                payment.order_id,
                &PaymentRefunded {
                    order_id: payment.order_id,
                    payment_id: payment.id.to_string(),
                    refund_id: settled.id.to_string(),
                    amount: settled.amount,
                    currency: payment.currency,
                    reason: settled.reason.clone(),
                },
            )],
            ..PaymentWrite::default()
        })
        .await
        .unwrap();

    let second = Refund::new(
        RefundId::from_ulid(Ulid::new()),
        payment.id,
        dec("40.00"),
        "order_cancelled",
        now(),
    );
    let declined = second.fail("insufficient_funds", now());
    b.store
        .save(PaymentWrite {
            refund: Some(declined.clone()),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();

    let refunds = b.store.refunds(payment.id).await.unwrap();
    assert_eq!(refunds, [settled.clone(), declined]);
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(refunds[0].gateway_ref.as_deref(), Some("rfd_1"));
    assert_eq!(refunds[1].status, RefundStatus::Failed);
    assert_eq!(
        refunds[1].failure_reason.as_deref(),
        Some("insufficient_funds")
    );
    let stored = b.store.get(payment.id).await.unwrap();
    assert_eq!(stored.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(stored.refunded, dec("10.00"));
    assert_eq!(
        published_types(&b, payment.order_id).await,
        [PaymentRefunded::TYPE]
    );
}

// --- Cancellations and the inbox --------------------------------------------

async fn a_cancellation_is_remembered_and_returns_the_payment_as_it_is(b: Backend) {
    let payment = captured(&b, "15.00").await;
    assert!(!b.store.is_cancelled(payment.order_id).await.unwrap());
    let found = b
        .store
        .record_cancellation(payment.order_id, "customer_cancelled", now())
        .await
        .unwrap();
    assert_eq!(found, Some(payment.clone()));
    assert!(b.store.is_cancelled(payment.order_id).await.unwrap());
    // Recording it again changes nothing and still answers.
    let again = b
        .store
        .record_cancellation(payment.order_id, "payment_failed", now())
        .await
        .unwrap();
    assert_eq!(again, Some(payment));
}

async fn an_event_marked_processed_is_marked_once(b: Backend) {
    let inbox = fresh_inbox_key();
    assert!(!b.store.is_processed(&inbox).await.unwrap());
    assert_eq!(
        b.store.mark_processed(inbox.clone()).await.unwrap(),
        Saved::Done { next_attempt: None }
    );
    assert!(b.store.is_processed(&inbox).await.unwrap());
    assert_eq!(
        b.store.mark_processed(inbox.clone()).await.unwrap(),
        Saved::Duplicate
    );
    // Another consumer's entry for the same event is its own.
    let other = InboxKey {
        consumer: "payments.other".to_owned(),
        ..inbox
    };
    assert!(!b.store.is_processed(&other).await.unwrap());
}

// --- Totals -----------------------------------------------------------------

async fn totals_say_what_each_order_moved_listed_by_order(b: Backend) {
    let paid = captured(&b, "25.00").await;
    let refunded = paid.refund(dec("5.00"), now()).unwrap();
    b.store
        .save(PaymentWrite {
            payment: Some((refunded.clone(), paid.version)),
            ..PaymentWrite::default()
        })
        .await
        .unwrap();
    let pending = create(&b, "7.50").await;

    let expected_paid = PaymentTotals {
        order_id: paid.order_id,
        payment_id: paid.id,
        status: PaymentStatus::PartiallyRefunded,
        currency: eur(),
        captured: dec("25.00"),
        refunded: dec("5.00"),
        capture_count: 1,
    };
    assert_eq!(
        b.store.totals(paid.order_id).await.unwrap(),
        Some(expected_paid.clone())
    );
    let expected_pending = PaymentTotals {
        order_id: pending.order_id,
        payment_id: pending.id,
        status: PaymentStatus::Pending,
        currency: eur(),
        captured: dec("0"),
        refunded: dec("0"),
        capture_count: 0,
    };
    let mut expected = vec![expected_paid, expected_pending];
    expected.sort_by_key(|t| t.order_id.to_string());
    assert_eq!(b.store.all_totals().await.unwrap(), expected);
}

// --- Several processes at once -----------------------------------------------

/// Two processes (each with its own connections on PostgreSQL) hold the
/// same authorized payment and both store a capture: one wins, the other
/// is told its version is gone.
async fn of_two_processes_capturing_one_payment_exactly_one_succeeds(b: Backend) {
    for _ in 0..5 {
        let pending = create(&b, "60.00").await;
        let authorized = pending
            .authorize(pending.amount, "auth".to_owned(), now())
            .unwrap();
        b.store
            .save(PaymentWrite {
                payment: Some((authorized.clone(), pending.version)),
                ..PaymentWrite::default()
            })
            .await
            .unwrap();
        let capture = |store: Arc<dyn PaymentStore>, reference: &str| {
            let next = authorized
                .capture(authorized.authorized, reference.to_owned(), now())
                .unwrap();
            let write = PaymentWrite {
                payment: Some((next.clone(), authorized.version)),
                events: vec![succeeded_event(&next)],
                ..PaymentWrite::default()
            };
            tokio::spawn(async move { store.save(write).await })
        };
        let one = capture(b.store.clone(), "cap_a");
        let two = capture(b.other_process.clone(), "cap_b");
        let results = [one.await.unwrap(), two.await.unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
            .count();
        assert_eq!((won, conflicts), (1, 1), "{results:?}");
        let totals = b.store.totals(pending.order_id).await.unwrap().unwrap();
        assert_eq!(totals.capture_count, 1);
        assert_eq!(totals.captured, dec("60.00"));
        assert_eq!(published_types(&b, pending.order_id).await.len(), 1);
    }
}

async fn concurrent_creations_for_one_order_make_one_payment(b: Backend) {
    let order = new_order();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 {
                b.store.clone()
            } else {
                b.other_process.clone()
            };
            let payment = payment_of(order, "9.99");
            let first = attempt(&payment, Operation::Authorize, Some("9.99"));
            tokio::spawn(async move { store.create(payment, first).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    let mut existing = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Created::Created { attempt } => {
                assert_eq!(attempt, 1);
                created += 1;
            }
            Created::Existing(p) => existing.push(p.id),
            Created::OrderCancelled => panic!("the order is not cancelled"),
        }
    }
    assert_eq!(created, 1);
    let stored = b.store.for_order(order).await.unwrap().unwrap();
    assert!(existing.iter().all(|id| *id == stored.id));
    assert_eq!(b.store.attempts(stored.id).await.unwrap().len(), 1);
}

async fn concurrent_attempts_of_one_payment_get_distinct_numbers(b: Backend) {
    let payment = create(&b, "3.33").await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 {
                b.store.clone()
            } else {
                b.other_process.clone()
            };
            let next = attempt(&payment, Operation::Capture, Some("3.33"));
            tokio::spawn(async move { store.record_attempt(next).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=11).collect::<Vec<i64>>());
}

/// A charge creating the payment and a cancellation racing for one order
/// see each other in a consistent order: either the payment exists and
/// the cancellation returns it, or the order is cancelled and no payment
/// is made.
async fn a_creation_and_a_cancellation_racing_agree_on_who_was_first(b: Backend) {
    for _ in 0..10 {
        let order = new_order();
        let payment = payment_of(order, "11.00");
        let first = attempt(&payment, Operation::Authorize, Some("11.00"));
        let store = b.store.clone();
        let create = tokio::spawn(async move { store.create(payment, first).await.unwrap() });
        let other = b.other_process.clone();
        let cancel = tokio::spawn(async move {
            other
                .record_cancellation(order, "customer_cancelled", now())
                .await
                .unwrap()
        });
        let (created, seen) = (create.await.unwrap(), cancel.await.unwrap());
        match created {
            Created::Created { .. } => assert!(seen.is_some(), "the payment was missed"),
            Created::OrderCancelled => {
                assert!(seen.is_none());
                assert_eq!(b.store.for_order(order).await.unwrap(), None);
            }
            Created::Existing(_) => panic!("nothing existed"),
        }
    }
}

on_both_backends!(
    a_new_payment_is_stored_with_its_first_attempt,
    a_second_payment_for_an_order_finds_the_first_and_writes_nothing,
    a_cancelled_order_gets_no_payment,
    an_unknown_payment_is_not_found_and_has_nothing_recorded,
    decimal_amounts_keep_their_value,
    attempts_are_numbered_per_payment_and_listed_in_order,
    an_attempt_of_an_unknown_payment_is_refused,
    a_finished_attempt_keeps_its_outcome_and_detail,
    a_save_writes_the_payment_attempts_and_events_together,
    a_save_against_a_stale_version_conflicts_and_writes_nothing,
    a_save_of_an_unknown_payment_conflicts,
    an_event_saved_twice_is_applied_once,
    refunds_are_recorded_pending_then_settled_and_listed_in_id_order,
    a_cancellation_is_remembered_and_returns_the_payment_as_it_is,
    an_event_marked_processed_is_marked_once,
    totals_say_what_each_order_moved_listed_by_order,
    of_two_processes_capturing_one_payment_exactly_one_succeeds,
    concurrent_creations_for_one_order_make_one_payment,
    concurrent_attempts_of_one_payment_get_distinct_numbers,
    a_creation_and_a_cancellation_racing_agree_on_who_was_first,
);

// --- PostgreSQL only: the invariants as constraints ---------------------------

/// On PostgreSQL the money invariants are also CHECK constraints, so a
/// writer that skips the domain rules cannot break them. (SQLite keeps
/// amounts as text and relies on the domain alone.)
mod postgres_constraints {
    use super::*;

    async fn refused(b: &Backend, payment: &Payment, change: impl Fn(&mut Payment)) {
        let mut bad = payment.clone();
        bad.version += 1;
        change(&mut bad);
        let result = b
            .store
            .save(PaymentWrite {
                payment: Some((bad, payment.version)),
                ..PaymentWrite::default()
            })
            .await;
        assert!(matches!(result, Err(StoreError::Other(_))), "{result:?}");
        assert_eq!(b.store.get(payment.id).await.unwrap(), *payment);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn amounts_beyond_the_step_before_and_a_second_capture_are_refused() {
        let Some(b) = super::common::backend::postgres().await else {
            return;
        };
        assert_eq!(b.kind, Kind::Postgres);
        let payment = captured(&b, "20.00").await;
        refused(&b, &payment, |p| p.captured = dec("20.01")).await;
        refused(&b, &payment, |p| p.refunded = dec("20.01")).await;
        refused(&b, &payment, |p| p.capture_count = 2).await;
        refused(&b, &payment, |p| p.refunded = dec("-1")).await;
    }
}
