//! The shipment store's contract, checked on SQLite and on PostgreSQL with
//! the same tests: each behaviour is an `async fn(Backend)` below, run on
//! both backends by `on_both_backends!`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::Backend;
use ordo_bus::{Envelope, EventContext};
use ordo_delivery::domain::{
    CourierEventKind, CourierLogEntry, Parcel, ParcelId, Shipment, ShipmentId, ShipmentStatus,
    Waypoint, WaypointKind,
};
use ordo_delivery::store::{Applied, Creation, InboxKey, ShipmentStore, ShipmentSummary};
use ordo_events::{OrderCancelled, ShipmentCancelled, StockLine};
use ordo_kernel::{ClientId, EventId, OrderId, ProductId, StoreError};
use ulid::Ulid;

const CONSUMER: &str = "delivery.orders";

// --- Helpers ----------------------------------------------------------------

/// Now, at the microsecond precision both backends keep.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap()
}

fn client() -> ClientId {
    ClientId::from_ulid(Ulid::new())
}

/// A planned shipment of `order`: one parcel per seller (the first with
/// two lines), a pickup per seller, then the dropoff.
fn shipment_of(order: OrderId, sellers: usize) -> Shipment {
    let at = now();
    let parcels: Vec<Parcel> = (0..sellers)
        .map(|i| Parcel {
            id: ParcelId::from_ulid(Ulid::new()),
            seller_id: client(),
            lines: (0..=u32::from(i == 0))
                .map(|q| StockLine {
                    product_id: ProductId::from_ulid(Ulid::new()),
                    quantity: q + 1,
                })
                .collect(),
        })
        .collect();
    let waypoints = parcels
        .iter()
        .map(|p| {
            (
                WaypointKind::Pickup,
                format!("warehouse of seller {}", p.seller_id),
            )
        })
        .chain([(
            WaypointKind::Dropoff,
            "1 Analytical Way, 10115 Berlin, DE".to_owned(),
        )])
        .zip(1..)
        .map(|((kind, location), seq)| Waypoint {
            seq,
            kind,
            location,
        })
        .collect();
    Shipment {
        id: ShipmentId::from_ulid(Ulid::new()),
        order_id: order,
        customer_id: client(),
        status: ShipmentStatus::Created,
        failure_reason: None,
        parcels,
        waypoints,
        next_waypoint: 1,
        eta: None,
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

fn new_shipment() -> Shipment {
    shipment_of(OrderId::from_ulid(Ulid::new()), 2)
}

/// An event about `shipment`'s order, as the bus would carry it.
fn event_about<E: ordo_bus::EventPayload>(order: OrderId, payload: &E) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        now(),
        order.to_string(),
        Some(1),
        &EventContext::from_request("req-test"),
        payload,
    )
    .unwrap()
}

fn created_event(shipment: &Shipment) -> Envelope {
    event_about(shipment.order_id, &shipment.created_event())
}

/// The inbox key of a fresh `order.paid` (or any other consumed event).
fn fresh_inbox_key() -> InboxKey {
    InboxKey {
        consumer: CONSUMER.to_owned(),
        event_id: EventId::from_ulid(Ulid::new()).to_string(),
    }
}

fn cancelled_event(order: OrderId) -> Envelope {
    event_about(
        order,
        &OrderCancelled {
            order_id: order,
            reason: "customer_cancelled".into(),
            from_status: "paid".into(),
        },
    )
}

fn answer(order: OrderId, shipment: Option<ShipmentId>) -> Envelope {
    event_about(
        order,
        &ShipmentCancelled {
            order_id: order,
            shipment_id: shipment.map(|s| s.to_string()),
        },
    )
}

/// Creates a shipment and checks it was.
async fn create(b: &Backend, shipment: &Shipment) {
    let outcome = b
        .store
        .create(shipment.clone(), created_event(shipment), fresh_inbox_key())
        .await
        .unwrap();
    assert_eq!(outcome, Creation::Created);
}

/// `shipment` picked up by a courier: the next version, and its log entry.
fn picked_up(shipment: &Shipment) -> (Shipment, CourierLogEntry) {
    let mut next = shipment.clone();
    next.status = ShipmentStatus::PickedUp;
    next.next_waypoint = 2;
    next.version += 1;
    next.updated_at = now();
    let log = log_entry(&next, CourierEventKind::PickedUp);
    (next, log)
}

fn cancelled(shipment: &Shipment) -> Shipment {
    let mut next = shipment.clone();
    next.status = ShipmentStatus::Cancelled;
    next.version += 1;
    next.updated_at = now();
    next
}

fn log_entry(shipment: &Shipment, kind: CourierEventKind) -> CourierLogEntry {
    CourierLogEntry {
        shipment_id: shipment.id,
        seq: shipment.version,
        event_id: EventId::from_ulid(Ulid::new()).to_string(),
        kind,
        waypoint: None,
        location: None,
        eta: None,
        reason: None,
        actor: "cli_courier".into(),
        at: shipment.updated_at,
    }
}

/// A pickup event to publish with a transition.
fn pickup_event(shipment: &Shipment) -> Envelope {
    event_about(
        shipment.order_id,
        &ordo_events::ShipmentPickedUp {
            order_id: shipment.order_id,
            shipment_id: shipment.id.to_string(),
        },
    )
}

async fn published_types(b: &Backend, order: OrderId) -> Vec<String> {
    b.outbox
        .events_for_subject(&order.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn is_conflict<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

// --- create, get, find_by_order ---------------------------------------------

async fn a_created_shipment_reads_back_whole_by_id_and_by_order(b: Backend) {
    let shipment = shipment_of(OrderId::from_ulid(Ulid::new()), 3);
    create(&b, &shipment).await;

    let stored = b.store.get(shipment.id).await.unwrap();
    assert_eq!(stored, shipment);
    assert_eq!(stored.parcels.len(), 3);
    assert_eq!(stored.parcels[0].lines.len(), 2);
    assert_eq!(stored.waypoints.len(), 4);
    assert_eq!(
        b.store.find_by_order(shipment.order_id).await.unwrap(),
        Some(shipment.clone())
    );
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1"]
    );
}

async fn an_unknown_shipment_is_not_found_and_an_order_without_one_has_none(b: Backend) {
    create(&b, &new_shipment()).await;
    assert!(matches!(
        b.store.get(ShipmentId::from_ulid(Ulid::new())).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        b.store
            .find_by_order(OrderId::from_ulid(Ulid::new()))
            .await
            .unwrap(),
        None
    );
}

async fn the_same_order_paid_delivered_twice_is_a_duplicate_that_writes_nothing(b: Backend) {
    let shipment = new_shipment();
    let inbox = fresh_inbox_key();
    let first = b
        .store
        .create(shipment.clone(), created_event(&shipment), inbox.clone())
        .await
        .unwrap();
    assert_eq!(first, Creation::Created);

    // The redelivery plans again, with new ids.
    let mut again = shipment_of(shipment.order_id, 1);
    again.customer_id = shipment.customer_id;
    let second = b
        .store
        .create(again.clone(), created_event(&again), inbox)
        .await
        .unwrap();
    assert_eq!(second, Creation::Duplicate);
    assert_eq!(b.store.get(shipment.id).await.unwrap(), shipment);
    assert!(matches!(
        b.store.get(again.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1"]
    );
}

async fn a_republished_order_paid_with_a_new_event_id_keeps_the_first_shipment(b: Backend) {
    let shipment = new_shipment();
    create(&b, &shipment).await;

    let again = shipment_of(shipment.order_id, 2);
    let outcome = b
        .store
        .create(again.clone(), created_event(&again), fresh_inbox_key())
        .await
        .unwrap();
    assert_eq!(outcome, Creation::Duplicate);
    assert_eq!(
        b.store.find_by_order(shipment.order_id).await.unwrap(),
        Some(shipment.clone())
    );
    assert_eq!(b.store.list_statuses(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1"]
    );
}

async fn concurrent_order_paid_events_of_one_order_create_exactly_one_shipment(b: Backend) {
    let order = OrderId::from_ulid(Ulid::new());
    let store = b.store.clone();
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let shipment = shipment_of(order, 2);
        tokio::spawn(async move {
            store
                .create(
                    shipment.clone(),
                    created_event(&shipment),
                    fresh_inbox_key(),
                )
                .await
        })
    });
    let outcomes: Vec<Creation> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|&&c| c == Creation::Created).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|&c| matches!(c, Creation::Created | Creation::Duplicate))
    );
    assert_eq!(b.store.list_statuses(None, 10).await.unwrap().len(), 1);
    assert_eq!(published_types(&b, order).await, ["shipment.created.v1"]);
}

// --- remember_cancelled -----------------------------------------------------

async fn an_order_remembered_as_cancelled_never_gets_a_shipment(b: Backend) {
    let order = OrderId::from_ulid(Ulid::new());
    let event = cancelled_event(order);
    let applied = b
        .store
        .remember_cancelled(
            order,
            "customer_cancelled".into(),
            now(),
            vec![answer(order, None)],
            InboxKey::new(CONSUMER, &event),
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);

    let late = shipment_of(order, 1);
    let outcome = b
        .store
        .create(late.clone(), created_event(&late), fresh_inbox_key())
        .await
        .unwrap();
    assert_eq!(outcome, Creation::OrderCancelled);
    assert_eq!(b.store.find_by_order(order).await.unwrap(), None);
    assert!(b.store.list_statuses(None, 10).await.unwrap().is_empty());
    assert_eq!(published_types(&b, order).await, ["shipment.cancelled.v1"]);
}

async fn a_cancellation_remembered_twice_is_a_duplicate_the_second_time(b: Backend) {
    let order = OrderId::from_ulid(Ulid::new());
    let inbox = fresh_inbox_key();
    let remember = |events: Vec<Envelope>, inbox: InboxKey| {
        b.store
            .remember_cancelled(order, "customer_cancelled".into(), now(), events, inbox)
    };
    assert_eq!(
        remember(vec![answer(order, None)], inbox.clone())
            .await
            .unwrap(),
        Applied::Done
    );
    assert_eq!(
        remember(vec![answer(order, None)], inbox).await.unwrap(),
        Applied::Duplicate
    );
    // Another event cancelling the same order (a request, then the
    // cancellation itself) is applied; the order stays remembered once.
    assert_eq!(
        remember(Vec::new(), fresh_inbox_key()).await.unwrap(),
        Applied::Done
    );
    assert_eq!(published_types(&b, order).await, ["shipment.cancelled.v1"]);
}

async fn remembering_the_cancellation_of_an_order_with_a_shipment_is_a_conflict_that_leaves_the_event_unclaimed(
    b: Backend,
) {
    let shipment = new_shipment();
    create(&b, &shipment).await;
    let inbox = fresh_inbox_key();
    let result = b
        .store
        .remember_cancelled(
            shipment.order_id,
            "customer_cancelled".into(),
            now(),
            vec![answer(shipment.order_id, None)],
            inbox.clone(),
        )
        .await;
    assert!(is_conflict(&result), "{result:?}");

    // The retry of the same event cancels the shipment.
    let applied = b
        .store
        .save_transition(
            cancelled(&shipment),
            shipment.version,
            vec![answer(shipment.order_id, Some(shipment.id))],
            None,
            Some(inbox),
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    assert_eq!(
        b.store.get(shipment.id).await.unwrap().status,
        ShipmentStatus::Cancelled
    );
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1", "shipment.cancelled.v1"]
    );
}

async fn concurrent_payment_and_cancellation_of_an_order_never_both_win(b: Backend) {
    let orders: Vec<OrderId> = (0..12).map(|_| OrderId::from_ulid(Ulid::new())).collect();
    let races = orders.iter().map(|&order| {
        let store = b.store.clone();
        async move {
            let shipment = shipment_of(order, 1);
            let paid = {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create(
                            shipment.clone(),
                            created_event(&shipment),
                            fresh_inbox_key(),
                        )
                        .await
                })
            };
            let cancel = tokio::spawn(async move {
                store
                    .remember_cancelled(
                        order,
                        "customer_cancelled".into(),
                        now(),
                        Vec::new(),
                        fresh_inbox_key(),
                    )
                    .await
            });
            (order, paid.await.unwrap(), cancel.await.unwrap())
        }
    });
    for (order, paid, cancel) in futures::future::join_all(races).await {
        let has_shipment = b.store.find_by_order(order).await.unwrap().is_some();
        match (paid.unwrap(), cancel) {
            (Creation::Created, Err(StoreError::Conflict(_))) => assert!(has_shipment),
            (Creation::OrderCancelled, Ok(Applied::Done)) => assert!(!has_shipment),
            other => panic!("order {order}: {other:?}"),
        }
    }
}

// --- save_transition --------------------------------------------------------

async fn a_transition_at_the_expected_version_saves_the_shipment_its_log_and_its_events(
    b: Backend,
) {
    let shipment = new_shipment();
    create(&b, &shipment).await;
    let (mut next, log) = picked_up(&shipment);
    next.eta = Some(now() + TimeDelta::hours(2));
    let applied = b
        .store
        .save_transition(
            next.clone(),
            shipment.version,
            vec![pickup_event(&next)],
            Some(log.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    assert_eq!(b.store.get(shipment.id).await.unwrap(), next);
    assert_eq!(b.store.courier_log(shipment.id).await.unwrap(), [log]);
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1", "shipment.picked_up.v1"]
    );
}

async fn a_transition_from_a_stale_version_is_a_conflict_that_writes_nothing(b: Backend) {
    let shipment = new_shipment();
    create(&b, &shipment).await;
    let (next, log) = picked_up(&shipment);
    b.store
        .save_transition(next.clone(), 1, vec![], Some(log), None)
        .await
        .unwrap();

    // A cancellation decided on version 1, and its inbox claim.
    let inbox = fresh_inbox_key();
    let result = b
        .store
        .save_transition(
            cancelled(&shipment),
            shipment.version,
            vec![answer(shipment.order_id, Some(shipment.id))],
            Some(log_entry(&cancelled(&shipment), CourierEventKind::Failed)),
            Some(inbox.clone()),
        )
        .await;
    assert!(is_conflict(&result), "{result:?}");
    assert_eq!(b.store.get(shipment.id).await.unwrap(), next);
    assert_eq!(b.store.courier_log(shipment.id).await.unwrap().len(), 1);
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1"]
    );

    // The claim was rolled back with the rest: the event applies once
    // decided on the current version.
    let mut failed = next.clone();
    failed.status = ShipmentStatus::Failed;
    failed.failure_reason = Some("address unknown".into());
    failed.version += 1;
    let applied = b
        .store
        .save_transition(failed.clone(), next.version, vec![], None, Some(inbox))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    assert_eq!(b.store.get(shipment.id).await.unwrap(), failed);
}

async fn a_transition_of_an_unknown_shipment_is_a_conflict(b: Backend) {
    let ghost = new_shipment();
    let result = b
        .store
        .save_transition(cancelled(&ghost), ghost.version, vec![], None, None)
        .await;
    assert!(is_conflict(&result), "{result:?}");
}

async fn a_transition_caused_by_an_event_already_applied_is_a_duplicate(b: Backend) {
    let shipment = new_shipment();
    create(&b, &shipment).await;
    let inbox = fresh_inbox_key();
    let next = cancelled(&shipment);
    let first = b
        .store
        .save_transition(next.clone(), 1, vec![], None, Some(inbox.clone()))
        .await
        .unwrap();
    assert_eq!(first, Applied::Done);
    // The inbox answers before the version is looked at.
    let again = b
        .store
        .save_transition(
            next.clone(),
            1,
            vec![answer(shipment.order_id, Some(shipment.id))],
            None,
            Some(inbox),
        )
        .await
        .unwrap();
    assert_eq!(again, Applied::Duplicate);
    assert_eq!(b.store.get(shipment.id).await.unwrap(), next);
    assert_eq!(
        published_types(&b, shipment.order_id).await,
        ["shipment.created.v1"]
    );
}

async fn a_log_entry_with_an_event_id_already_logged_is_a_conflict_that_writes_nothing(b: Backend) {
    let first = new_shipment();
    let second = new_shipment();
    create(&b, &first).await;
    create(&b, &second).await;
    let (next, log) = picked_up(&first);
    b.store
        .save_transition(next, 1, vec![], Some(log.clone()), None)
        .await
        .unwrap();

    let (other, mut reused) = picked_up(&second);
    reused.event_id = log.event_id;
    let result = b
        .store
        .save_transition(other, 1, vec![], Some(reused), None)
        .await;
    assert!(is_conflict(&result), "{result:?}");
    assert_eq!(b.store.get(second.id).await.unwrap(), second);
    assert!(b.store.courier_log(second.id).await.unwrap().is_empty());
}

async fn a_pickup_and_a_cancellation_racing_for_one_shipment_apply_exactly_once(b: Backend) {
    for _ in 0..5 {
        let shipment = new_shipment();
        create(&b, &shipment).await;
        let contenders = (0..6).map(|i| {
            let store: Arc<dyn ShipmentStore> = b.store.clone();
            let shipment = shipment.clone();
            tokio::spawn(async move {
                let result = if i % 2 == 0 {
                    let (next, log) = picked_up(&shipment);
                    let event = pickup_event(&next);
                    store
                        .save_transition(next, shipment.version, vec![event], Some(log), None)
                        .await
                } else {
                    store
                        .save_transition(
                            cancelled(&shipment),
                            shipment.version,
                            vec![answer(shipment.order_id, Some(shipment.id))],
                            None,
                            Some(fresh_inbox_key()),
                        )
                        .await
                };
                (i % 2 == 0, result)
            })
        });
        let results: Vec<(bool, Result<Applied, StoreError>)> =
            futures::future::join_all(contenders)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
        let winners: Vec<bool> = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Applied::Done)))
            .map(|(pickup, _)| *pickup)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert_eq!(
            results.iter().filter(|(_, r)| is_conflict(r)).count(),
            5,
            "{results:?}"
        );
        let stored = b.store.get(shipment.id).await.unwrap();
        let log = b.store.courier_log(shipment.id).await.unwrap();
        let published = published_types(&b, shipment.order_id).await;
        assert_eq!(stored.version, 2);
        if winners[0] {
            assert_eq!(stored.status, ShipmentStatus::PickedUp);
            assert_eq!(log.len(), 1);
            assert_eq!(published, ["shipment.created.v1", "shipment.picked_up.v1"]);
        } else {
            assert_eq!(stored.status, ShipmentStatus::Cancelled);
            assert!(log.is_empty());
            assert_eq!(published, ["shipment.created.v1", "shipment.cancelled.v1"]);
        }
    }
}

// --- active, courier_log, list_statuses -------------------------------------

async fn active_lists_the_shipments_on_their_way_in_id_order_up_to_the_limit(b: Backend) {
    let mut shipments: Vec<Shipment> = (0..5).map(|_| new_shipment()).collect();
    shipments.sort_by_key(|s| s.id.to_string());
    for shipment in &shipments {
        create(&b, shipment).await;
    }
    // 0 stays created, 1 is picked up, 2 is delivered, 3 is cancelled, 4
    // failed.
    let (picked, log) = picked_up(&shipments[1]);
    b.store
        .save_transition(picked.clone(), 1, vec![], Some(log), None)
        .await
        .unwrap();
    let mut delivered = picked_up(&shipments[2]).0;
    delivered.status = ShipmentStatus::Delivered;
    b.store
        .save_transition(delivered, 1, vec![], None, None)
        .await
        .unwrap();
    b.store
        .save_transition(cancelled(&shipments[3]), 1, vec![], None, None)
        .await
        .unwrap();
    let mut failed = shipments[4].clone();
    failed.status = ShipmentStatus::Failed;
    failed.failure_reason = Some("lost".into());
    failed.version = 2;
    b.store
        .save_transition(failed, 1, vec![], None, None)
        .await
        .unwrap();

    let active = b.store.active(10).await.unwrap();
    assert_eq!(active, [shipments[0].clone(), picked]);
    assert_eq!(b.store.active(1).await.unwrap(), [shipments[0].clone()]);
    assert!(b.store.active(0).await.unwrap().is_empty());
}

async fn the_courier_log_lists_what_was_applied_in_order(b: Backend) {
    let shipment = shipment_of(OrderId::from_ulid(Ulid::new()), 1);
    create(&b, &shipment).await;
    assert!(b.store.courier_log(shipment.id).await.unwrap().is_empty());

    let (picked, first) = picked_up(&shipment);
    b.store
        .save_transition(picked.clone(), 1, vec![], Some(first.clone()), None)
        .await
        .unwrap();
    let mut reached = picked.clone();
    reached.status = ShipmentStatus::InTransit;
    reached.next_waypoint = 3;
    reached.version = 3;
    reached.eta = Some(now() + TimeDelta::minutes(30));
    let mut second = log_entry(&reached, CourierEventKind::WaypointReached);
    second.waypoint = Some(2);
    second.location = Some("a corner of Berlin".into());
    second.eta = reached.eta;
    b.store
        .save_transition(reached.clone(), 2, vec![], Some(second.clone()), None)
        .await
        .unwrap();
    let mut failed = reached.clone();
    failed.status = ShipmentStatus::Failed;
    failed.failure_reason = Some("nobody home".into());
    failed.version = 4;
    let mut third = log_entry(&failed, CourierEventKind::Failed);
    third.reason = failed.failure_reason.clone();
    b.store
        .save_transition(failed, 3, vec![], Some(third.clone()), None)
        .await
        .unwrap();

    assert_eq!(
        b.store.courier_log(shipment.id).await.unwrap(),
        [first, second, third]
    );
    assert!(
        b.store
            .courier_log(ShipmentId::from_ulid(Ulid::new()))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_status_listing_pages_through_every_shipment_in_id_order(b: Backend) {
    let mut shipments: Vec<Shipment> = (0..5).map(|_| new_shipment()).collect();
    for shipment in &shipments {
        create(&b, shipment).await;
    }
    b.store
        .save_transition(cancelled(&shipments[2]), 1, vec![], None, None)
        .await
        .unwrap();
    shipments[2].status = ShipmentStatus::Cancelled;
    shipments.sort_by_key(|s| s.id.to_string());
    let expected: Vec<ShipmentSummary> = shipments
        .iter()
        .map(|s| ShipmentSummary {
            shipment_id: s.id,
            order_id: s.order_id,
            status: s.status,
        })
        .collect();

    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = b.store.list_statuses(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.shipment_id);
        listed.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, expected);
    assert!(b.store.list_statuses(None, 0).await.unwrap().is_empty());
}

on_both_backends!(
    a_created_shipment_reads_back_whole_by_id_and_by_order,
    an_unknown_shipment_is_not_found_and_an_order_without_one_has_none,
    the_same_order_paid_delivered_twice_is_a_duplicate_that_writes_nothing,
    a_republished_order_paid_with_a_new_event_id_keeps_the_first_shipment,
    concurrent_order_paid_events_of_one_order_create_exactly_one_shipment,
    an_order_remembered_as_cancelled_never_gets_a_shipment,
    a_cancellation_remembered_twice_is_a_duplicate_the_second_time,
    remembering_the_cancellation_of_an_order_with_a_shipment_is_a_conflict_that_leaves_the_event_unclaimed,
    concurrent_payment_and_cancellation_of_an_order_never_both_win,
    a_transition_at_the_expected_version_saves_the_shipment_its_log_and_its_events,
    a_transition_from_a_stale_version_is_a_conflict_that_writes_nothing,
    a_transition_of_an_unknown_shipment_is_a_conflict,
    a_transition_caused_by_an_event_already_applied_is_a_duplicate,
    a_log_entry_with_an_event_id_already_logged_is_a_conflict_that_writes_nothing,
    a_pickup_and_a_cancellation_racing_for_one_shipment_apply_exactly_once,
    active_lists_the_shipments_on_their_way_in_id_order_up_to_the_limit,
    the_courier_log_lists_what_was_applied_in_order,
    the_status_listing_pages_through_every_shipment_in_id_order,
);
