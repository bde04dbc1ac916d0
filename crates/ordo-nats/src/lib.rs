//! The distributed mode's bus: NATS JetStream behind the same interfaces
//! as the in-process bus.
//!
//! - One stream holds the domain events, on file storage, under
//!   `<prefix>.<service>.<event type>` (`ordo.orders.order.created.v1`).
//! - Relays publish with `Nats-Msg-Id` = the event id, so a publish
//!   repeated within the duplicate window is stored once.
//! - Each consumer (the inbox key of a service's reaction) is one durable
//!   pull consumer, shared by every replica of its service: the stream
//!   hands each event to one of them. Acks are explicit; a failed attempt
//!   is negatively acknowledged with the retry policy's backoff as its
//!   delay, and the attempt that exhausts the policy parks the event in
//!   the dead-letter store, then acknowledges it.
//! - The broker delivers at least once, and a redelivery may come after
//!   the duplicate window: the consumers' inboxes, kept for days, are what
//!   make effects happen once.
//!
//! Live views (SSE) need to hear of changes made by other replicas: each
//! replica announces its changes on a plain subject outside the stream
//! (`<prefix>_changes.<service>`) and every replica subscribes to it. At
//! most once: a view re-reads its store on its own too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use ordo_bus::{BusError, Consumer, Envelope, LocalBus, Publisher};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How the stream and its consumers are set up.
#[derive(Clone)]
pub struct JetStreamSettings {
    /// One URL or a comma-separated list (the members of a cluster).
    pub url: String,
    pub stream: String,
    /// The first token of every subject.
    pub subject_prefix: String,
    /// Copies of the stream in a cluster (1 on a single server, 3 in
    /// production clusters).
    pub replicas: usize,
    /// Publishes with the same message id within this window are stored
    /// once.
    pub duplicate_window: Duration,
    /// Events are kept this long (consumers that were away catch up
    /// within it).
    pub max_age: Duration,
    /// An unacknowledged delivery is redelivered after this; a handler
    /// still at work extends it.
    pub ack_wait: Duration,
    /// The name this process gives itself on the server.
    pub client_name: String,
}

// By hand: the URL may hold a password or a token.
impl std::fmt::Debug for JetStreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSettings")
            .field("url", &ordo_kernel::redact_url(&self.url))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("max_age", &self.max_age)
            .field("ack_wait", &self.ack_wait)
            .field("client_name", &self.client_name)
            .finish()
    }
}

impl JetStreamSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "ORDO".to_owned(),
            subject_prefix: "ordo".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            ack_wait: Duration::from_secs(30),
            client_name: "ordo".to_owned(),
        }
    }
}

/// A connection to JetStream with the stream in place.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    /// Tells this connection's change notices from other replicas'.
    origin: Arc<str>,
    context: jetstream::Context,
    settings: Arc<JetStreamSettings>,
}

impl JetStreamBus {
    /// Connects (waiting for the server if it is not up yet) and creates
    /// the stream, or updates it to `settings`.
    pub async fn connect(settings: JetStreamSettings) -> anyhow::Result<Self> {
        check_token("stream", &settings.stream)?;
        for token in settings.subject_prefix.split('.') {
            check_token("subject prefix", token)?;
        }
        let urls: Vec<async_nats::ServerAddr> = settings
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            // The URL may hold a password: not repeated here.
            .context(
                "nats-url must be a NATS URL or a comma-separated list of them (nats://host:4222)",
            )?;
        let client = async_nats::ConnectOptions::new()
            .name(&settings.client_name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("connected to NATS"),
                    async_nats::Event::Disconnected => warn!("disconnected from NATS"),
                    other => debug!(event = %other, "NATS client event"),
                }
            })
            .connect(urls)
            .await
            .with_context(|| {
                format!(
                    "connecting to NATS at {}",
                    ordo_kernel::redact_url(&settings.url)
                )
            })?;
        let context = jetstream::new(client.clone());
        let bus = Self {
            origin: ulid::Ulid::new().to_string().into(),
            client,
            context,
            settings: Arc::new(settings),
        };
        bus.ensure_stream().await?;
        Ok(bus)
    }

    fn stream_config(&self) -> stream::Config {
        let s = &self.settings;
        stream::Config {
            name: s.stream.clone(),
            subjects: vec![format!("{}.>", s.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: s.replicas.max(1),
            duplicate_window: s.duplicate_window,
            max_age: s.max_age,
            ..Default::default()
        }
    }

    async fn ensure_stream(&self) -> anyhow::Result<()> {
        // Replicas starting together race to create it: the loser updates.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .context
                .create_or_update_stream(self.stream_config())
                .await
            {
                Ok(info) => {
                    info!(stream = %info.config.name, replicas = info.config.num_replicas,
                        "JetStream stream ready");
                    return Ok(());
                }
                Err(err) if attempt < 30 => {
                    warn!(error = %err, "cannot create the JetStream stream yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("creating the JetStream stream {}", self.settings.stream)
                    });
                }
            }
        }
    }

    /// Whether the client is connected to a server now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The subject of `event_type` published by `service`.
    pub fn subject(&self, service: &str, event_type: &str) -> String {
        format!("{}.{service}.{event_type}", self.settings.subject_prefix)
    }

    /// The publisher of one service's relay.
    pub fn publisher(&self, service: &str) -> Arc<dyn Publisher> {
        Arc::new(JetStreamPublisher {
            bus: self.clone(),
            service: service.to_owned(),
        })
    }

    /// The core subject (outside the stream) on which `service`'s
    /// replicas tell each other what changed.
    fn changes_subject(&self, service: &str) -> String {
        format!("{}_changes.{service}", self.settings.subject_prefix)
    }

    /// Tells the other replicas of `service` that `key` (an order id)
    /// changed here, for their live views. At most once, not stored.
    pub async fn announce_change(&self, service: &str, key: &str) -> anyhow::Result<()> {
        let notice = serde_json::to_vec(&ChangeNotice {
            origin: self.origin.to_string(),
            key: key.to_owned(),
        })?;
        self.client
            .publish(self.changes_subject(service), notice.into())
            .await
            .context("announcing a change")?;
        Ok(())
    }

    /// What the other replicas of `service` announce, as they announce it
    /// (this connection's own notices left out). At most once: a live view
    /// must not depend on seeing each one.
    pub async fn follow_changes(
        &self,
        service: &str,
    ) -> anyhow::Result<impl futures::Stream<Item = String> + Send + 'static> {
        let subject = self.changes_subject(service);
        let subscriber = self
            .client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        let origin = self.origin.clone();
        Ok(subscriber.filter_map(move |message| {
            let notice = serde_json::from_slice::<ChangeNotice>(&message.payload);
            let origin = origin.clone();
            async move {
                match notice {
                    Ok(notice) if *notice.origin == *origin => None,
                    Ok(notice) => Some(notice.key),
                    Err(err) => {
                        warn!(subject = %message.subject, error = %err, "not a change notice");
                        None
                    }
                }
            }
        }))
    }

    /// Runs a durable pull consumer for each of `bus`'s consumers until
    /// `stop`, handing every delivery to `bus` for one attempt.
    pub fn spawn_consumers(
        &self,
        bus: &LocalBus,
        stop: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        bus.consumers()
            .into_iter()
            .map(|consumer| {
                tokio::spawn(
                    Pull {
                        jet: self.clone(),
                        bus: bus.clone(),
                        consumer,
                    }
                    .run(stop.clone()),
                )
            })
            .collect()
    }

    /// Deletes the stream (tests; an operator uses the `nats` tool).
    pub async fn delete_stream(&self) -> anyhow::Result<()> {
        self.context
            .delete_stream(&self.settings.stream)
            .await
            .context("deleting the stream")?;
        Ok(())
    }

    /// Messages the stream holds now.
    pub async fn stream_messages(&self) -> anyhow::Result<u64> {
        let mut stream = self
            .context
            .get_stream(&self.settings.stream)
            .await
            .context("looking up the stream")?;
        Ok(stream
            .info()
            .await
            .context("reading the stream")?
            .state
            .messages)
    }

    /// Deliveries of `consumer` not yet acknowledged plus events it has
    /// not been handed yet (its lag).
    pub async fn consumer_lag(&self, consumer: &str) -> anyhow::Result<u64> {
        let stream = self
            .context
            .get_stream(&self.settings.stream)
            .await
            .context("looking up the stream")?;
        let mut pull: consumer::PullConsumer =
            stream
                .get_consumer(&durable_name(consumer))
                .await
                .map_err(|e| anyhow::anyhow!("looking up the consumer: {e}"))?;
        let info = pull.info().await.context("reading the consumer")?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Publishes `event` as `service`'s relay would (tests replaying a
    /// stored event).
    pub async fn publish_as(&self, service: &str, event: &Envelope) -> Result<(), BusError> {
        JetStreamPublisher {
            bus: self.clone(),
            service: service.to_owned(),
        }
        .publish(event)
        .await
    }
}

fn check_token(what: &str, value: &str) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "NATS {what} {value:?} must be letters, digits, '-' or '_'"
    );
    Ok(())
}

/// The durable name of a consumer: its inbox key, without the characters
/// NATS does not allow in a name.
pub fn durable_name(consumer: &str) -> String {
    consumer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ChangeNotice {
    origin: String,
    key: String,
}

struct JetStreamPublisher {
    bus: JetStreamBus,
    service: String,
}

#[async_trait::async_trait]
impl Publisher for JetStreamPublisher {
    /// Resolves once the stream has stored the event (its publish ack).
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        let payload = serde_json::to_vec(event).map_err(|e| BusError::Other(e.into()))?;
        let subject = self.bus.subject(&self.service, &event.event_type);
        let ack = self
            .bus
            .context
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .message_id(event.id.to_string())
                    .payload(payload.into()),
            )
            .await
            .map_err(|e| BusError::Other(anyhow::anyhow!("publishing {}: {e}", event.id)))?;
        ack.await
            .map_err(|e| BusError::Other(anyhow::anyhow!("publishing {}: {e}", event.id)))?;
        Ok(())
    }
}

/// One durable pull consumer, fed to the bus one attempt at a time.
struct Pull {
    jet: JetStreamBus,
    bus: LocalBus,
    consumer: Consumer,
}

impl Pull {
    fn config(&self) -> consumer::pull::Config {
        let durable = durable_name(&self.consumer.name);
        consumer::pull::Config {
            durable_name: Some(durable.clone()),
            name: Some(durable),
            description: Some(format!("ordo consumer {}", self.consumer.name)),
            // No filter subject: NATS 2.9 takes one per consumer and a
            // reaction takes several event types; `Pull::takes` sorts them.
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.jet.settings.ack_wait,
            // The bus decides when an event has had enough attempts (and
            // parks it); the server never drops one on its own.
            max_deliver: -1,
            // Shared by every replica: room for many replicas' attempts
            // and prefetched batches.
            max_ack_pending: (self.consumer.concurrency * 16).max(1024) as i64,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        }
    }

    /// Whether the reaction takes the event published on `subject`
    /// (`<prefix>.<service>.<event type>`).
    fn takes(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.jet.settings.subject_prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(_, event_type)| {
                self.consumer.event_types.iter().any(|t| t == event_type)
            })
    }

    async fn run(self, stop: CancellationToken) {
        let name = self.consumer.name.clone();
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            match self.pull(&stop).await {
                Ok(()) => return,
                Err(err) => {
                    warn!(consumer = %name, error = %format!("{err:#}"),
                        "JetStream consumer interrupted; resuming");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Pulls until `stop` (`Ok`) or until the consumer or the connection
    /// fails (`Err`, and the caller starts again).
    async fn pull(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let stream = self
            .jet
            .context
            .get_stream(&self.jet.settings.stream)
            .await
            .context("looking up the stream")?;
        let pull = stream
            .create_consumer(self.config())
            .await
            .context("creating the durable consumer")?;
        let permits = Arc::new(Semaphore::new(self.consumer.concurrency.max(1)));
        let mut messages = pull
            .stream()
            .max_messages_per_batch(self.consumer.concurrency.clamp(1, 256))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .context("pulling messages")?;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit?,
            };
            let next = tokio::select! {
                () = stop.cancelled() => break,
                next = messages.next() => next,
            };
            while tasks.try_join_next().is_some() {}
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => return Err(err.into()),
                None => anyhow::bail!("the message stream ended"),
            };
            // The consumer reads the whole stream (see `Pull::config`): an
            // event its reaction does not take is acknowledged here, told
            // by its subject, without decoding it or starting a task.
            if !self.takes(&message.subject) {
                ack(&message, AckKind::Ack).await;
                continue;
            }
            let delivery = Delivery {
                bus: self.bus.clone(),
                consumer: self.consumer.name.clone(),
                ack_wait: self.jet.settings.ack_wait,
            };
            tasks.spawn(async move {
                delivery.handle(message).await;
                drop(permit);
            });
        }
        // Attempts under way finish; what they leave unacknowledged is
        // redelivered to another replica after the ack wait.
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

struct Delivery {
    bus: LocalBus,
    consumer: String,
    ack_wait: Duration,
}

impl Delivery {
    async fn handle(self, message: jetstream::Message) {
        let attempt = match message.info() {
            Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            Err(err) => {
                warn!(consumer = %self.consumer, error = %err, "a delivery without metadata");
                1
            }
        };
        let event: Envelope = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                // Nothing can ever handle it and there is no event to park:
                // stop its redelivery; it stays in the stream for inspection.
                warn!(consumer = %self.consumer, subject = %message.subject, error = %err,
                    "not an event envelope; not redelivered");
                ack(&message, AckKind::Term).await;
                return;
            }
        };
        // A long attempt tells the server it is still at work, so the
        // event is not handed to another replica meanwhile.
        let outcome = {
            let work = self.bus.attempt(&self.consumer, &event);
            tokio::pin!(work);
            let mut progress = tokio::time::interval(self.ack_wait / 3);
            progress.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = progress.tick() => ack(&message, AckKind::Progress).await,
                }
            }
        };
        match outcome {
            Ok(()) => ack(&message, AckKind::Ack).await,
            // Held by a pause or cut short by the stop: not a failed
            // attempt, so never parked; another replica or the next start
            // takes it.
            Err(_) if self.bus.is_stopping() => ack(&message, AckKind::Nak(None)).await,
            Err(error) => {
                let policy = self.bus.policy();
                if attempt >= policy.max_attempts {
                    match self.bus.park(&self.consumer, &event, error, attempt).await {
                        Ok(()) => ack(&message, AckKind::Ack).await,
                        // Not parked: it must come back.
                        Err(err) => {
                            warn!(consumer = %self.consumer, error = %err, "could not park a dead letter");
                            ack(&message, AckKind::Nak(Some(policy.delay(attempt)))).await;
                        }
                    }
                } else {
                    warn!(consumer = %self.consumer, event_id = %event.id, event_type = %event.event_type,
                        attempt, %error, "event handling failed; will be redelivered");
                    ack(&message, AckKind::Nak(Some(policy.delay(attempt)))).await;
                }
            }
        }
    }
}

/// An ack that does not reach the server means a redelivery, which the
/// inbox absorbs: worth a log line, not more.
async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        debug!(error = %err, "acknowledgement not sent");
    }
}
