//! `ordo bench http`: load over the real HTTP API of a running server.
//!
//! Open loop: a sender thread walks a fixed timetable (request *i* is due
//! at `start + i / rate`) and hands each request to the runtime when it is
//! due, whatever happened to the ones before; its latency is counted from
//! the time it was *due*, so a server that stalls is charged for every
//! request that should have been sent meanwhile (no coordinated omission).
//! At most `--concurrency` requests are in flight (that many connections);
//! a request whose turn comes while all are busy waits, and the wait is in
//! its latency.
//!
//! Closed loop: `--concurrency` workers, each sending its next request as
//! soon as the previous one is answered.
//!
//! Both run `--warmup` then `--duration`; only requests sent (open loop:
//! due) in the second part are measured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::api::{Api, SagaState, order_body};
use super::proc;
use super::report::{Percentiles, Report, Row, histogram};
use crate::config::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// POST /v1/orders.
    Create,
    /// GET /v1/orders/{id} of random orders of a pool created first.
    Get,
    /// GET /v1/orders with status or created_from/created_to filters, or
    /// the next page of a cursor.
    List,
    /// 20 % creates, 70 % gets, 10 % lists (80 % reads).
    Mixed,
    /// POST /v1/orders, then create → paid from each order's timeline.
    SagaPaid,
    /// POST /v1/orders, then create → delivered (needs a fast courier:
    /// the server started with `--courier-sim 10ms`).
    SagaDelivered,
    /// GET /health/live: a static route, no token, no database; the HTTP
    /// ceiling of this server on this machine.
    Static,
    /// GET /admin/orders: the console's order search as an admin's
    /// browser loads it, a server-rendered page of 50 orders (the newest,
    /// or one status), with a session signed in through the sign-in form.
    Console,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Mixed => "mixed",
            Self::SagaPaid => "saga-paid",
            Self::SagaDelivered => "saga-delivered",
            Self::Static => "static",
            Self::Console => "console",
        }
    }

    /// The timeline event a saga scenario waits for.
    fn saga_target(self) -> Option<&'static str> {
        match self {
            Self::SagaPaid => Some("order.paid"),
            Self::SagaDelivered => Some("order.delivered"),
            _ => None,
        }
    }

    fn needs_pool(self) -> bool {
        matches!(self, Self::Get | Self::List | Self::Mixed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A constant rate on a fixed timetable (`--rate`).
    Open,
    /// `--concurrency` requests always in flight.
    Closed,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's demo credentials file.
    #[arg(long, default_value = "ordo-data/demo-credentials.json")]
    pub credentials: PathBuf,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Requests in flight: exactly this many in closed loop, at most this
    /// many in open loop. Also the size of the connection pool.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to measure (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Orders placed before a get, list or mixed run, read at random.
    #[arg(long, default_value_t = 500)]
    pub pool: usize,
    /// Products of the run's own; each order is for one of them at random
    /// (1: every order contends for the stock of one product).
    #[arg(long, default_value_t = 50)]
    pub products: usize,
    /// A request not answered in this time counts as a `timeout` error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Saga scenarios: how long to wait, after the load, for the orders
    /// to reach paid (delivered); the wait also ends when no order has
    /// moved for 15 s.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub saga_timeout: Duration,
    /// Also write the report as JSON to this file (`-`: standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The server's process id: report its CPU time and peak RSS over the
    /// measured window (from /proc; the server must run on this machine).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

impl HttpArgs {
    /// The defaults of the command line.
    pub fn new(url: String, credentials: PathBuf, scenario: Scenario) -> Self {
        Self {
            url,
            credentials,
            scenario,
            mode: Mode::Open,
            rate: 200.0,
            concurrency: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            pool: 500,
            products: 50,
            timeout: Duration::from_secs(30),
            saga_timeout: Duration::from_secs(120),
            json: None,
            server_pid: None,
            no_progress: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Get,
    List,
    Static,
    Console,
}

impl Op {
    const ALL: [Op; 5] = [Op::Create, Op::Get, Op::List, Op::Static, Op::Console];

    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Static => "static",
            Self::Console => "console",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its share of the requests of a mixed run.
    fn share(self) -> f64 {
        match self {
            Self::Create => 0.2,
            Self::Get => 0.7,
            Self::List => 0.1,
            Self::Static | Self::Console => 0.0,
        }
    }
}

/// What one request came to.
enum Outcome {
    Ok { created: Option<String> },
    Failed(String),
}

/// The measurements of one kind of request.
struct OpStats {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    last_done: Option<Instant>,
}

impl OpStats {
    fn new() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            last_done: None,
        }
    }

    fn requests(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Everything the requests of a run share.
struct Run {
    api: Api,
    scenario: Scenario,
    customer: String,
    /// A create-order body per product, serialized once.
    orders: Vec<bytes::Bytes>,
    /// Ids of orders to read; mixed runs add the orders they create.
    pool: RwLock<Vec<String>>,
    /// List queries by kind (status filter, created range, cursor).
    list_queries: Vec<Vec<String>>,
    /// Requests due (sent, in closed loop) from this instant are measured.
    window_start: Instant,
    stats: Mutex<[OpStats; 5]>,
    /// The console scenario: the admin's session cookie.
    console_cookie: String,
    /// Saga scenarios: the orders created in the measured window.
    created: Mutex<Vec<String>>,
    done: AtomicU64,
    failed: AtomicU64,
}

/// The order-search pages the console scenario loads: every order, or
/// one status.
const CONSOLE_FILTERS: [&str; 4] = [
    "",
    "?status=delivered",
    "?status=cancelled",
    "?status=shipped",
];

#[derive(Deserialize)]
struct Created {
    id: String,
}

fn pick<T>(items: &[T]) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(rand::random_range(0..items.len()))
    }
}

impl Run {
    fn op(&self) -> Op {
        match self.scenario {
            Scenario::Create | Scenario::SagaPaid | Scenario::SagaDelivered => Op::Create,
            Scenario::Get => Op::Get,
            Scenario::List => Op::List,
            Scenario::Static => Op::Static,
            Scenario::Console => Op::Console,
            Scenario::Mixed => match rand::random_range(0..100u32) {
                0..20 => Op::Create,
                20..30 => Op::List,
                _ => Op::Get,
            },
        }
    }

    fn request(&self, op: Op) -> reqwest::RequestBuilder {
        let http = &self.api.http;
        let builder = match op {
            Op::Create => http
                .post(self.api.at("/v1/orders"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(pick(&self.orders).cloned().unwrap_or_default()),
            Op::Get => {
                let id = {
                    let pool = self.pool.read().unwrap_or_else(PoisonError::into_inner);
                    pick(&pool).cloned().unwrap_or_default()
                };
                http.get(self.api.at(&format!("/v1/orders/{id}")))
            }
            Op::List => {
                let query = pick(&self.list_queries)
                    .and_then(|kind| pick(kind))
                    .map_or("limit=20", String::as_str);
                http.get(self.api.at(&format!("/v1/orders?{query}")))
            }
            Op::Static => return http.get(self.api.at("/health/live")),
            Op::Console => {
                let status = pick(&CONSOLE_FILTERS).copied().unwrap_or("");
                return http
                    .get(self.api.at(&format!("/admin/orders{status}")))
                    .header(reqwest::header::COOKIE, &self.console_cookie);
            }
        };
        builder.bearer_auth(&self.customer)
    }

    async fn send(&self, op: Op) -> Outcome {
        let response = match self.request(op).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(transport_error(&e)),
        };
        let status = response.status();
        // Read the whole body: the connection goes back to the pool.
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(transport_error(&e)),
        };
        if !status.is_success() {
            return Outcome::Failed(status.as_u16().to_string());
        }
        // The id of a created order, when the run needs it.
        let wanted = self.scenario == Scenario::Mixed || self.scenario.saga_target().is_some();
        let created = (wanted && op == Op::Create && status == StatusCode::CREATED)
            .then(|| serde_json::from_slice::<Created>(&body).ok().map(|c| c.id))
            .flatten();
        Outcome::Ok { created }
    }

    /// Sends one request that was due at `due` and records it.
    async fn issue(&self, due: Instant) {
        let op = self.op();
        let sent = Instant::now();
        let outcome = self.send(op).await;
        let done = Instant::now();
        self.done.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Failed(_)) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Outcome::Ok { created: Some(id) } = &outcome {
            if self.scenario == Scenario::Mixed {
                self.pool
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id.clone());
            }
            if self.scenario.saga_target().is_some() && due >= self.window_start {
                self.created
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id.clone());
            }
        }
        if due < self.window_start {
            return;
        }
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut stats[op.index()];
        s.last_done = Some(s.last_done.map_or(done, |t| t.max(done)));
        match outcome {
            Outcome::Ok { .. } => {
                s.ok += 1;
                s.latency.saturating_record(micros(done - due));
                s.service.saturating_record(micros(done - sent));
            }
            Outcome::Failed(kind) => *s.errors.entry(kind).or_default() += 1,
        }
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect".to_owned()
    } else {
        "transport".to_owned()
    }
}

/// The open-loop sender, on a thread of its own: `std::thread::sleep`
/// keeps to the timetable within tens of microseconds, where the async
/// timer would round every send up to the next millisecond. Returns how
/// far it fell behind while measuring.
fn open_loop(
    run: Arc<Run>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<Semaphore>,
    rate: f64,
    start: Instant,
    end: Instant,
) -> anyhow::Result<Duration> {
    let interval = 1.0 / rate;
    let mut max_lag = Duration::ZERO;
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 * interval);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => runtime.block_on(in_flight.clone().acquire_owned())?,
        };
        if due >= run.window_start {
            max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        }
        let run = run.clone();
        runtime.spawn(async move {
            run.issue(due).await;
            drop(permit);
        });
    }
    Ok(max_lag)
}

async fn closed_loop(run: Arc<Run>, workers: usize, end: Instant) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let run = run.clone();
        tasks.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                run.issue(sent).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    Ok(())
}

fn progress_bar(hidden: bool, len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30.cyan/blue}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

/// Places `n` orders, `parallel` at a time; their ids and creation times.
async fn place_orders(
    api: &Api,
    customer: &str,
    products: &[String],
    n: usize,
    parallel: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
    let bodies: Vec<Value> = products.iter().map(|p| order_body(p)).collect();
    let bodies = &bodies;
    let results: Vec<anyhow::Result<(String, chrono::DateTime<chrono::Utc>)>> =
        futures::stream::iter(0..n)
            .map(|i| async move {
                let order: Value = api
                    .http
                    .post(api.at("/v1/orders"))
                    .bearer_auth(customer)
                    .json(&bodies[i % bodies.len()])
                    .send()
                    .await?
                    .error_for_status()
                    .context("placing an order of the pool")?
                    .json()
                    .await?;
                bar.inc(1);
                let id = order["id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("an order without id: {order}"))?;
                let at = order["created_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .ok_or_else(|| anyhow::anyhow!("an order without created_at: {order}"))?;
                Ok((id.to_owned(), at.with_timezone(&chrono::Utc)))
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}

/// The list queries of a run, by kind: each status that has orders; a
/// created_from/created_to range inside the pool's creation; the pages
/// after the first of the customer's orders, by cursor.
async fn list_queries(
    api: &Api,
    customer: &str,
    pool: &[(String, chrono::DateTime<chrono::Utc>)],
) -> anyhow::Result<(Vec<Vec<String>>, String)> {
    let get = |query: String| async move {
        let page: Value = api
            .http
            .get(api.at(&format!("/v1/orders?{query}")))
            .bearer_auth(customer)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("GET /v1/orders?{query}"))?
            .json()
            .await?;
        anyhow::Ok(page)
    };
    let mut by_status = Vec::new();
    for status in [
        "pending",
        "confirmed",
        "paid",
        "shipped",
        "delivered",
        "cancelled",
    ] {
        let page = get(format!("status={status}&limit=1")).await?;
        if page["items"].as_array().is_some_and(|i| !i.is_empty()) {
            by_status.push(format!("status={status}&limit=20"));
        }
    }
    let mut times: Vec<_> = pool.iter().map(|(_, t)| *t).collect();
    times.sort();
    let stamp =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut by_range = Vec::new();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        for i in 0..16 {
            let from = times.get(i * times.len() / 16).unwrap_or(first);
            by_range.push(format!(
                "created_from={}&created_to={}&limit=20",
                stamp(from),
                stamp(&(*last + chrono::Duration::milliseconds(1)))
            ));
        }
    }
    let mut by_cursor = Vec::new();
    let mut query = "limit=20".to_owned();
    for _ in 0..25 {
        let page = get(query).await?;
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        query = format!("limit=20&cursor={cursor}");
        by_cursor.push(query.clone());
    }
    let described = format!(
        "list queries, one kind picked at random, then one query of it: {} status filters ({}), \
         {} created_from/created_to ranges, {} cursor pages (limit 20)",
        by_status.len(),
        by_status
            .iter()
            .filter_map(|q| q.split('&').next())
            .collect::<Vec<_>>()
            .join(", "),
        by_range.len(),
        by_cursor.len()
    );
    let kinds = [by_status, by_range, by_cursor]
        .into_iter()
        .filter(|kind| !kind.is_empty())
        .collect();
    Ok((kinds, described))
}

/// Follows the orders of a saga run until each reaches `target` or is
/// cancelled; their create → target latencies in a histogram.
async fn follow_sagas(
    api: &Api,
    customer: &str,
    ids: Vec<String>,
    target: &str,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    const STALL: Duration = Duration::from_secs(15);
    let mut latencies = histogram();
    let mut cancelled = 0u64;
    let mut pending = ids;
    let by = Instant::now() + timeout;
    let mut last_move = Instant::now();
    while !pending.is_empty() {
        let states: Vec<(String, anyhow::Result<SagaState>)> =
            futures::stream::iter(std::mem::take(&mut pending))
                .map(|id| async move {
                    let state = api.saga_state(customer, &id, target).await;
                    (id, state)
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let before = states.len();
        for (id, state) in states {
            match state? {
                SagaState::Reached(d) => {
                    latencies
                        .saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
                    bar.inc(1);
                }
                SagaState::Cancelled => {
                    cancelled += 1;
                    bar.inc(1);
                }
                SagaState::Pending => pending.push(id),
            }
        }
        if pending.len() < before {
            last_move = Instant::now();
        }
        if pending.is_empty() || Instant::now() >= by || last_move.elapsed() >= STALL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((latencies, cancelled, pending.len() as u64))
}

fn row(name: String, s: &OpStats, target_rate: Option<f64>, window: (Instant, Duration)) -> Row {
    let (window_start, duration) = window;
    let requests = s.requests();
    let elapsed = s
        .last_done
        .map_or(duration, |t| t.saturating_duration_since(window_start))
        .max(duration);
    Row {
        name,
        requests,
        ok: s.ok,
        errors: s.errors.clone(),
        target_rate,
        achieved_rate: Some(requests as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)),
        latency_ms: Percentiles::of(&s.latency),
        // In closed loop each request is sent when it is due: the same.
        service_ms: target_rate.and_then(|_| Percentiles::of(&s.service)),
    }
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.mode == Mode::Closed || (args.rate.is_finite() && args.rate > 0.0),
        "--rate must be a positive number of requests per second"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must not be zero");
    anyhow::ensure!(args.products >= 1, "--products must be at least 1");
    anyhow::ensure!(
        args.pool >= 1 || !args.scenario.needs_pool(),
        "--pool must be at least 1 for {}",
        args.scenario.name()
    );
    let scenario = args.scenario;
    let open = args.mode == Mode::Open;
    let api = Api::new(&args.url, &args.credentials, args.concurrency, args.timeout)?;
    let customer = api.token("customer").await?;
    let seller = api.token("seller").await?;
    let admin = api.token("admin").await?;

    // Setup: products of our own with stock to spare, then (reads) a pool
    // of orders to read, then a quiet bus so that the setup's sagas are
    // done before the load starts.
    let products: Vec<String> = futures::stream::iter(0..args.products)
        .map(|_| api.create_product(&seller, 100_000_000))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    api.wait_quiet(&admin, Duration::from_secs(60))
        .await
        .context("waiting for the new products to reach the catalog projection")?;
    let mut pool = Vec::new();
    let mut list = Vec::new();
    let mut notes = Vec::new();
    if scenario.needs_pool() {
        let bar = progress_bar(args.no_progress, args.pool as u64, "pool");
        bar.set_message(format!("placing {} orders to read", args.pool));
        pool = place_orders(
            &api,
            &customer,
            &products,
            args.pool,
            args.concurrency.min(16),
            &bar,
        )
        .await?;
        bar.finish_and_clear();
        api.wait_quiet(&admin, Duration::from_secs(120))
            .await
            .context("waiting for the pool's sagas")?;
        if scenario != Scenario::Get {
            let (queries, described) = list_queries(&api, &customer, &pool).await?;
            list = queries;
            notes.push(described);
        }
    }

    let console_cookie = if scenario == Scenario::Console {
        api.console_session("admin").await?
    } else {
        String::new()
    };

    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + args.warmup;
    let end = window_start + args.duration;
    let run = Arc::new(Run {
        api,
        scenario,
        customer,
        orders: products
            .iter()
            .map(|p| Ok(bytes::Bytes::from(serde_json::to_vec(&order_body(p))?)))
            .collect::<anyhow::Result<_>>()?,
        pool: RwLock::new(pool.into_iter().map(|(id, _)| id).collect()),
        list_queries: list,
        console_cookie,
        window_start,
        stats: Mutex::new(std::array::from_fn(|_| OpStats::new())),
        created: Mutex::new(Vec::new()),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let usage = args
        .server_pid
        .map(|pid| proc::watch(pid, window_start, end));

    let target = if open {
        format!("{:.0} requests/s", args.rate)
    } else {
        format!("{} in flight", args.concurrency)
    };
    eprintln!(
        "{} against {}: {} loop, {target}, {:?} warm-up + {:?}",
        scenario.name(),
        run.api.url,
        if open { "open" } else { "closed" },
        args.warmup,
        args.duration
    );
    let total = end.saturating_duration_since(start);
    let bar = progress_bar(args.no_progress, total.as_millis() as u64, "load");
    let ticker = {
        let (run, bar) = (run.clone(), bar.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let done = run.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                let phase = if now < run.window_start {
                    "warm-up"
                } else if now < end {
                    "measuring"
                } else {
                    "draining"
                };
                bar.set_position(now.saturating_duration_since(start).min(total).as_millis() as u64);
                bar.set_message(format!(
                    "{phase}: {done} responses, {} errors, {rate:.0}/s",
                    run.failed.load(Ordering::Relaxed)
                ));
            }
        })
    };

    let mut max_lag = None;
    if open {
        let in_flight = Arc::new(Semaphore::new(args.concurrency));
        let (r, runtime, sem, rate) = (
            run.clone(),
            tokio::runtime::Handle::current(),
            in_flight.clone(),
            args.rate,
        );
        let lag = tokio::task::spawn_blocking(move || open_loop(r, runtime, sem, rate, start, end))
            .await??;
        max_lag = Some(lag.as_secs_f64() * 1000.0);
        // Every permit back: every request answered.
        let all = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
        drop(in_flight.acquire_many(all).await?);
    } else {
        tokio::time::sleep_until(start.into()).await;
        closed_loop(run.clone(), args.concurrency, end).await?;
    }
    ticker.abort();
    bar.finish_and_clear();
    let backlog = run.api.backlog(&admin).await.ok();

    let mut rows = Vec::new();
    let stats = std::mem::replace(
        &mut *run.stats.lock().unwrap_or_else(PoisonError::into_inner),
        std::array::from_fn(|_| OpStats::new()),
    );
    let used: Vec<Op> = Op::ALL
        .into_iter()
        .filter(|op| stats[op.index()].requests() > 0)
        .collect();
    let rate = open.then_some(args.rate);
    let window = (window_start, args.duration);
    if scenario == Scenario::Mixed {
        let mut all = OpStats::new();
        for s in &stats {
            all.latency.add(&s.latency).ok();
            all.service.add(&s.service).ok();
            all.ok += s.ok;
            for (k, n) in &s.errors {
                *all.errors.entry(k.clone()).or_default() += n;
            }
            all.last_done = all.last_done.max(s.last_done);
        }
        rows.push(row("mixed".to_owned(), &all, rate, window));
        for op in &used {
            rows.push(row(
                format!("mixed: {}", op.name()),
                &stats[op.index()],
                rate.map(|r| r * op.share()),
                window,
            ));
        }
    } else {
        let op = match scenario {
            Scenario::Get => Op::Get,
            Scenario::List => Op::List,
            Scenario::Static => Op::Static,
            Scenario::Console => Op::Console,
            _ => Op::Create,
        };
        let name = if scenario.saga_target().is_some() {
            format!("{}: POST /v1/orders", scenario.name())
        } else {
            scenario.name().to_owned()
        };
        rows.push(row(name, &stats[op.index()], rate, window));
    }

    if let Some(target) = scenario.saga_target() {
        let ids = std::mem::take(&mut *run.created.lock().unwrap_or_else(PoisonError::into_inner));
        let n = ids.len() as u64;
        let bar = progress_bar(args.no_progress, n, "saga");
        bar.set_message(format!("waiting for {target} on {n} orders"));
        let (latencies, cancelled, unfinished) = follow_sagas(
            &run.api,
            &run.customer,
            ids,
            target,
            args.saga_timeout,
            &bar,
        )
        .await?;
        bar.finish_and_clear();
        let label = target.trim_start_matches("order.");
        rows.push(Row {
            name: format!("{}: create → {label}", scenario.name()),
            requests: n,
            ok: latencies.len(),
            errors: BTreeMap::from([
                ("cancelled".to_owned(), cancelled),
                (format!("not {label}"), unfinished),
            ]),
            target_rate: None,
            achieved_rate: None,
            latency_ms: Percentiles::of(&latencies),
            service_ms: None,
        });
        if let Some(p) = Percentiles::of(&latencies) {
            notes.push(format!(
                "create → {label} over {} orders, from the timelines' `at`: p95 {:.1} ms",
                p.count, p.p95
            ));
        }
        if scenario == Scenario::SagaDelivered && unfinished > 0 {
            notes.push(format!(
                "hint: {unfinished} of {n} orders were not delivered; deliveries need the courier simulator: \
                 start the server with `--courier-sim 10ms` (with `--courier-sim off` orders stop at paid)"
            ));
        }
    }

    let server = match usage {
        Some(task) => match task.await? {
            Ok(u) => Some(u),
            Err(e) => {
                notes.push(format!("server usage not read: {e:#}"));
                None
            }
        },
        None => None,
    };
    if open
        && let Some(lag) = max_lag
        && lag > 10.0
    {
        notes.push(
            "note: the sender fell behind its timetable; every connection was busy or this \
             machine could not keep up, and the latencies include that wait"
                .to_owned(),
        );
    }
    let report = Report {
        url: run.api.url.clone(),
        scenario: scenario.name().to_owned(),
        mode: if open { "open" } else { "closed" }.to_owned(),
        target_rate: open.then_some(args.rate),
        concurrency: args.concurrency,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        rows,
        max_send_lag_ms: max_lag,
        outbox_backlog_after: backlog,
        server,
        notes,
    };
    println!("{}", report.markdown());
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("JSON report written to {}", path.display());
        }
    }
    Ok(())
}
