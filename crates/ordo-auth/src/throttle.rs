//! Throttling of failed client authentication, per client id and per
//! source address: after too many failures within a window the key is
//! locked for a while, and each repeated lockout lasts twice as long.
//!
//! The counts live in this process only: in distributed mode every replica
//! counts on its own, so a client behind a load balancer may try up to
//! `failures` times per replica and window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The limits of failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failures a key may have within `window`; the next one locks it.
    pub failures: u32,
    pub window: Duration,
    /// The first lockout; each repeated one doubles it, up to `max_lockout`.
    pub first_lockout: Duration,
    pub max_lockout: Duration,
    /// A key without a failure or a lockout for this long starts afresh.
    pub quiet: Duration,
    /// The most keys remembered, so that a flood of made-up client ids or
    /// addresses cannot grow memory without bound.
    pub max_keys: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            failures: 10,
            window: Duration::from_secs(60),
            first_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(3600),
            quiet: Duration::from_secs(3600),
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(String),
    Address(IpAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
    /// Lockouts so far: the next one lasts `first_lockout * 2^lockouts`.
    lockouts: u32,
    /// The last failure or the end of the last lockout.
    last_event: DateTime<Utc>,
}

/// Time from `from` to `to`, zero if `to` is not later (the wall clock may
/// step back).
fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whole seconds, rounded up: what `Retry-After` can say.
fn round_up(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Entry {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            window_start: now,
            failures: 0,
            locked_until: None,
            lockouts: 0,
            last_event: now,
        }
    }

    fn locked_for(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| between(now, until))
    }

    fn is_stale(&self, now: DateTime<Utc>, limits: &ThrottleLimits) -> bool {
        self.locked_for(now).is_none() && between(self.last_event, now) >= limits.quiet
    }

    /// Counts a failure; the lockout it starts, if any.
    fn fail(&mut self, now: DateTime<Utc>, limits: &ThrottleLimits) -> Option<Duration> {
        if self.is_stale(now, limits) {
            *self = Self::new(now);
        }
        if between(self.window_start, now) >= limits.window {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_event = now;
        if self.failures <= limits.failures {
            return None;
        }
        let lockout = limits
            .first_lockout
            .saturating_mul(2_u32.saturating_pow(self.lockouts.min(31)))
            .min(limits.max_lockout);
        let until = later(now, lockout);
        self.locked_until = Some(until);
        self.lockouts = self.lockouts.saturating_add(1);
        self.failures = 0;
        self.window_start = until;
        self.last_event = until;
        Some(lockout)
    }
}

/// A lockout that a failure just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Whether the client id, the address, or both were locked.
    pub client: bool,
    pub address: bool,
    pub retry_after: Duration,
}

/// Failed authentication, counted per client id and per source address.
pub struct Throttle {
    limits: ThrottleLimits,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(ThrottleLimits::default())
    }
}

fn keys(client_id: Option<&str>, source: Option<IpAddr>) -> impl Iterator<Item = Key> {
    client_id
        .map(|id| Key::Client(id.to_owned()))
        .into_iter()
        .chain(source.map(Key::Address))
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &ThrottleLimits {
        &self.limits
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // The map holds only counts: after a panic elsewhere they are
        // still good enough.
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How long the client id or the address is still locked (the longer
    /// of the two), rounded up to whole seconds; `None` if neither is.
    pub fn check(
        &self,
        client_id: Option<&str>,
        source: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        let entries = self.entries();
        keys(client_id, source)
            .filter_map(|key| entries.get(&key).and_then(|e| e.locked_for(now)))
            .max()
            .map(round_up)
    }

    /// Counts a failure against the client id and the address; the
    /// lockout it starts, if it starts one.
    pub fn failed(
        &self,
        client_id: Option<&str>,
        source: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Option<Lockout> {
        let mut entries = self.entries();
        let mut lockout = Lockout {
            client: false,
            address: false,
            retry_after: Duration::ZERO,
        };
        for key in keys(client_id, source) {
            if !entries.contains_key(&key) {
                self.make_room(&mut entries, now);
            }
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Entry::new(now));
            if let Some(locked) = entry.fail(now, &self.limits) {
                match key {
                    Key::Client(_) => lockout.client = true,
                    Key::Address(_) => lockout.address = true,
                }
                lockout.retry_after = lockout.retry_after.max(round_up(locked));
            }
        }
        (lockout.client || lockout.address).then_some(lockout)
    }

    /// A client authenticated: its failures are forgotten. The address's
    /// are not: one good secret does not excuse guesses at other clients.
    pub fn succeeded(&self, client_id: &str) {
        self.entries().remove(&Key::Client(client_id.to_owned()));
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops stale keys when the map is full and, if none is, the key
    /// seen longest ago, preferring one that is not locked.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, now: DateTime<Utc>) {
        if entries.len() < self.limits.max_keys {
            return;
        }
        entries.retain(|_, e| !e.is_stale(now, &self.limits));
        while entries.len() >= self.limits.max_keys {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| (e.locked_for(now).is_some(), e.last_event))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => entries.remove(&key),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    fn fail_times(t: &Throttle, client: &str, n: u32, now: DateTime<Utc>) -> Option<Lockout> {
        let mut last = None;
        for _ in 0..n {
            last = t.failed(Some(client), ADDR, now);
        }
        last
    }

    #[test]
    fn the_eleventh_failure_within_a_window_locks_client_and_address() {
        let t = Throttle::default();
        assert_eq!(fail_times(&t, "cli_a", 10, at(0)), None);
        assert_eq!(t.check(Some("cli_a"), ADDR, at(1)), None);
        let lockout = t.failed(Some("cli_a"), ADDR, at(2)).unwrap();
        assert!(lockout.client && lockout.address);
        assert_eq!(lockout.retry_after, Duration::from_secs(60));
        // Locked whatever the secret: the caller checks before verifying.
        assert_eq!(
            t.check(Some("cli_a"), None, at(32)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            t.check(Some("cli_other"), ADDR, at(32)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(t.check(Some("cli_other"), None, at(32)), None);
        assert_eq!(t.check(Some("cli_a"), ADDR, at(62)), None);
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock() {
        let t = Throttle::default();
        for minute in 0..5 {
            assert_eq!(fail_times(&t, "cli_a", 10, at(minute * 60)), None);
        }
        assert_eq!(t.check(Some("cli_a"), ADDR, at(300)), None);
    }

    #[test]
    fn repeated_lockouts_double_up_to_the_cap_and_quiet_resets_them() {
        let t = Throttle::default();
        let mut now = at(0);
        let mut seen = Vec::new();
        for _ in 0..8 {
            let lockout = fail_times(&t, "cli_a", 11, now).unwrap();
            seen.push(lockout.retry_after.as_secs());
            now += chrono::Duration::seconds(lockout.retry_after.as_secs() as i64);
        }
        assert_eq!(seen, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // An hour with no failure after the last lockout ended: afresh.
        now += chrono::Duration::seconds(3600);
        let lockout = fail_times(&t, "cli_a", 11, now).unwrap();
        assert_eq!(lockout.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn a_success_clears_the_clients_count_but_not_the_addresss() {
        let t = Throttle::default();
        fail_times(&t, "cli_a", 9, at(0));
        t.succeeded("cli_a");
        // The client starts again at zero; the address goes on from 9.
        assert_eq!(t.failed(Some("cli_a"), ADDR, at(1)), None);
        let lockout = t.failed(Some("cli_a"), ADDR, at(2)).unwrap();
        assert!(!lockout.client && lockout.address);
        assert_eq!(t.check(Some("cli_a"), None, at(3)), None);
        assert!(t.check(None, ADDR, at(3)).is_some());
    }

    #[test]
    fn memory_is_bounded_and_stale_keys_go_first() {
        let t = Throttle::new(ThrottleLimits {
            max_keys: 100,
            ..ThrottleLimits::default()
        });
        // A locked client survives a flood of made-up ids.
        fail_times(&t, "cli_locked", 11, at(0));
        for i in 0..1000 {
            t.failed(Some(&format!("cli_{i}")), None, at(1));
        }
        assert!(t.len() <= 100);
        assert!(t.check(Some("cli_locked"), None, at(2)).is_some());
        // Stale keys are dropped when room is needed.
        let later = at(2 * 3600);
        t.failed(Some("cli_new"), None, later);
        assert!(t.len() <= 3, "{}", t.len());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let t = Throttle::default();
        fail_times(&t, "cli_a", 11, at(0));
        let now = at(10) + chrono::Duration::milliseconds(500);
        assert_eq!(
            t.check(Some("cli_a"), None, now),
            Some(Duration::from_secs(50))
        );
    }
}
