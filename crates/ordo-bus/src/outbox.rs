use std::sync::Arc;

use ordo_kernel::StoreError;
use tokio::sync::Notify;

use crate::Envelope;

/// A committed, not yet published outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub envelope: Envelope,
}

/// A service's outbox, as the relay sees it.
///
/// Rows are *claimed*, never read "after the last seen id": ids commit out
/// of order under concurrent writers. A claimed row is leased to the
/// claiming relay until it is marked published or released.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The owning service, for logs and metrics.
    fn service(&self) -> &str;
    /// Notified after every commit that wrote outbox rows.
    fn wakeup(&self) -> Arc<Notify>;
    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError>;
    /// Gives claimed rows back after a failed publish.
    async fn release(&self, seqs: &[i64]);
    /// Rows committed but not yet published.
    async fn backlog(&self) -> Result<u64, StoreError>;
    /// Every event still held about `subject`, published or not, in outbox
    /// order (published rows are kept for a retention period).
    async fn events_for_subject(&self, subject: &str) -> Result<Vec<Envelope>, StoreError>;
    /// Deletes outbox rows published before `published_before` and inbox
    /// rows recorded before `processed_before`; how many of each.
    ///
    /// Inbox rows must outlive every redelivery: keep them for days, far
    /// beyond the broker's duplicate window.
    async fn purge(
        &self,
        published_before: chrono::DateTime<chrono::Utc>,
        processed_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let _ = (published_before, processed_before);
        Ok((0, 0))
    }
}
