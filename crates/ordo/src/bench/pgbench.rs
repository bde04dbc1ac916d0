//! `ordo bench pgbench-scripts`: the create-order and get-order work of
//! the orders store as pgbench scripts, the database's ceiling for the
//! HTTP benchmarks of the same endpoints (`scripts/bench-ceiling`).

use std::path::Path;

use anyhow::Context;
use ordo_kernel::{ClientId, SystemClock, UlidGen};
use ordo_orders::store::OrderFilter;
use ordo_orders::{OrderStore, PgOrderStore};

use super::{commit, dataset};

/// pgbench runs at most 128 scripts.
const MAX_GET_SCRIPTS: usize = 100;

/// Writes `create.sql` (the transaction of `POST /v1/orders`: an order of
/// one line, as the `create` scenario of `bench http` places) and one
/// `get-NNN.sql` per order read (the queries of `GET /v1/orders/{id}`,
/// for the newest `get_orders` orders of the database) into `out`.
pub async fn write_scripts(url: &str, out: &Path, get_orders: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ids = UlidGen::new();
    let (mut order, event) = commit::sample_order(
        &ids,
        &SystemClock,
        ClientId::from_ulid(ulid::Ulid::new()),
        1,
    )?;
    order.attributes = serde_json::json!({});
    let create = PgOrderStore::pgbench_create(&order, &event)?;
    std::fs::write(out.join("create.sql"), create)?;

    let store = PgOrderStore::new(dataset::orders_db(url).await?);
    let newest = store
        .list(OrderFilter::default(), get_orders.clamp(1, MAX_GET_SCRIPTS))
        .await?;
    anyhow::ensure!(
        !newest.is_empty(),
        "the database has no orders to read: place some first (bench http does)"
    );
    for (i, order) in newest.iter().enumerate() {
        std::fs::write(
            out.join(format!("get-{i:03}.sql")),
            PgOrderStore::pgbench_get(order.id)?,
        )?;
    }
    println!(
        "wrote create.sql and {} get scripts to {}",
        newest.len(),
        out.display()
    );
    Ok(())
}
