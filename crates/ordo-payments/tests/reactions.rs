//! The payments reactions against a real store (each test runs on SQLite
//! and on PostgreSQL) and the simulator on a real port: events in, gateway
//! calls and outbox events out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::Utc;
use common::backend::Backend;
use common::{
    Harness, cancelled, closed_port, confirmed, dec, fast_gateway, harness_on, new_client,
    new_order, simulator_and_client,
};
use ordo_bus::{EventContext, EventPayload};
use ordo_events::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use ordo_http::{Principal, Role};
use ordo_kernel::OrderId;
use ordo_payments::domain::{Operation, Outcome, PaymentStatus, RefundStatus};
use ordo_payments::gateway::{
    Authorization, AuthorizeRequest, Capture, CaptureRequest, GatewayRefund, RefundRequest,
    VoidRequest, Voided,
};
use ordo_payments::service::{PaymentError, RefundAmount};
use ordo_payments::simulator::{TOK_DECLINED, TOK_TIMEOUT, TOK_TRANSIENT, TOK_VISA};
use ordo_payments::{Gateway, GatewayError, HttpGateway, PaymentsConfig};

async fn payment_of(h: &Harness, order: OrderId) -> ordo_payments::domain::Payment {
    h.store.for_order(order).await.unwrap().expect("a payment")
}

async fn a_confirmed_order_is_captured_and_payment_succeeded_is_published(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "39.98", TOK_VISA))
        .await
        .unwrap();

    let events = h.published(order).await;
    assert_eq!(events.len(), 1);
    let succeeded = events[0].decode::<PaymentSucceeded>().unwrap();
    assert_eq!(succeeded.amount, dec("39.98"));
    assert_eq!(succeeded.order_id, order);
    assert_eq!(events[0].actor.as_deref(), Some("system:payments"));
    assert_eq!(events[0].correlationid, "req-test");

    let payment = payment_of(&h, order).await;
    assert_eq!(payment.status, PaymentStatus::Captured);
    assert_eq!(succeeded.payment_id, payment.id.to_string());
    let totals = h.store.totals(order).await.unwrap().unwrap();
    assert_eq!(totals.captured, dec("39.98"));
    assert_eq!(totals.refunded, dec("0"));
    assert_eq!(totals.capture_count, 1);
    assert_eq!(simulator.stats().captures, 1);
}

async fn every_gateway_call_is_recorded_with_its_key_and_outcome(backend: Backend) {
    let (h, _simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_VISA))
        .await
        .unwrap();
    let payment = payment_of(&h, order).await;
    let attempts = h.store.attempts(payment.id).await.unwrap();
    let summary: Vec<_> = attempts.iter().map(|a| (a.operation, a.outcome)).collect();
    assert_eq!(
        summary,
        [
            (Operation::Authorize, Some(Outcome::Succeeded)),
            (Operation::Capture, Some(Outcome::Succeeded)),
        ]
    );
    assert_ne!(attempts[0].idempotency_key, attempts[1].idempotency_key);
}

async fn a_duplicate_delivery_captures_only_once(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    let event = confirmed(order, new_client(), "10.00", TOK_VISA);
    h.handler.handle(&event).await.unwrap();
    h.handler.handle(&event).await.unwrap();
    // The same order confirmed again under another event id.
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_VISA))
        .await
        .unwrap();

    assert_eq!(h.published_types(order).await, [PaymentSucceeded::TYPE]);
    let stats = simulator.stats();
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.captures, 1);
    assert_eq!(h.store.all_totals().await.unwrap().len(), 1);
}

async fn a_declined_card_publishes_payment_failed_with_its_reason(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_DECLINED))
        .await
        .unwrap();

    let events = h.published(order).await;
    assert_eq!(events.len(), 1);
    let failed = events[0].decode::<PaymentFailed>().unwrap();
    assert_eq!(failed.reason, "card_declined");
    let payment = payment_of(&h, order).await;
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert_eq!(payment.captured, dec("0"));
    assert_eq!(simulator.stats().captures, 0);
}

async fn a_card_failing_transiently_is_charged_after_a_retry(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_TRANSIENT))
        .await
        .unwrap();
    assert_eq!(h.published_types(order).await, [PaymentSucceeded::TYPE]);
    assert_eq!(simulator.stats().captures, 1);
}

async fn a_capture_whose_answer_timed_out_is_charged_once(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(h.published_types(order).await, [PaymentSucceeded::TYPE]);
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(payment_of(&h, order).await.capture_count, 1);
}

async fn cancelling_after_the_capture_refunds_everything(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "25.50", TOK_VISA))
        .await
        .unwrap();
    let cancel = cancelled(order);
    h.handler.handle(&cancel).await.unwrap();
    h.handler.handle(&cancel).await.unwrap();

    let events = h.published(order).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, [PaymentSucceeded::TYPE, PaymentRefunded::TYPE]);
    let refunded = events[1].decode::<PaymentRefunded>().unwrap();
    assert_eq!(refunded.amount, dec("25.50"));
    assert_eq!(refunded.reason, "order_cancelled");
    assert_eq!(events[1].causationid, Some(cancel.id.to_string()));

    let totals = h.store.totals(order).await.unwrap().unwrap();
    assert_eq!(totals.captured - totals.refunded, dec("0"));
    assert_eq!(totals.status, PaymentStatus::Refunded);
    assert_eq!(simulator.stats().refunds, 1);
    assert_eq!(simulator.stats().refunded_total, dec("25.50"));
}

async fn a_confirmation_arriving_after_the_cancellation_never_charges(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler.handle(&cancelled(order)).await.unwrap();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_VISA))
        .await
        .unwrap();

    assert!(h.published(order).await.is_empty());
    assert!(h.store.for_order(order).await.unwrap().is_none());
    assert_eq!(simulator.stats().requests, 0);
}

async fn cancelling_an_order_that_was_never_charged_does_nothing(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_DECLINED))
        .await
        .unwrap();
    h.handler.handle(&cancelled(order)).await.unwrap();
    assert_eq!(h.published_types(order).await, [PaymentFailed::TYPE]);
    assert_eq!(simulator.stats().refunds + simulator.stats().voids, 0);
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A gateway in front of the real client, with faults a test switches on.
struct Faulty {
    inner: Arc<HttpGateway>,
    /// The next capture reaches the gateway, but its answer is lost.
    lose_next_capture_answer: AtomicBool,
    /// Captures never reach the gateway.
    captures_down: AtomicBool,
    /// Runs before a capture is forwarded (another process cancelling).
    before_capture: std::sync::Mutex<Option<BoxFuture>>,
    captures: AtomicUsize,
    /// The next refund reaches the gateway, but its answer is lost.
    lose_next_refund_answer: AtomicBool,
}

impl Faulty {
    fn new(inner: Arc<HttpGateway>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            lose_next_capture_answer: AtomicBool::new(false),
            captures_down: AtomicBool::new(false),
            before_capture: std::sync::Mutex::new(None),
            captures: AtomicUsize::new(0),
            lose_next_refund_answer: AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl Gateway for Faulty {
    async fn authorize(&self, req: AuthorizeRequest) -> Result<Authorization, GatewayError> {
        self.inner.authorize(req).await
    }

    async fn capture(&self, req: CaptureRequest) -> Result<Capture, GatewayError> {
        self.captures.fetch_add(1, Ordering::SeqCst);
        if self.captures_down.load(Ordering::SeqCst) {
            return Err(GatewayError::unavailable("capture is down"));
        }
        let hook = self.before_capture.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
        let result = self.inner.capture(req).await;
        if self.lose_next_capture_answer.swap(false, Ordering::SeqCst) {
            return Err(GatewayError::unavailable("the answer was lost"));
        }
        result
    }

    async fn void(&self, req: VoidRequest) -> Result<Voided, GatewayError> {
        self.inner.void(req).await
    }

    async fn refund(&self, req: RefundRequest) -> Result<GatewayRefund, GatewayError> {
        let result = self.inner.refund(req).await;
        if self.lose_next_refund_answer.swap(false, Ordering::SeqCst) {
            return Err(GatewayError::unavailable("the answer was lost"));
        }
        result
    }
}

async fn a_capture_whose_answer_was_lost_is_retried_with_the_stored_key(backend: Backend) {
    let (simulator, client) = simulator_and_client().await;
    let gateway = Faulty::new(client);
    gateway
        .lose_next_capture_answer
        .store(true, Ordering::SeqCst);
    let h = Harness::on(backend, gateway.clone(), PaymentsConfig::default());
    let order = new_order();
    let event = confirmed(order, new_client(), "10.00", TOK_VISA);

    // The charge went through, but the reaction never heard of it.
    assert!(h.handler.handle(&event).await.is_err());
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(
        payment_of(&h, order).await.status,
        PaymentStatus::Authorized
    );
    assert!(h.published(order).await.is_empty());

    // The bus delivers again: the stored key fetches the same capture.
    h.handler.handle(&event).await.unwrap();
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(h.published_types(order).await, [PaymentSucceeded::TYPE]);
    let payment = payment_of(&h, order).await;
    let captures: Vec<_> = h
        .store
        .attempts(payment.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.operation == Operation::Capture)
        .collect();
    assert_eq!(captures.len(), 2);
    assert_eq!(captures[0].idempotency_key, captures[1].idempotency_key);
    assert_eq!(captures[0].outcome, Some(Outcome::Unavailable));
    assert_eq!(captures[1].outcome, Some(Outcome::Succeeded));
}

async fn a_refund_whose_answer_was_lost_is_resumed_with_the_stored_key(backend: Backend) {
    let (simulator, client) = simulator_and_client().await;
    let gateway = Faulty::new(client);
    let h = Harness::on(backend, gateway.clone(), PaymentsConfig::default());
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "12.00", TOK_VISA))
        .await
        .unwrap();
    gateway
        .lose_next_refund_answer
        .store(true, Ordering::SeqCst);
    let cancel = cancelled(order);

    assert!(h.handler.handle(&cancel).await.is_err());
    assert_eq!(simulator.stats().refunds, 1);
    let payment = payment_of(&h, order).await;
    assert_eq!(payment.status, PaymentStatus::Captured);
    let pending = h.store.refunds(payment.id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, RefundStatus::Pending);

    h.handler.handle(&cancel).await.unwrap();
    assert_eq!(simulator.stats().refunds, 1);
    assert_eq!(simulator.stats().refunded_total, dec("12.00"));
    let payment = payment_of(&h, order).await;
    assert_eq!(payment.status, PaymentStatus::Refunded);
    let refunds = h.store.refunds(payment.id).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(
        h.published_types(order).await,
        [PaymentSucceeded::TYPE, PaymentRefunded::TYPE]
    );
}

async fn confirmations_and_cancellations_racing_never_leave_money_with_a_cancelled_order(
    backend: Backend,
) {
    let (h, simulator) = harness_on(backend).await;
    let h = Arc::new(h);
    let orders: Vec<OrderId> = (0..20).map(|_| new_order()).collect();
    let mut tasks = Vec::new();
    for (i, order) in orders.iter().copied().enumerate() {
        let confirm = confirmed(order, new_client(), "3.00", TOK_VISA);
        let cancel = cancelled(order);
        // Half the orders see the cancellation first.
        let events = if i % 2 == 0 {
            [confirm, cancel]
        } else {
            [cancel, confirm]
        };
        for event in events {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.handler.handle(&event).await.map_err(|e| e.to_string())
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for order in orders {
        if let Some(t) = h.store.totals(order).await.unwrap() {
            assert!(t.capture_count <= 1);
            assert_eq!(t.captured - t.refunded, dec("0"), "{order:?}");
        }
    }
    let stats = simulator.stats();
    assert_eq!(stats.captured_total, stats.refunded_total);
}

async fn an_unreachable_gateway_fails_the_payment_after_the_configured_attempts(backend: Backend) {
    let gateway = Arc::new(HttpGateway::new(closed_port(), fast_gateway()).unwrap());
    let h = Harness::on(backend, gateway, PaymentsConfig { max_unavailable: 2 });
    let order = new_order();
    let event = confirmed(order, new_client(), "10.00", TOK_VISA);

    assert!(h.handler.handle(&event).await.is_err());
    assert!(h.published(order).await.is_empty());
    h.handler.handle(&event).await.unwrap();

    let events = h.published(order).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].decode::<PaymentFailed>().unwrap().reason,
        "gateway_unavailable"
    );
    assert_eq!(payment_of(&h, order).await.status, PaymentStatus::Failed);
}

async fn a_capture_that_keeps_failing_gives_up_only_after_voiding_the_authorization(
    backend: Backend,
) {
    let (simulator, client) = simulator_and_client().await;
    let gateway = Faulty::new(client);
    gateway.captures_down.store(true, Ordering::SeqCst);
    let h = Harness::on(
        backend,
        gateway.clone(),
        PaymentsConfig { max_unavailable: 2 },
    );
    let order = new_order();
    let event = confirmed(order, new_client(), "10.00", TOK_VISA);

    assert!(h.handler.handle(&event).await.is_err());
    h.handler.handle(&event).await.unwrap();

    let events = h.published(order).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].decode::<PaymentFailed>().unwrap().reason,
        "gateway_unavailable"
    );
    assert_eq!(simulator.stats().voids, 1);
    assert_eq!(simulator.stats().captures, 0);
}

async fn cancelling_an_authorized_payment_voids_it_and_the_charge_then_stops(backend: Backend) {
    let (simulator, client) = simulator_and_client().await;
    let gateway = Faulty::new(client);
    gateway.captures_down.store(true, Ordering::SeqCst);
    let h = Harness::on(
        backend,
        gateway.clone(),
        PaymentsConfig { max_unavailable: 5 },
    );
    let order = new_order();
    let event = confirmed(order, new_client(), "10.00", TOK_VISA);
    assert!(h.handler.handle(&event).await.is_err());
    assert_eq!(
        payment_of(&h, order).await.status,
        PaymentStatus::Authorized
    );

    h.handler.handle(&cancelled(order)).await.unwrap();
    assert_eq!(payment_of(&h, order).await.status, PaymentStatus::Voided);

    // The charge's retry finds nothing left to do.
    gateway.captures_down.store(false, Ordering::SeqCst);
    let captures_before = gateway.captures.load(Ordering::SeqCst);
    h.handler.handle(&event).await.unwrap();
    assert_eq!(gateway.captures.load(Ordering::SeqCst), captures_before);
    assert!(h.published(order).await.is_empty());
    assert_eq!(simulator.stats().voids, 1);
    assert_eq!(simulator.stats().captures, 0);
}

async fn a_cancellation_recorded_during_the_capture_is_refunded_as_a_late_payment(
    backend: Backend,
) {
    let (simulator, client) = simulator_and_client().await;
    let gateway = Faulty::new(client);
    let h = Harness::on(backend, gateway.clone(), PaymentsConfig::default());
    let order = new_order();
    // Another process records the cancellation while the capture is out.
    let store = h.store.clone();
    *gateway.before_capture.lock().unwrap() = Some(Box::pin(async move {
        store
            .record_cancellation(order, "customer_cancelled", Utc::now())
            .await
            .unwrap();
    }));
    h.handler
        .handle(&confirmed(order, new_client(), "10.00", TOK_VISA))
        .await
        .unwrap();

    let events = h.published(order).await;
    assert_eq!(events.len(), 1, "no payment.succeeded, one refund");
    let refunded = events[0].decode::<PaymentRefunded>().unwrap();
    assert_eq!(refunded.reason, "late_payment");
    let totals = h.store.totals(order).await.unwrap().unwrap();
    assert_eq!(totals.captured, dec("10.00"));
    assert_eq!(totals.captured - totals.refunded, dec("0"));
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(simulator.stats().refunded_total, dec("10.00"));
}

fn admin() -> Principal {
    Principal {
        client_id: new_client(),
        role: Role::Admin,
    }
}

async fn an_admin_refunds_part_then_the_rest_and_never_more_than_was_captured(backend: Backend) {
    let (h, simulator) = harness_on(backend).await;
    let order = new_order();
    h.handler
        .handle(&confirmed(order, new_client(), "20.00", TOK_VISA))
        .await
        .unwrap();
    let payment = payment_of(&h, order).await;
    let ctx = EventContext::from_request("req-admin");

    let (after, refund) = h
        .service
        .refund(
            &admin(),
            payment.id,
            RefundAmount::Exactly(dec("5.00")),
            Some("damaged".into()),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(after.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(refund.reason, "damaged");

    let too_much = h
        .service
        .refund(
            &admin(),
            payment.id,
            RefundAmount::Exactly(dec("15.01")),
            None,
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&too_much, PaymentError::AmountTooLarge { refundable } if refundable == "15.00"),
        "{too_much:?}"
    );

    let (after, rest) = h
        .service
        .refund(&admin(), payment.id, RefundAmount::Remainder, None, &ctx)
        .await
        .unwrap();
    assert_eq!(rest.amount, dec("15.00"));
    assert_eq!(rest.reason, "requested_by_admin");
    assert_eq!(after.status, PaymentStatus::Refunded);

    let nothing = h
        .service
        .refund(&admin(), payment.id, RefundAmount::Remainder, None, &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(nothing, PaymentError::NothingToRefund),
        "{nothing:?}"
    );

    // A later cancellation finds nothing left to give back.
    h.handler.handle(&cancelled(order)).await.unwrap();
    let types = h.published_types(order).await;
    assert_eq!(
        types,
        [
            PaymentSucceeded::TYPE,
            PaymentRefunded::TYPE,
            PaymentRefunded::TYPE
        ]
    );
    assert_eq!(simulator.stats().refunded_total, dec("20.00"));
}

async fn only_an_admin_refunds(backend: Backend) {
    let (h, _simulator) = harness_on(backend).await;
    let order = new_order();
    let customer = new_client();
    h.handler
        .handle(&confirmed(order, customer, "20.00", TOK_VISA))
        .await
        .unwrap();
    let payment = payment_of(&h, order).await;
    let err = h
        .service
        .refund(
            &Principal {
                client_id: customer,
                role: Role::Customer,
            },
            payment.id,
            RefundAmount::Remainder,
            None,
            &EventContext::from_request("req"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PaymentError::Forbidden(_)), "{err:?}");
}

async fn a_customer_sees_the_payments_of_their_own_orders_only(backend: Backend) {
    let (h, _simulator) = harness_on(backend).await;
    let order = new_order();
    let customer = new_client();
    h.handler
        .handle(&confirmed(order, customer, "20.00", TOK_VISA))
        .await
        .unwrap();
    let as_role = |client_id, role| Principal { client_id, role };

    let own = h
        .service
        .payments_for_order(&as_role(customer, Role::Customer), order)
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    let other = h
        .service
        .payments_for_order(&as_role(new_client(), Role::Customer), order)
        .await
        .unwrap_err();
    assert!(matches!(other, PaymentError::NotFound));
    let seller = h
        .service
        .payments_for_order(&as_role(new_client(), Role::Seller), order)
        .await
        .unwrap_err();
    assert!(matches!(seller, PaymentError::Forbidden(_)));
    assert_eq!(
        h.service
            .payments_for_order(&admin(), order)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn the_invariant_checker_reads_every_orders_totals(backend: Backend) {
    let (h, _simulator) = harness_on(backend).await;
    let paid = new_order();
    let refunded = new_order();
    let declined = new_order();
    for (order, token) in [
        (paid, TOK_VISA),
        (refunded, TOK_VISA),
        (declined, TOK_DECLINED),
    ] {
        h.handler
            .handle(&confirmed(order, new_client(), "7.00", token))
            .await
            .unwrap();
    }
    h.handler.handle(&cancelled(refunded)).await.unwrap();
    let totals = h.store.all_totals().await.unwrap();
    assert_eq!(totals.len(), 3);
    for t in totals {
        assert!(t.capture_count <= 1);
        assert!(t.refunded <= t.captured);
        let net = t.captured - t.refunded;
        let expected = if t.order_id == paid {
            dec("7.00")
        } else {
            dec("0")
        };
        assert_eq!(net, expected, "{:?}", t.order_id);
    }
}

on_both_backends!(
    a_confirmed_order_is_captured_and_payment_succeeded_is_published,
    every_gateway_call_is_recorded_with_its_key_and_outcome,
    a_duplicate_delivery_captures_only_once,
    a_declined_card_publishes_payment_failed_with_its_reason,
    a_card_failing_transiently_is_charged_after_a_retry,
    a_capture_whose_answer_timed_out_is_charged_once,
    cancelling_after_the_capture_refunds_everything,
    a_confirmation_arriving_after_the_cancellation_never_charges,
    cancelling_an_order_that_was_never_charged_does_nothing,
    a_capture_whose_answer_was_lost_is_retried_with_the_stored_key,
    a_refund_whose_answer_was_lost_is_resumed_with_the_stored_key,
    confirmations_and_cancellations_racing_never_leave_money_with_a_cancelled_order,
    an_unreachable_gateway_fails_the_payment_after_the_configured_attempts,
    a_capture_that_keeps_failing_gives_up_only_after_voiding_the_authorization,
    cancelling_an_authorized_payment_voids_it_and_the_charge_then_stops,
    a_cancellation_recorded_during_the_capture_is_refunded_as_a_late_payment,
    an_admin_refunds_part_then_the_rest_and_never_more_than_was_captured,
    only_an_admin_refunds,
    a_customer_sees_the_payments_of_their_own_orders_only,
    the_invariant_checker_reads_every_orders_totals,
);
