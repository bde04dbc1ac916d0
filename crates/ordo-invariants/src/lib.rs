//! The invariants of DESIGN.md, checked over the data the services keep.
//!
//! Every test suite that drives the saga (end to end, faults, simulation)
//! ends by asking [`Checker::check`] for violations, once the system is
//! quiet. It reads through the services' storage traits only, so it runs
//! the same against every backend; it reports every violation it finds,
//! not just the first.
//!
//! 2. Every order is delivered or cancelled, or waits on a named actor.
//! 3. Per product: adjustments = available + reserved + allocated + committed, none negative.
//! 4. Per order: captured − refunded is the total when delivered, 0 when cancelled; at most one capture.
//! 5. A cancelled order holds no stock and has no live shipment.
//! 6. The timeline is gap-free, holds each of the order's events once, and shows only allowed transitions.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use ordo_bus::OutboxStore;
use ordo_inventory::StockStore;
use ordo_inventory::stock::ReservationStatus;
use ordo_kernel::{OrderId, StoreError};
use ordo_orders::OrderStore;
use ordo_orders::domain::{Order, OrderStatus};
use ordo_orders::store::OrderFilter;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The number of the invariant in DESIGN.md.
    pub invariant: u8,
    /// The order or product concerned.
    pub subject: String,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant {} broken for {}: {}",
            self.invariant, self.subject, self.detail
        )
    }
}

/// Money of one order as payments sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMoney {
    pub order_id: OrderId,
    pub captured: Decimal,
    pub refunded: Decimal,
    pub captures: u32,
}

/// What the checker needs from payments.
#[async_trait::async_trait]
pub trait PaymentsView: Send + Sync {
    async fn ledger(&self) -> Result<Vec<OrderMoney>, StoreError>;
}

/// A shipment as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentState {
    pub order_id: OrderId,
    /// `cancelled` for a shipment called off before pickup.
    pub status: String,
}

/// What the checker needs from delivery.
#[async_trait::async_trait]
pub trait ShipmentsView: Send + Sync {
    async fn shipments(&self) -> Result<Vec<ShipmentState>, StoreError>;
}

pub struct Checker {
    pub orders: Arc<dyn OrderStore>,
    pub orders_outbox: Arc<dyn OutboxStore>,
    pub stock: Arc<dyn StockStore>,
    pub payments: Option<Arc<dyn PaymentsView>>,
    pub shipments: Option<Arc<dyn ShipmentsView>>,
}

/// What "quiet" may still leave open.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Statuses an order may rest in because it waits on a named actor
    /// (`shipped` and `paid` wait on the courier when no simulator runs).
    pub may_wait_in: Vec<OrderStatus>,
}

impl Checker {
    async fn all_orders(&self) -> Result<Vec<Order>, StoreError> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .orders
                .list(
                    OrderFilter {
                        before,
                        ..OrderFilter::default()
                    },
                    500,
                )
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            let done = page.len() < 500;
            all.extend(page);
            if done {
                break;
            }
        }
        Ok(all)
    }

    /// Every violation found.
    pub async fn check(&self, expect: &Expectations) -> Result<Vec<Violation>, StoreError> {
        let mut found = Vec::new();
        let orders = self.all_orders().await?;
        let mut v = |invariant: u8, subject: String, detail: String| {
            found.push(Violation {
                invariant,
                subject,
                detail,
            })
        };

        // 2. Final, or waiting on someone named.
        for o in &orders {
            if !o.status.is_final() && !expect.may_wait_in.contains(&o.status) {
                v(
                    2,
                    o.id.to_string(),
                    format!("rests in {} with nobody to move it", o.status),
                );
            }
        }

        // 3. Stock balances.
        for (product, level) in self.stock.levels().await? {
            if !level.balanced() {
                v(
                    3,
                    product.to_string(),
                    format!("unbalanced stock {level:?}"),
                );
            }
        }

        // 4. Money.
        if let Some(payments) = &self.payments {
            let ledger: HashMap<OrderId, OrderMoney> = payments
                .ledger()
                .await?
                .into_iter()
                .map(|m| (m.order_id, m))
                .collect();
            for o in &orders {
                let money = ledger.get(&o.id);
                let net = money.map(|m| m.captured - m.refunded).unwrap_or_default();
                let captures = money.map(|m| m.captures).unwrap_or(0);
                if captures > 1 {
                    v(4, o.id.to_string(), format!("captured {captures} times"));
                }
                match o.status {
                    OrderStatus::Delivered if net != o.total => {
                        v(
                            4,
                            o.id.to_string(),
                            format!("delivered with {net} kept of a {} total", o.total),
                        );
                    }
                    OrderStatus::Cancelled if !net.is_zero() => {
                        v(
                            4,
                            o.id.to_string(),
                            format!("cancelled with {net} still kept"),
                        );
                    }
                    _ => {}
                }
                if money.is_some_and(|m| m.refunded > m.captured) {
                    v(
                        4,
                        o.id.to_string(),
                        "refunded more than captured".to_owned(),
                    );
                }
            }
        }

        // 5. A cancelled order holds nothing.
        let reservations: HashMap<OrderId, ReservationStatus> = self
            .stock
            .reservations()
            .await?
            .into_iter()
            .map(|r| (r.order_id, r.status))
            .collect();
        let shipments: HashMap<OrderId, String> = match &self.shipments {
            Some(s) => s
                .shipments()
                .await?
                .into_iter()
                .map(|s| (s.order_id, s.status))
                .collect(),
            None => HashMap::new(),
        };
        for o in orders.iter().filter(|o| o.status == OrderStatus::Cancelled) {
            if let Some(status) = reservations.get(&o.id)
                && !matches!(
                    status,
                    ReservationStatus::Released | ReservationStatus::Failed
                )
            {
                v(
                    5,
                    o.id.to_string(),
                    format!("cancelled but its reservation is {}", status.as_str()),
                );
            }
            if let Some(status) = shipments.get(&o.id)
                && status != "cancelled"
            {
                v(
                    5,
                    o.id.to_string(),
                    format!("cancelled but its shipment is {status}"),
                );
            }
        }

        // 6. The timeline.
        for o in &orders {
            let timeline = self.orders.timeline(o.id).await?;
            let seqs: Vec<i64> = timeline.iter().map(|e| e.seq).collect();
            if seqs != (1..=timeline.len() as i64).collect::<Vec<_>>() {
                v(6, o.id.to_string(), format!("sequence has gaps: {seqs:?}"));
            }
            let mut ids = HashSet::new();
            for e in &timeline {
                if !ids.insert(e.event_id.clone()) {
                    v(
                        6,
                        o.id.to_string(),
                        format!("event {} appears twice", e.event_id),
                    );
                }
            }
            let published = self
                .orders_outbox
                .events_for_subject(&o.id.to_string())
                .await?;
            for event in &published {
                if !ids.contains(&event.id.to_string()) {
                    v(
                        6,
                        o.id.to_string(),
                        format!("{} {} is missing", event.name(), event.id),
                    );
                }
            }
            let mut status: Option<OrderStatus> = None;
            for e in timeline
                .iter()
                .filter(|e| e.event_type.starts_with("order."))
            {
                let next = match e.event_type.as_str() {
                    "order.created" => OrderStatus::Pending,
                    "order.confirmed" => OrderStatus::Confirmed,
                    "order.paid" => OrderStatus::Paid,
                    "order.shipped" => OrderStatus::Shipped,
                    "order.delivered" => OrderStatus::Delivered,
                    "order.cancelled" => OrderStatus::Cancelled,
                    // A request, not a transition: the status stays.
                    "order.cancellation_requested" => {
                        if status != Some(OrderStatus::Paid) {
                            v(
                                6,
                                o.id.to_string(),
                                "a cancellation requested of an unpaid order".to_owned(),
                            );
                        }
                        continue;
                    }
                    other => {
                        v(6, o.id.to_string(), format!("unknown order event {other}"));
                        continue;
                    }
                };
                let allowed = match status {
                    None => next == OrderStatus::Pending,
                    Some(current) => current.can_become(next),
                };
                if !allowed {
                    v(
                        6,
                        o.id.to_string(),
                        format!(
                            "{} after {}",
                            e.event_type,
                            status.map_or("nothing", |s| s.as_str())
                        ),
                    );
                }
                status = Some(next);
            }
            if status != Some(o.status) {
                v(
                    6,
                    o.id.to_string(),
                    format!(
                        "the timeline ends in {:?} but the order is {}",
                        status.map(|s| s.as_str()),
                        o.status
                    ),
                );
            }
        }
        Ok(found)
    }
}

/// The delivery service's shipments, for the checker.
pub struct DeliveryView(pub Arc<dyn ordo_delivery::ShipmentStore>);

#[async_trait::async_trait]
impl ShipmentsView for DeliveryView {
    async fn shipments(&self) -> Result<Vec<ShipmentState>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.0.list_statuses(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.shipment_id);
            let done = page.len() < 500;
            all.extend(page.into_iter().map(|s| ShipmentState {
                order_id: s.order_id,
                status: s.status.as_str().to_owned(),
            }));
            if done {
                break;
            }
        }
        Ok(all)
    }
}

/// The payments service's ledger, for the checker.
pub struct PaymentsLedger(pub Arc<dyn ordo_payments::PaymentStore>);

#[async_trait::async_trait]
impl PaymentsView for PaymentsLedger {
    async fn ledger(&self) -> Result<Vec<OrderMoney>, StoreError> {
        let mut by_order: HashMap<OrderId, OrderMoney> = HashMap::new();
        for t in self.0.all_totals().await? {
            let entry = by_order.entry(t.order_id).or_insert(OrderMoney {
                order_id: t.order_id,
                captured: Decimal::ZERO,
                refunded: Decimal::ZERO,
                captures: 0,
            });
            entry.captured += t.captured;
            entry.refunded += t.refunded;
            entry.captures += t.capture_count;
        }
        Ok(by_order.into_values().collect())
    }
}
