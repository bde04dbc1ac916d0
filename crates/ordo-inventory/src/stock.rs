//! Stock and reservations as pure decisions.
//!
//! The store loads a [`Snapshot`] of the order's reservation and the stock
//! of the products involved inside its write transaction, hands it to one
//! of the `decide_*` functions here, and applies the [`Decision`] in the
//! same transaction. The decision is therefore taken on data no one else
//! can change meanwhile: no oversell, whatever the concurrency.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_bus::{Envelope, EventContext, EventPayload};
use ordo_events::{
    InventoryCommitted, InventoryReleased, InventoryReservationFailed, InventoryReserved, StockLine,
};
use ordo_kernel::{EventId, OrderId, ProductId};

/// The stock of one product, by bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StockLevel {
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub committed: i64,
    /// Every adjustment ever made, the initial stock included.
    pub adjusted: i64,
}

impl StockLevel {
    /// Invariant 3: every unit is in exactly one bucket, none negative.
    pub fn balanced(&self) -> bool {
        self.available >= 0
            && self.reserved >= 0
            && self.allocated >= 0
            && self.committed >= 0
            && self.adjusted == self.available + self.reserved + self.allocated + self.committed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Active,
    Allocated,
    Committed,
    Released,
    Failed,
}

impl ReservationStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Allocated => "allocated",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Active,
            Self::Allocated,
            Self::Committed,
            Self::Released,
            Self::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub order_id: OrderId,
    pub status: ReservationStatus,
    pub release_reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub lines: Vec<StockLine>,
}

/// What the store read in the transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub reservation: Option<Reservation>,
    pub stock: HashMap<ProductId, StockLevel>,
}

/// A change of the order's hold; the store moves the units between
/// buckets accordingly.
#[derive(Debug, Clone, PartialEq)]
pub enum StockChange {
    /// available → reserved, for every line.
    Reserve {
        lines: Vec<StockLine>,
        expires_at: DateTime<Utc>,
    },
    /// Record that the order could not be served.
    Fail {
        reason: String,
    },
    /// reserved → allocated: no expiry any more.
    Allocate,
    /// allocated → committed: the goods left.
    Commit,
    /// reserved or allocated → available.
    Release {
        reason: String,
    },
    /// Nothing held, but no later event may reserve for this order.
    Tombstone {
        reason: String,
    },
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub change: StockChange,
    pub events: Vec<Envelope>,
}

impl Decision {
    pub fn is_nothing(&self) -> bool {
        self.change == StockChange::Nothing && self.events.is_empty()
    }

    fn nothing() -> Self {
        Self {
            change: StockChange::Nothing,
            events: Vec::new(),
        }
    }
}

/// What an event needs besides its payload, all decided outside.
#[derive(Debug, Clone)]
pub struct EventStamp {
    pub id: EventId,
    pub time: DateTime<Utc>,
    pub context: EventContext,
    pub actor: String,
}

impl EventStamp {
    fn envelope<E: EventPayload>(&self, order: OrderId, payload: &E) -> Envelope {
        // The payloads are plain data: serialising them cannot fail.
        Envelope::new(
            self.id,
            self.time,
            order.to_string(),
            None,
            &self.context,
            payload,
        )
        .map(|e| e.with_actor(self.actor.clone()))
        .unwrap_or_else(|err| unreachable!("event payloads serialise: {err}"))
    }
}

/// order.created: hold every line or none.
pub fn decide_reserve(
    order: OrderId,
    lines: &[StockLine],
    snapshot: &Snapshot,
    expires_at: DateTime<Utc>,
    stamp: &EventStamp,
) -> Decision {
    if snapshot.reservation.is_some() {
        // Decided before (or cancelled first): a duplicate or a late event.
        return Decision::nothing();
    }
    let mut wanted: HashMap<ProductId, i64> = HashMap::new();
    for line in lines {
        *wanted.entry(line.product_id).or_default() += i64::from(line.quantity);
    }
    let mut unknown = Vec::new();
    let mut short = Vec::new();
    for (product, quantity) in &wanted {
        match snapshot.stock.get(product) {
            None => unknown.push(*product),
            Some(level) if level.available < *quantity => short.push(*product),
            Some(_) => {}
        }
    }
    if unknown.is_empty() && short.is_empty() {
        let lines: Vec<StockLine> = lines.to_vec();
        let event = stamp.envelope(
            order,
            &InventoryReserved {
                order_id: order,
                lines: lines.clone(),
                expires_at,
            },
        );
        return Decision {
            change: StockChange::Reserve { lines, expires_at },
            events: vec![event],
        };
    }
    let reason = if unknown.is_empty() {
        "out_of_stock"
    } else {
        "unknown_product"
    };
    let mut products = unknown;
    products.extend(short);
    products.sort();
    Decision {
        change: StockChange::Fail {
            reason: reason.to_owned(),
        },
        events: vec![stamp.envelope(
            order,
            &InventoryReservationFailed {
                order_id: order,
                reason: reason.to_owned(),
                products,
            },
        )],
    }
}

/// order.paid: the hold becomes an allocation. A hold that already expired
/// stays released: the order is being cancelled for it.
pub fn decide_allocate(snapshot: &Snapshot) -> Decision {
    match &snapshot.reservation {
        Some(r) if r.status == ReservationStatus::Active => Decision {
            change: StockChange::Allocate,
            events: Vec::new(),
        },
        _ => Decision::nothing(),
    }
}

/// order.shipped: the goods left the warehouse.
pub fn decide_commit(order: OrderId, snapshot: &Snapshot, stamp: &EventStamp) -> Decision {
    match &snapshot.reservation {
        Some(r)
            if matches!(
                r.status,
                ReservationStatus::Allocated | ReservationStatus::Active
            ) =>
        {
            Decision {
                change: StockChange::Commit,
                events: vec![stamp.envelope(
                    order,
                    &InventoryCommitted {
                        order_id: order,
                        lines: r.lines.clone(),
                    },
                )],
            }
        }
        _ => Decision::nothing(),
    }
}

/// order.cancelled, or the hold's time ran out (`reason` = `expired`).
pub fn decide_release(
    order: OrderId,
    reason: &str,
    snapshot: &Snapshot,
    stamp: &EventStamp,
) -> Decision {
    match &snapshot.reservation {
        None => Decision {
            change: StockChange::Tombstone {
                reason: reason.to_owned(),
            },
            events: Vec::new(),
        },
        Some(r)
            if matches!(
                r.status,
                ReservationStatus::Active | ReservationStatus::Allocated
            ) =>
        {
            if reason == "expired" && r.status != ReservationStatus::Active {
                return Decision::nothing();
            }
            Decision {
                change: StockChange::Release {
                    reason: reason.to_owned(),
                },
                events: vec![stamp.envelope(
                    order,
                    &InventoryReleased {
                        order_id: order,
                        reason: reason.to_owned(),
                        lines: r.lines.clone(),
                    },
                )],
            }
        }
        Some(_) => Decision::nothing(),
    }
}

/// Moves units between buckets for a change of `reservation`'s lines;
/// `None` when a bucket would go negative.
pub fn apply_to_level(
    level: StockLevel,
    change: &StockChange,
    from: Option<ReservationStatus>,
    quantity: i64,
) -> Option<StockLevel> {
    let mut l = level;
    match (change, from) {
        (StockChange::Reserve { .. }, _) => {
            l.available -= quantity;
            l.reserved += quantity;
        }
        (StockChange::Allocate, _) => {
            l.reserved -= quantity;
            l.allocated += quantity;
        }
        (StockChange::Commit, Some(ReservationStatus::Active)) => {
            l.reserved -= quantity;
            l.committed += quantity;
        }
        (StockChange::Commit, _) => {
            l.allocated -= quantity;
            l.committed += quantity;
        }
        (StockChange::Release { .. }, Some(ReservationStatus::Allocated)) => {
            l.allocated -= quantity;
            l.available += quantity;
        }
        (StockChange::Release { .. }, _) => {
            l.reserved -= quantity;
            l.available += quantity;
        }
        _ => {}
    }
    l.balanced().then_some(l)
}

#[cfg(test)]
mod tests {
    use ulid::Ulid;

    use super::*;

    fn stamp() -> EventStamp {
        EventStamp {
            id: EventId::from_ulid(Ulid::new()),
            time: Utc::now(),
            context: EventContext::from_request("t"),
            actor: "system:inventory".into(),
        }
    }

    fn level(available: i64) -> StockLevel {
        StockLevel {
            available,
            adjusted: available,
            ..StockLevel::default()
        }
    }

    fn product() -> ProductId {
        ProductId::from_ulid(Ulid::new())
    }

    #[test]
    fn a_reservation_holds_every_line_or_none() {
        let (a, b) = (product(), product());
        let order = OrderId::from_ulid(Ulid::new());
        let lines = vec![
            StockLine {
                product_id: a,
                quantity: 2,
            },
            StockLine {
                product_id: b,
                quantity: 5,
            },
        ];
        let mut snapshot = Snapshot::default();
        snapshot.stock.insert(a, level(2));
        snapshot.stock.insert(b, level(5));
        let d = decide_reserve(order, &lines, &snapshot, Utc::now(), &stamp());
        assert!(matches!(d.change, StockChange::Reserve { .. }));
        assert_eq!(d.events[0].event_type, "inventory.reserved.v1");

        snapshot.stock.insert(b, level(4));
        let d = decide_reserve(order, &lines, &snapshot, Utc::now(), &stamp());
        assert_eq!(
            d.change,
            StockChange::Fail {
                reason: "out_of_stock".into()
            }
        );
        let failed: InventoryReservationFailed = d.events[0].decode().unwrap();
        assert_eq!(failed.products, vec![b]);
    }

    #[test]
    fn a_decided_order_is_never_reserved_again() {
        let a = product();
        let order = OrderId::from_ulid(Ulid::new());
        let mut snapshot = Snapshot::default();
        snapshot.stock.insert(a, level(10));
        snapshot.reservation = Some(Reservation {
            order_id: order,
            status: ReservationStatus::Released,
            release_reason: Some("cancelled".into()),
            expires_at: None,
            lines: vec![],
        });
        let d = decide_reserve(
            order,
            &[StockLine {
                product_id: a,
                quantity: 1,
            }],
            &snapshot,
            Utc::now(),
            &stamp(),
        );
        assert!(d.is_nothing());
    }

    #[test]
    fn units_move_between_buckets_and_never_below_zero() {
        let start = level(3);
        let reserve = StockChange::Reserve {
            lines: vec![],
            expires_at: Utc::now(),
        };
        let held = apply_to_level(start, &reserve, None, 3).unwrap();
        assert_eq!((held.available, held.reserved), (0, 3));
        assert!(
            apply_to_level(held, &reserve, None, 1).is_none(),
            "no oversell"
        );
        let allocated = apply_to_level(
            held,
            &StockChange::Allocate,
            Some(ReservationStatus::Active),
            3,
        )
        .unwrap();
        let committed = apply_to_level(
            allocated,
            &StockChange::Commit,
            Some(ReservationStatus::Allocated),
            3,
        )
        .unwrap();
        assert_eq!((committed.committed, committed.allocated), (3, 0));
        let released = apply_to_level(
            allocated,
            &StockChange::Release {
                reason: "cancelled".into(),
            },
            Some(ReservationStatus::Allocated),
            3,
        )
        .unwrap();
        assert_eq!(released, start);
    }

    #[test]
    fn an_expiry_releases_only_an_unpaid_hold() {
        let order = OrderId::from_ulid(Ulid::new());
        let mut snapshot = Snapshot::default();
        let mut r = Reservation {
            order_id: order,
            status: ReservationStatus::Allocated,
            release_reason: None,
            expires_at: None,
            lines: vec![],
        };
        snapshot.reservation = Some(r.clone());
        assert!(decide_release(order, "expired", &snapshot, &stamp()).is_nothing());
        r.status = ReservationStatus::Active;
        snapshot.reservation = Some(r);
        assert!(matches!(
            decide_release(order, "expired", &snapshot, &stamp()).change,
            StockChange::Release { .. }
        ));
        // A cancel before the order reached inventory leaves a tombstone.
        assert!(matches!(
            decide_release(order, "cancelled", &Snapshot::default(), &stamp()).change,
            StockChange::Tombstone { .. }
        ));
    }
}
