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

use async_trait::async_trait;

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
    /// reach that component's data.
    async fn open(
        &self,
        component: &str,
        max_connections: u32,
    ) -> anyhow::Result<Arc<dyn ComponentDb>>;

    /// Checks that the engine answers, for `/readyz`.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// One component's database.
#[async_trait]
pub trait ComponentDb: Send + Sync {
    async fn begin(&self) -> Result<Box<dyn Transaction>, Error>;

    /// The migrations the host recorded as applied: `(id, checksum)`. The records are kept
    /// where the component's own statements cannot read or write them.
    async fn applied_migrations(&self) -> anyhow::Result<Vec<(i64, String)>>;

    /// Begins the one transaction in which a deploy's pending migrations run, each statement
    /// with exactly the rights of the component's requests, and the host records them.
    async fn begin_migrations(&self) -> anyhow::Result<Box<dyn MigrationTransaction>>;
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

/// A transaction on one component's database. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait Transaction: Send {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Error>;
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, Error>;
    async fn commit(self: Box<Self>) -> Result<(), Error>;
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

/// A query's rows as the WIT returns them; `value_of` converts one column with the engine's types.
fn rows_of<R: sqlx::Row>(
    rows: &[R],
    value_of: fn(&R, usize) -> Result<Value, Error>,
) -> Result<Rows, Error> {
    use sqlx::Column;
    let columns = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| value_of(row, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    Ok(Rows { columns, rows })
}
