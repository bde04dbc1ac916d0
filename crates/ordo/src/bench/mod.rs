//! Benchmark tools. Each prints figures; none asserts a timing.
//!
//! - `ordo bench http`: a load generator over the real HTTP API of a
//!   running server (open or closed loop, HDR histograms, a markdown table
//!   and JSON);
//! - `ordo bench saga`: the create → paid latency at a constant rate, an
//!   alias of `ordo bench http --scenario saga-paid --mode open`;
//! - `ordo bench group-commit`: commit throughput of the SQLite writer;
//! - `ordo bench dataset` / `explain`: a large PostgreSQL data set and the
//!   plans of every list query over it;
//! - `ordo bench pgbench-scripts`: the orders store's SQL as pgbench
//!   scripts, the ceiling `scripts/bench-ceiling` compares the API with.

mod api;
mod commit;
mod dataset;
mod http;
mod pgbench;
mod proc;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

pub use http::{HttpArgs, Mode, Scenario};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load over the real HTTP API of a running server: open loop at a
    /// constant rate or closed loop with N requests in flight; latency
    /// percentiles from HDR histograms, errors by status, a markdown
    /// table and optionally JSON.
    Http(Box<HttpArgs>),
    /// Saga latency, order.created → order.paid, read from the timelines of
    /// orders placed at a constant rate against a running server. The same
    /// as `bench http --scenario saga-paid --mode open --rate R` for
    /// ORDERS / R seconds, without a warm-up.
    Saga {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's demo credentials file.
        #[arg(long, default_value = "ordo-data/demo-credentials.json")]
        credentials: PathBuf,
        #[arg(long, default_value_t = 300)]
        orders: u32,
        /// Orders per second, open loop.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Commit throughput of the SQLite writer: the create-order transaction
    /// (order, items, outbox row), with group commit and with one commit
    /// per transaction, from the same number of concurrent writers.
    GroupCommit {
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Seconds each mode runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Loads a generated year of orders into the PostgreSQL database of
    /// `--database-url` (its orders schema), with a progress bar, and the
    /// catalog they were placed from (its inventory schema).
    Dataset {
        /// Orders to load (1000000, or 1M).
        #[arg(long, default_value = "1M", value_parser = dataset::parse_count)]
        orders: u64,
        /// Distinct customers (default: one per 50 orders).
        #[arg(long, value_parser = dataset::parse_count)]
        customers: Option<u64>,
        #[arg(long, default_value_t = 200)]
        sellers: u64,
        /// Products in the catalog (also loaded into the inventory schema).
        #[arg(long, default_value = "20000", value_parser = dataset::parse_count)]
        products: u64,
        /// Days the orders are spread over, up to now.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Runs every list and filter query the API can issue against the
    /// orders and products of `--database-url`, prints each one's p50/p95 and plan
    /// summary, and fails when one reads a large table sequentially.
    Explain {
        /// Executions of each query for its timings.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Tables with at least this many rows count as large.
        #[arg(long, default_value_t = 10_000)]
        large_rows: i64,
        /// JSON instead of a markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Writes the orders store's create-order transaction and get-order
    /// queries as pgbench scripts (`create.sql`, `get-NNN.sql` for the
    /// newest orders of `--database-url`), the ceiling of the same
    /// endpoints over HTTP.
    PgbenchScripts {
        /// The directory to write them to.
        #[arg(long)]
        out: PathBuf,
        /// Orders to read, one script each (at most 100).
        #[arg(long, default_value_t = 100)]
        get_orders: usize,
    },
}

fn postgres_url(config: &Config) -> anyhow::Result<&str> {
    config
        .database_url
        .as_ref()
        .map(|u| u.expose())
        .ok_or_else(|| anyhow::anyhow!("this benchmark needs --database-url postgres://…"))
}

pub async fn run(config: &Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::GroupCommit { writers, seconds } => {
            commit::group_commit(config, writers, seconds).await
        }
        BenchCommand::Http(args) => http::run(*args).await,
        BenchCommand::Dataset {
            orders,
            customers,
            sellers,
            products,
            days,
            seed,
        } => {
            let spec = dataset::Spec {
                orders,
                customers: customers.unwrap_or((orders / 50).max(100)),
                sellers,
                products,
                days: days.max(1),
                seed,
            };
            dataset::load(postgres_url(config)?, spec).await
        }
        BenchCommand::Explain {
            runs,
            large_rows,
            json,
        } => dataset::check(postgres_url(config)?, runs, large_rows, json).await,
        BenchCommand::PgbenchScripts { out, get_orders } => {
            pgbench::write_scripts(postgres_url(config)?, &out, get_orders).await
        }
        BenchCommand::Saga {
            url,
            credentials,
            orders,
            rate,
        } => {
            let rate = f64::from(rate.max(1));
            let mut args = HttpArgs::new(url, credentials, Scenario::SagaPaid);
            args.rate = rate;
            args.warmup = Duration::ZERO;
            args.duration = Duration::from_secs_f64(f64::from(orders) / rate);
            http::run(args).await
        }
    }
}
