//! The distributed mode as a set of real processes: NATS servers (one, or
//! a three-node cluster) and `ordo serve --services <one service>` replicas
//! on one PostgreSQL database, a load driver that places orders through the
//! orders replicas, and the checks that end every run.
//!
//! The tests that use it need `ORDO_TEST_DATABASE_URL` (a PostgreSQL server)
//! and `ORDO_TEST_NATS_URL` (a NATS server with JetStream); without either
//! they say so and pass. With both set, anything missing is a failure.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{outbox_backlogs, wait_until_every_order_is_final};
use ordo_app::config::{Config, Secret};
use ordo_app::stores::Stores;
use ordo_invariants::Checker;
use ordo_kernel::{OrderId, ProductId};
use ordo_orders::domain::OrderStatus;
use ordo_postgres::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const NATS_URL_VARIABLE: &str = "ORDO_TEST_NATS_URL";
pub const NATS_SERVER_VARIABLE: &str = "ORDO_TEST_NATS_SERVER";
pub const SERVICES: [&str; 4] = ["orders", "inventory", "payments", "delivery"];

/// The distributed tests start about nine processes each on a two-core
/// machine and a PostgreSQL server with 100 connections: one at a time.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for a whole distributed test.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// What a distributed test runs on: a fresh database and the shared NATS
/// server. `None` (having said so) when either variable is unset.
pub struct DistributedEnv {
    pub database: TestDatabase,
    /// `ORDO_TEST_NATS_URL`.
    pub shared_nats: String,
}

impl DistributedEnv {
    pub async fn get() -> Option<Self> {
        let (Ok(_), Ok(shared_nats)) = (
            std::env::var(ordo_postgres::testing::URL_VARIABLE),
            std::env::var(NATS_URL_VARIABLE),
        ) else {
            eprintln!("skipped: set ORDO_TEST_DATABASE_URL and ORDO_TEST_NATS_URL");
            return None;
        };
        assert_jetstream_answers(&shared_nats).await;
        let database = TestDatabase::create()
            .await
            .expect("ORDO_TEST_DATABASE_URL names the test server");
        Some(Self {
            database,
            shared_nats,
        })
    }
}

/// A unique stream name and subject prefix, as `(ORDO_T_<id>, ordo_t_<id>)`.
pub fn unique_stream() -> (String, String) {
    let id = ulid::Ulid::new().to_string();
    (
        format!("ORDO_T_{id}"),
        format!("ordo_t_{}", id.to_lowercase()),
    )
}

fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os(NATS_SERVER_VARIABLE)
        .map_or_else(|| PathBuf::from("/usr/sbin/nats-server"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} does not exist: install nats-server or set {NATS_SERVER_VARIABLE}",
        path.display()
    );
    path
}

/// Ports that were free a moment ago, all distinct.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {} failed", child.id());
}

/// Waits for `child` to exit, for at most `within`, without blocking the
/// runtime.
async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("({} is unreadable)", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn append_log(path: &Path, marker: &str) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "----- {marker} -----").unwrap();
    file
}

// ---------------------------------------------------------------- NATS --

#[derive(Debug, Clone)]
struct Routing {
    cluster_name: String,
    server_name: String,
    port: u16,
    routes: Vec<u16>,
}

/// A `nats-server` with JetStream on free loopback ports, its store in a
/// temporary directory; killed when dropped.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    routing: Option<Routing>,
    store: TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl NatsServer {
    /// A standalone server, serving once this returns.
    pub async fn start() -> Self {
        let ports = free_ports(2);
        let mut server = Self::new(ports[0], ports[1], None);
        server.launch();
        server.wait_healthy().await;
        server
    }

    fn new(port: u16, monitor_port: u16, routing: Option<Routing>) -> Self {
        Self {
            binary: nats_server_binary(),
            port,
            monitor_port,
            routing,
            store: tempfile::tempdir().unwrap(),
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn monitor(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn name(&self) -> String {
        self.routing
            .as_ref()
            .map_or_else(|| "nats".to_owned(), |r| r.server_name.clone())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name());
        let log = append_log(&self.log_path(), "start");
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-js")
            .arg("-sd")
            .arg(self.store.path().join("jetstream"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(r) = &self.routing {
            let routes: Vec<String> = r
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", &r.cluster_name])
                .args(["--server_name", &r.server_name])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", r.port)])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| {
            panic!("starting {}: {e}", self.binary.display());
        }));
    }

    async fn get_json(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.monitor()))
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        response.json().await.ok()
    }

    /// Until `/healthz?js-enabled-only=true` answers 200.
    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = self
                .http
                .get(format!("{}/healthz?js-enabled-only=true", self.monitor()))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if healthy {
                return;
            }
            assert!(
                self.is_running(),
                "{} exited while starting:\n{}",
                self.name(),
                tail(&self.log_path(), 30)
            );
            assert!(
                Instant::now() < deadline,
                "{} is not healthy after 30 s:\n{}",
                self.name(),
                tail(&self.log_path(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The JetStream meta leader this server knows of.
    pub async fn meta_leader(&self) -> Option<String> {
        let jsz = self.get_json("/jsz").await?;
        jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// The server that leads `stream`, as this server sees it.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        let jsz = self
            .get_json("/jsz?accounts=true&streams=true&config=true")
            .await?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned))
    }

    /// SIGTERM, and waits for the exit.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        sigterm(&child);
        let exit = wait_exit(&mut child, Duration::from_secs(20)).await;
        if exit.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not stop within 20 s of SIGTERM:\n{}",
                self.name(),
                tail(&self.log_path(), 30)
            );
        }
    }

    /// On the same ports and store, serving once this returns.
    pub async fn start_again(&mut self) {
        self.launch();
        self.wait_healthy().await;
    }

    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} log (last 20 lines) -----\n{}",
                self.name(),
                tail(&self.log_path(), 20)
            );
        }
    }
}

/// NATS servers routed into one cluster with JetStream.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// `n` nodes `n1…`, serving, with a JetStream meta leader, once this
    /// returns.
    pub async fn start(n: usize) -> Self {
        let ports = free_ports(3 * n);
        let cluster_name = format!("ordo_t_{}", ulid::Ulid::new().to_string().to_lowercase());
        let cluster_ports: Vec<u16> = (0..n).map(|i| ports[3 * i + 2]).collect();
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let routing = Routing {
                    cluster_name: cluster_name.clone(),
                    server_name: format!("n{}", i + 1),
                    port: cluster_ports[i],
                    routes: cluster_ports
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| *p)
                        .collect(),
                };
                NatsServer::new(ports[3 * i], ports[3 * i + 1], Some(routing))
            })
            .collect();
        for node in &mut nodes {
            node.launch();
        }
        for node in &mut nodes {
            node.wait_healthy().await;
        }
        let cluster = Self { nodes };
        cluster.wait_for_meta_leader().await;
        cluster
    }

    /// Until every running node names the same meta leader.
    pub async fn wait_for_meta_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for node in &self.nodes {
                if node.child.is_some() {
                    leaders.push(node.meta_leader().await);
                }
            }
            if leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster has no JetStream meta leader after 30 s: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill_9(&mut self, i: usize) {
        self.nodes[i].kill_9();
    }

    pub async fn start_again(&mut self, i: usize) {
        self.nodes[i].start_again().await;
    }

    /// The index of the node leading `stream`, when a running node knows.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            if let Some(leader) = node.stream_leader(stream).await {
                return self.nodes.iter().position(|n| n.name() == leader);
            }
        }
        None
    }
}

async fn nats_client(urls: &str) -> async_nats::Client {
    let addrs: Vec<&str> = urls.split(',').map(str::trim).collect();
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs)
        .await
        .unwrap_or_else(|e| panic!("connecting to NATS at {urls}: {e}"))
}

/// Fails loudly unless JetStream answers at `urls`.
pub async fn assert_jetstream_answers(urls: &str) {
    let client = nats_client(urls).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    .map_err(|_| "timed out".to_owned())
    .and_then(|r| r.map_err(|e| e.to_string()))
    .and_then(|m| serde_json::from_slice::<Value>(&m.payload).map_err(|e| e.to_string()));
    match answer {
        Ok(info) if info.get("error").is_none() => {}
        Ok(info) => panic!("{NATS_URL_VARIABLE}={urls} answers but JetStream does not: {info}"),
        Err(e) => panic!("{NATS_URL_VARIABLE}={urls} answers but JetStream does not: {e}"),
    }
}

/// Deletes `stream`; a stream that was never created is fine.
pub async fn delete_stream(urls: &str, stream: &str) -> Result<(), String> {
    let client = nats_client(urls).await;
    let js = async_nats::jetstream::new(client);
    match js.delete_stream(stream).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Deletes a stream of a shared server when dropped.
struct StreamCleanup {
    urls: String,
    stream: String,
}

impl Drop for StreamCleanup {
    fn drop(&mut self) {
        let (urls, stream) = (self.urls.clone(), self.stream.clone());
        // Drop may run inside a runtime; the cleanup gets its own.
        let result = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), delete_stream(&urls, &stream))
                    .await
                    .map_err(|_| "timed out".to_owned())?
            })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete stream {}: {e}", self.stream),
            Err(_) => eprintln!("could not delete stream {}", self.stream),
        }
    }
}

// ------------------------------------------------------------- replicas --

/// How a cluster of `ordo` processes is set up.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub database_url: String,
    /// One URL, or several comma-separated.
    pub nats_urls: String,
    pub stream: String,
    pub subject_prefix: String,
    /// Replicas of orders, inventory, payments, delivery.
    pub replicas: [usize; 4],
    /// `ordo.toml` lines added to the defaults (keys the defaults lack).
    pub extra_toml: String,
    pub courier_sim: String,
    /// Delete the stream when the cluster is dropped (a shared server).
    pub delete_stream_at_end: bool,
}

impl ClusterSpec {
    /// Two replicas of each service, a unique stream.
    pub fn new(database_url: &str, nats_urls: &str) -> Self {
        let (stream, subject_prefix) = unique_stream();
        Self {
            database_url: database_url.to_owned(),
            nats_urls: nats_urls.to_owned(),
            stream,
            subject_prefix,
            replicas: [2; 4],
            extra_toml: String::new(),
            courier_sim: "50ms".to_owned(),
            delete_stream_at_end: false,
        }
    }

    /// On a server other tests share: the stream goes at the end.
    pub fn on_shared_nats(database_url: &str, nats_url: &str) -> Self {
        Self {
            delete_stream_at_end: true,
            ..Self::new(database_url, nats_url)
        }
    }

    pub fn toml(&self) -> String {
        format!(
            "nats-stream = \"{}\"\n\
             nats-subject-prefix = \"{}\"\n\
             nats-duplicate-window = \"2m\"\n\
             nats-ack-wait = \"5s\"\n\
             database-pool-size = 3\n\
             request-timeout = \"5s\"\n\
             bus-retry-base = \"20ms\"\n\
             bus-retry-max = \"500ms\"\n\
             bus-max-attempts = 30\n\
             shutdown-grace = \"2s\"\n\
             dlq-poll-interval = \"200ms\"\n\
             {}\n",
            self.stream, self.subject_prefix, self.extra_toml
        )
    }
}

/// What every `ordo` process of a cluster is started with.
#[derive(Debug, Clone)]
struct Launch {
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Launch {
    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDO_") {
                command.env_remove(key);
            }
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }
}

/// One `ordo serve --services <service>` process and its data dir.
pub struct Replica {
    pub service: &'static str,
    pub index: usize,
    pub data_dir: PathBuf,
    demo: bool,
    child: Option<Child>,
    base: String,
    starts: usize,
}

impl Replica {
    fn name(&self) -> String {
        format!("{}-{}", self.service, self.index)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("stderr.log")
    }

    /// Spawns the process; the receiver yields its base URL once it serves.
    fn launch(&mut self, launch: &Launch) -> tokio::sync::oneshot::Receiver<String> {
        assert!(self.child.is_none(), "{} is already running", self.name());
        self.starts += 1;
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = append_log(&self.log_path(), &format!("start {}", self.starts));
        let mut command = launch.command(&self.data_dir);
        command
            .args(["serve", "--services", self.service])
            .env("ORDO_DEMO", if self.demo { "true" } else { "false" })
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Read to the end: a full pipe would block the process.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("Ordo is serving on ")
                    && let Some(tx) = tx.take()
                {
                    let base = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(base.to_owned());
                }
            }
        });
        self.child = Some(child);
        rx
    }

    /// Waits for the line that says it serves; fails if it exits first.
    async fn ready(&mut self, mut serving: tokio::sync::oneshot::Receiver<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut open = true;
        loop {
            if open {
                match tokio::time::timeout(Duration::from_millis(100), &mut serving).await {
                    Ok(Ok(base)) => {
                        self.base = base;
                        return;
                    }
                    // Stdout closed: the process is exiting.
                    Ok(Err(_)) => open = false,
                    Err(_) => {}
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name(),
                    tail(&self.log_path(), 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} does not serve after 120 s:\n{}",
                self.name(),
                tail(&self.log_path(), 40)
            );
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn kill_9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; the exit status, or `None` if it did not exit in time
    /// (then it is killed).
    async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        sigterm(&child);
        let exit = wait_exit(&mut child, within).await;
        if exit.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        exit
    }
}

/// The services of the distributed mode, each replica its own process,
/// with the test's own view of every store.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub http: reqwest::Client,
    /// The demo inventory replica's data dir holds the credentials.
    pub credentials: Value,
    /// The demo catalog's product ids.
    pub products: Vec<String>,
    pub stores: Stores,
    replicas: BTreeMap<(&'static str, usize), Replica>,
    /// The orders replicas' base URLs, kept current across restarts.
    orders_targets: Arc<RwLock<Vec<String>>>,
    launch: Launch,
    /// Dropped after the processes are killed.
    _cleanup: Option<StreamCleanup>,
    dir: TempDir,
}

impl Cluster {
    /// `ordo migrate`, the demo inventory replica, then every other
    /// replica; returns once every one serves and the catalog has reached
    /// the orders projection.
    pub async fn start(spec: ClusterSpec) -> Self {
        assert!(spec.replicas[1] >= 1, "the demo needs an inventory replica");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ordo.toml");
        std::fs::write(&config, spec.toml()).unwrap();
        let launch = Launch {
            config,
            env: vec![
                ("ORDO_DATABASE_URL".into(), spec.database_url.clone()),
                ("ORDO_NATS_URL".into(), spec.nats_urls.clone()),
                ("ORDO_COURIER_SIM".into(), spec.courier_sim.clone()),
                ("RUST_LOG".into(), "warn".into()),
            ],
        };
        let cleanup = spec.delete_stream_at_end.then(|| StreamCleanup {
            urls: spec.nats_urls.clone(),
            stream: spec.stream.clone(),
        });

        let migrate_dir = dir.path().join("migrate");
        std::fs::create_dir_all(&migrate_dir).unwrap();
        let output = launch
            .command(&migrate_dir)
            .arg("migrate")
            .env("ORDO_DEMO", "false")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ordo migrate failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );

        let mut replicas = BTreeMap::new();
        for (s, service) in SERVICES.iter().enumerate() {
            for index in 0..spec.replicas[s] {
                replicas.insert(
                    (*service, index),
                    Replica {
                        service,
                        index,
                        data_dir: dir.path().join(format!("{service}-{index}")),
                        demo: *service == "inventory" && index == 0,
                        child: None,
                        base: String::new(),
                        starts: 0,
                    },
                );
            }
        }
        let stores = open_stores(dir.path(), &spec.database_url).await;
        let mut cluster = Self {
            spec,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            credentials: Value::Null,
            products: Vec::new(),
            stores,
            replicas,
            orders_targets: Arc::new(RwLock::new(Vec::new())),
            launch,
            _cleanup: cleanup,
            dir,
        };

        // The first inventory replica creates the demo clients and catalog.
        let demo = cluster.replicas.get_mut(&("inventory", 0)).unwrap();
        let serving = demo.launch(&cluster.launch);
        demo.ready(serving).await;
        let path = demo.data_dir.join("demo-credentials.json");
        let credentials = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "the demo inventory replica wrote no {}: {e}",
                path.display()
            )
        });
        cluster.credentials = serde_json::from_slice(&credentials).unwrap();

        let mut pending = Vec::new();
        for (key, replica) in &mut cluster.replicas {
            if replica.child.is_none() {
                pending.push((*key, replica.launch(&cluster.launch)));
            }
        }
        for (key, serving) in pending {
            cluster.replicas.get_mut(&key).unwrap().ready(serving).await;
        }
        *cluster.orders_targets.write().unwrap() = (0..cluster.spec.replicas[0])
            .map(|i| cluster.base("orders", i))
            .collect();

        cluster.products = cluster.demo_products().await;
        cluster.wait_for_catalog_projection().await;
        cluster
    }

    fn replica(&mut self, service: &str, index: usize) -> &mut Replica {
        let key = *self
            .replicas
            .keys()
            .find(|(s, i)| *s == service && *i == index)
            .unwrap_or_else(|| panic!("no replica {service}-{index}"));
        self.replicas.get_mut(&key).unwrap()
    }

    /// `http://127.0.0.1:PORT` of a replica (its latest start).
    pub fn base(&self, service: &str, index: usize) -> String {
        self.replicas
            .iter()
            .find(|((s, i), _)| *s == service && *i == index)
            .map(|(_, r)| r.base.clone())
            .unwrap_or_else(|| panic!("no replica {service}-{index}"))
    }

    /// Shared with the load driver; updated when an orders replica
    /// restarts.
    pub fn orders_targets(&self) -> Arc<RwLock<Vec<String>>> {
        self.orders_targets.clone()
    }

    pub fn kill_9(&mut self, service: &str, index: usize) {
        self.replica(service, index).kill_9();
    }

    /// Stops the replica if it runs (SIGTERM), starts it again on the same
    /// data dir and waits until it serves.
    pub async fn restart(&mut self, service: &str, index: usize) {
        let launch = self.launch.clone();
        let replica = self.replica(service, index);
        if replica.is_running() {
            let _ = replica.terminate(Duration::from_secs(15)).await;
        } else {
            replica.child = None;
        }
        let serving = replica.launch(&launch);
        replica.ready(serving).await;
        let base = replica.base.clone();
        if service == "orders" {
            self.orders_targets.write().unwrap()[index] = base;
        }
    }

    /// SIGTERM to every running replica; each must exit 0 within the
    /// shutdown grace and a margin.
    pub async fn stop_all(&mut self) {
        let mut failures = Vec::new();
        for replica in self.replicas.values_mut() {
            if replica.child.is_none() {
                continue;
            }
            let name = replica.name();
            match replica.terminate(Duration::from_secs(20)).await {
                Some(status) if status.success() => {}
                Some(status) => failures.push(format!(
                    "{name} exited {status}:\n{}",
                    tail(&replica.log_path(), 20)
                )),
                None => failures.push(format!("{name} did not exit within 20 s of SIGTERM")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A token for the demo client of `role`, from any serving replica.
    pub async fn token(&mut self, role: &str) -> String {
        let c = &self.credentials[role];
        let (id, secret) = (
            c["client_id"].as_str().unwrap().to_owned(),
            c["client_secret"].as_str().unwrap().to_owned(),
        );
        let mut last = String::new();
        for replica in self.replicas.values_mut() {
            if !replica.is_running() {
                continue;
            }
            let response = self
                .http
                .post(format!("{}/oauth/token", replica.base))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                ])
                .send()
                .await;
            match response {
                Ok(r) if r.status() == StatusCode::OK => {
                    let body: Value = r.json().await.unwrap();
                    return body["access_token"].as_str().unwrap().to_owned();
                }
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
        }
        panic!("no replica gave a {role} token: {last}");
    }

    async fn demo_products(&mut self) -> Vec<String> {
        let customer = self.token("customer").await;
        let base = self.base("inventory", 0);
        let response = self
            .http
            .get(format!("{base}/v1/products?limit=100"))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/products");
        let body: Value = response.json().await.unwrap();
        let products: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!products.is_empty(), "the demo catalog is empty: {body}");
        products
    }

    /// Orders are priced from the catalog projection that
    /// product.upserted feeds through the bus.
    async fn wait_for_catalog_projection(&self) {
        let ids: Vec<ProductId> = self
            .products
            .iter()
            .map(|p| ProductId::parse(p).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let known = orders_store(&self.stores)
                .catalog(ids.clone())
                .await
                .unwrap();
            if known.len() == ids.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after 60 s the orders projection knows {} of {} demo products",
                known.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn checker(&self) -> Checker {
        checker(&self.stores)
    }

    /// Waits until every order is final, the outboxes are drained and
    /// the checker finds nothing; then checks that every acknowledged
    /// order exists and that no event was parked.
    pub async fn settle_and_check(&self, report: &LoadReport) -> Summary {
        let checker = self.checker();
        wait_until_every_order_is_final(&checker, &self.stores, Duration::from_secs(90)).await;
        self.wait_for_drained_outboxes().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let violations = checker.check(&Default::default()).await.unwrap();
            if violations.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} violations 30 s after every order was final: {violations:#?}",
                violations.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let parked = self.stores.dead_letters.list(20).await.unwrap();
        assert!(
            parked.is_empty(),
            "events were parked as dead letters: {parked:#?}"
        );
        let mut summary = Summary::default();
        for id in &report.acknowledged {
            let order = orders_store(&self.stores)
                .get(OrderId::parse(id).unwrap())
                .await
                .unwrap_or_else(|e| panic!("acknowledged order {id} is missing: {e}"));
            summary.count(order.status, order.cancellation_reason.as_deref());
        }
        eprintln!("{summary}");
        summary
    }

    async fn wait_for_drained_outboxes(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let backlogs = outbox_backlogs(&self.stores).await;
            if backlogs.iter().all(|(_, n)| *n == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "outboxes still hold unpublished events after 60 s: {backlogs:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for replica in self.replicas.values() {
                eprintln!(
                    "----- {} stderr (last 30 lines) -----\n{}",
                    replica.name(),
                    tail(&replica.log_path(), 30)
                );
            }
        }
    }
}

/// The test's own handle on every store of the database, over small pools.
async fn open_stores(dir: &Path, database_url: &str) -> Stores {
    let mut config = Config::for_data_dir(dir.join("checker"));
    config.database_url = Some(Secret::new(database_url));
    config.database_pool_size = 2;
    Box::pin(Stores::open(&config))
        .await
        .unwrap_or_else(|e| panic!("opening the stores of {database_url}: {e:#}"))
}

/// The checker over every store (the test process opens them all).
pub fn checker(stores: &Stores) -> Checker {
    stores.checker().unwrap()
}

fn orders_store(stores: &Stores) -> &Arc<dyn ordo_orders::OrderStore> {
    &stores
        .orders
        .as_ref()
        .expect("the test process opens the orders stores")
        .orders
}

/// How the acknowledged orders ended.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub delivered: usize,
    /// By cancellation reason.
    pub cancelled: BTreeMap<String, usize>,
    pub other: usize,
}

impl Summary {
    fn count(&mut self, status: OrderStatus, reason: Option<&str>) {
        match status {
            OrderStatus::Delivered => self.delivered += 1,
            OrderStatus::Cancelled => {
                *self
                    .cancelled
                    .entry(reason.unwrap_or("none").to_owned())
                    .or_default() += 1;
            }
            _ => self.other += 1,
        }
    }

    pub fn cancelled(&self, reason: &str) -> usize {
        self.cancelled.get(reason).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged orders: {} delivered, cancelled {:?}, {} other",
            self.delivered, self.cancelled, self.other
        )
    }
}

// ----------------------------------------------------------------- load --

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub orders: usize,
    pub in_flight: usize,
    /// Every n-th order pays with `tok_declined` (0: none).
    pub declined_every: usize,
    /// Orders started per second, at most (`None`: as fast as answered).
    pub rate: Option<f64>,
    /// Attempts of one order across the replicas before the run fails.
    pub max_attempts: u32,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            orders: 1000,
            in_flight: 16,
            declined_every: 10,
            rate: None,
            max_attempts: 120,
        }
    }
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Ids of the orders answered 2xx.
    pub acknowledged: Vec<String>,
    /// Idempotency keys whose request kept answering 409 "in flight": the
    /// first attempt died with a killed replica; its outcome is unknown.
    pub unresolved: Vec<String>,
    /// Attempts that failed (connection error, 5xx, 409) and were retried.
    pub retries: usize,
    pub elapsed: Duration,
}

/// Orders placed in the background through the orders replicas.
pub struct Load {
    acknowledged: Arc<Mutex<Vec<String>>>,
    retries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<LoadReport, String>>,
}

enum Outcome {
    Acknowledged,
    Unresolved(String),
}

impl Load {
    pub async fn start(cluster: &mut Cluster, spec: LoadSpec) -> Self {
        let token = cluster.token("customer").await;
        Self::start_with(
            cluster.http.clone(),
            cluster.orders_targets(),
            token,
            cluster.products.clone(),
            spec,
        )
    }

    pub fn start_with(
        http: reqwest::Client,
        targets: Arc<RwLock<Vec<String>>>,
        token: String,
        products: Vec<String>,
        spec: LoadSpec,
    ) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let retries = Arc::new(AtomicUsize::new(0));
        let run = ulid::Ulid::new().to_string();
        let driver = Driver {
            http,
            targets,
            token,
            products,
            spec,
            run,
            acknowledged: acknowledged.clone(),
            retries: retries.clone(),
        };
        let task = tokio::spawn(driver.run());
        Self {
            acknowledged,
            retries,
            task,
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }

    /// Until at least `n` orders were acknowledged.
    pub async fn wait_for(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acknowledged() < n {
            assert!(
                !self.task.is_finished(),
                "the load ended with {} orders acknowledged, fewer than {n}: {}",
                self.acknowledged(),
                match (&mut self.task).await {
                    Ok(Ok(_)) => "it placed them all".to_owned(),
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                }
            );
            assert!(
                Instant::now() < deadline,
                "only {} orders acknowledged after 120 s",
                self.acknowledged()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn finish(self) -> LoadReport {
        let report = match self.task.await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => panic!("the load failed: {e}"),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        eprintln!(
            "load: {} acknowledged, {} unresolved, {} retries in {:.1} s",
            report.acknowledged.len(),
            report.unresolved.len(),
            report.retries,
            report.elapsed.as_secs_f64()
        );
        report
    }
}

struct Driver {
    http: reqwest::Client,
    targets: Arc<RwLock<Vec<String>>>,
    token: String,
    products: Vec<String>,
    spec: LoadSpec,
    run: String,
    acknowledged: Arc<Mutex<Vec<String>>>,
    retries: Arc<AtomicUsize>,
}

impl Driver {
    async fn run(self) -> Result<LoadReport, String> {
        let started = Instant::now();
        let this = Arc::new(self);
        let mut outcomes = futures::stream::iter(0..this.spec.orders)
            .map(|i| {
                let this = this.clone();
                async move {
                    if let Some(rate) = this.spec.rate {
                        let at = started + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    this.place(i).await
                }
            })
            .buffer_unordered(this.spec.in_flight);
        let mut unresolved = Vec::new();
        while let Some(outcome) = outcomes.next().await {
            match outcome? {
                Outcome::Acknowledged => {}
                Outcome::Unresolved(key) => unresolved.push(key),
            }
        }
        drop(outcomes);
        Ok(LoadReport {
            acknowledged: this.acknowledged.lock().unwrap().clone(),
            unresolved,
            retries: this.retries.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        })
    }

    fn body(&self, i: usize) -> Value {
        let declined = self.spec.declined_every > 0
            && i % self.spec.declined_every == self.spec.declined_every - 1;
        json!({
            "items": [{"product_id": self.products[i % self.products.len()], "quantity": 1}],
            "shipping_address": {
                "name": "Ada Lovelace", "line1": "Unter den Linden 1", "city": "Berlin",
                "postal_code": "10117", "country": "DE"
            },
            "payment": {"token": if declined { "tok_declined" } else { "tok_visa" }},
            "attributes": {"load": i}
        })
    }

    /// One order, retried with the same key on the other replica after a
    /// connection error, a 5xx or a 409 "in flight".
    async fn place(&self, i: usize) -> Result<Outcome, String> {
        let key = format!("load-{}-{i}", self.run);
        let body = self.body(i);
        let mut last = String::new();
        let mut in_flight_since: Option<tokio::time::Instant> = None;
        for attempt in 0..self.spec.max_attempts {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                let backoff =
                    Duration::from_millis(25 * u64::from(attempt)).min(Duration::from_millis(500));
                tokio::time::sleep(backoff).await;
            }
            let base = {
                let targets = self.targets.read().unwrap();
                targets[(i + attempt as usize) % targets.len()].clone()
            };
            let response = self
                .http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", &key)
                .json(&body)
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{base}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                let answer: Value = serde_json::from_str(&text).map_err(|e| {
                    format!("order {i}: {status} with a body that is not JSON ({e}): {text}")
                })?;
                let id = answer["id"]
                    .as_str()
                    .ok_or_else(|| format!("order {i}: {status} without an id: {text}"))?;
                self.acknowledged.lock().unwrap().push(id.to_owned());
                return Ok(Outcome::Acknowledged);
            }
            if status.is_server_error() {
                last = format!("{base}: {status} {text}");
                continue;
            }
            if status == StatusCode::CONFLICT && text.contains("idempotency-key-in-flight") {
                // The key is held by an attempt that a killed replica never
                // finished; its lock lapses just after the request timeout
                // (5 s here), then the retry is answered.
                let since = *in_flight_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    return Ok(Outcome::Unresolved(key));
                }
                last = format!("{base}: {status} {text}");
                continue;
            }
            return Err(format!(
                "order {i} (attempt {}) on {base}: {status} {text}",
                attempt + 1
            ));
        }
        Err(format!(
            "order {i} was not placed in {} attempts; last: {last}",
            self.spec.max_attempts
        ))
    }
}

// ------------------------------------------------------------------ SSE --

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// `GET /v1/orders/{id}/events`, read event by event.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    closed: bool,
}

impl EventStream {
    pub async fn open(http: &reqwest::Client, base: &str, token: &str, order: &str) -> Self {
        let response = http
            .get(format!("{base}/v1/orders/{order}/events"))
            .bearer_auth(token)
            .header("Accept", "text/event-stream")
            // The stream outlives the client's default timeout.
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != StatusCode::OK {
            panic!(
                "GET {base}/v1/orders/{order}/events: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        assert!(
            content_type.starts_with("text/event-stream"),
            "content-type {content_type:?}"
        );
        Self {
            response,
            buffer: Vec::new(),
            closed: false,
        }
    }

    /// The next event, `None` once the server closed the stream; fails
    /// when nothing comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"))
                .unwrap_or_else(|e| panic!("reading the event stream: {e}"));
            match chunk {
                Some(bytes) => self
                    .buffer
                    .extend(bytes.iter().copied().filter(|b| *b != b'\r')),
                None => self.closed = true,
            }
        }
    }

    /// Takes one complete event off the buffer; comments (keep-alives)
    /// and blocks without data are skipped.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let mut event = SseEvent {
                id: None,
                event: "message".to_owned(),
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data || event.event != "message" {
                return Some(event);
            }
        }
    }
}
