//! Following an order over Server-Sent Events (`GET /v1/orders/{id}/events`):
//! the whole story as it happens, a resumed stream, who may follow, and
//! streams that end with their order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp, fields, order_body, problem};
use ordo_app::config::CourierSim;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One event of a stream, as a client sees it.
#[derive(Debug, Clone, Default)]
struct SseEvent {
    id: Option<String>,
    /// `message` when the event names no type.
    event: String,
    data: String,
    retry: Option<u64>,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{self:?} carries no JSON: {e}"))
    }

    /// The timeline seq of an entry; None for status and end.
    fn seq(&self) -> Option<i64> {
        self.id.as_ref().map(|id| id.parse().unwrap())
    }

    fn is_entry(&self) -> bool {
        self.id.is_some()
    }
}

/// The event of one block of `field: value` lines; None for a block of
/// comments only (the keep-alive).
fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" => data.push(value),
            "retry" => event.retry = Some(value.parse().unwrap()),
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    if event.event.is_empty() {
        event.event = "message".to_owned();
    }
    event.data = data.join("\n");
    any.then_some(event)
}

/// A stream being read, event by event.
struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event, or None once the server closed the stream. Fails
    /// when nothing comes for 30 seconds.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                match parse_event(std::str::from_utf8(&block).unwrap()) {
                    Some(event) => return Some(event),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 seconds")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(
                        self.buffer.iter().all(u8::is_ascii_whitespace),
                        "the stream closed in the middle of an event: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return None;
                }
            }
        }
    }

    /// Every event until the server closes the stream.
    async fn read_to_end(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }

    /// Events up to and including the first that `last` accepts.
    async fn until(&mut self, mut last: impl FnMut(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream closed after {events:#?}"));
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

async fn open(
    app: &TestApp,
    token: &str,
    order: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .get(app.url(&format!("/v1/orders/{order}/events")))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.unwrap()
}

async fn follow(
    app: &TestApp,
    token: &str,
    order: &str,
    last_event_id: Option<&str>,
) -> EventStream {
    let response = open(app, token, order, last_event_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    EventStream {
        response,
        buffer: Vec::new(),
    }
}

fn seqs(events: &[SseEvent]) -> Vec<i64> {
    events.iter().filter_map(SseEvent::seq).collect()
}

fn types(events: &[SseEvent]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.is_entry())
        .map(|e| e.event.as_str())
        .collect()
}

fn own_types(events: &[SseEvent]) -> Vec<&str> {
    types(events)
        .into_iter()
        .filter(|t| t.starts_with("order."))
        .collect()
}

fn status(id: &str, status: &str, reason: Option<&str>) -> Value {
    json!({"id": id, "status": status, "cancellation_reason": reason})
}

/// Asserts what every stream that ran to its end shows: entries in seq
/// order, statuses without ids that change each time, the `retry` hint
/// first, a last `status` carrying `last`, and an `end` carrying it too.
fn assert_well_formed(events: &[SseEvent], last: &Value) {
    assert_eq!(events[0].retry, Some(2000), "{:?}", events[0]);
    assert!(events[1..].iter().all(|e| e.retry.is_none()));
    let seqs = seqs(events);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for entry in events.iter().filter(|e| e.is_entry()) {
        let data = entry.json();
        assert_eq!(data["seq"], entry.seq().unwrap(), "{entry:?}");
        assert_eq!(data["type"], entry.event, "{entry:?}");
    }
    let statuses: Vec<&SseEvent> = events.iter().filter(|e| !e.is_entry()).collect();
    assert!(
        statuses
            .iter()
            .all(|e| ["status", "end"].contains(&e.event.as_str())),
        "{statuses:#?}"
    );
    let changes: Vec<Value> = statuses
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.json())
        .collect();
    assert!(
        changes.windows(2).all(|w| w[0] != w[1]),
        "a status is sent when it changes: {changes:#?}"
    );
    // The status can run ahead of the timeline: the last one may have
    // come before the last entries.
    assert_eq!(changes.last(), Some(last), "{events:#?}");
    let end = events.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(&end.json(), last);
    assert_eq!(
        events.iter().filter(|e| e.event == "end").count(),
        1,
        "{events:#?}"
    );
}

fn with_courier(config: &mut ordo_app::config::Config) {
    config.courier_sim = CourierSim::Pace(Duration::from_millis(50));
}

async fn a_customer_follows_its_order_from_creation_to_delivery_and_the_stream_ends(
    backend: Backend,
) {
    let app = TestApp::spawn_on_with(backend, |b| b, with_courier).await;
    let customer = app.token("customer").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();

    let events = follow(&app, &customer, id, None).await.read_to_end().await;

    assert_well_formed(&events, &status(id, "delivered", None));
    assert_eq!(seqs(&events).first(), Some(&1), "the whole timeline");
    assert_eq!(
        own_types(&events),
        [
            "order.created",
            "order.confirmed",
            "order.paid",
            "order.shipped",
            "order.delivered"
        ]
    );
    // The first batch is followed by the status at once.
    let first_status = events.iter().find(|e| !e.is_entry()).unwrap();
    assert_eq!(first_status.event, "status");
    // Each entry is the timeline's, as /timeline shows it.
    let timeline = app.timeline(&customer, id).await;
    for entry in events.iter().filter(|e| e.is_entry()) {
        let seq = entry.seq().unwrap();
        let shown = timeline.iter().find(|t| t["seq"] == seq).unwrap();
        assert_eq!(&entry.json(), shown);
    }
    app.assert_no_server_errors().await;
}

async fn a_client_that_reconnects_with_its_last_event_id_gets_only_later_entries(backend: Backend) {
    let app = TestApp::spawn_on_with(backend, |b| b, with_courier).await;
    let customer = app.token("customer").await;
    let product = app.product_id(1).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&customer, id, "delivered").await;
    app.wait_for_quiet_bus().await;
    let timeline = app.timeline(&customer, id).await;
    let delivered = status(id, "delivered", None);

    let second = timeline[1]["seq"].as_i64().unwrap();
    let events = follow(&app, &customer, id, Some(&second.to_string()))
        .await
        .read_to_end()
        .await;
    assert_well_formed(&events, &delivered);
    let resumed = seqs(&events);
    assert_eq!(resumed.first(), Some(&(second + 1)), "{resumed:?}");
    assert!(resumed.iter().all(|s| *s > second));
    assert_eq!(resumed.len(), timeline.len() - 2);

    // One that had everything is told the end at once.
    let last = timeline.last().unwrap()["seq"].as_i64().unwrap();
    let events = follow(&app, &customer, id, Some(&last.to_string()))
        .await
        .read_to_end()
        .await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["status", "end"]);
    assert_well_formed(&events, &delivered);

    // 0 (and an empty id) means nothing was received.
    for none in ["0", ""] {
        let events = follow(&app, &customer, id, Some(none))
            .await
            .read_to_end()
            .await;
        assert_eq!(seqs(&events).len(), timeline.len(), "{none:?}");
    }
    app.assert_no_server_errors().await;
}

async fn only_those_who_may_read_an_order_may_follow_it(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let alice = app.token("customer").await;
    let (_, bob) = app.new_client("customer").await;
    let courier = app.token("courier").await;
    let product = app.product_id(0).await;
    let order = app.create_order(&alice, &product, 1).await;
    let id = order["id"].as_str().unwrap();

    problem(open(&app, &bob, id, None).await, StatusCode::NOT_FOUND).await;
    problem(open(&app, &courier, id, None).await, StatusCode::FORBIDDEN).await;
    problem(
        open(&app, &alice, "ord_01J00000000000000000000000", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // A malformed id is answered as by GET /v1/orders/{id}.
    let expected = app.get(&alice, "/v1/orders/not-an-order").await.status();
    problem(open(&app, &alice, "not-an-order", None).await, expected).await;
    for bad in ["abc", "-1", "1.5", "99999999999999999999"] {
        let body = problem(
            open(&app, &alice, id, Some(bad)).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(fields(&body), ["Last-Event-ID"], "{bad:?}: {body}");
    }

    // Its customer, the seller of its product and an admin may.
    let seller = app.token("seller").await;
    let admin = app.token("admin").await;
    for token in [&alice, &seller, &admin] {
        let mut stream = follow(&app, token, id, None).await;
        let first = stream.next().await.unwrap();
        assert_eq!(first.event, "order.created");
        assert_eq!(first.seq(), Some(1));
    }
    app.assert_no_server_errors().await;
}

async fn a_declined_card_streams_to_cancelled_with_its_reason_then_ends(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(1).await;
    let mut body = order_body(&product, 1);
    body["payment"]["token"] = json!("tok_declined");
    let response = app.post_json(&customer, "/v1/orders", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();

    let events = follow(&app, &customer, id, None).await.read_to_end().await;

    assert_well_formed(&events, &status(id, "cancelled", Some("payment_failed")));
    let own = own_types(&events);
    assert_eq!(own.first(), Some(&"order.created"));
    assert_eq!(own.last(), Some(&"order.cancelled"));
    assert!(!own.contains(&"order.paid"), "{own:?}");
    assert!(types(&events).contains(&"payment.failed"));
    app.assert_no_server_errors().await;
}

async fn a_stream_opened_while_the_order_is_pending_receives_what_happens_later(backend: Backend) {
    // No courier: the order waits at paid until this test picks it up.
    let app = TestApp::spawn_on(backend).await;
    let customer = app.token("customer").await;
    let product = app.product_id(2).await;
    let order = app.create_order(&customer, &product, 1).await;
    let id = order["id"].as_str().unwrap();

    let mut stream = follow(&app, &customer, id, None).await;
    // Perhaps not even order.created yet: the timeline is written as the
    // bus delivers.
    let first_batch = stream.until(|e| !e.is_entry()).await;
    let had = seqs(&first_batch).into_iter().max().unwrap_or(0);
    assert!(!types(&first_batch).contains(&"order.shipped"));

    app.wait_for_status(&customer, id, "paid").await;
    app.pick_up(id).await;

    // Both the entry and the status: either may come first.
    let (mut entry, mut told) = (false, false);
    let later = stream
        .until(|e| {
            entry |= e.event == "order.shipped";
            told |= e.event == "status" && e.json() == status(id, "shipped", None);
            entry && told
        })
        .await;
    let later_seqs = seqs(&later);
    assert_eq!(later_seqs.first(), Some(&(had + 1)), "{later:#?}");
    assert!(later_seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(types(&later).contains(&"shipment.picked_up"), "{later:#?}");
    // The order is not final: the stream stays open.
    assert!(later.iter().all(|e| e.event != "end"));
    drop(stream);
    app.assert_no_server_errors().await;
}

on_both_backends! {
    a_customer_follows_its_order_from_creation_to_delivery_and_the_stream_ends,
    a_client_that_reconnects_with_its_last_event_id_gets_only_later_entries,
    only_those_who_may_read_an_order_may_follow_it,
    a_declined_card_streams_to_cancelled_with_its_reason_then_ends,
    a_stream_opened_while_the_order_is_pending_receives_what_happens_later,
}
