//! The payments use cases: charging a confirmed order, giving the money of
//! a cancelled one back, refunds on an admin's request, and the reads the
//! HTTP routes and the invariant checker use.
//!
//! # How a charge survives crashes and lost answers
//!
//! Every gateway call is recorded with its idempotency key before it is
//! made, and its outcome is written in the same transaction as its effect
//! (and, for the last step, with the inbox entry of the event). A step
//! whose answer was lost is repeated with the key it stored, so the
//! gateway answers with what it already did: a payment is captured at most
//! once. The state of the payment row says which step comes next, so a
//! redelivered event resumes where the last one stopped.
//!
//! # Races with cancellation
//!
//! The work on one order is serialized by an in-process lock. Across
//! processes, the cancellation is recorded first and read back before each
//! gateway call: a charge that sees it voids the authorization instead of
//! capturing, or refunds a capture it just made (`late_payment`); a
//! cancellation that finds an authorization voids it, and if the gateway
//! says it was captured meanwhile, fails so that the retry refunds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ordo_bus::{Envelope, EventContext, EventPayload};
use ordo_events::{
    OrderCancelled, OrderConfirmed, PaymentFailed, PaymentRefunded, PaymentSucceeded,
};
use ordo_http::{Principal, Role};
use ordo_kernel::{Clock, EventId, IdGen, OrderId, StoreError};
use rust_decimal::Decimal;
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

use crate::domain::{
    self, CancelAction, Operation, Outcome, Payment, PaymentId, PaymentRuleError, PaymentStatus,
    Refund, RefundId, RefundStatus,
};
use crate::gateway::{
    AuthorizeRequest, CaptureRequest, Gateway, GatewayError, RefundRequest, VoidRequest,
};
use crate::store::{
    AttemptResult, Created, InboxKey, NewAttempt, PaymentStore, PaymentTotals, PaymentWrite, Saved,
};

/// Who the payments service's own events are attributed to.
pub const ACTOR: &str = "system:payments";

/// Failure reasons the service itself gives.
pub const GATEWAY_UNAVAILABLE: &str = "gateway_unavailable";
pub const INVALID_AMOUNT: &str = "invalid_amount";
pub const ORDER_CANCELLED: &str = "order_cancelled";
pub const LATE_PAYMENT: &str = "late_payment";
pub const REQUESTED_BY_ADMIN: &str = "requested_by_admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentsConfig {
    /// Calls of one operation that may go unanswered before a charge gives
    /// up and publishes `payment.failed{gateway_unavailable}` (counted
    /// across redeliveries: each is recorded).
    pub max_unavailable: usize,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self { max_unavailable: 3 }
    }
}

/// The service layer's error story.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Unknown, or not visible to the caller: the same answer for both.
    #[error("no such payment")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("nothing is left to refund")]
    NothingToRefund,
    #[error("{0}")]
    InvalidAmount(String),
    #[error("at most {refundable} can be refunded")]
    AmountTooLarge { refundable: String },
    /// The gateway said no (a final answer).
    #[error("declined by the gateway: {0}")]
    Declined(String),
    /// The gateway did not answer; retry later.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
    /// The gateway and this service disagree for now; a retry settles it.
    #[error("{0}")]
    Unsettled(String),
    #[error(transparent)]
    Rule(#[from] PaymentRuleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A payment with its refunds, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub payment: Payment,
    pub refunds: Vec<Refund>,
}

/// How much a refund gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundAmount {
    /// Whatever is left.
    Remainder,
    Exactly(Decimal),
}

/// Per-order mutual exclusion, so that a charge, a cancellation and a
/// refund of the same order never interleave in this process.
#[derive(Default)]
struct OrderLocks {
    map: Mutex<HashMap<OrderId, Arc<tokio::sync::Mutex<()>>>>,
}

struct OrderGuard<'a> {
    locks: &'a OrderLocks,
    order: OrderId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl OrderLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, Arc<tokio::sync::Mutex<()>>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn lock(&self, order: OrderId) -> OrderGuard<'_> {
        let mutex = self.map().entry(order).or_default().clone();
        OrderGuard {
            locks: self,
            order,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for OrderGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map holds it: nobody waits, the entry can go.
        if map
            .get(&self.order)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.order);
        }
    }
}

/// Why the service is acting: the context and actor of the events it
/// publishes, and the inbox entry of the event it handles.
struct Cause {
    context: EventContext,
    actor: String,
    inbox: Option<InboxKey>,
}

impl Cause {
    fn reaction(event: &Envelope, consumer: &str) -> Self {
        Self {
            context: EventContext::caused_by(event),
            actor: ACTOR.to_owned(),
            inbox: Some(InboxKey::new(consumer, event)),
        }
    }
}

/// A gateway call recorded in advance, in the transaction of the step
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorded {
    operation: Operation,
    seq: i64,
}

pub struct PaymentsService {
    store: Arc<dyn PaymentStore>,
    gateway: Arc<dyn Gateway>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    config: PaymentsConfig,
    locks: OrderLocks,
}

impl PaymentsService {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        gateway: Arc<dyn Gateway>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
    ) -> Self {
        Self {
            store,
            gateway,
            clock,
            ids,
            config: PaymentsConfig::default(),
            locks: OrderLocks::default(),
        }
    }

    pub fn with_config(mut self, config: PaymentsConfig) -> Self {
        self.config = config;
        self
    }

    pub fn store(&self) -> &Arc<dyn PaymentStore> {
        &self.store
    }

    fn event<E: EventPayload>(
        &self,
        order: OrderId,
        cause: &Cause,
        payload: &E,
    ) -> Result<Envelope, PaymentError> {
        Ok(Envelope::new(
            EventId::from_ulid(self.ids.ulid()),
            self.clock.now(),
            order.to_string(),
            None,
            &cause.context,
            payload,
        )
        .map_err(anyhow::Error::from)?
        .with_actor(cause.actor.clone()))
    }

    fn failed_event(
        &self,
        payment: &Payment,
        reason: &str,
        cause: &Cause,
    ) -> Result<Envelope, PaymentError> {
        self.event(
            payment.order_id,
            cause,
            &PaymentFailed {
                order_id: payment.order_id,
                payment_id: payment.id.to_string(),
                reason: reason.to_owned(),
            },
        )
    }

    fn new_key(&self, operation: Operation) -> String {
        format!("{}_{}", operation.as_str(), self.ids.ulid())
    }

    /// The key a call of `operation` must use: the stored one if it was
    /// ever attempted, else a new one.
    async fn key_for(
        &self,
        payment: PaymentId,
        operation: Operation,
        refund: Option<RefundId>,
    ) -> Result<String, PaymentError> {
        let attempts = self.store.attempts(payment).await?;
        Ok(domain::stored_key(&attempts, operation, refund)
            .unwrap_or_else(|| self.new_key(operation)))
    }

    fn attempt(
        &self,
        payment: &Payment,
        operation: Operation,
        key: String,
        amount: Option<Decimal>,
        refund: Option<RefundId>,
    ) -> NewAttempt {
        NewAttempt {
            payment_id: payment.id,
            operation,
            idempotency_key: key,
            amount,
            refund_id: refund,
            started_at: self.clock.now(),
        }
    }

    /// Records the call unless the previous step already did; returns its
    /// sequence and key.
    async fn prepare(
        &self,
        payment: &Payment,
        operation: Operation,
        amount: Option<Decimal>,
        recorded: &mut Option<Recorded>,
    ) -> Result<(i64, String), PaymentError> {
        let key = self.key_for(payment.id, operation, None).await?;
        if let Some(r) = recorded.take()
            && r.operation == operation
        {
            return Ok((r.seq, key));
        }
        let seq = self
            .store
            .record_attempt(self.attempt(payment, operation, key.clone(), amount, None))
            .await?;
        Ok((seq, key))
    }

    fn result(
        &self,
        payment: &Payment,
        seq: i64,
        outcome: Outcome,
        detail: Option<String>,
    ) -> AttemptResult {
        AttemptResult {
            payment_id: payment.id,
            seq,
            outcome,
            detail,
            at: self.clock.now(),
        }
    }

    fn outcome_of<T>(result: &Result<T, GatewayError>) -> (Outcome, Option<String>) {
        match result {
            Ok(_) => (Outcome::Succeeded, None),
            Err(GatewayError::Declined { reason }) => (Outcome::Declined, Some(reason.clone())),
            Err(GatewayError::Unavailable { reason }) => {
                (Outcome::Unavailable, Some(reason.clone()))
            }
        }
    }

    /// Stores the outcome of a call that changed nothing else.
    async fn finish(
        &self,
        payment: &Payment,
        seq: i64,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Result<(), PaymentError> {
        self.store
            .save(PaymentWrite {
                finished: Some(self.result(payment, seq, outcome, detail)),
                ..PaymentWrite::default()
            })
            .await?;
        Ok(())
    }

    // --- Charging ------------------------------------------------------------

    /// Charges a confirmed order: authorize, then capture, then publish
    /// `payment.succeeded`, or `payment.failed` with the reason. A
    /// cancelled order is never charged; a redelivery resumes the charge.
    pub async fn on_order_confirmed(
        &self,
        event: &Envelope,
        consumer: &str,
    ) -> Result<(), PaymentError> {
        let confirmed = event.decode::<OrderConfirmed>()?;
        let cause = Cause::reaction(event, consumer);
        let _guard = self.locks.lock(confirmed.order_id).await;
        if let Some(inbox) = &cause.inbox
            && self.store.is_processed(inbox).await?
        {
            return Ok(());
        }
        let now = self.clock.now();
        let payment = Payment::new(
            PaymentId::from_ulid(self.ids.ulid()),
            confirmed.order_id,
            confirmed.customer_id,
            confirmed.total,
            confirmed.currency,
            confirmed.payment_token,
            now,
        );
        let first = self.attempt(
            &payment,
            Operation::Authorize,
            self.new_key(Operation::Authorize),
            Some(payment.amount),
            None,
        );
        let (payment, recorded) = match self.store.create(payment.clone(), first).await? {
            Created::Created { attempt } => (
                payment,
                Some(Recorded {
                    operation: Operation::Authorize,
                    seq: attempt,
                }),
            ),
            Created::Existing(existing) => (*existing, None),
            Created::OrderCancelled => {
                info!(order = %confirmed.order_id, "order confirmed after its cancellation: not charged");
                self.mark_processed(&cause).await?;
                return Ok(());
            }
        };
        self.drive(payment, recorded, &cause).await
    }

    async fn mark_processed(&self, cause: &Cause) -> Result<(), PaymentError> {
        if let Some(inbox) = &cause.inbox {
            self.store.mark_processed(inbox.clone()).await?;
        }
        Ok(())
    }

    /// Takes a payment from wherever it stands to a settled state.
    async fn drive(
        &self,
        mut payment: Payment,
        mut recorded: Option<Recorded>,
        cause: &Cause,
    ) -> Result<(), PaymentError> {
        // Set when the gateway says a capture exists that this service has
        // not stored yet: fetch it (same key) before anything else.
        let mut resolve_capture = false;
        loop {
            let cancelled = self.store.is_cancelled(payment.order_id).await?;
            match payment.status {
                PaymentStatus::Pending => {
                    if payment.amount <= Decimal::ZERO {
                        return self
                            .fail(payment, None, INVALID_AMOUNT, cancelled, cause)
                            .await;
                    }
                    let (seq, key) = self
                        .prepare(
                            &payment,
                            Operation::Authorize,
                            Some(payment.amount),
                            &mut recorded,
                        )
                        .await?;
                    let result = self
                        .gateway
                        .authorize(AuthorizeRequest {
                            idempotency_key: key,
                            token: payment.token.clone(),
                            amount: payment.amount,
                            currency: payment.currency,
                        })
                        .await;
                    match result {
                        Ok(auth) => {
                            let next = payment.authorize(
                                auth.amount,
                                auth.authorization_id,
                                self.clock.now(),
                            )?;
                            let operation = if cancelled {
                                Operation::Void
                            } else {
                                Operation::Capture
                            };
                            let key = self.key_for(payment.id, operation, None).await?;
                            let amount =
                                (operation == Operation::Capture).then_some(next.authorized);
                            let saved = self
                                .store
                                .save(PaymentWrite {
                                    payment: Some((next.clone(), payment.version)),
                                    finished: Some(self.result(
                                        &payment,
                                        seq,
                                        Outcome::Succeeded,
                                        None,
                                    )),
                                    next_attempt: Some(
                                        self.attempt(&next, operation, key, amount, None),
                                    ),
                                    ..PaymentWrite::default()
                                })
                                .await?;
                            recorded = match saved {
                                Saved::Done {
                                    next_attempt: Some(seq),
                                } => Some(Recorded { operation, seq }),
                                _ => None,
                            };
                            payment = next;
                        }
                        Err(GatewayError::Declined { reason }) => {
                            return self
                                .fail(payment, Some(seq), &reason, cancelled, cause)
                                .await;
                        }
                        Err(GatewayError::Unavailable { reason }) => {
                            self.finish(&payment, seq, Outcome::Unavailable, Some(reason.clone()))
                                .await?;
                            if self.given_up(&payment, Operation::Authorize).await? {
                                // Nothing was captured; an authorization the
                                // gateway may hold lapses on its own.
                                return self
                                    .fail(payment, None, GATEWAY_UNAVAILABLE, cancelled, cause)
                                    .await;
                            }
                            return Err(PaymentError::Unavailable(reason));
                        }
                    }
                }
                PaymentStatus::Authorized if cancelled && !resolve_capture => {
                    match self.void(&payment, &mut recorded).await? {
                        VoidOutcome::Voided(seq) => {
                            self.save_voided(&payment, seq, cause).await?;
                            return Ok(());
                        }
                        VoidOutcome::AlreadyCaptured => resolve_capture = true,
                    }
                }
                PaymentStatus::Authorized => {
                    resolve_capture = false;
                    let (seq, key) = self
                        .prepare(
                            &payment,
                            Operation::Capture,
                            Some(payment.authorized),
                            &mut recorded,
                        )
                        .await?;
                    let authorization_id = payment.authorization_ref.clone().unwrap_or_default();
                    let result = self
                        .gateway
                        .capture(CaptureRequest {
                            idempotency_key: key,
                            authorization_id,
                            amount: payment.authorized,
                        })
                        .await;
                    match result {
                        Ok(capture) => {
                            let next = payment.capture(
                                capture.amount,
                                capture.capture_id,
                                self.clock.now(),
                            )?;
                            // Read again: a cancellation recorded while the
                            // capture was under way turns it into a late
                            // payment, refunded below.
                            let cancelled = self.store.is_cancelled(payment.order_id).await?;
                            let (events, inbox) = if cancelled {
                                (Vec::new(), None)
                            } else {
                                let succeeded = self.event(
                                    payment.order_id,
                                    cause,
                                    &PaymentSucceeded {
                                        order_id: payment.order_id,
                                        payment_id: payment.id.to_string(),
                                        amount: next.captured,
                                        currency: next.currency,
                                    },
                                )?;
                                (vec![succeeded], cause.inbox.clone())
                            };
                            self.store
                                .save(PaymentWrite {
                                    payment: Some((next.clone(), payment.version)),
                                    finished: Some(self.result(
                                        &payment,
                                        seq,
                                        Outcome::Succeeded,
                                        None,
                                    )),
                                    events,
                                    inbox: inbox.clone(),
                                    ..PaymentWrite::default()
                                })
                                .await?;
                            if inbox.is_some() {
                                info!(order = %payment.order_id, payment = %payment.id, "payment captured");
                                return Ok(());
                            }
                            payment = next;
                        }
                        Err(GatewayError::Declined { reason }) => {
                            // The authorization lapses at the gateway.
                            return self
                                .fail(payment, Some(seq), &reason, cancelled, cause)
                                .await;
                        }
                        Err(GatewayError::Unavailable { reason }) => {
                            self.finish(&payment, seq, Outcome::Unavailable, Some(reason.clone()))
                                .await?;
                            if self.given_up(&payment, Operation::Capture).await? {
                                // Give up only once the authorization is
                                // released: a void that the gateway refuses
                                // because the capture went through sends
                                // the retry to fetch that capture.
                                if let VoidOutcome::Voided(seq) =
                                    self.void(&payment, &mut recorded).await?
                                {
                                    let failed =
                                        payment.fail(GATEWAY_UNAVAILABLE, self.clock.now())?;
                                    let events = if cancelled {
                                        Vec::new()
                                    } else {
                                        vec![self.failed_event(
                                            &payment,
                                            GATEWAY_UNAVAILABLE,
                                            cause,
                                        )?]
                                    };
                                    self.store
                                        .save(PaymentWrite {
                                            payment: Some((failed, payment.version)),
                                            finished: Some(self.result(
                                                &payment,
                                                seq,
                                                Outcome::Succeeded,
                                                None,
                                            )),
                                            events,
                                            inbox: cause.inbox.clone(),
                                            ..PaymentWrite::default()
                                        })
                                        .await?;
                                    return Ok(());
                                }
                            }
                            return Err(PaymentError::Unavailable(reason));
                        }
                    }
                }
                PaymentStatus::Captured | PaymentStatus::PartiallyRefunded
                    if cancelled && payment.refundable() > Decimal::ZERO =>
                {
                    warn!(order = %payment.order_id, payment = %payment.id, "captured for a cancelled order: refunding");
                    let (next, _) = self
                        .refund_locked(payment, RefundAmount::Remainder, LATE_PAYMENT, cause)
                        .await?;
                    payment = next;
                }
                PaymentStatus::Captured
                | PaymentStatus::PartiallyRefunded
                | PaymentStatus::Refunded
                | PaymentStatus::Voided
                | PaymentStatus::Failed => {
                    self.mark_processed(cause).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Whether calls of `operation` went unanswered often enough to stop.
    async fn given_up(
        &self,
        payment: &Payment,
        operation: Operation,
    ) -> Result<bool, PaymentError> {
        let attempts = self.store.attempts(payment.id).await?;
        Ok(domain::unavailable_count(&attempts, operation) >= self.config.max_unavailable)
    }

    /// Fails a payment that took nothing, publishing `payment.failed`
    /// unless the order is already cancelled (the saga has unwound).
    async fn fail(
        &self,
        payment: Payment,
        seq: Option<i64>,
        reason: &str,
        cancelled: bool,
        cause: &Cause,
    ) -> Result<(), PaymentError> {
        let failed = payment.fail(reason, self.clock.now())?;
        let events = if cancelled {
            Vec::new()
        } else {
            vec![self.failed_event(&payment, reason, cause)?]
        };
        self.store
            .save(PaymentWrite {
                payment: Some((failed, payment.version)),
                finished: seq.map(|seq| {
                    self.result(&payment, seq, Outcome::Declined, Some(reason.to_owned()))
                }),
                events,
                inbox: cause.inbox.clone(),
                ..PaymentWrite::default()
            })
            .await?;
        info!(order = %payment.order_id, payment = %payment.id, reason, "payment failed");
        Ok(())
    }

    /// Stores a payment whose authorization the gateway released, with the
    /// attempt that did it.
    async fn save_voided(
        &self,
        payment: &Payment,
        seq: i64,
        cause: &Cause,
    ) -> Result<(), PaymentError> {
        let next = payment.void(self.clock.now())?;
        self.store
            .save(PaymentWrite {
                payment: Some((next, payment.version)),
                finished: Some(self.result(payment, seq, Outcome::Succeeded, None)),
                inbox: cause.inbox.clone(),
                ..PaymentWrite::default()
            })
            .await?;
        Ok(())
    }

    /// Releases the authorization at the gateway; the caller stores the
    /// voided payment with the returned attempt.
    async fn void(
        &self,
        payment: &Payment,
        recorded: &mut Option<Recorded>,
    ) -> Result<VoidOutcome, PaymentError> {
        let (seq, key) = self
            .prepare(payment, Operation::Void, None, recorded)
            .await?;
        let result = self
            .gateway
            .void(VoidRequest {
                idempotency_key: key,
                authorization_id: payment.authorization_ref.clone().unwrap_or_default(),
            })
            .await;
        match result {
            Ok(_) => Ok(VoidOutcome::Voided(seq)),
            Err(GatewayError::Declined { reason }) => {
                self.finish(payment, seq, Outcome::Declined, Some(reason.clone()))
                    .await?;
                let attempts = self.store.attempts(payment.id).await?;
                if reason == "already_captured"
                    && domain::stored_key(&attempts, Operation::Capture, None).is_some()
                {
                    Ok(VoidOutcome::AlreadyCaptured)
                } else {
                    Err(PaymentError::Unsettled(format!(
                        "the gateway refused to void payment {}: {reason}",
                        payment.id
                    )))
                }
            }
            Err(GatewayError::Unavailable { reason }) => {
                self.finish(payment, seq, Outcome::Unavailable, Some(reason.clone()))
                    .await?;
                Err(PaymentError::Unavailable(reason))
            }
        }
    }

    // --- Cancellation --------------------------------------------------------

    /// Gives back what a cancelled order's payment holds: nothing if it
    /// took nothing, a void of an authorization, a refund of what is left
    /// of a capture. Remembers the cancellation, so that a late
    /// `order.confirmed` never charges.
    pub async fn on_order_cancelled(
        &self,
        event: &Envelope,
        consumer: &str,
    ) -> Result<(), PaymentError> {
        let cancelled = event.decode::<OrderCancelled>()?;
        let cause = Cause::reaction(event, consumer);
        let _guard = self.locks.lock(cancelled.order_id).await;
        if let Some(inbox) = &cause.inbox
            && self.store.is_processed(inbox).await?
        {
            return Ok(());
        }
        let payment = self
            .store
            .record_cancellation(cancelled.order_id, &cancelled.reason, self.clock.now())
            .await?;
        match (domain::on_order_cancelled(payment.as_ref()), payment) {
            (CancelAction::Void, Some(payment)) => {
                match self.void(&payment, &mut None).await? {
                    VoidOutcome::Voided(seq) => self.save_voided(&payment, seq, &cause).await,
                    // The charge's redelivery stores the capture; this
                    // event's retry then refunds it.
                    VoidOutcome::AlreadyCaptured => Err(PaymentError::Unsettled(format!(
                        "payment {} was captured at the gateway but not stored yet",
                        payment.id
                    ))),
                }
            }
            (CancelAction::Refund(_), Some(payment)) => {
                self.refund_locked(payment, RefundAmount::Remainder, ORDER_CANCELLED, &cause)
                    .await?;
                self.mark_processed(&cause).await
            }
            _ => self.mark_processed(&cause).await,
        }
    }

    // --- Refunds -------------------------------------------------------------

    /// Refunds (part of) a payment on an admin's request. Without an amount,
    /// whatever is left.
    pub async fn refund(
        &self,
        caller: &Principal,
        id: PaymentId,
        amount: RefundAmount,
        reason: Option<String>,
        context: &EventContext,
    ) -> Result<(Payment, Refund), PaymentError> {
        if caller.role != Role::Admin {
            return Err(PaymentError::Forbidden("only an admin refunds payments"));
        }
        let payment = self.get_payment(id).await?;
        let _guard = self.locks.lock(payment.order_id).await;
        let payment = self.get_payment(id).await?;
        let cause = Cause {
            context: context.clone(),
            actor: caller.client_id.to_string(),
            inbox: None,
        };
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| REQUESTED_BY_ADMIN.to_owned());
        self.refund_locked(payment, amount, &reason, &cause).await
    }

    async fn get_payment(&self, id: PaymentId) -> Result<Payment, PaymentError> {
        match self.store.get(id).await {
            Ok(p) => Ok(p),
            Err(StoreError::NotFound) => Err(PaymentError::NotFound),
            Err(err) => Err(err.into()),
        }
    }

    /// Settles refunds left pending by an earlier try, then refunds
    /// `amount`. The caller holds the order's lock.
    async fn refund_locked(
        &self,
        payment: Payment,
        amount: RefundAmount,
        reason: &str,
        cause: &Cause,
    ) -> Result<(Payment, Refund), PaymentError> {
        let mut payment = payment;
        let mut settled = None;
        for pending in self
            .store
            .refunds(payment.id)
            .await?
            .into_iter()
            .filter(|r| r.status == RefundStatus::Pending)
        {
            let key = self
                .key_for(payment.id, Operation::Refund, Some(pending.id))
                .await?;
            let seq = self
                .store
                .record_attempt(self.attempt(
                    &payment,
                    Operation::Refund,
                    key.clone(),
                    Some(pending.amount),
                    Some(pending.id),
                ))
                .await?;
            match self
                .complete_refund(payment.clone(), pending, seq, key, cause)
                .await
            {
                Ok((next, refund)) => {
                    payment = next;
                    settled = Some(refund);
                }
                // Marked failed: it no longer holds any amount.
                Err(PaymentError::Declined(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let refundable = payment.refundable();
        let amount = match amount {
            RefundAmount::Remainder if refundable <= Decimal::ZERO => {
                // A cancellation whose earlier try did give everything back.
                return match settled {
                    Some(refund) => Ok((payment, refund)),
                    None => Err(PaymentError::NothingToRefund),
                };
            }
            RefundAmount::Remainder => refundable,
            RefundAmount::Exactly(amount) => {
                if let Err(err) = payment.currency.check_amount(amount) {
                    return Err(PaymentError::InvalidAmount(err.to_string()));
                }
                amount
            }
        };
        match payment.check_refund(amount) {
            Ok(()) => {}
            Err(PaymentRuleError::NothingToRefund) => return Err(PaymentError::NothingToRefund),
            Err(PaymentRuleError::Transition { .. }) if refundable <= Decimal::ZERO => {
                return Err(PaymentError::NothingToRefund);
            }
            Err(PaymentRuleError::ExceedsRefundable { refundable, .. }) => {
                return Err(PaymentError::AmountTooLarge {
                    refundable: payment.currency.format(refundable),
                });
            }
            Err(PaymentRuleError::NotPositive) => {
                return Err(PaymentError::InvalidAmount(
                    "must be greater than zero".to_owned(),
                ));
            }
            Err(err) => return Err(err.into()),
        }
        let refund = Refund::new(
            RefundId::from_ulid(self.ids.ulid()),
            payment.id,
            amount,
            reason,
            self.clock.now(),
        );
        let key = self.new_key(Operation::Refund);
        let saved = self
            .store
            .save(PaymentWrite {
                refund: Some(refund.clone()),
                next_attempt: Some(self.attempt(
                    &payment,
                    Operation::Refund,
                    key.clone(),
                    Some(amount),
                    Some(refund.id),
                )),
                ..PaymentWrite::default()
            })
            .await?;
        let Saved::Done {
            next_attempt: Some(seq),
        } = saved
        else {
            return Err(PaymentError::Other(anyhow::anyhow!(
                "the refund attempt of payment {} was not recorded",
                payment.id
            )));
        };
        self.complete_refund(payment, refund, seq, key, cause).await
    }

    /// Asks the gateway for a recorded refund and stores the answer.
    async fn complete_refund(
        &self,
        payment: Payment,
        refund: Refund,
        seq: i64,
        key: String,
        cause: &Cause,
    ) -> Result<(Payment, Refund), PaymentError> {
        let result = self
            .gateway
            .refund(RefundRequest {
                idempotency_key: key,
                capture_id: payment.capture_ref.clone().unwrap_or_default(),
                amount: refund.amount,
            })
            .await;
        let (outcome, detail) = Self::outcome_of(&result);
        let finished = Some(self.result(&payment, seq, outcome, detail));
        match result {
            Ok(done) => {
                let now = self.clock.now();
                let next = payment.refund(refund.amount, now)?;
                let refund = refund.succeed(done.refund_id, now);
                let refunded = self.event(
                    payment.order_id,
                    cause,
                    &PaymentRefunded {
                        order_id: payment.order_id,
                        payment_id: payment.id.to_string(),
                        refund_id: refund.id.to_string(),
                        amount: refund.amount,
                        currency: payment.currency,
                        reason: refund.reason.clone(),
                    },
                )?;
                self.store
                    .save(PaymentWrite {
                        payment: Some((next.clone(), payment.version)),
                        finished,
                        refund: Some(refund.clone()),
                        events: vec![refunded],
                        ..PaymentWrite::default()
                    })
                    .await?;
                info!(order = %payment.order_id, payment = %payment.id, refund = %refund.id, amount = %refund.amount, "refunded");
                Ok((next, refund))
            }
            Err(GatewayError::Declined { reason }) => {
                self.store
                    .save(PaymentWrite {
                        finished,
                        refund: Some(refund.fail(&reason, self.clock.now())),
                        ..PaymentWrite::default()
                    })
                    .await?;
                Err(PaymentError::Declined(reason))
            }
            Err(GatewayError::Unavailable { reason }) => {
                // The refund stays pending; the next try resumes it with
                // the same key.
                self.store
                    .save(PaymentWrite {
                        finished,
                        ..PaymentWrite::default()
                    })
                    .await?;
                Err(PaymentError::Unavailable(reason))
            }
        }
    }

    // --- Reads ---------------------------------------------------------------

    /// The payments of an order the caller may see: its customer's, or any
    /// for an admin. Another customer's order is answered as unknown.
    pub async fn payments_for_order(
        &self,
        caller: &Principal,
        order: OrderId,
    ) -> Result<Vec<PaymentRecord>, PaymentError> {
        match caller.role {
            Role::Admin | Role::Customer => {}
            Role::Seller | Role::Courier => {
                return Err(PaymentError::Forbidden(
                    "payments are visible to the order's customer and admins only",
                ));
            }
        }
        let Some(payment) = self.store.for_order(order).await? else {
            return Ok(Vec::new());
        };
        if caller.role == Role::Customer && payment.customer_id != caller.client_id {
            return Err(PaymentError::NotFound);
        }
        let refunds = self.store.refunds(payment.id).await?;
        Ok(vec![PaymentRecord { payment, refunds }])
    }

    /// Every gateway call made for a payment, in order (admins only): the
    /// operations view of a payment.
    pub async fn attempts(
        &self,
        caller: &Principal,
        payment: PaymentId,
    ) -> Result<Vec<domain::Attempt>, PaymentError> {
        if caller.role != Role::Admin {
            return Err(PaymentError::Forbidden(
                "only an admin sees a payment's gateway calls",
            ));
        }
        Ok(self.store.attempts(payment).await?)
    }

    /// What the order's payment moved, for the invariant checker.
    pub async fn totals(&self, order: OrderId) -> Result<Option<PaymentTotals>, PaymentError> {
        Ok(self.store.totals(order).await?)
    }

    pub async fn all_totals(&self) -> Result<Vec<PaymentTotals>, PaymentError> {
        Ok(self.store.all_totals().await?)
    }
}

enum VoidOutcome {
    /// Released; the attempt with this sequence succeeded.
    Voided(i64),
    /// The gateway holds a capture this service has not stored yet.
    AlreadyCaptured,
}
