//! Orders storage: the trait the service and reactions use, and its
//! implementations on SQLite ([`SqliteOrderStore`]) and PostgreSQL
//! ([`PgOrderStore`]). SQL lives here and nowhere else in this crate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_bus::Envelope;
pub use ordo_bus::{Applied, InboxKey};
use ordo_kernel::{ClientId, Migration, MigrationSet, OrderId, ProductId, StoreError};

use crate::domain::{CatalogEntry, Order, OrderStatus};

mod postgres;
mod sqlite;

pub use postgres::PgOrderStore;
pub use sqlite::SqliteOrderStore;

/// The SQLite migrations of the orders database.
pub const MIGRATIONS: [MigrationSet; 2] = [
    ordo_sqlite::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "orders",
        migrations: &[
            Migration {
                version: 1,
                name: "orders, items, catalog projection, timeline",
                sql: include_str!("../../migrations/sqlite/0001_orders.sql"),
            },
            Migration {
                version: 2,
                name: "cancellation requests",
                sql: include_str!("../../migrations/sqlite/0002_cancellation_requests.sql"),
            },
            Migration {
                version: 3,
                name: "live orders by the age of their status",
                sql: include_str!("../../migrations/sqlite/0003_status_age.sql"),
            },
        ],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineAppend {
    Appended,
    Duplicate,
    /// The order's previous event is not in the timeline yet.
    Early,
}

/// The PostgreSQL migrations of the `orders` schema.
pub const PG_MIGRATIONS: [MigrationSet; 2] = [
    ordo_postgres::PLATFORM_MIGRATIONS,
    MigrationSet {
        name: "orders",
        migrations: &[
            Migration {
                version: 1,
                name: "orders and their items",
                sql: include_str!("../../migrations/postgres/0001_orders.sql"),
            },
            Migration {
                version: 2,
                name: "catalog projection",
                sql: include_str!("../../migrations/postgres/0002_catalog.sql"),
            },
            Migration {
                version: 3,
                name: "timeline",
                sql: include_str!("../../migrations/postgres/0003_timeline.sql"),
            },
            Migration {
                version: 4,
                name: "live orders by the age of their status",
                sql: include_str!("../../migrations/postgres/0004_status_age.sql"),
            },
        ],
    },
];

/// Which orders a list returns. `before` is the keyset cursor: ids sort in
/// creation order, pages walk newest first. Every filter present must
/// hold.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub customer: Option<ClientId>,
    pub seller: Option<ClientId>,
    /// Created at or after this instant.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this instant.
    pub created_to: Option<DateTime<Utc>>,
    pub before: Option<OrderId>,
    /// The order's attributes hold each of these keys with exactly this
    /// value (JSON containment, `attributes @> {...}`). Values are scalars:
    /// a string, a number, `true`, `false` or `null`; a number matches an
    /// equal number however it is written (`1` and `1.0`). An array or
    /// object value is refused by both stores.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// The statuses an order leaves on its own (by an event), in the SQL of
/// the partial index that serves [`OrderStore::unchanged_since`]. Each
/// query repeats it, so that the planner sees the index applies whatever
/// status is bound.
const LIVE_STATUSES_SQL: &str = "('pending', 'confirmed', 'paid', 'shipped')";

/// The refusal of an attribute filter value that is not a scalar.
fn check_attribute_filter(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), StoreError> {
    match attributes
        .iter()
        .find(|(_, v)| v.is_array() || v.is_object())
    {
        Some((key, _)) => Err(StoreError::Other(anyhow::anyhow!(
            "the attribute filter on {key:?} is not a scalar"
        ))),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub correlation_id: String,
    pub data: serde_json::Value,
}

/// Orders created in one time bucket of an overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountBucket {
    pub start: DateTime<Utc>,
    pub count: u64,
}

/// How long one step of the saga took, among the orders that finished it
/// within one time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBucket {
    pub start: DateTime<Utc>,
    pub count: u64,
    /// The median and the 95th percentile, in seconds, interpolated as
    /// PostgreSQL's `percentile_cont` does.
    pub p50_seconds: f64,
    pub p95_seconds: f64,
}

/// The latencies of the two steps customers wait for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageLatencies {
    /// From the order's creation to its `order.paid`.
    pub create_to_paid: Vec<LatencyBucket>,
    /// From `order.paid` to `order.shipped`.
    pub paid_to_shipped: Vec<LatencyBucket>,
}

/// The bucket of `at`: buckets are `bucket_secs` long, counted from the
/// epoch, so that both stores and every refresh agree on their edges.
pub(crate) fn bucket_start(
    bucket_index: i64,
    bucket_secs: i64,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp(bucket_index.saturating_mul(bucket_secs), 0)
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("a time bucket out of range")))
}

/// A bucket length in whole seconds, at least one.
pub(crate) fn bucket_seconds(bucket: std::time::Duration) -> i64 {
    i64::try_from(bucket.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// The `p` percentile of `sorted` (ascending), interpolated linearly
/// between the closest ranks, as `percentile_cont` computes it.
pub(crate) fn percentile_cont(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (sorted[lo.min(last)], sorted[hi.min(last)]);
    a + (b - a) * (rank - lo as f64)
}

#[async_trait::async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Writes a new order and its `order.created`, atomically. `Conflict`
    /// when the customer already used the order's idempotency key.
    async fn create(&self, order: Order, created: Envelope) -> Result<(), StoreError>;
    async fn get(&self, id: OrderId) -> Result<Order, StoreError>;
    async fn find_by_idempotency_key(
        &self,
        customer: ClientId,
        key: &str,
    ) -> Result<Option<Order>, StoreError>;
    async fn list(&self, filter: OrderFilter, limit: usize) -> Result<Vec<Order>, StoreError>;
    /// Orders in `status` whose status last changed before `changed_before`
    /// (`updated_at`), the longest waiting first, at most `limit`. Only the
    /// live statuses (pending, confirmed, paid, shipped) are indexed for
    /// this; a final status finds nothing.
    async fn unchanged_since(
        &self,
        status: OrderStatus,
        changed_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError>;
    /// Saves a transitioned order with its events, if the stored version is
    /// still `expected_version` (else `Conflict`), and with the inbox entry
    /// of the event that caused it, if any.
    async fn save_transition(
        &self,
        order: Order,
        expected_version: i64,
        events: Vec<Envelope>,
        inbox: Option<InboxKey>,
    ) -> Result<Applied, StoreError>;
    async fn catalog(
        &self,
        ids: Vec<ProductId>,
    ) -> Result<HashMap<ProductId, CatalogEntry>, StoreError>;
    /// Keeps the entry if it is newer than the one held.
    async fn upsert_catalog(
        &self,
        entry: CatalogEntry,
        inbox: InboxKey,
    ) -> Result<Applied, StoreError>;
    /// Appends `event` to its order's timeline. With `after`, the entry
    /// with that sequence must already be there.
    async fn append_timeline(
        &self,
        order: OrderId,
        event: Envelope,
        after: Option<i64>,
        inbox: InboxKey,
    ) -> Result<TimelineAppend, StoreError>;
    async fn timeline(&self, order: OrderId) -> Result<Vec<TimelineEntry>, StoreError>;

    // The admin overview. Each reads only the orders created at or after
    // `since`: a range of ids (they begin with their creation time) or of
    // `created_at`, so that its cost follows the window, not the history.

    /// Orders created since `since`, by status; statuses without any are
    /// left out.
    async fn counts_by_status(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(OrderStatus, u64)>, StoreError>;
    /// Orders created since `since`, counted per `bucket` (see
    /// [`CountBucket`]), oldest first; empty buckets are left out.
    async fn created_per_bucket(
        &self,
        since: DateTime<Utc>,
        bucket: std::time::Duration,
    ) -> Result<Vec<CountBucket>, StoreError>;
    /// The orders created since `since` that are cancelled, by reason, the
    /// most frequent first.
    async fn cancellations_by_reason(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Of the orders created since `since`, how long creation → paid and
    /// paid → shipped took (their timeline's `order.paid` and
    /// `order.shipped` against `created_at`), per `bucket` of the instant
    /// the step ended, oldest first.
    async fn stage_latencies(
        &self,
        since: DateTime<Utc>,
        bucket: std::time::Duration,
    ) -> Result<StageLatencies, StoreError>;
}
