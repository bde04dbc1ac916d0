//! Orders as pure data and pure decisions: no I/O, no clock, no ids made
//! here. Everything that varies is passed in.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use ordo_events::{Address, OrderLine};
use ordo_kernel::{ClientId, Currency, OrderId, ProductId, Quantity};
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        Self::Pending,
        Self::Confirmed,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The transitions of the saga: forward one step at a time, or to
    /// cancelled from any status before shipped.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Confirmed)
                | (Confirmed, Paid)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Pending | Confirmed | Paid, Cancelled)
        )
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationReason {
    OutOfStock,
    PaymentFailed,
    ReservationExpired,
    CustomerCancelled,
    AdminCancelled,
}

impl CancellationReason {
    pub const ALL: [CancellationReason; 5] = [
        Self::OutOfStock,
        Self::PaymentFailed,
        Self::ReservationExpired,
        Self::CustomerCancelled,
        Self::AdminCancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentFailed => "payment_failed",
            Self::ReservationExpired => "reservation_expired",
            Self::CustomerCancelled => "customer_cancelled",
            Self::AdminCancelled => "admin_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub seller_id: ClientId,
    pub quantity: Quantity,
    pub unit_price: Decimal,
    pub line_total: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: ClientId,
    pub status: OrderStatus,
    pub cancellation_reason: Option<String>,
    pub currency: Currency,
    pub total: Decimal,
    /// The country the order ships to.
    pub market: String,
    pub shipping_address: Address,
    pub payment_token: String,
    pub attributes: serde_json::Value,
    pub items: Vec<OrderItem>,
    pub idempotency_key: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A cancel asked of a paid order, waiting for delivery's answer: the
    /// reason it will be cancelled with.
    pub cancel_requested: Option<String>,
}

impl Order {
    /// A paid order is cancelled only once delivery confirms that nothing
    /// was picked up: record the request. Asking twice changes nothing.
    pub fn request_cancel(
        &self,
        reason: CancellationReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Order>, TransitionError> {
        if self.status != OrderStatus::Paid {
            return Err(TransitionError {
                from: self.status,
                to: OrderStatus::Cancelled,
            });
        }
        if self.cancel_requested.is_some() {
            return Ok(None);
        }
        let mut order = self.clone();
        order.cancel_requested = Some(reason.as_str().to_owned());
        order.version += 1;
        order.updated_at = now;
        Ok(Some(order))
    }

    pub fn lines(&self) -> Vec<OrderLine> {
        self.items
            .iter()
            .map(|i| OrderLine {
                product_id: i.product_id,
                sku: i.sku.clone(),
                seller_id: i.seller_id,
                quantity: i.quantity.get(),
                unit_price: i.unit_price,
            })
            .collect()
    }

    pub fn has_seller(&self, seller: ClientId) -> bool {
        self.items.iter().any(|i| i.seller_id == seller)
    }

    /// The order as one of its sellers sees it: that seller's lines only,
    /// the total their subtotal, and no payment token. Other sellers'
    /// lines and the customer's whole spend are none of its business.
    pub fn for_seller(mut self, seller: ClientId) -> Order {
        self.items.retain(|i| i.seller_id == seller);
        self.total = self.items.iter().map(|i| i.line_total).sum();
        self.payment_token = String::new();
        self
    }

    /// The order after a transition to `next`, or why it cannot happen.
    pub fn transition(
        &self,
        next: OrderStatus,
        reason: Option<CancellationReason>,
        now: DateTime<Utc>,
    ) -> Result<Order, TransitionError> {
        if !self.status.can_become(next) {
            return Err(TransitionError {
                from: self.status,
                to: next,
            });
        }
        let mut order = self.clone();
        order.status = next;
        order.cancellation_reason = reason.map(|r| r.as_str().to_owned());
        if next == OrderStatus::Shipped {
            // The courier had it first: a pending cancel request is refused.
            order.cancel_requested = None;
        }
        order.version += 1;
        order.updated_at = now;
        Ok(order)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot become {to}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// A product as the orders service knows it from `product.upserted`.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub price: Decimal,
    pub currency: Currency,
    pub seller_id: ClientId,
    pub active: bool,
    pub version: i64,
}

/// A line as the client asked for it, validated in shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// Why an order cannot be priced; each names the line (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingError {
    UnknownProduct { line: usize },
    Unavailable { line: usize },
    Duplicate { line: usize },
    MixedCurrencies { line: usize },
}

/// Prices the lines from the catalog projection: clients never send
/// prices. Every problem is reported, not just the first.
pub fn price(
    lines: &[RequestedLine],
    catalog: &HashMap<ProductId, CatalogEntry>,
) -> Result<(Vec<OrderItem>, Currency, Decimal), Vec<PricingError>> {
    let mut errors = Vec::new();
    let mut items = Vec::with_capacity(lines.len());
    let mut seen = HashSet::new();
    let mut currency = None;
    for (index, line) in lines.iter().enumerate() {
        if !seen.insert(line.product_id) {
            errors.push(PricingError::Duplicate { line: index });
            continue;
        }
        let Some(entry) = catalog.get(&line.product_id) else {
            errors.push(PricingError::UnknownProduct { line: index });
            continue;
        };
        if !entry.active {
            errors.push(PricingError::Unavailable { line: index });
            continue;
        }
        match currency {
            None => currency = Some(entry.currency),
            Some(c) if c != entry.currency => {
                errors.push(PricingError::MixedCurrencies { line: index });
                continue;
            }
            Some(_) => {}
        }
        let line_total = entry.price * Decimal::from(line.quantity.get());
        items.push(OrderItem {
            product_id: entry.product_id,
            sku: entry.sku.clone(),
            name: entry.name.clone(),
            seller_id: entry.seller_id,
            quantity: line.quantity,
            unit_price: entry.price,
            line_total,
        });
    }
    match (errors.is_empty(), currency) {
        (true, Some(currency)) => {
            let total = items.iter().map(|i| i.line_total).sum();
            Ok((items, currency, total))
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use ulid::Ulid;

    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_the_saga_transitions() {
        use OrderStatus::*;
        let allowed = [
            (Pending, Confirmed),
            (Confirmed, Paid),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Pending, Cancelled),
            (Confirmed, Cancelled),
            (Paid, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for status in OrderStatus::ALL {
            let final_has_no_way_out = OrderStatus::ALL.iter().all(|to| !status.can_become(*to));
            assert_eq!(status.is_final(), final_has_no_way_out, "{status}");
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }

    fn entry(price: &str, currency: &str) -> CatalogEntry {
        CatalogEntry {
            product_id: ProductId::from_ulid(Ulid::new()),
            sku: "SKU".into(),
            name: "Thing".into(),
            price: Decimal::from_str(price).unwrap(),
            currency: Currency::parse(currency).unwrap(),
            seller_id: ClientId::from_ulid(Ulid::new()),
            active: true,
            version: 1,
        }
    }

    fn line(e: &CatalogEntry, q: i64) -> RequestedLine {
        RequestedLine {
            product_id: e.product_id,
            quantity: Quantity::new(q).unwrap(),
        }
    }

    #[test]
    fn an_order_is_priced_from_the_catalog() {
        let a = entry("19.99", "EUR");
        let b = entry("0.02", "EUR");
        let catalog = HashMap::from([(a.product_id, a.clone()), (b.product_id, b.clone())]);
        let (items, currency, total) = price(&[line(&a, 2), line(&b, 3)], &catalog).unwrap();
        assert_eq!(currency.as_str(), "EUR");
        assert_eq!(total, Decimal::from_str("40.04").unwrap());
        assert_eq!(items[0].line_total, Decimal::from_str("39.98").unwrap());
    }

    #[test]
    fn every_pricing_problem_is_reported_with_its_line() {
        let a = entry("1.00", "EUR");
        let usd = entry("1.00", "USD");
        let mut gone = entry("1.00", "EUR");
        gone.active = false;
        let unknown = entry("1.00", "EUR");
        let catalog = HashMap::from([
            (a.product_id, a.clone()),
            (usd.product_id, usd.clone()),
            (gone.product_id, gone.clone()),
        ]);
        let errors = price(
            &[
                line(&a, 1),
                line(&usd, 1),
                line(&gone, 1),
                line(&unknown, 1),
                line(&a, 2),
            ],
            &catalog,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                PricingError::MixedCurrencies { line: 1 },
                PricingError::Unavailable { line: 2 },
                PricingError::UnknownProduct { line: 3 },
                PricingError::Duplicate { line: 4 },
            ]
        );
    }

    #[test]
    fn a_transition_bumps_the_version_and_records_the_reason() {
        let a = entry("1.00", "EUR");
        let now = Utc::now();
        let order = Order {
            id: OrderId::from_ulid(Ulid::new()),
            customer_id: ClientId::from_ulid(Ulid::new()),
            status: OrderStatus::Pending,
            cancellation_reason: None,
            currency: a.currency,
            total: a.price,
            market: "DE".into(),
            shipping_address: Address {
                name: "A".into(),
                line1: "B".into(),
                line2: None,
                city: "C".into(),
                postal_code: "1".into(),
                country: "DE".into(),
            },
            payment_token: "tok_visa".into(),
            attributes: serde_json::json!({}),
            items: Vec::new(),
            idempotency_key: None,
            version: 1,
            created_at: now,
            updated_at: now,
            cancel_requested: None,
        };
        let cancelled = order
            .transition(
                OrderStatus::Cancelled,
                Some(CancellationReason::CustomerCancelled),
                now,
            )
            .unwrap();
        assert_eq!(cancelled.version, 2);
        assert_eq!(
            cancelled.cancellation_reason.as_deref(),
            Some("customer_cancelled")
        );
        assert!(
            cancelled
                .transition(OrderStatus::Cancelled, None, now)
                .is_err()
        );
    }
}

/// An event from another service that may move an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaEvent {
    StockReserved,
    ReservationFailed,
    ReservationExpired,
    PaymentSucceeded,
    PaymentFailed,
    PickedUp,
    Delivered,
    /// Delivery called the shipment off, answering a cancel request.
    ShipmentCancelled,
}

/// What an order does with a saga event, given its current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    Transition(OrderStatus, Option<CancellationReason>),
    /// A duplicate, a late event after a decision, or one another service
    /// compensates for itself.
    Ignore,
    /// It arrived before the event it follows: try again later.
    NotYet,
}

/// The saga's rules, guarded by the current status. Pure and total.
pub fn react(status: OrderStatus, event: SagaEvent) -> Reaction {
    use OrderStatus::*;
    use Reaction::*;
    use SagaEvent::*;
    match (event, status) {
        (StockReserved, Pending) => Transition(Confirmed, None),
        (ReservationFailed, Pending) => Transition(Cancelled, Some(CancellationReason::OutOfStock)),
        // The hold lapsed before the order was shipped: it unwinds, and a
        // payment that landed meanwhile is refunded by payments on
        // order.cancelled.
        (ReservationExpired, Pending | Confirmed | Paid) => {
            Transition(Cancelled, Some(CancellationReason::ReservationExpired))
        }
        (PaymentSucceeded, Confirmed) => Transition(Paid, None),
        (PaymentFailed, Confirmed) => {
            Transition(Cancelled, Some(CancellationReason::PaymentFailed))
        }
        (PaymentSucceeded | PaymentFailed, Pending) => NotYet,
        (PickedUp, Paid) => Transition(Shipped, None),
        (PickedUp, Pending | Confirmed) => NotYet,
        (SagaEvent::Delivered, Shipped) => Transition(OrderStatus::Delivered, None),
        // The answer to a cancel request of a paid order; the reason is the
        // one requested.
        (ShipmentCancelled, Paid) => {
            Transition(Cancelled, Some(CancellationReason::CustomerCancelled))
        }
        (SagaEvent::Delivered, Pending | Confirmed | Paid) => NotYet,
        _ => Ignore,
    }
}

#[cfg(test)]
mod saga_tests {
    use super::*;

    const EVENTS: [SagaEvent; 8] = [
        SagaEvent::ShipmentCancelled,
        SagaEvent::StockReserved,
        SagaEvent::ReservationFailed,
        SagaEvent::ReservationExpired,
        SagaEvent::PaymentSucceeded,
        SagaEvent::PaymentFailed,
        SagaEvent::PickedUp,
        SagaEvent::Delivered,
    ];

    #[test]
    fn every_reaction_is_an_allowed_transition() {
        for status in OrderStatus::ALL {
            for event in EVENTS {
                if let Reaction::Transition(next, reason) = react(status, event) {
                    assert!(status.can_become(next), "{status} -> {next} on {event:?}");
                    assert_eq!(next == OrderStatus::Cancelled, reason.is_some());
                }
            }
        }
    }

    #[test]
    fn a_final_order_ignores_everything() {
        for status in [OrderStatus::Delivered, OrderStatus::Cancelled] {
            for event in EVENTS {
                assert_eq!(react(status, event), Reaction::Ignore, "{status} {event:?}");
            }
        }
    }

    #[test]
    fn a_shipped_order_is_never_cancelled_by_the_saga() {
        for event in EVENTS {
            assert!(!matches!(
                react(OrderStatus::Shipped, event),
                Reaction::Transition(OrderStatus::Cancelled, _)
            ));
        }
    }
}
