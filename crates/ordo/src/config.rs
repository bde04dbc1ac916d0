//! Settings, layered: defaults → `ordo.toml` → `ORDO_*` variables → flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A value that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its passwords replaced, for display (see
    /// [`ordo_kernel::redact_url`]).
    pub fn redacted_url(&self) -> String {
        ordo_kernel::redact_url(&self.0)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted_url())
    }
}

/// How the courier simulator moves shipments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CourierSim {
    Off,
    /// Time spent at each waypoint.
    Pace(Duration),
}

impl CourierSim {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        parse_duration(s).map(Self::Pace).with_context(|| {
            format!("courier-sim must be `off` or a pace such as `2s` or `500ms`, not {s:?}")
        })
    }
}

impl Serialize for CourierSim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_str("off"),
            Self::Pace(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
        }
    }
}

/// `250ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("{s:?} is not a duration"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("{s:?} is not a duration (use ms, s, m or h)"),
    })
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<Secret>,
    /// A PostgreSQL read replica serving the GET endpoints.
    pub read_database_url: Option<Secret>,
    /// PostgreSQL connections per service schema.
    pub database_pool_size: usize,
    pub nats_url: Option<Secret>,
    /// The JetStream stream holding the domain events.
    pub nats_stream: String,
    /// The first token of the events' subjects (`ordo.orders.order.created.v1`).
    pub nats_subject_prefix: String,
    /// Copies of the stream in a NATS cluster.
    pub nats_replicas: usize,
    /// Publishes of one event within this window are stored once.
    pub nats_duplicate_window: Duration,
    /// A delivery not acknowledged within this is redelivered.
    pub nats_ack_wait: Duration,
    pub courier_sim: CourierSim,
    pub demo: bool,
    /// Whether an admin may turn chaos controls on at run time.
    pub chaos: bool,
    /// Services this process runs.
    pub services: Vec<String>,
    pub log_format: LogFormat,
    pub request_timeout: Duration,
    pub token_ttl: Duration,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub bus_max_attempts: u32,
    pub bus_retry_base: Duration,
    pub bus_retry_max: Duration,
    pub dlq_poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// How long stock is held for an order that is not paid yet.
    pub reservation_ttl: Duration,
    /// The payment gateway; unset: the built-in simulator on a loopback port.
    pub gateway_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

pub const ALL_SERVICES: [&str; 4] = ["orders", "inventory", "payments", "delivery"];

impl Config {
    /// The defaults, rooted at `data_dir`: what tests start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            database_url: None,
            read_database_url: None,
            database_pool_size: 8,
            nats_url: None,
            nats_stream: "ORDO".to_owned(),
            nats_subject_prefix: "ordo".to_owned(),
            nats_replicas: 1,
            nats_duplicate_window: Duration::from_secs(120),
            nats_ack_wait: Duration::from_secs(30),
            courier_sim: CourierSim::Off,
            demo: true,
            chaos: true,
            services: ALL_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            log_format: LogFormat::Json,
            request_timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(3600),
            jwt_issuer: "ordo".to_owned(),
            jwt_audience: "ordo-api".to_owned(),
            bus_max_attempts: 8,
            bus_retry_base: Duration::from_millis(100),
            bus_retry_max: Duration::from_secs(30),
            dlq_poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            reservation_ttl: Duration::from_secs(30 * 60),
            gateway_url: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::for_data_dir("./ordo-data")
    }
}

/// The keys an `ordo.toml` may set; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<Secret>,
    pub read_database_url: Option<Secret>,
    pub database_pool_size: Option<usize>,
    pub nats_url: Option<Secret>,
    pub nats_stream: Option<String>,
    pub nats_subject_prefix: Option<String>,
    pub nats_replicas: Option<usize>,
    pub nats_duplicate_window: Option<String>,
    pub nats_ack_wait: Option<String>,
    pub courier_sim: Option<String>,
    pub demo: Option<bool>,
    pub chaos: Option<bool>,
    pub services: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    pub request_timeout: Option<String>,
    pub token_ttl: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub bus_max_attempts: Option<u32>,
    pub bus_retry_base: Option<String>,
    pub bus_retry_max: Option<String>,
    pub dlq_poll_interval: Option<String>,
    pub shutdown_grace: Option<String>,
    pub reservation_ttl: Option<String>,
    pub gateway_url: Option<String>,
}

impl FileConfig {
    /// Reads `path`; a missing file is fine unless it was asked for.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Values from the environment and flags (clap merges those two; flags win).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub read_database_url: Option<String>,
    pub nats_url: Option<String>,
    pub courier_sim: Option<String>,
    pub demo: Option<bool>,
    pub chaos: Option<bool>,
    pub services: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    pub reservation_ttl: Option<String>,
}

fn duration_or(value: Option<String>, default: Duration, key: &str) -> anyhow::Result<Duration> {
    value
        .map(|v| parse_duration(&v).with_context(|| format!("setting {key}")))
        .transpose()
        .map(|d| d.unwrap_or(default))
}

impl Config {
    pub fn resolve(file: FileConfig, over: Overrides) -> anyhow::Result<Self> {
        let d = Config::default();
        let listen = over.listen.or(file.listen);
        let listen = match listen {
            Some(l) => l
                .parse()
                .with_context(|| format!("listen must be host:port, not {l:?}"))?,
            None => d.listen,
        };
        let demo = over.demo.or(file.demo).unwrap_or(d.demo);
        // Unless told otherwise, the demo has a courier moving parcels.
        let courier_sim = match over.courier_sim.or(file.courier_sim) {
            Some(s) => CourierSim::parse(&s)?,
            None if demo => CourierSim::Pace(Duration::from_secs(2)),
            None => CourierSim::Off,
        };
        // A demo is where one breaks things on purpose; elsewhere it is asked for.
        let chaos = over.chaos.or(file.chaos).unwrap_or(demo);
        let mut services = over.services.or(file.services).unwrap_or(d.services);
        services.sort();
        services.dedup();
        for service in &services {
            if !ALL_SERVICES.contains(&service.as_str()) {
                bail!(
                    "unknown service {service:?}: use {}",
                    ALL_SERVICES.join(", ")
                );
            }
        }
        let config = Self {
            listen,
            data_dir: over.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            database_url: over
                .database_url
                .map(Secret::new)
                .or(file.database_url)
                .filter(|s| !s.0.is_empty()),
            read_database_url: over
                .read_database_url
                .map(Secret::new)
                .or(file.read_database_url)
                .filter(|s| !s.0.is_empty()),
            database_pool_size: file
                .database_pool_size
                .unwrap_or(d.database_pool_size)
                .clamp(1, 256),
            nats_url: over
                .nats_url
                .map(Secret::new)
                .or(file.nats_url)
                .filter(|s| !s.0.is_empty()),
            nats_stream: file.nats_stream.unwrap_or(d.nats_stream),
            nats_subject_prefix: file.nats_subject_prefix.unwrap_or(d.nats_subject_prefix),
            nats_replicas: file.nats_replicas.unwrap_or(d.nats_replicas).clamp(1, 5),
            nats_duplicate_window: duration_or(
                file.nats_duplicate_window,
                d.nats_duplicate_window,
                "nats-duplicate-window",
            )?,
            nats_ack_wait: duration_or(file.nats_ack_wait, d.nats_ack_wait, "nats-ack-wait")?,
            courier_sim,
            demo,
            chaos,
            services,
            log_format: over.log_format.or(file.log_format).unwrap_or(d.log_format),
            request_timeout: duration_or(
                file.request_timeout,
                d.request_timeout,
                "request-timeout",
            )?,
            token_ttl: duration_or(file.token_ttl, d.token_ttl, "token-ttl")?,
            jwt_issuer: file.jwt_issuer.unwrap_or(d.jwt_issuer),
            jwt_audience: file.jwt_audience.unwrap_or(d.jwt_audience),
            bus_max_attempts: file.bus_max_attempts.unwrap_or(d.bus_max_attempts).max(1),
            bus_retry_base: duration_or(file.bus_retry_base, d.bus_retry_base, "bus-retry-base")?,
            bus_retry_max: duration_or(file.bus_retry_max, d.bus_retry_max, "bus-retry-max")?,
            dlq_poll_interval: duration_or(
                file.dlq_poll_interval,
                d.dlq_poll_interval,
                "dlq-poll-interval",
            )?,
            shutdown_grace: duration_or(file.shutdown_grace, d.shutdown_grace, "shutdown-grace")?,
            reservation_ttl: duration_or(
                over.reservation_ttl.or(file.reservation_ttl),
                d.reservation_ttl,
                "reservation-ttl",
            )?,
            gateway_url: file.gateway_url,
        };
        config.check_mode()?;
        Ok(config)
    }

    /// Whether this process runs every service.
    pub fn runs_every_service(&self) -> bool {
        ALL_SERVICES.iter().all(|s| self.runs(s))
    }

    pub fn runs(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
    }

    /// Refuses what this build cannot run, plainly, rather than silently
    /// ignoring a setting.
    pub fn check_mode(&self) -> anyhow::Result<()> {
        for (key, url) in [
            ("database-url", &self.database_url),
            ("read-database-url", &self.read_database_url),
        ] {
            if let Some(url) = url
                && !["postgres://", "postgresql://"]
                    .iter()
                    .any(|scheme| url.expose().starts_with(scheme))
            {
                bail!(
                    "{key} {} is not a PostgreSQL URL (postgres://user@host/database); unset it to store data in SQLite files under --data-dir",
                    url.redacted_url()
                );
            }
        }
        if self.read_database_url.is_some() && self.database_url.is_none() {
            bail!("read-database-url needs database-url: SQLite has no read replica");
        }
        if self.services.is_empty() {
            bail!(
                "services is empty: name at least one of {}",
                ALL_SERVICES.join(", ")
            );
        }
        if self.nats_url.is_some() && self.database_url.is_none() {
            bail!(
                "nats-url needs database-url: the distributed mode keeps its data in PostgreSQL, where every process sees it"
            );
        }
        if !self.runs_every_service() && self.nats_url.is_none() {
            bail!(
                "services {:?}: running some of the services in a process needs the distributed mode (database-url and nats-url), so that the others can run elsewhere",
                self.services
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_variables_override_the_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndata-dir = \"/srv/ordo\"\ndemo = false\nbus-max-attempts = 3\n",
        )
        .unwrap();
        let over = Overrides {
            listen: Some("0.0.0.0:7000".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(file, over).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.data_dir, PathBuf::from("/srv/ordo"));
        assert!(!c.demo);
        assert!(!c.chaos, "off without the demo");
        assert_eq!(c.bus_max_attempts, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        let bad = Overrides {
            courier_sim: Some("fast".into()),
            ..Overrides::default()
        };
        assert!(Config::resolve(FileConfig::default(), bad).is_err());
        assert_eq!(
            CourierSim::parse("2s").unwrap(),
            CourierSim::Pace(Duration::from_secs(2))
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn a_subset_of_the_services_needs_the_distributed_mode() {
        let over = |services: &[&str], db: Option<&str>, nats: Option<&str>| Overrides {
            services: Some(services.iter().map(|s| (*s).to_owned()).collect()),
            database_url: db.map(str::to_owned),
            nats_url: nats.map(str::to_owned),
            ..Overrides::default()
        };
        let pg = Some("postgres://ordo@db/ordo");
        let nats = Some("nats://127.0.0.1:4222");
        let err = Config::resolve(FileConfig::default(), over(&["orders"], pg, None)).unwrap_err();
        assert!(err.to_string().contains("distributed mode"), "{err}");
        let err =
            Config::resolve(FileConfig::default(), over(&["orders"], None, nats)).unwrap_err();
        assert!(
            err.to_string().contains("nats-url needs database-url"),
            "{err}"
        );
        let err = Config::resolve(FileConfig::default(), over(&["order"], pg, nats)).unwrap_err();
        assert!(err.to_string().contains("unknown service"), "{err}");
        let c = Config::resolve(
            FileConfig::default(),
            over(&["payments", "orders", "orders"], pg, nats),
        )
        .unwrap();
        assert_eq!(c.services, ["orders", "payments"]);
        assert!(c.runs("orders") && !c.runs("inventory") && !c.runs_every_service());
        // Every service in one process runs on the in-process bus too.
        let all = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert!(all.runs_every_service() && all.nats_url.is_none());
    }

    #[test]
    fn chaos_follows_the_demo_unless_set() {
        let resolve = |file: &str, chaos: Option<bool>, demo: Option<bool>| {
            let over = Overrides {
                chaos,
                demo,
                ..Overrides::default()
            };
            Config::resolve(toml::from_str(file).unwrap(), over)
                .unwrap()
                .chaos
        };
        assert!(resolve("", None, None), "on with the demo");
        assert!(!resolve("", None, Some(false)), "off without it");
        assert!(resolve("chaos = true", None, Some(false)));
        assert!(!resolve("chaos = true", Some(false), None), "the flag wins");
        assert!(!resolve("chaos = false", None, None));
    }

    #[test]
    fn the_stream_settings_come_from_the_file() {
        let file: FileConfig = toml::from_str(
            "nats-stream = \"SHOP\"\nnats-subject-prefix = \"shop\"\nnats-replicas = 3\n\
             nats-duplicate-window = \"5m\"\nnats-ack-wait = \"10s\"\n",
        )
        .unwrap();
        let c = Config::resolve(file, Overrides::default()).unwrap();
        assert_eq!(c.nats_stream, "SHOP");
        assert_eq!(c.nats_subject_prefix, "shop");
        assert_eq!(c.nats_replicas, 3);
        assert_eq!(c.nats_duplicate_window, Duration::from_secs(300));
        assert_eq!(c.nats_ack_wait, Duration::from_secs(10));
    }

    #[test]
    fn secrets_are_redacted_when_shown() {
        let s = Secret::new("postgres://ordo:hunter2@db:5432/ordo");
        assert_eq!(s.redacted_url(), "postgres://ordo:[redacted]@db:5432/ordo");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let s = Secret::new("postgres://u:pw@127.0.0.1/db?password=pw2&sslmode=require");
        assert_eq!(
            s.to_string(),
            "postgres://u:[redacted]@127.0.0.1/db?password=[redacted]&sslmode=require"
        );
        assert!(!serde_json::to_string(&s).unwrap().contains("pw"));
    }
}
