//! What the idempotency layer needs from storage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ordo_kernel::StoreError;

/// A response kept to be replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What storage says when a request with a key arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is new (or its earlier holder died): this request runs.
    Started,
    /// The same request completed before: replay its response.
    Replay(StoredResponse),
    /// The key was used with another request.
    Mismatch,
    /// The same key is being processed right now.
    InFlight,
}

#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Records the key as in flight, atomically with checking what it held.
    /// A key older than `retention` counts as new; an in-flight key locked
    /// longer than `lock_ttl` ago belongs to a request that died and is
    /// taken over.
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<Begin, StoreError>;
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forgets an in-flight key so that the client may retry.
    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError>;
    /// Deletes keys created before `before`.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}
