//! `ordo bench dataset` and `ordo bench explain`: a year of a shop's
//! orders loaded into PostgreSQL, and the plans and timings of every list
//! query the API can issue over it.
//!
//! The data is generated from a seed (the same seed gives the same data):
//! customers who order repeatedly, sellers with catalogs, orders of one to
//! four lines spread over `days` days with more of them recently, older
//! orders settled (delivered or cancelled) and recent ones at every step
//! of the saga, and a few attributes (channel, gift, campaign). The
//! catalog the orders are placed from is loaded into the inventory schema
//! too, with stock levels, so the product lists are explained over it.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use ordo_events::Address;
use ordo_inventory::PgInventoryStore;
use ordo_inventory::catalog::Product;
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, Quantity};
use ordo_orders::PgOrderStore;
use ordo_orders::domain::{Order, OrderItem, OrderStatus};
use ordo_postgres::explain::{Explained, explain};
use ordo_postgres::{PgDatabase, PgOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use ulid::Ulid;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub orders: u64,
    pub customers: u64,
    pub sellers: u64,
    pub products: u64,
    pub days: u32,
    pub seed: u64,
}

struct CatalogItem {
    id: ProductId,
    sku: String,
    name: String,
    seller: ClientId,
    price: Decimal,
}

/// The fixed part of the data: who buys and what there is to buy.
struct World {
    customers: Vec<ClientId>,
    catalog: Vec<CatalogItem>,
    now: DateTime<Utc>,
    currency: Currency,
}

fn client(rng: &mut StdRng, at_ms: u64) -> ClientId {
    ClientId::from_ulid(Ulid::from_parts(at_ms, rng.random()))
}

impl World {
    fn new(spec: &Spec, rng: &mut StdRng) -> anyhow::Result<Self> {
        let now = Utc::now();
        let start_ms = now.timestamp_millis().unsigned_abs() - u64::from(spec.days) * 86_400_000;
        let sellers: Vec<ClientId> = (0..spec.sellers.max(1))
            .map(|_| client(rng, start_ms))
            .collect();
        let catalog = (0..spec.products.max(1))
            .map(|i| {
                let cents = rng.random_range(199..=49_999);
                CatalogItem {
                    id: ProductId::from_ulid(Ulid::from_parts(start_ms, rng.random())),
                    sku: format!("SKU-{i:06}"),
                    name: format!("Product {i}"),
                    seller: sellers[rng.random_range(0..sellers.len())],
                    price: Decimal::new(cents, 2),
                }
            })
            .collect();
        let customers = (0..spec.customers.max(1))
            .map(|_| client(rng, start_ms))
            .collect();
        Ok(Self {
            customers,
            catalog,
            now,
            currency: Currency::parse("EUR")?,
        })
    }

    /// A day in the past, weighted towards the present (a growing shop).
    fn created_at(&self, rng: &mut StdRng, days: u32) -> DateTime<Utc> {
        let span_ms = f64::from(days) * 86_400_000.0;
        let ago = span_ms * (1.0 - rng.random::<f64>().sqrt());
        self.now - chrono::Duration::milliseconds(ago as i64)
    }

    /// The catalog as inventory holds it, each product with its initial
    /// stock. Products predate the orders: they were listed up to half a
    /// year before the first one, some changed since, a few withdrawn.
    fn products(&self, rng: &mut StdRng, days: u32) -> Vec<(Product, i64)> {
        const CATEGORIES: [&str; 8] = [
            "books",
            "electronics",
            "garden",
            "kitchen",
            "toys",
            "sports",
            "fashion",
            "beauty",
        ];
        const COLORS: [&str; 6] = ["black", "white", "red", "blue", "green", "grey"];
        let first_order = self.now - chrono::Duration::days(i64::from(days));
        self.catalog
            .iter()
            .map(|item| {
                let created_at =
                    first_order - chrono::Duration::minutes(rng.random_range(0..180 * 24 * 60));
                let (version, updated_at) = if rng.random_bool(0.3) {
                    let since = (self.now - created_at).num_minutes().max(1);
                    (
                        rng.random_range(2..=5),
                        created_at + chrono::Duration::minutes(rng.random_range(0..since)),
                    )
                } else {
                    (1, created_at)
                };
                let mut attributes = serde_json::Map::new();
                attributes.insert(
                    "category".to_owned(),
                    CATEGORIES[rng.random_range(0..CATEGORIES.len())].into(),
                );
                attributes.insert(
                    "brand".to_owned(),
                    format!("Brand {}", rng.random_range(1..=300)).into(),
                );
                if rng.random_bool(0.6) {
                    attributes.insert(
                        "color".to_owned(),
                        COLORS[rng.random_range(0..COLORS.len())].into(),
                    );
                }
                attributes.insert("weight_g".to_owned(), rng.random_range(50..=20_000).into());
                let stock = if rng.random_bool(0.05) {
                    0
                } else {
                    rng.random_range(1..=500)
                };
                let product = Product {
                    id: item.id,
                    sku: item.sku.clone(),
                    name: item.name.clone(),
                    price: item.price,
                    currency: self.currency,
                    seller_id: item.seller,
                    attributes: serde_json::Value::Object(attributes),
                    active: rng.random_bool(0.97),
                    version,
                    created_at,
                    updated_at,
                    available: stock,
                };
                (product, stock)
            })
            .collect()
    }

    fn order(&self, rng: &mut StdRng, days: u32) -> anyhow::Result<Order> {
        let created_at = self.created_at(rng, days);
        let age = self.now - created_at;
        let status = if age > chrono::Duration::days(7) {
            if rng.random_bool(0.88) {
                OrderStatus::Delivered
            } else {
                OrderStatus::Cancelled
            }
        } else {
            match rng.random_range(0..100) {
                0..5 => OrderStatus::Pending,
                5..12 => OrderStatus::Confirmed,
                12..30 => OrderStatus::Paid,
                30..55 => OrderStatus::Shipped,
                55..90 => OrderStatus::Delivered,
                _ => OrderStatus::Cancelled,
            }
        };
        let cancellation_reason = (status == OrderStatus::Cancelled).then(|| {
            [
                "out_of_stock",
                "payment_failed",
                "customer_cancelled",
                "reservation_expired",
            ][rng.random_range(0..4)]
            .to_owned()
        });
        let lines = match rng.random_range(0..100) {
            0..55 => 1,
            55..85 => 2,
            85..95 => 3,
            _ => 4,
        };
        let mut items: Vec<OrderItem> = Vec::with_capacity(lines);
        while items.len() < lines {
            let product = &self.catalog[rng.random_range(0..self.catalog.len())];
            if items.iter().any(|i| i.product_id == product.id) {
                continue;
            }
            let quantity = rng.random_range(1..=3);
            items.push(OrderItem {
                product_id: product.id,
                sku: product.sku.clone(),
                name: product.name.clone(),
                seller_id: product.seller,
                quantity: Quantity::new(quantity)?,
                unit_price: product.price,
                line_total: product.price * Decimal::from(quantity),
            });
        }
        let customer = self.customers[rng.random_range(0..self.customers.len())];
        let country = ["DE", "FR", "NL", "AT", "IT", "ES"][rng.random_range(0..6)];
        let mut attributes = serde_json::Map::new();
        attributes.insert(
            "channel".to_owned(),
            ["web", "app", "marketplace"][rng.random_range(0..3)].into(),
        );
        attributes.insert("gift".to_owned(), rng.random_bool(0.08).into());
        if rng.random_bool(0.03) {
            attributes.insert("campaign".to_owned(), "black-friday".into());
        }
        let ms = created_at.timestamp_millis().unsigned_abs();
        Ok(Order {
            id: OrderId::from_ulid(Ulid::from_parts(ms, rng.random())),
            customer_id: customer,
            status,
            cancellation_reason,
            currency: self.currency,
            total: items.iter().map(|i| i.line_total).sum(),
            market: country.to_owned(),
            shipping_address: Address {
                name: "Dataset Customer".to_owned(),
                line1: format!("Street {}", rng.random_range(1..300)),
                line2: None,
                city: "City".to_owned(),
                postal_code: format!("{:05}", rng.random_range(1000..99999)),
                country: country.to_owned(),
            },
            payment_token: "tok_visa".to_owned(),
            attributes: serde_json::Value::Object(attributes),
            items,
            idempotency_key: None,
            version: 1,
            created_at,
            updated_at: created_at,
            cancel_requested: None,
        })
    }
}

pub(super) async fn orders_db(url: &str) -> anyhow::Result<PgDatabase> {
    PgDatabase::connect(
        url,
        "orders",
        &ordo_orders::PG_MIGRATIONS,
        &PgOptions {
            pool_size: 4,
            ..PgOptions::default()
        },
    )
    .await
    .context("opening the orders schema")
}

async fn inventory_db(url: &str) -> anyhow::Result<PgDatabase> {
    PgDatabase::connect(
        url,
        "inventory",
        &ordo_inventory::PG_MIGRATIONS,
        &PgOptions {
            pool_size: 4,
            ..PgOptions::default()
        },
    )
    .await
    .context("opening the inventory schema")
}

/// Loads the catalog into the inventory schema, in batches.
async fn load_catalog(url: &str, world: &World, spec: &Spec) -> anyhow::Result<()> {
    let db = inventory_db(url).await?;
    let store = PgInventoryStore::new(db.clone());
    // Its own generator, so that the orders of a seed stay the same.
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x_c4a7_a106);
    let products = world.products(&mut rng, spec.days);
    for batch in products.chunks(5_000) {
        store.load_catalog(batch).await?;
    }
    db.analyze().await?;
    Ok(())
}

/// Generates and loads `spec.orders` orders, in batches, with a progress bar.
pub async fn load(url: &str, spec: Spec) -> anyhow::Result<()> {
    let db = orders_db(url).await?;
    let store = PgOrderStore::new(db.clone());
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let world = World::new(&spec, &mut rng)?;
    let started = Instant::now();
    load_catalog(url, &world, &spec).await?;
    println!(
        "loaded {} products of {} sellers into the inventory schema in {:.1?}",
        world.catalog.len(),
        spec.sellers,
        started.elapsed()
    );
    let bar = ProgressBar::new(spec.orders);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} orders ({per_sec}, {eta} left)",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    const BATCH: u64 = 2_000;
    // Generating the next batch overlaps with loading the previous one.
    let mut loading: Option<tokio::task::JoinHandle<anyhow::Result<u64>>> = None;
    let mut generated = 0;
    let store = std::sync::Arc::new(store);
    while generated < spec.orders {
        let n = BATCH.min(spec.orders - generated);
        let batch = (0..n)
            .map(|_| world.order(&mut rng, spec.days))
            .collect::<anyhow::Result<Vec<_>>>()?;
        generated += n;
        if let Some(previous) = loading.take() {
            bar.inc(previous.await??);
        }
        let store = store.clone();
        loading = Some(tokio::spawn(async move {
            store.load_history(&batch).await?;
            Ok(n)
        }));
    }
    if let Some(previous) = loading.take() {
        bar.inc(previous.await??);
    }
    bar.finish();
    db.analyze().await?;
    println!(
        "loaded {} orders ({} customers, {} products of {} sellers) in {:.1?}",
        spec.orders,
        spec.customers,
        spec.products,
        spec.sellers,
        started.elapsed()
    );
    Ok(())
}

/// Explains every list query over the loaded data; fails when one reads a
/// large table sequentially.
pub async fn check(url: &str, runs: usize, large_rows: i64, json: bool) -> anyhow::Result<()> {
    let orders_db = orders_db(url).await?;
    let inventory_db = inventory_db(url).await?;
    let order_probes = PgOrderStore::new(orders_db.clone()).probes().await?;
    let product_probes = PgInventoryStore::new(inventory_db.clone()).probes().await?;
    anyhow::ensure!(
        !order_probes.is_empty() && !product_probes.is_empty(),
        "no orders or no products to sample query parameters from: run `ordo bench dataset` first"
    );
    // Each schema's probes, with that schema's large tables: plans name
    // relations without their schema.
    let mut schemas = Vec::new();
    for (schema, db, probes) in [
        ("orders", &orders_db, order_probes),
        ("inventory", &inventory_db, product_probes),
    ] {
        schemas.push((schema, db, db.large_tables(large_rows).await?, probes));
    }
    let mut results: Vec<(Explained, &[String])> = Vec::new();
    for (_, db, large, probes) in &schemas {
        for probe in probes {
            let explained = explain(db, probe, runs)
                .await
                .with_context(|| format!("explaining {}", probe.name))?;
            results.push((explained, large));
        }
    }
    let large: Vec<String> = schemas
        .iter()
        .flat_map(|(schema, _, large, _)| large.iter().map(move |t| format!("{schema}.{t}")))
        .collect();
    let offending: Vec<(&Explained, Vec<&String>)> = results
        .iter()
        .map(|(r, large)| {
            (
                r,
                r.seq_scans
                    .iter()
                    .filter(|t| large.contains(t))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, scans)| !scans.is_empty())
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(r, _)| {
                serde_json::json!({
                    "query": r.name,
                    "p50_ms": ms(r.percentile(50.0)),
                    "p95_ms": ms(r.percentile(95.0)),
                    "rows": r.rows,
                    "indexes": r.indexes,
                    "seq_scans": r.seq_scans,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("| query | p50 ms | p95 ms | rows | indexes | seq scans |");
        println!("|---|---:|---:|---:|---|---|");
        for (r, _) in &results {
            println!(
                "| `{}` | {:.2} | {:.2} | {} | {} | {} |",
                r.name,
                ms(r.percentile(50.0)),
                ms(r.percentile(95.0)),
                r.rows,
                r.indexes.join(", "),
                if r.seq_scans.is_empty() {
                    "none".to_owned()
                } else {
                    r.seq_scans.join(", ")
                }
            );
        }
        println!(
            "\n{} queries, {runs} runs each; large tables (≥ {large_rows} rows): {}",
            results.len(),
            large.join(", ")
        );
    }
    if !offending.is_empty() {
        for (r, scans) in &offending {
            eprintln!(
                "{}: sequential scan of {:?}\n{}\n{}",
                r.name,
                scans,
                r.sql,
                serde_json::to_string_pretty(&r.plan)?
            );
        }
        anyhow::bail!(
            "{} queries scan a large table sequentially",
            offending.len()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Parses `--orders 1000000` or `--orders 1M`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let s = s.trim().replace('_', "");
    let (digits, factor) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('m' | 'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s.as_str(), 1),
    };
    u64::from_str(digits)
        .map(|n| n * factor)
        .map_err(|_| format!("{s:?} is not a count (e.g. 1000000 or 1M)"))
}
