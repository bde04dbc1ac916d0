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
