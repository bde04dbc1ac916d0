//! What the orders service does when events arrive: one handler per
//! consumer, each idempotent through the inbox.

use std::sync::Arc;

use ordo_bus::{Consumer, Envelope, EventPayload, Handler, HandlerError};
use ordo_events::{
    InventoryCommitted, InventoryReleased, InventoryReservationFailed, InventoryReserved,
    ORDERS_SOURCE, OrderCancellationRequested, OrderCancelled, OrderConfirmed, OrderCreated,
    OrderDelivered, OrderPaid, OrderShipped, PaymentFailed, PaymentRefunded, PaymentSucceeded,
    ProductUpserted, ShipmentCancelled, ShipmentCreated, ShipmentDelivered, ShipmentFailed,
    ShipmentPickedUp, ShipmentWaypointReached,
};
use ordo_kernel::OrderId;

use crate::domain::{CatalogEntry, SagaEvent};
use crate::service::OrdersService;
use crate::store::{InboxKey, OrderStore, TimelineAppend};

pub const CATALOG_CONSUMER: &str = "orders.catalog";
pub const TIMELINE_CONSUMER: &str = "orders.timeline";
pub const SAGA_CONSUMER: &str = "orders.saga";

/// Keeps the catalog projection the orders service prices with.
pub struct CatalogProjection {
    store: Arc<dyn OrderStore>,
}

#[async_trait::async_trait]
impl Handler for CatalogProjection {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let p = event.decode::<ProductUpserted>()?;
        let entry = CatalogEntry {
            product_id: p.product_id,
            sku: p.sku,
            name: p.name,
            price: p.price,
            currency: p.currency,
            seller_id: p.seller_id,
            active: p.active,
            version: p.version,
        };
        self.store
            .upsert_catalog(entry, InboxKey::new(CATALOG_CONSUMER, event))
            .await?;
        Ok(())
    }
}

/// Appends each of an order's events to its timeline, in the order the
/// orders service produced them: an event whose predecessor has not
/// arrived yet fails and is retried. Each new entry is announced, so that
/// those following the order see it at once.
pub struct TimelineWriter {
    service: Arc<OrdersService>,
}

/// The events that go into an order's timeline: everything said about it.
pub const TIMELINE_EVENTS: &[&str] = &[
    OrderCreated::TYPE,
    OrderConfirmed::TYPE,
    OrderPaid::TYPE,
    OrderShipped::TYPE,
    OrderDelivered::TYPE,
    OrderCancellationRequested::TYPE,
    OrderCancelled::TYPE,
    InventoryReserved::TYPE,
    InventoryReservationFailed::TYPE,
    InventoryReleased::TYPE,
    InventoryCommitted::TYPE,
    PaymentSucceeded::TYPE,
    PaymentFailed::TYPE,
    PaymentRefunded::TYPE,
    ShipmentCreated::TYPE,
    ShipmentPickedUp::TYPE,
    ShipmentWaypointReached::TYPE,
    ShipmentDelivered::TYPE,
    ShipmentFailed::TYPE,
    ShipmentCancelled::TYPE,
];

/// The events of other services that move an order.
pub const SAGA_EVENTS: &[&str] = &[
    InventoryReserved::TYPE,
    InventoryReservationFailed::TYPE,
    InventoryReleased::TYPE,
    PaymentSucceeded::TYPE,
    PaymentFailed::TYPE,
    ShipmentPickedUp::TYPE,
    ShipmentDelivered::TYPE,
    ShipmentCancelled::TYPE,
];

/// Moves orders along the saga as the other services report.
pub struct SagaHandler {
    service: Arc<OrdersService>,
}

#[async_trait::async_trait]
impl Handler for SagaHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let saga = match event.event_type.as_str() {
            InventoryReserved::TYPE => SagaEvent::StockReserved,
            InventoryReservationFailed::TYPE => SagaEvent::ReservationFailed,
            InventoryReleased::TYPE => {
                let released = event.decode::<InventoryReleased>()?;
                if released.reason != "expired" {
                    // A release that answers our own cancel.
                    return Ok(());
                }
                SagaEvent::ReservationExpired
            }
            PaymentSucceeded::TYPE => SagaEvent::PaymentSucceeded,
            PaymentFailed::TYPE => SagaEvent::PaymentFailed,
            ShipmentPickedUp::TYPE => SagaEvent::PickedUp,
            ShipmentDelivered::TYPE => SagaEvent::Delivered,
            ShipmentCancelled::TYPE => SagaEvent::ShipmentCancelled,
            other => return Err(anyhow::anyhow!("the orders saga does not take {other}").into()),
        };
        self.service
            .apply_saga_event(event, saga, InboxKey::new(SAGA_CONSUMER, event))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for TimelineWriter {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let order = OrderId::parse(&event.subject)
            .map_err(|e| anyhow::anyhow!("{} is not about an order: {e}", event.id))?;
        if !TIMELINE_EVENTS.contains(&event.event_type.as_str()) {
            return Err(anyhow::anyhow!("the timeline does not take {}", event.event_type).into());
        }
        // A malformed event must not enter history.
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(event.data.get())
            .map_err(|e| anyhow::anyhow!("event {} has no JSON object as data: {e}", event.id))?;
        // The orders service numbers its own events per order; other
        // services' events take their place as they arrive.
        let mut entry = event.clone();
        let after = if event.source == ORDERS_SOURCE {
            event.sequence.filter(|s| *s > 1).map(|s| s - 1)
        } else {
            entry.sequence = None;
            None
        };
        match self
            .service
            .store()
            .append_timeline(order, entry, after, InboxKey::new(TIMELINE_CONSUMER, event))
            .await?
        {
            TimelineAppend::Appended => {
                self.service.changed(order);
                Ok(())
            }
            TimelineAppend::Duplicate => Ok(()),
            TimelineAppend::Early => Err(anyhow::anyhow!(
                "event {} of order {order} arrived before its predecessor",
                event.id
            )
            .into()),
        }
    }
}

/// The consumers of the orders service.
pub fn consumers(service: Arc<OrdersService>) -> Vec<Consumer> {
    let store = service.store().clone();
    vec![
        Consumer::new(
            SAGA_CONSUMER,
            SAGA_EVENTS,
            Arc::new(SagaHandler {
                service: service.clone(),
            }),
        ),
        Consumer::new(
            CATALOG_CONSUMER,
            &[ProductUpserted::TYPE],
            Arc::new(CatalogProjection {
                store: store.clone(),
            }),
        ),
        Consumer::new(
            TIMELINE_CONSUMER,
            TIMELINE_EVENTS,
            Arc::new(TimelineWriter { service }),
        ),
    ]
}
