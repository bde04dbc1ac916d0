use chrono::{DateTime, Utc};
use ordo_kernel::StoreError;
use serde::Serialize;

use crate::Envelope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Parked after its last failed attempt.
    Parked,
    /// An operator asked for a replay; a process with the consumer will
    /// deliver it.
    ReplayRequested,
    /// Delivered successfully after a replay.
    Replayed,
}

impl DeadLetterStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::ReplayRequested => "replay_requested",
            Self::Replayed => "replayed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parked" => Some(Self::Parked),
            "replay_requested" => Some(Self::ReplayRequested),
            "replayed" => Some(Self::Replayed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub consumer: String,
    pub envelope: Envelope,
    pub error: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub consumer: String,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub error: String,
    pub attempts: u32,
    pub status: DeadLetterStatus,
    pub parked_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub envelope: Envelope,
}

/// Where events that exhausted their attempts wait for an operator.
///
/// One row per `(consumer, event)`: parking the same event for the same
/// consumer again (after a replay failed) updates the row.
#[async_trait::async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    async fn park(&self, letter: NewDeadLetter) -> Result<(), StoreError>;
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    async fn get(&self, id: &str) -> Result<DeadLetter, StoreError>;
    /// Marks a parked letter for replay; `NotFound` for an unknown id,
    /// `Conflict` for one already replayed.
    async fn request_replay(&self, id: &str) -> Result<DeadLetter, StoreError>;
    /// Letters whose replay was requested and is not done yet.
    async fn replay_requests(&self) -> Result<Vec<DeadLetter>, StoreError>;
    async fn mark_replayed(&self, id: &str) -> Result<(), StoreError>;
    /// Letters currently parked or awaiting replay.
    async fn count_open(&self) -> Result<u64, StoreError>;
}
