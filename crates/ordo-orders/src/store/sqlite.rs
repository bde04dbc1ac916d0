//! The SQLite implementation of [`OrderStore`], one database file behind
//! a writer thread.

use std::collections::HashMap;
use std::str::FromStr;

use ordo_bus::Envelope;
use ordo_events::Address;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, Quantity, StoreError};
use ordo_sqlite::{Database, outbox_append, record_inbox, store_error, time};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use rust_decimal::Decimal;

use super::{
    Applied, CountBucket, InboxKey, LIVE_STATUSES_SQL, LatencyBucket, OrderFilter, OrderStore,
    StageLatencies, TimelineAppend, TimelineEntry, bucket_seconds, bucket_start,
    check_attribute_filter, percentile_cont,
};
use crate::domain::{CatalogEntry, Order, OrderItem, OrderStatus};

pub struct SqliteOrderStore {
    db: Database,
}

impl SqliteOrderStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const ORDER_COLUMNS: &str = "id, customer_id, status, cancellation_reason, currency, total, market, \
     shipping_address, payment_token, attributes, idempotency_key, version, created_at, updated_at, cancel_requested";

fn bad(what: &str) -> StoreError {
    StoreError::Other(anyhow::anyhow!("bad {what} in the orders database"))
}

fn decimal(s: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(s).map_err(|_| bad("decimal"))
}

fn order_row(row: &Row<'_>) -> Result<Order, StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    let status = get(2)?;
    Ok(Order {
        id: OrderId::parse(&get(0)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(&get(1)?).map_err(|_| bad("customer id"))?,
        status: OrderStatus::parse(&status).ok_or_else(|| bad("status"))?,
        cancellation_reason: row.get(3).map_err(store_error)?,
        currency: Currency::parse(&get(4)?).map_err(|_| bad("currency"))?,
        total: decimal(&get(5)?)?,
        market: get(6)?,
        shipping_address: serde_json::from_str::<Address>(&get(7)?).map_err(|_| bad("address"))?,
        payment_token: get(8)?,
        attributes: serde_json::from_str(&get(9)?).map_err(|_| bad("attributes"))?,
        items: Vec::new(),
        idempotency_key: row.get(10).map_err(store_error)?,
        version: row.get(11).map_err(store_error)?,
        created_at: time::from_sql(&get(12)?)?,
        updated_at: time::from_sql(&get(13)?)?,
        cancel_requested: row.get(14).map_err(store_error)?,
    })
}

fn item_row(row: &Row<'_>) -> Result<(String, OrderItem), StoreError> {
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(store_error) };
    let quantity: i64 = row.get(6).map_err(store_error)?;
    Ok((
        get(0)?,
        OrderItem {
            product_id: ProductId::parse(&get(2)?).map_err(|_| bad("product id"))?,
            sku: get(3)?,
            name: get(4)?,
            seller_id: ClientId::parse(&get(5)?).map_err(|_| bad("seller id"))?,
            quantity: Quantity::new(quantity).map_err(|_| bad("quantity"))?,
            unit_price: decimal(&get(7)?)?,
            line_total: decimal(&get(8)?)?,
        },
    ))
}

/// Loads the items of `orders` in one query and attaches them.
fn attach_items(conn: &Connection, orders: &mut [Order]) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let placeholders = vec!["?"; orders.len()].join(", ");
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT order_id, line_no, product_id, sku, name, seller_id, quantity, unit_price, line_total
             FROM order_items WHERE order_id IN ({placeholders}) ORDER BY order_id, line_no"
        ))
        .map_err(store_error)?;
    let ids: Vec<String> = orders.iter().map(|o| o.id.to_string()).collect();
    let mut rows = stmt
        .query(params_from_iter(ids.iter()))
        .map_err(store_error)?;
    let index: HashMap<String, usize> =
        ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
    while let Some(row) = rows.next().map_err(store_error)? {
        let (order_id, item) = item_row(row)?;
        if let Some(&i) = index.get(&order_id) {
            orders[i].items.push(item);
        }
    }
    Ok(())
}

fn query_orders(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Order>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let mut rows = stmt.query(params).map_err(store_error)?;
    let mut orders = Vec::new();
    while let Some(row) = rows.next().map_err(store_error)? {
        orders.push(order_row(row)?);
    }
    drop(rows);
    attach_items(conn, &mut orders)?;
    Ok(orders)
}

/// `attributes` holds `key` with exactly `value` (a scalar), as
/// PostgreSQL's `attributes @> {"key": value}` decides it: `json_type` tells
/// a JSON null from a missing key and `true` from `1`; numbers compare by
/// value whether stored as integers or reals.
fn attribute_condition(
    key: &str,
    value: &serde_json::Value,
    conditions: &mut Vec<String>,
    values: &mut Vec<SqlValue>,
) {
    use serde_json::Value;
    // A quoted path step cannot hold a double quote: such a key is looked
    // up among the object's members instead.
    let (ty, extracted, path) = if key.contains('"') {
        (
            "(SELECT j.type FROM json_each(o.attributes) j WHERE j.key = ?)",
            "(SELECT j.atom FROM json_each(o.attributes) j WHERE j.key = ?)",
            key.to_owned(),
        )
    } else {
        (
            "json_type(o.attributes, ?)",
            "json_extract(o.attributes, ?)",
            format!("$.\"{key}\""),
        )
    };
    let path = SqlValue::Text(path);
    let (condition, value) = match value {
        Value::Null => (format!("{ty} = 'null'"), None),
        Value::Bool(true) => (format!("{ty} = 'true'"), None),
        Value::Bool(false) => (format!("{ty} = 'false'"), None),
        Value::String(s) => (
            format!("({ty} = 'text' AND {extracted} = ?)"),
            Some(SqlValue::Text(s.clone())),
        ),
        Value::Number(n) => (
            format!("({ty} IN ('integer', 'real') AND {extracted} = ?)"),
            Some(match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => SqlValue::Integer(i),
                (None, Some(f)) => SqlValue::Real(f),
                (None, None) => SqlValue::Null,
            }),
        ),
        // Refused before the query is built.
        Value::Array(_) | Value::Object(_) => ("0".to_owned(), None),
    };
    conditions.push(condition);
    values.push(path.clone());
    if let Some(value) = value {
        values.push(path);
        values.push(value);
    }
}

#[async_trait::async_trait]
impl OrderStore for SqliteOrderStore {
    async fn create(&self, order: Order, created: Envelope) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                let address = serde_json::to_string(&order.shipping_address).map_err(|e| StoreError::Other(e.into()))?;
                tx.prepare_cached(&format!(
                    "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        order.id.to_string(),
                        order.customer_id.to_string(),
                        order.status.as_str(),
                        order.cancellation_reason,
                        order.currency.as_str(),
                        order.total.to_string(),
                        order.market,
                        address,
                        order.payment_token,
                        order.attributes.to_string(),
                        order.idempotency_key,
                        order.version,
                        time::to_sql(order.created_at),
                        time::to_sql(order.updated_at),
                        order.cancel_requested,
                    ])
                })
                .map_err(store_error)?;
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO order_items (order_id, line_no, product_id, sku, name, seller_id, quantity, unit_price, line_total)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .map_err(store_error)?;
                for (line_no, item) in order.items.iter().enumerate() {
                    stmt.execute(params![
                        order.id.to_string(),
                        line_no,
                        item.product_id.to_string(),
                        item.sku,
                        item.name,
                        item.seller_id.to_string(),
                        item.quantity.get(),
                        item.unit_price.to_string(),
                        item.line_total.to_string(),
                    ])
                    .map_err(store_error)?;
                }
                outbox_append(tx, &created)
            })
            .await
    }

    async fn get(&self, id: OrderId) -> Result<Order, StoreError> {
        self.db
            .read(move |conn| {
                query_orders(
                    conn,
                    &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
                    [id.to_string()],
                )?
                .pop()
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn find_by_idempotency_key(
        &self,
        customer: ClientId,
        key: &str,
    ) -> Result<Option<Order>, StoreError> {
        let key = key.to_owned();
        self.db
            .read(move |conn| {
                Ok(query_orders(
                    conn,
                    &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = ?1 AND idempotency_key = ?2"),
                    params![customer.to_string(), key],
                )?
                .pop())
            })
            .await
    }

    async fn list(&self, filter: OrderFilter, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.db
            .read(move |conn| {
                // Only the filters present go into the statement, so that
                // the planner picks the index that serves them.
                check_attribute_filter(&filter.attributes)?;
                let mut conditions: Vec<String> = Vec::new();
                let mut values: Vec<SqlValue> = Vec::new();
                if let Some(status) = filter.status {
                    conditions.push("o.status = ?".to_owned());
                    values.push(SqlValue::Text(status.as_str().to_owned()));
                }
                if let Some(customer) = filter.customer {
                    conditions.push("o.customer_id = ?".to_owned());
                    values.push(SqlValue::Text(customer.to_string()));
                }
                if let Some(seller) = filter.seller {
                    conditions.push(
                        "o.id IN (SELECT i.order_id FROM order_items i WHERE i.seller_id = ?)"
                            .to_owned(),
                    );
                    values.push(SqlValue::Text(seller.to_string()));
                }
                if let Some(from) = filter.created_from {
                    conditions.push("o.created_at >= ?".to_owned());
                    values.push(SqlValue::Text(time::to_sql(from)));
                }
                if let Some(to) = filter.created_to {
                    conditions.push("o.created_at < ?".to_owned());
                    values.push(SqlValue::Text(time::to_sql(to)));
                }
                if let Some(before) = filter.before {
                    conditions.push("o.id < ?".to_owned());
                    values.push(SqlValue::Text(before.to_string()));
                }
                for (key, value) in &filter.attributes {
                    attribute_condition(key, value, &mut conditions, &mut values);
                }
                let columns = ORDER_COLUMNS
                    .split(", ")
                    .map(|c| format!("o.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let where_clause = if conditions.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", conditions.join(" AND "))
                };
                let sql = format!(
                    "SELECT {columns} FROM orders o {where_clause} ORDER BY o.id DESC LIMIT {limit}"
                );
                query_orders(conn, &sql, params_from_iter(values.iter()))
            })
            .await
    }

    async fn unchanged_since(
        &self,
        status: OrderStatus,
        changed_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError> {
        self.db
            .read(move |conn| {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                query_orders(
                    conn,
                    &format!(
                        "SELECT {ORDER_COLUMNS} FROM orders
                         WHERE status = ?1 AND status IN {LIVE_STATUSES_SQL} AND updated_at < ?2
                         ORDER BY updated_at, id LIMIT ?3"
                    ),
                    params![status.as_str(), time::to_sql(changed_before), limit],
                )
            })
            .await
    }

    async fn save_transition(
        &self,
        order: Order,
        expected_version: i64,
        events: Vec<Envelope>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, inbox.as_ref())? {
                    return Ok(Applied::Duplicate);
                }
                let changed = tx
                    .prepare_cached(
                        "UPDATE orders SET status = ?1, cancellation_reason = ?2, version = ?3, updated_at = ?4,
                            cancel_requested = ?7
                         WHERE id = ?5 AND version = ?6",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            order.status.as_str(),
                            order.cancellation_reason,
                            order.version,
                            time::to_sql(order.updated_at),
                            order.id.to_string(),
                            expected_version,
                            order.cancel_requested,
                        ])
                    })
                    .map_err(store_error)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(format!(
                        "order {} is no longer at version {expected_version}",
                        order.id
                    )));
                }
                for event in &events {
                    outbox_append(tx, event)?;
                }
                Ok(Applied::Done)
            })
            .await
    }

    async fn catalog(
        &self,
        ids: Vec<ProductId>,
    ) -> Result<HashMap<ProductId, CatalogEntry>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT product_id, sku, name, price, currency, seller_id, active, version
                         FROM catalog WHERE product_id = ?1",
                    )
                    .map_err(store_error)?;
                let mut found = HashMap::with_capacity(ids.len());
                for id in ids {
                    let row = stmt
                        .query_row([id.to_string()], |r| {
                            Ok((
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                                r.get::<_, String>(5)?,
                                r.get::<_, bool>(6)?,
                                r.get::<_, i64>(7)?,
                            ))
                        })
                        .optional()
                        .map_err(store_error)?;
                    if let Some((sku, name, price, currency, seller, active, version)) = row {
                        found.insert(
                            id,
                            CatalogEntry {
                                product_id: id,
                                sku,
                                name,
                                price: decimal(&price)?,
                                currency: Currency::parse(&currency)
                                    .map_err(|_| bad("currency"))?,
                                seller_id: ClientId::parse(&seller)
                                    .map_err(|_| bad("seller id"))?,
                                active,
                                version,
                            },
                        );
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn upsert_catalog(
        &self,
        entry: CatalogEntry,
        inbox: InboxKey,
    ) -> Result<Applied, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, Some(&inbox))? {
                    return Ok(Applied::Duplicate);
                }
                tx.prepare_cached(
                    "INSERT INTO catalog (product_id, sku, name, price, currency, seller_id, active, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (product_id) DO UPDATE SET
                        sku = excluded.sku, name = excluded.name, price = excluded.price,
                        currency = excluded.currency, seller_id = excluded.seller_id,
                        active = excluded.active, version = excluded.version
                     WHERE excluded.version > catalog.version",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        entry.product_id.to_string(),
                        entry.sku,
                        entry.name,
                        entry.price.to_string(),
                        entry.currency.as_str(),
                        entry.seller_id.to_string(),
                        entry.active,
                        entry.version
                    ])
                })
                .map_err(store_error)?;
                Ok(Applied::Done)
            })
            .await
    }

    async fn append_timeline(
        &self,
        order: OrderId,
        event: Envelope,
        after: Option<i64>,
        inbox: InboxKey,
    ) -> Result<TimelineAppend, StoreError> {
        self.db
            .write(move |tx| {
                let order_id = order.to_string();
                if let Some(previous) = after {
                    let present: Option<i64> = tx
                        .prepare_cached("SELECT 1 FROM timeline WHERE order_id = ?1 AND sequence = ?2")
                        .and_then(|mut s| s.query_row(params![order_id, previous], |r| r.get(0)).optional())
                        .map_err(store_error)?;
                    if present.is_none() {
                        return Ok(TimelineAppend::Early);
                    }
                }
                if !record_inbox(tx, Some(&inbox))? {
                    return Ok(TimelineAppend::Duplicate);
                }
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO timeline (order_id, seq, event_id, event_type, at, actor, correlation_id, sequence, data)
                         SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
                         FROM timeline WHERE order_id = ?1
                         ON CONFLICT (order_id, event_id) DO NOTHING",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            order_id,
                            event.id.to_string(),
                            event.name(),
                            time::to_sql(event.time),
                            event.actor,
                            event.correlationid,
                            event.sequence,
                            event.data.get(),
                        ])
                    })
                    .map_err(store_error)?;
                Ok(if inserted == 1 { TimelineAppend::Appended } else { TimelineAppend::Duplicate })
            })
            .await
    }

    async fn timeline(&self, order: OrderId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, event_id, event_type, at, actor, correlation_id, data
                         FROM timeline WHERE order_id = ?1 ORDER BY seq",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([order.to_string()]).map_err(store_error)?;
                let mut entries = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let at: String = r.get(3).map_err(store_error)?;
                    let data: String = r.get(6).map_err(store_error)?;
                    entries.push(TimelineEntry {
                        seq: r.get(0).map_err(store_error)?,
                        event_id: r.get(1).map_err(store_error)?,
                        event_type: r.get(2).map_err(store_error)?,
                        at: time::from_sql(&at)?,
                        actor: r.get(4).map_err(store_error)?,
                        correlation_id: r.get(5).map_err(store_error)?,
                        data: serde_json::from_str(&data).map_err(|_| bad("timeline data"))?,
                    });
                }
                Ok(entries)
            })
            .await
    }

    async fn counts_by_status(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(OrderStatus, u64)>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT status, count(*) FROM orders WHERE created_at >= ?1 GROUP BY status",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([time::to_sql(since)]).map_err(store_error)?;
                let mut counts = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let status: String = r.get(0).map_err(store_error)?;
                    let count: i64 = r.get(1).map_err(store_error)?;
                    counts.push((
                        OrderStatus::parse(&status).ok_or_else(|| bad("status"))?,
                        u64::try_from(count).unwrap_or(0),
                    ));
                }
                Ok(counts)
            })
            .await
    }

    async fn created_per_bucket(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        bucket: std::time::Duration,
    ) -> Result<Vec<CountBucket>, StoreError> {
        let secs = bucket_seconds(bucket);
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT CAST(strftime('%s', created_at) AS INTEGER) / ?2 AS b, count(*)
                         FROM orders WHERE created_at >= ?1 GROUP BY b ORDER BY b",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt
                    .query(params![time::to_sql(since), secs])
                    .map_err(store_error)?;
                let mut buckets = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let index: i64 = r.get(0).map_err(store_error)?;
                    let count: i64 = r.get(1).map_err(store_error)?;
                    buckets.push(CountBucket {
                        start: bucket_start(index, secs)?,
                        count: u64::try_from(count).unwrap_or(0),
                    });
                }
                Ok(buckets)
            })
            .await
    }

    async fn cancellations_by_reason(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT coalesce(cancellation_reason, ''), count(*) FROM orders
                         WHERE status = 'cancelled' AND created_at >= ?1
                         GROUP BY 1 ORDER BY 2 DESC, 1",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([time::to_sql(since)]).map_err(store_error)?;
                let mut reasons = Vec::new();
                while let Some(r) = rows.next().map_err(store_error)? {
                    let count: i64 = r.get(1).map_err(store_error)?;
                    reasons.push((
                        r.get(0).map_err(store_error)?,
                        u64::try_from(count).unwrap_or(0),
                    ));
                }
                Ok(reasons)
            })
            .await
    }

    async fn stage_latencies(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        bucket: std::time::Duration,
    ) -> Result<StageLatencies, StoreError> {
        let secs = bucket_seconds(bucket);
        self.db
            .read(move |conn| {
                // SQLite has no percentile aggregate: the few rows of the
                // window are read and the percentiles computed here, as
                // PostgreSQL's percentile_cont would.
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT o.created_at,
                            (SELECT min(t.at) FROM timeline t
                             WHERE t.order_id = o.id AND t.event_type = 'order.paid'),
                            (SELECT min(t.at) FROM timeline t
                             WHERE t.order_id = o.id AND t.event_type = 'order.shipped')
                         FROM orders o WHERE o.created_at >= ?1",
                    )
                    .map_err(store_error)?;
                let mut rows = stmt.query([time::to_sql(since)]).map_err(store_error)?;
                let mut paid: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
                let mut shipped: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
                let seconds = |from: chrono::DateTime<chrono::Utc>,
                               to: chrono::DateTime<chrono::Utc>| {
                    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
                };
                while let Some(r) = rows.next().map_err(store_error)? {
                    let created: String = r.get(0).map_err(store_error)?;
                    let Some(paid_at) = r.get::<_, Option<String>>(1).map_err(store_error)? else {
                        continue;
                    };
                    let created = time::from_sql(&created)?;
                    let paid_at = time::from_sql(&paid_at)?;
                    paid.entry(paid_at.timestamp().div_euclid(secs))
                        .or_default()
                        .push(seconds(created, paid_at));
                    if let Some(shipped_at) = r.get::<_, Option<String>>(2).map_err(store_error)? {
                        let shipped_at = time::from_sql(&shipped_at)?;
                        shipped
                            .entry(shipped_at.timestamp().div_euclid(secs))
                            .or_default()
                            .push(seconds(paid_at, shipped_at));
                    }
                }
                let summarize = |buckets: std::collections::BTreeMap<i64, Vec<f64>>| {
                    buckets
                        .into_iter()
                        .map(|(index, mut values)| {
                            values.sort_by(f64::total_cmp);
                            Ok(LatencyBucket {
                                start: bucket_start(index, secs)?,
                                count: values.len() as u64,
                                p50_seconds: percentile_cont(&values, 0.5),
                                p95_seconds: percentile_cont(&values, 0.95),
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                };
                Ok(StageLatencies {
                    create_to_paid: summarize(paid)?,
                    paid_to_shipped: summarize(shipped)?,
                })
            })
            .await
    }
}
