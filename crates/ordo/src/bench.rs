//! Benchmark tools. Each prints figures; none asserts a timing.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use ordo_bus::{Envelope, EventContext};
use ordo_events::{Address, OrderCreated};
use ordo_kernel::{
    ClientId, Clock, Currency, EventId, IdGen, OrderId, ProductId, Quantity, SystemClock, UlidGen,
};
use ordo_orders::domain::{Order, OrderItem, OrderStatus};
use ordo_orders::{OrderStore, SqliteOrderStore};
use ordo_sqlite::{Database, DatabaseOptions};
use rust_decimal::Decimal;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Saga latency, order.created → order.paid, read from the timelines of
    /// orders placed at a constant rate against a running server.
    Saga {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's demo credentials file.
        #[arg(long, default_value = "ordo-data/demo-credentials.json")]
        credentials: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        orders: u32,
        /// Orders per second, open loop.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Commit throughput of the SQLite writer: the create-order transaction
    /// (order, items, outbox row), with group commit and with one commit
    /// per transaction, from the same number of concurrent writers.
    GroupCommit {
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Seconds each mode runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

pub async fn run(config: &Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::GroupCommit { writers, seconds } => {
            group_commit(config, writers, seconds).await
        }
        BenchCommand::Saga {
            url,
            credentials,
            orders,
            rate,
        } => saga(&url, &credentials, orders, rate).await,
    }
}

fn sample_order(
    ids: &dyn IdGen,
    clock: &dyn Clock,
    customer: ClientId,
) -> anyhow::Result<(Order, Envelope)> {
    let now = clock.now();
    let price = Decimal::from_str("19.99")?;
    let items: Vec<OrderItem> = (0..2)
        .map(|i| OrderItem {
            product_id: ProductId::from_ulid(ids.ulid()),
            sku: format!("SKU-{i}"),
            name: "Benchmark item".to_owned(),
            seller_id: customer,
            quantity: Quantity::new(2).unwrap_or_else(|_| unreachable!("2 is a valid quantity")),
            unit_price: price,
            line_total: price * Decimal::from(2),
        })
        .collect();
    let address = Address {
        name: "Bench Customer".to_owned(),
        line1: "Teststr. 1".to_owned(),
        line2: None,
        city: "Berlin".to_owned(),
        postal_code: "10115".to_owned(),
        country: "DE".to_owned(),
    };
    let order = Order {
        id: OrderId::from_ulid(ids.ulid()),
        customer_id: customer,
        status: OrderStatus::Pending,
        cancellation_reason: None,
        currency: Currency::parse("EUR")?,
        total: items.iter().map(|i| i.line_total).sum(),
        market: "DE".to_owned(),
        shipping_address: address.clone(),
        payment_token: "tok_visa".to_owned(),
        attributes: serde_json::json!({"gift": false}),
        items,
        idempotency_key: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let event = Envelope::new(
        EventId::from_ulid(ids.ulid()),
        now,
        order.id.to_string(),
        Some(1),
        &EventContext::from_request("bench"),
        &OrderCreated {
            order_id: order.id,
            customer_id: customer,
            items: order.lines(),
            total: order.total,
            currency: order.currency,
            shipping_address: address,
            created_at: now,
        },
    )?;
    Ok((order, event))
}

async fn measure(
    dir: &std::path::Path,
    max_batch: usize,
    writers: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let db = Database::open(
        "bench",
        &dir.join(format!("bench-{max_batch}.db")),
        &ordo_orders::MIGRATIONS,
        DatabaseOptions {
            max_batch,
            ..DatabaseOptions::default()
        },
    )?;
    let store: Arc<dyn OrderStore> = Arc::new(SqliteOrderStore::new(db.clone()));
    let ids: Arc<dyn IdGen> = Arc::new(UlidGen::new());
    let committed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, ids, committed) = (store.clone(), ids.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let customer = ClientId::from_ulid(ids.ulid());
            while Instant::now() < deadline {
                let (order, event) = sample_order(ids.as_ref(), &SystemClock, customer)?;
                store.create(order, event).await?;
                committed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(store);
    db.close();
    Ok(committed.load(Ordering::Relaxed) as f64 / elapsed)
}

async fn group_commit(config: &Config, writers: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = config.data_dir.join(format!("bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "create-order transactions (order + 2 items + outbox row), {writers} concurrent writers, {seconds} s per mode, synchronous=FULL, in {}",
        dir.display()
    );
    let result = async {
        let naive = measure(&dir, 1, writers, seconds).await?;
        println!("naive (one commit per transaction): {naive:>10.0} tx/s");
        let group = measure(&dir, 512, writers, seconds).await?;
        println!("group commit:                       {group:>10.0} tx/s");
        println!("ratio: {:.1}x", group / naive.max(f64::MIN_POSITIVE));
        anyhow::Ok(())
    }
    .await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn token(
    http: &reqwest::Client,
    url: &str,
    credentials: &serde_json::Value,
    role: &str,
) -> anyhow::Result<String> {
    let c = &credentials[role];
    let body: serde_json::Value = http
        .post(format!("{url}/oauth/token"))
        .json(&serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": c["client_id"],
            "client_secret": c["client_secret"],
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access_token for {role}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn saga(
    url: &str,
    credentials: &std::path::Path,
    orders: u32,
    rate: u32,
) -> anyhow::Result<()> {
    use serde_json::{Value, json};
    let credentials: Value = serde_json::from_slice(&std::fs::read(credentials)?)?;
    let http = reqwest::Client::new();
    let customer = token(&http, url, &credentials, "customer").await?;
    let seller = token(&http, url, &credentials, "seller").await?;
    let product: Value = http
        .post(format!("{url}/v1/products"))
        .bearer_auth(&seller)
        .json(
            &json!({"sku": format!("BENCH-{}", ulid::Ulid::new()), "name": "Benchmark item",
                      "price": "9.99", "currency": "EUR", "initial_stock": i64::from(orders) * 2}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let product = product["id"].as_str().unwrap_or_default().to_owned();
    // Orders are priced from the catalog projection: wait until the
    // product.upserted event has been handled everywhere.
    let admin = token(&http, url, &credentials, "admin").await?;
    let quiet_by = Instant::now() + Duration::from_secs(30);
    loop {
        let bus: Value = http
            .get(format!("{url}/v1/admin/outbox"))
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await?;
        let quiet = bus["outboxes"]
            .as_array()
            .is_some_and(|o| o.iter().all(|o| o["backlog"] == 0));
        anyhow::ensure!(
            Instant::now() < quiet_by,
            "the server's outboxes never drained"
        );
        if quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = json!({
        "items": [{"product_id": product, "quantity": 1}],
        "shipping_address": {"name": "Bench", "line1": "Teststr. 1", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"},
        "payment": {"token": "tok_visa"}
    });
    println!("placing {orders} orders at {rate}/s against {url}");
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(interval);
    let mut tasks = Vec::with_capacity(orders as usize);
    for _ in 0..orders {
        ticker.tick().await;
        let (http, url, customer, body) =
            (http.clone(), url.to_owned(), customer.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/orders"))
                .bearer_auth(&customer)
                .json(&body)
                .send()
                .await?;
            let order: Value = r.error_for_status()?.json().await?;
            anyhow::Ok(order["id"].as_str().unwrap_or_default().to_owned())
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latencies = Vec::new();
    let mut unfinished = 0;
    for id in &ids {
        loop {
            let timeline: Value = http
                .get(format!("{url}/v1/orders/{id}/timeline"))
                .bearer_auth(&customer)
                .send()
                .await?
                .json()
                .await?;
            let items = timeline["items"].as_array().cloned().unwrap_or_default();
            let at = |t: &str| {
                items
                    .iter()
                    .find(|e| e["type"] == t)
                    .and_then(|e| e["at"].as_str())
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            };
            if let (Some(created), Some(paid)) = (at("order.created"), at("order.paid")) {
                latencies.push((paid - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break;
            }
            if at("order.cancelled").is_some() || Instant::now() > deadline {
                unfinished += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "create → paid over {} orders ({unfinished} not paid):",
        latencies.len()
    );
    for p in [50.0, 90.0, 95.0, 99.0, 100.0] {
        println!("  p{p:<5} {:>8.1} ms", percentile(&latencies, p));
    }
    Ok(())
}
