//! Following one order as it happens: the stream of updates behind
//! `GET /v1/orders/{id}/events`.
//!
//! A follower sends the timeline entries it has not sent yet, in `seq`
//! order, then the order's status whenever it differs from the last one
//! sent. It looks again whenever the order's id goes by on
//! [`OrdersService::subscribe`], when it lagged behind that channel, and
//! every [`RESYNC`] in any case, since word from another process can be
//! lost. Once the order is final and its timeline holds the event that
//! made it so, the follower sends [`Update::End`] and stops.
//!
//! The status is read from the order itself, so it can run ahead of the
//! timeline, whose entries are appended as the bus delivers them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ordo_http::Principal;
use ordo_kernel::{OrderId, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::domain::{Order, OrderStatus};
use crate::service::{OrderError, OrdersService};
use crate::store::TimelineEntry;

/// How often a follower reads its order when told nothing.
pub const RESYNC: Duration = Duration::from_secs(5);

/// Where an order stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub id: OrderId,
    pub status: OrderStatus,
    pub cancellation_reason: Option<String>,
}

impl StatusSnapshot {
    pub fn of(order: &Order) -> Self {
        Self {
            id: order.id,
            status: order.status,
            cancellation_reason: order.cancellation_reason.clone(),
        }
    }
}

/// One thing to tell a follower.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A timeline entry the follower has not had yet.
    Entry(TimelineEntry),
    /// The order's status, when it differs from the last one sent.
    Status(StatusSnapshot),
    /// The order is final and its story up to then was sent: the last
    /// update of a stream.
    End(StatusSnapshot),
}

/// What a follower has sent so far.
#[derive(Debug)]
struct Cursor {
    /// The seq of the last entry sent, or that the client already had.
    last_seq: i64,
    last_status: Option<StatusSnapshot>,
    ended: bool,
}

impl Cursor {
    fn after(last_seq: Option<i64>) -> Self {
        Self {
            last_seq: last_seq.unwrap_or(0),
            last_status: None,
            ended: false,
        }
    }

    /// The updates that the order standing at `status` with `timeline`
    /// (in seq order) calls for, in the order to send them.
    fn advance(&mut self, status: StatusSnapshot, timeline: Vec<TimelineEntry>) -> Vec<Update> {
        if self.ended {
            return Vec::new();
        }
        // Final states are never left, so the event that entered one is
        // in the timeline at most once, and for good.
        let final_event = format!("order.{}", status.status);
        let settled =
            status.status.is_final() && timeline.iter().any(|e| e.event_type == final_event);
        let mut updates = Vec::new();
        for entry in timeline {
            if entry.seq > self.last_seq {
                self.last_seq = entry.seq;
                updates.push(Update::Entry(entry));
            }
        }
        if self.last_status.as_ref() != Some(&status) {
            self.last_status = Some(status.clone());
            updates.push(Update::Status(status.clone()));
        }
        if settled {
            self.ended = true;
            updates.push(Update::End(status));
        }
        updates
    }
}

/// Follows order `id` for `caller`, who must be allowed to see it (the
/// rule of [`OrdersService::get`], checked before anything is sent): the
/// timeline entries after seq `after` (all of them without it), the
/// status, then whatever happens, until the order is settled or
/// [`OrdersService::stop_following`] is called. A store error while
/// following ends the stream.
pub async fn follow(
    service: Arc<OrdersService>,
    caller: &Principal,
    id: OrderId,
    after: Option<i64>,
) -> Result<impl Stream<Item = Update> + Send + use<>, OrderError> {
    // Listen first, so that nothing committed after the reads slips by.
    let changes = service.subscribe();
    let stopping = service.stopping();
    let order = service.get(caller, id).await?;
    let timeline = OrdersService::timeline_seen_by(caller, service.store().timeline(id).await?);
    let mut cursor = Cursor::after(after);
    let first = cursor.advance(StatusSnapshot::of(&order), timeline);
    let follower = Follower {
        service,
        caller: caller.clone(),
        id,
        changes,
        stopping,
        cursor,
        queue: first.into(),
    };
    Ok(futures::stream::unfold(follower, Follower::next))
}

struct Follower {
    service: Arc<OrdersService>,
    caller: Principal,
    id: OrderId,
    changes: broadcast::Receiver<OrderId>,
    stopping: watch::Receiver<bool>,
    cursor: Cursor,
    /// Updates read but not yet taken by the stream.
    queue: VecDeque<Update>,
}

impl Follower {
    async fn next(mut self) -> Option<(Update, Self)> {
        loop {
            if let Some(update) = self.queue.pop_front() {
                return Some((update, self));
            }
            if self.cursor.ended || !self.wait().await {
                return None;
            }
            match self.read().await {
                Ok((order, timeline)) => {
                    let updates = self.cursor.advance(StatusSnapshot::of(&order), timeline);
                    self.queue.extend(updates);
                }
                Err(err) => {
                    tracing::warn!(order = %self.id, error = %err, "cannot read the order: its event stream ends");
                    return None;
                }
            }
        }
    }

    /// Waits until the order may have changed; false when the server stops.
    async fn wait(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                _ = self.stopping.wait_for(|stop| *stop) => return false,
                received = tokio::time::timeout_at(deadline, self.changes.recv()) => {
                    match received {
                        // Told nothing for a while: look anyway.
                        Err(_) => return true,
                        Ok(Ok(id)) if id == self.id => return true,
                        Ok(Ok(_)) => {}
                        // Perhaps missed it: look.
                        Ok(Err(RecvError::Lagged(_))) => return true,
                        // The service is gone: nothing more will happen.
                        Ok(Err(RecvError::Closed)) => return false,
                    }
                }
            }
        }
    }

    async fn read(&self) -> Result<(Order, Vec<TimelineEntry>), StoreError> {
        let store = self.service.store();
        let order = store.get(self.id).await?;
        let timeline =
            OrdersService::timeline_seen_by(&self.caller, store.timeline(self.id).await?);
        Ok((order, timeline))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use ulid::Ulid;

    use super::*;

    fn entry(seq: i64, event_type: &str) -> TimelineEntry {
        TimelineEntry {
            seq,
            event_id: Ulid::new().to_string(),
            event_type: event_type.to_owned(),
            at: Utc::now(),
            actor: None,
            correlation_id: "c".to_owned(),
            data: serde_json::json!({}),
        }
    }

    fn story(types: &[&str]) -> Vec<TimelineEntry> {
        types
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as i64 + 1, t))
            .collect()
    }

    fn at(id: OrderId, status: OrderStatus) -> StatusSnapshot {
        StatusSnapshot {
            id,
            status,
            cancellation_reason: None,
        }
    }

    /// Each update as `seq`, `status:<s>` or `end:<s>`.
    fn shown(updates: &[Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u {
                Update::Entry(e) => e.seq.to_string(),
                Update::Status(s) => format!("status:{}", s.status),
                Update::End(s) => format!("end:{}", s.status),
            })
            .collect()
    }

    #[test]
    fn a_follower_gets_each_entry_once_and_the_status_when_it_changes() {
        let id = OrderId::from_ulid(Ulid::new());
        let mut cursor = Cursor::after(None);
        let created = story(&["order.created"]);
        assert_eq!(
            shown(&cursor.advance(at(id, OrderStatus::Pending), created.clone())),
            ["1", "status:pending"]
        );
        assert!(
            cursor
                .advance(at(id, OrderStatus::Pending), created)
                .is_empty()
        );
        // The status can run ahead of the timeline.
        let reserved = story(&["order.created", "inventory.reserved"]);
        assert_eq!(
            shown(&cursor.advance(at(id, OrderStatus::Confirmed), reserved)),
            ["2", "status:confirmed"]
        );
        let confirmed = story(&["order.created", "inventory.reserved", "order.confirmed"]);
        assert_eq!(
            shown(&cursor.advance(at(id, OrderStatus::Confirmed), confirmed)),
            ["3"]
        );
    }

    #[test]
    fn a_follower_ends_once_the_event_that_made_the_order_final_is_sent() {
        let id = OrderId::from_ulid(Ulid::new());
        let mut cursor = Cursor::after(Some(1));
        let mut cancelled = at(id, OrderStatus::Cancelled);
        cancelled.cancellation_reason = Some("payment_failed".to_owned());
        // Cancelled already, but order.cancelled is not in the timeline yet.
        let before = story(&["order.created", "inventory.reserved", "payment.failed"]);
        assert_eq!(
            shown(&cursor.advance(cancelled.clone(), before)),
            ["2", "3", "status:cancelled"]
        );
        assert!(!cursor.ended);
        let after = story(&[
            "order.created",
            "inventory.reserved",
            "payment.failed",
            "order.cancelled",
        ]);
        let updates = cursor.advance(cancelled.clone(), after.clone());
        assert_eq!(shown(&updates), ["4", "end:cancelled"]);
        assert_eq!(updates.last(), Some(&Update::End(cancelled.clone())));
        assert!(cursor.ended);
        assert!(cursor.advance(cancelled.clone(), after.clone()).is_empty());

        // A client that reconnects with the last id gets the end at once.
        let mut again = Cursor::after(Some(4));
        assert_eq!(
            shown(&again.advance(cancelled, after)),
            ["status:cancelled", "end:cancelled"]
        );
    }
}
