//! pgbench scripts made of a store's own statements, for the ceiling a
//! benchmark of the HTTP API is compared with: the database alone running
//! exactly the SQL an endpoint runs, at the same concurrency.
//!
//! A store renders its statements with [`substitute`], its parameters as
//! literals ([`text`], [`array`], [`null`]) and the values that must be
//! fresh in every transaction (primary keys) as pgbench expressions over a
//! random `:n` (see [`FRESH`]).

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
use ordo_kernel::StoreError;

use crate::outbox::OUTBOX_INSERT;

/// The script line that draws the `:n` a transaction builds its fresh
/// keys from.
pub const FRESH: &str = "\\set n random(1, 1000000000000000)";

/// A key unique to the transaction: `prefix` followed by `:n` in 26
/// digits, which is a valid ULID (digits are Crockford base-32), so the
/// rows read back as well-formed ids.
pub fn fresh(prefix: &str) -> String {
    format!("({} || lpad(:n::text, 26, '0'))", text(prefix))
}

/// A quoted SQL string literal. pgbench reads `:name` as a variable even
/// inside quotes, so a colon before a name ends the literal and the rest
/// continues on the next line (SQL joins string constants separated by a
/// newline into one).
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.push_str("''"),
            ':' if chars
                .peek()
                .is_some_and(|n| n.is_alphabetic() || *n == '_' || !n.is_ascii()) =>
            {
                out.push_str(":'\n'");
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An optional string: the literal, or `NULL`.
pub fn opt_text(value: Option<&str>) -> String {
    value.map_or_else(null, text)
}

fn null() -> String {
    "NULL".to_owned()
}

/// A timestamp literal, as the driver sends it.
pub fn timestamp(at: &DateTime<Utc>) -> String {
    text(&at.to_rfc3339())
}

/// A JSON value literal.
pub fn json(value: &serde_json::Value) -> String {
    text(&value.to_string())
}

/// An array literal (`'{"a","b"}'`) of the given elements.
pub fn array<T: ToString>(values: &[T]) -> String {
    let elements: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                "\"{}\"",
                v.to_string().replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    text(&format!("{{{}}}", elements.join(",")))
}

/// `sql` with each `$k` replaced by `values[k - 1]`.
pub fn substitute(sql: &str, values: &[String]) -> Result<String, StoreError> {
    let mut out = String::with_capacity(sql.len() * 2);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        let value = digits
            .parse::<usize>()
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|k| values.get(k))
            .ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!(
                    "statement parameter ${digits} has no value: {sql}"
                ))
            })?;
        out.push_str(value);
    }
    Ok(out)
}

/// The outbox insert `outbox_append` runs, for `envelope` written under
/// the event id and subject given (expressions).
pub fn outbox_insert(
    envelope: &Envelope,
    event_id: String,
    subject: String,
) -> Result<String, StoreError> {
    let body = serde_json::to_string(envelope).map_err(|e| StoreError::Other(e.into()))?;
    substitute(
        OUTBOX_INSERT,
        &[
            event_id,
            text(&envelope.event_type),
            subject,
            text(&body),
            timestamp(&envelope.time),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_replaced_by_their_values_not_by_prefixes() {
        let values: Vec<String> = (1..=11).map(|i| format!("v{i}")).collect();
        assert_eq!(
            substitute("SELECT $1, $10, $11, $2", &values).unwrap(),
            "SELECT v1, v10, v11, v2"
        );
        assert!(substitute("SELECT $12", &values).is_err());
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(text("O'Hara"), "'O''Hara'");
        assert_eq!(array(&["a\"b", "c"]), r#"'{"a\"b","c"}'"#);
        assert_eq!(array(&[1, 2]), r#"'{"1","2"}'"#);
        assert_eq!(fresh("ord_"), "('ord_' || lpad(:n::text, 26, '0'))");
        assert_eq!(
            json(&serde_json::json!({"a": true, "c": "x:1"})),
            "'{\"a\":'\n'true,\"c\":\"x:1\"}'"
        );
    }
}
