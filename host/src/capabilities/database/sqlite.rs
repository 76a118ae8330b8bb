//! SQLite: one file per component under `<data_dir>/db/`. Every connection is hardened when it
//! opens (no attached databases, defensive mode) and every component statement runs under the
//! authorizer's guest rules (`authorizer.rs`): only its own tables, no pragmas, no transaction
//! control, nothing of the host's migration records.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, TypeInfo, ValueRef};

use super::authorizer::{self, Mode};
use super::{
    Backend, Bounds, ComponentDb, Dialect, Error, MigrationTransaction, Rows, Transaction, Value,
    migrate,
};
use crate::capabilities::events::{Event, StoredRow};

pub struct SqliteBackend {
    dir: PathBuf,
}

impl SqliteBackend {
    fn path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.sqlite"))
    }

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
        append_only: &[String],
    ) -> anyhow::Result<Arc<dyn ComponentDb>> {
        let path = self.path(component);
        let options = SqliteConnectOptions::new()
            // The worker thread reads one row ahead of the host, not sqlx's default 50: each row
            // is counted against the request's result bound before the next is read.
            .row_buffer_size(1)
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // `INSERT OR REPLACE` deletes the row it replaces without firing DELETE triggers
        // unless triggers are recursive: an append-only table's rows must not go that way.
        let options = match append_only.is_empty() {
            true => options,
            false => options.pragma("recursive_triggers", "ON"),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.clamp(1, 8))
            // A connection to a file in this process cannot go stale: pinging it before each
            // use would only cost a round trip to its worker thread.
            .test_before_acquire(false)
            .after_connect(|conn, _| Box::pin(authorizer::harden(conn)))
            .after_release(|conn, _| Box::pin(authorizer::reusable(conn)))
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {OUTBOX} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             topic TEXT NOT NULL, key TEXT NOT NULL, attributes TEXT NOT NULL, data TEXT NOT NULL)"
        ))
        .execute(&pool)
        .await
        .with_context(|| format!("creating the outbox in {}", path.display()))?;
        Ok(Arc::new(SqliteDb {
            pool,
            append_only: append_only.to_vec(),
        }))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let probe = self.dir.join(".ready");
        tokio::fs::write(&probe, b"ok")
            .await
            .with_context(|| format!("writing {}", probe.display()))?;
        Ok(())
    }

    async fn exists(&self, component: &str) -> anyhow::Result<bool> {
        Ok(self.path(component).try_exists()?)
    }

    async fn discard(&self, component: &str) -> anyhow::Result<()> {
        // The write-ahead log and its index go with the file.
        for extension in ["sqlite", "sqlite-wal", "sqlite-shm"] {
            let file = self.path(component).with_extension(extension);
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", file.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

struct SqliteDb {
    pool: SqlitePool,
    append_only: Vec<String>,
}

/// The host's record of applied migrations, in the component's own file so that a migration
/// and its record commit together; the authorizer keeps component statements away from it.
const RECORDS: &str = "truevalue_migrations";

/// The events committed by the component's requests and not yet relayed, in the component's
/// own file so that they commit with the request's writes; closed to component statements.
const OUTBOX: &str = "truevalue_outbox";

#[async_trait]
impl ComponentDb for SqliteDb {
    async fn close(&self) {
        self.pool.close().await;
    }

    /// SQLite has no row-level security: a tenant binding changes nothing here (see README,
    /// "Tenant isolation").
    async fn begin_with(
        &self,
        bounds: Bounds,
        _tenant: Option<&str>,
    ) -> Result<Box<dyn Transaction>, Error> {
        Ok(Box::new(SqliteTransaction {
            pool: self.pool.clone(),
            transaction: None,
            bounds,
            stop: Arc::new(Stop {
                deadline: bounds.backstop(),
                dropped: AtomicBool::new(false),
            }),
        }))
    }

    /// Append-only tables get the host's triggers refusing updates and deletes; their names
    /// start with the host's prefix, so no component statement can drop or replace them.
    async fn isolate_tenants(&self) -> anyhow::Result<()> {
        for table in &self.append_only {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = $1)",
            )
            .bind(table)
            .fetch_one(&self.pool)
            .await?;
            if !exists {
                tracing::warn!(%table, "an append-only table of the policy does not exist (yet)");
                continue;
            }
            for verb in ["UPDATE", "DELETE"] {
                sqlx::query(&format!(
                    "CREATE TRIGGER IF NOT EXISTS truevalue_append_only_{table}_{verb} \
                     BEFORE {verb} ON \"{table}\" \
                     BEGIN SELECT RAISE(ABORT, 'table {table} is append-only: rows cannot be changed or deleted'); END"
                ))
                .execute(&self.pool)
                .await
                .with_context(|| format!("making {table} append-only"))?;
            }
        }
        Ok(())
    }

    async fn applied_migrations(&self) -> anyhow::Result<Vec<(i64, String)>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {RECORDS} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
        ))
        .execute(&mut *conn)
        .await
        .context("creating the migration records")?;
        let rows: Vec<(i64, String)> =
            sqlx::query_as(&format!("SELECT id, checksum FROM {RECORDS}"))
                .fetch_all(&mut *conn)
                .await
                .context("reading the migration records")?;
        Ok(rows)
    }

    async fn outbox(&self, limit: u32) -> anyhow::Result<Vec<(i64, Event)>> {
        let rows: Vec<StoredRow> = sqlx::query_as(&format!(
            "SELECT seq, topic, key, attributes, data FROM {OUTBOX} ORDER BY seq LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("reading the outbox")?;
        Ok(Event::from_rows(rows))
    }

    async fn outbox_sent(&self, places: &[i64]) -> anyhow::Result<()> {
        let places = serde_json::to_string(places)?;
        sqlx::query(&format!(
            "DELETE FROM {OUTBOX} WHERE seq IN (SELECT value FROM json_each($1))"
        ))
        .bind(places)
        .execute(&self.pool)
        .await
        .context("removing relayed events from the outbox")?;
        Ok(())
    }

    async fn begin_migrations(&self) -> anyhow::Result<Box<dyn MigrationTransaction>> {
        let transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("beginning the migrations' transaction")?;
        Ok(Box::new(SqliteMigrations { transaction }))
    }
}

struct SqliteMigrations {
    transaction: sqlx::Transaction<'static, Sqlite>,
}

#[async_trait]
impl MigrationTransaction for SqliteMigrations {
    async fn execute(&mut self, sql: &str) -> Result<(), Error> {
        let conn: &mut SqliteConnection = &mut self.transaction;
        authorize_as(conn, Mode::Guest).await?;
        let done = sqlx::query(sql).execute(&mut *conn).await;
        authorize_as(conn, Mode::Host).await?;
        done.map(drop).map_err(to_error)
    }

    async fn record(&mut self, id: i64, name: &str, checksum: &str) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {RECORDS} (id, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
        ))
        .bind(id)
        .bind(name)
        .bind(checksum)
        .bind(migrate::now())
        .execute(&mut *self.transaction)
        .await
        .with_context(|| format!("recording migration {id}"))?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.transaction
            .commit()
            .await
            .context("committing the migrations")
    }
}

/// Switches the connection's authorizer; each component statement runs between a switch to
/// [`Mode::Guest`] and the switch back, which the host's own statements need.
async fn authorize_as(conn: &mut SqliteConnection, mode: Mode) -> Result<(), Error> {
    authorizer::set_mode(conn, mode).await.map_err(to_error)
}

/// A request's statements. Reads before the request's first write run on their own, each
/// seeing the latest committed data (as PostgreSQL's default READ COMMITTED does); the first
/// write begins an IMMEDIATE transaction that holds the file's write lock until the request
/// ends, and every later statement runs inside it. So a request that reads, then works for a
/// while (hashing a password, say), then writes holds the lock only for its writes, and two
/// requests never deadlock upgrading a read lock: the busy timeout queues writers instead.
struct SqliteTransaction {
    pool: SqlitePool,
    transaction: Option<sqlx::Transaction<'static, Sqlite>>,
    bounds: Bounds,
    stop: Arc<Stop>,
}

/// When SQLite stops a statement of the request: once the request is gone (timed out, or its
/// client left), or past the deadline's backstop.
/// A statement runs on a worker thread that dropping its future does not stop, so without this
/// an endless query would keep a core busy (and the write lock held) after the request ended.
struct Stop {
    deadline: Option<Instant>,
    dropped: AtomicBool,
}

impl Stop {
    fn now(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// VM instructions between two checks of [`Stop`]: well under a millisecond of work.
const STOP_CHECK_OPS: i32 = 4_000;

/// Makes the connection's next statements obey the request: stopped by [`Stop`], and no string
/// or blob longer than the result may hold (SQLite refuses it as soon as it would be built,
/// before the host copies it). Replaces whatever an earlier request of this pool left. With
/// `mode`, also puts the authorizer in that mode, under the same lock of the handle.
async fn arm(
    connection: &mut sqlx::SqliteConnection,
    stop: &Arc<Stop>,
    bounds: &Bounds,
    mode: Option<Mode>,
) -> Result<(), Error> {
    let mut handle = connection.lock_handle().await.map_err(to_error)?;
    let stop = stop.clone();
    handle.set_progress_handler(STOP_CHECK_OPS, move || !stop.now());
    let length = i32::try_from(bounds.max_bytes).unwrap_or(i32::MAX);
    // SAFETY: the handle is a live connection, locked for the duration of the call.
    unsafe {
        libsqlite3_sys::sqlite3_limit(
            handle.as_raw_handle().as_ptr(),
            libsqlite3_sys::SQLITE_LIMIT_LENGTH,
            length,
        );
    }
    if let Some(mode) = mode {
        authorizer::set_mode_locked(&mut handle, mode);
    }
    Ok(())
}

impl Drop for SqliteTransaction {
    fn drop(&mut self) {
        // A statement still running belongs to a request that has ended (timed out or dropped).
        self.stop.dropped.store(true, Ordering::Relaxed);
    }
}

impl SqliteTransaction {
    /// The write transaction, begun now unless `sql` only reads and none is open yet.
    async fn for_statement(
        &mut self,
        sql: &str,
    ) -> Result<Option<&mut sqlx::Transaction<'static, Sqlite>>, Error> {
        if self.transaction.is_none() && !reads_only(sql) {
            let mut begun = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(to_error)?;
            arm(&mut begun, &self.stop, &self.bounds, None).await?;
            self.transaction = Some(begun);
        }
        Ok(self.transaction.as_mut())
    }

    /// The connection a component's statement runs on, in guest mode: the request's write
    /// transaction (true: switch it back to host mode after the statement), or for a read
    /// before any write a connection of its own, held in `pooled`.
    async fn guest_connection<'a>(
        &'a mut self,
        sql: &str,
        pooled: &'a mut Option<PoolConnection<Sqlite>>,
    ) -> Result<(&'a mut SqliteConnection, bool), Error> {
        let reader = self.reader();
        match self.for_statement(sql).await? {
            Some(transaction) => {
                authorize_as(transaction, Mode::Guest).await?;
                Ok((transaction, true))
            }
            None => Ok((pooled.insert(reader.connection().await?), false)),
        }
    }

    /// What a read before the request's first write needs to get a connection of its own.
    fn reader(&self) -> Reader {
        Reader {
            pool: self.pool.clone(),
            stop: self.stop.clone(),
            bounds: self.bounds,
        }
    }
}

struct Reader {
    pool: SqlitePool,
    stop: Arc<Stop>,
    bounds: Bounds,
}

impl Reader {
    /// A connection of the pool, armed for the request and in guest mode; going back to the
    /// pool puts it in host mode again (`authorizer::reusable`).
    async fn connection(&self) -> Result<PoolConnection<Sqlite>, Error> {
        let mut connection = self.pool.acquire().await.map_err(to_error)?;
        arm(&mut connection, &self.stop, &self.bounds, Some(Mode::Guest)).await?;
        Ok(connection)
    }
}

/// Whether a statement surely only reads: a plain `SELECT` or `VALUES` (a `WITH` may write).
fn reads_only(sql: &str) -> bool {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("values")
}

#[async_trait]
impl Transaction for SqliteTransaction {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        let bounds = self.bounds;
        let query = bind(sqlx::query(sql), params);
        let mut pooled = None;
        let (conn, in_transaction) = self.guest_connection(sql, &mut pooled).await?;
        // Rows stream in from the worker thread; dropping the stream when the result is too
        // large stops the statement at its next row.
        let rows = super::collect_rows(query.fetch(&mut *conn), &bounds, value_of, to_error).await;
        if in_transaction {
            authorize_as(conn, Mode::Host).await?;
        }
        rows.map_err(super::Refusal::into_error)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, Error> {
        let query = bind(sqlx::query(sql), params);
        let mut pooled = None;
        let (conn, in_transaction) = self.guest_connection(sql, &mut pooled).await?;
        let done = query.execute(&mut *conn).await;
        if in_transaction {
            authorize_as(conn, Mode::Host).await?;
        }
        Ok(done.map_err(to_error)?.rows_affected())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Error> {
        match self.transaction.take() {
            Some(transaction) => transaction.commit().await.map_err(to_error),
            None => Ok(()),
        }
    }

    /// In the request's write transaction (begun now if it only read so far), as the host:
    /// between component statements the authorizer is in host mode.
    async fn write_outbox(&mut self, _component: &str, events: &[Event]) -> Result<(), Error> {
        let transaction = self
            .for_statement("INSERT")
            .await?
            .ok_or_else(|| Error::Unavailable("no transaction".into()))?;
        for event in events {
            sqlx::query(&format!(
                "INSERT INTO {OUTBOX} (topic, key, attributes, data) VALUES ($1, $2, $3, $4)"
            ))
            .bind(&event.topic)
            .bind(&event.key)
            .bind(event.attributes_json())
            .bind(&event.data)
            .execute(&mut **transaction)
            .await
            .map_err(to_error)?;
        }
        Ok(())
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
            // A function the authorizer refused fails as a plain error with this message.
            let refused =
                code & 0xff == libsqlite3_sys::SQLITE_AUTH || message.starts_with("not authorized");
            match code & 0xff {
                libsqlite3_sys::SQLITE_CONSTRAINT => Error::Constraint(message),
                _ if refused => Error::AccessDenied(format!(
                    "{message}: components may use only their own tables (not the host's \
                     `{}…` ones), without pragmas, attached files, temporary objects, \
                     extensions or transaction control",
                    authorizer::HOST_TABLES
                )),
                libsqlite3_sys::SQLITE_PERM => Error::AccessDenied(message),
                libsqlite3_sys::SQLITE_BUSY | libsqlite3_sys::SQLITE_LOCKED => {
                    Error::Unavailable(message)
                }
                libsqlite3_sys::SQLITE_INTERRUPT => Error::Unavailable(
                    "the statement was stopped: the request's deadline passed".into(),
                ),
                libsqlite3_sys::SQLITE_TOOBIG => Error::Invalid(format!(
                    "{message}: a value may not exceed the policy's result limit"
                )),
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

#[cfg(test)]
mod tests {
    use super::reads_only;

    #[test]
    fn only_plain_selects_run_before_the_write_lock() {
        for sql in [
            "SELECT 1",
            "  select * from t",
            "(SELECT 1) UNION (SELECT 2)",
            "VALUES (1)",
        ] {
            assert!(reads_only(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1 RETURNING a",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "DELETE FROM t",
            "selected",
            "",
        ] {
            assert!(!reads_only(sql), "{sql}");
        }
    }
}
