//! CPU time and memory of the server process, from `/proc` (Linux).

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

/// One reading of `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// VmHWM: the peak resident set since the process started, kB.
    peak_rss_kb: u64,
    /// VmRSS: the resident set now, kB.
    rss_kb: u64,
    taken: Instant,
}

/// What the server used between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// Wall-clock time between the snapshots.
    pub wall_seconds: f64,
    /// CPU time (user + system) the server used in that time.
    pub cpu_seconds: f64,
    /// `cpu_seconds / wall_seconds`: cores kept busy on average.
    pub cpu_cores: f64,
    /// Peak resident set (VmHWM) when the measurement started, MB.
    pub peak_rss_mb_before: f64,
    /// Peak resident set (VmHWM) when it ended, MB.
    pub peak_rss_mb_after: f64,
    /// Resident set (VmRSS) when it ended, MB.
    pub rss_mb_after: f64,
}

pub fn snapshot(pid: u32) -> anyhow::Result<Snapshot> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat: is {pid} a running process?"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Snapshot {
        cpu_ticks: cpu_ticks(&stat)
            .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat: {stat}"))?,
        peak_rss_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
        rss_kb: status_kb(&status, "VmRSS:").unwrap_or(0),
        taken: Instant::now(),
    })
}

pub fn usage(pid: u32, before: &Snapshot, after: &Snapshot) -> ServerUsage {
    let wall = after.taken.duration_since(before.taken).as_secs_f64();
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / clock_ticks_per_second();
    let mb = |kb: u64| kb as f64 / 1024.0;
    ServerUsage {
        pid,
        wall_seconds: wall,
        cpu_seconds: cpu,
        cpu_cores: if wall > 0.0 { cpu / wall } else { 0.0 },
        peak_rss_mb_before: mb(before.peak_rss_kb),
        peak_rss_mb_after: mb(after.peak_rss_kb),
        rss_mb_after: mb(after.rss_kb),
    }
}

/// Fields 14 and 15 of `/proc/PID/stat`, counted after the command name,
/// which is in parentheses and may hold spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `getconf CLK_TCK`, 100 (Linux's USER_HZ) when that cannot be asked.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// Reads the server's usage over `[from, to]` in the background: a
/// snapshot at each end.
pub fn watch(
    pid: u32,
    from: Instant,
    to: Instant,
) -> tokio::task::JoinHandle<anyhow::Result<ServerUsage>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before = snapshot(pid)?;
        tokio::time::sleep_until(to.into()).await;
        let after = snapshot(pid)?;
        Ok(usage(pid, &before, &after))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (ordo (worker) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 123456789 4567 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn memory_is_read_from_status_in_kilobytes() {
        let status = "Name:\tordo\nVmPeak:\t 900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), Some(51_200));
        assert_eq!(status_kb(status, "VmRSS:"), Some(40_960));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_read() -> anyhow::Result<()> {
        let me = std::process::id();
        let before = snapshot(me)?;
        let after = snapshot(me)?;
        let u = usage(me, &before, &after);
        assert!(u.peak_rss_mb_after > 0.0);
        assert!(u.cpu_seconds >= 0.0);
        Ok(())
    }
}
