//! The audit log of admin actions: who did what to which target, with
//! what outcome, under which request id. Appended by the HTTP middleware
//! for every state-changing admin request and by the console for its
//! forms; listed newest first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_kernel::{ClientId, Clock, IdGen, StoreError};

mod postgres;
mod sqlite;

pub use postgres::PgAuditStore;
pub use sqlite::SqliteAuditStore;

/// The prefix of audit entry ids.
pub const AUDIT_ID_PREFIX: &str = "aud_";

/// Longer texts are cut to this many characters: a path is the caller's
/// to choose, and the log must not become a place to store data.
const MAX_TEXT: usize = 512;

/// What happened, as the caller says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// The admin client that acted.
    pub actor: ClientId,
    /// What it did: `POST /v1/admin/clients/{id}/revoke` for an API
    /// request (method and route template), a name of the console's own
    /// for a console form.
    pub action: String,
    /// What it acted on: the concrete path, or the id of the thing.
    pub target: String,
    /// The outcome: the HTTP status answered.
    pub status: u16,
    pub request_id: Option<String>,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// `aud_` and a ULID: ids sort in recording order.
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: ClientId,
    pub action: String,
    pub target: String,
    pub status: u16,
    pub request_id: Option<String>,
}

/// One page of the log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `None` on the last one.
    pub next_cursor: Option<String>,
}

#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError>;
    /// Entries with an id below `before` (all without it), newest first,
    /// at most `limit`.
    async fn list(
        &self,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The audit log over its store, with the clock and ids of the process.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
}

impl AuditLog {
    pub const DEFAULT_LIMIT: usize = 50;
    pub const MAX_LIMIT: usize = 500;

    pub fn new(store: Arc<dyn AuditStore>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        Self { store, clock, ids }
    }

    /// Appends `entry`, stamped now.
    #[tracing::instrument(skip(self), fields(action = %entry.action))]
    pub async fn record(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let entry = AuditEntry {
            id: format!("{AUDIT_ID_PREFIX}{}", self.ids.ulid()),
            at: self.clock.now(),
            actor: entry.actor,
            action: cut(entry.action),
            target: cut(entry.target),
            status: entry.status,
            request_id: entry.request_id.map(cut),
        };
        self.store.append(entry.clone()).await?;
        Ok(entry)
    }

    /// A page of at most `limit` entries (clamped to 1..=[`Self::MAX_LIMIT`])
    /// older than the cursor `before`, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn list(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        let limit = limit.clamp(1, Self::MAX_LIMIT);
        let mut items = self
            .store
            .list(before.map(str::to_owned), limit + 1)
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(AuditPage { items, next_cursor })
    }

    /// Whether `s` is an entry id, as a cursor must be.
    pub fn is_entry_id(s: &str) -> bool {
        s.strip_prefix(AUDIT_ID_PREFIX)
            .is_some_and(|ulid| ulid::Ulid::from_string(ulid).is_ok())
    }
}

fn cut(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MAX_TEXT) {
        s.truncate(at);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(MAX_TEXT + 3);
        assert_eq!(cut(long).chars().count(), MAX_TEXT);
    }

    #[test]
    fn cursors_are_entry_ids() {
        assert!(AuditLog::is_entry_id(&format!("aud_{}", ulid::Ulid::new())));
        assert!(!AuditLog::is_entry_id("aud_nope"));
        assert!(!AuditLog::is_entry_id(&ulid::Ulid::new().to_string()));
    }
}
