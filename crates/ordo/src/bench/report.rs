//! What a load run measured: latency percentiles from HDR histograms,
//! errors by status, as a markdown table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::proc::ServerUsage;

/// Latencies are recorded in microseconds, from 1 µs to an hour, with
/// three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("1 µs to 1 h at 3 digits is a valid histogram"))
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// One line of the table: a kind of request, or the saga.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `create`, `mixed`, `mixed: get`, `saga-paid: create → paid` …
    pub name: String,
    /// Responses received for requests of the measured window (and, for
    /// the saga, orders followed).
    pub requests: u64,
    /// 2xx responses (saga: orders that reached the target).
    pub ok: u64,
    /// Everything else, by HTTP status or by transport failure
    /// (`timeout`, `connect`, `transport`); for the saga, `cancelled` and
    /// `unfinished`.
    pub errors: BTreeMap<String, u64>,
    /// Requests per second asked for (open loop; a share of the run's
    /// rate for one kind of request of a mix).
    pub target_rate: Option<f64>,
    /// Responses per second over the measured window.
    pub achieved_rate: Option<f64>,
    /// Latency of the successful responses. In open loop it is counted
    /// from the time the timetable scheduled the request, so that a
    /// request that had to wait for the server (or for a connection) is
    /// charged for the wait: no coordinated omission.
    pub latency_ms: Option<Percentiles>,
    /// Open loop only: the same responses, counted from the actual send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub scenario: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Requests per second asked for (open loop).
    pub target_rate: Option<f64>,
    /// In-flight requests: exactly (closed loop) or at most (open loop).
    pub concurrency: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rows: Vec<Row>,
    /// Open loop: the furthest the sender fell behind its timetable while
    /// measuring (a late sender means the client, not the server, was the
    /// bottleneck, or every connection was busy).
    pub max_send_lag_ms: Option<f64>,
    /// Rows waiting in the server's outboxes when the load ended.
    pub outbox_backlog_after: Option<u64>,
    /// The server's CPU and memory over the measured window (`--server-pid`).
    pub server: Option<ServerUsage>,
    pub notes: Vec<String>,
}

/// `3.14`, `31.4`, `314`: three significant figures or so.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn errors(e: &BTreeMap<String, u64>) -> String {
    let nonzero: Vec<String> = e
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if nonzero.is_empty() {
        "0".to_owned()
    } else {
        nonzero.join(", ")
    }
}

impl Report {
    pub fn mode_label(&self) -> String {
        match self.mode.as_str() {
            "open" => format!("open (≤ {} in flight)", self.concurrency),
            other => format!("{other} ({} in flight)", self.concurrency),
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| scenario | mode | target rate | achieved rate | requests | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n",
        );
        out.push_str("|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|\n");
        for row in &self.rows {
            let target = row
                .target_rate
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.0}/s"));
            let achieved = row
                .achieved_rate
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.1}/s"));
            let p = |f: fn(&Percentiles) -> f64| {
                row.latency_ms
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), |l| ms(f(l)))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                self.mode_label(),
                target,
                achieved,
                row.requests,
                errors(&row.errors),
                p(|l| l.p50),
                p(|l| l.p90),
                p(|l| l.p99),
                p(|l| l.p99_9),
                p(|l| l.max),
            );
        }
        out
    }

    /// The lines printed under the table.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(lag) = self.max_send_lag_ms {
            let _ = writeln!(
                out,
                "open loop: the sender was at most {} ms behind its timetable",
                ms(lag)
            );
        }
        for row in &self.rows {
            if let Some(s) = &row.service_ms {
                let _ = writeln!(
                    out,
                    "{}: from the actual send (service time) p50 {} / p99 {} / max {} ms",
                    row.name,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max)
                );
            }
        }
        if let Some(b) = self.outbox_backlog_after {
            let _ = writeln!(out, "outbox backlog when the load ended: {b} row(s)");
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                out,
                "server pid {}: {:.2} s CPU in {:.1} s ({:.2} cores); peak RSS {:.1} MB (was {:.1} MB before the window), RSS now {:.1} MB",
                s.pid,
                s.cpu_seconds,
                s.wall_seconds,
                s.cpu_cores,
                s.peak_rss_mb_after,
                s.peak_rss_mb_before,
                s.rss_mb_after
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_in_milliseconds() -> anyhow::Result<()> {
        let mut h = histogram();
        assert_eq!(Percentiles::of(&h), None);
        for us in 1..=1000u64 {
            h.record(us * 10)?; // 10 µs .. 10 ms
        }
        let p = Percentiles::of(&h).ok_or_else(|| anyhow::anyhow!("empty"))?;
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
        Ok(())
    }

    #[test]
    fn the_table_has_a_row_per_kind_of_request() {
        let mut h = histogram();
        let _ = h.record(1500);
        let report = Report {
            url: "http://x".into(),
            scenario: "mixed".into(),
            mode: "open".into(),
            target_rate: Some(1200.0),
            concurrency: 64,
            warmup_s: 2.0,
            duration_s: 10.0,
            rows: vec![Row {
                name: "mixed: get".into(),
                requests: 10,
                ok: 9,
                errors: BTreeMap::from([("503".to_owned(), 1), ("timeout".to_owned(), 0)]),
                target_rate: Some(1200.0),
                achieved_rate: Some(1199.54),
                latency_ms: Percentiles::of(&h),
                service_ms: None,
            }],
            max_send_lag_ms: None,
            outbox_backlog_after: None,
            server: None,
            notes: vec![],
        };
        let table = report.markdown();
        assert!(
            table.contains(
                "| mixed: get | open (≤ 64 in flight) | 1200/s | 1199.5/s | 10 | 503: 1 | 1.50 | 1.50 | 1.50 | 1.50 | 1.50 |"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["rows"][0]["latency_ms"]["p99.9"], 1.5);
    }
}
