//! Products as inventory holds them.

use chrono::{DateTime, Utc};
use ordo_events::ProductUpserted;
use ordo_kernel::{ClientId, Currency, ProductId};
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub price: Decimal,
    pub currency: Currency,
    pub seller_id: ClientId,
    pub attributes: serde_json::Value,
    pub active: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Units that can be ordered now (read from the stock level).
    pub available: i64,
}

impl Product {
    pub fn upserted(&self) -> ProductUpserted {
        ProductUpserted {
            product_id: self.id,
            sku: self.sku.clone(),
            name: self.name.clone(),
            price: self.price,
            currency: self.currency,
            seller_id: self.seller_id,
            attributes: self.attributes.clone(),
            active: self.active,
            version: self.version,
        }
    }
}
