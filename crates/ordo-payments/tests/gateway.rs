//! The HTTP gateway client against the simulator on a real port: each test
//! token, retries with the same idempotency key, and the circuit breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use common::{ManualClock, closed_port, dec, eur, fast_gateway, fast_simulator, serve};
use ordo_payments::gateway::{
    AuthorizeRequest, CaptureRequest, GatewayConfig, RefundRequest, VoidRequest,
};
use ordo_payments::simulator::{TOK_DECLINED, TOK_SLOW, TOK_TIMEOUT, TOK_TRANSIENT, TOK_VISA};
use ordo_payments::{BreakerState, FaultShares, Gateway, GatewayError, HttpGateway, Simulator};

fn authorize(key: &str, token: &str, amount: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.to_owned(),
        token: token.to_owned(),
        amount: dec(amount),
        currency: eur(),
    }
}

fn capture(key: &str, authorization_id: &str, amount: &str) -> CaptureRequest {
    CaptureRequest {
        idempotency_key: key.to_owned(),
        authorization_id: authorization_id.to_owned(),
        amount: dec(amount),
    }
}

fn refund(key: &str, capture_id: &str, amount: &str) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.to_owned(),
        capture_id: capture_id.to_owned(),
        amount: dec(amount),
    }
}

async fn setup() -> (Simulator, HttpGateway) {
    let simulator = Simulator::new(fast_simulator());
    let url = serve(simulator.router()).await;
    (simulator, HttpGateway::new(url, fast_gateway()).unwrap())
}

#[tokio::test]
async fn a_visa_card_is_authorized_captured_and_refunded_in_parts() {
    let (simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    assert_eq!(auth.amount, dec("20.00"));
    let cap = gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    gateway
        .refund(refund("r1", &cap.capture_id, "5.00"))
        .await
        .unwrap();
    gateway
        .refund(refund("r2", &cap.capture_id, "15.00"))
        .await
        .unwrap();
    let too_much = gateway
        .refund(refund("r3", &cap.capture_id, "0.01"))
        .await
        .unwrap_err();
    assert_eq!(too_much, GatewayError::declined("amount_exceeds_capture"));
    let stats = simulator.stats();
    assert_eq!(stats.captures, 1);
    assert_eq!(stats.refunds, 2);
    assert_eq!(stats.refunded_total, dec("20.00"));
    assert_eq!(gateway.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_declined_card_is_a_final_answer_and_is_not_retried() {
    let (simulator, gateway) = setup().await;
    let err = gateway
        .authorize(authorize("a1", TOK_DECLINED, "20.00"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("card_declined"));
    assert_eq!(simulator.stats().requests, 1);
    assert_eq!(gateway.stats().retries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_unknown_token_is_declined() {
    let (_simulator, gateway) = setup().await;
    let err = gateway
        .authorize(authorize("a1", "tok_unknown", "20.00"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("invalid_token"));
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_the_same_key_and_succeeds() {
    let (simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_TRANSIENT, "20.00"))
        .await
        .unwrap();
    // Each call with a new key fails once, then goes through.
    gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    let stats = simulator.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.captures, 1);
    assert_eq!(gateway.stats().retries.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_capture_whose_answer_timed_out_is_retried_and_charged_exactly_once() {
    let (simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_TIMEOUT, "20.00"))
        .await
        .unwrap();
    let first = gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(gateway.stats().retries.load(Ordering::Relaxed), 1);
    // Asked again with the same key, the gateway answers with that capture.
    let again = gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(simulator.stats().captures, 1);
    assert_eq!(simulator.stats().captured_total, dec("20.00"));
}

#[tokio::test]
async fn a_slow_gateway_answers_within_the_timeout_without_a_retry() {
    let (simulator, gateway) = setup().await;
    gateway
        .authorize(authorize("a1", TOK_SLOW, "20.00"))
        .await
        .unwrap();
    assert_eq!(simulator.stats().requests, 1);
    assert_eq!(gateway.stats().retries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_repeated_key_gets_the_first_answer_and_another_key_cannot_capture_twice() {
    let (simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    let again = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    assert_eq!(again, auth);
    let cap = gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    let err = gateway
        .capture(capture("c2", &auth.authorization_id, "20.00"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("already_captured"));
    let void = gateway
        .void(VoidRequest {
            idempotency_key: "v1".to_owned(),
            authorization_id: auth.authorization_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(void, GatewayError::declined("already_captured"));
    // The same key for another request is refused, not replayed.
    let reused = gateway
        .refund(refund("c1", &cap.capture_id, "1.00"))
        .await
        .unwrap_err();
    assert_eq!(reused, GatewayError::declined("idempotency_key_reused"));
    let stats = simulator.stats();
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.captures, 1);
}

#[tokio::test]
async fn an_authorization_is_voided_and_then_cannot_be_captured() {
    let (simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    gateway
        .void(VoidRequest {
            idempotency_key: "v1".to_owned(),
            authorization_id: auth.authorization_id.clone(),
        })
        .await
        .unwrap();
    let err = gateway
        .capture(capture("c1", &auth.authorization_id, "20.00"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("authorization_voided"));
    assert_eq!(simulator.stats().voids, 1);
    assert_eq!(simulator.stats().captures, 0);
}

#[tokio::test]
async fn nothing_is_captured_beyond_the_authorization() {
    let (_simulator, gateway) = setup().await;
    let auth = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    let err = gateway
        .capture(capture("c1", &auth.authorization_id, "20.01"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("amount_exceeds_authorization"));
}

#[tokio::test]
async fn injected_faults_hit_charges_whatever_their_token_and_never_voids_or_refunds() {
    let (simulator, gateway) = setup().await;
    let faults = simulator.faults();
    let auth = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();

    faults
        .set(FaultShares {
            decline: 100,
            ..FaultShares::default()
        })
        .unwrap();
    let err = gateway
        .authorize(authorize("a2", TOK_VISA, "20.00"))
        .await
        .unwrap_err();
    assert_eq!(err, GatewayError::declined("card_declined"));
    assert_eq!(gateway.stats().retries.load(Ordering::Relaxed), 0);
    // A void is never faulted: a charge can always be unwound.
    gateway
        .void(VoidRequest {
            idempotency_key: "v1".to_owned(),
            authorization_id: auth.authorization_id.clone(),
        })
        .await
        .unwrap();

    faults
        .set(FaultShares {
            transient: 100,
            ..FaultShares::default()
        })
        .unwrap();
    let err = gateway
        .authorize(authorize("a3", TOK_VISA, "20.00"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable { .. }), "{err:?}");
    assert_eq!(simulator.stats().authorizations, 1, "nothing was done");

    // A timed-out capture was made: once the faults are off, a retry with
    // the same key gets it.
    faults.set(FaultShares::default()).unwrap();
    let auth = gateway
        .authorize(authorize("a4", TOK_VISA, "20.00"))
        .await
        .unwrap();
    faults
        .set(FaultShares {
            timeout: 100,
            ..FaultShares::default()
        })
        .unwrap();
    let err = gateway
        .capture(capture("c4", &auth.authorization_id, "20.00"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable { .. }), "{err:?}");
    assert_eq!(simulator.stats().captures, 1);
    faults.set(FaultShares::default()).unwrap();
    let cap = gateway
        .capture(capture("c4", &auth.authorization_id, "20.00"))
        .await
        .unwrap();
    assert_eq!(cap.amount, dec("20.00"));
    assert_eq!(simulator.stats().captures, 1);

    faults
        .set(FaultShares {
            slow: 100,
            ..FaultShares::default()
        })
        .unwrap();
    let before = std::time::Instant::now();
    gateway
        .authorize(authorize("a5", TOK_VISA, "20.00"))
        .await
        .unwrap();
    assert!(before.elapsed() >= fast_simulator().slow_delay);
}

fn breaker_config(threshold: u32) -> GatewayConfig {
    GatewayConfig {
        breaker_threshold: threshold,
        breaker_cooldown: Duration::from_secs(30),
        ..fast_gateway()
    }
}

#[tokio::test]
async fn an_unreachable_gateway_opens_the_breaker_which_then_fails_fast() {
    let clock = ManualClock::new();
    let gateway = HttpGateway::with_clock(closed_port(), breaker_config(3), clock.clone()).unwrap();
    let err = gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable { .. }), "{err:?}");
    assert_eq!(gateway.breaker_state(), BreakerState::Open);
    let requests = gateway.stats().requests.load(Ordering::Relaxed);
    assert_eq!(requests, 3);

    let err = gateway
        .authorize(authorize("a2", TOK_VISA, "20.00"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Unavailable { reason } if reason.contains("circuit open")),
        "{err:?}"
    );
    assert_eq!(gateway.stats().requests.load(Ordering::Relaxed), requests);
    assert_eq!(gateway.stats().short_circuited.load(Ordering::Relaxed), 1);
    assert_eq!(gateway.stats().breaker_opened.load(Ordering::Relaxed), 1);
}

/// The simulator behind a switch: while `down`, every request gets a 503.
async fn switchable() -> (String, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let router = Simulator::new(fast_simulator())
        .router()
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let down = flag.clone();
                async move {
                    if down.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        next.run(req).await
                    }
                }
            },
        ));
    (serve(router).await, down)
}

#[tokio::test]
async fn the_breaker_recovers_once_a_probe_after_the_cool_down_succeeds() {
    let (url, down) = switchable().await;
    let clock = ManualClock::new();
    let gateway = HttpGateway::with_clock(url, breaker_config(3), clock.clone()).unwrap();
    assert!(
        gateway
            .authorize(authorize("a1", TOK_VISA, "20.00"))
            .await
            .is_err()
    );
    assert_eq!(gateway.breaker_state(), BreakerState::Open);

    down.store(false, Ordering::SeqCst);
    // Back up, but the breaker holds until its cool-down is over.
    assert!(
        gateway
            .authorize(authorize("a1", TOK_VISA, "20.00"))
            .await
            .is_err()
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(gateway.breaker_state(), BreakerState::HalfOpen);
    gateway
        .authorize(authorize("a1", TOK_VISA, "20.00"))
        .await
        .unwrap();
    assert_eq!(gateway.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let (url, _down) = switchable().await;
    let clock = ManualClock::new();
    let config = GatewayConfig {
        retry: ordo_bus::RetryPolicy {
            max_attempts: 1,
            ..fast_gateway().retry
        },
        ..breaker_config(1)
    };
    let gateway = HttpGateway::with_clock(url, config, clock.clone()).unwrap();
    assert!(
        gateway
            .authorize(authorize("a1", TOK_VISA, "1.00"))
            .await
            .is_err()
    );
    assert_eq!(gateway.breaker_state(), BreakerState::Open);
    clock.advance(Duration::from_secs(30));
    assert!(
        gateway
            .authorize(authorize("a1", TOK_VISA, "1.00"))
            .await
            .is_err()
    );
    assert_eq!(gateway.breaker_state(), BreakerState::Open);
    assert_eq!(gateway.stats().requests.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn the_breaker_state_is_published_as_a_metric() {
    let clock = ManualClock::new();
    let gateway =
        Arc::new(HttpGateway::with_clock(closed_port(), breaker_config(1), clock.clone()).unwrap());
    let mut registry = prometheus_client::registry::Registry::default();
    ordo_payments::metrics::register(&mut registry, gateway.clone());
    let scrape = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    assert!(scrape(&registry).contains("ordo_payments_gateway_breaker_state 0"));
    let _ = gateway.authorize(authorize("a1", TOK_VISA, "1.00")).await;
    let text = scrape(&registry);
    assert!(
        text.contains("ordo_payments_gateway_breaker_state 2"),
        "{text}"
    );
    assert!(
        text.contains("ordo_payments_gateway_breaker_opened_total 1"),
        "{text}"
    );
}
