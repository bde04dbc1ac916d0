//! The delivery service against each store backend (SQLite in a
//! temporary file, PostgreSQL when `ORDO_TEST_DATABASE_URL` names a
//! server): the reactions fed with envelopes as the bus would hand them
//! over, courier events through the service, and the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::Backend;
use ordo_bus::{Envelope, EventContext, EventPayload, Handler, OutboxStore};
use ordo_delivery::domain::{CourierError, CourierEvent, ShipmentStatus};
use ordo_delivery::store::ShipmentStore;
use ordo_delivery::{Actor, CourierSimulator, DeliveryError, DeliveryService};
use ordo_events::{
    Address, OrderCancelled, OrderLine, OrderPaid, ShipmentCreated, ShipmentWaypointReached,
};
use ordo_http::{Principal, Role};
use ordo_kernel::{ClientId, Currency, EventId, OrderId, ProductId, SystemClock, UlidGen};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

// --- Helpers ----------------------------------------------------------------

struct TestDelivery {
    service: Arc<DeliveryService>,
    store: Arc<dyn ShipmentStore>,
    outbox: Arc<dyn OutboxStore>,
    reactions: Arc<dyn Handler>,
    // Last: the database outlives the stores over it.
    _backend: Backend,
}

impl TestDelivery {
    fn new(backend: Backend) -> Self {
        let store = backend.store.clone();
        let service = Arc::new(DeliveryService::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(UlidGen::new()),
        ));
        let consumers = ordo_delivery::consumers(service.clone());
        assert_eq!(consumers.len(), 1);
        assert_eq!(consumers[0].name, "delivery.orders");
        Self {
            outbox: backend.outbox.clone(),
            reactions: consumers[0].handler.clone(),
            service,
            store,
            _backend: backend,
        }
    }

    async fn deliver(&self, event: &Envelope) {
        self.reactions.handle(event).await.unwrap();
    }

    /// The events published about `order`, by type.
    async fn published(&self, order: OrderId) -> Vec<Envelope> {
        self.outbox
            .events_for_subject(&order.to_string())
            .await
            .unwrap()
    }

    async fn published_types(&self, order: OrderId) -> Vec<String> {
        self.published(order)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    async fn shipment_status(&self, order: OrderId) -> Option<ShipmentStatus> {
        self.store
            .find_by_order(order)
            .await
            .unwrap()
            .map(|s| s.status)
    }

    async fn report(
        &self,
        actor: &Actor,
        order: OrderId,
        event: CourierEvent,
    ) -> Result<ShipmentStatus, DeliveryError> {
        let shipment = self.store.find_by_order(order).await.unwrap().unwrap();
        self.service
            .record_courier_event(
                actor,
                shipment.id,
                event,
                &EventContext::from_request("req-courier"),
            )
            .await
            .map(|s| s.status)
    }
}

fn client() -> ClientId {
    ClientId::from_ulid(Ulid::new())
}

fn principal(role: Role) -> Principal {
    Principal {
        client_id: client(),
        role,
    }
}

fn courier() -> Actor {
    Actor::Client(principal(Role::Courier))
}

fn envelope<E: EventPayload>(order: OrderId, payload: &E) -> Envelope {
    Envelope::new(
        EventId::from_ulid(Ulid::new()),
        Utc::now(),
        order.to_string(),
        Some(3),
        &EventContext::from_request("req-order"),
        payload,
    )
    .unwrap()
}

/// An order paid by `customer` with one line of each of `sellers`.
fn paid(order: OrderId, customer: ClientId, sellers: &[ClientId]) -> Envelope {
    let items = sellers
        .iter()
        .map(|&seller_id| OrderLine {
            product_id: ProductId::from_ulid(Ulid::new()),
            sku: "SKU-1".into(),
            seller_id,
            quantity: 2,
            unit_price: Default::default(),
        })
        .collect();
    envelope(
        order,
        &OrderPaid {
            order_id: order,
            customer_id: customer,
            items,
            shipping_address: Address {
                name: "Ada Lovelace".into(),
                line1: "1 Analytical Way".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            total: Default::default(),
            currency: Currency::parse("EUR").unwrap(),
        },
    )
}

fn cancelled(order: OrderId) -> Envelope {
    envelope(
        order,
        &OrderCancelled {
            order_id: order,
            reason: "customer_cancelled".into(),
            from_status: "paid".into(),
        },
    )
}

fn new_order() -> OrderId {
    OrderId::from_ulid(Ulid::new())
}

fn reached(waypoint: u32) -> CourierEvent {
    CourierEvent::WaypointReached {
        waypoint,
        location: None,
        eta: None,
    }
}

// --- Reactions --------------------------------------------------------------

async fn a_paid_order_of_two_sellers_gets_one_shipment_of_two_parcels_and_three_waypoints(
    b: Backend,
) {
    let t = TestDelivery::new(b);
    let (order, customer, a, b) = (new_order(), client(), client(), client());
    let event = paid(order, customer, &[a, b]);
    t.deliver(&event).await;

    let shipment = t.store.find_by_order(order).await.unwrap().unwrap();
    assert_eq!(shipment.status, ShipmentStatus::Created);
    assert_eq!(shipment.customer_id, customer);
    let sellers: Vec<_> = shipment.parcels.iter().map(|p| p.seller_id).collect();
    assert_eq!(sellers, [a, b]);
    let kinds: Vec<_> = shipment
        .waypoints
        .iter()
        .map(|w| (w.seq, w.kind.as_str()))
        .collect();
    assert_eq!(kinds, [(1, "pickup"), (2, "pickup"), (3, "dropoff")]);
    assert_eq!(
        shipment.waypoints[2].location,
        "Ada Lovelace, 1 Analytical Way, 10115 Berlin, DE"
    );
    assert_eq!(t.store.get(shipment.id).await.unwrap(), shipment);

    let published = t.published(order).await;
    assert_eq!(published.len(), 1);
    let created = &published[0];
    assert_eq!(created.event_type, ShipmentCreated::TYPE);
    assert_eq!(created.correlationid, "req-order");
    assert_eq!(created.causationid, Some(event.id.to_string()));
    assert_eq!(created.actor.as_deref(), Some("system:delivery"));
    let payload = created.decode::<ShipmentCreated>().unwrap();
    assert_eq!(payload.shipment_id, shipment.id.to_string());
    assert_eq!(payload.parcels.len(), 2);
    assert_eq!(payload.parcels[1].seller_id, b);
    assert_eq!(payload.waypoints.len(), 3);
}

async fn a_duplicate_order_paid_leaves_one_shipment(b: Backend) {
    let t = TestDelivery::new(b);
    let (order, customer) = (new_order(), client());
    let event = paid(order, customer, &[client()]);
    t.deliver(&event).await;
    let first = t.store.find_by_order(order).await.unwrap().unwrap();
    // The same event again, and the same fact in a new envelope.
    t.deliver(&event).await;
    let mut again = paid(order, customer, &[client()]);
    again.data = event.data.clone();
    t.deliver(&again).await;

    assert_eq!(t.store.find_by_order(order).await.unwrap(), Some(first));
    assert_eq!(t.published_types(order).await, [ShipmentCreated::TYPE]);
    assert_eq!(t.store.list_statuses(None, 10).await.unwrap().len(), 1);
}

async fn an_order_cancelled_before_it_was_paid_never_gets_a_shipment(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&cancelled(order)).await;
    t.deliver(&paid(order, client(), &[client()])).await;
    t.deliver(&paid(order, client(), &[client()])).await;

    assert_eq!(t.shipment_status(order).await, None);
    assert!(t.published(order).await.is_empty());
}

async fn cancelling_before_the_pickup_cancels_the_shipment(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    let cancel = cancelled(order);
    t.deliver(&cancel).await;
    assert_eq!(
        t.shipment_status(order).await,
        Some(ShipmentStatus::Cancelled)
    );
    // A duplicate cancellation, then a courier who did not hear of it.
    t.deliver(&cancel).await;
    t.deliver(&cancelled(order)).await;
    let refused = t.report(&courier(), order, CourierEvent::PickedUp).await;
    assert!(
        matches!(
            refused,
            Err(DeliveryError::Courier(CourierError::Finished {
                status: ShipmentStatus::Cancelled
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(t.published_types(order).await, [ShipmentCreated::TYPE]);
    assert!(t.store.active(10).await.unwrap().is_empty());
}

async fn a_cancellation_after_the_pickup_leaves_the_shipment_on_its_way(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    t.report(&courier(), order, CourierEvent::PickedUp)
        .await
        .unwrap();
    t.deliver(&cancelled(order)).await;
    assert_eq!(
        t.shipment_status(order).await,
        Some(ShipmentStatus::PickedUp)
    );
}

async fn paid_and_cancelled_racing_never_leave_an_active_shipment(b: Backend) {
    let t = Arc::new(TestDelivery::new(b));
    let mut tasks = Vec::new();
    let orders: Vec<OrderId> = (0..40).map(|_| new_order()).collect();
    for (i, &order) in orders.iter().enumerate() {
        let (paid, cancelled) = (paid(order, client(), &[client()]), cancelled(order));
        // Half of them with the cancellation sent first.
        let events = if i % 2 == 0 {
            [paid, cancelled]
        } else {
            [cancelled, paid]
        };
        for event in events {
            let t = t.clone();
            tasks.push(tokio::spawn(async move { t.deliver(&event).await }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    for order in orders {
        let status = t.shipment_status(order).await;
        assert!(
            matches!(status, None | Some(ShipmentStatus::Cancelled)),
            "{order}: {status:?}"
        );
    }
    assert!(t.store.active(100).await.unwrap().is_empty());
}

// --- Courier events ---------------------------------------------------------

async fn courier_events_in_order_take_a_shipment_to_delivered(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client(), client()]))
        .await;
    let courier = courier();
    assert_eq!(
        t.report(&courier, order, CourierEvent::PickedUp)
            .await
            .unwrap(),
        ShipmentStatus::PickedUp
    );
    let eta = Utc::now() + chrono::Duration::hours(1);
    let eta = eta - chrono::Duration::nanoseconds(i64::from(eta.timestamp_subsec_nanos()));
    assert_eq!(
        t.report(
            &courier,
            order,
            CourierEvent::WaypointReached {
                waypoint: 2,
                location: Some("Alexanderplatz".into()),
                eta: Some(eta),
            },
        )
        .await
        .unwrap(),
        ShipmentStatus::InTransit
    );
    assert_eq!(
        t.report(&courier, order, CourierEvent::Delivered)
            .await
            .unwrap(),
        ShipmentStatus::Delivered
    );

    let published = t.published(order).await;
    let types: Vec<_> = published.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "shipment.created.v1",
            "shipment.picked_up.v1",
            "shipment.waypoint_reached.v1",
            "shipment.delivered.v1",
        ]
    );
    let sequences: Vec<_> = published.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [Some(1), Some(2), Some(3), Some(4)]);
    let Actor::Client(who) = &courier else {
        unreachable!()
    };
    assert_eq!(published[1].actor, Some(who.client_id.to_string()));
    assert_eq!(published[1].correlationid, "req-courier");
    let reached = published[2].decode::<ShipmentWaypointReached>().unwrap();
    assert_eq!(
        (reached.waypoint, reached.location.as_str(), reached.eta),
        (2, "Alexanderplatz", Some(eta))
    );

    let shipment = t.store.find_by_order(order).await.unwrap().unwrap();
    assert_eq!(shipment.eta, Some(eta));
    let log = t.store.courier_log(shipment.id).await.unwrap();
    let kinds: Vec<_> = log.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [(2, "picked_up"), (3, "waypoint_reached"), (4, "delivered")]
    );
    assert_eq!(log[1].event_id, published[2].id.to_string());
    assert!(t.store.active(10).await.unwrap().is_empty());
}

async fn out_of_order_and_repeated_courier_events_are_refused_and_change_nothing(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client(), client()]))
        .await;
    let courier = courier();
    let refused = |r: Result<ShipmentStatus, DeliveryError>| match r {
        Err(DeliveryError::Courier(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };

    assert_eq!(
        refused(t.report(&courier, order, reached(2)).await),
        CourierError::NotPickedUp
    );
    t.report(&courier, order, CourierEvent::PickedUp)
        .await
        .unwrap();
    let before = t.store.find_by_order(order).await.unwrap().unwrap();
    assert_eq!(
        refused(t.report(&courier, order, CourierEvent::PickedUp).await),
        CourierError::AlreadyPickedUp
    );
    assert_eq!(
        refused(t.report(&courier, order, reached(3)).await),
        CourierError::OutOfOrder {
            expected: 2,
            got: 3
        }
    );
    assert_eq!(
        refused(t.report(&courier, order, CourierEvent::Delivered).await),
        CourierError::PickupsPending { next: 2 }
    );
    assert_eq!(t.store.find_by_order(order).await.unwrap().unwrap(), before);

    t.report(&courier, order, reached(2)).await.unwrap();
    assert_eq!(
        refused(t.report(&courier, order, reached(2)).await),
        CourierError::AlreadyReached { waypoint: 2 }
    );
    t.report(&courier, order, CourierEvent::Delivered)
        .await
        .unwrap();
    assert_eq!(
        refused(
            t.report(
                &courier,
                order,
                CourierEvent::Failed {
                    reason: "lost".into()
                }
            )
            .await
        ),
        CourierError::Finished {
            status: ShipmentStatus::Delivered
        }
    );
    // One event per accepted report, none for the refused ones.
    assert_eq!(t.published(order).await.len(), 4);
}

async fn concurrent_reports_of_the_same_step_apply_once(b: Backend) {
    let t = Arc::new(TestDelivery::new(b));
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            t.report(&courier(), order, CourierEvent::PickedUp).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(DeliveryError::Courier(CourierError::AlreadyPickedUp)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(
        t.published_types(order).await,
        ["shipment.created.v1", "shipment.picked_up.v1"]
    );
}

async fn only_couriers_admins_and_the_system_report_courier_events(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    for role in [Role::Customer, Role::Seller] {
        let refused = t
            .report(
                &Actor::Client(principal(role)),
                order,
                CourierEvent::PickedUp,
            )
            .await;
        assert!(
            matches!(refused, Err(DeliveryError::Forbidden(_))),
            "{role}"
        );
    }
    t.report(
        &Actor::Client(principal(Role::Admin)),
        order,
        CourierEvent::PickedUp,
    )
    .await
    .unwrap();
    t.report(&Actor::System("test"), order, CourierEvent::Delivered)
        .await
        .unwrap();
    let published = t.published(order).await;
    assert_eq!(published[2].actor.as_deref(), Some("system:test"));
}

async fn a_customer_sees_its_own_shipment_only(b: Backend) {
    let t = TestDelivery::new(b);
    let (order, customer, seller) = (new_order(), principal(Role::Customer), client());
    t.deliver(&paid(order, customer.client_id, &[seller])).await;
    let id = t.store.find_by_order(order).await.unwrap().unwrap().id;

    assert_eq!(t.service.get(&customer, id).await.unwrap().order_id, order);
    assert_eq!(t.service.for_order(&customer, order).await.unwrap().id, id);
    let seller = Principal {
        client_id: seller,
        role: Role::Seller,
    };
    assert!(t.service.get(&seller, id).await.is_ok());
    for caller in [principal(Role::Courier), principal(Role::Admin)] {
        assert!(t.service.get(&caller, id).await.is_ok());
    }
    for stranger in [principal(Role::Customer), principal(Role::Seller)] {
        assert!(matches!(
            t.service.get(&stranger, id).await,
            Err(DeliveryError::NotFound)
        ));
        assert!(matches!(
            t.service.for_order(&stranger, order).await,
            Err(DeliveryError::NotFound)
        ));
    }
    assert!(matches!(
        t.service.for_order(&customer, new_order()).await,
        Err(DeliveryError::NotFound)
    ));
}

async fn the_invariant_listing_pages_through_every_shipment(b: Backend) {
    let t = TestDelivery::new(b);
    let mut orders = Vec::new();
    for _ in 0..5 {
        let order = new_order();
        t.deliver(&paid(order, client(), &[client()])).await;
        orders.push(order);
    }
    t.deliver(&cancelled(orders[0])).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = t.store.list_statuses(after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.shipment_id);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 5);
    let cancelled_one = seen.iter().find(|s| s.order_id == orders[0]).unwrap();
    assert_eq!(cancelled_one.status, ShipmentStatus::Cancelled);
    assert_eq!(t.store.active(10).await.unwrap().len(), 4);
}

// --- The courier simulator ---------------------------------------------------

async fn the_simulator_drives_a_shipment_to_delivered(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client(), client()]))
        .await;
    // Every courier event commits an outbox row, which rings this.
    let wakeup = t.outbox.wakeup();

    let stop = CancellationToken::new();
    let simulator = CourierSimulator::new(t.service.clone(), Duration::from_millis(5));
    let running = tokio::spawn(simulator.run(stop.clone()));

    let deadline = Instant::now() + Duration::from_secs(20);
    while t.shipment_status(order).await != Some(ShipmentStatus::Delivered) {
        assert!(
            tokio::time::timeout_at(deadline, wakeup.notified())
                .await
                .is_ok(),
            "the shipment is still {:?}",
            t.shipment_status(order).await
        );
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the simulator stops when cancelled")
        .unwrap();

    assert_eq!(
        t.published_types(order).await,
        [
            "shipment.created.v1",
            "shipment.picked_up.v1",
            "shipment.waypoint_reached.v1",
            "shipment.delivered.v1",
        ]
    );
    let shipment = t.store.find_by_order(order).await.unwrap().unwrap();
    let log = t.store.courier_log(shipment.id).await.unwrap();
    assert!(log.iter().all(|e| e.actor == "system:courier-sim"));
    assert!(log[1].eta.is_some());
}

async fn the_simulator_leaves_finished_shipments_alone_and_stops_at_once(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    t.deliver(&cancelled(order)).await;
    let simulator = CourierSimulator::new(t.service.clone(), Duration::from_secs(3600));
    assert_eq!(simulator.round().await, 0);

    let stop = CancellationToken::new();
    let running = tokio::spawn(simulator.run(stop.clone()));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the simulator stops when cancelled, even mid-pace")
        .unwrap();
    assert_eq!(
        t.shipment_status(order).await,
        Some(ShipmentStatus::Cancelled)
    );
}

fn cancellation_requested(order: OrderId) -> Envelope {
    envelope(
        order,
        &ordo_events::OrderCancellationRequested {
            order_id: order,
            reason: "customer_cancelled".into(),
        },
    )
}

async fn a_cancel_request_before_the_pickup_is_answered_with_shipment_cancelled(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    let request = cancellation_requested(order);
    t.deliver(&request).await;
    t.deliver(&request).await;
    assert_eq!(
        t.shipment_status(order).await,
        Some(ShipmentStatus::Cancelled)
    );
    assert_eq!(
        t.published_types(order).await,
        [ShipmentCreated::TYPE, ordo_events::ShipmentCancelled::TYPE],
        "answered once"
    );
}

async fn a_cancel_request_before_the_shipment_exists_is_answered_and_no_shipment_follows(
    b: Backend,
) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&cancellation_requested(order)).await;
    t.deliver(&paid(order, client(), &[client()])).await;
    assert_eq!(t.shipment_status(order).await, None);
    assert_eq!(
        t.published_types(order).await,
        [ordo_events::ShipmentCancelled::TYPE]
    );
}

async fn a_cancel_request_after_the_pickup_gets_no_answer_and_the_shipment_goes_on(b: Backend) {
    let t = TestDelivery::new(b);
    let order = new_order();
    t.deliver(&paid(order, client(), &[client()])).await;
    t.report(&courier(), order, CourierEvent::PickedUp)
        .await
        .unwrap();
    t.deliver(&cancellation_requested(order)).await;
    assert_eq!(
        t.shipment_status(order).await,
        Some(ShipmentStatus::PickedUp)
    );
    let types = t.published_types(order).await;
    assert!(
        !types.contains(&ordo_events::ShipmentCancelled::TYPE.to_owned()),
        "{types:?}"
    );
}

on_both_backends!(
    a_paid_order_of_two_sellers_gets_one_shipment_of_two_parcels_and_three_waypoints,
    a_duplicate_order_paid_leaves_one_shipment,
    an_order_cancelled_before_it_was_paid_never_gets_a_shipment,
    cancelling_before_the_pickup_cancels_the_shipment,
    a_cancellation_after_the_pickup_leaves_the_shipment_on_its_way,
    paid_and_cancelled_racing_never_leave_an_active_shipment,
    courier_events_in_order_take_a_shipment_to_delivered,
    out_of_order_and_repeated_courier_events_are_refused_and_change_nothing,
    concurrent_reports_of_the_same_step_apply_once,
    only_couriers_admins_and_the_system_report_courier_events,
    a_customer_sees_its_own_shipment_only,
    the_invariant_listing_pages_through_every_shipment,
    the_simulator_drives_a_shipment_to_delivered,
    the_simulator_leaves_finished_shipments_alone_and_stops_at_once,
    a_cancel_request_before_the_pickup_is_answered_with_shipment_cancelled,
    a_cancel_request_before_the_shipment_exists_is_answered_and_no_shipment_follows,
    a_cancel_request_after_the_pickup_gets_no_answer_and_the_shipment_goes_on,
);
