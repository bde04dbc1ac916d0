//! The orders use cases, called by the HTTP routes.

use std::sync::Arc;

use ordo_bus::{Envelope, EventContext};
use ordo_events::{
    Address, OrderCancellationRequested, OrderCancelled, OrderConfirmed, OrderCreated,
    OrderDelivered, OrderPaid, OrderShipped,
};
use ordo_http::{Principal, Role};
use ordo_kernel::{Clock, EventId, IdGen, OrderId, StoreError};
use tokio::sync::{broadcast, watch};

use crate::domain::{
    self, CancellationReason, Order, OrderStatus, PricingError, Reaction, RequestedLine, SagaEvent,
    TransitionError,
};
use crate::store::{CountBucket, InboxKey, OrderFilter, OrderStore, StageLatencies, TimelineEntry};

/// An order as the customer asked for it, validated in shape at the edge.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub lines: Vec<RequestedLine>,
    pub shipping_address: Address,
    pub payment_token: String,
    pub attributes: serde_json::Value,
}

/// An order as its public tracking link shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracking {
    pub id: OrderId,
    pub status: OrderStatus,
    pub cancellation_reason: Option<String>,
    pub cancel_requested: bool,
    pub city: String,
    pub country: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
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

/// The window of the overview's counts by status and cancellations.
pub const OVERVIEW_COUNTS_WINDOW: chrono::Duration = chrono::Duration::hours(1);
/// The window of the overview's series, and their bucket.
pub const OVERVIEW_SERIES_WINDOW: chrono::Duration = chrono::Duration::minutes(30);
pub const OVERVIEW_BUCKET: std::time::Duration = std::time::Duration::from_secs(60);

/// What the admin overview shows: the orders of recent windows, counted
/// by the store (each query bounded by its window).
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub at: chrono::DateTime<chrono::Utc>,
    /// Counts and cancellations are of the orders created since then.
    pub counts_since: chrono::DateTime<chrono::Utc>,
    /// Every status, in the saga's order, with its count (zero included).
    pub by_status: Vec<(OrderStatus, u64)>,
    /// Cancelled orders by reason, the most frequent first.
    pub cancellations: Vec<(String, u64)>,
    /// The series start at this bucket edge.
    pub series_since: chrono::DateTime<chrono::Utc>,
    pub bucket: std::time::Duration,
    /// Orders created per bucket, every bucket of the window (zero
    /// included), the current one last and still filling.
    pub created: Vec<CountBucket>,
    pub latencies: StageLatencies,
}

impl Overview {
    /// Orders per second over the last `buckets` complete buckets.
    pub fn orders_per_second(&self, buckets: usize) -> f64 {
        let complete = self.created.len().saturating_sub(1);
        let taken = &self.created[complete.saturating_sub(buckets)..complete];
        let seconds = taken.len() as f64 * self.bucket.as_secs_f64();
        if seconds == 0.0 {
            return 0.0;
        }
        taken.iter().map(|b| b.count as f64).sum::<f64>() / seconds
    }
}

pub struct OrdersService {
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    /// The id of every order that changed: a status committed here, an
    /// entry appended to its timeline, or word from another process.
    /// Listeners re-read the order; a lost or repeated id costs a read.
    changes: broadcast::Sender<OrderId>,
    /// The orders that changed in this process only, for the application
    /// to tell the other replicas (distributed mode).
    changed_here: broadcast::Sender<OrderId>,
    /// Becomes true when the server shuts down: open event streams end.
    stopping: watch::Sender<bool>,
}

/// How often a transition is retried when another one won the race.
const TRANSITION_ATTEMPTS: usize = 5;

impl OrdersService {
    pub fn new(store: Arc<dyn OrderStore>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        let (changes, _) = broadcast::channel(4096);
        let (changed_here, _) = broadcast::channel(4096);
        Self {
            store,
            clock,
            ids,
            changes,
            changed_here,
            stopping: watch::Sender::new(false),
        }
    }

    /// The ids of the orders that change from now on (after the change is
    /// committed). An id may come more than once, and a receiver that
    /// falls behind is told it lagged: read the order again either way.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderId> {
        self.changes.subscribe()
    }

    /// Tells this process's listeners that order `id` changed in another
    /// process (distributed mode: the application hears it from the other
    /// replicas).
    pub fn order_changed(&self, id: OrderId) {
        // Nobody listening is fine.
        let _ = self.changes.send(id);
    }

    /// The orders that change in this process from now on (not those
    /// heard of through [`Self::order_changed`]), for the other replicas.
    pub fn subscribe_changed_here(&self) -> broadcast::Receiver<OrderId> {
        self.changed_here.subscribe()
    }

    /// Order `id` changed here: a status committed, a timeline entry
    /// appended.
    pub(crate) fn changed(&self, id: OrderId) {
        let _ = self.changes.send(id);
        let _ = self.changed_here.send(id);
    }

    fn announce(&self, order: &Order) {
        self.changed(order.id);
    }

    /// Ends every open event stream of [`crate::follow`], now and from now
    /// on. Call it when the server begins to shut down: a graceful
    /// shutdown waits for every response to finish, and the stream of an
    /// order still in flight would not.
    pub fn stop_following(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether (and when) [`Self::stop_following`] was called.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Waits until `order` leaves `pending` (the saga's first decision) or
    /// `limit` passes; returns the order as it then stands.
    pub async fn wait_for_decision(
        &self,
        mut changes: broadcast::Receiver<OrderId>,
        order: OrderId,
        limit: std::time::Duration,
    ) -> Result<Order, OrderError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let current = self.store.get(order).await?;
            if current.status != OrderStatus::Pending || tokio::time::Instant::now() >= deadline {
                return Ok(current);
            }
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Err(_) => return Ok(self.store.get(order).await?),
                    // It changed, perhaps only its timeline: look again.
                    Ok(Ok(id)) if id == order => break,
                    Ok(Ok(_)) => continue,
                    // Missed some: look at the order itself again.
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        return Ok(self.store.get(order).await?);
                    }
                }
            }
        }
    }

    /// Applies an event of another service to its order, as the saga's
    /// rules say. `NotYet` comes back as an error so the bus retries.
    pub async fn apply_saga_event(
        &self,
        cause: &Envelope,
        saga: SagaEvent,
        inbox: InboxKey,
    ) -> Result<(), OrderError> {
        let id = OrderId::parse(&cause.subject).map_err(|_| {
            OrderError::Other(anyhow::anyhow!("{} is not about an order", cause.id))
        })?;
        for _ in 0..TRANSITION_ATTEMPTS {
            let order = match self.store.get(id).await {
                Ok(order) => order,
                Err(StoreError::NotFound) => {
                    return Err(OrderError::Other(anyhow::anyhow!(
                        "order {id} is not known (yet)"
                    )));
                }
                Err(err) => return Err(err.into()),
            };
            let (next, reason) = match domain::react(order.status, saga) {
                Reaction::Ignore => return Ok(()),
                Reaction::NotYet => {
                    return Err(OrderError::Other(anyhow::anyhow!(
                        "{} arrived while order {id} is {}: waiting for the event before it",
                        cause.event_type,
                        order.status
                    )));
                }
                Reaction::Transition(next, reason) => (next, reason),
            };
            let reason = match saga {
                SagaEvent::ShipmentCancelled => order
                    .cancel_requested
                    .as_deref()
                    .and_then(CancellationReason::parse)
                    .or(reason),
                _ => reason,
            };
            if saga == SagaEvent::ShipmentCancelled && order.cancel_requested.is_none() {
                // Nobody asked: delivery answered another cancellation.
                return Ok(());
            }
            let changed = order.transition(next, reason, self.clock.now())?;
            let event = self.event_for(&order, &changed, &EventContext::caused_by(cause))?;
            match self
                .store
                .save_transition(
                    changed.clone(),
                    order.version,
                    vec![event],
                    Some(inbox.clone()),
                )
                .await
            {
                Ok(_) => {
                    self.announce(&changed);
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(OrderError::Other(anyhow::anyhow!(
            "order {id} kept changing"
        )))
    }

    /// The event announcing `after`, the order that `before` became.
    fn event_for(
        &self,
        before: &Order,
        after: &Order,
        context: &EventContext,
    ) -> Result<Envelope, OrderError> {
        let (id, time, subject, seq) = (
            self.event_id(),
            after.updated_at,
            after.id.to_string(),
            Some(after.version),
        );
        let envelope = match after.status {
            OrderStatus::Confirmed => Envelope::new(
                id,
                time,
                subject,
                seq,
                context,
                &OrderConfirmed {
                    order_id: after.id,
                    customer_id: after.customer_id,
                    total: after.total,
                    currency: after.currency,
                    payment_token: after.payment_token.clone(),
                },
            ),
            OrderStatus::Paid => Envelope::new(
                id,
                time,
                subject,
                seq,
                context,
                &OrderPaid {
                    order_id: after.id,
                    customer_id: after.customer_id,
                    items: after.lines(),
                    shipping_address: after.shipping_address.clone(),
                    total: after.total,
                    currency: after.currency,
                },
            ),
            OrderStatus::Shipped => Envelope::new(
                id,
                time,
                subject,
                seq,
                context,
                &OrderShipped {
                    order_id: after.id,
                    items: after.lines(),
                },
            ),
            OrderStatus::Delivered => Envelope::new(
                id,
                time,
                subject,
                seq,
                context,
                &OrderDelivered { order_id: after.id },
            ),
            OrderStatus::Cancelled => Envelope::new(
                id,
                time,
                subject,
                seq,
                context,
                &OrderCancelled {
                    order_id: after.id,
                    reason: after.cancellation_reason.clone().unwrap_or_default(),
                    from_status: before.status.as_str().to_owned(),
                },
            ),
            OrderStatus::Pending => {
                return Err(OrderError::Other(anyhow::anyhow!(
                    "no order becomes pending again"
                )));
            }
        };
        Ok(envelope
            .map_err(anyhow::Error::from)?
            .with_actor("system:orders"))
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
            cancel_requested: None,
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
        match caller.role {
            Role::Admin => Ok(order),
            Role::Customer if order.customer_id == caller.client_id => Ok(order),
            Role::Seller if order.has_seller(caller.client_id) => {
                Ok(order.for_seller(caller.client_id))
            }
            _ => Err(OrderError::NotFound),
        }
    }

    /// What a signed tracking link shows of an order: its progress and the
    /// destination city, nothing personal. The link's signature is the
    /// caller's right to ask.
    pub async fn tracking(&self, id: OrderId) -> Result<Tracking, OrderError> {
        let order = match self.store.get(id).await {
            Ok(order) => order,
            Err(StoreError::NotFound) => return Err(OrderError::NotFound),
            Err(err) => return Err(err.into()),
        };
        Ok(Tracking {
            id: order.id,
            status: order.status,
            cancellation_reason: order.cancellation_reason,
            cancel_requested: order.cancel_requested.is_some(),
            city: order.shipping_address.city,
            country: order.shipping_address.country,
            created_at: order.created_at,
            updated_at: order.updated_at,
        })
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
        let orders = self.store.list(filter, limit).await?;
        Ok(match caller.role {
            Role::Seller => orders
                .into_iter()
                .map(|o| o.for_seller(caller.client_id))
                .collect(),
            _ => orders,
        })
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
            if order.status == OrderStatus::Paid {
                // A courier may be picking it up right now: ask delivery.
                let Some(requested) = order.request_cancel(reason, self.clock.now())? else {
                    return Ok(order);
                };
                let event = Envelope::new(
                    self.event_id(),
                    requested.updated_at,
                    id.to_string(),
                    Some(requested.version),
                    context,
                    &OrderCancellationRequested {
                        order_id: id,
                        reason: reason.as_str().to_owned(),
                    },
                )
                .map_err(anyhow::Error::from)?
                .with_actor(caller.client_id.to_string());
                match self
                    .store
                    .save_transition(requested.clone(), order.version, vec![event], None)
                    .await
                {
                    Ok(_) => return Ok(requested),
                    Err(StoreError::Conflict(_)) => continue,
                    Err(err) => return Err(err.into()),
                }
            }
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
                Ok(_) => {
                    self.announce(&cancelled);
                    return Ok(cancelled);
                }
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
        Ok(self.with_timeline(caller, id).await?.1)
    }

    /// The order and its timeline as `caller` may see them, read once each.
    pub async fn with_timeline(
        &self,
        caller: &Principal,
        id: OrderId,
    ) -> Result<(Order, Vec<TimelineEntry>), OrderError> {
        let order = self.get(caller, id).await?;
        let timeline = Self::timeline_seen_by(caller, self.store.timeline(id).await?);
        Ok((order, timeline))
    }

    /// An order's timeline as `caller` may read it: a seller sees what
    /// happened and when, but not the payloads, which carry other sellers'
    /// lines, the order's total and the customer's payment details.
    pub fn timeline_seen_by(caller: &Principal, entries: Vec<TimelineEntry>) -> Vec<TimelineEntry> {
        match caller.role {
            Role::Seller => entries
                .into_iter()
                .map(|mut e| {
                    e.data = serde_json::json!({});
                    e
                })
                .collect(),
            _ => entries,
        }
    }

    /// The admin overview of the last minutes (admins only).
    pub async fn overview(&self, caller: &Principal) -> Result<Overview, OrderError> {
        if caller.role != Role::Admin {
            return Err(OrderError::Forbidden("only admins see the overview"));
        }
        let now = self.clock.now();
        let counts_since = now - OVERVIEW_COUNTS_WINDOW;
        let secs = i64::try_from(OVERVIEW_BUCKET.as_secs())
            .unwrap_or(60)
            .max(1);
        let first = (now - OVERVIEW_SERIES_WINDOW).timestamp().div_euclid(secs);
        let series_since = chrono::DateTime::from_timestamp(first * secs, 0).unwrap_or(now);
        let (by_status, cancellations, created, latencies) = tokio::try_join!(
            self.store.counts_by_status(counts_since),
            self.store.cancellations_by_reason(counts_since),
            self.store.created_per_bucket(series_since, OVERVIEW_BUCKET),
            self.store.stage_latencies(series_since, OVERVIEW_BUCKET),
        )?;
        let by_status = OrderStatus::ALL
            .into_iter()
            .map(|status| {
                let n = by_status
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                (status, n)
            })
            .collect();
        let last = now.timestamp().div_euclid(secs);
        let created = (first..=last)
            .filter_map(|index| chrono::DateTime::from_timestamp(index * secs, 0))
            .map(|start| CountBucket {
                start,
                count: created
                    .iter()
                    .find(|b| b.start == start)
                    .map_or(0, |b| b.count),
            })
            .collect();
        Ok(Overview {
            at: now,
            counts_since,
            by_status,
            cancellations,
            series_since,
            bucket: OVERVIEW_BUCKET,
            created,
            latencies,
        })
    }
}
