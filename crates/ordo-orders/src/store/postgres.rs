//! The PostgreSQL implementation of [`OrderStore`], in the `orders` schema.
//!
//! Any number of processes may write at once, so every guarded write is
//! settled by the database inside its transaction:
//! - two creates with one idempotency key: the unique index makes the
//!   second wait for the first and then fail, read as `Conflict`;
//! - a transition is an `UPDATE … WHERE version = $expected`; under READ
//!   COMMITTED a concurrent writer of the row makes it wait and re-check the
//!   version against the committed row, so of two racing transitions one
//!   applies and the other gets `Conflict`;
//! - timeline appends of one order number their entries `max(seq) + 1`, so
//!   they first take a transaction-scoped advisory lock on the order and
//!   run one at a time.
//!
//! Statements a request issues together are sent together (pipelined on
//! the connection): one round trip instead of one each.
//!
//! Reads serving only GET endpoints (lists, timelines) may use the read
//! replica; `get` and the idempotency and catalog lookups precede writes
//! guarded on what they read, so they use the primary.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
use ordo_events::Address;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, Quantity, StoreError};
use ordo_postgres::explain::Probe;
use ordo_postgres::{
    GenericClient, PgDatabase, Row, ToSql, bad_value, outbox_append, record_inbox, store_error,
};
use rust_decimal::Decimal;
use tokio_postgres::types::FromSql;
use ulid::Ulid;

use super::{
    Applied, CountBucket, InboxKey, LIVE_STATUSES_SQL, LatencyBucket, OrderFilter, OrderStore,
    StageLatencies, TimelineAppend, TimelineEntry, bucket_seconds, bucket_start,
    check_attribute_filter,
};
use crate::domain::{CatalogEntry, Order, OrderItem, OrderStatus};

pub struct PgOrderStore {
    db: PgDatabase,
}

impl PgOrderStore {
    /// The store over a database connected with [`super::PG_MIGRATIONS`].
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const ORDER_COLUMNS: &str = "o.id, o.customer_id, o.status, o.cancellation_reason, o.currency, \
     o.total, o.market, o.shipping_address, o.payment_token, o.attributes, o.idempotency_key, \
     o.version, o.created_at, o.updated_at, o.cancel_requested";

const INSERT_ORDER: &str = "INSERT INTO orders (id, customer_id, status, cancellation_reason, \
     currency, total, market, shipping_address, payment_token, attributes, idempotency_key, \
     version, created_at, updated_at, cancel_requested)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// All the lines of one or many orders in one statement.
const INSERT_ITEMS: &str = "INSERT INTO order_items (order_id, line_no, product_id, sku, name, \
     seller_id, quantity, unit_price, line_total)
     SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::int4[], $8::numeric[], $9::numeric[])";

const ITEM_COLUMNS: &str =
    "order_id, product_id, sku, name, seller_id, quantity, unit_price, line_total";

/// How far an order's id time may be from its `created_at` and still be
/// found by a created range (see [`created_bounds`]). Both are taken from
/// the same clock within microseconds; the margin covers a wall clock
/// stepped back meanwhile (the monotonic id generator then stays ahead).
const CREATED_SLACK_MS: i64 = 60_000;

/// Timeline appends lock their order in this class of advisory locks.
const TIMELINE_LOCK: &str = "ordo.orders.timeline";

fn bad(what: &str) -> StoreError {
    bad_value(what, "orders")
}

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(store_error)
}

fn order_row(row: &Row) -> Result<Order, StoreError> {
    let address: serde_json::Value = col(row, 7)?;
    Ok(Order {
        id: OrderId::parse(col(row, 0)?).map_err(|_| bad("order id"))?,
        customer_id: ClientId::parse(col(row, 1)?).map_err(|_| bad("customer id"))?,
        status: OrderStatus::parse(col(row, 2)?).ok_or_else(|| bad("status"))?,
        cancellation_reason: col(row, 3)?,
        currency: Currency::parse(col(row, 4)?).map_err(|_| bad("currency"))?,
        total: col(row, 5)?,
        market: col(row, 6)?,
        shipping_address: serde_json::from_value::<Address>(address).map_err(|_| bad("address"))?,
        payment_token: col(row, 8)?,
        attributes: col(row, 9)?,
        items: Vec::new(),
        idempotency_key: col(row, 10)?,
        version: col(row, 11)?,
        created_at: col(row, 12)?,
        updated_at: col(row, 13)?,
        cancel_requested: col(row, 14)?,
    })
}

fn item_row(row: &Row) -> Result<(&str, OrderItem), StoreError> {
    let quantity: i32 = col(row, 5)?;
    Ok((
        col(row, 0)?,
        OrderItem {
            product_id: ProductId::parse(col(row, 1)?).map_err(|_| bad("product id"))?,
            sku: col(row, 2)?,
            name: col(row, 3)?,
            seller_id: ClientId::parse(col(row, 4)?).map_err(|_| bad("seller id"))?,
            quantity: Quantity::new(i64::from(quantity)).map_err(|_| bad("quantity"))?,
            unit_price: col(row, 6)?,
            line_total: col(row, 7)?,
        },
    ))
}

/// Orders from their rows, with the items rows attached.
fn assemble(order_rows: &[Row], item_rows: &[Row]) -> Result<Vec<Order>, StoreError> {
    let mut orders = order_rows
        .iter()
        .map(order_row)
        .collect::<Result<Vec<_>, _>>()?;
    let index: HashMap<String, usize> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| (o.id.to_string(), i))
        .collect();
    for row in item_rows {
        let (order_id, item) = item_row(row)?;
        if let Some(&i) = index.get(order_id) {
            orders[i].items.push(item);
        }
    }
    Ok(orders)
}

/// Orders selected by `sql` (whose columns are [`ORDER_COLUMNS`]), with
/// their items loaded in one more query.
async fn query_orders<C: GenericClient + Sync>(
    conn: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Order>, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(store_error)?;
    let rows = conn.query(&stmt, params).await.map_err(store_error)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?;
    let items = conn
        .prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, line_no"
        ))
        .await
        .map_err(store_error)?;
    let item_rows = conn.query(&items, &[&ids]).await.map_err(store_error)?;
    assemble(&rows, &item_rows)
}

/// The lines of orders as columns, for [`INSERT_ITEMS`].
#[derive(Default)]
struct ItemColumns {
    order_id: Vec<String>,
    line_no: Vec<i32>,
    product_id: Vec<String>,
    sku: Vec<String>,
    name: Vec<String>,
    seller_id: Vec<String>,
    quantity: Vec<i32>,
    unit_price: Vec<Decimal>,
    line_total: Vec<Decimal>,
}

impl ItemColumns {
    fn of(orders: &[Order]) -> Result<Self, StoreError> {
        let mut c = Self::default();
        for order in orders {
            for (line_no, item) in order.items.iter().enumerate() {
                c.order_id.push(order.id.to_string());
                c.line_no
                    .push(i32::try_from(line_no).map_err(|_| bad("line number"))?);
                c.product_id.push(item.product_id.to_string());
                c.sku.push(item.sku.clone());
                c.name.push(item.name.clone());
                c.seller_id.push(item.seller_id.to_string());
                c.quantity
                    .push(i32::try_from(item.quantity.get()).map_err(|_| bad("quantity"))?);
                c.unit_price.push(item.unit_price);
                c.line_total.push(item.line_total);
            }
        }
        Ok(c)
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.order_id,
            &self.line_no,
            &self.product_id,
            &self.sku,
            &self.name,
            &self.seller_id,
            &self.quantity,
            &self.unit_price,
            &self.line_total,
        ]
    }
}

/// The columns of one order row, for [`INSERT_ORDER`].
struct OrderColumns {
    id: String,
    customer_id: String,
    status: &'static str,
    cancellation_reason: Option<String>,
    currency: String,
    total: Decimal,
    market: String,
    shipping_address: serde_json::Value,
    payment_token: String,
    attributes: serde_json::Value,
    idempotency_key: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    cancel_requested: Option<String>,
}

impl OrderColumns {
    fn of(order: &Order) -> Result<Self, StoreError> {
        Ok(Self {
            id: order.id.to_string(),
            customer_id: order.customer_id.to_string(),
            status: order.status.as_str(),
            cancellation_reason: order.cancellation_reason.clone(),
            currency: order.currency.as_str().to_owned(),
            total: order.total,
            market: order.market.clone(),
            shipping_address: serde_json::to_value(&order.shipping_address)
                .map_err(|e| StoreError::Other(e.into()))?,
            payment_token: order.payment_token.clone(),
            attributes: order.attributes.clone(),
            idempotency_key: order.idempotency_key.clone(),
            version: order.version,
            created_at: order.created_at,
            updated_at: order.updated_at,
            cancel_requested: order.cancel_requested.clone(),
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.id,
            &self.customer_id,
            &self.status,
            &self.cancellation_reason,
            &self.currency,
            &self.total,
            &self.market,
            &self.shipping_address,
            &self.payment_token,
            &self.attributes,
            &self.idempotency_key,
            &self.version,
            &self.created_at,
            &self.updated_at,
            &self.cancel_requested,
        ]
    }
}

type Param = Box<dyn ToSql + Send + Sync>;

/// The id of the first order a ULID of `ms` (milliseconds since the epoch)
/// can name, if ULIDs reach that far.
fn first_id_at(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms.max(0)).ok()?;
    (ms < 1 << 48).then(|| OrderId::from_ulid(Ulid::from_parts(ms, 0)).to_string())
}

/// An id range holding every order created in `[from, to)`: ULIDs begin
/// with their creation time, so the range lets whichever index the other
/// filters use (all of them end in the id) start and stop at the creation
/// range instead of walking past every newer order. It is widened by
/// [`CREATED_SLACK_MS`] and never replaces the `created_at` condition.
fn created_bounds(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> (Option<String>, Option<String>) {
    (
        from.and_then(|t| first_id_at(t.timestamp_millis().saturating_sub(CREATED_SLACK_MS))),
        to.and_then(|t| {
            first_id_at(
                t.timestamp_millis()
                    .saturating_add(CREATED_SLACK_MS)
                    .saturating_add(1),
            )
        }),
    )
}

/// The statement and parameters of a list: only the filters present go
/// into it, so that the planner picks the index serving them. `list` and
/// [`PgOrderStore::probes`] both build their queries here.
fn list_query(filter: &OrderFilter, limit: usize) -> Result<(String, Vec<Param>), StoreError> {
    check_attribute_filter(&filter.attributes)?;
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    fn bind(params: &mut Vec<Param>, value: Param) -> String {
        params.push(value);
        format!("${}", params.len())
    }
    // The id range: the cursor and the creation range.
    let (lowest, below_created) = created_bounds(filter.created_from, filter.created_to);
    let below = match (filter.before.map(|b| b.to_string()), below_created) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut id_range = Vec::new();
    if let Some(lowest) = lowest {
        id_range.push(format!(">= {}", bind(&mut params, Box::new(lowest))));
    }
    if let Some(below) = below {
        id_range.push(format!("< {}", bind(&mut params, Box::new(below))));
    }
    for bound in &id_range {
        conditions.push(format!("o.id {bound}"));
    }
    if let Some(status) = filter.status {
        let p = bind(&mut params, Box::new(status.as_str()));
        conditions.push(format!("o.status = {p}"));
    }
    if let Some(customer) = filter.customer {
        let p = bind(&mut params, Box::new(customer.to_string()));
        conditions.push(format!("o.customer_id = {p}"));
    }
    // A seller's orders are read from the seller index, newest first and
    // each once, and joined to their rows: the join keeps that order, so
    // the page needs no sort and stops at its last row. The id range is
    // repeated there (PostgreSQL carries equalities across a join, not
    // ranges): it is what lets that index start at the cursor.
    let source = match filter.seller {
        Some(seller) => {
            let p = bind(&mut params, Box::new(seller.to_string()));
            let range: String = id_range
                .iter()
                .map(|bound| format!(" AND i.order_id {bound}"))
                .collect();
            format!(
                "(SELECT DISTINCT i.order_id FROM order_items i WHERE i.seller_id = {p}{range}
                  ORDER BY i.order_id DESC) s
                 JOIN orders o ON o.id = s.order_id"
            )
        }
        None => "orders o".to_owned(),
    };
    if let Some(from) = filter.created_from {
        let p = bind(&mut params, Box::new(from));
        conditions.push(format!("o.created_at >= {p}"));
    }
    if let Some(to) = filter.created_to {
        let p = bind(&mut params, Box::new(to));
        conditions.push(format!("o.created_at < {p}"));
    }
    if !filter.attributes.is_empty() {
        let p = bind(
            &mut params,
            Box::new(serde_json::Value::Object(filter.attributes.clone())),
        );
        conditions.push(format!("o.attributes @> {p}::jsonb"));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let limit = bind(
        &mut params,
        Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
    );
    Ok((
        format!(
            "SELECT {ORDER_COLUMNS} FROM {source} {where_clause} ORDER BY o.id DESC LIMIT {limit}"
        ),
        params,
    ))
}

/// The statement and parameters of [`OrderStore::unchanged_since`]: one
/// range of the partial index `orders_live_since`, read in its order.
fn unchanged_since_query(
    status: OrderStatus,
    changed_before: DateTime<Utc>,
    limit: usize,
) -> (String, Vec<Param>) {
    (
        format!(
            "SELECT {ORDER_COLUMNS} FROM orders o
             WHERE o.status = $1 AND o.status IN {LIVE_STATUSES_SQL} AND o.updated_at < $2
             ORDER BY o.updated_at, o.id LIMIT $3"
        ),
        vec![
            Box::new(status.as_str()),
            Box::new(changed_before),
            Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
        ],
    )
}

/// The lowest id an order created at or after `since` can have (see
/// [`created_bounds`]): the window of an overview query as a range of the
/// primary key, or of whichever index ends in the id.
fn lowest_id_since(since: DateTime<Utc>) -> String {
    created_bounds(Some(since), None).0.unwrap_or_default()
}

fn count(row: &Row, i: usize) -> Result<u64, StoreError> {
    Ok(u64::try_from(col::<i64>(row, i)?).unwrap_or(0))
}

/// The overview's latencies in one pass over the window: each order with
/// its `order.paid` and, if any, `order.shipped` entry (found by the
/// timeline's primary key), one row per step it finished.
const STAGE_LATENCIES_SQL: &str =
    "SELECT v.stage, floor(extract(epoch FROM v.done) / $3::bigint)::bigint AS b,
        count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY v.secs),
        percentile_cont(0.95) WITHIN GROUP (ORDER BY v.secs)
     FROM orders o
     JOIN LATERAL (SELECT min(t.at) AS at FROM timeline t
                   WHERE t.order_id = o.id AND t.event_type = 'order.paid') p ON p.at IS NOT NULL
     LEFT JOIN LATERAL (SELECT min(t.at) AS at FROM timeline t
                   WHERE t.order_id = o.id AND t.event_type = 'order.shipped') s ON true
     CROSS JOIN LATERAL (VALUES
         ('paid', p.at, extract(epoch FROM p.at - o.created_at)::float8),
         ('shipped', s.at, extract(epoch FROM s.at - p.at)::float8)) v(stage, done, secs)
     WHERE o.id >= $1 AND o.created_at >= $2 AND v.done IS NOT NULL
     GROUP BY v.stage, b ORDER BY v.stage, b";

fn as_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PgOrderStore {
    /// Writes orders as history: rows and items only, no events and no
    /// timeline, a batch in one transaction. For loading a benchmark data
    /// set, not for serving.
    pub async fn load_history(&self, orders: &[Order]) -> Result<(), StoreError> {
        let items = ItemColumns::of(orders)?;
        let rows = orders
            .iter()
            .map(OrderColumns::of)
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await.map_err(store_error)?;
        let stmt = tx.prepare_cached(INSERT_ORDER).await.map_err(store_error)?;
        let params: Vec<_> = rows.iter().map(OrderColumns::params).collect();
        let inserts = params.iter().map(|p| tx.execute(&stmt, &p[..]));
        // Sent back to back; the server answers them in order.
        for result in futures::future::join_all(inserts).await {
            result.map_err(store_error)?;
        }
        let stmt = tx.prepare_cached(INSERT_ITEMS).await.map_err(store_error)?;
        tx.execute(&stmt, &items.params()[..])
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    /// Every kind of list query the API issues, as [`Probe`]s built like
    /// [`OrderStore::list`] builds them, with a customer, a seller, a
    /// cursor and creation ranges sampled from the data. Empty when there
    /// are no orders.
    pub async fn probes(&self) -> Result<Vec<Probe>, StoreError> {
        let conn = self.db.read_conn().await?;
        let newest = conn
            .query_opt(
                "SELECT o.customer_id, o.created_at, i.seller_id
                 FROM orders o JOIN order_items i ON i.order_id = o.id
                 ORDER BY o.id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(store_error)?;
        let Some(newest) = newest else {
            return Ok(Vec::new());
        };
        let customer = ClientId::parse(col(&newest, 0)?).map_err(|_| bad("customer id"))?;
        let now: DateTime<Utc> = col(&newest, 1)?;
        let seller = ClientId::parse(col(&newest, 2)?).map_err(|_| bad("seller id"))?;
        // A cursor a few pages deep.
        let cursor = conn
            .query_opt(
                "SELECT id FROM orders ORDER BY id DESC OFFSET 500 LIMIT 1",
                &[],
            )
            .await
            .map_err(store_error)?
            .map(|r| {
                col::<&str>(&r, 0).and_then(|id| OrderId::parse(id).map_err(|_| bad("order id")))
            })
            .transpose()?;
        let days = |n: i64| chrono::Duration::days(n);
        let last_week = (Some(now - days(7)), Some(now));
        let months_ago = (Some(now - days(180)), Some(now - days(150)));
        let attrs = |pairs: &[(&str, serde_json::Value)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<serde_json::Map<_, _>>()
        };
        let all = OrderFilter::default();
        let cases: Vec<(&str, OrderFilter)> = vec![
            ("GET /v1/orders (admin)", all.clone()),
            (
                "GET /v1/orders?cursor=… (admin)",
                OrderFilter {
                    before: cursor,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders (customer)",
                OrderFilter {
                    customer: Some(customer),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=delivered (customer)",
                OrderFilter {
                    customer: Some(customer),
                    status: Some(OrderStatus::Delivered),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_from=…&created_to=… (customer, last week)",
                OrderFilter {
                    customer: Some(customer),
                    created_from: last_week.0,
                    created_to: last_week.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders (seller)",
                OrderFilter {
                    seller: Some(seller),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?cursor=… (seller)",
                OrderFilter {
                    seller: Some(seller),
                    before: cursor,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=paid (seller)",
                OrderFilter {
                    seller: Some(seller),
                    status: Some(OrderStatus::Paid),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_from=…&created_to=… (seller, 5 months ago)",
                OrderFilter {
                    seller: Some(seller),
                    created_from: months_ago.0,
                    created_to: months_ago.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=pending",
                OrderFilter {
                    status: Some(OrderStatus::Pending),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=paid",
                OrderFilter {
                    status: Some(OrderStatus::Paid),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=delivered",
                OrderFilter {
                    status: Some(OrderStatus::Delivered),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=cancelled&cursor=…",
                OrderFilter {
                    status: Some(OrderStatus::Cancelled),
                    before: cursor,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_from=…&created_to=… (last week)",
                OrderFilter {
                    created_from: last_week.0,
                    created_to: last_week.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_from=…&created_to=… (5 months ago)",
                OrderFilter {
                    created_from: months_ago.0,
                    created_to: months_ago.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_from=… (5 months ago, open end)",
                OrderFilter {
                    created_from: months_ago.0,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?created_to=… (5 months ago, open start)",
                OrderFilter {
                    created_to: months_ago.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?status=cancelled&created_from=…&created_to=… (5 months ago)",
                OrderFilter {
                    status: Some(OrderStatus::Cancelled),
                    created_from: months_ago.0,
                    created_to: months_ago.1,
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.gift=true",
                OrderFilter {
                    attributes: attrs(&[("gift", true.into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.channel=web&attr.gift=false",
                OrderFilter {
                    attributes: attrs(&[("channel", "web".into()), ("gift", false.into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.campaign=black-friday",
                OrderFilter {
                    attributes: attrs(&[("campaign", "black-friday".into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.channel=fax (no match)",
                OrderFilter {
                    attributes: attrs(&[("channel", "fax".into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.campaign=black-friday&status=cancelled",
                OrderFilter {
                    status: Some(OrderStatus::Cancelled),
                    attributes: attrs(&[("campaign", "black-friday".into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.campaign=black-friday&created_from=…&created_to=… (5 months ago)",
                OrderFilter {
                    created_from: months_ago.0,
                    created_to: months_ago.1,
                    attributes: attrs(&[("campaign", "black-friday".into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.gift=true (customer)",
                OrderFilter {
                    customer: Some(customer),
                    attributes: attrs(&[("gift", true.into())]),
                    ..all.clone()
                },
            ),
            (
                "GET /v1/orders?attr.gift=true (seller)",
                OrderFilter {
                    seller: Some(seller),
                    attributes: attrs(&[("gift", true.into())]),
                    ..all.clone()
                },
            ),
        ];
        let mut probes = cases
            .into_iter()
            .map(|(name, filter)| {
                // The routes ask for one more than a page, to know if
                // there is a next one.
                let (sql, params) = list_query(&filter, 51)?;
                Ok(Probe {
                    name: name.to_owned(),
                    sql,
                    params,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // The stuck-orders report: one query per live status, past its
        // default threshold.
        for (status, threshold) in [
            (OrderStatus::Pending, chrono::Duration::minutes(1)),
            (OrderStatus::Confirmed, chrono::Duration::minutes(2)),
            (OrderStatus::Paid, chrono::Duration::minutes(15)),
            (OrderStatus::Shipped, chrono::Duration::hours(2)),
        ] {
            let (sql, params) = unchanged_since_query(status, now - threshold, 101);
            probes.push(Probe {
                name: format!("GET /v1/admin/stuck-orders ({})", status.as_str()),
                sql,
                params,
            });
        }
        Ok(probes)
    }
}

/// pgbench scripts of this store's statements (see [`ordo_postgres::pgbench`]).
impl PgOrderStore {
    /// The transaction of [`OrderStore::create`] for an order like `order`
    /// and its `order.created` event: BEGIN, the order, its lines and the
    /// outbox row sent in one pipeline, COMMIT. The values are `order`'s,
    /// the order and event ids fresh in each transaction.
    pub fn pgbench_create(order: &Order, created: &Envelope) -> Result<String, StoreError> {
        use ordo_postgres::pgbench::{FRESH, array, fresh, json, opt_text, text, timestamp};
        let row = OrderColumns::of(order)?;
        let items = ItemColumns::of(std::slice::from_ref(order))?;
        let id = fresh("ord_");
        let insert_order = ordo_postgres::pgbench::substitute(
            INSERT_ORDER,
            &[
                id.clone(),
                text(&row.customer_id),
                text(row.status),
                opt_text(row.cancellation_reason.as_deref()),
                text(&row.currency),
                text(&row.total.to_string()),
                text(&row.market),
                json(&row.shipping_address),
                text(&row.payment_token),
                json(&row.attributes),
                opt_text(row.idempotency_key.as_deref()),
                row.version.to_string(),
                timestamp(&row.created_at),
                timestamp(&row.updated_at),
                opt_text(row.cancel_requested.as_deref()),
            ],
        )?;
        let lines = vec![id.clone(); items.order_id.len()];
        let insert_items = ordo_postgres::pgbench::substitute(
            INSERT_ITEMS,
            &[
                format!("ARRAY[{}]", lines.join(", ")),
                array(&items.line_no),
                array(&items.product_id),
                array(&items.sku),
                array(&items.name),
                array(&items.seller_id),
                array(&items.quantity),
                array(&items.unit_price),
                array(&items.line_total),
            ],
        )?;
        let outbox = ordo_postgres::pgbench::outbox_insert(created, fresh("evt_"), id)?;
        Ok(format!(
            "{FRESH}\nBEGIN;\n\\startpipeline\n{insert_order};\n{insert_items};\n{outbox};\n\\endpipeline\nCOMMIT;\n"
        ))
    }

    /// The queries of [`OrderStore::get`] for the order `id`, sent in one
    /// pipeline.
    pub fn pgbench_get(id: OrderId) -> Result<String, StoreError> {
        let id = [ordo_postgres::pgbench::text(&id.to_string())];
        let order = ordo_postgres::pgbench::substitute(&get_order_sql(), &id)?;
        let items = ordo_postgres::pgbench::substitute(&get_items_sql(), &id)?;
        Ok(format!(
            "\\startpipeline\n{order};\n{items};\n\\endpipeline\n"
        ))
    }
}

fn get_order_sql() -> String {
    format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = $1")
}

fn get_items_sql() -> String {
    format!("SELECT {ITEM_COLUMNS} FROM order_items WHERE order_id = $1 ORDER BY line_no")
}

#[async_trait::async_trait]
impl OrderStore for PgOrderStore {
    async fn create(&self, order: Order, created: Envelope) -> Result<(), StoreError> {
        let write = Arc::new((
            OrderColumns::of(&order)?,
            ItemColumns::of(std::slice::from_ref(&order))?,
            created,
        ));
        self.db
            .transaction(|tx| {
                let write = write.clone();
                Box::pin(async move {
                    let (row, items, created) = &*write;
                    let (insert_order, insert_items) = tokio::try_join!(
                        tx.prepare_cached(INSERT_ORDER),
                        tx.prepare_cached(INSERT_ITEMS)
                    )
                    .map_err(store_error)?;
                    // Sent together, answered in order: a failed order
                    // insert (a reused idempotency key) is the error seen.
                    let (row, items) = (row.params(), items.params());
                    let (order, items, event) = tokio::join!(
                        tx.execute(&insert_order, &row[..]),
                        tx.execute(&insert_items, &items[..]),
                        outbox_append(tx, created),
                    );
                    order.map_err(store_error)?;
                    items.map_err(store_error)?;
                    event
                })
            })
            .await
    }

    async fn get(&self, id: OrderId) -> Result<Order, StoreError> {
        let conn = self.db.conn().await?;
        let id = id.to_string();
        let (order_sql, items_sql) = (get_order_sql(), get_items_sql());
        let (order_stmt, items_stmt) = tokio::try_join!(
            conn.prepare_cached(&order_sql),
            conn.prepare_cached(&items_sql),
        )
        .map_err(store_error)?;
        // Both in one round trip.
        let params: [&(dyn ToSql + Sync); 1] = [&id];
        let (order, items) = tokio::join!(
            conn.query(&order_stmt, &params),
            conn.query(&items_stmt, &params)
        );
        assemble(&order.map_err(store_error)?, &items.map_err(store_error)?)?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    async fn find_by_idempotency_key(
        &self,
        customer: ClientId,
        key: &str,
    ) -> Result<Option<Order>, StoreError> {
        let conn = self.db.conn().await?;
        Ok(query_orders(
            &conn,
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders o
                 WHERE o.customer_id = $1 AND o.idempotency_key = $2"
            ),
            &[&customer.to_string(), &key],
        )
        .await?
        .pop())
    }

    async fn list(&self, filter: OrderFilter, limit: usize) -> Result<Vec<Order>, StoreError> {
        let (sql, params) = list_query(&filter, limit)?;
        let conn = self.db.read_conn().await?;
        query_orders(&conn, &sql, &as_refs(&params)).await
    }

    async fn unchanged_since(
        &self,
        status: OrderStatus,
        changed_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError> {
        let (sql, params) = unchanged_since_query(status, changed_before, limit);
        let conn = self.db.read_conn().await?;
        query_orders(&conn, &sql, &as_refs(&params)).await
    }

    async fn save_transition(
        &self,
        order: Order,
        expected_version: i64,
        events: Vec<Envelope>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError> {
        let write = Arc::new((order, events, inbox));
        self.db
            .transaction(|tx| {
                let write = write.clone();
                Box::pin(async move {
                    let (order, events, inbox) = &*write;
                    if !record_inbox(tx, inbox.as_ref()).await? {
                        return Ok(Applied::Duplicate);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE orders SET status = $1, cancellation_reason = $2, version = $3,
                                updated_at = $4, cancel_requested = $7
                             WHERE id = $5 AND version = $6",
                        )
                        .await
                        .map_err(store_error)?;
                    let changed = tx
                        .execute(
                            &stmt,
                            &[
                                &order.status.as_str(),
                                &order.cancellation_reason,
                                &order.version,
                                &order.updated_at,
                                &order.id.to_string(),
                                &expected_version,
                                &order.cancel_requested,
                            ],
                        )
                        .await
                        .map_err(store_error)?;
                    if changed == 0 {
                        return Err(StoreError::Conflict(format!(
                            "order {} is no longer at version {expected_version}",
                            order.id
                        )));
                    }
                    for event in events {
                        outbox_append(tx, event).await?;
                    }
                    Ok(Applied::Done)
                })
            })
            .await
    }

    async fn catalog(
        &self,
        ids: Vec<ProductId>,
    ) -> Result<HashMap<ProductId, CatalogEntry>, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT product_id, sku, name, price, currency, seller_id, active, version
                 FROM catalog WHERE product_id = ANY($1)",
            )
            .await
            .map_err(store_error)?;
        let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows = conn.query(&stmt, &[&keys]).await.map_err(store_error)?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            let product_id = ProductId::parse(col(row, 0)?).map_err(|_| bad("product id"))?;
            found.insert(
                product_id,
                CatalogEntry {
                    product_id,
                    sku: col(row, 1)?,
                    name: col(row, 2)?,
                    price: col(row, 3)?,
                    currency: Currency::parse(col(row, 4)?).map_err(|_| bad("currency"))?,
                    seller_id: ClientId::parse(col(row, 5)?).map_err(|_| bad("seller id"))?,
                    active: col(row, 6)?,
                    version: col(row, 7)?,
                },
            );
        }
        Ok(found)
    }

    async fn upsert_catalog(
        &self,
        entry: CatalogEntry,
        inbox: InboxKey,
    ) -> Result<Applied, StoreError> {
        let write = Arc::new((entry, inbox));
        self.db
            .transaction(|tx| {
                let write = write.clone();
                Box::pin(async move {
                    let (entry, inbox) = &*write;
                    if !record_inbox(tx, Some(inbox)).await? {
                        return Ok(Applied::Duplicate);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO catalog (product_id, sku, name, price, currency, seller_id, active, version)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                             ON CONFLICT (product_id) DO UPDATE SET
                                sku = excluded.sku, name = excluded.name, price = excluded.price,
                                currency = excluded.currency, seller_id = excluded.seller_id,
                                active = excluded.active, version = excluded.version
                             WHERE excluded.version > catalog.version",
                        )
                        .await
                        .map_err(store_error)?;
                    tx.execute(
                        &stmt,
                        &[
                            &entry.product_id.to_string(),
                            &entry.sku,
                            &entry.name,
                            &entry.price,
                            &entry.currency.as_str(),
                            &entry.seller_id.to_string(),
                            &entry.active,
                            &entry.version,
                        ],
                    )
                    .await
                    .map_err(store_error)?;
                    Ok(Applied::Done)
                })
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
        let write = Arc::new((order.to_string(), event, inbox));
        self.db
            .transaction(|tx| {
                let write = write.clone();
                Box::pin(async move {
                    let (order_id, event, inbox) = &*write;
                    let (lock, previous) = tokio::try_join!(
                        tx.prepare_cached(
                            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))"
                        ),
                        tx.prepare_cached(
                            "SELECT 1 FROM timeline WHERE order_id = $1 AND sequence = $2"
                        ),
                    )
                    .map_err(store_error)?;
                    // The lock first: the check then sees what an append
                    // holding it before committed.
                    let lock_params: [&(dyn ToSql + Sync); 2] = [&TIMELINE_LOCK, order_id];
                    let (locked, present) = tokio::join!(
                        tx.execute(&lock, &lock_params),
                        async {
                            match after {
                                Some(previous_seq) => tx
                                    .query_opt(&previous, &[order_id, &previous_seq])
                                    .await
                                    .map(|r| r.is_some()),
                                None => Ok(true),
                            }
                        },
                    );
                    locked.map_err(store_error)?;
                    if !present.map_err(store_error)? {
                        return Ok(TimelineAppend::Early);
                    }
                    if !record_inbox(tx, Some(inbox)).await? {
                        return Ok(TimelineAppend::Duplicate);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO timeline (order_id, seq, event_id, event_type, at, actor, correlation_id, sequence, data)
                             SELECT $1::text, coalesce(max(seq), 0) + 1, $2::text, $3::text, $4::timestamptz,
                                    $5::text, $6::text, $7::bigint, $8::text::jsonb
                             FROM timeline WHERE order_id = $1::text
                             ON CONFLICT (order_id, event_id) DO NOTHING",
                        )
                        .await
                        .map_err(store_error)?;
                    let inserted = tx
                        .execute(
                            &stmt,
                            &[
                                order_id,
                                &event.id.to_string(),
                                &event.name(),
                                &event.time,
                                &event.actor,
                                &event.correlationid,
                                &event.sequence,
                                &event.data.get(),
                            ],
                        )
                        .await
                        .map_err(store_error)?;
                    Ok(if inserted == 1 {
                        TimelineAppend::Appended
                    } else {
                        TimelineAppend::Duplicate
                    })
                })
            })
            .await
    }

    async fn timeline(&self, order: OrderId) -> Result<Vec<TimelineEntry>, StoreError> {
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT seq, event_id, event_type, at, actor, correlation_id, data
                 FROM timeline WHERE order_id = $1 ORDER BY seq",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&order.to_string()])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEntry {
                    seq: col(r, 0)?,
                    event_id: col(r, 1)?,
                    event_type: col(r, 2)?,
                    at: col(r, 3)?,
                    actor: col(r, 4)?,
                    correlation_id: col(r, 5)?,
                    data: col(r, 6)?,
                })
            })
            .collect()
    }

    async fn counts_by_status(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(OrderStatus, u64)>, StoreError> {
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT o.status, count(*) FROM orders o
                 WHERE o.id >= $1 AND o.created_at >= $2 GROUP BY o.status",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&lowest_id_since(since), &since])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    OrderStatus::parse(col(r, 0)?).ok_or_else(|| bad("status"))?,
                    count(r, 1)?,
                ))
            })
            .collect()
    }

    async fn created_per_bucket(
        &self,
        since: DateTime<Utc>,
        bucket: std::time::Duration,
    ) -> Result<Vec<CountBucket>, StoreError> {
        let secs = bucket_seconds(bucket);
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT floor(extract(epoch FROM o.created_at) / $3::bigint)::bigint AS b, count(*)
                 FROM orders o WHERE o.id >= $1 AND o.created_at >= $2 GROUP BY b ORDER BY b",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&lowest_id_since(since), &since, &secs])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok(CountBucket {
                    start: bucket_start(col(r, 0)?, secs)?,
                    count: count(r, 1)?,
                })
            })
            .collect()
    }

    async fn cancellations_by_reason(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.db.read_conn().await?;
        // One range of orders_status: the cancelled orders from the
        // window's first id on.
        let stmt = conn
            .prepare_cached(
                "SELECT coalesce(o.cancellation_reason, ''), count(*) FROM orders o
                 WHERE o.status = 'cancelled' AND o.id >= $1 AND o.created_at >= $2
                 GROUP BY 1 ORDER BY 2 DESC, 1",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&lowest_id_since(since), &since])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|r| Ok((col(r, 0)?, count(r, 1)?)))
            .collect()
    }

    async fn stage_latencies(
        &self,
        since: DateTime<Utc>,
        bucket: std::time::Duration,
    ) -> Result<StageLatencies, StoreError> {
        let secs = bucket_seconds(bucket);
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(STAGE_LATENCIES_SQL)
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&lowest_id_since(since), &since, &secs])
            .await
            .map_err(store_error)?;
        let mut latencies = StageLatencies::default();
        for r in &rows {
            let bucket = LatencyBucket {
                start: bucket_start(col(r, 1)?, secs)?,
                count: count(r, 2)?,
                p50_seconds: col(r, 3)?,
                p95_seconds: col(r, 4)?,
            };
            match col::<&str>(r, 0)? {
                "paid" => latencies.create_to_paid.push(bucket),
                _ => latencies.paid_to_shipped.push(bucket),
            }
        }
        Ok(latencies)
    }
}
