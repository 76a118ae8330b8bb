//! Kafka: committed events are produced with the CloudEvents binary binding — the data as the
//! value, `content-type: application/json`, every attribute as a `ce_<name>` header — keyed by
//! the organization's id, so one organization's events stay in order on one partition.
//!
//! Consumers: one consumer group per component (`truevalue.<component>`), offsets committed
//! to the group only after the component handled the event (or parked it on the dead-letter
//! topic). The consumer assigns itself every partition of its topics instead of joining the
//! group's rebalancing: a host restarted after a crash then resumes at once from the group's
//! committed offsets, on Apache Kafka and on brokers (tansu 0.6) that never hand a dead
//! member's partitions to a new one. The price: each host consumes every partition, so in a
//! deployment with several nodes each event reaches each node's consumer (handlers are
//! idempotent by event id anyway, as at-least-once delivery requires).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Mutex;

use super::consume::deliver_or_park;
use super::{Bus, CONTENT_TYPE, Deliver, Event};

/// Partitions of a topic the host creates.
const PARTITIONS: i32 = 3;
/// How long a batch may wait for the brokers' acknowledgement before the relay tries again.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaBus {
    brokers: String,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each is created at most once per process.
    created: Mutex<BTreeSet<String>>,
}

/// The client settings every connection of the host shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "truevalue");
    config
}

impl KafkaBus {
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let producer: FutureProducer = client_config(brokers)
            // All in-sync replicas hold an event before the relay forgets it.
            .set("acks", "all")
            // One request in flight per broker: a retried batch cannot overtake a later one,
            // so an organization's events keep their order.
            .set("max.in.flight.requests.per.connection", "1")
            .set("enable.idempotence", "false")
            // One record per batch: a consumer may resume at any offset, whatever the broker.
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .context("creating the Kafka producer")?;
        let admin = client_config(brokers)
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Self {
            brokers: brokers.to_string(),
            producer,
            admin,
            created: Mutex::new(BTreeSet::new()),
        })
    }

    /// Creates `topics` unless they exist.
    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let mut created = self.created.lock().await;
        let missing: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|topic| !created.contains(*topic))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|topic| NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(DELIVERY_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .context("creating topics")?;
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    created.insert(topic);
                }
                Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

/// Assigns every partition of `topics` to `consumer`, each from the group's committed offset
/// (from the start when none is committed yet).
fn assign_all(consumer: &StreamConsumer, topics: &[&str]) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), DELIVERY_TIMEOUT)
            .with_context(|| format!("reading the partitions of {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        anyhow::ensure!(partitions > 0, "{topic} has no partitions yet");
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition as i32, Offset::Stored)?;
        }
    }
    let committed = consumer
        .committed_offsets(assignment, DELIVERY_TIMEOUT)
        .context("reading the group's committed offsets")?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        start.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    consumer
        .assign(&start)
        .context("assigning the partitions")?;
    Ok(())
}

/// The event a record carries, read back from its headers.
fn event_of(message: &BorrowedMessage<'_>) -> Event {
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let attributes = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|header| {
                    let name = header.key.strip_prefix("ce_")?;
                    Some((name.to_string(), text(header.value)))
                })
                .collect()
        })
        .unwrap_or_default();
    Event {
        topic: message.topic().to_string(),
        key: text(message.key()),
        attributes,
        data: text(message.payload()),
    }
}

/// The Kafka headers of `event`: `content-type` and the `ce_` attributes.
pub fn headers(event: &Event) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some(CONTENT_TYPE),
    });
    for (name, value) in &event.attributes {
        headers = headers.insert(Header {
            key: &format!("ce_{name}"),
            value: Some(value.as_str()),
        });
    }
    headers
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, events: &[Event]) -> anyhow::Result<()> {
        let topics: BTreeSet<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        self.ensure_topics(&topics.into_iter().collect::<Vec<_>>())
            .await?;
        let deliveries: Vec<_> = events
            .iter()
            .map(|event| {
                let record = FutureRecord::to(&event.topic)
                    .key(&event.key)
                    .payload(&event.data)
                    .headers(headers(event));
                self.producer.send(record, DELIVERY_TIMEOUT)
            })
            .collect();
        for (delivery, event) in futures::future::join_all(deliveries)
            .await
            .into_iter()
            .zip(events)
        {
            if let Err((error, _)) = delivery {
                anyhow::bail!(
                    "publishing event {} to {}: {error}",
                    event.id(),
                    event.topic
                );
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Kafka at {}", self.brokers)
    }

    fn consume(
        self: Arc<Self>,
        component: String,
        topics: BTreeSet<String>,
        deliver: Arc<dyn Deliver>,
    ) -> anyhow::Result<()> {
        let consumer: StreamConsumer = client_config(&self.brokers)
            .set("group.id", format!("truevalue.{component}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A broker holds an empty fetch this long before answering: the wait between an
            // event reaching the broker and its delivery when the consumer is idle.
            .set("fetch.wait.max.ms", "10")
            .create()
            .context("creating a Kafka consumer")?;
        tokio::spawn(async move {
            let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
            // Subscribing to a topic nobody created yet would wait for it without end.
            while let Err(error) = self.ensure_topics(&subscribed).await {
                tracing::warn!(%component, error = %format!("{error:#}"), "cannot create the subscribed topics");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            loop {
                match tokio::task::block_in_place(|| assign_all(&consumer, &subscribed)) {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%component, error = %format!("{error:#}"), "cannot assign the subscribed topics");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%component, %error, "cannot read from Kafka");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let event = event_of(&message);
                if !topics.contains(&event.topic) {
                    continue;
                }
                deliver_or_park(deliver.as_ref(), self.as_ref(), &component, &event).await;
                // Asynchronous: a commit lost in a crash only means the event is delivered again.
                if let Err(error) = consumer.commit_message(&message, CommitMode::Async) {
                    tracing::warn!(%component, topic = %event.topic, %error, "cannot commit a consumer offset; the event may be delivered again");
                }
            }
        });
        Ok(())
    }
}
