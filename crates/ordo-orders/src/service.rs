//! The orders use cases, called by the HTTP routes.

use std::sync::Arc;

use ordo_bus::{Envelope, EventContext};
use ordo_events::{Address, OrderCancelled, OrderCreated};
use ordo_http::{Principal, Role};
use ordo_kernel::{ClientId, Clock, EventId, IdGen, OrderId, StoreError};

use crate::domain::{
    self, CancellationReason, Order, OrderStatus, PricingError, RequestedLine, TransitionError,
};
use crate::store::{OrderFilter, OrderStore, TimelineEntry};

/// An order as the customer asked for it, validated in shape at the edge.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub lines: Vec<RequestedLine>,
    pub shipping_address: Address,
    pub payment_token: String,
    pub attributes: serde_json::Value,
}

/// The service layer's error story.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the order cannot be priced")]
    Pricing(Vec<PricingError>),
    /// Unknown, or not visible to the caller: the same answer for both.
    #[error("no such order")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The idempotency key already created a different order.
    #[error("this Idempotency-Key created another order")]
    KeyReused,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn order_request(order: &Order) -> NewOrder {
    NewOrder {
        lines: order
            .items
            .iter()
            .map(|i| RequestedLine {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect(),
        shipping_address: order.shipping_address.clone(),
        payment_token: order.payment_token.clone(),
        attributes: order.attributes.clone(),
    }
}

/// Whether `new` asks for the order `existing` already is.
fn same_request(existing: &Order, new: &NewOrder) -> Result<(), OrderError> {
    let had = order_request(existing);
    if had.lines == new.lines
        && had.shipping_address == new.shipping_address
        && had.payment_token == new.payment_token
        && had.attributes == new.attributes
    {
        Ok(())
    } else {
        Err(OrderError::KeyReused)
    }
}

pub struct OrdersService {
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
}

/// How often a transition is retried when another one won the race.
const TRANSITION_ATTEMPTS: usize = 5;

impl OrdersService {
    pub fn new(store: Arc<dyn OrderStore>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        Self { store, clock, ids }
    }

    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    fn event_id(&self) -> EventId {
        EventId::from_ulid(self.ids.ulid())
    }

    /// Prices and stores a new pending order with its `order.created`.
    /// Returns the order and whether this call created it (a retry with an
    /// idempotency key whose order exists gets that order back).
    pub async fn create(
        &self,
        customer: &Principal,
        new: NewOrder,
        context: &EventContext,
        idempotency_key: Option<String>,
    ) -> Result<(Order, bool), OrderError> {
        if customer.role != Role::Customer {
            return Err(OrderError::Forbidden("only customers place orders"));
        }
        // The idempotency layer keeps keys for 24 hours; the order keeps the
        // key that created it for good, so a key never makes two orders.
        if let Some(key) = &idempotency_key
            && let Some(existing) = self
                .store
                .find_by_idempotency_key(customer.client_id, key)
                .await?
        {
            return same_request(&existing, &new).map(|()| (existing, false));
        }
        let catalog = self
            .store
            .catalog(new.lines.iter().map(|l| l.product_id).collect())
            .await?;
        let (items, currency, total) =
            domain::price(&new.lines, &catalog).map_err(OrderError::Pricing)?;
        let now = self.clock.now();
        let order = Order {
            id: OrderId::from_ulid(self.ids.ulid()),
            customer_id: customer.client_id,
            status: OrderStatus::Pending,
            cancellation_reason: None,
            currency,
            total,
            market: new.shipping_address.country.clone(),
            shipping_address: new.shipping_address,
            payment_token: new.payment_token,
            attributes: new.attributes,
            items,
            idempotency_key: idempotency_key.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let created = Envelope::new(
            self.event_id(),
            now,
            order.id.to_string(),
            Some(order.version),
            context,
            &OrderCreated {
                order_id: order.id,
                customer_id: order.customer_id,
                items: order.lines(),
                total: order.total,
                currency: order.currency,
                shipping_address: order.shipping_address.clone(),
                created_at: order.created_at,
            },
        )
        .map_err(anyhow::Error::from)?
        .with_actor(customer.client_id.to_string());
        match self.store.create(order.clone(), created).await {
            Ok(()) => Ok((order, true)),
            Err(StoreError::Conflict(_)) if idempotency_key.is_some() => {
                // A concurrent request with the same key won.
                let key = idempotency_key.unwrap_or_default();
                let existing = self
                    .store
                    .find_by_idempotency_key(customer.client_id, &key)
                    .await?
                    .ok_or(OrderError::NotFound)?;
                same_request(&existing, &order_request(&order)).map(|()| (existing, false))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The order, if the caller may see it: its customer, a seller of one
    /// of its products, or an admin. Anyone else is told it does not exist.
    pub async fn get(&self, caller: &Principal, id: OrderId) -> Result<Order, OrderError> {
        if caller.role == Role::Courier {
            return Err(OrderError::Forbidden("couriers do not read orders"));
        }
        let order = match self.store.get(id).await {
            Ok(order) => order,
            Err(StoreError::NotFound) => return Err(OrderError::NotFound),
            Err(err) => return Err(err.into()),
        };
        let visible = match caller.role {
            Role::Admin => true,
            Role::Customer => order.customer_id == caller.client_id,
            Role::Seller => order.has_seller(caller.client_id),
            Role::Courier => false,
        };
        if visible {
            Ok(order)
        } else {
            Err(OrderError::NotFound)
        }
    }

    /// A page of the orders the caller may see, narrowed by `filter`.
    pub async fn list(
        &self,
        caller: &Principal,
        mut filter: OrderFilter,
        limit: usize,
    ) -> Result<Vec<Order>, OrderError> {
        match caller.role {
            Role::Admin => {}
            Role::Customer => {
                if filter.customer.is_some_and(|c| c != caller.client_id) {
                    return Err(OrderError::Forbidden(
                        "customers list their own orders only",
                    ));
                }
                filter.customer = Some(caller.client_id);
            }
            Role::Seller => {
                if filter.seller.is_some_and(|s| s != caller.client_id) {
                    return Err(OrderError::Forbidden(
                        "sellers list orders of their own products only",
                    ));
                }
                filter.seller = Some(caller.client_id);
            }
            Role::Courier => return Err(OrderError::Forbidden("couriers do not read orders")),
        }
        Ok(self.store.list(filter, limit).await?)
    }

    /// Cancels an order on behalf of its customer or an admin.
    pub async fn cancel(
        &self,
        caller: &Principal,
        id: OrderId,
        context: &EventContext,
    ) -> Result<Order, OrderError> {
        let reason = match caller.role {
            Role::Customer => CancellationReason::CustomerCancelled,
            Role::Admin => CancellationReason::AdminCancelled,
            Role::Seller | Role::Courier => {
                // Not theirs to cancel; a seller who can see it learns why.
                self.get(caller, id).await?;
                return Err(OrderError::Forbidden(
                    "only the customer or an admin cancels an order",
                ));
            }
        };
        for _ in 0..TRANSITION_ATTEMPTS {
            let order = self.get(caller, id).await?;
            let cancelled =
                order.transition(OrderStatus::Cancelled, Some(reason), self.clock.now())?;
            let event = Envelope::new(
                self.event_id(),
                cancelled.updated_at,
                id.to_string(),
                Some(cancelled.version),
                context,
                &OrderCancelled {
                    order_id: id,
                    reason: reason.as_str().to_owned(),
                    from_status: order.status.as_str().to_owned(),
                },
            )
            .map_err(anyhow::Error::from)?
            .with_actor(caller.client_id.to_string());
            match self
                .store
                .save_transition(cancelled.clone(), order.version, vec![event], None)
                .await
            {
                Ok(_) => return Ok(cancelled),
                // Another transition got there first: look again.
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(OrderError::Other(anyhow::anyhow!(
            "order {id} kept changing while being cancelled"
        )))
    }

    pub async fn timeline(
        &self,
        caller: &Principal,
        id: OrderId,
    ) -> Result<Vec<TimelineEntry>, OrderError> {
        self.get(caller, id).await?;
        Ok(self.store.timeline(id).await?)
    }

    pub fn customer_of(principal: &Principal) -> ClientId {
        principal.client_id
    }
}
