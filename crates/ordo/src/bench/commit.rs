//! `ordo bench group-commit`: commit throughput of the SQLite writer.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// A pending order of `lines` lines of two units each, and its
/// `order.created` event.
pub(super) fn sample_order(
    ids: &dyn IdGen,
    clock: &dyn Clock,
    customer: ClientId,
    lines: usize,
) -> anyhow::Result<(Order, Envelope)> {
    let now = clock.now();
    let price = Decimal::from_str("19.99")?;
    let items: Vec<OrderItem> = (0..lines)
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
        cancel_requested: None,
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
                let (order, event) = sample_order(ids.as_ref(), &SystemClock, customer, 2)?;
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

pub async fn group_commit(config: &Config, writers: usize, seconds: u64) -> anyhow::Result<()> {
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
