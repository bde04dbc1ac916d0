//! Time and identity are injected: domain and reaction code never call
//! `Utc::now()` or a global generator, so that a simulation can drive them.

use std::sync::Mutex;

use chrono::{DateTime, Timelike, Utc};
use ulid::Ulid;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Microsecond precision: what every store keeps, so that a value read
    /// back equals the value written.
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now)
    }
}

pub trait IdGen: Send + Sync + 'static {
    fn ulid(&self) -> Ulid;
}

/// Monotonic ULIDs: ids generated in the same millisecond still sort in
/// generation order, which keyset pagination relies on.
#[derive(Default)]
pub struct UlidGen {
    inner: Mutex<ulid::Generator>,
}

impl UlidGen {
    pub fn new() -> Self {
        Self::default()
    }
}

impl IdGen for UlidGen {
    fn ulid(&self) -> Ulid {
        let mut generator = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Overflow only happens after 2^80 ids in one millisecond; fall back
        // to a fresh random ULID rather than failing.
        generator.generate().unwrap_or_else(|_| Ulid::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_from_one_generator_are_strictly_increasing() {
        let ids = UlidGen::new();
        let mut last = ids.ulid();
        for _ in 0..10_000 {
            let next = ids.ulid();
            assert!(next > last);
            last = next;
        }
    }
}
