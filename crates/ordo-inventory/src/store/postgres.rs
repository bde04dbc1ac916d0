//! The inventory store on PostgreSQL, for any number of processes.
//!
//! A decision runs in one READ COMMITTED transaction that first takes the
//! order's lock (a transaction advisory lock keyed by the order id, since
//! the order's reservation row may not exist yet), then reads the order's
//! reservation and locks the stock rows of every product involved in one
//! statement, in product id order, before running the same pure `decide_*`
//! function as SQLite. Concurrent reservations of a product therefore queue
//! on its row and decide on the committed stock, and two orders that share
//! products lock them in the same order, so they never deadlock. Several
//! processes may run the expiry job: a release re-reads the reservation's
//! status under the order's lock, so a hold another process already
//! released is left alone.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
use ordo_events::StockLine;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, StoreError};
use ordo_postgres::explain::Probe;
use ordo_postgres::{
    GenericClient, PgDatabase, Row, ToSql, Transaction, bad_value, outbox_append, record_inbox,
    store_error,
};
use ulid::Ulid;

use super::{Adjustment, Applied, Decide, InboxKey, ProductStore, StockStore};
use crate::catalog::Product;
use crate::stock::{
    Reservation, ReservationStatus, Snapshot, StockChange, StockLevel, apply_to_level,
};

const SCHEMA: &str = "inventory";

/// Both stores of the inventory schema over one database.
#[derive(Clone)]
pub struct PgInventoryStore {
    db: PgDatabase,
}

impl PgInventoryStore {
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

const SELECT_PRODUCT: &str =
    "SELECT p.id, p.sku, p.name, p.price, p.currency, p.seller_id, p.attributes, p.active,
    p.version, p.created_at, p.updated_at, coalesce(s.available, 0)
    FROM products p LEFT JOIN stock_levels s ON s.product_id = p.id";

fn product(row: &Row) -> Result<Product, StoreError> {
    let bad = |what: &str| bad_value(&format!("products.{what}"), SCHEMA);
    Ok(Product {
        id: ProductId::parse(row.get(0)).map_err(|_| bad("id"))?,
        sku: row.get(1),
        name: row.get(2),
        price: row.get(3),
        currency: Currency::parse(row.get(4)).map_err(|_| bad("currency"))?,
        seller_id: ClientId::parse(row.get(5)).map_err(|_| bad("seller_id"))?,
        attributes: row.get(6),
        active: row.get(7),
        version: row.get(8),
        created_at: row.get(9),
        updated_at: row.get(10),
        available: row.get(11),
    })
}

type Param = Box<dyn ToSql + Send + Sync>;

fn as_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The statement and parameters of a product list page: `list` and
/// [`PgInventoryStore::probes`] both build their queries here.
fn list_query(
    seller: Option<ClientId>,
    after: Option<ProductId>,
    limit: usize,
) -> (String, Vec<Param>) {
    let limit: Param = Box::new(i64::try_from(limit).unwrap_or(i64::MAX));
    // Every id sorts after the empty string, so a first page needs no
    // statement of its own; a seller's page has one, so that it is a
    // range scan of (seller_id, id) rather than a filter.
    let after: Param = Box::new(after.map(|a| a.to_string()).unwrap_or_default());
    match seller {
        Some(seller) => (
            format!("{SELECT_PRODUCT} WHERE p.seller_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"),
            vec![Box::new(seller.to_string()), after, limit],
        ),
        None => (
            format!("{SELECT_PRODUCT} WHERE p.id > $1 ORDER BY p.id LIMIT $2"),
            vec![after, limit],
        ),
    }
}

/// A batch of products, their stock levels and their initial stock
/// movements, one statement each ([`PgInventoryStore::load_catalog`]).
const LOAD_PRODUCTS: &str = "INSERT INTO products (id, sku, name, price, currency, seller_id, \
     attributes, active, version, created_at, updated_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], \
     $6::text[], $7::jsonb[], $8::bool[], $9::int8[], $10::timestamptz[], $11::timestamptz[])";

const LOAD_LEVELS: &str = "INSERT INTO stock_levels (product_id, available, reserved, allocated, \
     committed, adjusted)
     SELECT id, n, 0, 0, 0, n FROM unnest($1::text[], $2::int8[]) AS l (id, n)";

const LOAD_MOVEMENTS: &str =
    "INSERT INTO stock_movements (id, product_id, delta, reason, actor, at)
     SELECT id, product_id, delta, 'initial', 'system:load', at
     FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[])
         AS m (id, product_id, delta, at)";

impl PgInventoryStore {
    /// Writes a catalog as history: products, their stock levels and the
    /// movement of each initial stock, no events, a batch in one
    /// transaction. For loading a benchmark data set, not for serving.
    pub async fn load_catalog(&self, products: &[(Product, i64)]) -> Result<(), StoreError> {
        if products.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = products.iter().map(|(p, _)| p.id.to_string()).collect();
        let skus: Vec<&str> = products.iter().map(|(p, _)| p.sku.as_str()).collect();
        let names: Vec<&str> = products.iter().map(|(p, _)| p.name.as_str()).collect();
        let prices: Vec<_> = products.iter().map(|(p, _)| p.price).collect();
        let currencies: Vec<&str> = products.iter().map(|(p, _)| p.currency.as_str()).collect();
        let sellers: Vec<String> = products
            .iter()
            .map(|(p, _)| p.seller_id.to_string())
            .collect();
        let attributes: Vec<&serde_json::Value> =
            products.iter().map(|(p, _)| &p.attributes).collect();
        let active: Vec<bool> = products.iter().map(|(p, _)| p.active).collect();
        let versions: Vec<i64> = products.iter().map(|(p, _)| p.version).collect();
        let created: Vec<DateTime<Utc>> = products.iter().map(|(p, _)| p.created_at).collect();
        let updated: Vec<DateTime<Utc>> = products.iter().map(|(p, _)| p.updated_at).collect();
        let stock: Vec<i64> = products.iter().map(|(_, n)| *n).collect();
        // The initial stock is an adjustment like any other: `adjusted`
        // sums the movements.
        let stocked: Vec<&(Product, i64)> = products.iter().filter(|(_, n)| *n != 0).collect();
        let movement_ids: Vec<String> = stocked
            .iter()
            .map(|(p, _)| {
                let ms = u64::try_from(p.created_at.timestamp_millis()).unwrap_or(0);
                format!("mov_{}", Ulid::from_parts(ms, p.id.ulid().random()))
            })
            .collect();
        let movement_products: Vec<String> =
            stocked.iter().map(|(p, _)| p.id.to_string()).collect();
        let deltas: Vec<i64> = stocked.iter().map(|(_, n)| *n).collect();
        let at: Vec<DateTime<Utc>> = stocked.iter().map(|(p, _)| p.created_at).collect();

        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await.map_err(store_error)?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(store_error)?;
        let stmt = tx
            .prepare_cached(LOAD_PRODUCTS)
            .await
            .map_err(store_error)?;
        tx.execute(
            &stmt,
            &[
                &ids,
                &skus,
                &names,
                &prices,
                &currencies,
                &sellers,
                &attributes,
                &active,
                &versions,
                &created,
                &updated,
            ],
        )
        .await
        .map_err(store_error)?;
        let stmt = tx.prepare_cached(LOAD_LEVELS).await.map_err(store_error)?;
        tx.execute(&stmt, &[&ids, &stock])
            .await
            .map_err(store_error)?;
        let stmt = tx
            .prepare_cached(LOAD_MOVEMENTS)
            .await
            .map_err(store_error)?;
        tx.execute(&stmt, &[&movement_ids, &movement_products, &deltas, &at])
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    /// Every product list query the API issues, as [`Probe`]s built like
    /// [`ProductStore::list`] builds them: all products and the busiest
    /// seller's, each first page and a page a few pages deep. Empty when
    /// there are no products.
    pub async fn probes(&self) -> Result<Vec<Probe>, StoreError> {
        let conn = self.db.read_conn().await?;
        let bad = |what: &str| bad_value(&format!("products.{what}"), SCHEMA);
        let busiest = conn
            .query_opt(
                "SELECT seller_id FROM products GROUP BY seller_id ORDER BY count(*) DESC, seller_id
                 LIMIT 1",
                &[],
            )
            .await
            .map_err(store_error)?;
        let Some(busiest) = busiest else {
            return Ok(Vec::new());
        };
        let seller = ClientId::parse(busiest.get(0)).map_err(|_| bad("seller_id"))?;
        // A cursor a few pages deep, or the deepest there is.
        let cursor = |sql: &'static str, params: Vec<Param>| {
            let conn = &conn;
            async move {
                let row = conn
                    .query_opt(sql, &as_refs(&params))
                    .await
                    .map_err(store_error)?;
                row.map(|r| ProductId::parse(r.get(0)).map_err(|_| bad("id")))
                    .transpose()
            }
        };
        let all_cursor = cursor(
            "SELECT id FROM (SELECT id FROM products ORDER BY id LIMIT 501) p
             ORDER BY id DESC LIMIT 1",
            Vec::new(),
        )
        .await?;
        let seller_cursor = cursor(
            "SELECT id FROM (SELECT id FROM products WHERE seller_id = $1 ORDER BY id LIMIT 101) p
             ORDER BY id DESC LIMIT 1",
            vec![Box::new(seller.to_string())],
        )
        .await?;
        let cases = [
            ("GET /v1/products", None, None),
            ("GET /v1/products?cursor=…", None, all_cursor),
            ("GET /v1/products (seller)", Some(seller), None),
            (
                "GET /v1/products?cursor=… (seller)",
                Some(seller),
                seller_cursor,
            ),
        ];
        Ok(cases
            .into_iter()
            .map(|(name, seller, after)| {
                // The route asks for one more than a page (50 by default),
                // to know if there is a next one.
                let (sql, params) = list_query(seller, after, 51);
                Probe {
                    name: name.to_owned(),
                    sql,
                    params,
                }
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl ProductStore for PgInventoryStore {
    async fn insert_all(&self, products: Vec<(Product, Envelope)>) -> Result<(), StoreError> {
        let products = Arc::new(products);
        self.db
            .transaction(|tx| {
                let products = products.clone();
                Box::pin(async move {
                    let insert_product = tx
                        .prepare_cached(
                            "INSERT INTO products (id, sku, name, price, currency, seller_id, attributes, active,
                                version, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        )
                        .await
                        .map_err(store_error)?;
                    let insert_level = tx
                        .prepare_cached(
                            "INSERT INTO stock_levels (product_id, available, reserved, allocated, committed, adjusted)
                             VALUES ($1, 0, 0, 0, 0, 0) ON CONFLICT (product_id) DO NOTHING",
                        )
                        .await
                        .map_err(store_error)?;
                    for (p, event) in products.iter() {
                        let id = p.id.to_string();
                        tx.execute(
                            &insert_product,
                            &[
                                &id,
                                &p.sku,
                                &p.name,
                                &p.price,
                                &p.currency.as_str(),
                                &p.seller_id.to_string(),
                                &p.attributes,
                                &p.active,
                                &p.version,
                                &p.created_at,
                                &p.updated_at,
                            ],
                        )
                        .await
                        .map_err(store_error)?;
                        tx.execute(&insert_level, &[&id])
                            .await
                            .map_err(store_error)?;
                        outbox_append(tx, event).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn get(&self, id: ProductId) -> Result<Product, StoreError> {
        // The primary: callers read a product to change it, or right after
        // changing it.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!("{SELECT_PRODUCT} WHERE p.id = $1"))
            .await
            .map_err(store_error)?;
        let row = conn
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        product(&row)
    }

    async fn list(
        &self,
        seller: Option<ClientId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError> {
        let (sql, params) = list_query(seller, after, limit);
        let conn = self.db.read_conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(store_error)?;
        let rows = conn
            .query(&stmt, &as_refs(&params))
            .await
            .map_err(store_error)?;
        rows.iter().map(product).collect()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let conn = self.db.conn().await?;
        let row = conn
            .query_one("SELECT count(*) FROM products", &[])
            .await
            .map_err(store_error)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn update(
        &self,
        p: Product,
        expected_version: i64,
        event: Envelope,
    ) -> Result<(), StoreError> {
        let p = Arc::new(p);
        let event = Arc::new(event);
        self.db
            .transaction(|tx| {
                let (p, event) = (p.clone(), event.clone());
                Box::pin(async move {
                    // Under READ COMMITTED a concurrent update of the row is
                    // waited for and the version re-checked on its result:
                    // of two updates from one version, one applies.
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE products SET name = $2, price = $3, currency = $4, attributes = $5,
                                active = $6, version = $7, updated_at = $8
                             WHERE id = $1 AND version = $9",
                        )
                        .await
                        .map_err(store_error)?;
                    let changed = tx
                        .execute(
                            &stmt,
                            &[
                                &p.id.to_string(),
                                &p.name,
                                &p.price,
                                &p.currency.as_str(),
                                &p.attributes,
                                &p.active,
                                &p.version,
                                &p.updated_at,
                                &expected_version,
                            ],
                        )
                        .await
                        .map_err(store_error)?;
                    if changed == 0 {
                        return Err(StoreError::Conflict(format!(
                            "product {} changed meanwhile",
                            p.id
                        )));
                    }
                    outbox_append(tx, &event).await
                })
            })
            .await
    }
}

const LEVEL_COLUMNS: &str = "available, reserved, allocated, committed, adjusted";

/// The level in columns `from..from + 5` of `row`.
fn level_at(row: &Row, from: usize) -> StockLevel {
    StockLevel {
        available: row.get(from),
        reserved: row.get(from + 1),
        allocated: row.get(from + 2),
        committed: row.get(from + 3),
        adjusted: row.get(from + 4),
    }
}

fn product_id(s: &str, table: &str) -> Result<ProductId, StoreError> {
    ProductId::parse(s).map_err(|_| bad_value(&format!("{table}.product_id"), SCHEMA))
}

fn quantity(q: i64) -> Result<u32, StoreError> {
    u32::try_from(q).map_err(|_| bad_value("reservation_lines.quantity", SCHEMA))
}

async fn save_level(
    tx: &Transaction<'_>,
    product: ProductId,
    l: &StockLevel,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE stock_levels SET available = $2, reserved = $3, allocated = $4, committed = $5, adjusted = $6
             WHERE product_id = $1",
        )
        .await
        .map_err(store_error)?;
    tx.execute(
        &stmt,
        &[
            &product.to_string(),
            &l.available,
            &l.reserved,
            &l.allocated,
            &l.committed,
            &l.adjusted,
        ],
    )
    .await
    .map_err(store_error)?;
    Ok(())
}

/// A reservation without its lines, as read from its row.
fn reservation_head(order: OrderId, row: &Row) -> Result<Reservation, StoreError> {
    let status: &str = row.get(0);
    Ok(Reservation {
        order_id: order,
        status: ReservationStatus::parse(status)
            .ok_or_else(|| bad_value("reservations.status", SCHEMA))?,
        release_reason: row.get(1),
        expires_at: row.get(2),
        lines: Vec::new(),
    })
}

async fn load_reservation<C: GenericClient>(
    client: &C,
    order: OrderId,
) -> Result<Option<Reservation>, StoreError> {
    let id = order.to_string();
    let stmt = client
        .prepare_cached(
            "SELECT status, release_reason, expires_at FROM reservations WHERE order_id = $1",
        )
        .await
        .map_err(store_error)?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await.map_err(store_error)? else {
        return Ok(None);
    };
    let mut reservation = reservation_head(order, &row)?;
    let stmt = client
        .prepare_cached(
            "SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id",
        )
        .await
        .map_err(store_error)?;
    for row in client.query(&stmt, &[&id]).await.map_err(store_error)? {
        reservation.lines.push(StockLine {
            product_id: product_id(row.get(0), "reservation_lines")?,
            quantity: quantity(row.get(1))?,
        });
    }
    Ok(Some(reservation))
}

/// Moves the units of `lines` between the buckets of the locked `stock`;
/// the products whose level changed.
fn move_units(
    stock: &mut HashMap<ProductId, StockLevel>,
    lines: &[StockLine],
    change: &StockChange,
    from: Option<ReservationStatus>,
) -> Result<Vec<ProductId>, StoreError> {
    let mut changed = Vec::new();
    for line in lines {
        let level = stock
            .get(&line.product_id)
            .copied()
            .ok_or(StoreError::NotFound)?;
        // A product named on two lines moves twice, from its new level.
        let next =
            apply_to_level(level, change, from, i64::from(line.quantity)).ok_or_else(|| {
                StoreError::Conflict(format!("stock of {} would go negative", line.product_id))
            })?;
        stock.insert(line.product_id, next);
        changed.push(line.product_id);
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}

/// One attempt of [`StockStore::decide`], inside its transaction.
async fn decide_in(
    tx: &Transaction<'_>,
    order: OrderId,
    products: &[ProductId],
    inbox: Option<&InboxKey>,
    decide: &Decide,
) -> Result<Applied, StoreError> {
    if !record_inbox(tx, inbox).await? {
        return Ok(Applied::Duplicate);
    }
    let order_key = order.to_string();
    // Decisions about one order, the first reservation included, take turns.
    let stmt = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(hashtextextended('inventory.reservation:' || $1, 0))",
        )
        .await
        .map_err(store_error)?;
    tx.execute(&stmt, &[&order_key])
        .await
        .map_err(store_error)?;
    let reservation = load_reservation(tx, order).await?;
    let mut wanted: Vec<String> = products.iter().map(ToString::to_string).collect();
    if let Some(r) = &reservation {
        wanted.extend(r.lines.iter().map(|l| l.product_id.to_string()));
    }
    wanted.sort();
    wanted.dedup();
    let mut snapshot = Snapshot {
        reservation,
        stock: HashMap::new(),
    };
    if !wanted.is_empty() {
        // One statement, rows locked in product id order: every decision
        // locks in this order, so none waits for another in a cycle.
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT product_id, {LEVEL_COLUMNS} FROM stock_levels
                 WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE"
            ))
            .await
            .map_err(store_error)?;
        for row in tx.query(&stmt, &[&wanted]).await.map_err(store_error)? {
            snapshot
                .stock
                .insert(product_id(row.get(0), "stock_levels")?, level_at(&row, 1));
        }
    }
    let from = snapshot.reservation.as_ref().map(|r| r.status);
    let held: Vec<StockLine> = snapshot
        .reservation
        .as_ref()
        .map(|r| r.lines.clone())
        .unwrap_or_default();
    let decision = decide(&snapshot);
    let now = Utc::now();

    let mut stock = snapshot.stock;
    let changed = match &decision.change {
        StockChange::Reserve { lines, .. } => {
            move_units(&mut stock, lines, &decision.change, from)?
        }
        StockChange::Allocate | StockChange::Commit | StockChange::Release { .. } => {
            move_units(&mut stock, &held, &decision.change, from)?
        }
        StockChange::Nothing | StockChange::Fail { .. } | StockChange::Tombstone { .. } => {
            Vec::new()
        }
    };
    for product in changed {
        if let Some(level) = stock.get(&product) {
            save_level(tx, product, level).await?;
        }
    }

    let insert = |status: ReservationStatus,
                  reason: Option<String>,
                  expires: Option<DateTime<Utc>>| {
        let order_key = order_key.clone();
        async move {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO reservations (order_id, status, release_reason, expires_at, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .await
                .map_err(store_error)?;
            tx.execute(
                &stmt,
                &[&order_key, &status.as_str(), &reason, &expires, &now],
            )
            .await
            .map_err(store_error)?;
            Ok::<_, StoreError>(())
        }
    };
    let set_status = |status: ReservationStatus, reason: Option<String>| {
        let order_key = order_key.clone();
        async move {
            let stmt = tx
                .prepare_cached(
                    "UPDATE reservations SET status = $2::text, release_reason = coalesce($3, release_reason),
                        expires_at = CASE WHEN $2::text = 'active' THEN expires_at ELSE NULL END,
                        updated_at = $4
                     WHERE order_id = $1",
                )
                .await
                .map_err(store_error)?;
            tx.execute(&stmt, &[&order_key, &status.as_str(), &reason, &now])
                .await
                .map_err(store_error)?;
            Ok::<_, StoreError>(())
        }
    };
    match &decision.change {
        StockChange::Nothing => {}
        StockChange::Reserve { lines, expires_at } => {
            insert(ReservationStatus::Active, None, Some(*expires_at)).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, $3)
                     ON CONFLICT (order_id, product_id)
                     DO UPDATE SET quantity = reservation_lines.quantity + excluded.quantity",
                )
                .await
                .map_err(store_error)?;
            for line in lines {
                tx.execute(
                    &stmt,
                    &[
                        &order_key,
                        &line.product_id.to_string(),
                        &i64::from(line.quantity),
                    ],
                )
                .await
                .map_err(store_error)?;
            }
        }
        StockChange::Fail { reason } => {
            insert(ReservationStatus::Failed, Some(reason.clone()), None).await?;
        }
        StockChange::Tombstone { reason } => {
            insert(ReservationStatus::Released, Some(reason.clone()), None).await?;
        }
        StockChange::Allocate => set_status(ReservationStatus::Allocated, None).await?,
        StockChange::Commit => set_status(ReservationStatus::Committed, None).await?,
        StockChange::Release { reason } => {
            set_status(ReservationStatus::Released, Some(reason.clone())).await?;
        }
    }
    for event in &decision.events {
        outbox_append(tx, event).await?;
    }
    Ok(Applied::Done)
}

#[async_trait::async_trait]
impl StockStore for PgInventoryStore {
    async fn adjust(&self, adjustment: Adjustment) -> Result<StockLevel, StoreError> {
        let a = Arc::new(adjustment);
        self.db
            .transaction(|tx| {
                let a = a.clone();
                Box::pin(async move {
                    let product = a.product.to_string();
                    let stmt = tx
                        .prepare_cached(&format!(
                            "SELECT {LEVEL_COLUMNS} FROM stock_levels WHERE product_id = $1 FOR UPDATE"
                        ))
                        .await
                        .map_err(store_error)?;
                    let row = tx
                        .query_opt(&stmt, &[&product])
                        .await
                        .map_err(store_error)?
                        .ok_or(StoreError::NotFound)?;
                    let mut level = level_at(&row, 0);
                    if level.available + a.delta < 0 {
                        return Err(StoreError::Conflict(format!(
                            "only {} units are available to remove",
                            level.available
                        )));
                    }
                    level.available += a.delta;
                    level.adjusted += a.delta;
                    save_level(tx, a.product, &level).await?;
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO stock_movements (id, product_id, delta, reason, actor, at)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .await
                        .map_err(store_error)?;
                    tx.execute(
                        &stmt,
                        &[&a.movement_id, &product, &a.delta, &a.reason, &a.actor, &a.at],
                    )
                    .await
                    .map_err(store_error)?;
                    Ok(level)
                })
            })
            .await
    }

    async fn level(&self, product: ProductId) -> Result<StockLevel, StoreError> {
        let conn = self.db.read_conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {LEVEL_COLUMNS} FROM stock_levels WHERE product_id = $1"
            ))
            .await
            .map_err(store_error)?;
        let row = conn
            .query_opt(&stmt, &[&product.to_string()])
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(level_at(&row, 0))
    }

    async fn movements(
        &self,
        product: ProductId,
        limit: usize,
    ) -> Result<Vec<Adjustment>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The primary: a seller reads the history right after adjusting.
        // The (product_id, at) index serves it, read backwards.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT id, delta, reason, actor, at FROM stock_movements
                 WHERE product_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&product.to_string(), &limit])
            .await
            .map_err(store_error)?;
        Ok(rows
            .iter()
            .map(|row| Adjustment {
                movement_id: row.get(0),
                product,
                delta: row.get(1),
                reason: row.get(2),
                actor: row.get(3),
                at: row.get(4),
            })
            .collect())
    }

    async fn levels(&self) -> Result<Vec<(ProductId, StockLevel)>, StoreError> {
        let conn = self.db.read_conn().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT product_id, {LEVEL_COLUMNS} FROM stock_levels ORDER BY product_id"
                ),
                &[],
            )
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| Ok((product_id(row.get(0), "stock_levels")?, level_at(row, 1))))
            .collect()
    }

    async fn decide(
        &self,
        order: OrderId,
        products: Vec<ProductId>,
        inbox: Option<InboxKey>,
        decide: Decide,
    ) -> Result<Applied, StoreError> {
        // Shared by the attempts: a retried transaction decides again, on
        // what it reads then.
        let work = Arc::new((products, inbox, decide));
        self.db
            .transaction(|tx| {
                let work = work.clone();
                Box::pin(async move {
                    let (products, inbox, decide) = &*work;
                    decide_in(tx, order, products, inbox.as_ref(), decide).await
                })
            })
            .await
    }

    async fn reservation(&self, order: OrderId) -> Result<Option<Reservation>, StoreError> {
        let conn = self.db.read_conn().await?;
        load_reservation(&conn, order).await
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let conn = self.db.read_conn().await?;
        // Heads first: a reservation's lines commit with its row and are
        // never removed, so every head read here finds its lines next.
        let heads = conn
            .query(
                "SELECT status, release_reason, expires_at, order_id FROM reservations ORDER BY order_id",
                &[],
            )
            .await
            .map_err(store_error)?;
        let lines = conn
            .query(
                "SELECT order_id, product_id, quantity FROM reservation_lines ORDER BY order_id, product_id",
                &[],
            )
            .await
            .map_err(store_error)?;
        let mut by_order: HashMap<String, Vec<StockLine>> = HashMap::new();
        for row in &lines {
            by_order
                .entry(row.get::<_, String>(0))
                .or_default()
                .push(StockLine {
                    product_id: product_id(row.get(1), "reservation_lines")?,
                    quantity: quantity(row.get(2))?,
                });
        }
        let mut all = Vec::with_capacity(heads.len());
        for row in &heads {
            let id: &str = row.get(3);
            // As on SQLite: a row whose id does not parse is not listed.
            let Ok(order) = OrderId::parse(id) else {
                continue;
            };
            let mut reservation = reservation_head(order, row)?;
            reservation.lines = by_order.remove(id).unwrap_or_default();
            all.push(reservation);
        }
        Ok(all)
    }

    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OrderId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The primary: the caller releases what it gets. Releasing is
        // re-checked under the order's lock, so two processes listing the
        // same holds release each once.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT order_id FROM reservations WHERE status = 'active' AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2",
            )
            .await
            .map_err(store_error)?;
        let rows = conn
            .query(&stmt, &[&now, &limit])
            .await
            .map_err(store_error)?;
        Ok(rows
            .iter()
            .filter_map(|r| OrderId::parse(r.get(0)).ok())
            .collect())
    }

    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT min(expires_at) FROM reservations WHERE status = 'active'")
            .await
            .map_err(store_error)?;
        let row = conn.query_one(&stmt, &[]).await.map_err(store_error)?;
        Ok(row.get(0))
    }
}
