//! Ordo's event bus.
//!
//! Services never call each other: they write events to their outbox in the
//! same transaction as the state change, a [`Relay`] hands each committed
//! outbox row to a [`Publisher`], and consumers react through a [`Handler`],
//! recording `(consumer, event id)` in their inbox in the same transaction as
//! their effect. Delivery is at least once; the inbox makes effects happen
//! exactly once.
//!
//! The publisher is the only part that differs between modes. In embedded
//! mode it is the in-process [`LocalBus`]: publishing an event *is*
//! delivering it to every subscribed consumer (with retries, backoff and
//! dead-lettering), and the relay marks the outbox row published only once
//! every consumer has either handled or parked it. The outbox is therefore
//! the durable log: a crash at any point leaves the row unpublished, and it
//! is delivered again on the next start.

mod dead_letter;
mod envelope;
mod inbox;
mod local;
mod outbox;
mod relay;
mod retry;

pub use dead_letter::{DeadLetter, DeadLetterStatus, DeadLetterStore, NewDeadLetter};
pub use envelope::{Envelope, EventContext, EventPayload};
pub use inbox::{Applied, InboxKey};
pub use local::{BusStats, Consumer, Faults, Handler, HandlerError, LocalBus, service_of};
pub use outbox::{OutboxRow, OutboxStore};
pub use relay::{Relay, RelayHandle};
pub use retry::RetryPolicy;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Where the relay sends committed outbox rows.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Resolves once the event is durably accepted: by the broker, or, for
    /// the in-process bus, by every subscribed consumer.
    async fn publish(&self, event: &Envelope) -> Result<(), BusError>;
}
