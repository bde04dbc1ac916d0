//! A poison event: retried, dead-lettered, listed and replayed by the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::process::cli;
use common::{TestApp, eventually};
use ordo_bus::{Consumer, Envelope, Handler, HandlerError};
use reqwest::StatusCode;
use serde_json::Value;

/// A consumer of order.created that fails while `poisoned` is set.
struct Probe {
    poisoned: AtomicBool,
    attempts: AtomicU32,
    handled: AtomicU32,
}

#[async_trait::async_trait]
impl Handler for Probe {
    async fn handle(&self, _event: &Envelope) -> Result<(), HandlerError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(anyhow::anyhow!("cannot digest this event").into());
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_dead_lettered_listed_and_delivered_once_after_a_replay() {
    let probe = Arc::new(Probe {
        poisoned: AtomicBool::new(true),
        attempts: AtomicU32::new(0),
        handled: AtomicU32::new(0),
    });
    let handler: Arc<dyn Handler> = probe.clone();
    let app = TestApp::spawn_with(
        |builder| builder.consumer(Consumer::new("test.probe", &["order.created.v1"], handler)),
        |config| config.bus_max_attempts = 4,
    )
    .await;
    let customer = app.token("customer").await;
    let order = app
        .create_order(&customer, &app.product_id(0).await, 1)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();

    // The poison does not hold up the other consumers or the outbox.
    app.wait_for_quiet_bus().await;
    assert_eq!(
        probe.attempts.load(Ordering::SeqCst),
        4,
        "exactly max_attempts attempts"
    );
    assert_eq!(probe.handled.load(Ordering::SeqCst), 0);
    let timeline = app.timeline(&customer, &order_id).await;
    assert_eq!(
        timeline[0]["type"], "order.created",
        "the other consumers went on"
    );

    let listed = cli(app.data_dir.path(), &["dlq", "list", "--json"]);
    let letters: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{listed}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "test.probe");
    assert_eq!(letter["event_type"], "order.created.v1");
    assert_eq!(letter["subject"], order_id);
    assert_eq!(letter["attempts"], 4);
    assert_eq!(letter["status"], "parked");
    assert!(letter["error"].as_str().unwrap().contains("cannot digest"));
    let table = cli(app.data_dir.path(), &["dlq", "list"]);
    assert!(table.contains("test.probe"));

    let admin = app.token("admin").await;
    let api: Value = app
        .get(&admin, "/v1/admin/dead-letters")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(api["items"][0]["id"], letter["id"]);
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ordo_dead_letters 1"), "{metrics}");

    // Fixed; the operator replays it from the command line.
    probe.poisoned.store(false, Ordering::SeqCst);
    let id = letter["id"].as_str().unwrap();
    let said = cli(app.data_dir.path(), &["dlq", "replay", id]);
    assert!(said.contains("replay requested"));
    eventually("the replay is delivered", || async {
        probe.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the letter is marked replayed", || async {
        let listed = cli(app.data_dir.path(), &["dlq", "list", "--json"]);
        listed.contains(r#""status":"replayed""#)
    })
    .await;
    assert_eq!(probe.handled.load(Ordering::SeqCst), 1, "delivered once");

    // A replayed letter is not replayed twice.
    let again = app
        .post_json(
            &admin,
            &format!("/v1/admin/dead-letters/{id}/replay"),
            &serde_json::json!({}),
        )
        .await;
    common::problem(again, StatusCode::CONFLICT).await;
    assert_eq!(probe.handled.load(Ordering::SeqCst), 1);
    app.assert_no_server_errors().await;
}

/// The stuck orders of `status` in a report, by id.
fn stuck_in<'a>(report: &'a Value, status: &str) -> Vec<&'a Value> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == status)
        .unwrap()["orders"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_payment_keeps_failing_is_stuck_in_confirmed_with_its_dead_letter() {
    // Payments runs elsewhere, and its consumer of order.confirmed fails
    // here on every attempt: the charge is dead-lettered.
    let probe = Arc::new(Probe {
        poisoned: AtomicBool::new(true),
        attempts: AtomicU32::new(0),
        handled: AtomicU32::new(0),
    });
    let handler: Arc<dyn Handler> = probe.clone();
    let app = TestApp::spawn_with(
        |builder| {
            builder.consumer(Consumer::new(
                "payments.orders",
                &["order.confirmed.v1"],
                handler,
            ))
        },
        |config| {
            config.bus_max_attempts = 3;
            config.services = ["orders", "inventory", "delivery"]
                .map(String::from)
                .to_vec();
        },
    )
    .await;
    let customer = app.token("customer").await;
    let admin = app.token("admin").await;
    let order = app
        .create_order(&customer, &app.product_id(0).await, 1)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&customer, &order_id, "confirmed").await;
    let letter_id = std::sync::Mutex::new(String::new());
    eventually("the charge is dead-lettered", || async {
        let letters: Value = app
            .get(&admin, "/v1/admin/dead-letters")
            .await
            .json()
            .await
            .unwrap();
        match letters["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["subject"] == order_id.as_str())
        {
            Some(l) => {
                *letter_id.lock().unwrap() = l["id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    })
    .await;

    // Not stuck yet by the default thresholds (two minutes in confirmed).
    let report: Value = app
        .get(&admin, "/v1/admin/stuck-orders")
        .await
        .json()
        .await
        .unwrap();
    assert!(stuck_in(&report, "confirmed").is_empty(), "{report}");
    assert_eq!(
        report["unchecked"],
        serde_json::json!(["gateway_breaker_open"]),
        "payments runs elsewhere"
    );

    let path = "/v1/admin/stuck-orders?confirmed=200ms&limit=10";
    eventually("the order is stuck past a short threshold", || async {
        let report: Value = app.get(&admin, path).await.json().await.unwrap();
        !stuck_in(&report, "confirmed").is_empty()
    })
    .await;
    let report: Value = app.get(&admin, path).await.json().await.unwrap();
    let stuck = stuck_in(&report, "confirmed");
    assert_eq!(stuck.len(), 1, "{report}");
    let stuck = stuck[0];
    assert_eq!(stuck["id"], order_id.as_str());
    assert_eq!(stuck["status"], "confirmed");
    assert_eq!(stuck["customer"], order["customer_id"]);
    assert_eq!(stuck["total"], order["total"]);
    assert!(stuck["since"].is_string());
    assert!(stuck["age_ms"].as_u64().unwrap() >= 200);
    let causes = stuck["causes"].as_array().unwrap();
    let dead_letter = causes
        .iter()
        .find(|c| c["kind"] == "dead_letter")
        .unwrap_or_else(|| panic!("a dead_letter cause: {stuck}"));
    assert_eq!(
        dead_letter["dead_letter_ids"],
        serde_json::json!([letter_id.lock().unwrap().clone()])
    );
    assert_eq!(
        dead_letter["consumers"],
        serde_json::json!(["payments.orders"])
    );
    assert_eq!(causes.len(), 1, "{stuck}");
    assert_eq!(
        stuck["actions"],
        serde_json::json!(["replay_dead_letters", "cancel"])
    );
    let confirmed = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "confirmed")
        .unwrap();
    assert_eq!(confirmed["threshold_ms"], 200);
    assert_eq!(confirmed["more"], false);

    // Admins only; a bad threshold is named.
    let response = app.get(&customer, "/v1/admin/stuck-orders").await;
    common::problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .get(&admin, "/v1/admin/stuck-orders?paid=soon&limit=5")
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = common::problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(common::fields(&problem), ["paid"]);
    let response = app.get(&admin, "/v1/admin/stuck-orders?shiped=1m").await;
    common::problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}
