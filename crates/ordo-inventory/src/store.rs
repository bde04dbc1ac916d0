use std::str::FromStr;

use ordo_bus::Envelope;
use ordo_kernel::{ClientId, Currency, ProductId, StoreError};
use ordo_sqlite::{
    Database, Migration, MigrationSet, PLATFORM_MIGRATIONS, outbox_append, store_error, time,
};
use rusqlite::{Row, params};
use rust_decimal::Decimal;

use crate::catalog::Product;

pub const MIGRATIONS: [MigrationSet; 2] = [
    PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "inventory",
        migrations: &[Migration {
            version: 1,
            name: "products",
            sql: include_str!("../migrations/0001_products.sql"),
        }],
    },
];

#[async_trait::async_trait]
pub trait ProductStore: Send + Sync + 'static {
    /// Inserts the products with their events, all or none.
    async fn insert_all(&self, products: Vec<(Product, Envelope)>) -> Result<(), StoreError>;
    async fn get(&self, id: ProductId) -> Result<Product, StoreError>;
    /// A page of products in id order after `after`, optionally one seller's.
    async fn list(
        &self,
        seller: Option<ClientId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
}

pub struct SqliteProductStore {
    db: Database,
}

impl SqliteProductStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const COLUMNS: &str = "id, sku, name, price, currency, seller_id, attributes, active, version, created_at, updated_at";

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
    })
}

#[async_trait::async_trait]
impl ProductStore for SqliteProductStore {
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
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM products WHERE id = ?1"))
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
                        "SELECT {COLUMNS} FROM products
                         WHERE (?1 IS NULL OR seller_id = ?1) AND (?2 IS NULL OR id > ?2)
                         ORDER BY id LIMIT ?3"
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
