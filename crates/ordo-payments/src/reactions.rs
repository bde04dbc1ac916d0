//! What the payments service does when events arrive: one consumer for the
//! order events it reacts to, each reaction idempotent through the inbox
//! (and, across crashes, through the payment's own state).
//!
//! A reaction that could not reach the gateway fails, and the bus retries
//! it with backoff; after a few unanswered calls the charge gives up with
//! `payment.failed{gateway_unavailable}` so that the saga unwinds.

use std::sync::Arc;

use ordo_bus::{Consumer, Envelope, EventPayload, Handler, HandlerError};
use ordo_events::{OrderCancelled, OrderConfirmed};

use crate::service::PaymentsService;

/// The consumer's name: its inbox key and dead-letter owner. Never rename.
pub const ORDERS_CONSUMER: &str = "payments.orders";

/// The order events the payments service reacts to.
pub const ORDER_EVENTS: &[&str] = &[OrderConfirmed::TYPE, OrderCancelled::TYPE];

/// Charges confirmed orders and gives back what cancelled ones paid.
pub struct OrderReactions {
    service: Arc<PaymentsService>,
}

impl OrderReactions {
    pub fn new(service: Arc<PaymentsService>) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl Handler for OrderReactions {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            OrderConfirmed::TYPE => {
                self.service
                    .on_order_confirmed(event, ORDERS_CONSUMER)
                    .await?
            }
            OrderCancelled::TYPE => {
                self.service
                    .on_order_cancelled(event, ORDERS_CONSUMER)
                    .await?
            }
            other => {
                return Err(anyhow::anyhow!("{ORDERS_CONSUMER} does not take {other}").into());
            }
        }
        Ok(())
    }
}

/// The consumers of the payments service.
pub fn consumers(service: Arc<PaymentsService>) -> Vec<Consumer> {
    vec![Consumer::new(
        ORDERS_CONSUMER,
        ORDER_EVENTS,
        Arc::new(OrderReactions::new(service)),
    )]
}
