//! PostgreSQL: a schema per component and a login role of its own. Each component's pool logs in
//! as that role, so `RESET ROLE` or `SET ROLE` can never reach a more privileged role, and the
//! server itself refuses access to every other schema. The schema belongs to the host's database
//! user and the role may only use it and create in it, so no `GRANT` a component runs (directly,
//! in a `DO` block or a function) can open it to anyone else (`postgres_setup.rs`). Every
//! transaction also runs under `SET LOCAL ROLE` and a `search_path` of the component's schema.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, PgPool, Postgres, Row, TypeInfo, ValueRef};

use super::postgres_setup;
use super::{
    Backend, Bounds, ComponentDb, ConnectionShares, Dialect, Error, MigrationTransaction, Rows,
    Transaction, Value, migrate,
};
use crate::capabilities::events::{Event, StoredRow};

pub struct PostgresBackend {
    admin: PgPool,
    options: PgConnectOptions,
    database: String,
    /// What `truevalue_host.bind_org` asks for; never sent in a statement's text.
    binding_key: Arc<str>,
    /// Only a superuser can take over the components' tables for row-level security.
    isolates: bool,
}

impl PostgresBackend {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("database_url is not a valid PostgreSQL URL")?;
        let admin = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .context("connecting to PostgreSQL (database_url)")?;
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&admin)
            .await?;
        postgres_setup::prepare(&admin, &database)
            .await
            .context("preparing the database for components")?;
        let binding_key = postgres_setup::binding_key(&admin)
            .await
            .context("reading the tenant binding key")?
            .into();
        let isolates: bool = sqlx::query_scalar(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&admin)
        .await?;
        if !isolates {
            tracing::warn!(
                "the database user is not a superuser: tables with an org_id column are not put \
                 under row-level security, and tenants are kept apart by the components' own filters"
            );
        }
        Ok(Self {
            admin,
            options,
            database,
            binding_key,
            isolates,
        })
    }

    /// The component's role: prefixed by the database name, since roles are cluster-wide.
    fn role(&self, component: &str) -> anyhow::Result<String> {
        let role = format!("{}_{component}", self.database);
        let safe = role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        anyhow::ensure!(
            safe && role.len() <= 63,
            "role name {role:?} is not a plain identifier of at most 63 bytes"
        );
        Ok(role)
    }

    /// Creates or updates the role and its schema; the password is shared by every host on this
    /// database, kept in a table no component can read.
    async fn provision(&self, component: &str, role: &str) -> anyhow::Result<String> {
        let fresh = hex::encode(rand::random::<[u8; 24]>());
        sqlx::query(
            "INSERT INTO truevalue_host.component_roles (role, password) VALUES ($1, $2) ON CONFLICT (role) DO NOTHING",
        )
        .bind(role)
        .bind(&fresh)
        .execute(&self.admin)
        .await?;
        let password: String = sqlx::query_scalar(
            "SELECT password FROM truevalue_host.component_roles WHERE role = $1",
        )
        .bind(role)
        .fetch_one(&self.admin)
        .await?;
        anyhow::ensure!(
            password.chars().all(|c| c.is_ascii_hexdigit()),
            "stored password of {role} is malformed"
        );

        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&self.admin)
                .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        // Identifiers and the hex password were checked above; DDL takes no bind parameters.
        sqlx::query(&format!(
            "{verb} ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION \
             NOBYPASSRLS PASSWORD '{password}'"
        ))
        .execute(&self.admin)
        .await
        .with_context(|| format!("{verb} ROLE {role}"))?;
        postgres_setup::provision(&self.admin, &self.database, component, role).await?;
        Ok(password)
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn open(
        &self,
        component: &str,
        max_connections: u32,
        append_only: &[String],
    ) -> anyhow::Result<Arc<dyn ComponentDb>> {
        let role = self.role(component)?;
        let password = self.provision(component, &role).await?;
        let options = self.options.clone().username(&role).password(&password);
        let connections = max_connections.clamp(1, 16);
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("logging in to PostgreSQL as {role}"))?;
        Ok(Arc::new(PostgresDb {
            pool,
            shares: ConnectionShares::new(
                connections,
                crate::capabilities::services::MAX_DEPTH + 1,
            ),
            admin: self.admin.clone(),
            role,
            schema: component.to_string(),
            binding_key: self.binding_key.clone(),
            isolates: self.isolates,
            append_only: append_only.to_vec(),
        }))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.admin).await?;
        Ok(())
    }

    async fn exists(&self, component: &str) -> anyhow::Result<bool> {
        let role = self.role(component)?;
        let exists = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
             OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)",
        )
        .bind(component)
        .bind(&role)
        .fetch_one(&self.admin)
        .await?;
        Ok(exists)
    }

    async fn discard(&self, component: &str) -> anyhow::Result<()> {
        let role = self.role(component)?;
        postgres_setup::discard(&self.admin, component, &role).await
    }
}

struct PostgresDb {
    pool: PgPool,
    /// A transaction holds its connection for the whole request: each depth of a call chain
    /// has connections of its own.
    shares: ConnectionShares,
    /// The host's own connection: for the migration records the component cannot reach, and
    /// to stop a component's statement when its own pool is busy.
    admin: PgPool,
    role: String,
    schema: String,
    binding_key: Arc<str>,
    isolates: bool,
    append_only: Vec<String>,
}

/// The first statement of every transaction: its search path and statement timeout, and the
/// server process and start that name it.
const SETUP: &str = "SELECT pg_backend_pid(), now() FROM (SELECT set_config('search_path', $1, true), \
     set_config('statement_timeout', coalesce($2, current_setting('statement_timeout')), true)) AS set";

/// The same, binding the transaction to an organization for the row policies.
const SETUP_TENANT: &str = "SELECT pg_backend_pid(), now() FROM (SELECT set_config('search_path', $1, true), \
     set_config('statement_timeout', coalesce($2, current_setting('statement_timeout')), true), \
     truevalue_host.bind_org($3, $4)) AS set";

#[async_trait]
impl ComponentDb for PostgresDb {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_with(
        &self,
        bounds: Bounds,
        tenant: Option<&str>,
    ) -> Result<Box<dyn Transaction>, Error> {
        let share = self.shares.acquire(bounds.depth).await?;
        let mut transaction = self.pool.begin().await.map_err(to_error)?;
        sqlx::query(&format!("SET LOCAL ROLE \"{}\"", self.role))
            .execute(&mut *transaction)
            .await
            .map_err(to_error)?;
        // The server stops each statement soon after the request's deadline on its own; the
        // component can lift that (`set_config`), so the host also cancels a statement it gave
        // up on.
        let timeout = bounds.backstop().map(|backstop| {
            let left = backstop.saturating_duration_since(std::time::Instant::now());
            left.as_millis().max(1).to_string()
        });
        let setup = sqlx::query_as(match tenant {
            Some(_) => SETUP_TENANT,
            None => SETUP,
        })
        .bind(format!("\"{}\"", self.schema))
        .bind(timeout);
        let setup = match tenant {
            Some(org) => setup.bind(&*self.binding_key).bind(org),
            None => setup,
        };
        let (pid, started): (i32, time::OffsetDateTime) =
            setup.fetch_one(&mut *transaction).await.map_err(to_error)?;
        Ok(Box::new(PostgresTransaction {
            transaction: Some(transaction),
            bounds,
            backend: Arc::new(ServerBackend {
                admin: self.admin.clone(),
                pid,
                started,
            }),
            running: false,
            binding_key: self.binding_key.clone(),
            _share: share,
        }))
    }

    async fn before_migrations(&self) -> anyhow::Result<()> {
        if self.isolates {
            postgres_setup::release_tables(&self.admin, &self.schema, &self.role)
                .await
                .context("handing the component's tables to its migrations")?;
        }
        Ok(())
    }

    async fn isolate_tenants(&self) -> anyhow::Result<()> {
        if self.isolates {
            let tables = postgres_setup::isolate_tenants(&self.admin, &self.schema, &self.role)
                .await
                .context("putting the component's tenant tables under row-level security")?;
            if tables > 0 {
                tracing::info!(component = %self.schema, tables, "tenant tables under row-level security");
            }
            postgres_setup::append_only(&self.admin, &self.schema, &self.role, &self.append_only)
                .await
                .context("making the append-only tables refuse updates and deletes")?;
        } else if !self.append_only.is_empty() {
            tracing::warn!(component = %self.schema, "the host's database user is not a superuser: append-only tables cannot be enforced");
        }
        Ok(())
    }

    async fn applied_migrations(&self) -> anyhow::Result<Vec<(i64, String)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, checksum FROM truevalue_host.migrations WHERE component = $1",
        )
        .bind(&self.schema)
        .fetch_all(&self.admin)
        .await
        .context("reading the migration records")?;
        Ok(rows)
    }

    async fn outbox(&self, limit: u32) -> anyhow::Result<Vec<(i64, Event)>> {
        let rows: Vec<StoredRow> = sqlx::query_as(
            "SELECT seq, topic, key, attributes, data FROM truevalue_host.outbox \
             WHERE component = $1 ORDER BY seq LIMIT $2",
        )
        .bind(&self.schema)
        .bind(i64::from(limit))
        .fetch_all(&self.admin)
        .await
        .context("reading the outbox")?;
        Ok(Event::from_rows(rows))
    }

    async fn outbox_sent(&self, places: &[i64]) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM truevalue_host.outbox WHERE seq = ANY($1)")
            .bind(places)
            .execute(&self.admin)
            .await
            .context("removing relayed events from the outbox")?;
        Ok(())
    }

    /// The migrations run on the component's own connection, as its role; their records are
    /// written in the same transaction through `truevalue_host.record_migration`, with a token
    /// issued now that only the host knows.
    async fn begin_migrations(&self) -> anyhow::Result<Box<dyn MigrationTransaction>> {
        let token = hex::encode(rand::random::<[u8; 32]>());
        sqlx::query(
            "INSERT INTO truevalue_host.migration_tokens (role, component, token) VALUES ($1, $2, $3) \
             ON CONFLICT (role) DO UPDATE SET component = excluded.component, token = excluded.token",
        )
        .bind(&self.role)
        .bind(&self.schema)
        .bind(&token)
        .execute(&self.admin)
        .await
        .context("issuing the migrations' token")?;
        let transaction = self.begin().await.map_err(migrate::describe)?;
        Ok(Box::new(PostgresMigrations {
            transaction,
            token,
            admin: self.admin.clone(),
            role: self.role.clone(),
        }))
    }
}

/// The server process that runs a transaction, named so that only this transaction's
/// statement can be cancelled: a pid alone may serve another transaction by then.
struct ServerBackend {
    admin: PgPool,
    pid: i32,
    started: time::OffsetDateTime,
}

impl ServerBackend {
    /// Cancels the statement the transaction is running, if it is still running one.
    async fn cancel(&self) {
        let cancelled = sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND xact_start = $2 AND state = 'active'",
        )
        .bind(self.pid)
        .bind(self.started)
        .execute(&self.admin)
        .await;
        if let Err(error) = cancelled {
            tracing::warn!(%error, pid = self.pid, "could not cancel a component's statement");
        }
    }
}

struct PostgresMigrations {
    transaction: Box<dyn Transaction>,
    token: String,
    admin: PgPool,
    role: String,
}

#[async_trait]
impl MigrationTransaction for PostgresMigrations {
    async fn execute(&mut self, sql: &str) -> Result<(), Error> {
        self.transaction.execute(sql, &[]).await.map(drop)
    }

    async fn record(&mut self, id: i64, name: &str, checksum: &str) -> anyhow::Result<()> {
        self.transaction
            .execute(
                "SELECT truevalue_host.record_migration($1, $2, $3, $4, $5)",
                &[
                    Value::Text(self.token.clone()),
                    Value::Integer(id),
                    Value::Text(name.into()),
                    Value::Text(checksum.into()),
                    Value::Text(migrate::now()),
                ],
            )
            .await
            .map_err(migrate::describe)
            .with_context(|| format!("recording migration {id}"))?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.transaction
            .commit()
            .await
            .map_err(migrate::describe)
            .context("committing the migrations")?;
        // A token left behind (a failed deploy) is useless: it is replaced before the next one.
        sqlx::query("DELETE FROM truevalue_host.migration_tokens WHERE role = $1 AND token = $2")
            .bind(&self.role)
            .bind(&self.token)
            .execute(&self.admin)
            .await
            .context("retiring the migrations' token")?;
        Ok(())
    }
}

struct PostgresTransaction {
    /// Always `Some` until `commit` takes it.
    transaction: Option<sqlx::Transaction<'static, Postgres>>,
    bounds: Bounds,
    backend: Arc<ServerBackend>,
    /// A statement was sent and its answer not yet read: if the transaction is dropped now,
    /// the request ended (deadline, client gone) and the server would go on running it.
    running: bool,
    /// What `truevalue_host.publish_event` asks for.
    binding_key: Arc<str>,
    /// Its connection's place in the share of the pool for the request's depth.
    _share: tokio::sync::OwnedSemaphorePermit,
}

impl PostgresTransaction {
    fn connection(&mut self) -> Result<&mut sqlx::PgConnection, Error> {
        self.transaction
            .as_deref_mut()
            .ok_or_else(|| Error::Unavailable("the transaction has ended".into()))
    }
}

impl PostgresTransaction {
    /// Reads what is left of a statement cut off mid-result (rows, then the cancellation), so
    /// the next statement or the commit starts on a connection that is ready.
    async fn drain(&mut self) {
        if let Ok(connection) = self.connection() {
            // Each failed ping consumes one error the server sent; two are the most expected.
            for _ in 0..3 {
                if connection.ping().await.is_ok() {
                    break;
                }
            }
        }
    }
}

impl Drop for PostgresTransaction {
    fn drop(&mut self) {
        if self.running
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let backend = self.backend.clone();
            runtime.spawn(async move { backend.cancel().await });
        }
    }
}

#[async_trait]
impl Transaction for PostgresTransaction {
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        let bounds = self.bounds;
        self.running = true;
        let rows = {
            let connection = self.connection()?;
            let stream = bind(sqlx::query(sql), params).fetch(connection);
            super::collect_rows(stream, &bounds, value_of, to_error).await
        };
        let rows = match rows {
            Ok(rows) => Ok(rows),
            // Past the bounds the server would stream the rest only to be read and discarded.
            // That aborts the transaction, as any failed statement does on PostgreSQL.
            Err(super::Refusal::TooLarge(error)) => {
                self.backend.cancel().await;
                self.drain().await;
                Err(error)
            }
            Err(super::Refusal::Failed(error)) => Err(error),
        };
        self.running = false;
        rows
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, Error> {
        self.running = true;
        let done = bind(sqlx::query(sql), params)
            .execute(self.connection()?)
            .await
            .map_err(to_error);
        self.running = false;
        Ok(done?.rows_affected())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Error> {
        match self.transaction.take() {
            Some(transaction) => transaction.commit().await.map_err(to_error),
            None => Err(Error::Unavailable("the transaction has ended".into())),
        }
    }

    /// Through `truevalue_host.publish_event`, with the key only the host knows: the
    /// component's role cannot write the outbox on its own.
    async fn write_outbox(&mut self, component: &str, events: &[Event]) -> Result<(), Error> {
        let key = self.binding_key.clone();
        for event in events {
            sqlx::query("SELECT truevalue_host.publish_event($1, $2, $3, $4, $5, $6)")
                .bind(&*key)
                .bind(component)
                .bind(&event.topic)
                .bind(&event.key)
                .bind(event.attributes_json())
                .bind(&event.data)
                .execute(self.connection()?)
                .await
                .map_err(to_error)?;
        }
        Ok(())
    }
}

type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn bind<'q>(mut query: Query<'q>, params: &'q [Value]) -> Query<'q> {
    for param in params {
        query = match param {
            Value::Null => query.bind(None::<String>),
            Value::Integer(i) => query.bind(*i),
            Value::Real(f) => query.bind(*f),
            Value::Text(s) => query.bind(s.as_str()),
            Value::Blob(b) => query.bind(b.as_slice()),
            Value::Boolean(b) => query.bind(*b),
        };
    }
    query
}

fn value_of(row: &PgRow, i: usize) -> Result<Value, Error> {
    let raw = row.try_get_raw(i).map_err(to_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_string();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let value = match kind.as_str() {
        "INT2" => row.try_get::<i16, _>(i).map(|v| Value::Integer(v.into())),
        "INT4" => row.try_get::<i32, _>(i).map(|v| Value::Integer(v.into())),
        "INT8" => row.try_get::<i64, _>(i).map(Value::Integer),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|v| Value::Real(v.into())),
        "FLOAT8" => row.try_get::<f64, _>(i).map(Value::Real),
        "BOOL" => row.try_get::<bool, _>(i).map(Value::Boolean),
        "BYTEA" => row.try_get::<Vec<u8>, _>(i).map(Value::Blob),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" => {
            row.try_get::<String, _>(i).map(Value::Text)
        }
        "UUID" => row
            .try_get::<uuid::Uuid, _>(i)
            .map(|v| Value::Text(v.to_string())),
        "JSON" | "JSONB" => row
            .try_get::<serde_json::Value, _>(i)
            .map(|v| Value::Text(v.to_string())),
        "TIMESTAMPTZ" => row
            .try_get::<time::OffsetDateTime, _>(i)
            .map(|v| Value::Text(v.format(rfc3339).unwrap_or_default())),
        "TIMESTAMP" => row
            .try_get::<time::PrimitiveDateTime, _>(i)
            .map(|v| Value::Text(v.assume_utc().format(rfc3339).unwrap_or_default())),
        "DATE" => row
            .try_get::<time::Date, _>(i)
            .map(|v| Value::Text(v.to_string())),
        other => {
            return Err(Error::Invalid(format!(
                "column {} has type {other}, which the host does not convert; cast it to text",
                row.columns()[i].name()
            )));
        }
    };
    value.map_err(to_error)
}

fn to_error(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            let code = db.code().unwrap_or_default().to_string();
            match code.as_str() {
                c if c.starts_with("23") => Error::Constraint(message),
                "42501" => Error::AccessDenied(message),
                "25P02" | "25006" => Error::Unavailable(message),
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
                    Error::Unavailable(message)
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
