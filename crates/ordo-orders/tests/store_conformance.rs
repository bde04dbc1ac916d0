//! One behaviour, two backends: every test here runs on SQLite and on
//! PostgreSQL and must pass on both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::Backend;
use ordo_bus::{Applied, Envelope, EventContext, InboxKey};
use ordo_events::{Address, OrderConfirmed};
use ordo_kernel::{ClientId, Currency, EventId, OrderId, ProductId, Quantity, StoreError};
use ordo_orders::PgOrderStore;
use ordo_orders::domain::{CatalogEntry, Order, OrderItem, OrderStatus};
use ordo_orders::store::{OrderFilter, TimelineAppend};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use ulid::Ulid;

on_both_backends!(
    a_created_order_reads_back_exactly_with_its_items,
    creating_an_order_writes_its_event_to_the_outbox,
    an_unknown_order_is_not_found,
    an_idempotency_key_makes_one_order_per_customer,
    a_transition_applies_once_at_the_expected_version,
    a_transition_of_an_unknown_order_is_a_conflict,
    a_duplicate_transition_changes_nothing,
    racing_transitions_from_one_version_apply_exactly_once,
    the_catalog_keeps_the_newest_version_of_each_product,
    the_timeline_numbers_entries_and_skips_duplicates,
    an_early_timeline_event_waits_for_its_predecessor,
    concurrent_timeline_appends_of_one_order_get_distinct_numbers,
    lists_walk_newest_first_in_keyset_pages,
    lists_filter_by_status_customer_and_seller,
    a_seller_sees_an_order_once_however_many_lines_it_sells,
    a_created_range_includes_its_start_and_excludes_its_end,
    created_ranges_combine_with_other_filters_and_the_cursor,
    attribute_filters_match_by_json_containment,
    attribute_filters_combine_with_each_other_and_other_filters,
    a_non_scalar_attribute_filter_is_refused,
    stuck_orders_are_those_unchanged_in_a_status_since_a_time_oldest_first,
    stuck_orders_are_bounded_and_never_final,
    overview_counts_the_orders_of_its_window_by_status_and_reason,
    overview_counts_orders_created_per_bucket,
    overview_latencies_come_from_the_timeline_per_bucket_of_the_step,
);

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// A base instant well in the past, so ranges around it are "history".
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
}

fn client() -> ClientId {
    ClientId::from_ulid(Ulid::new())
}

fn item(seller: ClientId, quantity: i64, price: &str) -> OrderItem {
    let unit_price = Decimal::from_str(price).unwrap();
    OrderItem {
        product_id: ProductId::from_ulid(Ulid::new()),
        sku: "SKU-1".into(),
        name: "Thing".into(),
        seller_id: seller,
        quantity: Quantity::new(quantity).unwrap(),
        unit_price,
        line_total: unit_price * Decimal::from(quantity),
    }
}

/// An order created at `created_at`, its id minted at that instant as the
/// service does.
fn order_at(customer: ClientId, items: Vec<OrderItem>, created_at: DateTime<Utc>) -> Order {
    let ms = u64::try_from(created_at.timestamp_millis()).unwrap();
    Order {
        id: OrderId::from_ulid(Ulid::from_parts(ms, rand_bits())),
        customer_id: customer,
        status: OrderStatus::Pending,
        cancellation_reason: None,
        currency: Currency::parse("EUR").unwrap(),
        total: items.iter().map(|i| i.line_total).sum(),
        market: "DE".into(),
        shipping_address: Address {
            name: "Ada".into(),
            line1: "Main St 1".into(),
            line2: Some("Back door".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        payment_token: "tok_visa".into(),
        attributes: json!({}),
        items,
        idempotency_key: None,
        version: 1,
        created_at,
        updated_at: created_at,
        cancel_requested: None,
    }
}

/// The random part of an id: increasing, as the service's monotonic
/// generator makes it, so that orders minted in one millisecond still sort
/// in the order they were made.
fn rand_bits() -> u128 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) << 16
}

fn order(customer: ClientId) -> Order {
    order_at(customer, vec![item(client(), 2, "19.99")], base())
}

fn event(order: &Order, sequence: i64) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        order.updated_at,
        order.id.to_string(),
        Some(sequence),
        &EventContext::from_request("req-1"),
        &OrderConfirmed {
            order_id: order.id,
            customer_id: order.customer_id,
            total: order.total,
            currency: order.currency,
            payment_token: order.payment_token.clone(),
        },
    )
    .unwrap()
    .with_actor("system:orders")
}

async fn create(b: &Backend, order: &Order) {
    b.store
        .create(order.clone(), event(order, order.version))
        .await
        .unwrap();
}

async fn list(b: &Backend, filter: OrderFilter, limit: usize) -> Vec<OrderId> {
    b.store
        .list(filter, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect()
}

fn ids(orders: &[&Order]) -> Vec<OrderId> {
    orders.iter().map(|o| o.id).collect()
}

fn attrs(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn transitioned(order: &Order, status: OrderStatus) -> Order {
    order
        .transition(status, None, order.updated_at + Duration::seconds(1))
        .unwrap()
}

async fn a_created_order_reads_back_exactly_with_its_items(b: Backend) {
    let seller = client();
    let mut order = order_at(
        client(),
        vec![
            item(seller, 2, "19.99"),
            item(client(), 1, "0.10"),
            item(seller, 3, "1234567.89"),
        ],
        // Microseconds survive the round trip.
        base() + Duration::microseconds(123_456),
    );
    order.attributes = json!({"gift": true, "note": "ring twice", "n": 1.5, "tags": ["a", "b"]});
    order.idempotency_key = Some("key-1".into());
    create(&b, &order).await;
    let read = b.store.get(order.id).await.unwrap();
    assert_eq!(read, order);
    assert_eq!(read.items.len(), 3, "lines come back in their order");
}

async fn creating_an_order_writes_its_event_to_the_outbox(b: Backend) {
    let order = order(client());
    let created = event(&order, 1);
    b.store
        .create(order.clone(), created.clone())
        .await
        .unwrap();
    let events = b
        .outbox
        .events_for_subject(&order.id.to_string())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, created.id);
}

async fn an_unknown_order_is_not_found(b: Backend) {
    let unknown = OrderId::from_ulid(Ulid::new());
    assert!(matches!(
        b.store.get(unknown).await,
        Err(StoreError::NotFound)
    ));
    assert!(b.store.timeline(unknown).await.unwrap().is_empty());
}

async fn an_idempotency_key_makes_one_order_per_customer(b: Backend) {
    let alice = client();
    let mut first = order(alice);
    first.idempotency_key = Some("checkout-1".into());
    create(&b, &first).await;

    let mut again = order(alice);
    again.idempotency_key = Some("checkout-1".into());
    let err = b
        .store
        .create(again.clone(), event(&again, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Nothing of the refused order remains, its event included.
    assert!(matches!(
        b.store.get(again.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        b.outbox
            .events_for_subject(&again.id.to_string())
            .await
            .unwrap()
            .is_empty()
    );

    let found = b
        .store
        .find_by_idempotency_key(alice, "checkout-1")
        .await
        .unwrap();
    assert_eq!(found, Some(first));
    assert_eq!(
        b.store
            .find_by_idempotency_key(alice, "checkout-2")
            .await
            .unwrap(),
        None
    );

    // Keys belong to their customer; orders without one never conflict.
    let bob = client();
    let mut bobs = order(bob);
    bobs.idempotency_key = Some("checkout-1".into());
    create(&b, &bobs).await;
    assert_eq!(
        b.store
            .find_by_idempotency_key(bob, "checkout-1")
            .await
            .unwrap()
            .map(|o| o.id),
        Some(bobs.id)
    );
    create(&b, &order(alice)).await;
    create(&b, &order(alice)).await;
}

async fn a_transition_applies_once_at_the_expected_version(b: Backend) {
    let order = order(client());
    create(&b, &order).await;
    let confirmed = transitioned(&order, OrderStatus::Confirmed);
    let confirmation = event(&confirmed, confirmed.version);
    let applied = b
        .store
        .save_transition(confirmed.clone(), 1, vec![confirmation.clone()], None)
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    assert_eq!(b.store.get(order.id).await.unwrap(), confirmed);
    let events = b
        .outbox
        .events_for_subject(&order.id.to_string())
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().id, confirmation.id);

    // A writer that read version 1 is too late now.
    let mut cancelled = order
        .transition(OrderStatus::Cancelled, None, order.updated_at)
        .unwrap();
    cancelled.cancel_requested = Some("customer_cancelled".into());
    let err = b
        .store
        .save_transition(cancelled, 1, vec![event(&order, 2)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(b.store.get(order.id).await.unwrap(), confirmed);
    assert_eq!(
        b.outbox
            .events_for_subject(&order.id.to_string())
            .await
            .unwrap()
            .len(),
        2,
        "the refused transition's event was not written"
    );

    // Every column a transition changes is saved.
    let mut paid = transitioned(&confirmed, OrderStatus::Paid);
    paid.cancel_requested = Some("customer_cancelled".into());
    b.store
        .save_transition(paid.clone(), 2, vec![], None)
        .await
        .unwrap();
    let cancelled = paid
        .transition(
            OrderStatus::Cancelled,
            Some(ordo_orders::domain::CancellationReason::CustomerCancelled),
            paid.updated_at,
        )
        .unwrap();
    b.store
        .save_transition(cancelled.clone(), 3, vec![], None)
        .await
        .unwrap();
    assert_eq!(b.store.get(order.id).await.unwrap(), cancelled);
}

async fn a_transition_of_an_unknown_order_is_a_conflict(b: Backend) {
    let order = order(client());
    let confirmed = transitioned(&order, OrderStatus::Confirmed);
    let err = b
        .store
        .save_transition(confirmed, 1, vec![], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

async fn a_duplicate_transition_changes_nothing(b: Backend) {
    let order = order(client());
    create(&b, &order).await;
    let confirmed = transitioned(&order, OrderStatus::Confirmed);
    let cause = event(&order, 1);
    let inbox = InboxKey::new("orders.saga", &cause);
    assert_eq!(
        b.store
            .save_transition(
                confirmed.clone(),
                1,
                vec![event(&confirmed, 2)],
                Some(inbox.clone())
            )
            .await
            .unwrap(),
        Applied::Done
    );
    // Redelivered: even at the version it would now need, it is a no-op.
    let paid = transitioned(&confirmed, OrderStatus::Paid);
    assert_eq!(
        b.store
            .save_transition(paid, 2, vec![event(&confirmed, 3)], Some(inbox))
            .await
            .unwrap(),
        Applied::Duplicate
    );
    assert_eq!(b.store.get(order.id).await.unwrap(), confirmed);
    assert_eq!(
        b.outbox
            .events_for_subject(&order.id.to_string())
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn racing_transitions_from_one_version_apply_exactly_once(b: Backend) {
    let order = order(client());
    create(&b, &order).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = b.store.clone();
            let next = if i % 2 == 0 {
                transitioned(&order, OrderStatus::Confirmed)
            } else {
                transitioned(&order, OrderStatus::Cancelled)
            };
            let events = vec![event(&next, 2)];
            tokio::spawn(async move { store.save_transition(next, 1, events, None).await })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Applied::Done) => done += 1,
            Err(StoreError::Conflict(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(done, 1);
    assert_eq!(b.store.get(order.id).await.unwrap().version, 2);
    assert_eq!(
        b.outbox
            .events_for_subject(&order.id.to_string())
            .await
            .unwrap()
            .len(),
        2
    );
}

fn catalog_entry(version: i64, price: &str) -> CatalogEntry {
    CatalogEntry {
        product_id: ProductId::from_ulid(Ulid::new()),
        sku: "SKU-9".into(),
        name: "Lamp".into(),
        price: Decimal::from_str(price).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        seller_id: client(),
        active: true,
        version,
    }
}

/// The inbox claim of a fresh `product.upserted`.
fn upserted() -> InboxKey {
    InboxKey {
        consumer: "orders.catalog".into(),
        event_id: format!("evt_{}", Ulid::new()),
    }
}

async fn the_catalog_keeps_the_newest_version_of_each_product(b: Backend) {
    let v2 = catalog_entry(2, "9.99");
    let other = catalog_entry(1, "1.00");
    let key = upserted();
    assert_eq!(
        b.store
            .upsert_catalog(v2.clone(), key.clone())
            .await
            .unwrap(),
        Applied::Done
    );
    assert_eq!(
        b.store.upsert_catalog(v2.clone(), key).await.unwrap(),
        Applied::Duplicate
    );
    b.store
        .upsert_catalog(other.clone(), upserted())
        .await
        .unwrap();

    // A late, older version changes nothing; a newer one replaces it.
    let v1 = CatalogEntry {
        version: 1,
        price: Decimal::from_str("5.00").unwrap(),
        ..v2.clone()
    };
    b.store.upsert_catalog(v1, upserted()).await.unwrap();
    let unknown = ProductId::from_ulid(Ulid::new());
    let found = b
        .store
        .catalog(vec![v2.product_id, other.product_id, unknown])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&v2.product_id], v2);
    assert_eq!(found[&other.product_id], other);

    let v3 = CatalogEntry {
        version: 3,
        price: Decimal::from_str("12.50").unwrap(),
        active: false,
        name: "Lamp XL".into(),
        ..v2.clone()
    };
    b.store
        .upsert_catalog(v3.clone(), upserted())
        .await
        .unwrap();
    let found = b.store.catalog(vec![v2.product_id]).await.unwrap();
    assert_eq!(found[&v2.product_id], v3);
    assert!(b.store.catalog(vec![]).await.unwrap().is_empty());
}

fn timeline_key(event: &Envelope) -> InboxKey {
    InboxKey::new("orders.timeline", event)
}

async fn the_timeline_numbers_entries_and_skips_duplicates(b: Backend) {
    let order = order(client());
    let first = event(&order, 1);
    let second = event(&order, 2);
    for e in [&first, &second] {
        assert_eq!(
            b.store
                .append_timeline(order.id, (*e).clone(), None, timeline_key(e))
                .await
                .unwrap(),
            TimelineAppend::Appended
        );
    }
    // Redelivered to the same consumer: the inbox knows it.
    assert_eq!(
        b.store
            .append_timeline(order.id, first.clone(), None, timeline_key(&first))
            .await
            .unwrap(),
        TimelineAppend::Duplicate
    );
    // The same event under another claim: the timeline itself knows it.
    assert_eq!(
        b.store
            .append_timeline(
                order.id,
                first.clone(),
                None,
                InboxKey::new("orders.timeline.replay", &first)
            )
            .await
            .unwrap(),
        TimelineAppend::Duplicate
    );
    let timeline = b.store.timeline(order.id).await.unwrap();
    assert_eq!(timeline.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let entry = &timeline[0];
    assert_eq!(entry.event_id, first.id.to_string());
    assert_eq!(entry.event_type, first.name());
    assert_eq!(entry.at, first.time);
    assert_eq!(entry.actor.as_deref(), Some("system:orders"));
    assert_eq!(entry.correlation_id, "req-1");
    assert_eq!(
        entry.data,
        serde_json::from_str::<Value>(first.data.get()).unwrap()
    );
    // Another order's timeline starts at 1.
    let other = event(&order_at(client(), vec![], base()), 1);
    let other_id = OrderId::parse(&other.subject).unwrap();
    b.store
        .append_timeline(other_id, other.clone(), None, timeline_key(&other))
        .await
        .unwrap();
    assert_eq!(b.store.timeline(other_id).await.unwrap()[0].seq, 1);
}

async fn an_early_timeline_event_waits_for_its_predecessor(b: Backend) {
    let order = order(client());
    let first = event(&order, 1);
    let second = event(&order, 2);
    assert_eq!(
        b.store
            .append_timeline(order.id, second.clone(), Some(1), timeline_key(&second))
            .await
            .unwrap(),
        TimelineAppend::Early
    );
    assert!(b.store.timeline(order.id).await.unwrap().is_empty());
    b.store
        .append_timeline(order.id, first.clone(), None, timeline_key(&first))
        .await
        .unwrap();
    // The retry is not taken for a duplicate: the early try left no trace.
    assert_eq!(
        b.store
            .append_timeline(order.id, second.clone(), Some(1), timeline_key(&second))
            .await
            .unwrap(),
        TimelineAppend::Appended
    );
    let types: Vec<String> = b
        .store
        .timeline(order.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(types, [first.id.to_string(), second.id.to_string()]);
}

async fn concurrent_timeline_appends_of_one_order_get_distinct_numbers(b: Backend) {
    let order = order(client());
    let id = order.id;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = b.store.clone();
            let e = event(&order, i + 1);
            tokio::spawn(async move {
                store
                    .append_timeline(id, e.clone(), None, timeline_key(&e))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), TimelineAppend::Appended);
    }
    let seqs: Vec<i64> = b
        .store
        .timeline(order.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
}

/// `n` orders of `customer`, a minute apart from `base()`, oldest first.
async fn history(b: &Backend, customer: ClientId, n: i64) -> Vec<Order> {
    let mut orders = Vec::new();
    for i in 0..n {
        let o = order_at(
            customer,
            vec![item(client(), 1, "1.00")],
            base() + Duration::minutes(i),
        );
        create(b, &o).await;
        orders.push(o);
    }
    orders
}

async fn lists_walk_newest_first_in_keyset_pages(b: Backend) {
    let orders = history(&b, client(), 7).await;
    let mut newest_first: Vec<OrderId> = orders.iter().map(|o| o.id).collect();
    newest_first.reverse();
    assert_eq!(list(&b, OrderFilter::default(), 100).await, newest_first);

    let mut seen: Vec<OrderId> = Vec::new();
    let mut before = None;
    loop {
        let page = list(
            &b,
            OrderFilter {
                before,
                ..OrderFilter::default()
            },
            3,
        )
        .await;
        assert!(page.len() <= 3);
        seen.extend(&page);
        if page.len() < 3 {
            break;
        }
        before = page.last().copied();
    }
    assert_eq!(seen, newest_first);

    // Pages carry their items.
    let page = b.store.list(OrderFilter::default(), 2).await.unwrap();
    assert_eq!(page[0], orders[6]);
    assert_eq!(page[1], orders[5]);
}

async fn lists_filter_by_status_customer_and_seller(b: Backend) {
    let (alice, bob, seller) = (client(), client(), client());
    let a1 = order_at(alice, vec![item(seller, 1, "1.00")], base());
    let a2 = order_at(
        alice,
        vec![item(client(), 1, "1.00")],
        base() + Duration::minutes(1),
    );
    let b1 = order_at(
        bob,
        vec![item(seller, 1, "1.00")],
        base() + Duration::minutes(2),
    );
    for o in [&a1, &a2, &b1] {
        create(&b, o).await;
    }
    let confirmed = transitioned(&a1, OrderStatus::Confirmed);
    b.store
        .save_transition(confirmed, 1, vec![], None)
        .await
        .unwrap();

    let by = |f: OrderFilter| list(&b, f, 50);
    assert_eq!(
        by(OrderFilter {
            customer: Some(alice),
            ..Default::default()
        })
        .await,
        ids(&[&a2, &a1])
    );
    assert_eq!(
        by(OrderFilter {
            seller: Some(seller),
            ..Default::default()
        })
        .await,
        ids(&[&b1, &a1])
    );
    assert_eq!(
        by(OrderFilter {
            status: Some(OrderStatus::Pending),
            ..Default::default()
        })
        .await,
        ids(&[&b1, &a2])
    );
    assert_eq!(
        by(OrderFilter {
            status: Some(OrderStatus::Confirmed),
            seller: Some(seller),
            ..Default::default()
        })
        .await,
        ids(&[&a1])
    );
    assert_eq!(
        by(OrderFilter {
            customer: Some(bob),
            seller: Some(seller),
            before: Some(b1.id),
            ..Default::default()
        })
        .await,
        vec![]
    );
    assert_eq!(
        by(OrderFilter {
            seller: Some(seller),
            before: Some(b1.id),
            ..Default::default()
        })
        .await,
        ids(&[&a1])
    );
    assert_eq!(
        by(OrderFilter {
            customer: Some(client()),
            ..Default::default()
        })
        .await,
        vec![]
    );
}

async fn a_seller_sees_an_order_once_however_many_lines_it_sells(b: Backend) {
    let seller = client();
    let older = order_at(client(), vec![item(seller, 1, "1.00")], base());
    let both = order_at(
        client(),
        vec![
            item(seller, 1, "1.00"),
            item(client(), 1, "2.00"),
            item(seller, 2, "3.00"),
        ],
        base() + Duration::minutes(1),
    );
    create(&b, &older).await;
    create(&b, &both).await;
    let page = b
        .store
        .list(
            OrderFilter {
                seller: Some(seller),
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        page,
        std::slice::from_ref(&both),
        "the whole order, every line"
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                seller: Some(seller),
                ..Default::default()
            },
            10
        )
        .await,
        ids(&[&both, &older])
    );
}

async fn a_created_range_includes_its_start_and_excludes_its_end(b: Backend) {
    let customer = client();
    let from = base();
    let to = base() + Duration::hours(1);
    // Around each bound, a few microseconds and milliseconds apart: closer
    // than any id-derived shortcut could tell apart.
    let instants = [
        from - Duration::milliseconds(1),
        from - Duration::microseconds(1),
        from,
        from + Duration::microseconds(1),
        to - Duration::microseconds(1),
        to,
        to + Duration::milliseconds(1),
    ];
    let mut orders = Vec::new();
    for t in instants {
        let o = order_at(customer, vec![item(client(), 1, "1.00")], t);
        create(&b, &o).await;
        orders.push(o);
    }
    let range = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| OrderFilter {
        created_from: from,
        created_to: to,
        ..Default::default()
    };
    assert_eq!(
        list(&b, range(Some(from), Some(to)), 50).await,
        ids(&[&orders[4], &orders[3], &orders[2]])
    );
    assert_eq!(
        list(&b, range(Some(from), None), 50).await,
        ids(&[&orders[6], &orders[5], &orders[4], &orders[3], &orders[2]])
    );
    assert_eq!(
        list(&b, range(None, Some(from)), 50).await,
        ids(&[&orders[1], &orders[0]])
    );
    assert_eq!(list(&b, range(Some(to), Some(from)), 50).await, vec![]);
    // Far outside what ids can encode, the range still answers.
    assert_eq!(
        list(
            &b,
            range(Some(at(-86_400_000)), Some(at(253_402_300_799_000))),
            50
        )
        .await
        .len(),
        7
    );
}

async fn created_ranges_combine_with_other_filters_and_the_cursor(b: Backend) {
    let (customer, seller) = (client(), client());
    let mut orders = Vec::new();
    // One order a day for ten days; every other one sold by `seller`.
    for day in 0..10 {
        let sold_by = if day % 2 == 0 { seller } else { client() };
        let o = order_at(
            customer,
            vec![item(sold_by, 1, "1.00")],
            base() + Duration::days(day),
        );
        create(&b, &o).await;
        orders.push(o);
    }
    let paid = transitioned(
        &transitioned(&orders[4], OrderStatus::Confirmed),
        OrderStatus::Paid,
    );
    b.store
        .save_transition(
            transitioned(&orders[4], OrderStatus::Confirmed),
            1,
            vec![],
            None,
        )
        .await
        .unwrap();
    b.store
        .save_transition(paid, 2, vec![], None)
        .await
        .unwrap();

    let window = OrderFilter {
        created_from: Some(base() + Duration::days(2)),
        created_to: Some(base() + Duration::days(8)),
        ..Default::default()
    };
    assert_eq!(
        list(&b, window.clone(), 50).await,
        ids(&[
            &orders[7], &orders[6], &orders[5], &orders[4], &orders[3], &orders[2]
        ])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                before: Some(orders[5].id),
                ..window.clone()
            },
            2
        )
        .await,
        ids(&[&orders[4], &orders[3]])
    );
    // A cursor newer than the range's end is no different from none.
    assert_eq!(
        list(
            &b,
            OrderFilter {
                before: Some(orders[9].id),
                ..window.clone()
            },
            1
        )
        .await,
        ids(&[&orders[7]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                seller: Some(seller),
                ..window.clone()
            },
            50
        )
        .await,
        ids(&[&orders[6], &orders[4], &orders[2]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                seller: Some(seller),
                before: Some(orders[6].id),
                ..window.clone()
            },
            50
        )
        .await,
        ids(&[&orders[4], &orders[2]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                status: Some(OrderStatus::Paid),
                ..window.clone()
            },
            50
        )
        .await,
        ids(&[&orders[4]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                customer: Some(customer),
                ..window.clone()
            },
            50
        )
        .await
        .len(),
        6
    );
}

/// Orders with these attributes, oldest first.
async fn with_attributes(b: &Backend, all: &[Value]) -> Vec<Order> {
    let mut orders = Vec::new();
    for (i, attributes) in all.iter().enumerate() {
        let mut o = order_at(
            client(),
            vec![item(client(), 1, "1.00")],
            base() + Duration::minutes(i64::try_from(i).unwrap()),
        );
        o.attributes = attributes.clone();
        create(b, &o).await;
        orders.push(o);
    }
    orders
}

async fn attribute_filters_match_by_json_containment(b: Backend) {
    let o = with_attributes(
        &b,
        &[
            json!({}),
            json!({"gift": true, "channel": "web"}),
            json!({"gift": false, "channel": "app", "n": 1}),
            json!({"gift": "true", "n": 1.0, "note": null}),
            json!({"n": 2.5, "tags": ["web"], "nested": {"channel": "web"}}),
            json!({"n": "1", "code": "01234", "odd key\"": "x", "dotted.key": "y", "empty": ""}),
            json!({"big": 12_345_678_901_i64, "neg": -3, "zero": 0}),
        ],
    )
    .await;
    let matching = |filter: Value| {
        let b = &b;
        async move {
            list(
                b,
                OrderFilter {
                    attributes: attrs(filter),
                    ..Default::default()
                },
                50,
            )
            .await
        }
    };
    assert_eq!(matching(json!({"gift": true})).await, ids(&[&o[1]]));
    assert_eq!(matching(json!({"gift": false})).await, ids(&[&o[2]]));
    assert_eq!(matching(json!({"gift": "true"})).await, ids(&[&o[3]]));
    assert_eq!(
        matching(json!({"channel": "web"})).await,
        ids(&[&o[1]]),
        "not nested, not in arrays"
    );
    // Numbers match by value, never a string that looks like one.
    assert_eq!(matching(json!({"n": 1})).await, ids(&[&o[3], &o[2]]));
    assert_eq!(matching(json!({"n": 1.0})).await, ids(&[&o[3], &o[2]]));
    assert_eq!(matching(json!({"n": 2.5})).await, ids(&[&o[4]]));
    assert_eq!(matching(json!({"n": "1"})).await, ids(&[&o[5]]));
    assert_eq!(
        matching(json!({"big": 12_345_678_901_i64})).await,
        ids(&[&o[6]])
    );
    assert_eq!(matching(json!({"neg": -3})).await, ids(&[&o[6]]));
    assert_eq!(matching(json!({"zero": 0})).await, ids(&[&o[6]]));
    assert_eq!(matching(json!({"zero": false})).await, vec![]);
    // A JSON null is a value; a missing key is not.
    assert_eq!(matching(json!({"note": null})).await, ids(&[&o[3]]));
    assert_eq!(matching(json!({"missing": null})).await, vec![]);
    assert_eq!(matching(json!({"code": "01234"})).await, ids(&[&o[5]]));
    assert_eq!(matching(json!({"code": 1234})).await, vec![]);
    assert_eq!(matching(json!({"empty": ""})).await, ids(&[&o[5]]));
    assert_eq!(matching(json!({"odd key\"": "x"})).await, ids(&[&o[5]]));
    assert_eq!(matching(json!({"dotted.key": "y"})).await, ids(&[&o[5]]));
    assert_eq!(matching(json!({"channel": "fax"})).await, vec![]);
    assert_eq!(
        matching(json!({"Channel": "web"})).await,
        vec![],
        "keys are case-sensitive"
    );
    assert_eq!(
        matching(json!({"channel": "Web"})).await,
        vec![],
        "values too"
    );
    assert_eq!(matching(json!({})).await.len(), o.len());
}

async fn attribute_filters_combine_with_each_other_and_other_filters(b: Backend) {
    let o = with_attributes(
        &b,
        &[
            json!({"gift": true, "channel": "web"}),
            json!({"gift": true, "channel": "app"}),
            json!({"gift": true, "channel": "web", "campaign": "spring"}),
            json!({"gift": false, "channel": "web"}),
        ],
    )
    .await;
    let filter = |attributes: Value| OrderFilter {
        attributes: attrs(attributes),
        ..Default::default()
    };
    assert_eq!(
        list(&b, filter(json!({"gift": true, "channel": "web"})), 50).await,
        ids(&[&o[2], &o[0]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                before: Some(o[2].id),
                ..filter(json!({"gift": true, "channel": "web"}))
            },
            50
        )
        .await,
        ids(&[&o[0]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                customer: Some(o[1].customer_id),
                ..filter(json!({"gift": true}))
            },
            50
        )
        .await,
        ids(&[&o[1]])
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                seller: Some(o[3].items[0].seller_id),
                ..filter(json!({"gift": true}))
            },
            50
        )
        .await,
        vec![]
    );
    assert_eq!(
        list(
            &b,
            OrderFilter {
                status: Some(OrderStatus::Pending),
                created_from: Some(base() + Duration::minutes(1)),
                ..filter(json!({"channel": "web"}))
            },
            50
        )
        .await,
        ids(&[&o[3], &o[2]])
    );
}

async fn a_non_scalar_attribute_filter_is_refused(b: Backend) {
    with_attributes(&b, &[json!({"tags": ["a"], "address": {"city": "Berlin"}})]).await;
    for filter in [
        json!({"tags": ["a"]}),
        json!({"address": {"city": "Berlin"}}),
    ] {
        let err = b
            .store
            .list(
                OrderFilter {
                    attributes: attrs(filter),
                    ..Default::default()
                },
                50,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    }
}

#[test]
fn orders_minted_in_one_millisecond_sort_in_minting_order() {
    let a = order_at(client(), vec![], base());
    let b = order_at(client(), vec![], base() + Duration::microseconds(1));
    assert!(a.id < b.id);
}

/// The pgbench scripts of the benchmark ceiling are the store's own
/// statements: pgbench runs them without a failure, and what they write
/// reads back through the store as orders like the one they were made of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_the_stores_create_and_get_statements() {
    let Some(b) = common::postgres().await else {
        return;
    };
    let url = b.database_url.clone().unwrap();
    let placed = order(client());
    create(&b, &placed).await;
    let dir = tempfile::tempdir().unwrap();
    let scripts = [
        (
            "create.sql",
            PgOrderStore::pgbench_create(&placed, &event(&placed, 1)).unwrap(),
        ),
        ("get.sql", PgOrderStore::pgbench_get(placed.id).unwrap()),
    ];
    for (name, script) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("pgbench")
            .env("PGOPTIONS", "-c search_path=orders")
            .args(["--no-vacuum", "--protocol", "prepared", "--client", "2"])
            .args(["--transactions", "25", "--file"])
            .arg(&path)
            .arg(&url)
            .output()
            .expect("pgbench (from PostgreSQL's client tools) runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("number of failed transactions: 0 "),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = list(&b, OrderFilter::default(), 100).await;
    assert_eq!(all.len(), 51, "the order placed and 2 × 25 from pgbench");
    for id in all {
        let read = b.store.get(id).await.unwrap();
        assert_eq!(read.items, placed.items);
        assert_eq!(read.total, placed.total);
        assert_eq!(read.status, placed.status);
    }
    assert_eq!(b.outbox.backlog().await.unwrap(), 51);
}

/// `order` moved to `status` at `at`, saved.
async fn moved(b: &Backend, order: &Order, status: OrderStatus, at: DateTime<Utc>) -> Order {
    let next = order.transition(status, None, at).unwrap();
    b.store
        .save_transition(next.clone(), order.version, vec![], None)
        .await
        .unwrap();
    next
}

async fn unchanged_since(
    b: &Backend,
    status: OrderStatus,
    before: DateTime<Utc>,
    limit: usize,
) -> Vec<OrderId> {
    b.store
        .unchanged_since(status, before, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect()
}

async fn stuck_orders_are_those_unchanged_in_a_status_since_a_time_oldest_first(b: Backend) {
    let t = base();
    let minutes = Duration::minutes;
    // Created in this order; confirmed in another, so that the age of the
    // status, not the age of the order, decides.
    let first = order_at(client(), vec![item(client(), 1, "1.00")], t);
    let second = order_at(client(), vec![item(client(), 1, "1.00")], t + minutes(1));
    let third = order_at(client(), vec![item(client(), 1, "1.00")], t + minutes(2));
    let pending = order_at(client(), vec![item(client(), 1, "1.00")], t + minutes(3));
    for o in [&first, &second, &third, &pending] {
        create(&b, o).await;
    }
    let first = moved(&b, &first, OrderStatus::Confirmed, t + minutes(30)).await;
    moved(&b, &second, OrderStatus::Confirmed, t + minutes(10)).await;
    let third = moved(&b, &third, OrderStatus::Confirmed, t + minutes(20)).await;
    // Moved on: no longer confirmed, whatever its age.
    moved(&b, &third, OrderStatus::Paid, t + minutes(21)).await;

    assert_eq!(
        unchanged_since(&b, OrderStatus::Confirmed, t + minutes(31), 10).await,
        vec![second.id, first.id],
        "the longest waiting first"
    );
    assert_eq!(
        unchanged_since(&b, OrderStatus::Confirmed, t + minutes(30), 10).await,
        vec![second.id],
        "a change at the instant itself is not older than it"
    );
    assert_eq!(
        unchanged_since(&b, OrderStatus::Confirmed, t + minutes(10), 10).await,
        vec![]
    );
    assert_eq!(
        unchanged_since(&b, OrderStatus::Pending, t + minutes(31), 10).await,
        vec![pending.id]
    );
    assert_eq!(
        unchanged_since(&b, OrderStatus::Paid, t + minutes(22), 10).await,
        vec![third.id]
    );
    // The orders come whole, items included.
    let found = b
        .store
        .unchanged_since(OrderStatus::Confirmed, t + minutes(31), 10)
        .await
        .unwrap();
    assert_eq!(found[1], first);
}

async fn stuck_orders_are_bounded_and_never_final(b: Backend) {
    let t = base();
    let mut orders = Vec::new();
    for i in 0..5 {
        let o = order_at(
            client(),
            vec![item(client(), 1, "1.00")],
            t + Duration::seconds(i),
        );
        create(&b, &o).await;
        orders.push(o);
    }
    let late = t + Duration::hours(1);
    assert_eq!(
        unchanged_since(&b, OrderStatus::Pending, late, 3).await,
        ids(&[&orders[0], &orders[1], &orders[2]])
    );
    let cancelled = orders[0]
        .transition(
            OrderStatus::Cancelled,
            Some(ordo_orders::domain::CancellationReason::CustomerCancelled),
            t + Duration::minutes(1),
        )
        .unwrap();
    b.store
        .save_transition(cancelled, 1, vec![], None)
        .await
        .unwrap();
    assert_eq!(
        unchanged_since(&b, OrderStatus::Cancelled, late, 10).await,
        vec![],
        "a final status is never stuck"
    );
    assert_eq!(
        unchanged_since(&b, OrderStatus::Pending, late, 10).await,
        ids(&[&orders[1], &orders[2], &orders[3], &orders[4]])
    );
}

// --- The admin overview ------------------------------------------------------

async fn cancelled(b: &Backend, order: &Order, reason: ordo_orders::domain::CancellationReason) {
    let next = order
        .transition(
            OrderStatus::Cancelled,
            Some(reason),
            order.updated_at + Duration::seconds(1),
        )
        .unwrap();
    b.store
        .save_transition(next, order.version, vec![], None)
        .await
        .unwrap();
}

/// `order`'s timeline gets an entry of `event_type` (`order.paid.v1`) at
/// `at`.
async fn step(b: &Backend, order: &Order, event_type: &str, at: DateTime<Utc>) {
    let mut e = event(order, 1);
    e.event_type = event_type.to_owned();
    e.time = at;
    b.store
        .append_timeline(order.id, e.clone(), None, timeline_key(&e))
        .await
        .unwrap();
}

async fn overview_counts_the_orders_of_its_window_by_status_and_reason(b: Backend) {
    use ordo_orders::domain::CancellationReason::{OutOfStock, PaymentFailed};
    let t = base();
    let seconds = Duration::seconds;
    let make = |offset: i64| {
        order_at(
            client(),
            vec![item(client(), 1, "1.00")],
            t + seconds(offset),
        )
    };
    let (a, c, d, e, f) = (make(10), make(70), make(80), make(90), make(100));
    // Before the window: counted nowhere, though cancelled.
    let old = make(-3600);
    for o in [&a, &c, &d, &e, &f, &old] {
        create(&b, o).await;
    }
    moved(&b, &c, OrderStatus::Confirmed, t + seconds(75)).await;
    cancelled(&b, &d, OutOfStock).await;
    cancelled(&b, &e, PaymentFailed).await;
    cancelled(&b, &f, OutOfStock).await;
    cancelled(&b, &old, PaymentFailed).await;

    let mut counts = b.store.counts_by_status(t).await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        [
            (OrderStatus::Cancelled, 3),
            (OrderStatus::Confirmed, 1),
            (OrderStatus::Pending, 1)
        ]
    );
    assert_eq!(
        b.store.cancellations_by_reason(t).await.unwrap(),
        [
            ("out_of_stock".to_owned(), 2),
            ("payment_failed".to_owned(), 1)
        ],
        "the most frequent first"
    );
    // The window's start is included, what came before is not.
    let later = t + seconds(90);
    assert_eq!(
        b.store.counts_by_status(later).await.unwrap(),
        [(OrderStatus::Cancelled, 2)]
    );
    assert_eq!(
        b.store
            .cancellations_by_reason(t + seconds(101))
            .await
            .unwrap(),
        []
    );
}

async fn overview_counts_orders_created_per_bucket(b: Backend) {
    let t = base();
    let minute = std::time::Duration::from_secs(60);
    for offset in [-1, 0, 10, 59, 60, 61, 185] {
        let o = order_at(
            client(),
            vec![item(client(), 1, "1.00")],
            t + Duration::seconds(offset),
        );
        create(&b, &o).await;
    }
    let buckets = b.store.created_per_bucket(t, minute).await.unwrap();
    let seen: Vec<(DateTime<Utc>, u64)> = buckets.iter().map(|b| (b.start, b.count)).collect();
    assert_eq!(
        seen,
        [
            (t, 3),
            (t + Duration::seconds(60), 2),
            (t + Duration::seconds(180), 1)
        ],
        "buckets begin at whole minutes; empty ones are left out"
    );
}

async fn overview_latencies_come_from_the_timeline_per_bucket_of_the_step(b: Backend) {
    let t = base();
    let s = Duration::seconds;
    let make = |offset: i64| order_at(client(), vec![item(client(), 1, "1.00")], t + s(offset));
    let (p1, p2, p3, unpaid) = (make(0), make(10), make(20), make(25));
    // Created before the window: left out, though paid within it.
    let early = make(-10);
    for o in [&p1, &p2, &p3, &unpaid, &early] {
        create(&b, o).await;
    }
    step(&b, &p1, "order.paid.v1", t + s(30)).await;
    step(&b, &p2, "order.paid.v1", t + s(50)).await;
    step(&b, &p3, "order.paid.v1", t + s(80)).await;
    step(&b, &early, "order.paid.v1", t + s(5)).await;
    step(&b, &p1, "order.shipped.v1", t + s(90)).await;
    step(&b, &p2, "order.shipped.v1", t + s(200)).await;
    // Another step of the saga does not count.
    step(&b, &unpaid, "order.confirmed.v1", t + s(26)).await;

    let latencies = b
        .store
        .stage_latencies(t, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let summary =
        |buckets: &[ordo_orders::store::LatencyBucket]| -> Vec<(DateTime<Utc>, u64, f64, f64)> {
            buckets
                .iter()
                .map(|b| (b.start, b.count, b.p50_seconds, b.p95_seconds))
                .collect()
        };
    let close = |got: Vec<(DateTime<Utc>, u64, f64, f64)>,
                 want: Vec<(DateTime<Utc>, u64, f64, f64)>| {
        assert_eq!(got.len(), want.len(), "{got:?} != {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1), (w.0, w.1), "{got:?} != {want:?}");
            assert!(
                (g.2 - w.2).abs() < 1e-6 && (g.3 - w.3).abs() < 1e-6,
                "{got:?} != {want:?}"
            );
        }
    };
    // Paid after 30 s and 40 s in the first minute, 60 s in the second.
    close(
        summary(&latencies.create_to_paid),
        vec![(t, 2, 35.0, 39.5), (t + s(60), 1, 60.0, 60.0)],
    );
    // Shipped 60 s after payment in the second minute, 150 s in the fourth.
    close(
        summary(&latencies.paid_to_shipped),
        vec![(t + s(60), 1, 60.0, 60.0), (t + s(180), 1, 150.0, 150.0)],
    );
}
