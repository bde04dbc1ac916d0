//! Query plans on demand: what `ordo bench explain` runs for every list
//! and filter query the API can issue, to prove the indexes serve them.
//!
//! Each store that has list queries describes them as [`Probe`]s built by
//! the same code its list methods use, with parameter values sampled from
//! the data; [`explain`] runs each a number of times for its timings and
//! once under `EXPLAIN (ANALYZE, FORMAT JSON)` for its plan.

use std::time::{Duration, Instant};

use ordo_kernel::StoreError;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::{PgDatabase, store_error};

/// One query as a list endpoint issues it.
pub struct Probe {
    /// What the API asks, e.g. `GET /v1/orders?status=paid`.
    pub name: String,
    pub sql: String,
    pub params: Vec<Box<dyn ToSql + Send + Sync>>,
}

impl Probe {
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub fn param(mut self, value: impl ToSql + Send + Sync + 'static) -> Self {
        self.params.push(Box::new(value));
        self
    }
}

/// What a probe showed.
#[derive(Debug, Clone)]
pub struct Explained {
    pub name: String,
    pub sql: String,
    /// Wall-clock time of each run, client side, sorted.
    pub timings: Vec<Duration>,
    pub rows: usize,
    /// Relations read by a sequential scan anywhere in the plan.
    pub seq_scans: Vec<String>,
    /// Index names the plan uses.
    pub indexes: Vec<String>,
    pub plan: Value,
}

impl Explained {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.timings.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.timings.len() as f64).ceil() as usize;
        self.timings[rank.clamp(1, self.timings.len()) - 1]
    }
}

/// Runs `probe` `runs` times on `db`, then explains it.
pub async fn explain(db: &PgDatabase, probe: &Probe, runs: usize) -> Result<Explained, StoreError> {
    let conn = db.read_conn().await?;
    let params: Vec<&(dyn ToSql + Sync)> = probe
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = conn.prepare_cached(&probe.sql).await.map_err(store_error)?;
    let mut timings = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        rows = conn.query(&stmt, &params).await.map_err(store_error)?.len();
        timings.push(started.elapsed());
    }
    timings.sort();
    let explained = conn
        .query_one(
            &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", probe.sql),
            &params,
        )
        .await
        .map_err(store_error)?;
    let plan: Value = explained.get(0);
    let mut seq_scans = Vec::new();
    let mut indexes = Vec::new();
    walk(&plan, &mut seq_scans, &mut indexes);
    seq_scans.sort();
    seq_scans.dedup();
    indexes.sort();
    indexes.dedup();
    Ok(Explained {
        name: probe.name.clone(),
        sql: probe.sql.clone(),
        timings,
        rows,
        seq_scans,
        indexes,
        plan,
    })
}

fn walk(node: &Value, seq_scans: &mut Vec<String>, indexes: &mut Vec<String>) {
    match node {
        Value::Array(items) => items.iter().for_each(|n| walk(n, seq_scans, indexes)),
        Value::Object(map) => {
            if map.get("Node Type").and_then(Value::as_str) == Some("Seq Scan")
                && let Some(relation) = map.get("Relation Name").and_then(Value::as_str)
            {
                seq_scans.push(relation.to_owned());
            }
            if let Some(index) = map.get("Index Name").and_then(Value::as_str) {
                indexes.push(index.to_owned());
            }
            map.values().for_each(|v| walk(v, seq_scans, indexes));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_scans_and_indexes_are_found_anywhere_in_a_plan() {
        let plan = serde_json::json!([{"Plan": {"Node Type": "Nested Loop", "Plans": [
            {"Node Type": "Index Scan", "Index Name": "orders_by_customer", "Relation Name": "orders"},
            {"Node Type": "Seq Scan", "Relation Name": "order_items"}
        ]}}]);
        let (mut seq, mut idx) = (Vec::new(), Vec::new());
        walk(&plan, &mut seq, &mut idx);
        assert_eq!(seq, ["order_items"]);
        assert_eq!(idx, ["orders_by_customer"]);
    }
}
