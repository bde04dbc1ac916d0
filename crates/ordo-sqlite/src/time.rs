//! Timestamps are stored as fixed-width RFC 3339 UTC text, so that text
//! order is time order and range filters can use an index.

use chrono::{DateTime, SecondsFormat, Utc};
use ordo_kernel::StoreError;

pub fn to_sql(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn from_sql(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(anyhow::anyhow!("bad timestamp {s:?} in the database: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_timestamps_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2026-01-01T00:00:09Z")
            .unwrap()
            .to_utc();
        let b = DateTime::parse_from_rfc3339("2026-01-01T00:00:10.5Z")
            .unwrap()
            .to_utc();
        assert!(to_sql(a) < to_sql(b));
        assert_eq!(from_sql(&to_sql(b)).unwrap(), b);
    }
}
