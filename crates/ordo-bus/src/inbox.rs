use crate::Envelope;

/// A consumer's claim on an event, recorded in the inbox in the same
/// transaction as the consumer's effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKey {
    pub consumer: String,
    pub event_id: String,
}

impl InboxKey {
    pub fn new(consumer: &str, event: &Envelope) -> Self {
        Self {
            consumer: consumer.to_owned(),
            event_id: event.id.to_string(),
        }
    }
}

/// What a write guarded by the inbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The inbox already held the event: nothing was written.
    Duplicate,
}
