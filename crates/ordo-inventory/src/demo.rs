//! The demo catalog created on a fresh store.

use std::str::FromStr;

use ordo_bus::{Envelope, EventContext};
use ordo_kernel::{ClientId, Currency, EventId, ProductId};
use rust_decimal::Decimal;

use crate::InventoryService;
use crate::catalog::Product;

const DEMO: &[(&str, &str, &str, &str)] = &[
    (
        "MUG-CLASSIC",
        "Classic enamel mug",
        "12.50",
        r#"{"color": "white", "material": "enamel"}"#,
    ),
    (
        "TEE-ORG-M",
        "Organic cotton T-shirt, M",
        "19.99",
        r#"{"size": "M", "color": "navy"}"#,
    ),
    (
        "TEE-ORG-L",
        "Organic cotton T-shirt, L",
        "19.99",
        r#"{"size": "L", "color": "navy"}"#,
    ),
    (
        "BOTTLE-750",
        "Insulated bottle 750 ml",
        "24.90",
        r#"{"volume_ml": 750}"#,
    ),
    (
        "NOTEBOOK-A5",
        "Dotted notebook A5",
        "8.40",
        r#"{"pages": 192}"#,
    ),
    ("PEN-FOUNTAIN", "Fountain pen", "34.00", r#"{"nib": "F"}"#),
    (
        "BAG-TOTE",
        "Canvas tote bag",
        "14.00",
        r#"{"material": "canvas"}"#,
    ),
    ("LAMP-DESK", "LED desk lamp", "49.95", r#"{"watts": 8}"#),
];

/// Units of each demo product in stock at first start.
pub const DEMO_STOCK: i64 = 100;

/// Creates the demo products for `seller`, with their `product.upserted`
/// events and an initial stock, unless the catalog already has products.
/// Returns how many were created.
pub async fn seed(service: &InventoryService, seller: ClientId) -> anyhow::Result<usize> {
    let (store, clock, ids) = (
        service.products(),
        service.clock().as_ref(),
        service.ids().as_ref(),
    );
    if store.count().await? > 0 {
        return Ok(0);
    }
    let now = clock.now();
    let eur = Currency::parse("EUR")?;
    let context = EventContext::from_request(format!("demo-seed-{}", ids.ulid()));
    let mut products = Vec::with_capacity(DEMO.len());
    for (sku, name, price, attributes) in DEMO {
        let product = Product {
            id: ProductId::from_ulid(ids.ulid()),
            sku: (*sku).to_owned(),
            name: (*name).to_owned(),
            price: Decimal::from_str(price)?,
            currency: eur,
            seller_id: seller,
            attributes: serde_json::from_str(attributes)?,
            active: true,
            version: 1,
            created_at: now,
            updated_at: now,
            available: 0,
        };
        let event = Envelope::new(
            EventId::from_ulid(ids.ulid()),
            now,
            product.id.to_string(),
            Some(product.version),
            &context,
            &product.upserted(),
        )?;
        products.push((product, event));
    }
    let created = products.len();
    let ids_created: Vec<ProductId> = products.iter().map(|(p, _)| p.id).collect();
    store.insert_all(products).await?;
    for id in ids_created {
        service
            .adjust(id, DEMO_STOCK, "initial", "system:demo")
            .await?;
    }
    Ok(created)
}
