//! What the orders service does when events arrive: one handler per
//! consumer, each idempotent through the inbox.

use std::sync::Arc;

use ordo_bus::{Consumer, Envelope, EventPayload, Handler, HandlerError};
use ordo_events::{OrderCancelled, OrderCreated, ProductUpserted};
use ordo_kernel::OrderId;

use crate::domain::CatalogEntry;
use crate::store::{InboxKey, OrderStore, TimelineAppend};

pub const CATALOG_CONSUMER: &str = "orders.catalog";
pub const TIMELINE_CONSUMER: &str = "orders.timeline";

fn inbox(consumer: &str, event: &Envelope) -> InboxKey {
    InboxKey {
        consumer: consumer.to_owned(),
        event_id: event.id.to_string(),
    }
}

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
            .upsert_catalog(entry, inbox(CATALOG_CONSUMER, event))
            .await?;
        Ok(())
    }
}

/// Appends each of an order's events to its timeline, in the order the
/// orders service produced them: an event whose predecessor has not
/// arrived yet fails and is retried.
pub struct TimelineWriter {
    store: Arc<dyn OrderStore>,
}

/// The order events that go into the timeline.
pub const TIMELINE_EVENTS: &[&str] = &[OrderCreated::TYPE, OrderCancelled::TYPE];

#[async_trait::async_trait]
impl Handler for TimelineWriter {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let order = OrderId::parse(&event.subject)
            .map_err(|e| anyhow::anyhow!("{} is not about an order: {e}", event.id))?;
        // Validates the payload: a malformed event must not enter history.
        match event.event_type.as_str() {
            OrderCreated::TYPE => drop(event.decode::<OrderCreated>()?),
            OrderCancelled::TYPE => drop(event.decode::<OrderCancelled>()?),
            other => return Err(anyhow::anyhow!("the timeline does not take {other}").into()),
        }
        let after = event.sequence.filter(|s| *s > 1).map(|s| s - 1);
        match self
            .store
            .append_timeline(order, event.clone(), after, inbox(TIMELINE_CONSUMER, event))
            .await?
        {
            TimelineAppend::Appended | TimelineAppend::Duplicate => Ok(()),
            TimelineAppend::Early => Err(anyhow::anyhow!(
                "event {} of order {order} arrived before its predecessor",
                event.id
            )
            .into()),
        }
    }
}

/// The consumers of the orders service.
pub fn consumers(store: Arc<dyn OrderStore>) -> Vec<Consumer> {
    vec![
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
            Arc::new(TimelineWriter { store }),
        ),
    ]
}
