//! Payments storage: the trait the service uses, and its implementations
//! on SQLite ([`SqlitePaymentStore`]) and PostgreSQL ([`PgPaymentStore`]).
//! SQL lives here and nowhere else in this crate.

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
pub use ordo_bus::{Applied, InboxKey};
use ordo_kernel::{Currency, Migration, MigrationSet, OrderId, StoreError};
use rust_decimal::Decimal;

use crate::domain::{
    Attempt, Operation, Outcome, Payment, PaymentId, PaymentStatus, Refund, RefundId,
};

mod postgres;
mod sqlite;

pub use postgres::PgPaymentStore;
pub use sqlite::SqlitePaymentStore;

/// The SQLite migrations of the payments database.
pub const MIGRATIONS: [MigrationSet; 2] = [
    ordo_sqlite::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "payments",
        migrations: &[Migration {
            version: 1,
            name: "payments, attempts, refunds, cancelled orders",
            sql: include_str!("../../migrations/sqlite/0001_payments.sql"),
        }],
    },
];

/// The PostgreSQL migrations of the `payments` schema.
pub const PG_MIGRATIONS: [MigrationSet; 2] = [
    ordo_postgres::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "payments",
        migrations: &[Migration {
            version: 1,
            name: "payments, attempts, refunds, cancelled orders",
            sql: include_str!("../../migrations/postgres/0001_payments.sql"),
        }],
    },
];

/// A gateway call about to be made.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttempt {
    pub payment_id: PaymentId,
    pub operation: Operation,
    pub idempotency_key: String,
    pub amount: Option<Decimal>,
    pub refund_id: Option<RefundId>,
    pub started_at: DateTime<Utc>,
}

/// How a recorded call ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub payment_id: PaymentId,
    pub seq: i64,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// What `create` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The payment is new; its first attempt has this sequence number.
    Created { attempt: i64 },
    /// The order already has this payment.
    Existing(Box<Payment>),
    /// The order is cancelled: nothing was written.
    OrderCancelled,
}

/// One transaction of payment changes: the payment (if the stored version
/// is still `expected_version`, else `Conflict`), the outcome of the call
/// that caused it, the call to be made next, a refund, the events, and the
/// inbox entry of the event being handled.
#[derive(Debug, Default)]
pub struct PaymentWrite {
    pub payment: Option<(Payment, i64)>,
    pub finished: Option<AttemptResult>,
    pub next_attempt: Option<NewAttempt>,
    pub refund: Option<Refund>,
    pub events: Vec<Envelope>,
    pub inbox: Option<InboxKey>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; the next attempt, if any, has this sequence number.
    Done { next_attempt: Option<i64> },
    /// The inbox already held the event: nothing was written.
    Duplicate,
}

/// The money an order moved, as the invariant checker reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentTotals {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub status: PaymentStatus,
    pub currency: Currency,
    pub captured: Decimal,
    pub refunded: Decimal,
    pub capture_count: u32,
}

#[async_trait::async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Writes a new payment with its first gateway call, unless the order
    /// already has a payment or is cancelled.
    async fn create(&self, payment: Payment, first: NewAttempt) -> Result<Created, StoreError>;
    async fn get(&self, id: PaymentId) -> Result<Payment, StoreError>;
    async fn for_order(&self, order: OrderId) -> Result<Option<Payment>, StoreError>;
    /// Records a gateway call before it is made; returns its sequence.
    async fn record_attempt(&self, attempt: NewAttempt) -> Result<i64, StoreError>;
    async fn attempts(&self, payment: PaymentId) -> Result<Vec<Attempt>, StoreError>;
    async fn refunds(&self, payment: PaymentId) -> Result<Vec<Refund>, StoreError>;
    async fn save(&self, write: PaymentWrite) -> Result<Saved, StoreError>;
    /// Remembers that the order is cancelled and returns its payment as it
    /// is at that moment, in one transaction.
    async fn record_cancellation(
        &self,
        order: OrderId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError>;
    async fn is_cancelled(&self, order: OrderId) -> Result<bool, StoreError>;
    async fn is_processed(&self, inbox: &InboxKey) -> Result<bool, StoreError>;
    /// Records the inbox entry of an event that needs no other effect.
    async fn mark_processed(&self, inbox: InboxKey) -> Result<Saved, StoreError>;
    async fn totals(&self, order: OrderId) -> Result<Option<PaymentTotals>, StoreError>;
    /// Every payment's totals, for the invariant checker.
    async fn all_totals(&self) -> Result<Vec<PaymentTotals>, StoreError>;
}

fn totals_of(p: Payment) -> PaymentTotals {
    PaymentTotals {
        order_id: p.order_id,
        payment_id: p.id,
        status: p.status,
        currency: p.currency,
        captured: p.captured,
        refunded: p.refunded,
        capture_count: p.capture_count,
    }
}
