//! The `ordo` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ordo_auth::AuthService;
use ordo_bus::DeadLetterStore;
use ordo_http::Role;
use ordo_kernel::{StoreError, SystemClock, UlidGen};
use std::sync::Arc;

use crate::app::{App, shutdown_signal};
use crate::config::{Config, FileConfig, LogFormat, Overrides};
use crate::stores::Stores;

#[derive(Debug, Parser)]
#[command(
    name = "ordo",
    version,
    about = "Ordo: event-driven order processing. With no command, serves."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Settings file (missing is fine unless named explicitly).
    #[arg(long, global = true, env = "ORDO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve HTTP on.
    #[arg(long, global = true, env = "ORDO_LISTEN")]
    pub listen: Option<String>,
    /// Where the embedded mode keeps its SQLite files.
    #[arg(long, global = true, env = "ORDO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (unset: SQLite in the data directory).
    #[arg(long, global = true, env = "ORDO_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL read replica serving the GET endpoints.
    #[arg(
        long,
        global = true,
        env = "ORDO_READ_DATABASE_URL",
        hide_env_values = true
    )]
    pub read_database_url: Option<String>,
    /// NATS URL (unset: the in-process bus).
    #[arg(long, global = true, env = "ORDO_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// `off`, or the time a simulated courier spends per waypoint (`2s`).
    #[arg(long, global = true, env = "ORDO_COURIER_SIM")]
    pub courier_sim: Option<String>,
    /// Do not create demo clients and catalog on a fresh store.
    #[arg(long, global = true)]
    pub no_demo: bool,
    /// `ORDO_DEMO=false` is the same as `--no-demo`.
    #[arg(long, global = true, env = "ORDO_DEMO", hide = true,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: Option<bool>,
    /// Let admins turn chaos controls on at run time (`--chaos=false` to
    /// refuse them; default: on with the demo).
    #[arg(long, global = true, env = "ORDO_CHAOS", num_args = 0..=1,
        default_missing_value = "true", require_equals = true,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub chaos: Option<bool>,
    /// How long stock is held for an unpaid order (`30m`, `5s`).
    #[arg(long, global = true, env = "ORDO_RESERVATION_TTL")]
    pub reservation_ttl: Option<String>,
    #[arg(long, global = true, env = "ORDO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve {
        /// Services this process runs, comma-separated.
        #[arg(long, env = "ORDO_SERVICES", value_delimiter = ',')]
        services: Option<Vec<String>>,
    },
    /// Create or upgrade every database, then exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// API clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// The dead-letter store.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client; prints its id and secret once.
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        name: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "must be customer, seller, courier or admin".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Ask for a dead letter to be delivered again; a running server
    /// delivers it within a second.
    Replay { id: String },
}

impl Cli {
    pub fn config(&self) -> anyhow::Result<Config> {
        let g = &self.global;
        let file = match &g.config {
            Some(path) => FileConfig::load(path, true)?,
            None => FileConfig::load(std::path::Path::new("ordo.toml"), false)?,
        };
        let services = match &self.command {
            Some(Command::Serve { services }) => services.clone(),
            _ => None,
        };
        Config::resolve(
            file,
            Overrides {
                listen: g.listen.clone(),
                data_dir: g.data_dir.clone(),
                database_url: g.database_url.clone(),
                read_database_url: g.read_database_url.clone(),
                nats_url: g.nats_url.clone(),
                courier_sim: g.courier_sim.clone(),
                demo: if g.no_demo { Some(false) } else { g.demo },
                chaos: g.chaos,
                services,
                reservation_ttl: g.reservation_ttl.clone(),
                log_format: g.log_format.map(|f| match f {
                    LogFormatArg::Json => LogFormat::Json,
                    LogFormatArg::Pretty => LogFormat::Pretty,
                }),
            },
        )
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    match cli.command {
        None | Some(Command::Serve { .. }) => serve(config).await,
        Some(Command::Migrate) => {
            crate::telemetry::init(config.log_format);
            let stores = Stores::open(&config).await?;
            for db in stores.databases() {
                println!("{}: migrated ({})", db.name(), db.location());
            }
            Ok(())
        }
        Some(Command::Config) => {
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(())
        }
        Some(Command::Client {
            command: ClientCommand::Create { role, name },
        }) => {
            let stores = Stores::open(&config).await?;
            let auth = AuthService::start(
                stores.clients.clone(),
                Arc::new(SystemClock),
                Arc::new(UlidGen::new()),
                &config.jwt_issuer,
                &config.jwt_audience,
                config.token_ttl,
            )
            .await?;
            let name = name.unwrap_or_else(|| format!("{role} client"));
            let created = auth.create_client(role, &name).await?;
            println!(
                "{}",
                serde_json::json!({
                    "client_id": created.client.id.to_string(),
                    "client_secret": created.secret,
                    "role": role.as_str(),
                    "name": created.client.name,
                })
            );
            Ok(())
        }
        Some(Command::Dlq { command }) => {
            let stores = Stores::open(&config).await?;
            dlq(stores.dead_letters.as_ref(), command).await
        }
        Some(Command::Bench { command }) => crate::bench::run(&config, command).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(config.log_format);
    let app = App::build(config.clone()).await?;
    let addr = app.local_addr()?;
    if let Some(credentials) = app.demo_credentials() {
        println!(
            "Demo clients created; their credentials are also in {}:",
            crate::demo::credentials_path(&config.data_dir).display()
        );
        println!("{}", serde_json::to_string_pretty(credentials)?);
    }
    println!("Ordo is serving on http://{addr} (API docs: http://{addr}/docs)");
    app.run(shutdown_signal()).await
}

async fn dlq(store: &dyn DeadLetterStore, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit, json } => {
            let letters = store.list(limit).await?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<30} {:<18} {:<20} {:>8} {:<17} ERROR",
                    "ID", "CONSUMER", "TYPE", "ATTEMPTS", "STATUS"
                );
                for l in &letters {
                    println!(
                        "{:<30} {:<18} {:<20} {:>8} {:<17} {}",
                        l.id,
                        l.consumer,
                        l.event_type,
                        l.attempts,
                        l.status.as_str(),
                        l.error
                    );
                }
            }
            Ok(())
        }
        DlqCommand::Replay { id } => {
            let letter = store
                .request_replay(&id)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => anyhow::anyhow!("no dead letter {id}"),
                    StoreError::Conflict(_) => {
                        anyhow::anyhow!("dead letter {id} was already replayed")
                    }
                    other => anyhow::Error::from(other),
                })
                .context("requesting a replay")?;
            println!(
                "replay requested for {} ({} to {}); a running server delivers it shortly",
                letter.id, letter.event_type, letter.consumer
            );
            Ok(())
        }
    }
}
