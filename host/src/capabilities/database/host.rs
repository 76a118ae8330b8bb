//! The WIT `database` interface, implemented over the request's lazily begun transaction.

use std::sync::Arc;

use tracing::instrument;

use super::{Bounds, ComponentDb, Dialect, Error, Rows, Transaction, Value, guard};
use crate::bindings::database::Host;
use crate::capabilities::events::Event;

/// Per-request state of the capability: the component's database, what the request's
/// statements may cost, and, once the first statement runs, the request's transaction.
pub struct DatabaseCtx {
    db: Option<Arc<dyn ComponentDb>>,
    dialect: Dialect,
    bounds: Bounds,
    /// The organization the request's transaction is bound to (a tenant route).
    tenant: Option<Arc<str>>,
    transaction: Option<Box<dyn Transaction>>,
    /// What the request's current call is waiting for, until it returns: a request that ran
    /// past its deadline says where it was.
    pending: Option<&'static str>,
}

impl DatabaseCtx {
    pub fn new(
        db: Option<Arc<dyn ComponentDb>>,
        dialect: Dialect,
        bounds: Bounds,
        tenant: Option<Arc<str>>,
    ) -> Self {
        Self {
            db,
            dialect,
            bounds,
            tenant,
            transaction: None,
            pending: None,
        }
    }

    /// What an unfinished call of this capability was waiting for, if one is.
    pub fn pending(&self) -> Option<&'static str> {
        self.pending
    }

    /// Takes the request's transaction, if a statement began one, for commit or rollback.
    pub fn take_transaction(&mut self) -> Option<Box<dyn Transaction>> {
        self.transaction.take()
    }

    /// Writes `events` into the outbox within the request's transaction (begun now if no
    /// statement began it), so that they commit with the request's writes.
    pub async fn outbox(&mut self, component: &str, events: &[Event]) -> Result<(), Error> {
        let written = match self.transaction().await {
            Ok(transaction) => transaction.write_outbox(component, events).await,
            Err(e) => Err(e),
        };
        self.pending = None;
        written
    }

    /// The request's transaction for a statement, begun now unless a statement began it. Until
    /// the caller clears `pending`, a request past its deadline says it waited for a connection
    /// (while one is got) or for the statement.
    async fn transaction(&mut self) -> Result<&mut Box<dyn Transaction>, Error> {
        if self.transaction.is_none() {
            let db = self
                .db
                .as_ref()
                .ok_or_else(|| Error::AccessDenied("no database is granted".into()))?;
            self.pending = Some("a database connection");
            self.transaction = Some(db.begin_with(self.bounds, self.tenant.as_deref()).await?);
        }
        self.pending = Some("a database statement");
        self.transaction
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no transaction".into()))
    }
}

impl Host for DatabaseCtx {
    async fn current_dialect(&mut self) -> wasmtime::Result<Dialect> {
        Ok(self.dialect)
    }

    #[instrument(name = "database.query", skip_all, fields(otel.kind = "client", db.system = ?self.dialect))]
    async fn query(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        let statement = match guard::single(&sql, self.dialect) {
            Ok(statement) => statement,
            Err(e) => return Ok(Err(e)),
        };
        let result = match self.transaction().await {
            Ok(transaction) => transaction.query(statement, &params).await,
            Err(e) => Err(e),
        };
        self.pending = None;
        Ok(result)
    }

    #[instrument(name = "database.execute", skip_all, fields(otel.kind = "client", db.system = ?self.dialect))]
    async fn execute(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let statement = match guard::single(&sql, self.dialect) {
            Ok(statement) => statement,
            Err(e) => return Ok(Err(e)),
        };
        let result = match self.transaction().await {
            Ok(transaction) => transaction.execute(statement, &params).await,
            Err(e) => Err(e),
        };
        self.pending = None;
        Ok(result)
    }
}
