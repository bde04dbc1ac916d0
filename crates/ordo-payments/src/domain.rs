//! Payments as pure data and pure decisions: no I/O, no clock, no ids made
//! here. Everything that varies is passed in.
//!
//! A payment is the money side of one order: authorized, then captured at
//! most once, then refunded in one or more parts. The amounts only move in
//! one direction and are bounded by the step before: captured ≤ authorized,
//! refunded ≤ captured.

use std::fmt;

use chrono::{DateTime, Utc};
use ordo_kernel::{ClientId, Currency, OrderId};
pub use ordo_kernel::{IdParseError, PaymentId, RefundId};
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Created; the authorization is being asked for.
    Pending,
    /// The amount is held on the card, nothing is taken yet.
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    /// The authorization was released; nothing was taken.
    Voided,
    /// Nothing was taken, for the reason the payment carries.
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 7] = [
        Self::Pending,
        Self::Authorized,
        Self::Captured,
        Self::PartiallyRefunded,
        Self::Refunded,
        Self::Voided,
        Self::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The transitions of a payment. A partial refund may be followed by
    /// more partial refunds, so `partially_refunded` leads to itself.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, next),
            (Pending, Authorized)
                | (Pending, Failed)
                | (Authorized, Captured)
                | (Authorized, Voided)
                | (Authorized, Failed)
                | (Captured | PartiallyRefunded, PartiallyRefunded)
                | (Captured | PartiallyRefunded, Refunded)
        )
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Refunded | Self::Voided | Self::Failed)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a payment operation is refused. Each one guards an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentRuleError {
    #[error("a payment that is {from} cannot become {to}")]
    Transition {
        from: PaymentStatus,
        to: PaymentStatus,
    },
    #[error("an amount must be greater than zero")]
    NotPositive,
    #[error("cannot capture {requested}: only {authorized} is authorized")]
    ExceedsAuthorized {
        authorized: Decimal,
        requested: Decimal,
    },
    #[error("the payment was already captured")]
    AlreadyCaptured,
    #[error("cannot refund {requested}: only {refundable} is left to refund")]
    ExceedsRefundable {
        refundable: Decimal,
        requested: Decimal,
    },
    #[error("nothing is left to refund")]
    NothingToRefund,
}

/// The money side of one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    /// The order's customer, from `order.confirmed`: who may see it.
    pub customer_id: ClientId,
    /// What the order costs.
    pub amount: Decimal,
    pub currency: Currency,
    /// The gateway token the customer gave.
    pub token: String,
    pub status: PaymentStatus,
    pub authorized: Decimal,
    pub captured: Decimal,
    pub refunded: Decimal,
    /// 0 or 1: a payment is captured at most once.
    pub capture_count: u32,
    /// The gateway's reference of the authorization.
    pub authorization_ref: Option<String>,
    /// The gateway's reference of the capture, which refunds name.
    pub capture_ref: Option<String>,
    pub failure_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    /// A pending payment of an order's total.
    pub fn new(
        id: PaymentId,
        order_id: OrderId,
        customer_id: ClientId,
        amount: Decimal,
        currency: Currency,
        token: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            order_id,
            customer_id,
            amount,
            currency,
            token,
            status: PaymentStatus::Pending,
            authorized: Decimal::ZERO,
            captured: Decimal::ZERO,
            refunded: Decimal::ZERO,
            capture_count: 0,
            authorization_ref: None,
            capture_ref: None,
            failure_reason: None,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// What can still be given back.
    pub fn refundable(&self) -> Decimal {
        self.captured - self.refunded
    }

    fn to(&self, next: PaymentStatus, now: DateTime<Utc>) -> Result<Payment, PaymentRuleError> {
        if !self.status.can_become(next) {
            return Err(PaymentRuleError::Transition {
                from: self.status,
                to: next,
            });
        }
        let mut payment = self.clone();
        payment.status = next;
        payment.version += 1;
        payment.updated_at = now;
        Ok(payment)
    }

    pub fn authorize(
        &self,
        amount: Decimal,
        reference: String,
        now: DateTime<Utc>,
    ) -> Result<Payment, PaymentRuleError> {
        positive(amount)?;
        let mut payment = self.to(PaymentStatus::Authorized, now)?;
        payment.authorized = amount;
        payment.authorization_ref = Some(reference);
        Ok(payment)
    }

    /// Whether `amount` may be captured now.
    pub fn check_capture(&self, amount: Decimal) -> Result<(), PaymentRuleError> {
        if self.capture_count > 0 {
            return Err(PaymentRuleError::AlreadyCaptured);
        }
        if !self.status.can_become(PaymentStatus::Captured) {
            return Err(PaymentRuleError::Transition {
                from: self.status,
                to: PaymentStatus::Captured,
            });
        }
        positive(amount)?;
        if amount > self.authorized {
            return Err(PaymentRuleError::ExceedsAuthorized {
                authorized: self.authorized,
                requested: amount,
            });
        }
        Ok(())
    }

    pub fn capture(
        &self,
        amount: Decimal,
        reference: String,
        now: DateTime<Utc>,
    ) -> Result<Payment, PaymentRuleError> {
        self.check_capture(amount)?;
        let mut payment = self.to(PaymentStatus::Captured, now)?;
        payment.captured = amount;
        payment.capture_count = 1;
        payment.capture_ref = Some(reference);
        Ok(payment)
    }

    /// Releases the authorization: nothing was taken.
    pub fn void(&self, now: DateTime<Utc>) -> Result<Payment, PaymentRuleError> {
        self.to(PaymentStatus::Voided, now)
    }

    /// Nothing was taken, and nothing will be: the gateway declined, or
    /// gave no answer and any authorization was released or left to lapse.
    pub fn fail(&self, reason: &str, now: DateTime<Utc>) -> Result<Payment, PaymentRuleError> {
        let mut payment = self.to(PaymentStatus::Failed, now)?;
        payment.failure_reason = Some(reason.to_owned());
        Ok(payment)
    }

    /// Whether `amount` may be refunded now.
    pub fn check_refund(&self, amount: Decimal) -> Result<(), PaymentRuleError> {
        if !self.status.can_become(PaymentStatus::Refunded) {
            return Err(PaymentRuleError::Transition {
                from: self.status,
                to: PaymentStatus::Refunded,
            });
        }
        positive(amount)?;
        let refundable = self.refundable();
        if refundable <= Decimal::ZERO {
            return Err(PaymentRuleError::NothingToRefund);
        }
        if amount > refundable {
            return Err(PaymentRuleError::ExceedsRefundable {
                refundable,
                requested: amount,
            });
        }
        Ok(())
    }

    pub fn refund(&self, amount: Decimal, now: DateTime<Utc>) -> Result<Payment, PaymentRuleError> {
        self.check_refund(amount)?;
        let refunded = self.refunded + amount;
        let next = if refunded == self.captured {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        };
        let mut payment = self.to(next, now)?;
        payment.refunded = refunded;
        Ok(payment)
    }
}

fn positive(amount: Decimal) -> Result<(), PaymentRuleError> {
    if amount > Decimal::ZERO {
        Ok(())
    } else {
        Err(PaymentRuleError::NotPositive)
    }
}

/// What to do with an order's payment when the order is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAction {
    /// Nothing was charged, or everything was already given back. A
    /// payment still pending is settled by the charge in progress, which
    /// sees the cancellation before it captures.
    Nothing,
    /// Release the authorization.
    Void,
    /// Give back what is left.
    Refund(Decimal),
}

pub fn on_order_cancelled(payment: Option<&Payment>) -> CancelAction {
    let Some(payment) = payment else {
        return CancelAction::Nothing;
    };
    match payment.status {
        PaymentStatus::Authorized => CancelAction::Void,
        PaymentStatus::Captured | PaymentStatus::PartiallyRefunded
            if payment.refundable() > Decimal::ZERO =>
        {
            CancelAction::Refund(payment.refundable())
        }
        _ => CancelAction::Nothing,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Recorded before the gateway is asked; a retry resumes it with the
    /// same idempotency key.
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [Self::Pending, Self::Succeeded, Self::Failed];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub amount: Decimal,
    /// `order_cancelled`, `late_payment`, `requested_by_admin`, or an
    /// admin's own words.
    pub reason: String,
    pub status: RefundStatus,
    pub gateway_ref: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Refund {
    pub fn new(
        id: RefundId,
        payment_id: PaymentId,
        amount: Decimal,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            payment_id,
            amount,
            reason: reason.to_owned(),
            status: RefundStatus::Pending,
            gateway_ref: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn succeed(&self, gateway_ref: String, now: DateTime<Utc>) -> Refund {
        Refund {
            status: RefundStatus::Succeeded,
            gateway_ref: Some(gateway_ref),
            updated_at: now,
            ..self.clone()
        }
    }

    pub fn fail(&self, reason: &str, now: DateTime<Utc>) -> Refund {
        Refund {
            status: RefundStatus::Failed,
            failure_reason: Some(reason.to_owned()),
            updated_at: now,
            ..self.clone()
        }
    }
}

/// A call to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Self::Authorize, Self::Capture, Self::Void, Self::Refund];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// How a gateway call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// A final answer: the gateway said no.
    Declined,
    /// No answer, or a transient one: the call may or may not have taken
    /// effect, and is retried with the same idempotency key.
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Self::Succeeded, Self::Declined, Self::Unavailable];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One gateway call, recorded before it is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub payment_id: PaymentId,
    pub seq: i64,
    pub operation: Operation,
    pub idempotency_key: String,
    pub amount: Option<Decimal>,
    pub refund_id: Option<RefundId>,
    /// `None` until the answer is stored: a crash in between leaves it so.
    pub outcome: Option<Outcome>,
    pub detail: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The idempotency key of the latest attempt of `operation` (for refunds,
/// of that refund): a repeated call must reuse it, so that the gateway
/// answers with what it already did instead of doing it again.
pub fn stored_key(
    attempts: &[Attempt],
    operation: Operation,
    refund: Option<RefundId>,
) -> Option<String> {
    attempts
        .iter()
        .rev()
        .find(|a| a.operation == operation && a.refund_id == refund)
        .map(|a| a.idempotency_key.clone())
}

/// How many calls of `operation` got no usable answer.
pub fn unavailable_count(attempts: &[Attempt], operation: Operation) -> usize {
    attempts
        .iter()
        .filter(|a| a.operation == operation && a.outcome == Some(Outcome::Unavailable))
        .count()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use ulid::Ulid;

    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn pending(amount: &str) -> Payment {
        Payment::new(
            PaymentId::from_ulid(Ulid::new()),
            OrderId::from_ulid(Ulid::new()),
            ClientId::from_ulid(Ulid::new()),
            dec(amount),
            Currency::parse("EUR").unwrap(),
            "tok_visa".into(),
            Utc::now(),
        )
    }

    fn captured(amount: &str) -> Payment {
        let now = Utc::now();
        pending(amount)
            .authorize(dec(amount), "auth_1".into(), now)
            .unwrap()
            .capture(dec(amount), "cap_1".into(), now)
            .unwrap()
    }

    #[test]
    fn the_state_machine_allows_exactly_the_payment_transitions() {
        use PaymentStatus::*;
        let allowed = [
            (Pending, Authorized),
            (Pending, Failed),
            (Authorized, Captured),
            (Authorized, Voided),
            (Authorized, Failed),
            (Captured, PartiallyRefunded),
            (Captured, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
        ];
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for status in PaymentStatus::ALL {
            let final_has_no_way_out = PaymentStatus::ALL.iter().all(|to| !status.can_become(*to));
            assert_eq!(status.is_final(), final_has_no_way_out, "{status}");
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn names_round_trip_through_their_string_form() {
        for s in RefundStatus::ALL {
            assert_eq!(RefundStatus::parse(s.as_str()), Some(s));
        }
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        let id = PaymentId::from_ulid(Ulid::new());
        assert_eq!(PaymentId::parse(&id.to_string()), Ok(id));
        assert!(PaymentId::parse(&RefundId::from_ulid(Ulid::new()).to_string()).is_err());
    }

    #[test]
    fn a_payment_is_authorized_then_captured_once() {
        let now = Utc::now();
        let authorized = pending("10.00")
            .authorize(dec("10.00"), "auth_1".into(), now)
            .unwrap();
        assert_eq!(authorized.status, PaymentStatus::Authorized);
        assert_eq!(authorized.version, 2);
        let captured = authorized
            .capture(dec("10.00"), "cap_1".into(), now)
            .unwrap();
        assert_eq!(captured.captured, dec("10.00"));
        assert_eq!(captured.capture_count, 1);
        assert_eq!(captured.capture_ref.as_deref(), Some("cap_1"));
        assert_eq!(
            captured.capture(dec("10.00"), "cap_2".into(), now),
            Err(PaymentRuleError::AlreadyCaptured)
        );
    }

    #[test]
    fn nothing_is_captured_beyond_the_authorization() {
        let now = Utc::now();
        let authorized = pending("10.00")
            .authorize(dec("10.00"), "auth_1".into(), now)
            .unwrap();
        assert_eq!(
            authorized.capture(dec("10.01"), "cap".into(), now),
            Err(PaymentRuleError::ExceedsAuthorized {
                authorized: dec("10.00"),
                requested: dec("10.01"),
            })
        );
        assert_eq!(
            authorized.capture(Decimal::ZERO, "cap".into(), now),
            Err(PaymentRuleError::NotPositive)
        );
        assert!(
            authorized
                .capture(dec("9.99"), "cap".into(), now)
                .is_ok_and(|p| p.captured == dec("9.99"))
        );
    }

    #[test]
    fn a_pending_payment_cannot_be_captured_or_refunded() {
        let now = Utc::now();
        let p = pending("10.00");
        assert!(matches!(
            p.capture(dec("1"), "cap".into(), now),
            Err(PaymentRuleError::Transition { .. })
        ));
        assert!(matches!(
            p.refund(dec("1"), now),
            Err(PaymentRuleError::Transition { .. })
        ));
        assert!(matches!(
            p.void(now),
            Err(PaymentRuleError::Transition { .. })
        ));
        assert_eq!(
            p.authorize(dec("-1"), "a".into(), now),
            Err(PaymentRuleError::NotPositive)
        );
    }

    #[test]
    fn refunds_add_up_to_at_most_what_was_captured() {
        let now = Utc::now();
        let p = captured("10.00");
        let first = p.refund(dec("4.00"), now).unwrap();
        assert_eq!(first.status, PaymentStatus::PartiallyRefunded);
        assert_eq!(first.refundable(), dec("6.00"));
        assert_eq!(
            first.refund(dec("6.01"), now),
            Err(PaymentRuleError::ExceedsRefundable {
                refundable: dec("6.00"),
                requested: dec("6.01"),
            })
        );
        let second = first.refund(dec("6.00"), now).unwrap();
        assert_eq!(second.status, PaymentStatus::Refunded);
        assert_eq!(second.refunded, second.captured);
        assert!(matches!(
            second.refund(dec("0.01"), now),
            Err(PaymentRuleError::Transition { .. })
        ));
        assert_eq!(
            first.refund(Decimal::ZERO, now),
            Err(PaymentRuleError::NotPositive)
        );
    }

    #[test]
    fn a_failure_keeps_its_reason_and_takes_nothing() {
        let now = Utc::now();
        let failed = pending("10.00").fail("card_declined", now).unwrap();
        assert_eq!(failed.status, PaymentStatus::Failed);
        assert_eq!(failed.failure_reason.as_deref(), Some("card_declined"));
        assert_eq!(failed.captured, Decimal::ZERO);
        assert!(failed.fail("again", now).is_err());
    }

    #[test]
    fn a_cancelled_order_releases_or_refunds_what_its_payment_holds() {
        let now = Utc::now();
        assert_eq!(on_order_cancelled(None), CancelAction::Nothing);
        let p = pending("10.00");
        assert_eq!(on_order_cancelled(Some(&p)), CancelAction::Nothing);
        let authorized = p.authorize(dec("10.00"), "a".into(), now).unwrap();
        assert_eq!(on_order_cancelled(Some(&authorized)), CancelAction::Void);
        let captured = authorized.capture(dec("10.00"), "c".into(), now).unwrap();
        assert_eq!(
            on_order_cancelled(Some(&captured)),
            CancelAction::Refund(dec("10.00"))
        );
        let partly = captured.refund(dec("2.50"), now).unwrap();
        assert_eq!(
            on_order_cancelled(Some(&partly)),
            CancelAction::Refund(dec("7.50"))
        );
        let refunded = partly.refund(dec("7.50"), now).unwrap();
        assert_eq!(on_order_cancelled(Some(&refunded)), CancelAction::Nothing);
        let voided = authorized.void(now).unwrap();
        assert_eq!(on_order_cancelled(Some(&voided)), CancelAction::Nothing);
        let failed = p.fail("card_declined", now).unwrap();
        assert_eq!(on_order_cancelled(Some(&failed)), CancelAction::Nothing);
    }

    /// Every sequence of operations up to a few steps keeps the amounts
    /// within their bounds: captured ≤ authorized, refunded ≤ captured, at
    /// most one capture.
    #[test]
    fn no_sequence_of_operations_breaks_the_money_invariants() {
        #[derive(Debug, Clone, Copy)]
        enum Op {
            Authorize(i64),
            Capture(i64),
            Void,
            Fail,
            Refund(i64),
        }
        let ops = [
            Op::Authorize(10),
            Op::Authorize(0),
            Op::Capture(10),
            Op::Capture(4),
            Op::Capture(11),
            Op::Void,
            Op::Fail,
            Op::Refund(3),
            Op::Refund(7),
            Op::Refund(11),
        ];
        let now = Utc::now();
        let apply = |p: &Payment, op: Op| -> Option<Payment> {
            match op {
                Op::Authorize(n) => p.authorize(Decimal::from(n), "a".into(), now),
                Op::Capture(n) => p.capture(Decimal::from(n), "c".into(), now),
                Op::Void => p.void(now),
                Op::Fail => p.fail("x", now),
                Op::Refund(n) => p.refund(Decimal::from(n), now),
            }
            .ok()
        };
        let mut frontier = vec![pending("10")];
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for op in ops {
                    if let Some(q) = apply(p, op) {
                        assert!(p.status.can_become(q.status), "{op:?} from {}", p.status);
                        assert!(q.captured <= q.authorized, "{op:?}: {q:?}");
                        assert!(q.refunded <= q.captured, "{op:?}: {q:?}");
                        assert!(q.capture_count <= 1);
                        assert!(q.refunded >= Decimal::ZERO);
                        assert_eq!(q.version, p.version + 1);
                        next.push(q);
                    }
                }
            }
            frontier = next;
        }
    }

    #[test]
    fn a_repeated_call_reuses_the_key_of_its_latest_attempt() {
        let payment = PaymentId::from_ulid(Ulid::new());
        let refund = RefundId::from_ulid(Ulid::new());
        let attempt = |seq, operation, key: &str, refund_id, outcome| Attempt {
            payment_id: payment,
            seq,
            operation,
            idempotency_key: key.to_owned(),
            amount: None,
            refund_id,
            outcome,
            detail: None,
            started_at: Utc::now(),
            finished_at: None,
        };
        let attempts = [
            attempt(
                1,
                Operation::Authorize,
                "k1",
                None,
                Some(Outcome::Succeeded),
            ),
            attempt(
                2,
                Operation::Capture,
                "k2",
                None,
                Some(Outcome::Unavailable),
            ),
            attempt(3, Operation::Capture, "k2", None, None),
            attempt(4, Operation::Refund, "k3", Some(refund), None),
        ];
        assert_eq!(
            stored_key(&attempts, Operation::Capture, None).as_deref(),
            Some("k2")
        );
        assert_eq!(
            stored_key(&attempts, Operation::Refund, Some(refund)).as_deref(),
            Some("k3")
        );
        assert_eq!(stored_key(&attempts, Operation::Void, None), None);
        assert_eq!(unavailable_count(&attempts, Operation::Capture), 1);
        assert_eq!(unavailable_count(&attempts, Operation::Authorize), 0);
    }
}
