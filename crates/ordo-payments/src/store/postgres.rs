//! The PostgreSQL implementation of [`PaymentStore`], in the `payments`
//! schema.
//!
//! The service serialises the work on one order with an in-process lock;
//! with several processes that lock guards nothing, so the store settles
//! every guarded write inside its transaction:
//! - a payment change is an `UPDATE … WHERE version = $expected`; under
//!   READ COMMITTED a concurrent writer of the row makes it wait and
//!   re-check the version against the committed row, so of two processes
//!   storing a capture (or a capture and a void) exactly one applies and
//!   the other gets `Conflict`, and the CHECK constraints keep captured ≤
//!   authorized, refunded ≤ captured and one capture at most whatever a
//!   writer sends;
//! - creating a payment and remembering a cancelled order each check the
//!   other's row, which may not exist yet, so both first take a
//!   transaction-scoped advisory lock on the order: they serialise, and the
//!   second sees what the first committed;
//! - an attempt's sequence number is the payment's max + 1, computed after
//!   locking the payment row, so concurrent recorders queue instead of
//!   colliding on the key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_kernel::{ClientId, Currency, OrderId, StoreError};
use ordo_postgres::{
    GenericClient, PgDatabase, Row, Transaction, bad_value, outbox_append, record_inbox,
    store_error,
};
use tokio_postgres::types::FromSql;

use super::{
    AttemptResult, Created, InboxKey, NewAttempt, PaymentStore, PaymentTotals, PaymentWrite, Saved,
    totals_of,
};
use crate::domain::{
    Attempt, Operation, Outcome, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus,
};

pub struct PgPaymentStore {
    db: PgDatabase,
}

impl PgPaymentStore {
    /// The store over a database connected with [`super::PG_MIGRATIONS`].
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, customer_id, amount, currency, token, status, \
     authorized, captured, refunded, capture_count, authorization_ref, capture_ref, \
     failure_reason, version, created_at, updated_at";

const REFUND_COLUMNS: &str =
    "id, payment_id, amount, reason, status, gateway_ref, failure_reason, created_at, updated_at";

const ATTEMPT_COLUMNS: &str = "payment_id, seq, operation, idempotency_key, amount, refund_id, \
     outcome, detail, started_at, finished_at";

fn bad(what: &str) -> StoreError {
    bad_value(what, "payments")
}

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(store_error)
}

fn payment_row(row: &Row) -> Result<Payment, StoreError> {
    let capture_count: i32 = col(row, 10)?;
    Ok(Payment {
        id: PaymentId::parse(col(row, 0)?).map_err(|_| bad("payment id"))?,
        order_id: OrderId::parse(col(row, 1)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(col(row, 2)?).map_err(|_| bad("customer id"))?,
        amount: col(row, 3)?,
        currency: Currency::parse(col(row, 4)?).map_err(|_| bad("currency"))?,
        token: col(row, 5)?,
        status: PaymentStatus::parse(col(row, 6)?).ok_or_else(|| bad("status"))?,
        authorized: col(row, 7)?,
        captured: col(row, 8)?,
        refunded: col(row, 9)?,
        capture_count: u32::try_from(capture_count).map_err(|_| bad("capture count"))?,
        authorization_ref: col(row, 11)?,
        capture_ref: col(row, 12)?,
        failure_reason: col(row, 13)?,
        version: col(row, 14)?,
        created_at: col(row, 15)?,
        updated_at: col(row, 16)?,
    })
}

fn refund_row(row: &Row) -> Result<Refund, StoreError> {
    Ok(Refund {
        id: RefundId::parse(col(row, 0)?).map_err(|_| bad("refund id"))?,
        payment_id: PaymentId::parse(col(row, 1)?).map_err(|_| bad("payment id"))?,
        amount: col(row, 2)?,
        reason: col(row, 3)?,
        status: RefundStatus::parse(col(row, 4)?).ok_or_else(|| bad("refund status"))?,
        gateway_ref: col(row, 5)?,
        failure_reason: col(row, 6)?,
        created_at: col(row, 7)?,
        updated_at: col(row, 8)?,
    })
}

fn attempt_row(row: &Row) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        payment_id: PaymentId::parse(col(row, 0)?).map_err(|_| bad("payment id"))?,
        seq: col(row, 1)?,
        operation: Operation::parse(col(row, 2)?).ok_or_else(|| bad("operation"))?,
        idempotency_key: col(row, 3)?,
        amount: col(row, 4)?,
        refund_id: col::<Option<&str>>(row, 5)?
            .map(|r| RefundId::parse(r).map_err(|_| bad("refund id")))
            .transpose()?,
        outcome: col::<Option<&str>>(row, 6)?
            .map(|o| Outcome::parse(o).ok_or_else(|| bad("outcome")))
            .transpose()?,
        detail: col(row, 7)?,
        started_at: col(row, 8)?,
        finished_at: col(row, 9)?,
    })
}

async fn payment_where<C: GenericClient>(
    client: &C,
    filter: &str,
    key: &str,
) -> Result<Option<Payment>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE {filter} = $1"
        ))
        .await
        .map_err(store_error)?;
    client
        .query_opt(&stmt, &[&key])
        .await
        .map_err(store_error)?
        .as_ref()
        .map(payment_row)
        .transpose()
}

/// Serialises the transactions that decide about one order (creating its
/// payment, remembering its cancellation) across processes. Keyed in a
/// namespace of its own, apart from the migrations' lock and other
/// services'.
async fn lock_order(tx: &Transaction<'_>, order: OrderId) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtext('payments.order'), hashtext($1))")
        .await
        .map_err(store_error)?;
    tx.execute(&stmt, &[&order.to_string()])
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn is_cancelled<C: GenericClient>(client: &C, order: OrderId) -> Result<bool, StoreError> {
    let stmt = client
        .prepare_cached("SELECT 1 FROM cancelled_orders WHERE order_id = $1")
        .await
        .map_err(store_error)?;
    Ok(client
        .query_opt(&stmt, &[&order.to_string()])
        .await
        .map_err(store_error)?
        .is_some())
}

async fn insert_attempt(tx: &Transaction<'_>, attempt: &NewAttempt) -> Result<i64, StoreError> {
    let payment_id = attempt.payment_id.to_string();
    // The row lock queues concurrent recorders of this payment; max(seq)
    // is read after it, so each sees the others' committed attempts. An
    // unknown payment is left to the foreign key, as on SQLite.
    let lock = tx
        .prepare_cached("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .await
        .map_err(store_error)?;
    tx.query_opt(&lock, &[&payment_id])
        .await
        .map_err(store_error)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO payment_attempts
                (payment_id, seq, operation, idempotency_key, amount, refund_id, started_at)
             SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6
             FROM payment_attempts WHERE payment_id = $1
             RETURNING seq",
        )
        .await
        .map_err(store_error)?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &payment_id,
                &attempt.operation.as_str(),
                &attempt.idempotency_key,
                &attempt.amount,
                &attempt.refund_id.map(|r| r.to_string()),
                &attempt.started_at,
            ],
        )
        .await
        .map_err(store_error)?;
    col(&row, 0)
}

async fn insert_payment(tx: &Transaction<'_>, p: &Payment) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &p.id.to_string(),
            &p.order_id.to_string(),
            &p.customer_id.to_string(),
            &p.amount,
            &p.currency.as_str(),
            &p.token,
            &p.status.as_str(),
            &p.authorized,
            &p.captured,
            &p.refunded,
            &capture_count(p)?,
            &p.authorization_ref,
            &p.capture_ref,
            &p.failure_reason,
            &p.version,
            &p.created_at,
            &p.updated_at,
        ],
    )
    .await
    .map_err(store_error)?;
    Ok(())
}

fn capture_count(p: &Payment) -> Result<i32, StoreError> {
    i32::try_from(p.capture_count)
        .map_err(|_| StoreError::Other(anyhow::anyhow!("capture count {}", p.capture_count)))
}

async fn update_payment(
    tx: &Transaction<'_>,
    p: &Payment,
    expected_version: i64,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE payments SET status = $1, authorized = $2, captured = $3, refunded = $4,
                capture_count = $5, authorization_ref = $6, capture_ref = $7,
                failure_reason = $8, version = $9, updated_at = $10
             WHERE id = $11 AND version = $12",
        )
        .await
        .map_err(store_error)?;
    let changed = tx
        .execute(
            &stmt,
            &[
                &p.status.as_str(),
                &p.authorized,
                &p.captured,
                &p.refunded,
                &capture_count(p)?,
                &p.authorization_ref,
                &p.capture_ref,
                &p.failure_reason,
                &p.version,
                &p.updated_at,
                &p.id.to_string(),
                &expected_version,
            ],
        )
        .await
        .map_err(store_error)?;
    if changed == 0 {
        return Err(StoreError::Conflict(format!(
            "payment {} is no longer at version {expected_version}",
            p.id
        )));
    }
    Ok(())
}

async fn finish_attempt(tx: &Transaction<'_>, result: &AttemptResult) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE payment_attempts SET outcome = $1, detail = $2, finished_at = $3
             WHERE payment_id = $4 AND seq = $5",
        )
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &result.outcome.as_str(),
            &result.detail,
            &result.at,
            &result.payment_id.to_string(),
            &result.seq,
        ],
    )
    .await
    .map_err(store_error)?;
    Ok(())
}

async fn upsert_refund(tx: &Transaction<'_>, r: &Refund) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                gateway_ref = excluded.gateway_ref, failure_reason = excluded.failure_reason,
                updated_at = excluded.updated_at"
        ))
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &r.id.to_string(),
            &r.payment_id.to_string(),
            &r.amount,
            &r.reason,
            &r.status.as_str(),
            &r.gateway_ref,
            &r.failure_reason,
            &r.created_at,
            &r.updated_at,
        ],
    )
    .await
    .map_err(store_error)?;
    Ok(())
}

async fn apply(tx: &Transaction<'_>, write: &PaymentWrite) -> Result<Saved, StoreError> {
    if !record_inbox(tx, write.inbox.as_ref()).await? {
        return Ok(Saved::Duplicate);
    }
    if let Some((payment, expected_version)) = &write.payment {
        update_payment(tx, payment, *expected_version).await?;
    }
    if let Some(result) = &write.finished {
        finish_attempt(tx, result).await?;
    }
    if let Some(refund) = &write.refund {
        upsert_refund(tx, refund).await?;
    }
    let next_attempt = match &write.next_attempt {
        Some(attempt) => Some(insert_attempt(tx, attempt).await?),
        None => None,
    };
    for event in &write.events {
        outbox_append(tx, event).await?;
    }
    Ok(Saved::Done { next_attempt })
}

#[async_trait::async_trait]
impl PaymentStore for PgPaymentStore {
    async fn create(&self, payment: Payment, first: NewAttempt) -> Result<Created, StoreError> {
        self.db
            .transaction(|tx| {
                let payment = payment.clone();
                let first = first.clone();
                Box::pin(async move {
                    lock_order(tx, payment.order_id).await?;
                    if is_cancelled(tx, payment.order_id).await? {
                        return Ok(Created::OrderCancelled);
                    }
                    let order = payment.order_id.to_string();
                    if let Some(existing) = payment_where(tx, "order_id", &order).await? {
                        return Ok(Created::Existing(Box::new(existing)));
                    }
                    insert_payment(tx, &payment).await?;
                    let attempt = insert_attempt(tx, &first).await?;
                    Ok(Created::Created { attempt })
                })
            })
            .await
    }

    async fn get(&self, id: PaymentId) -> Result<Payment, StoreError> {
        // The primary: a refund reads the payment it then updates.
        let conn = self.db.conn().await?;
        payment_where(&conn, "id", &id.to_string())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn for_order(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
        // Serves `GET /v1/orders/{id}/payments` only: a replica may answer.
        let conn = self.db.read_conn().await?;
        payment_where(&conn, "order_id", &order.to_string()).await
    }

    async fn record_attempt(&self, attempt: NewAttempt) -> Result<i64, StoreError> {
        self.db
            .transaction(|tx| {
                let attempt = attempt.clone();
                Box::pin(async move { insert_attempt(tx, &attempt).await })
            })
            .await
    }

    async fn attempts(&self, payment: PaymentId) -> Result<Vec<Attempt>, StoreError> {
        // The primary: the stored keys decide the next gateway call.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE payment_id = $1 ORDER BY seq"
            ))
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[&payment.to_string()])
            .await
            .map_err(store_error)?
            .iter()
            .map(attempt_row)
            .collect()
    }

    async fn refunds(&self, payment: PaymentId) -> Result<Vec<Refund>, StoreError> {
        // The primary: pending refunds are resumed from this list.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id"
            ))
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[&payment.to_string()])
            .await
            .map_err(store_error)?
            .iter()
            .map(refund_row)
            .collect()
    }

    async fn save(&self, write: PaymentWrite) -> Result<Saved, StoreError> {
        // Shared, not cloned, by the re-runs of the transaction.
        let write = Arc::new(write);
        self.db
            .transaction(|tx| {
                let write = write.clone();
                Box::pin(async move { apply(tx, &write).await })
            })
            .await
    }

    async fn record_cancellation(
        &self,
        order: OrderId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError> {
        self.db
            .transaction(|tx| {
                let reason = reason.to_owned();
                Box::pin(async move {
                    lock_order(tx, order).await?;
                    let order = order.to_string();
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO cancelled_orders (order_id, reason, cancelled_at)
                             VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
                        )
                        .await
                        .map_err(store_error)?;
                    tx.execute(&stmt, &[&order, &reason, &at])
                        .await
                        .map_err(store_error)?;
                    payment_where(tx, "order_id", &order).await
                })
            })
            .await
    }

    async fn is_cancelled(&self, order: OrderId) -> Result<bool, StoreError> {
        // The primary: read before every gateway call, to stop a charge.
        let conn = self.db.conn().await?;
        is_cancelled(&conn, order).await
    }

    async fn is_processed(&self, inbox: &InboxKey) -> Result<bool, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
            .await
            .map_err(store_error)?;
        Ok(conn
            .query_opt(&stmt, &[&inbox.consumer, &inbox.event_id])
            .await
            .map_err(store_error)?
            .is_some())
    }

    async fn mark_processed(&self, inbox: InboxKey) -> Result<Saved, StoreError> {
        self.db
            .transaction(|tx| {
                let inbox = inbox.clone();
                Box::pin(async move {
                    Ok(if record_inbox(tx, Some(&inbox)).await? {
                        Saved::Done { next_attempt: None }
                    } else {
                        Saved::Duplicate
                    })
                })
            })
            .await
    }

    async fn totals(&self, order: OrderId) -> Result<Option<PaymentTotals>, StoreError> {
        // The primary: the invariant checker must see every commit.
        let conn = self.db.conn().await?;
        Ok(payment_where(&conn, "order_id", &order.to_string())
            .await?
            .map(totals_of))
    }

    async fn all_totals(&self) -> Result<Vec<PaymentTotals>, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY order_id"
            ))
            .await
            .map_err(store_error)?;
        conn.query(&stmt, &[])
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| payment_row(row).map(totals_of))
            .collect()
    }
}
