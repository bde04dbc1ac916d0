//! The inventory store on SQLite: every write goes through the single
//! writer, so a decision's snapshot cannot change under it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
use ordo_events::StockLine;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, StoreError};
use ordo_sqlite::{Database, outbox_append, record_inbox, store_error, time};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::stock::{
    Reservation, ReservationStatus, Snapshot, StockChange, StockLevel, apply_to_level,
};
use rust_decimal::Decimal;

use crate::catalog::Product;

use super::{Adjustment, Applied, Decide, InboxKey, ProductStore, StockStore};

pub struct SqliteInventoryStore {
    db: Database,
}

impl SqliteInventoryStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, sku, name, price, currency, seller_id, attributes, active, version, created_at, updated_at";
const SELECT_PRODUCT: &str = "SELECT p.id, p.sku, p.name, p.price, p.currency, p.seller_id, p.attributes, p.active, p.version,
    p.created_at, p.updated_at, coalesce(s.available, 0)
    FROM products p LEFT JOIN stock_levels s ON s.product_id = p.id";

type Raw = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    bool,
    i64,
    String,
    String,
    i64,
);

fn raw(row: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
    ))
}

fn product(r: Raw) -> Result<Product, StoreError> {
    let bad = |what: &str| StoreError::Other(anyhow::anyhow!("bad {what} in products"));
    Ok(Product {
        id: ProductId::parse(&r.0).map_err(|_| bad("id"))?,
        sku: r.1,
        name: r.2,
        price: Decimal::from_str(&r.3).map_err(|_| bad("price"))?,
        currency: Currency::parse(&r.4).map_err(|_| bad("currency"))?,
        seller_id: ClientId::parse(&r.5).map_err(|_| bad("seller_id"))?,
        attributes: serde_json::from_str(&r.6).map_err(|_| bad("attributes"))?,
        active: r.7,
        version: r.8,
        created_at: time::from_sql(&r.9)?,
        updated_at: time::from_sql(&r.10)?,
        available: r.11,
    })
}

#[async_trait::async_trait]
impl ProductStore for SqliteInventoryStore {
    async fn insert_all(&self, products: Vec<(Product, Envelope)>) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                for (p, event) in &products {
                    tx.prepare_cached(&format!(
                        "INSERT INTO products ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ))
                    .and_then(|mut s| {
                        s.execute(params![
                            p.id.to_string(), p.sku, p.name, p.price.to_string(), p.currency.as_str(),
                            p.seller_id.to_string(), p.attributes.to_string(), p.active, p.version,
                            time::to_sql(p.created_at), time::to_sql(p.updated_at)
                        ])
                    })
                    .map_err(store_error)?;
                    tx.prepare_cached(
                        "INSERT INTO stock_levels (product_id, available, reserved, allocated, committed, adjusted)
                         VALUES (?1, 0, 0, 0, 0, 0) ON CONFLICT (product_id) DO NOTHING",
                    )
                    .and_then(|mut s| s.execute([p.id.to_string()]))
                    .map_err(store_error)?;
                    outbox_append(tx, event)?;
                }
                Ok(())
            })
            .await
    }

    async fn get(&self, id: ProductId) -> Result<Product, StoreError> {
        let r = self
            .db
            .read(move |conn| {
                conn.prepare_cached(&format!("{SELECT_PRODUCT} WHERE p.id = ?1"))
                    .and_then(|mut s| s.query_row([id.to_string()], raw))
                    .map_err(store_error)
            })
            .await?;
        product(r)
    }

    async fn list(
        &self,
        seller: Option<ClientId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "{SELECT_PRODUCT}
                         WHERE (?1 IS NULL OR p.seller_id = ?1) AND (?2 IS NULL OR p.id > ?2)
                         ORDER BY p.id LIMIT ?3"
                    ))
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map(
                        params![
                            seller.map(|s| s.to_string()),
                            after.map(|a| a.to_string()),
                            limit
                        ],
                        raw,
                    )
                    .map_err(store_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(store_error)
            })
            .await?;
        rows.into_iter().map(product).collect()
    }

    async fn update(
        &self,
        p: Product,
        expected_version: i64,
        event: Envelope,
    ) -> Result<(), StoreError> {
        self.db
            .write(move |tx| {
                let changed = tx
                    .prepare_cached(
                        "UPDATE products SET name = ?2, price = ?3, currency = ?4, attributes = ?5, active = ?6,
                            version = ?7, updated_at = ?8
                         WHERE id = ?1 AND version = ?9",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            p.id.to_string(), p.name, p.price.to_string(), p.currency.as_str(),
                            p.attributes.to_string(), p.active, p.version, time::to_sql(p.updated_at),
                            expected_version
                        ])
                    })
                    .map_err(store_error)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(format!("product {} changed meanwhile", p.id)));
                }
                outbox_append(tx, &event)
            })
            .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.db
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM products", [], |r| r.get::<_, i64>(0))
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .map_err(store_error)
            })
            .await
    }
}

fn level_row(row: &Row<'_>) -> rusqlite::Result<StockLevel> {
    Ok(StockLevel {
        available: row.get(0)?,
        reserved: row.get(1)?,
        allocated: row.get(2)?,
        committed: row.get(3)?,
        adjusted: row.get(4)?,
    })
}

const LEVEL_COLUMNS: &str = "available, reserved, allocated, committed, adjusted";

fn load_level(conn: &Connection, product: ProductId) -> Result<Option<StockLevel>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {LEVEL_COLUMNS} FROM stock_levels WHERE product_id = ?1"
    ))
    .and_then(|mut s| s.query_row([product.to_string()], level_row).optional())
    .map_err(store_error)
}

fn save_level(conn: &Connection, product: ProductId, l: &StockLevel) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE stock_levels SET available = ?2, reserved = ?3, allocated = ?4, committed = ?5, adjusted = ?6
         WHERE product_id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![product.to_string(), l.available, l.reserved, l.allocated, l.committed, l.adjusted])
    })
    .map_err(store_error)?;
    Ok(())
}

fn load_reservation(conn: &Connection, order: OrderId) -> Result<Option<Reservation>, StoreError> {
    let row: Option<(String, Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT status, release_reason, expires_at FROM reservations WHERE order_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([order.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(store_error)?;
    let Some((status, release_reason, expires_at)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT product_id, quantity FROM reservation_lines WHERE order_id = ?1 ORDER BY product_id")
        .map_err(store_error)?;
    let lines = stmt
        .query_map([order.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
        })
        .map_err(store_error)?
        .map(|r| {
            let (product, quantity) = r.map_err(store_error)?;
            Ok(StockLine {
                product_id: ProductId::parse(&product).map_err(|_| {
                    StoreError::Other(anyhow::anyhow!("bad product id in reservation_lines"))
                })?,
                quantity,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(Reservation {
        order_id: order,
        status: ReservationStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("bad reservation status {status}")))?,
        release_reason,
        expires_at: expires_at.as_deref().map(time::from_sql).transpose()?,
        lines,
    }))
}

#[async_trait::async_trait]
impl StockStore for SqliteInventoryStore {
    async fn adjust(&self, a: Adjustment) -> Result<StockLevel, StoreError> {
        self.db
            .write(move |tx| {
                let mut level = load_level(tx, a.product)?.ok_or(StoreError::NotFound)?;
                if level.available + a.delta < 0 {
                    return Err(StoreError::Conflict(format!(
                        "only {} units are available to remove",
                        level.available
                    )));
                }
                level.available += a.delta;
                level.adjusted += a.delta;
                save_level(tx, a.product, &level)?;
                tx.prepare_cached(
                    "INSERT INTO stock_movements (id, product_id, delta, reason, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![a.movement_id, a.product.to_string(), a.delta, a.reason, a.actor, time::to_sql(a.at)])
                })
                .map_err(store_error)?;
                Ok(level)
            })
            .await
    }

    async fn level(&self, product: ProductId) -> Result<StockLevel, StoreError> {
        self.db
            .read(move |conn| load_level(conn, product)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn movements(
        &self,
        product: ProductId,
        limit: usize,
    ) -> Result<Vec<Adjustment>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, String, String, String)> = self
            .db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, delta, reason, actor, at FROM stock_movements
                         WHERE product_id = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
                    )
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map(params![product.to_string(), limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .map_err(store_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(store_error)
            })
            .await?;
        rows.into_iter()
            .map(|(movement_id, delta, reason, actor, at)| {
                Ok(Adjustment {
                    movement_id,
                    product,
                    delta,
                    reason,
                    actor,
                    at: time::from_sql(&at)?,
                })
            })
            .collect()
    }

    async fn levels(&self) -> Result<Vec<(ProductId, StockLevel)>, StoreError> {
        self.db
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT product_id, {LEVEL_COLUMNS} FROM stock_levels ORDER BY product_id"
                    ))
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        let id: String = r.get(0)?;
                        Ok((
                            id,
                            StockLevel {
                                available: r.get(1)?,
                                reserved: r.get(2)?,
                                allocated: r.get(3)?,
                                committed: r.get(4)?,
                                adjusted: r.get(5)?,
                            },
                        ))
                    })
                    .map_err(store_error)?;
                rows.map(|r| {
                    let (id, level) = r.map_err(store_error)?;
                    Ok((
                        ProductId::parse(&id)
                            .map_err(|_| StoreError::Other(anyhow::anyhow!("bad product id")))?,
                        level,
                    ))
                })
                .collect()
            })
            .await
    }

    async fn decide(
        &self,
        order: OrderId,
        products: Vec<ProductId>,
        inbox: Option<InboxKey>,
        decide: Decide,
    ) -> Result<Applied, StoreError> {
        self.db
            .write(move |tx| {
                if !record_inbox(tx, inbox.as_ref())?
                {
                    return Ok(Applied::Duplicate);
                }
                let reservation = load_reservation(tx, order)?;
                let mut wanted: Vec<ProductId> = products;
                if let Some(r) = &reservation {
                    wanted.extend(r.lines.iter().map(|l| l.product_id));
                }
                // A fixed order of reads: the PostgreSQL store locks rows in
                // the same order, so concurrent decisions cannot deadlock.
                wanted.sort();
                wanted.dedup();
                let mut snapshot = Snapshot {
                    reservation,
                    stock: Default::default(),
                };
                for product in wanted {
                    if let Some(level) = load_level(tx, product)? {
                        snapshot.stock.insert(product, level);
                    }
                }
                let from = snapshot.reservation.as_ref().map(|r| r.status);
                let held: Vec<StockLine> = snapshot.reservation.as_ref().map(|r| r.lines.clone()).unwrap_or_default();
                let decision = decide(&snapshot);
                let now = time::to_sql(chrono::Utc::now());
                let move_units = |lines: &[StockLine], change: &StockChange| -> Result<(), StoreError> {
                    for line in lines {
                        let level = snapshot.stock.get(&line.product_id).copied().ok_or(StoreError::NotFound)?;
                        // Read again: a line may name a product twice.
                        let current = load_level(tx, line.product_id)?.unwrap_or(level);
                        let next = apply_to_level(current, change, from, i64::from(line.quantity)).ok_or_else(|| {
                            StoreError::Conflict(format!("stock of {} would go negative", line.product_id))
                        })?;
                        save_level(tx, line.product_id, &next)?;
                    }
                    Ok(())
                };
                let set_status = |status: ReservationStatus, reason: Option<&str>| -> Result<(), StoreError> {
                    tx.prepare_cached(
                        "UPDATE reservations SET status = ?2, release_reason = coalesce(?3, release_reason),
                            expires_at = CASE WHEN ?2 = 'active' THEN expires_at ELSE NULL END, updated_at = ?4
                         WHERE order_id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![order.to_string(), status.as_str(), reason, now]))
                    .map_err(store_error)?;
                    Ok(())
                };
                let insert = |status: ReservationStatus, reason: Option<&str>, expires: Option<String>| -> Result<(), StoreError> {
                    tx.prepare_cached(
                        "INSERT INTO reservations (order_id, status, release_reason, expires_at, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![order.to_string(), status.as_str(), reason, expires, now]))
                    .map_err(store_error)?;
                    Ok(())
                };
                match &decision.change {
                    StockChange::Nothing => {}
                    StockChange::Reserve { lines, expires_at } => {
                        move_units(lines, &decision.change)?;
                        insert(ReservationStatus::Active, None, Some(time::to_sql(*expires_at)))?;
                        let mut stmt = tx
                            .prepare_cached(
                                "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES (?1, ?2, ?3)
                                 ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = quantity + excluded.quantity",
                            )
                            .map_err(store_error)?;
                        for line in lines {
                            stmt.execute(params![order.to_string(), line.product_id.to_string(), line.quantity])
                                .map_err(store_error)?;
                        }
                    }
                    StockChange::Fail { reason } => insert(ReservationStatus::Failed, Some(reason), None)?,
                    StockChange::Tombstone { reason } => insert(ReservationStatus::Released, Some(reason), None)?,
                    StockChange::Allocate => {
                        move_units(&held, &decision.change)?;
                        set_status(ReservationStatus::Allocated, None)?;
                    }
                    StockChange::Commit => {
                        move_units(&held, &decision.change)?;
                        set_status(ReservationStatus::Committed, None)?;
                    }
                    StockChange::Release { reason } => {
                        move_units(&held, &decision.change)?;
                        set_status(ReservationStatus::Released, Some(reason))?;
                    }
                }
                for event in &decision.events {
                    outbox_append(tx, event)?;
                }
                Ok(Applied::Done)
            })
            .await
    }

    async fn reservation(&self, order: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.db
            .read(move |conn| load_reservation(conn, order))
            .await
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.db
            .read(|conn| {
                let ids: Vec<String> = conn
                    .prepare_cached("SELECT order_id FROM reservations ORDER BY order_id")
                    .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                    .map_err(store_error)?;
                ids.iter()
                    .filter_map(|id| OrderId::parse(id).ok())
                    .map(|id| load_reservation(conn, id))
                    .filter_map(Result::transpose)
                    .collect()
            })
            .await
    }

    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OrderId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |conn| {
                let ids: Vec<String> = conn
                    .prepare_cached(
                        "SELECT order_id FROM reservations WHERE status = 'active' AND expires_at <= ?1
                         ORDER BY expires_at LIMIT ?2",
                    )
                    .and_then(|mut s| s.query_map(params![time::to_sql(now), limit], |r| r.get(0))?.collect())
                    .map_err(store_error)?;
                Ok(ids.iter().filter_map(|id| OrderId::parse(id).ok()).collect())
            })
            .await
    }

    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<String> = self
            .db
            .read(|conn| {
                conn.query_row(
                    "SELECT min(expires_at) FROM reservations WHERE status = 'active'",
                    [],
                    |r| r.get(0),
                )
                .map_err(store_error)
            })
            .await?;
        next.as_deref().map(time::from_sql).transpose()
    }
}
