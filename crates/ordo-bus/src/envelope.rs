//! The CloudEvents 1.0 envelope every event travels in.

use chrono::{DateTime, Utc};
use ordo_kernel::EventId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A typed event payload: its type names the event and its version
/// (`order.created.v1`); a consumer decodes only versions it knows.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The CloudEvents `type`, version included: `order.created.v1`.
    const TYPE: &'static str;
    /// The producing service, the CloudEvents `source` (`/ordo/orders`).
    const SOURCE: &'static str;
}

/// Where an event comes from in the chain of causes: the request id or the
/// event that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    pub correlation_id: String,
    pub causation_id: Option<String>,
}

impl EventContext {
    pub fn from_request(request_id: impl Into<String>) -> Self {
        Self {
            correlation_id: request_id.into(),
            causation_id: None,
        }
    }

    /// The context of an event produced in reaction to `cause`.
    pub fn caused_by(cause: &Envelope) -> Self {
        Self {
            correlation_id: cause.correlationid.clone(),
            causation_id: Some(cause.id.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    pub id: EventId,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The aggregate the event is about: the order id for order events.
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    pub correlationid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// The producer's per-subject sequence (the aggregate version after the
    /// change), so a consumer can tell an early event from a late one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Who caused the event: a client id, or `system:<service>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub data: Box<RawValue>,
}

impl Envelope {
    pub fn new<E: EventPayload>(
        id: EventId,
        time: DateTime<Utc>,
        subject: impl Into<String>,
        sequence: Option<i64>,
        context: &EventContext,
        payload: &E,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            specversion: "1.0".to_owned(),
            id,
            source: E::SOURCE.to_owned(),
            event_type: E::TYPE.to_owned(),
            subject: subject.into(),
            time,
            datacontenttype: "application/json".to_owned(),
            correlationid: context.correlation_id.clone(),
            causationid: context.causation_id.clone(),
            sequence,
            actor: None,
            data: serde_json::value::to_raw_value(payload)?,
        })
    }

    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn is<E: EventPayload>(&self) -> bool {
        self.event_type == E::TYPE
    }

    /// The typed payload; an error for another type or a malformed payload.
    pub fn decode<E: EventPayload>(&self) -> anyhow::Result<E> {
        anyhow::ensure!(
            self.is::<E>(),
            "expected a {} event, got {}",
            E::TYPE,
            self.event_type
        );
        serde_json::from_str(self.data.get())
            .map_err(|e| anyhow::anyhow!("malformed {} payload: {e}", self.event_type))
    }

    /// The event's name without its version: `order.created`.
    pub fn name(&self) -> &str {
        match self.event_type.rsplit_once(".v") {
            Some((name, version)) if version.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => &self.event_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use ulid::Ulid;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pinged {
        n: u32,
    }
    impl EventPayload for Pinged {
        const TYPE: &'static str = "test.pinged.v2";
        const SOURCE: &'static str = "/ordo/test";
    }

    #[test]
    fn an_envelope_round_trips_with_its_typed_payload() {
        let ctx = EventContext::from_request("req-1");
        let env = Envelope::new(
            EventId::from_ulid(Ulid::new()),
            Utc::now(),
            "ord_x",
            Some(3),
            &ctx,
            &Pinged { n: 7 },
        )
        .unwrap();
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains(r#""type":"test.pinged.v2""#));
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode::<Pinged>().unwrap(), Pinged { n: 7 });
        assert_eq!(back.name(), "test.pinged");
        assert_eq!(back.sequence, Some(3));
        assert_eq!(back.correlationid, "req-1");
    }

    #[test]
    fn a_reaction_inherits_the_correlation_and_names_its_cause() {
        let cause = Envelope::new(
            EventId::from_ulid(Ulid::new()),
            Utc::now(),
            "ord_x",
            None,
            &EventContext::from_request("req-9"),
            &Pinged { n: 1 },
        )
        .unwrap();
        let ctx = EventContext::caused_by(&cause);
        assert_eq!(ctx.correlation_id, "req-9");
        assert_eq!(ctx.causation_id, Some(cause.id.to_string()));
    }
}
