//! The courier simulator: a system courier that, every `pace`, moves each
//! active shipment one step along its route (picked up at the first
//! pickup, each further pickup reached, delivered at the dropoff), through
//! the same [`DeliveryService::record_courier_event`] a real courier's
//! report takes. Off unless asked for; the demo turns it on.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ordo_bus::EventContext;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::domain::{CourierEvent, Shipment};
use crate::service::{Actor, DeliveryError, DeliveryService};

/// The actor the simulator reports as: `system:courier-sim`.
pub const SIMULATOR: &str = "courier-sim";
/// Shipments moved per round at most; the oldest go first.
const ROUND_LIMIT: usize = 1_000;
/// Courier events of one round in flight at once.
const CONCURRENCY: usize = 16;

pub struct CourierSimulator {
    pub service: Arc<DeliveryService>,
    /// Time spent at each waypoint.
    pub pace: Duration,
}

impl CourierSimulator {
    pub fn new(service: Arc<DeliveryService>, pace: Duration) -> Self {
        Self { service, pace }
    }

    /// Moves shipments every `pace` until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        info!(pace_ms = self.pace.as_millis(), "courier simulator started");
        // An interval cannot tick every zero seconds.
        let mut ticks = tokio::time::interval(self.pace.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate: a courier spends `pace` first.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                moved = self.round() => {
                    if moved > 0 {
                        debug!(moved, "courier simulator round");
                    }
                }
            }
        }
        info!("courier simulator stopped");
    }

    /// Moves every active shipment one step; returns how many moved.
    pub async fn round(&self) -> usize {
        let shipments = match self.service.store().active(ROUND_LIMIT).await {
            Ok(shipments) => shipments,
            Err(err) => {
                warn!(error = %err, "courier simulator could not list active shipments");
                return 0;
            }
        };
        futures::stream::iter(shipments)
            .map(|shipment| self.advance(shipment))
            .buffer_unordered(CONCURRENCY)
            .filter(|moved| futures::future::ready(*moved))
            .count()
            .await
    }

    /// One step of one shipment; `false` when it did not move.
    async fn advance(&self, shipment: Shipment) -> bool {
        let Some(step) = shipment.next_step() else {
            return false;
        };
        let step = match step {
            CourierEvent::WaypointReached { waypoint, .. } => {
                // The rest of the route takes a pace per remaining stop.
                let remaining = shipment.route_length().saturating_sub(waypoint);
                let eta = chrono::Duration::from_std(self.pace.saturating_mul(remaining))
                    .ok()
                    .and_then(|d| self.service.now().checked_add_signed(d));
                CourierEvent::WaypointReached {
                    waypoint,
                    location: None,
                    eta,
                }
            }
            other => other,
        };
        // Each simulated report starts its own chain of events.
        let context = EventContext::from_request(self.service.ids().ulid().to_string());
        match self
            .service
            .record_courier_event(&Actor::System(SIMULATOR), shipment.id, step, &context)
            .await
        {
            Ok(_) => true,
            // Moved by someone else (a courier, a cancellation) since it
            // was listed: the next round sees where it is.
            Err(DeliveryError::Courier(e)) => {
                debug!(shipment_id = %shipment.id, reason = %e, "courier simulator step skipped");
                false
            }
            Err(err) => {
                warn!(shipment_id = %shipment.id, error = %err, "courier simulator step failed");
                false
            }
        }
    }
}
