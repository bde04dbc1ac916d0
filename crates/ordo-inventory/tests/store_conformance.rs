//! The inventory stores' contract, checked on SQLite and on PostgreSQL with
//! the same tests: each behaviour is an `async fn(Backend)` below, run on
//! both backends by `on_both_backends!`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::Backend;
use ordo_bus::{Envelope, EventContext, EventPayload};
use ordo_events::{
    InventoryCommitted, InventoryReleased, InventoryReservationFailed, InventoryReserved, StockLine,
};
use ordo_inventory::catalog::Product;
use ordo_inventory::stock::{self, EventStamp, ReservationStatus, StockLevel};
use ordo_inventory::{Adjustment, Applied, InboxKey, StockStore};
use ordo_kernel::{ClientId, Currency, EventId, OrderId, ProductId, StoreError};
use rust_decimal::Decimal;
use serde_json::json;
use std::str::FromStr;
use ulid::Ulid;

const CONSUMER: &str = "inventory.orders";

// --- Helpers ----------------------------------------------------------------

/// Now, at the microsecond precision both backends keep.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap()
}

fn seller() -> ClientId {
    ClientId::from_ulid(Ulid::new())
}

fn order() -> OrderId {
    OrderId::from_ulid(Ulid::new())
}

fn product_of(seller: ClientId) -> Product {
    let at = now();
    let id = ProductId::from_ulid(Ulid::new());
    Product {
        id,
        sku: format!("SKU-{id}"),
        name: "Espresso cup".to_owned(),
        price: Decimal::from_str("19.90").unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        seller_id: seller,
        attributes: json!({"colour": "white", "size": {"ml": 90}, "tags": ["porcelain"]}),
        active: true,
        version: 1,
        created_at: at,
        updated_at: at,
        available: 0,
    }
}

fn upserted(p: &Product) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        now(),
        p.id.to_string(),
        Some(p.version),
        &EventContext::from_request("test"),
        &p.upserted(),
    )
    .unwrap()
}

/// A product with `units` in stock.
async fn stocked(b: &Backend, units: i64) -> ProductId {
    let p = product_of(seller());
    let id = p.id;
    b.products
        .insert_all(vec![(p.clone(), upserted(&p))])
        .await
        .unwrap();
    if units > 0 {
        b.stock.adjust(adjustment(id, units)).await.unwrap();
    }
    id
}

fn adjustment(product: ProductId, delta: i64) -> Adjustment {
    Adjustment {
        movement_id: format!("mov_{}", Ulid::new()),
        product,
        delta,
        reason: "restock".to_owned(),
        actor: "seller".to_owned(),
        at: now(),
    }
}

fn stamp() -> EventStamp {
    EventStamp {
        id: EventId::from_ulid(Ulid::new()),
        time: now(),
        context: EventContext::from_request("test"),
        actor: "system:inventory".to_owned(),
    }
}

/// An inbox claim for a fresh event.
fn inbox() -> Option<InboxKey> {
    Some(InboxKey {
        consumer: CONSUMER.to_owned(),
        event_id: EventId::from_ulid(Ulid::new()).to_string(),
    })
}

fn line(product: ProductId, quantity: u32) -> StockLine {
    StockLine {
        product_id: product,
        quantity,
    }
}

/// What order.created does: hold every line or none, for `ttl`.
async fn reserve_for(
    stock: &dyn StockStore,
    order: OrderId,
    lines: Vec<StockLine>,
    ttl: TimeDelta,
    inbox: Option<InboxKey>,
) -> Result<Applied, StoreError> {
    let products = lines.iter().map(|l| l.product_id).collect();
    let expires_at = now() + ttl;
    let stamp = stamp();
    stock
        .decide(
            order,
            products,
            inbox,
            Box::new(move |s| stock::decide_reserve(order, &lines, s, expires_at, &stamp)),
        )
        .await
}

async fn reserve(b: &Backend, order: OrderId, lines: Vec<StockLine>) -> Applied {
    reserve_for(
        b.stock.as_ref(),
        order,
        lines,
        TimeDelta::minutes(30),
        inbox(),
    )
    .await
    .unwrap()
}

async fn allocate(b: &Backend, order: OrderId) -> Applied {
    b.stock
        .decide(order, Vec::new(), inbox(), Box::new(stock::decide_allocate))
        .await
        .unwrap()
}

async fn commit(b: &Backend, order: OrderId) -> Applied {
    let stamp = stamp();
    b.stock
        .decide(
            order,
            Vec::new(),
            inbox(),
            Box::new(move |s| stock::decide_commit(order, s, &stamp)),
        )
        .await
        .unwrap()
}

async fn release_for(
    stock: &dyn StockStore,
    order: OrderId,
    reason: &'static str,
    inbox: Option<InboxKey>,
) -> Result<Applied, StoreError> {
    let stamp = stamp();
    stock
        .decide(
            order,
            Vec::new(),
            inbox,
            Box::new(move |s| stock::decide_release(order, reason, s, &stamp)),
        )
        .await
}

async fn release(b: &Backend, order: OrderId, reason: &'static str) -> Applied {
    release_for(b.stock.as_ref(), order, reason, inbox())
        .await
        .unwrap()
}

async fn level(b: &Backend, product: ProductId) -> StockLevel {
    b.stock.level(product).await.unwrap()
}

/// (available, reserved, allocated, committed), checking the balance.
async fn buckets(b: &Backend, product: ProductId) -> (i64, i64, i64, i64) {
    let l = level(b, product).await;
    assert!(l.balanced(), "unbalanced stock {l:?}");
    (l.available, l.reserved, l.allocated, l.committed)
}

async fn status(b: &Backend, order: OrderId) -> Option<ReservationStatus> {
    b.stock.reservation(order).await.unwrap().map(|r| r.status)
}

/// The types of the events written for `subject`, in order.
async fn event_types(b: &Backend, subject: impl ToString) -> Vec<String> {
    b.outbox
        .events_for_subject(&subject.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

// --- Products ---------------------------------------------------------------

async fn inserted_products_read_back_as_written_with_no_stock(b: Backend) {
    let s = seller();
    let (p, q) = (product_of(s), product_of(s));
    b.products
        .insert_all(vec![(p.clone(), upserted(&p)), (q.clone(), upserted(&q))])
        .await
        .unwrap();
    assert_eq!(b.products.get(p.id).await.unwrap(), p);
    assert_eq!(b.products.get(q.id).await.unwrap(), q);
    assert_eq!(b.products.count().await.unwrap(), 2);
    assert_eq!(level(&b, p.id).await, StockLevel::default());
    assert_eq!(event_types(&b, p.id).await, ["product.upserted.v1"]);
}

async fn the_price_keeps_its_scale_and_the_available_units_follow_the_stock(b: Backend) {
    let mut p = product_of(seller());
    p.price = Decimal::from_str("7.500").unwrap();
    b.products
        .insert_all(vec![(p.clone(), upserted(&p))])
        .await
        .unwrap();
    b.stock.adjust(adjustment(p.id, 12)).await.unwrap();
    let read = b.products.get(p.id).await.unwrap();
    assert_eq!(read.price.to_string(), "7.500");
    assert_eq!(read.available, 12);
}

async fn an_unknown_product_is_not_found(b: Backend) {
    let err = b
        .products
        .get(ProductId::from_ulid(Ulid::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn a_taken_sku_is_a_conflict_and_the_batch_inserts_nothing(b: Backend) {
    let first = product_of(seller());
    b.products
        .insert_all(vec![(first.clone(), upserted(&first))])
        .await
        .unwrap();
    let fresh = product_of(seller());
    let mut clash = product_of(seller());
    clash.sku.clone_from(&first.sku);
    let err = b
        .products
        .insert_all(vec![
            (fresh.clone(), upserted(&fresh)),
            (clash.clone(), upserted(&clash)),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(matches!(
        b.products.get(fresh.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(b.products.count().await.unwrap(), 1);
    assert!(event_types(&b, fresh.id).await.is_empty());
}

async fn products_are_listed_in_id_order_a_page_at_a_time(b: Backend) {
    let mut all: Vec<Product> = (0..5).map(|_| product_of(seller())).collect();
    let batch = all.iter().rev().map(|p| (p.clone(), upserted(p))).collect();
    b.products.insert_all(batch).await.unwrap();
    all.sort_by_key(|p| p.id);
    let first = b.products.list(None, None, 2).await.unwrap();
    assert_eq!(first, all[..2]);
    let second = b.products.list(None, Some(first[1].id), 2).await.unwrap();
    assert_eq!(second, all[2..4]);
    let last = b.products.list(None, Some(second[1].id), 2).await.unwrap();
    assert_eq!(last, all[4..]);
    assert!(
        b.products
            .list(None, Some(all[4].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.products.list(None, None, 10).await.unwrap(), all);
}

async fn a_sellers_list_holds_its_own_products_only(b: Backend) {
    let (mine, theirs) = (seller(), seller());
    let mut own: Vec<Product> = (0..3).map(|_| product_of(mine)).collect();
    let other: Vec<Product> = (0..3).map(|_| product_of(theirs)).collect();
    let batch = own
        .iter()
        .chain(&other)
        .map(|p| (p.clone(), upserted(p)))
        .collect();
    b.products.insert_all(batch).await.unwrap();
    own.sort_by_key(|p| p.id);
    assert_eq!(b.products.list(Some(mine), None, 10).await.unwrap(), own);
    let page = b
        .products
        .list(Some(mine), Some(own[0].id), 1)
        .await
        .unwrap();
    assert_eq!(page, own[1..2]);
    assert!(
        b.products
            .list(Some(seller()), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_update_applies_at_the_expected_version_only(b: Backend) {
    let p = product_of(seller());
    b.products
        .insert_all(vec![(p.clone(), upserted(&p))])
        .await
        .unwrap();
    let mut changed = p.clone();
    changed.name = "Espresso cup, large".to_owned();
    changed.price = Decimal::from_str("21.00").unwrap();
    changed.attributes = json!({"colour": "black"});
    changed.active = false;
    changed.version = 2;
    changed.updated_at = now();
    b.products
        .update(changed.clone(), 1, upserted(&changed))
        .await
        .unwrap();
    assert_eq!(b.products.get(p.id).await.unwrap(), changed);

    // A writer that read version 1 lost the race.
    let mut stale = p.clone();
    stale.version = 2;
    let err = b.products.update(stale, 1, upserted(&p)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(b.products.get(p.id).await.unwrap(), changed);
    assert_eq!(
        event_types(&b, p.id).await,
        ["product.upserted.v1", "product.upserted.v1"]
    );
}

async fn updating_an_unknown_product_is_a_conflict(b: Backend) {
    let p = product_of(seller());
    let err = b
        .products
        .update(p.clone(), 1, upserted(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(event_types(&b, p.id).await.is_empty());
}

// --- Stock levels -----------------------------------------------------------

async fn adjustments_add_and_remove_available_units_never_below_zero(b: Backend) {
    let p = stocked(&b, 0).await;
    let after = b.stock.adjust(adjustment(p, 5)).await.unwrap();
    assert_eq!((after.available, after.adjusted), (5, 5));
    let after = b.stock.adjust(adjustment(p, -3)).await.unwrap();
    assert_eq!((after.available, after.adjusted), (2, 2));
    let err = b.stock.adjust(adjustment(p, -3)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(level(&b, p).await, after);
}

async fn a_repeated_movement_id_is_a_conflict(b: Backend) {
    let p = stocked(&b, 0).await;
    let a = adjustment(p, 4);
    b.stock.adjust(a.clone()).await.unwrap();
    let err = b.stock.adjust(a).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(level(&b, p).await.available, 4);
}

async fn the_stock_of_an_unknown_product_is_not_found(b: Backend) {
    let unknown = ProductId::from_ulid(Ulid::new());
    let err = b.stock.adjust(adjustment(unknown, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = b.stock.level(unknown).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn levels_lists_every_product_in_id_order(b: Backend) {
    let mut ids = Vec::new();
    for units in [3, 0, 7] {
        ids.push((stocked(&b, units).await, units));
    }
    ids.sort();
    let levels = b.stock.levels().await.unwrap();
    let got: Vec<(ProductId, i64)> = levels.iter().map(|(p, l)| (*p, l.available)).collect();
    assert_eq!(got, ids);
}

async fn movements_list_a_products_adjustments_newest_first_up_to_the_limit(b: Backend) {
    let p = stocked(&b, 0).await;
    let other = stocked(&b, 9).await;
    let start = now();
    let at = |secs: i64| start + TimeDelta::seconds(secs);
    let made = [
        ("mov_1", 10, "initial", 0),
        ("mov_2", -4, "correction", 1),
        // Two at the same instant: the later movement id comes first.
        ("mov_3", 5, "restock", 2),
        ("mov_4", 1, "restock", 2),
    ]
    .map(|(id, delta, reason, secs)| Adjustment {
        movement_id: format!("{id}_{p}"),
        product: p,
        delta,
        reason: reason.to_owned(),
        actor: "cli_seller".to_owned(),
        at: at(secs),
    });
    for a in &made {
        b.stock.adjust(a.clone()).await.unwrap();
    }
    // Refused: it would go below zero, so it is no movement.
    let mut refused = adjustment(p, -100);
    refused.at = at(3);
    b.stock.adjust(refused).await.unwrap_err();

    let newest_first: Vec<Adjustment> = made.iter().rev().cloned().collect();
    assert_eq!(b.stock.movements(p, 10).await.unwrap(), newest_first);
    assert_eq!(b.stock.movements(p, 2).await.unwrap(), newest_first[..2]);
    assert!(b.stock.movements(p, 0).await.unwrap().is_empty());
    let others = b.stock.movements(other, 10).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!((others[0].product, others[0].delta), (other, 9));
    let unknown = ProductId::from_ulid(Ulid::new());
    assert!(b.stock.movements(unknown, 10).await.unwrap().is_empty());
}

// --- Reservations -----------------------------------------------------------

async fn a_reservation_holds_every_line_until_it_expires(b: Backend) {
    let (p, q) = (stocked(&b, 5).await, stocked(&b, 5).await);
    let o = order();
    let before = now();
    assert_eq!(
        reserve(&b, o, vec![line(p, 2), line(q, 5)]).await,
        Applied::Done
    );
    assert_eq!(buckets(&b, p).await, (3, 2, 0, 0));
    assert_eq!(buckets(&b, q).await, (0, 5, 0, 0));
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.order_id, o);
    assert_eq!(r.status, ReservationStatus::Active);
    assert_eq!(r.release_reason, None);
    let expires = r.expires_at.unwrap();
    assert!(expires > before + TimeDelta::minutes(29), "{expires}");
    let mut lines = vec![line(p, 2), line(q, 5)];
    lines.sort_by_key(|l| l.product_id);
    assert_eq!(r.lines, lines);
    assert_eq!(event_types(&b, o).await, [InventoryReserved::TYPE]);
    assert_eq!(b.products.get(p).await.unwrap().available, 3);
}

async fn a_reservation_that_cannot_hold_every_line_holds_none(b: Backend) {
    let (p, q) = (stocked(&b, 5).await, stocked(&b, 4).await);
    let o = order();
    assert_eq!(
        reserve(&b, o, vec![line(p, 2), line(q, 5)]).await,
        Applied::Done
    );
    assert_eq!(buckets(&b, p).await, (5, 0, 0, 0));
    assert_eq!(buckets(&b, q).await, (4, 0, 0, 0));
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Failed);
    assert_eq!(r.release_reason.as_deref(), Some("out_of_stock"));
    assert!(r.lines.is_empty() && r.expires_at.is_none());
    let events = b.outbox.events_for_subject(&o.to_string()).await.unwrap();
    let failed: InventoryReservationFailed = events[0].decode().unwrap();
    assert_eq!(failed.products, vec![q]);
    assert_eq!(failed.reason, "out_of_stock");
}

async fn a_reservation_of_an_unknown_product_fails(b: Backend) {
    let p = stocked(&b, 5).await;
    let unknown = ProductId::from_ulid(Ulid::new());
    let o = order();
    reserve(&b, o, vec![line(p, 1), line(unknown, 1)]).await;
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Failed);
    assert_eq!(r.release_reason.as_deref(), Some("unknown_product"));
    assert_eq!(buckets(&b, p).await, (5, 0, 0, 0));
}

async fn a_product_named_on_two_lines_is_held_once_for_their_sum(b: Backend) {
    let p = stocked(&b, 6).await;
    let o = order();
    reserve(&b, o, vec![line(p, 2), line(p, 3)]).await;
    assert_eq!(buckets(&b, p).await, (1, 5, 0, 0));
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.lines, vec![line(p, 5)]);
    release(&b, o, "cancelled").await;
    assert_eq!(buckets(&b, p).await, (6, 0, 0, 0));

    let short = order();
    reserve(&b, short, vec![line(p, 4), line(p, 3)]).await;
    assert_eq!(status(&b, short).await, Some(ReservationStatus::Failed));
    assert_eq!(buckets(&b, p).await, (6, 0, 0, 0));
}

async fn a_paid_hold_is_allocated_then_committed_when_shipped(b: Backend) {
    let p = stocked(&b, 4).await;
    let o = order();
    reserve(&b, o, vec![line(p, 3)]).await;
    assert_eq!(allocate(&b, o).await, Applied::Done);
    assert_eq!(buckets(&b, p).await, (1, 0, 3, 0));
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Allocated);
    assert_eq!(r.expires_at, None, "an allocation does not expire");
    // A second order.paid changes nothing.
    allocate(&b, o).await;
    assert_eq!(buckets(&b, p).await, (1, 0, 3, 0));
    commit(&b, o).await;
    assert_eq!(buckets(&b, p).await, (1, 0, 0, 3));
    assert_eq!(status(&b, o).await, Some(ReservationStatus::Committed));
    commit(&b, o).await;
    release(&b, o, "cancelled").await;
    assert_eq!(buckets(&b, p).await, (1, 0, 0, 3));
    assert_eq!(
        event_types(&b, o).await,
        [InventoryReserved::TYPE, InventoryCommitted::TYPE]
    );
}

async fn a_hold_shipped_before_its_payment_was_seen_is_committed(b: Backend) {
    let p = stocked(&b, 4).await;
    let o = order();
    reserve(&b, o, vec![line(p, 3)]).await;
    commit(&b, o).await;
    assert_eq!(buckets(&b, p).await, (1, 0, 0, 3));
}

async fn a_release_returns_held_and_allocated_units(b: Backend) {
    let p = stocked(&b, 10).await;
    let (held, paid) = (order(), order());
    reserve(&b, held, vec![line(p, 2)]).await;
    reserve(&b, paid, vec![line(p, 3)]).await;
    allocate(&b, paid).await;
    assert_eq!(buckets(&b, p).await, (5, 2, 3, 0));
    release(&b, held, "cancelled").await;
    release(&b, paid, "cancelled").await;
    assert_eq!(buckets(&b, p).await, (10, 0, 0, 0));
    let r = b.stock.reservation(paid).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Released);
    assert_eq!(r.release_reason.as_deref(), Some("cancelled"));
    // Released twice: still released once.
    release(&b, held, "cancelled").await;
    assert_eq!(buckets(&b, p).await, (10, 0, 0, 0));
    let events = b
        .outbox
        .events_for_subject(&held.to_string())
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    let released: InventoryReleased = events[1].decode().unwrap();
    assert_eq!(released.lines, vec![line(p, 2)]);
}

async fn an_expiry_releases_an_unpaid_hold_only(b: Backend) {
    let p = stocked(&b, 10).await;
    let (unpaid, paid) = (order(), order());
    reserve(&b, unpaid, vec![line(p, 2)]).await;
    reserve(&b, paid, vec![line(p, 3)]).await;
    allocate(&b, paid).await;
    release(&b, unpaid, "expired").await;
    release(&b, paid, "expired").await;
    assert_eq!(buckets(&b, p).await, (7, 0, 3, 0));
    let r = b.stock.reservation(unpaid).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.expires_at),
        (ReservationStatus::Released, None)
    );
    assert_eq!(r.release_reason.as_deref(), Some("expired"));
    assert_eq!(status(&b, paid).await, Some(ReservationStatus::Allocated));
}

async fn a_cancel_that_arrives_first_leaves_a_tombstone_no_reservation_passes(b: Backend) {
    let p = stocked(&b, 5).await;
    let o = order();
    assert_eq!(release(&b, o, "cancelled").await, Applied::Done);
    let r = b.stock.reservation(o).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Released);
    assert_eq!(r.release_reason.as_deref(), Some("cancelled"));
    assert!(r.lines.is_empty());
    reserve(&b, o, vec![line(p, 1)]).await;
    assert_eq!(status(&b, o).await, Some(ReservationStatus::Released));
    assert_eq!(buckets(&b, p).await, (5, 0, 0, 0));
    assert!(event_types(&b, o).await.is_empty());
}

async fn an_event_seen_before_is_a_duplicate_and_changes_nothing(b: Backend) {
    let p = stocked(&b, 5).await;
    let o = order();
    let key = inbox();
    let first = reserve_for(
        b.stock.as_ref(),
        o,
        vec![line(p, 2)],
        TimeDelta::minutes(30),
        key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(first, Applied::Done);
    let again = reserve_for(
        b.stock.as_ref(),
        o,
        vec![line(p, 2)],
        TimeDelta::minutes(30),
        key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(again, Applied::Duplicate);
    // The claim is per consumer: another consumer's claim of the same
    // event is its own (and the decision sees the order already served).
    let other = InboxKey {
        consumer: "inventory.other".to_owned(),
        event_id: key.unwrap().event_id,
    };
    let third = reserve_for(
        b.stock.as_ref(),
        o,
        vec![line(p, 2)],
        TimeDelta::minutes(30),
        Some(other),
    )
    .await
    .unwrap();
    assert_eq!(third, Applied::Done);
    assert_eq!(buckets(&b, p).await, (3, 2, 0, 0));
    assert_eq!(event_types(&b, o).await, [InventoryReserved::TYPE]);
}

async fn a_decision_without_an_inbox_claim_is_applied(b: Backend) {
    let p = stocked(&b, 5).await;
    let o = order();
    reserve(&b, o, vec![line(p, 2)]).await;
    let applied = release_for(b.stock.as_ref(), o, "expired", None)
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    assert_eq!(buckets(&b, p).await, (5, 0, 0, 0));
}

async fn the_reservation_of_an_order_never_seen_is_none(b: Backend) {
    assert_eq!(b.stock.reservation(order()).await.unwrap(), None);
}

async fn reservations_lists_every_order_with_its_lines_in_order_id_order(b: Backend) {
    let (p, q) = (stocked(&b, 10).await, stocked(&b, 10).await);
    let mut orders = vec![order(), order(), order()];
    reserve(&b, orders[0], vec![line(q, 1), line(p, 2)]).await;
    reserve(&b, orders[1], vec![line(p, 20)]).await;
    release(&b, orders[2], "cancelled").await;
    let all = b.stock.reservations().await.unwrap();
    let mut expected = Vec::new();
    for o in &orders {
        expected.push(b.stock.reservation(*o).await.unwrap().unwrap());
    }
    orders.sort();
    expected.sort_by_key(|r| r.order_id);
    assert_eq!(all.iter().map(|r| r.order_id).collect::<Vec<_>>(), orders);
    assert_eq!(all, expected);
    assert_eq!(
        all.iter().map(|r| r.lines.len()).sum::<usize>(),
        2,
        "lines stay with their order"
    );
}

async fn expired_lists_the_active_holds_past_their_time_soonest_first(b: Backend) {
    let p = stocked(&b, 100).await;
    let stock = b.stock.as_ref();
    let (late, early, future, paid) = (order(), order(), order(), order());
    for (o, ttl) in [
        (late, TimeDelta::seconds(-10)),
        (early, TimeDelta::seconds(-60)),
        (future, TimeDelta::minutes(5)),
        (paid, TimeDelta::seconds(-120)),
    ] {
        reserve_for(stock, o, vec![line(p, 1)], ttl, inbox())
            .await
            .unwrap();
    }
    allocate(&b, paid).await;
    let t = now();
    assert_eq!(stock.expired(t, 10).await.unwrap(), [early, late]);
    assert_eq!(stock.expired(t, 1).await.unwrap(), [early]);
    assert!(
        stock
            .expired(t - TimeDelta::minutes(5), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let next = stock.next_expiry().await.unwrap().unwrap();
    let early_expiry = stock.reservation(early).await.unwrap().unwrap().expires_at;
    assert_eq!(Some(next), early_expiry);
    release(&b, early, "expired").await;
    release(&b, late, "cancelled").await;
    assert!(stock.expired(t, 10).await.unwrap().is_empty());
    let future_expiry = stock.reservation(future).await.unwrap().unwrap().expires_at;
    assert_eq!(stock.next_expiry().await.unwrap(), future_expiry);
    release(&b, future, "cancelled").await;
    assert_eq!(stock.next_expiry().await.unwrap(), None);
}

// --- Concurrency ------------------------------------------------------------

async fn two_hundred_buyers_of_the_last_ten_units_get_exactly_ten_holds(b: Backend) {
    let p = stocked(&b, 40).await;
    // Thirty units are already sold, so every bucket takes part.
    let earlier = order();
    reserve(&b, earlier, vec![line(p, 30)]).await;
    allocate(&b, earlier).await;
    let stock = b.stock.clone();
    let mut buyers = tokio::task::JoinSet::new();
    let orders: Vec<OrderId> = (0..200).map(|_| order()).collect();
    for o in orders.clone() {
        let stock = stock.clone();
        buyers.spawn(async move {
            reserve_for(
                stock.as_ref(),
                o,
                vec![line(p, 1)],
                TimeDelta::minutes(30),
                inbox(),
            )
            .await
        });
    }
    while let Some(result) = buyers.join_next().await {
        assert_eq!(result.unwrap().unwrap(), Applied::Done);
    }
    let mut held = 0;
    let mut failed = 0;
    for o in &orders {
        match status(&b, *o).await {
            Some(ReservationStatus::Active) => held += 1,
            Some(ReservationStatus::Failed) => failed += 1,
            other => panic!("order {o}: {other:?}"),
        }
    }
    assert_eq!((held, failed), (10, 190));
    let l = level(&b, p).await;
    assert_eq!(
        (l.available, l.reserved, l.allocated, l.committed),
        (0, 10, 30, 0)
    );
    assert_eq!(
        l.available + l.reserved + l.allocated + l.committed,
        40,
        "every unit is in one bucket"
    );
    assert_eq!(l.adjusted, 40);
}

async fn orders_locking_shared_products_in_any_line_order_all_go_through(b: Backend) {
    let mut products = Vec::new();
    for _ in 0..4 {
        products.push(stocked(&b, 1000).await);
    }
    // Each order names every product, starting at a different one and
    // every other order backwards: A B C D, D C B A, C D A B, B A D C, ...
    let lines_of = |i: usize| -> Vec<StockLine> {
        let mut lines: Vec<StockLine> = (0..4)
            .map(|k| line(products[(i + k) % 4], u32::try_from(k + 1).unwrap()))
            .collect();
        if i % 2 == 1 {
            lines.reverse();
        }
        lines
    };
    // A third of the orders are released again, which locks the same rows.
    let released = |i: usize| i.is_multiple_of(3);
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..64usize {
        let (stock, lines) = (b.stock.clone(), lines_of(i));
        buyers.spawn(async move {
            let o = order();
            reserve_for(stock.as_ref(), o, lines, TimeDelta::minutes(30), inbox()).await?;
            if released(i) {
                release_for(stock.as_ref(), o, "cancelled", inbox()).await?;
            }
            Ok::<_, StoreError>(o)
        });
    }
    let mut held = 0;
    while let Some(result) = buyers.join_next().await {
        let o = result
            .unwrap()
            .unwrap_or_else(|e| panic!("a decision failed: {e:?}"));
        assert!(status(&b, o).await.is_some());
        held += 1;
    }
    assert_eq!(held, 64);
    for p in products.iter() {
        let reserved: i64 = (0..64)
            .filter(|i| !released(*i))
            .flat_map(lines_of)
            .filter(|l| l.product_id == *p)
            .map(|l| i64::from(l.quantity))
            .sum();
        assert_eq!(buckets(&b, *p).await, (1000 - reserved, reserved, 0, 0));
    }
}

async fn several_expiry_runs_release_a_hold_once(b: Backend) {
    let p = stocked(&b, 10).await;
    let o = order();
    reserve_for(
        b.stock.as_ref(),
        o,
        vec![line(p, 4)],
        TimeDelta::seconds(-1),
        inbox(),
    )
    .await
    .unwrap();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let stock = b.stock.clone();
        runs.spawn(async move {
            for due in stock.expired(now(), 10).await? {
                release_for(stock.as_ref(), due, "expired", None).await?;
            }
            Ok::<_, StoreError>(())
        });
    }
    while let Some(result) = runs.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(buckets(&b, p).await, (10, 0, 0, 0));
    assert_eq!(
        event_types(&b, o).await,
        [InventoryReserved::TYPE, InventoryReleased::TYPE]
    );
}

on_both_backends!(
    inserted_products_read_back_as_written_with_no_stock,
    the_price_keeps_its_scale_and_the_available_units_follow_the_stock,
    an_unknown_product_is_not_found,
    a_taken_sku_is_a_conflict_and_the_batch_inserts_nothing,
    products_are_listed_in_id_order_a_page_at_a_time,
    a_sellers_list_holds_its_own_products_only,
    an_update_applies_at_the_expected_version_only,
    updating_an_unknown_product_is_a_conflict,
    adjustments_add_and_remove_available_units_never_below_zero,
    a_repeated_movement_id_is_a_conflict,
    the_stock_of_an_unknown_product_is_not_found,
    levels_lists_every_product_in_id_order,
    movements_list_a_products_adjustments_newest_first_up_to_the_limit,
    a_reservation_holds_every_line_until_it_expires,
    a_reservation_that_cannot_hold_every_line_holds_none,
    a_reservation_of_an_unknown_product_fails,
    a_product_named_on_two_lines_is_held_once_for_their_sum,
    a_paid_hold_is_allocated_then_committed_when_shipped,
    a_hold_shipped_before_its_payment_was_seen_is_committed,
    a_release_returns_held_and_allocated_units,
    an_expiry_releases_an_unpaid_hold_only,
    a_cancel_that_arrives_first_leaves_a_tombstone_no_reservation_passes,
    an_event_seen_before_is_a_duplicate_and_changes_nothing,
    a_decision_without_an_inbox_claim_is_applied,
    the_reservation_of_an_order_never_seen_is_none,
    reservations_lists_every_order_with_its_lines_in_order_id_order,
    expired_lists_the_active_holds_past_their_time_soonest_first,
    two_hundred_buyers_of_the_last_ten_units_get_exactly_ten_holds,
    orders_locking_shared_products_in_any_line_order_all_go_through,
    several_expiry_runs_release_a_hold_once,
);
