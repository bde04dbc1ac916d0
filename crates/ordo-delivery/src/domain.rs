//! Shipments as pure data and pure decisions: planning the shipment of a
//! paid order, and deciding whether a courier event may happen now. No I/O,
//! no clock, no ids made here: everything that varies is passed in.
//!
//! A shipment's route is its waypoints in order: one pickup per seller,
//! then one dropoff at the shipping address. `next_waypoint` is the 1-based
//! position of the next stop to reach. The courier reports `picked_up` at
//! the first pickup, `waypoint_reached` for each later stop, in order, and
//! `delivered` once every pickup is made; `failed` ends any active
//! shipment. A shipment that nobody picked up yet can be cancelled.

use std::fmt;

use chrono::{DateTime, Utc};
use ordo_events::{
    Address, OrderPaid, ShipmentCreated, ShipmentDelivered, ShipmentFailed, ShipmentPickedUp,
    ShipmentWaypointReached, StockLine,
};
use ordo_kernel::{ClientId, OrderId};
pub use ordo_kernel::{IdParseError, ParcelId, ShipmentId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShipmentStatus {
    /// Planned; no courier has picked anything up.
    Created,
    /// The first pickup is made.
    PickedUp,
    /// Past a later waypoint.
    InTransit,
    Delivered,
    Failed,
    /// The order was cancelled before the pickup.
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [ShipmentStatus; 6] = [
        Self::Created,
        Self::PickedUp,
        Self::InTransit,
        Self::Delivered,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::PickedUp => "picked_up",
            Self::InTransit => "in_transit",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Still on its way: it takes courier events and the simulator moves it.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Created | Self::PickedUp | Self::InTransit)
    }
}

impl fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaypointKind {
    Pickup,
    Dropoff,
}

impl WaypointKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pickup => "pickup",
            Self::Dropoff => "dropoff",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pickup, Self::Dropoff]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A stop of the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    /// 1-based position on the route.
    pub seq: u32,
    pub kind: WaypointKind,
    pub location: String,
}

/// What one seller hands over: the order's lines of that seller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    pub id: ParcelId,
    pub seller_id: ClientId,
    pub lines: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub id: ShipmentId,
    pub order_id: OrderId,
    pub customer_id: ClientId,
    pub status: ShipmentStatus,
    /// Why the courier gave up, when failed.
    pub failure_reason: Option<String>,
    pub parcels: Vec<Parcel>,
    /// The route, in order of `seq` (1, 2, …).
    pub waypoints: Vec<Waypoint>,
    /// The `seq` of the next waypoint to reach; one past the last once the
    /// route is done.
    pub next_waypoint: u32,
    /// The courier's latest estimate of the delivery.
    pub eta: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Sellers have no address in the system yet: a pickup names the seller.
pub fn pickup_location(seller: ClientId) -> String {
    format!("warehouse of seller {seller}")
}

/// The shipping address on one line: `name, line1, line2, postal_code
/// city, country`.
pub fn dropoff_location(address: &Address) -> String {
    let city = [address.postal_code.trim(), address.city.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    [
        address.name.trim(),
        address.line1.trim(),
        address.line2.as_deref().unwrap_or("").trim(),
        city.as_str(),
        address.country.trim(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the order has no lines to ship")]
    NoLines,
}

/// The shipment of a paid order: one parcel per seller (sellers in the
/// order their first line appears), a pickup per seller in the same order,
/// then the dropoff at the shipping address.
pub fn plan(
    paid: &OrderPaid,
    id: ShipmentId,
    mut parcel_id: impl FnMut() -> ParcelId,
    now: DateTime<Utc>,
) -> Result<Shipment, PlanError> {
    if paid.items.is_empty() {
        return Err(PlanError::NoLines);
    }
    let mut parcels: Vec<Parcel> = Vec::new();
    for line in &paid.items {
        let stock = StockLine {
            product_id: line.product_id,
            quantity: line.quantity,
        };
        match parcels.iter_mut().find(|p| p.seller_id == line.seller_id) {
            Some(parcel) => parcel.lines.push(stock),
            None => parcels.push(Parcel {
                id: parcel_id(),
                seller_id: line.seller_id,
                lines: vec![stock],
            }),
        }
    }
    let waypoints: Vec<Waypoint> = parcels
        .iter()
        .map(|p| (WaypointKind::Pickup, pickup_location(p.seller_id)))
        .chain([(
            WaypointKind::Dropoff,
            dropoff_location(&paid.shipping_address),
        )])
        .zip(1..)
        .map(|((kind, location), seq)| Waypoint {
            seq,
            kind,
            location,
        })
        .collect();
    Ok(Shipment {
        id,
        order_id: paid.order_id,
        customer_id: paid.customer_id,
        status: ShipmentStatus::Created,
        failure_reason: None,
        parcels,
        waypoints,
        next_waypoint: 1,
        eta: None,
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

/// What a courier reports about a shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourierEvent {
    /// At the first pickup: the shipment is on its way.
    PickedUp,
    /// At the next waypoint of the route. `location` is where the courier
    /// says it is (the waypoint's own location when absent); `eta` its
    /// estimate of the delivery.
    WaypointReached {
        waypoint: u32,
        location: Option<String>,
        eta: Option<DateTime<Utc>>,
    },
    /// Handed over at the dropoff.
    Delivered,
    /// The courier gives up on the shipment.
    Failed { reason: String },
}

impl CourierEvent {
    pub fn kind(&self) -> CourierEventKind {
        match self {
            Self::PickedUp => CourierEventKind::PickedUp,
            Self::WaypointReached { .. } => CourierEventKind::WaypointReached,
            Self::Delivered => CourierEventKind::Delivered,
            Self::Failed { .. } => CourierEventKind::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CourierEventKind {
    PickedUp,
    WaypointReached,
    Delivered,
    Failed,
}

impl CourierEventKind {
    pub const ALL: [CourierEventKind; 4] = [
        Self::PickedUp,
        Self::WaypointReached,
        Self::Delivered,
        Self::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PickedUp => "picked_up",
            Self::WaypointReached => "waypoint_reached",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CourierEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event a courier event publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum ShipmentEvent {
    PickedUp(ShipmentPickedUp),
    WaypointReached(ShipmentWaypointReached),
    Delivered(ShipmentDelivered),
    Failed(ShipmentFailed),
}

/// Why a courier event cannot happen now. Each is a conflict with the
/// shipment's state, except [`CourierError::NoSuchWaypoint`], which names
/// a stop the route does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CourierError {
    #[error("the shipment is {status}: it takes no more courier events")]
    Finished { status: ShipmentStatus },
    #[error("the shipment was already picked up")]
    AlreadyPickedUp,
    #[error("the shipment has not been picked up yet")]
    NotPickedUp,
    #[error("waypoint {waypoint} was already reached")]
    AlreadyReached { waypoint: u32 },
    #[error("waypoint {expected} comes next, not waypoint {got}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("the route has {count} waypoints: there is no waypoint {waypoint}")]
    NoSuchWaypoint { waypoint: u32, count: u32 },
    #[error("the pickup at waypoint {next} has not been made yet")]
    PickupsPending { next: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a shipment that is {status} can no longer be cancelled")]
pub struct CancelError {
    pub status: ShipmentStatus,
}

impl Shipment {
    /// The number of stops of the route.
    pub fn route_length(&self) -> u32 {
        u32::try_from(self.waypoints.len()).unwrap_or(u32::MAX)
    }

    pub fn waypoint(&self, seq: u32) -> Option<&Waypoint> {
        self.waypoints.iter().find(|w| w.seq == seq)
    }

    /// Whether the courier has been at waypoint `seq`.
    pub fn reached(&self, seq: u32) -> bool {
        seq < self.next_waypoint
    }

    pub fn has_seller(&self, seller: ClientId) -> bool {
        self.parcels.iter().any(|p| p.seller_id == seller)
    }

    /// The payload of `shipment.created`.
    pub fn created_event(&self) -> ShipmentCreated {
        ShipmentCreated {
            order_id: self.order_id,
            shipment_id: self.id.to_string(),
            parcels: self
                .parcels
                .iter()
                .map(|p| ordo_events::Parcel {
                    parcel_id: p.id.to_string(),
                    seller_id: p.seller_id,
                    lines: p.lines.clone(),
                })
                .collect(),
            waypoints: self
                .waypoints
                .iter()
                .map(|w| ordo_events::Waypoint {
                    seq: w.seq,
                    kind: w.kind.as_str().to_owned(),
                    location: w.location.clone(),
                })
                .collect(),
        }
    }

    /// The shipment after `event`, and what it publishes; or why the event
    /// cannot happen now. A repeated event (the same waypoint again) is an
    /// error, never applied twice.
    pub fn apply(
        &self,
        event: CourierEvent,
        now: DateTime<Utc>,
    ) -> Result<(Shipment, ShipmentEvent), CourierError> {
        if !self.status.is_active() {
            return Err(CourierError::Finished {
                status: self.status,
            });
        }
        let count = self.route_length();
        let mut next = self.clone();
        next.version += 1;
        next.updated_at = now;
        let order_id = self.order_id;
        let shipment_id = self.id.to_string();
        let published = match event {
            CourierEvent::PickedUp => {
                if self.status != ShipmentStatus::Created {
                    return Err(CourierError::AlreadyPickedUp);
                }
                next.status = ShipmentStatus::PickedUp;
                next.next_waypoint = 2;
                ShipmentEvent::PickedUp(ShipmentPickedUp {
                    order_id,
                    shipment_id,
                })
            }
            CourierEvent::WaypointReached {
                waypoint,
                location,
                eta,
            } => {
                let Some(stop) = self.waypoint(waypoint) else {
                    return Err(CourierError::NoSuchWaypoint { waypoint, count });
                };
                if self.status == ShipmentStatus::Created {
                    return Err(CourierError::NotPickedUp);
                }
                if waypoint < self.next_waypoint {
                    return Err(CourierError::AlreadyReached { waypoint });
                }
                if waypoint > self.next_waypoint {
                    return Err(CourierError::OutOfOrder {
                        expected: self.next_waypoint,
                        got: waypoint,
                    });
                }
                next.status = ShipmentStatus::InTransit;
                next.next_waypoint = waypoint + 1;
                if eta.is_some() {
                    next.eta = eta;
                }
                ShipmentEvent::WaypointReached(ShipmentWaypointReached {
                    order_id,
                    shipment_id,
                    waypoint,
                    location: location.unwrap_or_else(|| stop.location.clone()),
                    eta: next.eta,
                })
            }
            CourierEvent::Delivered => {
                if self.status == ShipmentStatus::Created {
                    return Err(CourierError::NotPickedUp);
                }
                // Every stop before the dropoff is a pickup.
                let dropoff = count;
                if self.next_waypoint < dropoff {
                    return Err(CourierError::PickupsPending {
                        next: self.next_waypoint,
                    });
                }
                next.status = ShipmentStatus::Delivered;
                next.next_waypoint = count + 1;
                ShipmentEvent::Delivered(ShipmentDelivered {
                    order_id,
                    shipment_id,
                })
            }
            CourierEvent::Failed { reason } => {
                next.status = ShipmentStatus::Failed;
                next.failure_reason = Some(reason.clone());
                ShipmentEvent::Failed(ShipmentFailed {
                    order_id,
                    shipment_id,
                    reason,
                })
            }
        };
        Ok((next, published))
    }

    /// The shipment after its order was cancelled: only before the pickup.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Shipment, CancelError> {
        if self.status != ShipmentStatus::Created {
            return Err(CancelError {
                status: self.status,
            });
        }
        let mut next = self.clone();
        next.status = ShipmentStatus::Cancelled;
        next.version += 1;
        next.updated_at = now;
        Ok(next)
    }

    /// What a courier does next on this route: pick up, reach the next
    /// pickup, or deliver once every pickup is made. `None` once finished.
    pub fn next_step(&self) -> Option<CourierEvent> {
        match self.status {
            ShipmentStatus::Created => Some(CourierEvent::PickedUp),
            ShipmentStatus::PickedUp | ShipmentStatus::InTransit => {
                if self.next_waypoint < self.route_length() {
                    Some(CourierEvent::WaypointReached {
                        waypoint: self.next_waypoint,
                        location: None,
                        eta: None,
                    })
                } else {
                    Some(CourierEvent::Delivered)
                }
            }
            ShipmentStatus::Delivered | ShipmentStatus::Failed | ShipmentStatus::Cancelled => None,
        }
    }
}

/// One entry of a shipment's courier log: what a courier reported, in the
/// order it was applied. `seq` is the shipment version it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourierLogEntry {
    pub shipment_id: ShipmentId,
    pub seq: i64,
    pub event_id: String,
    pub kind: CourierEventKind,
    pub waypoint: Option<u32>,
    pub location: Option<String>,
    pub eta: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

impl CourierLogEntry {
    /// The log entry of an applied courier event.
    pub fn of(
        shipment: &Shipment,
        published: &ShipmentEvent,
        event_id: String,
        actor: String,
    ) -> Self {
        let (kind, waypoint, location, eta, reason) = match published {
            ShipmentEvent::PickedUp(_) => (CourierEventKind::PickedUp, None, None, None, None),
            ShipmentEvent::WaypointReached(e) => (
                CourierEventKind::WaypointReached,
                Some(e.waypoint),
                Some(e.location.clone()),
                e.eta,
                None,
            ),
            ShipmentEvent::Delivered(_) => (CourierEventKind::Delivered, None, None, None, None),
            ShipmentEvent::Failed(e) => (
                CourierEventKind::Failed,
                None,
                None,
                None,
                Some(e.reason.clone()),
            ),
        };
        Self {
            shipment_id: shipment.id,
            seq: shipment.version,
            event_id,
            kind,
            waypoint,
            location,
            eta,
            reason,
            actor,
            at: shipment.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use ulid::Ulid;

    use ordo_events::OrderLine;
    use ordo_kernel::{Currency, ProductId};

    use super::*;

    fn client() -> ClientId {
        ClientId::from_ulid(Ulid::new())
    }

    fn line(seller: ClientId, quantity: u32) -> OrderLine {
        OrderLine {
            product_id: ProductId::from_ulid(Ulid::new()),
            sku: "SKU".into(),
            seller_id: seller,
            quantity,
            unit_price: Default::default(),
        }
    }

    fn address() -> Address {
        Address {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: Some("Floor 2".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        }
    }

    fn paid(items: Vec<OrderLine>) -> OrderPaid {
        OrderPaid {
            order_id: OrderId::from_ulid(Ulid::new()),
            customer_id: client(),
            items,
            shipping_address: address(),
            total: Default::default(),
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn new_id() -> ShipmentId {
        ShipmentId::from_ulid(Ulid::new())
    }

    fn parcel_id() -> ParcelId {
        ParcelId::from_ulid(Ulid::new())
    }

    /// A shipment of `sellers` sellers: a route of `sellers + 1` stops.
    fn shipment(sellers: usize) -> Shipment {
        let items = (0..sellers).map(|_| line(client(), 1)).collect();
        plan(&paid(items), new_id(), parcel_id, Utc::now()).unwrap()
    }

    fn reached(waypoint: u32) -> CourierEvent {
        CourierEvent::WaypointReached {
            waypoint,
            location: None,
            eta: None,
        }
    }

    fn failed() -> CourierEvent {
        CourierEvent::Failed {
            reason: "address not found".into(),
        }
    }

    fn step(s: &Shipment, event: CourierEvent) -> Shipment {
        s.apply(event, Utc::now()).unwrap().0
    }

    /// A shipment of `sellers` sellers in `status`, as a courier gets it
    /// there.
    fn in_status(sellers: usize, status: ShipmentStatus) -> Shipment {
        let s = shipment(sellers);
        match status {
            ShipmentStatus::Created => s,
            ShipmentStatus::PickedUp => step(&s, CourierEvent::PickedUp),
            ShipmentStatus::InTransit => step(&step(&s, CourierEvent::PickedUp), reached(2)),
            ShipmentStatus::Delivered => {
                let mut s = step(&s, CourierEvent::PickedUp);
                while s.status != ShipmentStatus::Delivered {
                    let next = s.next_step().unwrap();
                    s = step(&s, next);
                }
                s
            }
            ShipmentStatus::Failed => step(&s, failed()),
            ShipmentStatus::Cancelled => s.cancel(Utc::now()).unwrap(),
        }
    }

    #[test]
    fn a_paid_order_ships_one_parcel_per_seller_along_pickups_then_the_dropoff() {
        let (a, b) = (client(), client());
        let order = paid(vec![line(a, 2), line(b, 1), line(a, 3)]);
        let s = plan(&order, new_id(), parcel_id, Utc::now()).unwrap();
        assert_eq!(s.status, ShipmentStatus::Created);
        assert_eq!(s.order_id, order.order_id);
        assert_eq!(s.customer_id, order.customer_id);
        assert_eq!(s.version, 1);
        assert_eq!(s.next_waypoint, 1);
        assert_eq!(s.parcels.len(), 2);
        assert_eq!(s.parcels[0].seller_id, a);
        assert_eq!(
            s.parcels[0]
                .lines
                .iter()
                .map(|l| l.quantity)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(s.parcels[1].seller_id, b);
        assert_ne!(s.parcels[0].id, s.parcels[1].id);
        let route: Vec<_> = s
            .waypoints
            .iter()
            .map(|w| (w.seq, w.kind, w.location.as_str()))
            .collect();
        assert_eq!(
            route,
            [
                (1, WaypointKind::Pickup, pickup_location(a).as_str()),
                (2, WaypointKind::Pickup, pickup_location(b).as_str()),
                (
                    3,
                    WaypointKind::Dropoff,
                    "Ada Lovelace, 1 Analytical Way, Floor 2, 10115 Berlin, DE"
                ),
            ]
        );
        assert!(pickup_location(a).contains(&a.to_string()));
        let created = s.created_event();
        assert_eq!(created.shipment_id, s.id.to_string());
        assert_eq!(created.parcels.len(), 2);
        assert_eq!(created.waypoints[2].kind, "dropoff");
    }

    #[test]
    fn an_order_without_lines_cannot_be_planned() {
        assert_eq!(
            plan(&paid(Vec::new()), new_id(), parcel_id, Utc::now()),
            Err(PlanError::NoLines)
        );
    }

    #[test]
    fn an_address_without_a_second_line_reads_as_one_line() {
        let mut a = address();
        a.line2 = Some("  ".into());
        assert_eq!(
            dropoff_location(&a),
            "Ada Lovelace, 1 Analytical Way, 10115 Berlin, DE"
        );
        a.line2 = None;
        assert_eq!(
            dropoff_location(&a),
            "Ada Lovelace, 1 Analytical Way, 10115 Berlin, DE"
        );
    }

    #[test]
    fn a_courier_moves_a_shipment_along_its_route_to_delivered() {
        let s = shipment(2);
        let later = s.created_at + chrono::Duration::hours(1);
        let (s, e) = s.apply(CourierEvent::PickedUp, later).unwrap();
        assert_eq!(s.status, ShipmentStatus::PickedUp);
        assert_eq!((s.next_waypoint, s.version, s.updated_at), (2, 2, later));
        assert!(matches!(e, ShipmentEvent::PickedUp(_)));

        let eta = later + chrono::Duration::hours(2);
        let (s, e) = s
            .apply(
                CourierEvent::WaypointReached {
                    waypoint: 2,
                    location: None,
                    eta: Some(eta),
                },
                later,
            )
            .unwrap();
        assert_eq!(s.status, ShipmentStatus::InTransit);
        assert_eq!((s.next_waypoint, s.eta), (3, Some(eta)));
        let ShipmentEvent::WaypointReached(reached_event) = e else {
            panic!("expected waypoint_reached, got {e:?}");
        };
        assert_eq!(reached_event.waypoint, 2);
        assert_eq!(reached_event.location, s.waypoints[1].location);
        assert_eq!(reached_event.eta, Some(eta));

        let (s, e) = s.apply(CourierEvent::Delivered, later).unwrap();
        assert_eq!(s.status, ShipmentStatus::Delivered);
        assert_eq!((s.next_waypoint, s.version), (4, 4));
        assert!(matches!(e, ShipmentEvent::Delivered(_)));
        assert_eq!(s.next_step(), None);
    }

    #[test]
    fn the_courier_may_report_reaching_the_dropoff_before_delivering() {
        let s = in_status(1, ShipmentStatus::PickedUp);
        let (s, e) = s
            .apply(
                CourierEvent::WaypointReached {
                    waypoint: 2,
                    location: Some("at the door".into()),
                    eta: None,
                },
                Utc::now(),
            )
            .unwrap();
        let ShipmentEvent::WaypointReached(e) = e else {
            panic!("expected waypoint_reached");
        };
        assert_eq!(e.location, "at the door");
        assert!(s.reached(2));
        assert_eq!(
            step(&s, CourierEvent::Delivered).status,
            ShipmentStatus::Delivered
        );
        // The same waypoint again is a duplicate.
        assert_eq!(
            s.apply(reached(2), Utc::now()).unwrap_err(),
            CourierError::AlreadyReached { waypoint: 2 }
        );
    }

    #[test]
    fn a_repeated_courier_event_is_refused_not_applied_twice() {
        let picked = in_status(2, ShipmentStatus::PickedUp);
        assert_eq!(
            picked
                .apply(CourierEvent::PickedUp, Utc::now())
                .unwrap_err(),
            CourierError::AlreadyPickedUp
        );
        assert_eq!(
            picked.apply(reached(1), Utc::now()).unwrap_err(),
            CourierError::AlreadyReached { waypoint: 1 }
        );
        let moving = step(&picked, reached(2));
        assert_eq!(
            moving.apply(reached(2), Utc::now()).unwrap_err(),
            CourierError::AlreadyReached { waypoint: 2 }
        );
        let delivered = step(&moving, CourierEvent::Delivered);
        assert_eq!(
            delivered
                .apply(CourierEvent::Delivered, Utc::now())
                .unwrap_err(),
            CourierError::Finished {
                status: ShipmentStatus::Delivered
            }
        );
    }

    #[test]
    fn waypoints_are_reached_in_order_only() {
        let picked = in_status(3, ShipmentStatus::PickedUp);
        assert_eq!(
            picked.apply(reached(3), Utc::now()).unwrap_err(),
            CourierError::OutOfOrder {
                expected: 2,
                got: 3
            }
        );
        assert_eq!(
            picked.apply(reached(5), Utc::now()).unwrap_err(),
            CourierError::NoSuchWaypoint {
                waypoint: 5,
                count: 4
            }
        );
        assert_eq!(
            picked.apply(reached(0), Utc::now()).unwrap_err(),
            CourierError::NoSuchWaypoint {
                waypoint: 0,
                count: 4
            }
        );
        assert_eq!(
            shipment(2).apply(reached(1), Utc::now()).unwrap_err(),
            CourierError::NotPickedUp
        );
    }

    #[test]
    fn delivery_waits_for_every_pickup() {
        let picked = in_status(3, ShipmentStatus::PickedUp);
        assert_eq!(
            picked
                .apply(CourierEvent::Delivered, Utc::now())
                .unwrap_err(),
            CourierError::PickupsPending { next: 2 }
        );
        let at_two = step(&picked, reached(2));
        assert_eq!(
            at_two
                .apply(CourierEvent::Delivered, Utc::now())
                .unwrap_err(),
            CourierError::PickupsPending { next: 3 }
        );
        let at_three = step(&at_two, reached(3));
        assert_eq!(
            step(&at_three, CourierEvent::Delivered).status,
            ShipmentStatus::Delivered
        );
        assert_eq!(
            shipment(1)
                .apply(CourierEvent::Delivered, Utc::now())
                .unwrap_err(),
            CourierError::NotPickedUp
        );
    }

    /// Every status against every kind of courier event: what is allowed,
    /// and what each refusal says.
    #[test]
    fn the_state_machine_allows_exactly_the_courier_transitions() {
        use ShipmentStatus::*;
        for status in ShipmentStatus::ALL {
            let s = in_status(2, status);
            assert_eq!(s.status, status);
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
            let next = s.next_waypoint;
            let events = [
                CourierEvent::PickedUp,
                reached(next),
                CourierEvent::Delivered,
                failed(),
            ];
            for event in events {
                let kind = event.kind();
                let outcome = s.apply(event, Utc::now()).map(|(s, _)| s.status);
                let expected = match (status, kind) {
                    (Delivered | Failed | Cancelled, _) => Err(CourierError::Finished { status }),
                    (Created, CourierEventKind::PickedUp) => Ok(PickedUp),
                    (_, CourierEventKind::PickedUp) => Err(CourierError::AlreadyPickedUp),
                    (Created, CourierEventKind::WaypointReached | CourierEventKind::Delivered) => {
                        Err(CourierError::NotPickedUp)
                    }
                    (_, CourierEventKind::WaypointReached) => Ok(InTransit),
                    // Two sellers: after the first pickup, the second waits.
                    (PickedUp, CourierEventKind::Delivered) => {
                        Err(CourierError::PickupsPending { next: 2 })
                    }
                    (InTransit, CourierEventKind::Delivered) => Ok(Delivered),
                    (_, CourierEventKind::Failed) => Ok(Failed),
                };
                assert_eq!(outcome, expected, "{status} + {kind}");
                assert_eq!(CourierEventKind::parse(kind.as_str()), Some(kind));
            }
            assert_eq!(
                s.cancel(Utc::now()).map(|s| s.status),
                if status == Created {
                    Ok(Cancelled)
                } else {
                    Err(CancelError { status })
                },
                "cancel {status}"
            );
            assert_eq!(s.next_step().is_some(), status.is_active(), "{status}");
        }
    }

    #[test]
    fn a_failure_keeps_its_reason_and_cancelling_bumps_the_version() {
        let s = step(&shipment(1), failed());
        assert_eq!(s.failure_reason.as_deref(), Some("address not found"));
        let cancelled = shipment(1).cancel(Utc::now()).unwrap();
        assert_eq!(cancelled.version, 2);
        assert_eq!(
            cancelled.cancel(Utc::now()),
            Err(CancelError {
                status: ShipmentStatus::Cancelled
            })
        );
    }

    #[test]
    fn following_next_step_always_reaches_delivered() {
        for sellers in 1..=4 {
            let mut s = shipment(sellers);
            let mut steps = 0;
            while let Some(event) = s.next_step() {
                s = step(&s, event);
                steps += 1;
            }
            assert_eq!(s.status, ShipmentStatus::Delivered);
            // Picked up, each further pickup, delivered.
            assert_eq!(steps, sellers + 1, "{sellers} sellers");
        }
    }

    #[test]
    fn a_log_entry_records_what_the_courier_reported() {
        let s = in_status(2, ShipmentStatus::PickedUp);
        let (next, published) = s
            .apply(
                CourierEvent::WaypointReached {
                    waypoint: 2,
                    location: Some("depot".into()),
                    eta: None,
                },
                Utc::now(),
            )
            .unwrap();
        let entry = CourierLogEntry::of(&next, &published, "evt_x".into(), "cli_y".into());
        assert_eq!(entry.kind, CourierEventKind::WaypointReached);
        assert_eq!(entry.seq, next.version);
        assert_eq!(entry.waypoint, Some(2));
        assert_eq!(entry.location.as_deref(), Some("depot"));
        assert_eq!(entry.at, next.updated_at);
    }

    #[test]
    fn ids_round_trip_and_reject_other_kinds() {
        let id = new_id();
        assert_eq!(ShipmentId::parse(&id.to_string()), Ok(id));
        assert!(id.to_string().starts_with("shp_"));
        assert!(ParcelId::parse(&id.to_string()).is_err());
        assert!(ShipmentId::parse("shp_nope").is_err());
    }
}
