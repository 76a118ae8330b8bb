//! SQLite: one file per component under `<data_dir>/db/`. A connection can only ever reach its
//! own file: attaching another database is disabled in the engine (`SQLITE_LIMIT_ATTACHED` = 0)
//! and refused by the statement guard before that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, SqlitePool, TypeInfo, ValueRef};

use super::{Backend, ComponentDb, Dialect, Error, Rows, Transaction, Value};

pub struct SqliteBackend {
    dir: PathBuf,
}

impl SqliteBackend {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn open(
        &self,
        component: &str,
        max_connections: u32,
    ) -> anyhow::Result<Arc<dyn ComponentDb>> {
        let path = self.dir.join(format!("{component}.sqlite"));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.clamp(1, 8))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the handle is a live connection, locked for the duration of the call.
                    unsafe {
                        libsqlite3_sys::sqlite3_limit(
                            handle.as_raw_handle().as_ptr(),
                            libsqlite3_sys::SQLITE_LIMIT_ATTACHED,
                            0,
                        );
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Arc::new(SqliteDb { pool }))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let probe = self.dir.join(".ready");
        tokio::fs::write(&probe, b"ok")
            .await
            .with_context(|| format!("writing {}", probe.display()))?;
        Ok(())
    }
}

struct SqliteDb {
    pool: SqlitePool,
}

#[async_trait]
impl ComponentDb for SqliteDb {
    async fn begin(&self) -> Result<Box<dyn Transaction>, Error> {
        // IMMEDIATE takes the write lock up front, so two requests never deadlock upgrading
        // a read lock; the busy timeout queues them instead.
        let transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(to_error)?;
        Ok(Box::new(SqliteTransaction { transaction }))
    }
}

struct SqliteTransaction {
    transaction: sqlx::Transaction<'static, Sqlite>,
}

#[async_trait]
impl Transaction for SqliteTransaction {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        let rows = bind(sqlx::query(sql), params)
            .fetch_all(&mut *self.transaction)
            .await
            .map_err(to_error)?;
        super::rows_of(&rows, value_of)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, Error> {
        let done = bind(sqlx::query(sql), params)
            .execute(&mut *self.transaction)
            .await
            .map_err(to_error)?;
        Ok(done.rows_affected())
    }

    async fn commit(self: Box<Self>) -> Result<(), Error> {
        self.transaction.commit().await.map_err(to_error)
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind<'q>(mut query: Query<'q>, params: &'q [Value]) -> Query<'q> {
    for param in params {
        query = match param {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(i) => query.bind(*i),
            Value::Real(f) => query.bind(*f),
            Value::Text(s) => query.bind(s.as_str()),
            Value::Blob(b) => query.bind(b.as_slice()),
            Value::Boolean(b) => query.bind(*b),
        };
    }
    query
}

fn value_of(row: &SqliteRow, i: usize) -> Result<Value, Error> {
    let raw = row.try_get_raw(i).map_err(to_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_string();
    let value = match kind.as_str() {
        "INTEGER" | "BOOLEAN" => row.try_get::<i64, _>(i).map(Value::Integer),
        "REAL" => row.try_get::<f64, _>(i).map(Value::Real),
        "BLOB" => row.try_get::<Vec<u8>, _>(i).map(Value::Blob),
        _ => row.try_get::<String, _>(i).map(Value::Text),
    };
    value.map_err(to_error)
}

fn to_error(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or_default();
            match code & 0xff {
                libsqlite3_sys::SQLITE_CONSTRAINT => Error::Constraint(message),
                libsqlite3_sys::SQLITE_AUTH | libsqlite3_sys::SQLITE_PERM => {
                    Error::AccessDenied(message)
                }
                libsqlite3_sys::SQLITE_BUSY | libsqlite3_sys::SQLITE_LOCKED => {
                    Error::Unavailable(message)
                }
                _ if message.contains("too many attached databases") => {
                    Error::AccessDenied("attaching another database is not allowed".into())
                }
                _ => Error::Invalid(message),
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable(error.to_string())
        }
        _ => Error::Invalid(error.to_string()),
    }
}
