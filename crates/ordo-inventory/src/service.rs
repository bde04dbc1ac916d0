//! Inventory use cases: the catalog for sellers, stock adjustments, and
//! the reactions of the saga (reserve, allocate, commit, release, expire).

use std::sync::Arc;
use std::time::Duration;

use ordo_bus::{Consumer, Envelope, EventContext, EventPayload, Handler, HandlerError};
use ordo_events::{OrderCancelled, OrderCreated, OrderPaid, OrderShipped, StockLine};
use ordo_http::{Principal, Role};
use ordo_kernel::{ClientId, Clock, EventId, IdGen, ProductId, StoreError};
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
    #[error(transparent)]
    Store(#[from] StoreError),
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

    /// Adds (or, negative, removes) available units, with a reason.
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

    /// Creates a product with its `product.upserted`.
    pub async fn create_product(
        &self,
        product: Product,
        context: &EventContext,
    ) -> Result<Product, StoreError> {
        let event = self.upserted(&product, context)?;
        self.products
            .insert_all(vec![(product.clone(), event)])
            .await?;
        Ok(product)
    }

    /// Saves a changed product (version bumped here) with its event.
    pub async fn update_product(
        &self,
        mut product: Product,
        context: &EventContext,
    ) -> Result<Product, StoreError> {
        let expected = product.version;
        product.version += 1;
        product.updated_at = self.clock.now();
        let event = self.upserted(&product, context)?;
        self.products
            .update(product.clone(), expected, event)
            .await?;
        Ok(product)
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
