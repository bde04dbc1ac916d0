//! The SQLite implementation of [`PaymentStore`]: one file, one writer
//! thread, so each write transaction sees every earlier one.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use ordo_kernel::{ClientId, Currency, OrderId, StoreError};
use ordo_sqlite::{Database, WriteTx, outbox_append, record_inbox, store_error, time};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rust_decimal::Decimal;

use super::{
    AttemptResult, Created, InboxKey, NewAttempt, PaymentStore, PaymentTotals, PaymentWrite, Saved,
    totals_of,
};
use crate::domain::{
    Attempt, Operation, Outcome, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus,
};

pub struct SqlitePaymentStore {
    db: Database,
}

impl SqlitePaymentStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, customer_id, amount, currency, token, status, \
     authorized, captured, refunded, capture_count, authorization_ref, capture_ref, \
     failure_reason, version, created_at, updated_at";

const REFUND_COLUMNS: &str =
    "id, payment_id, amount, reason, status, gateway_ref, failure_reason, created_at, updated_at";

fn bad(what: &str) -> StoreError {
    StoreError::Other(anyhow::anyhow!("bad {what} in the payments database"))
}

fn decimal(s: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(s).map_err(|_| bad("decimal"))
}

fn payment_row(row: &Row<'_>) -> Result<Payment, StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    let capture_count: i64 = row.get(10).map_err(store_error)?;
    Ok(Payment {
        id: PaymentId::parse(&get(0)?).map_err(|_| bad("payment id"))?,
        order_id: OrderId::parse(&get(1)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(&get(2)?).map_err(|_| bad("customer id"))?,
        amount: decimal(&get(3)?)?,
        currency: Currency::parse(&get(4)?).map_err(|_| bad("currency"))?,
        token: get(5)?,
        status: PaymentStatus::parse(&get(6)?).ok_or_else(|| bad("status"))?,
        authorized: decimal(&get(7)?)?,
        captured: decimal(&get(8)?)?,
        refunded: decimal(&get(9)?)?,
        capture_count: u32::try_from(capture_count).map_err(|_| bad("capture count"))?,
        authorization_ref: row.get(11).map_err(store_error)?,
        capture_ref: row.get(12).map_err(store_error)?,
        failure_reason: row.get(13).map_err(store_error)?,
        version: row.get(14).map_err(store_error)?,
        created_at: time::from_sql(&get(15)?)?,
        updated_at: time::from_sql(&get(16)?)?,
    })
}

fn refund_row(row: &Row<'_>) -> Result<Refund, StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    Ok(Refund {
        id: RefundId::parse(&get(0)?).map_err(|_| bad("refund id"))?,
        payment_id: PaymentId::parse(&get(1)?).map_err(|_| bad("payment id"))?,
        amount: decimal(&get(2)?)?,
        reason: get(3)?,
        status: RefundStatus::parse(&get(4)?).ok_or_else(|| bad("refund status"))?,
        gateway_ref: row.get(5).map_err(store_error)?,
        failure_reason: row.get(6).map_err(store_error)?,
        created_at: time::from_sql(&get(7)?)?,
        updated_at: time::from_sql(&get(8)?)?,
    })
}

fn attempt_row(row: &Row<'_>) -> Result<Attempt, StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    let opt = |i: usize| -> Result<Option<String>, StoreError> { row.get(i).map_err(store_error) };
    Ok(Attempt {
        payment_id: PaymentId::parse(&get(0)?).map_err(|_| bad("payment id"))?,
        seq: row.get(1).map_err(store_error)?,
        operation: Operation::parse(&get(2)?).ok_or_else(|| bad("operation"))?,
        idempotency_key: get(3)?,
        amount: opt(4)?.map(|a| decimal(&a)).transpose()?,
        refund_id: opt(5)?
            .map(|r| RefundId::parse(&r).map_err(|_| bad("refund id")))
            .transpose()?,
        outcome: opt(6)?
            .map(|o| Outcome::parse(&o).ok_or_else(|| bad("outcome")))
            .transpose()?,
        detail: opt(7)?,
        started_at: time::from_sql(&get(8)?)?,
        finished_at: opt(9)?.map(|t| time::from_sql(&t)).transpose()?,
    })
}

fn query_payments(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Payment>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let mut rows = stmt.query(params).map_err(store_error)?;
    let mut payments = Vec::new();
    while let Some(row) = rows.next().map_err(store_error)? {
        payments.push(payment_row(row)?);
    }
    Ok(payments)
}

fn payment_for_order(conn: &Connection, order: OrderId) -> Result<Option<Payment>, StoreError> {
    Ok(query_payments(
        conn,
        &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1"),
        [order.to_string()],
    )?
    .pop())
}

fn insert_attempt(tx: &WriteTx<'_>, attempt: &NewAttempt) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO payment_attempts
            (payment_id, seq, operation, idempotency_key, amount, refund_id, started_at)
         SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6
         FROM payment_attempts WHERE payment_id = ?1
         RETURNING seq",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                attempt.payment_id.to_string(),
                attempt.operation.as_str(),
                attempt.idempotency_key,
                attempt.amount.map(|a| a.to_string()),
                attempt.refund_id.map(|r| r.to_string()),
                time::to_sql(attempt.started_at),
            ],
            |r| r.get(0),
        )
    })
    .map_err(store_error)
}

fn insert_payment(tx: &WriteTx<'_>, p: &Payment) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            p.id.to_string(),
            p.order_id.to_string(),
            p.customer_id.to_string(),
            p.amount.to_string(),
            p.currency.as_str(),
            p.token,
            p.status.as_str(),
            p.authorized.to_string(),
            p.captured.to_string(),
            p.refunded.to_string(),
            p.capture_count,
            p.authorization_ref,
            p.capture_ref,
            p.failure_reason,
            p.version,
            time::to_sql(p.created_at),
            time::to_sql(p.updated_at),
        ])
    })
    .map_err(store_error)?;
    Ok(())
}

fn update_payment(tx: &WriteTx<'_>, p: &Payment, expected_version: i64) -> Result<(), StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE payments SET status = ?1, authorized = ?2, captured = ?3, refunded = ?4,
                capture_count = ?5, authorization_ref = ?6, capture_ref = ?7,
                failure_reason = ?8, version = ?9, updated_at = ?10
             WHERE id = ?11 AND version = ?12",
        )
        .and_then(|mut s| {
            s.execute(params![
                p.status.as_str(),
                p.authorized.to_string(),
                p.captured.to_string(),
                p.refunded.to_string(),
                p.capture_count,
                p.authorization_ref,
                p.capture_ref,
                p.failure_reason,
                p.version,
                time::to_sql(p.updated_at),
                p.id.to_string(),
                expected_version,
            ])
        })
        .map_err(store_error)?;
    if changed == 0 {
        return Err(StoreError::Conflict(format!(
            "payment {} is no longer at version {expected_version}",
            p.id
        )));
    }
    Ok(())
}

fn finish_attempt(tx: &WriteTx<'_>, result: &AttemptResult) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE payment_attempts SET outcome = ?1, detail = ?2, finished_at = ?3
         WHERE payment_id = ?4 AND seq = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![
            result.outcome.as_str(),
            result.detail,
            time::to_sql(result.at),
            result.payment_id.to_string(),
            result.seq,
        ])
    })
    .map_err(store_error)?;
    Ok(())
}

fn upsert_refund(tx: &WriteTx<'_>, r: &Refund) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status,
            gateway_ref = excluded.gateway_ref, failure_reason = excluded.failure_reason,
            updated_at = excluded.updated_at"
    ))
    .and_then(|mut s| {
        s.execute(params![
            r.id.to_string(),
            r.payment_id.to_string(),
            r.amount.to_string(),
            r.reason,
            r.status.as_str(),
            r.gateway_ref,
            r.failure_reason,
            time::to_sql(r.created_at),
            time::to_sql(r.updated_at),
        ])
    })
    .map_err(store_error)?;
    Ok(())
}

#[async_trait::async_trait]
impl PaymentStore for SqlitePaymentStore {
    async fn create(&self, payment: Payment, first: NewAttempt) -> Result<Created, StoreError> {
        self.db
            .write(move |tx| {
                let cancelled: Option<i64> = tx
                    .prepare_cached("SELECT 1 FROM cancelled_orders WHERE order_id = ?1")
                    .and_then(|mut s| {
                        s.query_row([payment.order_id.to_string()], |r| r.get(0))
                            .optional()
                    })
                    .map_err(store_error)?;
                if cancelled.is_some() {
                    return Ok(Created::OrderCancelled);
                }
                if let Some(existing) = payment_for_order(tx, payment.order_id)? {
                    return Ok(Created::Existing(Box::new(existing)));
                }
                insert_payment(tx, &payment)?;
                let attempt = insert_attempt(tx, &first)?;
                Ok(Created::Created { attempt })
            })
            .await
    }

    async fn get(&self, id: PaymentId) -> Result<Payment, StoreError> {
        self.db
            .read(move |conn| {
                query_payments(
                    conn,
                    &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"),
                    [id.to_string()],
                )?
                .pop()
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn for_order(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
        self.db
            .read(move |conn| payment_for_order(conn, order))
            .await
    }

    async fn record_attempt(&self, attempt: NewAttempt) -> Result<i64, StoreError> {
        self.db.write(move |tx| insert_attempt(tx, &attempt)).await
    }

    async fn attempts(&self, payment: PaymentId) -> Result<Vec<Attempt>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT payment_id, seq, operation, idempotency_key, amount, refund_id,
                            outcome, detail, started_at, finished_at
                         FROM payment_attempts WHERE payment_id = ?1 ORDER BY seq",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([payment.to_string()]).map_err(store_error)?;
                let mut attempts = Vec::new();
                while let Some(row) = rows.next().map_err(store_error)? {
                    attempts.push(attempt_row(row)?);
                }
                Ok(attempts)
            })
            .await
    }

    async fn refunds(&self, payment: PaymentId) -> Result<Vec<Refund>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = ?1 ORDER BY id"
                    ))
                    .map_err(store_error)?;
                let mut rows = stmt.query([payment.to_string()]).map_err(store_error)?;
                let mut refunds = Vec::new();
                while let Some(row) = rows.next().map_err(store_error)? {
                    refunds.push(refund_row(row)?);
                }
                Ok(refunds)
            })
            .await
    }

    async fn save(&self, write: PaymentWrite) -> Result<Saved, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, write.inbox.as_ref())? {
                    return Ok(Saved::Duplicate);
                }
                if let Some((payment, expected_version)) = &write.payment {
                    update_payment(tx, payment, *expected_version)?;
                }
                if let Some(result) = &write.finished {
                    finish_attempt(tx, result)?;
                }
                if let Some(refund) = &write.refund {
                    upsert_refund(tx, refund)?;
                }
                let next_attempt = write
                    .next_attempt
                    .as_ref()
                    .map(|a| insert_attempt(tx, a))
                    .transpose()?;
                for event in &write.events {
                    outbox_append(tx, event)?;
                }
                Ok(Saved::Done { next_attempt })
            })
            .await
    }

    async fn record_cancellation(
        &self,
        order: OrderId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Payment>, StoreError> {
        let reason = reason.to_owned();
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO cancelled_orders (order_id, reason, cancelled_at)
                     VALUES (?1, ?2, ?3) ON CONFLICT (order_id) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![order.to_string(), reason, time::to_sql(at)]))
                .map_err(store_error)?;
                payment_for_order(tx, order)
            })
            .await
    }

    async fn is_cancelled(&self, order: OrderId) -> Result<bool, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT 1 FROM cancelled_orders WHERE order_id = ?1")
                    .and_then(|mut s| {
                        s.query_row([order.to_string()], |r| r.get::<_, i64>(0))
                            .optional()
                    })
                    .map(|found| found.is_some())
                    .map_err(store_error)
            })
            .await
    }

    async fn is_processed(&self, inbox: &InboxKey) -> Result<bool, StoreError> {
        let inbox = inbox.clone();
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT 1 FROM inbox WHERE consumer = ?1 AND event_id = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![inbox.consumer, inbox.event_id], |r| {
                            r.get::<_, i64>(0)
                        })
                        .optional()
                    })
                    .map(|found| found.is_some())
                    .map_err(store_error)
            })
            .await
    }

    async fn mark_processed(&self, inbox: InboxKey) -> Result<Saved, StoreError> {
        self.db
            .write(move |tx| {
                Ok(if record_inbox(tx, Some(&inbox))? {
                    Saved::Done { next_attempt: None }
                } else {
                    Saved::Duplicate
                })
            })
            .await
    }

    async fn totals(&self, order: OrderId) -> Result<Option<PaymentTotals>, StoreError> {
        Ok(self.for_order(order).await?.map(totals_of))
    }

    async fn all_totals(&self) -> Result<Vec<PaymentTotals>, StoreError> {
        let payments = self
            .db
            .read(|conn| {
                query_payments(
                    conn,
                    &format!("SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY order_id"),
                    [],
                )
            })
            .await?;
        Ok(payments.into_iter().map(totals_of).collect())
    }
}
