//! The delivery use cases, called by the HTTP routes, the reactions and
//! the courier simulator. A courier event takes the same path whoever
//! reports it: a courier over HTTP, an admin, or the simulator.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_bus::{Envelope, EventContext};
use ordo_http::{Principal, Role};
use ordo_kernel::{Clock, EventId, IdGen, OrderId, StoreError};

use crate::domain::{
    CourierError, CourierEvent, CourierLogEntry, Shipment, ShipmentEvent, ShipmentId,
};
use crate::store::ShipmentStore;

/// The service name in `system:<service>` actors.
pub const SERVICE: &str = "delivery";

/// Who reports a courier event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API client: couriers and admins may report.
    Client(Principal),
    /// The platform itself, such as the courier simulator; recorded as
    /// `system:<name>`.
    System(&'static str),
}

impl Actor {
    /// How events and the courier log name the actor.
    pub fn name(&self) -> String {
        match self {
            Self::Client(p) => p.client_id.to_string(),
            Self::System(name) => format!("system:{name}"),
        }
    }
}

/// The service layer's error story.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Unknown, or not visible to the caller: the same answer for both.
    #[error("no such shipment")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The courier event is not allowed in the shipment's current state.
    #[error(transparent)]
    Courier(#[from] CourierError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct DeliveryService {
    store: Arc<dyn ShipmentStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
}

/// How often a transition is retried when another one won the race.
pub(crate) const TRANSITION_ATTEMPTS: usize = 5;

impl DeliveryService {
    pub fn new(store: Arc<dyn ShipmentStore>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        Self { store, clock, ids }
    }

    pub fn store(&self) -> &Arc<dyn ShipmentStore> {
        &self.store
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn ids(&self) -> &dyn IdGen {
        self.ids.as_ref()
    }

    pub(crate) fn event_id(&self) -> EventId {
        EventId::from_ulid(self.ids.ulid())
    }

    fn visible(caller: &Principal, shipment: &Shipment) -> bool {
        match caller.role {
            Role::Admin | Role::Courier => true,
            Role::Customer => shipment.customer_id == caller.client_id,
            // A seller sees the shipments that carry one of its parcels.
            Role::Seller => shipment.has_seller(caller.client_id),
        }
    }

    /// The shipment, if the caller may see it. Anyone else is told it does
    /// not exist.
    pub async fn get(&self, caller: &Principal, id: ShipmentId) -> Result<Shipment, DeliveryError> {
        let shipment = match self.store.get(id).await {
            Ok(shipment) => shipment,
            Err(StoreError::NotFound) => return Err(DeliveryError::NotFound),
            Err(err) => return Err(err.into()),
        };
        if Self::visible(caller, &shipment) {
            Ok(shipment)
        } else {
            Err(DeliveryError::NotFound)
        }
    }

    /// The shipment of an order, with the same visibility as [`Self::get`].
    pub async fn for_order(
        &self,
        caller: &Principal,
        order: OrderId,
    ) -> Result<Shipment, DeliveryError> {
        match self.store.find_by_order(order).await? {
            Some(shipment) if Self::visible(caller, &shipment) => Ok(shipment),
            _ => Err(DeliveryError::NotFound),
        }
    }

    /// The shipment of an order for its public tracking link, whose
    /// signature is the right to ask; the page shows progress only.
    pub async fn for_tracking(&self, order: OrderId) -> Result<Option<Shipment>, DeliveryError> {
        Ok(self.store.find_by_order(order).await?)
    }

    /// Shipments still on their way, oldest first: the couriers' work
    /// list, for couriers and admins.
    pub async fn active_shipments(
        &self,
        caller: &Principal,
        limit: usize,
    ) -> Result<Vec<Shipment>, DeliveryError> {
        if !matches!(caller.role, Role::Courier | Role::Admin) {
            return Err(DeliveryError::Forbidden(
                "only couriers and admins list the active shipments",
            ));
        }
        Ok(self.store.active(limit).await?)
    }

    /// What couriers reported about a shipment the caller may see.
    pub async fn courier_log(
        &self,
        caller: &Principal,
        id: ShipmentId,
    ) -> Result<Vec<CourierLogEntry>, DeliveryError> {
        self.get(caller, id).await?;
        Ok(self.store.courier_log(id).await?)
    }

    /// Applies a courier event to a shipment and publishes what it means
    /// (`shipment.picked_up`, `.waypoint_reached`, `.delivered`, `.failed`),
    /// in one transaction with the courier log entry. An event the current
    /// state does not allow, a repeated one included, is refused.
    pub async fn record_courier_event(
        &self,
        actor: &Actor,
        id: ShipmentId,
        event: CourierEvent,
        context: &EventContext,
    ) -> Result<Shipment, DeliveryError> {
        if let Actor::Client(principal) = actor
            && !matches!(principal.role, Role::Courier | Role::Admin)
        {
            return Err(DeliveryError::Forbidden(
                "only couriers and admins report shipment events",
            ));
        }
        for _ in 0..TRANSITION_ATTEMPTS {
            let shipment = match self.store.get(id).await {
                Ok(shipment) => shipment,
                Err(StoreError::NotFound) => return Err(DeliveryError::NotFound),
                Err(err) => return Err(err.into()),
            };
            let (next, published) = shipment.apply(event.clone(), self.clock.now())?;
            let envelope = envelope(&published, self.event_id(), &next, context)
                .map_err(anyhow::Error::from)?
                .with_actor(actor.name());
            let log = CourierLogEntry::of(&next, &published, envelope.id.to_string(), actor.name());
            match self
                .store
                .save_transition(
                    next.clone(),
                    shipment.version,
                    vec![envelope],
                    Some(log),
                    None,
                )
                .await
            {
                Ok(_) => return Ok(next),
                // Another event got there first: look again.
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(DeliveryError::Other(anyhow::anyhow!(
            "shipment {id} kept changing while a courier event was recorded"
        )))
    }
}

/// The envelope of a shipment event: about the order (its subject), with
/// the shipment version as the sequence.
fn envelope(
    published: &ShipmentEvent,
    id: EventId,
    shipment: &Shipment,
    context: &EventContext,
) -> Result<Envelope, serde_json::Error> {
    let (time, subject, seq) = (
        shipment.updated_at,
        shipment.order_id.to_string(),
        Some(shipment.version),
    );
    match published {
        ShipmentEvent::PickedUp(e) => Envelope::new(id, time, subject, seq, context, e),
        ShipmentEvent::WaypointReached(e) => Envelope::new(id, time, subject, seq, context, e),
        ShipmentEvent::Delivered(e) => Envelope::new(id, time, subject, seq, context, e),
        ShipmentEvent::Failed(e) => Envelope::new(id, time, subject, seq, context, e),
    }
}
