//! Applies a component's migrations with the component's own rights: all of a deploy's pending
//! migrations and their records in one transaction, so a deploy whose later migration fails
//! leaves the earlier ones unapplied too, and a crash never leaves one applied but unrecorded.

use sha2::{Digest, Sha256};

use super::{ComponentDb, Dialect, Error, guard};

/// One migration as the component's manifest declares it.
#[derive(Debug, Clone)]
pub struct Migration {
    pub id: u32,
    pub name: String,
    pub sql: String,
}

/// Applies the migrations not yet recorded, in id order; returns the ids applied.
/// A migration whose SQL changed after it was applied is refused.
pub async fn apply(
    db: &dyn ComponentDb,
    dialect: Dialect,
    migrations: &[Migration],
) -> anyhow::Result<Vec<u32>> {
    let mut migrations = migrations.to_vec();
    migrations.sort_by_key(|m| m.id);
    if let Some(pair) = migrations.windows(2).find(|w| w[0].id == w[1].id) {
        anyhow::bail!("two migrations have id {}", pair[0].id);
    }

    let recorded = db.applied_migrations().await?;
    let mut pending = Vec::new();
    for migration in &migrations {
        let checksum = hex::encode(Sha256::digest(migration.sql.as_bytes()));
        match recorded
            .iter()
            .find(|(id, _)| *id == i64::from(migration.id))
        {
            Some((_, previous)) if *previous != checksum => anyhow::bail!(
                "migration {} ({}) was changed after it was applied; add a new migration instead",
                migration.id,
                migration.name
            ),
            Some(_) => {}
            None => {
                // Every pending migration is read before any of them touches the database.
                let statements = guard::statements(&migration.sql, dialect)
                    .map_err(|e| anyhow::anyhow!("{}: {}", label(migration), describe(e)))?;
                pending.push((migration, checksum, statements));
            }
        }
    }
    if pending.is_empty() {
        db.isolate_tenants().await?;
        return Ok(Vec::new());
    }

    db.before_migrations().await?;
    let applied = run(db, pending).await;
    // Whether they applied or not, the tenant tables go back under the host's row policy.
    db.isolate_tenants().await?;
    applied
}

type Pending<'m> = Vec<(&'m Migration, String, Vec<&'m str>)>;

/// All of `pending` and their records, in one transaction.
async fn run(db: &dyn ComponentDb, pending: Pending<'_>) -> anyhow::Result<Vec<u32>> {
    let mut transaction = db.begin_migrations().await?;
    let mut done = Vec::new();
    for (migration, checksum, statements) in pending {
        for statement in statements {
            transaction
                .execute(statement)
                .await
                .map_err(|e| anyhow::anyhow!("{} failed: {}", label(migration), describe(e)))?;
        }
        transaction
            .record(i64::from(migration.id), &migration.name, &checksum)
            .await?;
        done.push(migration.id);
    }
    transaction.commit().await?;
    Ok(done)
}

fn label(migration: &Migration) -> String {
    format!("migration {} ({})", migration.id, migration.name)
}

/// When the host recorded a migration, as RFC 3339.
pub(super) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A database error as an operator reads it.
pub fn describe(error: Error) -> anyhow::Error {
    match error {
        Error::AccessDenied(m) => anyhow::anyhow!("access denied: {m}"),
        Error::Invalid(m) => anyhow::anyhow!("invalid SQL: {m}"),
        Error::Constraint(m) => anyhow::anyhow!("constraint violated: {m}"),
        Error::Unavailable(m) => anyhow::anyhow!("database unavailable: {m}"),
    }
}
