//! The `database` capability: each component's own database, one transaction per request.
//!
//! Backends sit behind [`Backend`]: SQLite (a file per component, the embedded default) and
//! PostgreSQL (a schema and a login role per component). The capability never names one.

mod authorizer;
mod guard;
mod host;
mod migrate;
mod postgres;
mod postgres_setup;
mod sqlite;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::capabilities::events::Event;
use futures::TryStreamExt;
use futures::stream::BoxStream;

pub use crate::bindings::database::{Dialect, Error, Rows, Value};
pub use host::DatabaseCtx;
pub use migrate::{Migration, apply as apply_migrations, describe};
pub use postgres::PostgresBackend;
pub use sqlite::SqliteBackend;

/// A database engine that hosts one isolated database per component.
#[async_trait]
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// Provisions the component's database (idempotent) and opens a pool on it that can only
    /// reach that component's data. `append_only`: its tables whose rows, once written, its
    /// statements may neither change nor delete.
    async fn open(
        &self,
        component: &str,
        max_connections: u32,
        append_only: &[String],
    ) -> anyhow::Result<Arc<dyn ComponentDb>>;

    /// Checks that the engine answers, for `/readyz`.
    async fn ping(&self) -> anyhow::Result<()>;

    /// Whether the component has a database here (made by an earlier [`Backend::open`]).
    async fn exists(&self, component: &str) -> anyhow::Result<bool>;

    /// Removes the component's database and everything made for it: for an install refused
    /// after [`Backend::open`] made its database, which holds nothing (its migrations were
    /// rolled back). Its pools must be closed first. A database shared with other hosts is
    /// left alone once one of them recorded a migration in it.
    async fn discard(&self, component: &str) -> anyhow::Result<()>;
}

/// One component's database.
#[async_trait]
pub trait ComponentDb: Send + Sync {
    /// Begins a transaction whose statements stay within `bounds`; `tenant`: the organization
    /// it is bound to (row-level security on PostgreSQL).
    async fn begin_with(
        &self,
        bounds: Bounds,
        tenant: Option<&str>,
    ) -> Result<Box<dyn Transaction>, Error>;

    /// Closes the pool: its connections end now rather than when the last handle drops.
    async fn close(&self);

    /// Begins a transaction for the host's own statements, without bounds.
    async fn begin(&self) -> Result<Box<dyn Transaction>, Error> {
        self.begin_with(Bounds::NONE, None).await
    }

    /// Before a deploy's migrations: gives the component back what it needs to change its
    /// schema. Nothing to do unless the engine isolates tenants.
    async fn before_migrations(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// After the migrations (and at every start): puts the tables with an `org_id` column
    /// under the engine's row-level isolation, if it has one, and makes the append-only tables
    /// refuse updates and deletes.
    async fn isolate_tenants(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The migrations the host recorded as applied: `(id, checksum)`. The records are kept
    /// where the component's own statements cannot read or write them.
    async fn applied_migrations(&self) -> anyhow::Result<Vec<(i64, String)>>;

    /// Begins the one transaction in which a deploy's pending migrations run, each statement
    /// with exactly the rights of the component's requests, and the host records them.
    async fn begin_migrations(&self) -> anyhow::Result<Box<dyn MigrationTransaction>>;

    /// The oldest events committed to the outbox and not yet relayed, at most `limit`, each
    /// with its place in the outbox.
    async fn outbox(&self, limit: u32) -> anyhow::Result<Vec<(i64, Event)>>;

    /// Forgets relayed events, by their places in the outbox.
    async fn outbox_sent(&self, places: &[i64]) -> anyhow::Result<()>;
}

/// A deploy's migrations and their records, committed together or not at all.
#[async_trait]
pub trait MigrationTransaction: Send {
    /// Runs one of the component's statements, under the same rules as its requests.
    async fn execute(&mut self, sql: &str) -> Result<(), Error>;
    /// Records a migration as applied, in the same transaction.
    async fn record(&mut self, id: i64, name: &str, checksum: &str) -> anyhow::Result<()>;
    async fn commit(self: Box<Self>) -> anyhow::Result<()>;
}

/// What one request's statements may cost the host. A component's query could otherwise make
/// the host hold a result far larger than the component's memory limit, or keep the engine busy
/// long after the request gave up.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// When the request gives up: a statement still running then is stopped.
    pub deadline: Option<Instant>,
    /// Most rows one query may return.
    pub max_rows: u64,
    /// Most bytes one query may return, counted by [`Counter`].
    pub max_bytes: u64,
    /// How deep in a chain of calls between components the request is (0: from the gateway).
    /// A request holding its transaction may wait for a callee that needs a connection of the
    /// same pool, so each depth gets connections of its own (see [`ConnectionShares`]).
    pub depth: u8,
}

impl Bounds {
    pub const NONE: Bounds = Bounds {
        deadline: None,
        max_rows: u64::MAX,
        max_bytes: u64::MAX,
        depth: 0,
    };

    /// When the engine stops a statement on its own: a little after the deadline, so that the
    /// request's own timeout answers (504) and the host stops the statement as the request ends;
    /// this only catches a statement the host failed to stop.
    fn backstop(&self) -> Option<Instant> {
        self.deadline
            .map(|deadline| deadline + std::time::Duration::from_millis(500))
    }
}

/// How a pool that transactions hold for a whole request is shared between the depths of a
/// chain of calls. A request holds its connection while it calls another component, and that
/// call may come back to the same component (org → permission → org) and need a connection
/// of the same pool: were every connection held by outer requests, all of them would wait for
/// their callees until their deadlines, and the component would serve no one. So requests from
/// the gateway may hold half the pool, calls one level down half of the rest, and so on; a
/// request only ever waits for deeper ones, which have connections of their own.
pub struct ConnectionShares(Vec<Arc<tokio::sync::Semaphore>>);

impl ConnectionShares {
    /// `pool`: the pool's connections; `depths`: how many depths a chain of calls may have.
    pub fn new(pool: u32, depths: u8) -> Self {
        let mut left = pool as usize;
        let shares = (0..depths)
            .map(|depth| {
                let share = match depth + 1 == depths {
                    true => left,
                    false => (left / 2).max(1),
                };
                left = left.saturating_sub(share);
                Arc::new(tokio::sync::Semaphore::new(share.max(1)))
            })
            .collect();
        Self(shares)
    }

    /// A place for one transaction at `depth`, waited for.
    pub async fn acquire(&self, depth: u8) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let share = self
            .0
            .get(usize::from(depth))
            .or(self.0.last())
            .ok_or_else(|| Error::Unavailable("the database has no connections".into()))?;
        share
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the database is closing".into()))
    }

    #[cfg(test)]
    fn sizes(&self) -> Vec<usize> {
        self.0.iter().map(|s| s.available_permits()).collect()
    }
}

/// A transaction on one component's database. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait Transaction: Send {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Error>;
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, Error>;
    async fn commit(self: Box<Self>) -> Result<(), Error>;
    /// Writes `component`'s events into the outbox, as the host, within this transaction.
    async fn write_outbox(&mut self, component: &str, events: &[Event]) -> Result<(), Error>;
}

/// Opens the backend the configuration names: PostgreSQL for a URL, else SQLite files.
pub async fn connect(
    url: Option<&secrecy::SecretString>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Backend>> {
    match url {
        Some(url) => Ok(Arc::new(
            PostgresBackend::connect(secrecy::ExposeSecret::expose_secret(url)).await?,
        )),
        None => Ok(Arc::new(SqliteBackend::new(data_dir.join("db"))?)),
    }
}

/// Why a query returned no rows.
enum Refusal {
    /// The engine reported an error; the statement is over.
    Failed(Error),
    /// The result grew past the bounds; the engine may still be producing the rest.
    TooLarge(Error),
}

impl Refusal {
    fn into_error(self) -> Error {
        match self {
            Refusal::Failed(e) | Refusal::TooLarge(e) => e,
        }
    }
}

/// What a result costs the host as it is collected: each value as `Value` holds it (32 bytes
/// plus its text or blob), each row as its `Vec` (24 bytes), and the column names. A result
/// within the bounds costs the instance less once copied into its memory.
struct Counter {
    rows: u64,
    bytes: u64,
}

impl Counter {
    const ROW: u64 = 24;
    const VALUE: u64 = 32;

    fn add_row(&mut self, row: &[Value], bounds: &Bounds) -> Result<(), Error> {
        self.rows += 1;
        self.bytes += Self::ROW;
        for value in row {
            self.bytes += Self::VALUE
                + match value {
                    Value::Text(text) => text.len() as u64,
                    Value::Blob(blob) => blob.len() as u64,
                    _ => 0,
                };
        }
        if self.rows > bounds.max_rows {
            return Err(Error::Invalid(format!(
                "the result exceeds the policy's limit of {} rows; page it with LIMIT",
                bounds.max_rows
            )));
        }
        if self.bytes > bounds.max_bytes {
            return Err(too_large(bounds.max_bytes));
        }
        Ok(())
    }
}

fn too_large(max_bytes: u64) -> Error {
    Error::Invalid(format!(
        "the result exceeds the policy's limit of {max_bytes} bytes; page it with LIMIT"
    ))
}

/// Collects a query's rows as they arrive, converting each with the engine's `value_of`, and
/// stops at the first row past the bounds: the host holds what they allow plus the row being
/// counted (and, on SQLite, the one row the worker reads ahead).
async fn collect_rows<R: sqlx::Row>(
    mut stream: BoxStream<'_, Result<R, sqlx::Error>>,
    bounds: &Bounds,
    value_of: fn(&R, usize) -> Result<Value, Error>,
    to_error: fn(sqlx::Error) -> Error,
) -> Result<Rows, Refusal> {
    use sqlx::Column;
    let mut counter = Counter { rows: 0, bytes: 0 };
    let mut result = Rows {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| Refusal::Failed(to_error(e)))?
    {
        if counter.rows == 0 {
            result.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
            counter.bytes += result
                .columns
                .iter()
                .map(|c| Counter::ROW + c.len() as u64)
                .sum::<u64>();
        }
        let values = (0..row.len())
            .map(|i| value_of(&row, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Refusal::Failed)?;
        drop(row);
        counter
            .add_row(&values, bounds)
            .map_err(Refusal::TooLarge)?;
        result.rows.push(values);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::{Bounds, ConnectionShares, Counter, Value};

    #[test]
    fn every_depth_of_a_call_chain_has_connections_of_its_own() {
        assert_eq!(ConnectionShares::new(16, 5).sizes(), [8, 4, 2, 1, 1]);
        assert_eq!(ConnectionShares::new(4, 5).sizes(), [2, 1, 1, 1, 1]);
        // A pool smaller than the chain is shared at the last depths as well as it can be.
        assert_eq!(ConnectionShares::new(1, 3).sizes(), [1, 1, 1]);
    }

    #[test]
    fn a_result_is_refused_at_the_first_row_past_either_bound() {
        let bounds = Bounds {
            deadline: None,
            max_rows: 2,
            max_bytes: 200,
            depth: 0,
        };
        let mut counter = Counter { rows: 0, bytes: 0 };
        let row = [Value::Integer(1), Value::Text("abc".into())];
        // 24 + 32 + 32 + 3 = 91 bytes a row.
        assert!(counter.add_row(&row, &bounds).is_ok());
        assert!(counter.add_row(&row, &bounds).is_ok());
        let error = format!("{:?}", counter.add_row(&row, &bounds));
        assert!(error.contains("limit of 2 rows"), "{error}");

        let mut counter = Counter { rows: 0, bytes: 0 };
        let big = [Value::Blob(vec![0; 150])];
        let error = format!("{:?}", counter.add_row(&big, &bounds));
        assert!(error.contains("limit of 200 bytes"), "{error}");
    }
}
