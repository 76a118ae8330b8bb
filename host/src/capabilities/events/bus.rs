//! The in-process bus: with no Kafka brokers configured, committed events go to a log in the
//! data directory (`events.sqlite`), kept across restarts. Each event is stored once per topic,
//! by id, however often the relay hands it over (a parked event keeps its id on `<topic>.dlq`). Each consumer's position in each topic is kept in the
//! same file and moves past an event only once it was handled (or parked).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::consume::deliver_or_park;
use super::{Bus, Deliver, Event, StoredRow};

pub struct LocalBus {
    pool: SqlitePool,
    path: String,
    /// Bumped at every publish: consumers waiting for new events wake up.
    published: tokio::sync::watch::Sender<u64>,
}

/// How often a consumer looks for new events without being woken.
const POLL: Duration = Duration::from_secs(1);
/// Events a consumer reads at a time.
const BATCH: u32 = 100;

impl LocalBus {
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("events.sqlite");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged event is on disk: the relay removes it from the outbox next.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the event log {}", path.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT NOT NULL, \
             attributes TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (topic, id))",
        )
        .execute(&pool)
        .await
        .context("creating the event log")?;
        sqlx::query("CREATE INDEX IF NOT EXISTS events_topic ON events (topic, seq)")
            .execute(&pool)
            .await
            .context("indexing the event log")?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS positions (consumer TEXT NOT NULL, topic TEXT NOT NULL, \
             seq INTEGER NOT NULL, PRIMARY KEY (consumer, topic))",
        )
        .execute(&pool)
        .await
        .context("creating the consumers' positions")?;
        Ok(Self {
            pool,
            path: path.display().to_string(),
            published: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Where `consumer` stands in `topic`: the last event it is done with (0: none).
    async fn position(&self, consumer: &str, topic: &str) -> anyhow::Result<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM positions WHERE consumer = $1 AND topic = $2")
                .bind(consumer)
                .bind(topic)
                .fetch_optional(&self.pool)
                .await
                .context("reading a consumer's position")?;
        Ok(seq.unwrap_or(0))
    }

    async fn advance(&self, consumer: &str, topic: &str, seq: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO positions (consumer, topic, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, topic) DO UPDATE SET seq = excluded.seq",
        )
        .bind(consumer)
        .bind(topic)
        .bind(seq)
        .execute(&self.pool)
        .await
        .context("moving a consumer's position")?;
        Ok(())
    }

    /// Delivers `topic` to `component` from where it stands, for ever.
    async fn run_consumer(
        self: Arc<Self>,
        component: String,
        topic: String,
        deliver: Arc<dyn Deliver>,
    ) {
        let mut woken = self.published.subscribe();
        let mut after = loop {
            match self.position(&component, &topic).await {
                Ok(seq) => break seq,
                Err(error) => {
                    tracing::warn!(%component, %topic, error = %format!("{error:#}"), "cannot start consuming");
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        loop {
            woken.borrow_and_update();
            let batch = match self.read(&topic, after, BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%component, %topic, error = %format!("{error:#}"), "cannot read the event log");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = woken.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for (seq, event) in batch {
                deliver_or_park(deliver.as_ref(), self.as_ref(), &component, &event).await;
                while let Err(error) = self.advance(&component, &topic, seq).await {
                    tracing::warn!(%component, %topic, error = %format!("{error:#}"), "cannot record a consumer's position");
                    tokio::time::sleep(POLL).await;
                }
                after = seq;
            }
        }
    }

    /// The events of `topic` after position `after`, oldest first, with their positions.
    pub async fn read(
        &self,
        topic: &str,
        after: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<(i64, Event)>> {
        let rows: Vec<StoredRow> = sqlx::query_as(
            "SELECT seq, topic, key, attributes, data FROM events \
             WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(topic)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("reading the event log")?;
        Ok(Event::from_rows(rows))
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, events: &[Event]) -> anyhow::Result<()> {
        let mut transaction = self.pool.begin().await?;
        for event in events {
            sqlx::query(
                "INSERT INTO events (id, topic, key, attributes, data) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (topic, id) DO NOTHING",
            )
            // A parked copy keeps the event's id; each consumer's is kept.
            .bind(match event.attributes.get("dlqconsumer") {
                Some(consumer) => format!("{}:{consumer}", event.id()),
                None => event.id().to_string(),
            })
            .bind(&event.topic)
            .bind(&event.key)
            .bind(event.attributes_json())
            .bind(&event.data)
            .execute(&mut *transaction)
            .await
            .context("writing to the event log")?;
        }
        transaction
            .commit()
            .await
            .context("committing to the event log")?;
        self.published.send_modify(|n| *n += 1);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the in-process bus ({})", self.path)
    }

    fn consume(
        self: Arc<Self>,
        component: String,
        topics: BTreeSet<String>,
        deliver: Arc<dyn Deliver>,
    ) -> anyhow::Result<()> {
        for topic in topics {
            tokio::spawn(
                self.clone()
                    .run_consumer(component.clone(), topic, deliver.clone()),
            );
        }
        Ok(())
    }
}
