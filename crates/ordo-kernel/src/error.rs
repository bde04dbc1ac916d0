//! The storage layer's one error story.
//!
//! Storage traits of every context return `StoreError`. It is deliberately
//! small: callers branch on `NotFound` and `Conflict` (a unique key or an
//! optimistic-concurrency version did not match); everything else is
//! `Other`, carried with its chain to be logged and answered as a 500.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage is shutting down")]
    Closed,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    pub fn other(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Other(anyhow::Error::new(err))
    }
}
