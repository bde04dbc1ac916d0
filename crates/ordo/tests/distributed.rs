//! The distributed mode: every service its own processes, on PostgreSQL
//! and NATS JetStream, under load and faults. Each test ends with every
//! acknowledged order present, every order final and the invariant
//! checker finding nothing.
//!
//! They need `ORDO_TEST_DATABASE_URL` and `ORDO_TEST_NATS_URL` (and
//! `nats-server`, or `ORDO_TEST_NATS_SERVER`, for the tests that run their
//! own); without them they say so and pass. They run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, ClusterSpec, DistributedEnv, EventStream, Load, LoadSpec, NATS_URL_VARIABLE,
    NatsCluster, NatsServer, SERVICES, exclusive,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The outcome of a load run is sane, not only consistent: the happy
/// path and the declined-card path both ran.
fn assert_both_paths_ran(summary: &common::cluster::Summary) {
    assert!(summary.delivered > 0, "no order was delivered: {summary}");
    assert!(
        summary.cancelled("payment_failed") > 0,
        "no declined card cancelled its order: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarts_on_its_port_and_store_and_a_three_node_cluster_survives_losing_a_node()
 {
    let _exclusive = exclusive().await;
    if std::env::var_os(NATS_URL_VARIABLE).is_none() {
        eprintln!("skipped: set ORDO_TEST_DATABASE_URL and ORDO_TEST_NATS_URL");
        return;
    }
    use async_nats::jetstream::{self, stream};

    async fn messages(urls: &str, name: &str) -> u64 {
        let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let js = jetstream::new(client);
        js.get_stream(name)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .messages
    }

    // One server: a stop and a start on the same port and store keep the stream.
    let mut server = NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "HARNESS".into(),
        subjects: vec!["harness.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..5 {
        js.publish("harness.one", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    server.stop().await;
    assert!(async_nats::connect(server.url()).await.is_err());
    server.start_again().await;
    assert_eq!(messages(&server.url(), "HARNESS").await, 5);
    server.kill_9();
    server.start_again().await;
    assert!(server.is_running());

    // Three nodes: a stream on all three outlives its leader.
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    eprintln!("3-node cluster formed in {:?}", started.elapsed());
    let urls = cluster.urls();
    let js = jetstream::new(
        async_nats::connect(urls.split(',').collect::<Vec<_>>())
            .await
            .unwrap(),
    );
    js.create_stream(stream::Config {
        name: "HARNESS".into(),
        subjects: vec!["harness.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..10 {
        js.publish("harness.three", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let leader = cluster
        .stream_leader("HARNESS")
        .await
        .expect("a node leads the stream");
    cluster.kill_9(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut published = 0;
    while published < 10 {
        // Acks fail until a new leader is elected.
        let ack = async {
            js.publish("harness.three", format!("after {published}").into())
                .await?
                .await
                .map_err(async_nats::Error::from)
        };
        if ack.await.is_ok() {
            published += 1;
        } else {
            assert!(Instant::now() < deadline, "no new stream leader in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let survivors: Vec<String> = cluster
        .nodes
        .iter_mut()
        .filter_map(|n| n.is_running().then(|| n.url()))
        .collect();
    assert_eq!(survivors.len(), 2);
    assert_eq!(messages(&survivors.join(","), "HARNESS").await, 20);
    cluster.start_again(leader).await;
    cluster.wait_for_meta_leader().await;
}

/// Each process serves its own services' routes and, whatever they are,
/// tokens, health (the bus connected) and metrics (its consumers' lag).
async fn assert_each_process_serves_its_routes(cluster: &mut Cluster) {
    let customer = cluster.token("customer").await;
    let admin = cluster.token("admin").await;
    let http = cluster.http.clone();
    let c = &cluster.credentials["customer"];
    let owned = |service: &str, path: &str| match path {
        "/v1/orders" => service == "orders",
        "/v1/products" => service == "inventory",
        _ => true,
    };
    for service in SERVICES {
        let base = cluster.base(service, 0);
        let token = http
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c["client_id"].as_str().unwrap()),
                ("client_secret", c["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), StatusCode::OK, "{service} issues tokens");
        let ready: Value = http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{service}: {ready}");
        assert_eq!(ready["checks"]["bus"], "ok", "{service}: {ready}");
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("ordo_bus_consumer_lag{consumer=\""),
            "{service} reports its consumers' lag"
        );
        let bus: Value = http
            .get(format!("{base}/v1/admin/outbox"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let outboxes: Vec<&str> = bus["outboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["service"].as_str().unwrap())
            .collect();
        assert_eq!(outboxes, [service], "{service} relays its own outbox only");
        for path in ["/v1/orders", "/v1/products"] {
            let status = http
                .get(format!("{base}{path}"))
                .bearer_auth(&customer)
                .send()
                .await
                .unwrap()
                .status();
            let expected = if owned(service, path) {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(status, expected, "GET {path} on a {service} process");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_service_take_1000_orders_and_the_invariants_hold() {
    let _exclusive = exclusive().await;
    let Some(env) = DistributedEnv::get().await else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterSpec::on_shared_nats(
        env.database.url(),
        &env.shared_nats,
    ))
    .await;
    eprintln!("cluster serving in {:?}", started.elapsed());
    assert_each_process_serves_its_routes(&mut cluster).await;

    let load = Load::start(&mut cluster, LoadSpec::default()).await;
    let report = load.finish().await;
    assert_eq!(report.acknowledged.len(), 1000, "every order was accepted");
    assert!(report.unresolved.is_empty());
    let summary = cluster.settle_and_check(&report).await;
    assert_both_paths_ran(&summary);
    cluster.stop_all().await;
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_of_each_service_killed_mid_run_loses_nothing() {
    let _exclusive = exclusive().await;
    let Some(env) = DistributedEnv::get().await else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterSpec::on_shared_nats(
        env.database.url(),
        &env.shared_nats,
    ))
    .await;
    let spec = LoadSpec {
        orders: 600,
        ..LoadSpec::default()
    };
    let mut load = Load::start(&mut cluster, spec).await;
    load.wait_for(300).await;
    for service in SERVICES {
        cluster.kill_9(service, 0);
    }
    let at_kill = load.acknowledged();
    eprintln!("killed replica 0 of each service at {at_kill} acknowledged orders");
    let report = load.finish().await;
    assert!(
        report.acknowledged.len() > at_kill,
        "the surviving orders replica took orders after the kill"
    );
    assert!(
        report.retries > 0,
        "requests to the killed replica were retried"
    );
    // A key left in flight by the killed replica lapses just after the
    // request timeout: its retry is answered like any other.
    assert!(
        report.unresolved.is_empty(),
        "keys left in flight by the killed replica were never answered: {:?}",
        report.unresolved
    );
    assert_eq!(report.acknowledged.len(), 600);
    let summary = cluster.settle_and_check(&report).await;
    assert_both_paths_ran(&summary);
    // The killed replicas come back on their data dirs and find nothing
    // left to do that would break the invariants.
    for service in SERVICES {
        cluster.restart(service, 0).await;
    }
    let summary = cluster.settle_and_check(&report).await;
    assert_both_paths_ran(&summary);
    cluster.stop_all().await;
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_ten_seconds_loses_nothing_and_applies_nothing_twice() {
    let _exclusive = exclusive().await;
    let Some(env) = DistributedEnv::get().await else {
        return;
    };
    let started = Instant::now();
    let mut nats = NatsServer::start().await;
    let mut cluster = Cluster::start(ClusterSpec::new(env.database.url(), &nats.url())).await;
    // Paced so that orders keep coming for the whole outage.
    let mut load = Load::start(
        &mut cluster,
        LoadSpec {
            orders: 600,
            rate: Some(12.0),
            ..LoadSpec::default()
        },
    )
    .await;
    load.wait_for(300).await;
    nats.stop().await;
    let at_stop = load.acknowledged();
    let outage = Instant::now();
    // Every process says it is not ready while its bus is away.
    for service in SERVICES {
        let base = cluster.base(service, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let response = cluster
                .http
                .get(format!("{base}/health/ready"))
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                let ready: Value = response.json().await.unwrap();
                assert_eq!(ready["checks"]["bus"], "not connected to NATS", "{ready}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service} still ready 5 s after NATS stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    let during = load.acknowledged() - at_stop;
    eprintln!("{during} orders acknowledged while NATS was down");
    assert!(
        during > 0,
        "orders are accepted while NATS is down (they wait in the outbox)"
    );
    nats.start_again().await;
    let at_start = load.acknowledged();
    let report = load.finish().await;
    assert_eq!(report.acknowledged.len(), 600, "every order was accepted");
    assert!(
        at_start < 600,
        "orders kept coming after NATS was back (the load must outlast the outage)"
    );
    let summary = cluster.settle_and_check(&report).await;
    assert_both_paths_ran(&summary);
    cluster.stop_all().await;
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_nats_cluster_with_a_replicated_stream_survives_losing_a_node() {
    let _exclusive = exclusive().await;
    let Some(env) = DistributedEnv::get().await else {
        return;
    };
    let started = Instant::now();
    let mut nats = NatsCluster::start(3).await;
    let mut spec = ClusterSpec::new(env.database.url(), &nats.urls());
    spec.extra_toml = "nats-replicas = 3".to_owned();
    let stream = spec.stream.clone();
    let mut cluster = Cluster::start(spec).await;
    let mut load = Load::start(
        &mut cluster,
        LoadSpec {
            orders: 600,
            ..LoadSpec::default()
        },
    )
    .await;
    load.wait_for(300).await;
    // The stream's leader is the node whose loss matters most.
    let node = nats
        .stream_leader(&stream)
        .await
        .expect("a node leads the replicated stream");
    nats.kill_9(node);
    eprintln!(
        "killed NATS node n{}, the stream's leader, at {} acknowledged orders",
        node + 1,
        load.acknowledged()
    );
    let report = load.finish().await;
    assert_eq!(report.acknowledged.len(), 600, "every order was accepted");
    let summary = cluster.settle_and_check(&report).await;
    assert_both_paths_ran(&summary);
    cluster.stop_all().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// Reads `stream` until `end`, returning the statuses it announced; fails
/// if the stream closes without `end` or says nothing for 30 s.
async fn statuses_until_end(stream: &mut EventStream, order: &str) -> Vec<String> {
    let mut statuses = Vec::new();
    loop {
        let Some(event) = stream.next(Duration::from_secs(30)).await else {
            panic!("the stream of {order} closed before `end`; statuses seen: {statuses:?}");
        };
        match event.event.as_str() {
            "status" => {
                let data: Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("status data {:?}: {e}", event.data));
                assert_eq!(data["id"], order, "{}", event.data);
                statuses.push(data["status"].as_str().unwrap().to_owned());
            }
            "end" => return statuses,
            _ => {}
        }
    }
}

/// `needles`, in this order, are a subsequence of `haystack`.
fn in_order(haystack: &[String], needles: &[&str]) -> bool {
    let mut rest = haystack.iter();
    needles.iter().all(|n| rest.any(|s| s == n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_one_orders_replica_sees_changes_made_through_the_other() {
    let _exclusive = exclusive().await;
    let Some(env) = DistributedEnv::get().await else {
        return;
    };
    let mut spec = ClusterSpec::on_shared_nats(env.database.url(), &env.shared_nats);
    spec.replicas = [2, 1, 1, 1];
    let mut cluster = Cluster::start(spec).await;
    let customer = cluster.token("customer").await;
    let (a, b) = (cluster.base("orders", 0), cluster.base("orders", 1));
    let http = cluster.http.clone();
    let place = |token: &'static str, key: &'static str| {
        let (http, b, customer) = (http.clone(), b.clone(), customer.clone());
        let product = cluster.products[0].clone();
        async move {
            let response = http
                .post(format!("{b}/v1/orders"))
                .bearer_auth(&customer)
                .header("Idempotency-Key", key)
                .json(&json!({
                    "items": [{"product_id": product, "quantity": 1}],
                    "shipping_address": {
                        "name": "Ada Lovelace", "line1": "Unter den Linden 1",
                        "city": "Berlin", "postal_code": "10117", "country": "DE"
                    },
                    "payment": {"token": token}
                }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };

    // Placed through B, followed on A to the end.
    let delivered = place("tok_visa", "sse-delivered").await;
    let mut stream = EventStream::open(&http, &a, &customer, &delivered).await;
    let statuses = statuses_until_end(&mut stream, &delivered).await;
    eprintln!("{delivered} on A: {statuses:?}");
    assert!(
        in_order(&statuses, &["paid", "shipped", "delivered"]),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some("delivered"));
    assert!(
        stream.next(Duration::from_secs(10)).await.is_none(),
        "the stream closes after `end`"
    );

    // The slow card keeps the order cancellable while A listens and B
    // cancels.
    let cancelled = place("tok_slow", "sse-cancelled").await;
    let mut stream = EventStream::open(&http, &a, &customer, &cancelled).await;
    let response = http
        .post(format!("{b}/v1/orders/{cancelled}/cancel"))
        .bearer_auth(&customer)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&response.status()),
        "cancel: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    let statuses = statuses_until_end(&mut stream, &cancelled).await;
    eprintln!("{cancelled} on A: {statuses:?}");
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("cancelled"),
        "{statuses:?}"
    );
    assert!(
        !statuses.iter().any(|s| s == "shipped" || s == "delivered"),
        "{statuses:?}"
    );

    let report = common::cluster::LoadReport {
        acknowledged: vec![delivered, cancelled],
        ..Default::default()
    };
    cluster.settle_and_check(&report).await;
    cluster.stop_all().await;
}
