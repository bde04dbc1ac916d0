//! What the delivery service does when events arrive: one consumer,
//! `delivery.orders`, one function per event, each idempotent through the
//! inbox.
//!
//! `order.paid` and `order.cancelled` may arrive in either order. A paid
//! order gets its shipment unless the order is known to be cancelled; a
//! cancelled order cancels its shipment if nobody picked it up yet, and is
//! remembered when it has none, so that a late `order.paid` creates
//! nothing. Each side checks the other's effect in the transaction that
//! writes its own, so the two never both win.

use std::sync::Arc;

use ordo_bus::{Consumer, Envelope, EventContext, EventPayload, Handler, HandlerError};
use ordo_events::{OrderCancellationRequested, OrderCancelled, OrderPaid, ShipmentCancelled};
use ordo_kernel::StoreError;
use tracing::{debug, info, warn};

use crate::domain::{self, ParcelId, ShipmentId, ShipmentStatus};
use crate::service::{DeliveryService, SERVICE, TRANSITION_ATTEMPTS};
use crate::store::{Creation, InboxKey};

pub const ORDERS_CONSUMER: &str = "delivery.orders";

fn system_actor() -> String {
    format!("system:{SERVICE}")
}

/// Plans shipments for paid orders and cancels those of cancelled ones.
pub struct OrderReactions {
    service: Arc<DeliveryService>,
}

#[async_trait::async_trait]
impl Handler for OrderReactions {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            OrderPaid::TYPE => self.order_paid(event).await,
            OrderCancelled::TYPE => self.order_cancelled(event, false).await,
            OrderCancellationRequested::TYPE => self.order_cancelled(event, true).await,
            other => Err(anyhow::anyhow!("{ORDERS_CONSUMER} does not take {other}").into()),
        }
    }
}

impl OrderReactions {
    /// A shipment with one parcel per seller and its route, announced by
    /// `shipment.created`.
    async fn order_paid(&self, event: &Envelope) -> Result<(), HandlerError> {
        let paid = event.decode::<OrderPaid>()?;
        let service = &self.service;
        let now = service.now();
        let ids = service.ids();
        let shipment = domain::plan(
            &paid,
            ShipmentId::from_ulid(ids.ulid()),
            || ParcelId::from_ulid(ids.ulid()),
            now,
        )
        .map_err(|e| anyhow::anyhow!("order {}: {e}", paid.order_id))?;
        let created = Envelope::new(
            service.event_id(),
            now,
            paid.order_id.to_string(),
            Some(shipment.version),
            &EventContext::caused_by(event),
            &shipment.created_event(),
        )?
        .with_actor(system_actor());
        let id = shipment.id;
        match service
            .store()
            .create(shipment, created, InboxKey::new(ORDERS_CONSUMER, event))
            .await?
        {
            Creation::Created => {
                info!(order_id = %paid.order_id, shipment_id = %id, "shipment created");
            }
            Creation::Duplicate => {
                debug!(order_id = %paid.order_id, event_id = %event.id, "order already has its shipment");
            }
            Creation::OrderCancelled => {
                info!(order_id = %paid.order_id, "order was cancelled before it was paid: no shipment");
            }
        }
        Ok(())
    }

    /// Cancels the order's shipment before the pickup, or remembers the
    /// cancellation when the order has no shipment yet.
    ///
    /// A *request* to cancel a paid order is answered: `shipment.cancelled`
    /// when the shipment was called off (or never existed), nothing when a
    /// courier already picked it up — that pickup, on its way to orders,
    /// settles it.
    async fn order_cancelled(&self, event: &Envelope, answer: bool) -> Result<(), HandlerError> {
        let (order, reason) = if answer {
            let requested = event.decode::<OrderCancellationRequested>()?;
            (requested.order_id, requested.reason)
        } else {
            let cancelled = event.decode::<OrderCancelled>()?;
            (cancelled.order_id, cancelled.reason)
        };
        let answer_with = |shipment_id: Option<String>| -> Result<Vec<Envelope>, HandlerError> {
            if !answer {
                return Ok(Vec::new());
            }
            let envelope = Envelope::new(
                self.service.event_id(),
                self.service.now(),
                order.to_string(),
                None,
                &EventContext::caused_by(event),
                &ShipmentCancelled {
                    order_id: order,
                    shipment_id,
                },
            )?
            .with_actor(system_actor());
            Ok(vec![envelope])
        };
        let store = self.service.store();
        for _ in 0..TRANSITION_ATTEMPTS {
            let now = self.service.now();
            let outcome = match store.find_by_order(order).await? {
                None => {
                    store
                        .remember_cancelled(
                            order,
                            reason.clone(),
                            now,
                            answer_with(None)?,
                            InboxKey::new(ORDERS_CONSUMER, event),
                        )
                        .await
                }
                Some(shipment) => match shipment.cancel(now) {
                    Ok(next) => {
                        store
                            .save_transition(
                                next,
                                shipment.version,
                                answer_with(Some(shipment.id.to_string()))?,
                                None,
                                Some(InboxKey::new(ORDERS_CONSUMER, event)),
                            )
                            .await
                    }
                    Err(e) if e.status == ShipmentStatus::Cancelled => return Ok(()),
                    Err(e) => {
                        // The courier was faster than the cancellation; the
                        // orders service decides what a shipped order means.
                        warn!(order_id = %order, shipment_id = %shipment.id, status = %e.status,
                            "order cancelled after its shipment left: the shipment goes on");
                        return Ok(());
                    }
                },
            };
            match outcome {
                Ok(_) => return Ok(()),
                // A shipment appeared, or moved: look again.
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(
            anyhow::anyhow!("the shipment of order {order} kept changing while it was cancelled")
                .into(),
        )
    }
}

/// The consumers of the delivery service.
pub fn consumers(service: Arc<DeliveryService>) -> Vec<Consumer> {
    vec![Consumer::new(
        ORDERS_CONSUMER,
        &[
            OrderPaid::TYPE,
            OrderCancelled::TYPE,
            OrderCancellationRequested::TYPE,
        ],
        Arc::new(OrderReactions { service }),
    )]
}
