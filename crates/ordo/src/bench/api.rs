//! The few calls of the HTTP API that the benchmarks need outside the
//! measured requests: tokens from the demo credentials, a product of the
//! demo seller, the outbox backlog, timelines.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

/// A running server and the demo credentials it wrote.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    credentials: Value,
}

/// Where an order's saga stands, from its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaState {
    /// Reached the event looked for; the time from order.created to it.
    Reached(Duration),
    /// Cancelled before reaching it.
    Cancelled,
    /// Neither yet.
    Pending,
}

#[derive(Deserialize)]
struct Timeline {
    items: Vec<TimelineEntry>,
}

#[derive(Deserialize)]
struct TimelineEntry {
    #[serde(rename = "type")]
    event_type: String,
    at: DateTime<Utc>,
}

impl Api {
    /// `pool` is the most idle connections kept to the server: the
    /// concurrency of the run.
    pub fn new(
        url: &str,
        credentials: &Path,
        pool: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let bytes = std::fs::read(credentials)
            .with_context(|| format!("reading the credentials file {}", credentials.display()))?;
        let credentials: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", credentials.display()))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A token for the demo client of `role`.
    pub async fn token(&self, role: &str) -> anyhow::Result<String> {
        let c = &self.credentials[role];
        anyhow::ensure!(
            c["client_id"].is_string() && c["client_secret"].is_string(),
            "the credentials file has no {role} client"
        );
        let body: Value = self
            .http
            .post(self.at("/oauth/token"))
            .json(&json!({
                "grant_type": "client_credentials",
                "client_id": c["client_id"],
                "client_secret": c["client_secret"],
            }))
            .send()
            .await
            .with_context(|| format!("asking {} for a token", self.url))?
            .error_for_status()
            .with_context(|| format!("a token for the demo {role}"))?
            .json()
            .await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no access_token for {role}"))
    }

    /// Signs the demo client of `role` in to the console through its
    /// sign-in form; the `Cookie` header of the session.
    pub async fn console_session(&self, role: &str) -> anyhow::Result<String> {
        let c = &self.credentials[role];
        let (Some(id), Some(secret)) = (c["client_id"].as_str(), c["client_secret"].as_str())
        else {
            anyhow::bail!("the credentials file has no {role} client");
        };
        let cookie = |response: &reqwest::Response, name: &str| {
            response
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split(';').next())
                .find(|pair| pair.starts_with(&format!("{name}=")))
                .map(str::to_owned)
        };
        let page = self.http.get(self.at("/")).send().await?;
        let signin = cookie(&page, "ordo_signin")
            .ok_or_else(|| anyhow::anyhow!("{} serves no console sign-in", self.url))?;
        let csrf = signin
            .split_once('=')
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let signed_in = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?
            .post(self.at("/sign-in"))
            .header(reqwest::header::COOKIE, &signin)
            .form(&[
                ("client_id", id),
                ("client_secret", secret),
                ("csrf", &csrf),
            ])
            .send()
            .await?;
        cookie(&signed_in, "ordo_session").ok_or_else(|| {
            anyhow::anyhow!(
                "signing in to the console as the demo {role} failed: {}",
                signed_in.status()
            )
        })
    }

    /// A new product of the demo seller with `stock` units; its id.
    pub async fn create_product(&self, seller: &str, stock: i64) -> anyhow::Result<String> {
        let product: Value = self
            .http
            .post(self.at("/v1/products"))
            .bearer_auth(seller)
            .json(&json!({
                "sku": format!("BENCH-{}", ulid::Ulid::new()),
                "name": "Benchmark item",
                "price": "9.99",
                "currency": "EUR",
                "initial_stock": stock,
            }))
            .send()
            .await?
            .error_for_status()
            .context("creating the benchmark product")?
            .json()
            .await?;
        product["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the created product has no id: {product}"))
    }

    /// Rows committed to the outboxes and not yet published, all services.
    pub async fn backlog(&self, admin: &str) -> anyhow::Result<u64> {
        let bus: Value = self
            .http
            .get(self.at("/v1/admin/outbox"))
            .bearer_auth(admin)
            .send()
            .await?
            .error_for_status()
            .context("reading /v1/admin/outbox")?
            .json()
            .await?;
        let outboxes = bus["outboxes"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("/v1/admin/outbox has no outboxes: {bus}"))?;
        Ok(outboxes.iter().filter_map(|o| o["backlog"].as_u64()).sum())
    }

    /// Waits until every outbox is empty: what was written has been
    /// published (a new product reaches the orders' catalog projection,
    /// the sagas of a pool of orders stop moving).
    pub async fn wait_quiet(&self, admin: &str, within: Duration) -> anyhow::Result<()> {
        let by = Instant::now() + within;
        loop {
            if self.backlog(admin).await? == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < by,
                "the server's outboxes did not drain within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where the saga of order `id` stands with respect to `target`
    /// (`order.paid`, `order.delivered`), from the `at` of its timeline.
    pub async fn saga_state(
        &self,
        token: &str,
        id: &str,
        target: &str,
    ) -> anyhow::Result<SagaState> {
        let timeline: Timeline = self
            .http
            .get(self.at(&format!("/v1/orders/{id}/timeline")))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("the timeline of {id}"))?
            .json()
            .await?;
        Ok(saga_state(&timeline.items, target))
    }
}

fn saga_state(items: &[TimelineEntry], target: &str) -> SagaState {
    let at = |t: &str| items.iter().find(|e| e.event_type == t).map(|e| e.at);
    match (at("order.created"), at(target)) {
        (Some(created), Some(reached)) => {
            SagaState::Reached((reached - created).to_std().unwrap_or(Duration::ZERO))
        }
        _ if at("order.cancelled").is_some() => SagaState::Cancelled,
        _ => SagaState::Pending,
    }
}

/// The body of every order the benchmarks place: one unit of `product`,
/// paid with the simulator's always-accepted card.
pub fn order_body(product: &str) -> Value {
    json!({
        "items": [{"product_id": product, "quantity": 1}],
        "shipping_address": {"name": "Bench", "line1": "Teststr. 1", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"},
        "payment": {"token": "tok_visa"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: Value) -> Vec<TimelineEntry> {
        serde_json::from_value::<Timeline>(json)
            .map(|t| t.items)
            .unwrap_or_default()
    }

    #[test]
    fn the_saga_latency_is_read_from_the_timeline() {
        let items = entries(json!({"items": [
            {"type": "order.created", "at": "2025-01-01T10:00:00.000100Z"},
            {"type": "order.confirmed", "at": "2025-01-01T10:00:00.004Z"},
            {"type": "order.paid", "at": "2025-01-01T10:00:00.012600Z"}
        ]}));
        assert_eq!(
            saga_state(&items, "order.paid"),
            SagaState::Reached(Duration::from_micros(12_500))
        );
        assert_eq!(saga_state(&items, "order.delivered"), SagaState::Pending);
        let cancelled = entries(json!({"items": [
            {"type": "order.created", "at": "2025-01-01T10:00:00Z"},
            {"type": "order.cancelled", "at": "2025-01-01T10:00:01Z"}
        ]}));
        assert_eq!(saga_state(&cancelled, "order.paid"), SagaState::Cancelled);
    }
}
