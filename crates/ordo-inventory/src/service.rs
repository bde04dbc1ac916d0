//! Inventory use cases: the catalog for sellers, stock adjustments, and
//! the reactions of the saga (reserve, allocate, commit, release, expire).

use std::sync::Arc;
use std::time::Duration;

use ordo_bus::{Consumer, Envelope, EventContext, EventPayload, Handler, HandlerError};
use ordo_events::{OrderCancelled, OrderCreated, OrderPaid, OrderShipped, StockLine};
use ordo_http::validate::text;
use ordo_http::{FieldError, Principal, Role};
use ordo_kernel::{ClientId, Clock, Currency, EventId, IdGen, ProductId, StoreError};
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::Product;
use crate::stock::{self, EventStamp, StockLevel};
use crate::{Adjustment, InboxKey, ProductStore, StockStore};

pub const CONSUMER: &str = "inventory.orders";

/// The catalog use cases' error story.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Forbidden(&'static str),
    /// Unknown, or not visible to the caller: the same answer for both.
    #[error("no such product")]
    NotFound,
    /// Fields of the request are invalid, each with why.
    #[error("{} fields are invalid", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("a product with this sku exists")]
    SkuTaken,
    /// The product changed between reading and saving it.
    #[error("the product changed meanwhile; read it again")]
    ChangedMeanwhile,
    /// A correction would take the available stock below zero.
    #[error("{0}")]
    InsufficientStock(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new product as its seller describes it, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct ProductDraft {
    pub sku: String,
    pub name: String,
    /// A decimal string such as `9.99`.
    pub price: String,
    pub currency: String,
    pub attributes: Option<serde_json::Value>,
    /// Units in stock to start with (default 0).
    pub initial_stock: Option<i64>,
}

/// What a seller changes of a product; `None` keeps the field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductEdit {
    pub name: Option<String>,
    pub price: Option<String>,
    pub attributes: Option<serde_json::Value>,
    pub active: Option<bool>,
}

/// A restock (adds units) or a correction (adds or removes them).
#[derive(Debug, Clone)]
pub struct StockEdit {
    pub delta: i64,
    /// `restock` or `correction`.
    pub reason: String,
}

/// The largest stock change, and the largest initial stock.
const MAX_UNITS: i64 = 1_000_000_000;

fn check_price(
    errors: &mut Vec<FieldError>,
    value: &str,
    currency: Option<Currency>,
) -> Option<Decimal> {
    let Some(amount) = value.trim().parse::<Decimal>().ok() else {
        errors.push(FieldError::new(
            "price",
            "must be a decimal string such as \"9.99\"",
        ));
        return None;
    };
    if let Some(currency) = currency
        && let Err(e) = currency.check_amount(amount)
    {
        errors.push(FieldError::new("price", e.to_string()));
        return None;
    }
    if amount.is_zero() {
        errors.push(FieldError::new("price", "must be more than zero"));
        return None;
    }
    Some(amount)
}
const ACTOR: &str = "system:inventory";

pub struct InventoryService {
    products: Arc<dyn ProductStore>,
    stock: Arc<dyn StockStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    reservation_ttl: Duration,
    new_hold: Notify,
}

impl InventoryService {
    pub fn new(
        products: Arc<dyn ProductStore>,
        stock: Arc<dyn StockStore>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
        reservation_ttl: Duration,
    ) -> Self {
        Self {
            products,
            stock,
            clock,
            ids,
            reservation_ttl,
            new_hold: Notify::new(),
        }
    }

    pub fn products(&self) -> &Arc<dyn ProductStore> {
        &self.products
    }

    pub fn stock(&self) -> &Arc<dyn StockStore> {
        &self.stock
    }

    /// What inventory holds for an order, if anything (admins only).
    pub async fn reservation(
        &self,
        caller: &Principal,
        order: ordo_kernel::OrderId,
    ) -> Result<Option<stock::Reservation>, CatalogError> {
        if caller.role != Role::Admin {
            return Err(CatalogError::Forbidden("only admins see reservations"));
        }
        Ok(self.stock.reservation(order).await?)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn ids(&self) -> &Arc<dyn IdGen> {
        &self.ids
    }

    fn stamp(&self, context: EventContext) -> EventStamp {
        EventStamp {
            id: EventId::from_ulid(self.ids.ulid()),
            time: self.clock.now(),
            context,
            actor: ACTOR.to_owned(),
        }
    }

    /// A page of the catalog in id order: a seller's list holds its own
    /// products only (it manages its catalog), everyone else's any
    /// seller's, or the one asked for.
    pub async fn list_products(
        &self,
        caller: &Principal,
        mut seller: Option<ClientId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, CatalogError> {
        if caller.role == Role::Seller {
            if seller.is_some_and(|s| s != caller.client_id) {
                return Err(CatalogError::Forbidden(
                    "sellers list their own products only",
                ));
            }
            seller = Some(caller.client_id);
        }
        Ok(self.products.list(seller, after, limit).await?)
    }

    /// A page of the caller's catalog with each product's stock by
    /// bucket, scoped as [`Self::list_products`]; for sellers and admins.
    pub async fn products_with_stock(
        &self,
        caller: &Principal,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<(Product, StockLevel)>, CatalogError> {
        if !matches!(caller.role, Role::Seller | Role::Admin) {
            return Err(CatalogError::Forbidden(
                "only sellers and admins read stock levels",
            ));
        }
        let products = self.list_products(caller, None, after, limit).await?;
        let mut stocked = Vec::with_capacity(products.len());
        for product in products {
            let level = match self.stock.level(product.id).await {
                Ok(level) => level,
                // A product is written with its (empty) stock row.
                Err(StoreError::NotFound) => StockLevel::default(),
                Err(e) => return Err(e.into()),
            };
            stocked.push((product, level));
        }
        Ok(stocked)
    }

    /// A product as the caller may see it: a withdrawn product only by its
    /// seller and admins.
    pub async fn product(
        &self,
        caller: &Principal,
        id: ProductId,
    ) -> Result<Product, CatalogError> {
        let product = self.load(id).await?;
        if !product.active && caller.role != Role::Admin && caller.client_id != product.seller_id {
            return Err(CatalogError::NotFound);
        }
        Ok(product)
    }

    /// The product, if the caller may manage it: its seller or an admin.
    pub async fn managed_product(
        &self,
        caller: &Principal,
        id: ProductId,
    ) -> Result<Product, CatalogError> {
        if !matches!(caller.role, Role::Seller | Role::Admin) {
            return Err(CatalogError::Forbidden(
                "only a product's seller or an admin manages it",
            ));
        }
        let product = self.load(id).await?;
        if caller.role == Role::Seller && product.seller_id != caller.client_id {
            // Another seller's product is none of this seller's business.
            return Err(CatalogError::NotFound);
        }
        Ok(product)
    }

    async fn load(&self, id: ProductId) -> Result<Product, CatalogError> {
        match self.products.get(id).await {
            Ok(product) => Ok(product),
            Err(StoreError::NotFound) => Err(CatalogError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a seller's product, with its initial stock as the seller's
    /// first movement, and publishes `product.upserted`.
    pub async fn create_product(
        &self,
        caller: &Principal,
        draft: ProductDraft,
        context: &EventContext,
    ) -> Result<Product, CatalogError> {
        if caller.role != Role::Seller {
            return Err(CatalogError::Forbidden("only sellers create products"));
        }
        let mut errors = Vec::new();
        let sku = text(&mut errors, "sku", &draft.sku, 64);
        let name = text(&mut errors, "name", &draft.name, 200);
        let currency = Currency::parse(&draft.currency)
            .map_err(|e| errors.push(FieldError::new("currency", e.to_string())))
            .ok();
        let amount = check_price(&mut errors, &draft.price, currency);
        let attributes = draft.attributes.unwrap_or_else(|| serde_json::json!({}));
        if !attributes.is_object() {
            errors.push(FieldError::new("attributes", "must be a JSON object"));
        }
        let initial = draft.initial_stock.unwrap_or(0);
        if !(0..=MAX_UNITS).contains(&initial) {
            errors.push(FieldError::new(
                "initial_stock",
                format!("must be from 0 to {MAX_UNITS}"),
            ));
        }
        let (Some(currency), Some(amount), true) = (currency, amount, errors.is_empty()) else {
            return Err(CatalogError::Invalid(errors));
        };
        let now = self.clock.now();
        let product = Product {
            id: ProductId::from_ulid(self.ids.ulid()),
            sku,
            name,
            price: amount,
            currency,
            seller_id: caller.client_id,
            attributes,
            active: true,
            version: 1,
            created_at: now,
            updated_at: now,
            available: 0,
        };
        let event = self.upserted(&product, context)?;
        match self
            .products
            .insert_all(vec![(product.clone(), event)])
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(CatalogError::SkuTaken),
            Err(e) => return Err(e.into()),
        }
        let mut product = product;
        if initial > 0 {
            product.available = self
                .adjust(
                    product.id,
                    initial,
                    "initial",
                    &caller.client_id.to_string(),
                )
                .await?
                .available;
        }
        Ok(product)
    }

    /// Changes a product the caller manages (version bumped here) and
    /// publishes `product.upserted`; the product as stored afterwards.
    pub async fn update_product(
        &self,
        caller: &Principal,
        id: ProductId,
        edit: ProductEdit,
        context: &EventContext,
    ) -> Result<Product, CatalogError> {
        let mut product = self.managed_product(caller, id).await?;
        let mut errors = Vec::new();
        if let Some(name) = &edit.name {
            product.name = text(&mut errors, "name", name, 200);
        }
        if let Some(price) = &edit.price
            && let Some(amount) = check_price(&mut errors, price, Some(product.currency))
        {
            product.price = amount;
        }
        if let Some(attributes) = edit.attributes {
            if attributes.is_object() {
                product.attributes = attributes;
            } else {
                errors.push(FieldError::new("attributes", "must be a JSON object"));
            }
        }
        if let Some(active) = edit.active {
            product.active = active;
        }
        if !errors.is_empty() {
            return Err(CatalogError::Invalid(errors));
        }
        let expected = product.version;
        product.version += 1;
        product.updated_at = self.clock.now();
        let event = self.upserted(&product, context)?;
        match self.products.update(product, expected, event).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(CatalogError::ChangedMeanwhile),
            Err(e) => return Err(e.into()),
        }
        self.load(id).await
    }

    /// A restock or a correction of a product the caller manages, recorded
    /// as a movement by the caller.
    pub async fn adjust_stock(
        &self,
        caller: &Principal,
        id: ProductId,
        edit: StockEdit,
    ) -> Result<StockLevel, CatalogError> {
        let product = self.managed_product(caller, id).await?;
        let mut errors = Vec::new();
        if edit.delta == 0 || edit.delta.abs() > MAX_UNITS {
            errors.push(FieldError::new(
                "delta",
                format!("must be a non-zero whole number within ±{MAX_UNITS}"),
            ));
        }
        if !matches!(edit.reason.as_str(), "restock" | "correction") {
            errors.push(FieldError::new("reason", "must be restock or correction"));
        } else if edit.reason == "restock" && edit.delta < 0 {
            errors.push(FieldError::new(
                "delta",
                "a restock adds units; use a correction to remove them",
            ));
        }
        if !errors.is_empty() {
            return Err(CatalogError::Invalid(errors));
        }
        self.adjust(
            product.id,
            edit.delta,
            &edit.reason,
            &caller.client_id.to_string(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(detail) => CatalogError::InsufficientStock(detail),
            StoreError::NotFound => CatalogError::NotFound,
            other => other.into(),
        })
    }

    /// The stock of a product the caller manages, by bucket.
    pub async fn stock_level(
        &self,
        caller: &Principal,
        id: ProductId,
    ) -> Result<StockLevel, CatalogError> {
        self.managed_product(caller, id).await?;
        Ok(self.stock.level(id).await?)
    }

    /// The latest stock movements of a product the caller manages, newest
    /// first.
    pub async fn movements(
        &self,
        caller: &Principal,
        id: ProductId,
        limit: usize,
    ) -> Result<Vec<Adjustment>, CatalogError> {
        self.managed_product(caller, id).await?;
        Ok(self.stock.movements(id, limit).await?)
    }

    /// Adds (or, negative, removes) available units, with a reason, for
    /// the platform itself (the demo catalog); callers go through
    /// [`Self::adjust_stock`].
    pub async fn adjust(
        &self,
        product: ProductId,
        delta: i64,
        reason: &str,
        actor: &str,
    ) -> Result<StockLevel, StoreError> {
        self.stock
            .adjust(Adjustment {
                movement_id: format!("mov_{}", self.ids.ulid()),
                product,
                delta,
                reason: reason.to_owned(),
                actor: actor.to_owned(),
                at: self.clock.now(),
            })
            .await
    }

    fn upserted(&self, product: &Product, context: &EventContext) -> Result<Envelope, StoreError> {
        Envelope::new(
            EventId::from_ulid(self.ids.ulid()),
            self.clock.now(),
            product.id.to_string(),
            Some(product.version),
            context,
            &product.upserted(),
        )
        .map(|e| e.with_actor(product.seller_id.to_string()))
        .map_err(|e| StoreError::Other(e.into()))
    }

    async fn on_created(&self, event: &Envelope, inbox: InboxKey) -> Result<(), HandlerError> {
        let created = event.decode::<OrderCreated>()?;
        let lines: Vec<StockLine> = created
            .items
            .iter()
            .map(|l| StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let products = lines.iter().map(|l| l.product_id).collect();
        let stamp = self.stamp(EventContext::caused_by(event));
        let expires_at = stamp.time
            + chrono::Duration::from_std(self.reservation_ttl).unwrap_or(chrono::Duration::MAX);
        let order = created.order_id;
        self.stock
            .decide(
                order,
                products,
                Some(inbox),
                Box::new(move |snapshot| {
                    stock::decide_reserve(order, &lines, snapshot, expires_at, &stamp)
                }),
            )
            .await?;
        self.new_hold.notify_one();
        Ok(())
    }

    async fn on_paid(&self, event: &Envelope, inbox: InboxKey) -> Result<(), HandlerError> {
        let paid = event.decode::<OrderPaid>()?;
        self.stock
            .decide(
                paid.order_id,
                Vec::new(),
                Some(inbox),
                Box::new(stock::decide_allocate),
            )
            .await?;
        Ok(())
    }

    async fn on_shipped(&self, event: &Envelope, inbox: InboxKey) -> Result<(), HandlerError> {
        let shipped = event.decode::<OrderShipped>()?;
        let order = shipped.order_id;
        let stamp = self.stamp(EventContext::caused_by(event));
        self.stock
            .decide(
                order,
                Vec::new(),
                Some(inbox),
                Box::new(move |s| stock::decide_commit(order, s, &stamp)),
            )
            .await?;
        Ok(())
    }

    async fn on_cancelled(&self, event: &Envelope, inbox: InboxKey) -> Result<(), HandlerError> {
        let cancelled = event.decode::<OrderCancelled>()?;
        let order = cancelled.order_id;
        let stamp = self.stamp(EventContext::caused_by(event));
        self.stock
            .decide(
                order,
                Vec::new(),
                Some(inbox),
                Box::new(move |s| stock::decide_release(order, "cancelled", s, &stamp)),
            )
            .await?;
        Ok(())
    }

    /// Releases holds whose time ran out, as they run out, until `stop`.
    pub async fn run_expiry(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(err) = self.expire_due().await {
                warn!(error = %err, "releasing expired reservations failed");
            }
            let wait = match self.stock.next_expiry().await {
                Ok(Some(next)) => (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => Duration::from_secs(3600),
                Err(_) => Duration::from_secs(1),
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.new_hold.notified() => {}
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// Releases every hold that ran out by now; how many.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let mut released = 0;
        loop {
            let due = self.stock.expired(self.clock.now(), 100).await?;
            if due.is_empty() {
                return Ok(released);
            }
            for order in due {
                let stamp = self.stamp(EventContext::from_request(format!("expiry-{order}")));
                self.stock
                    .decide(
                        order,
                        Vec::new(),
                        None,
                        Box::new(move |s| stock::decide_release(order, "expired", s, &stamp)),
                    )
                    .await?;
                released += 1;
                info!(order_id = %order, "reservation expired");
            }
        }
    }
}

struct OrdersHandler(Arc<InventoryService>);

#[async_trait::async_trait]
impl Handler for OrdersHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let inbox = InboxKey::new(CONSUMER, event);
        match event.event_type.as_str() {
            OrderCreated::TYPE => self.0.on_created(event, inbox).await,
            OrderPaid::TYPE => self.0.on_paid(event, inbox).await,
            OrderShipped::TYPE => self.0.on_shipped(event, inbox).await,
            OrderCancelled::TYPE => self.0.on_cancelled(event, inbox).await,
            other => Err(anyhow::anyhow!("inventory does not handle {other}").into()),
        }
    }
}

/// The consumers of the inventory service.
pub fn consumers(service: Arc<InventoryService>) -> Vec<Consumer> {
    vec![Consumer::new(
        CONSUMER,
        &[
            OrderCreated::TYPE,
            OrderPaid::TYPE,
            OrderShipped::TYPE,
            OrderCancelled::TYPE,
        ],
        Arc::new(OrdersHandler(service)),
    )]
}
