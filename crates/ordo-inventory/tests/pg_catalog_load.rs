//! Loading a catalog in bulk and the product list probes, on PostgreSQL
//! only (skipped when `ORDO_TEST_DATABASE_URL` is unset).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DurationRound, TimeDelta, Utc};
use ordo_inventory::catalog::Product;
use ordo_inventory::{PG_MIGRATIONS, PgInventoryStore, ProductStore, StockStore};
use ordo_kernel::{ClientId, Currency, ProductId};
use ordo_postgres::testing::TestDatabase;
use ordo_postgres::{PgDatabase, PgOptions};
use rust_decimal::Decimal;
use serde_json::json;
use ulid::Ulid;

/// The store, its database and, dropped last, the throw-away database.
async fn store() -> Option<(PgInventoryStore, PgDatabase, TestDatabase)> {
    let Some(database) = TestDatabase::create().await else {
        eprintln!("ORDO_TEST_DATABASE_URL is not set: the PostgreSQL run is skipped");
        return None;
    };
    let db = PgDatabase::connect(
        database.url(),
        "inventory",
        &PG_MIGRATIONS,
        &PgOptions {
            pool_size: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Some((PgInventoryStore::new(db.clone()), db, database))
}

fn product(seller: ClientId, n: usize) -> Product {
    let at = Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap()
        - TimeDelta::days(30);
    Product {
        id: ProductId::from_ulid(Ulid::new()),
        sku: format!("SKU-{n}"),
        name: format!("Product {n}"),
        price: Decimal::new(1990, 2),
        currency: Currency::parse("EUR").unwrap(),
        seller_id: seller,
        attributes: json!({"category": "kitchen"}),
        active: n.is_multiple_of(2),
        version: 2,
        created_at: at,
        updated_at: at + TimeDelta::days(1),
        available: 0,
    }
}

#[tokio::test]
async fn a_loaded_catalog_reads_back_with_its_stock_and_every_list_probe_runs() {
    let Some((store, db, _database)) = store().await else {
        return;
    };
    assert!(store.probes().await.unwrap().is_empty());

    let (a, b) = (
        ClientId::from_ulid(Ulid::new()),
        ClientId::from_ulid(Ulid::new()),
    );
    let catalog: Vec<(Product, i64)> = (0..6)
        .map(|n| (product(if n < 4 { a } else { b }, n), n as i64 * 10))
        .collect();
    store.load_catalog(&catalog[..3]).await.unwrap();
    store.load_catalog(&catalog[3..]).await.unwrap();
    store.load_catalog(&[]).await.unwrap();

    let mut expected: Vec<Product> = catalog
        .iter()
        .map(|(p, n)| Product {
            available: *n,
            ..p.clone()
        })
        .collect();
    expected.sort_by_key(|p| p.id);
    assert_eq!(store.list(None, None, 10).await.unwrap(), expected);
    for (p, n) in &catalog {
        let level = store.level(p.id).await.unwrap();
        assert_eq!(
            (level.available, level.adjusted, level.reserved),
            (*n, *n, 0)
        );
    }
    assert_eq!(store.list(Some(a), None, 10).await.unwrap().len(), 4);

    let probes = store.probes().await.unwrap();
    assert_eq!(probes.len(), 4);
    let rows: Vec<usize> = {
        let mut rows = Vec::new();
        for probe in &probes {
            let explained = ordo_postgres::explain::explain(&db, probe, 1)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", probe.name));
            rows.push(explained.rows);
        }
        rows
    };
    // All products, then past the deepest cursor there is; the busiest
    // seller's, likewise.
    assert_eq!(rows, [6, 0, 4, 0]);
}
