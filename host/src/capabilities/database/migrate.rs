//! Applies a component's migrations under its own role, each in one transaction together with
//! its record, so a crash never leaves a migration applied but unrecorded.

use sha2::{Digest, Sha256};

use super::{ComponentDb, Dialect, Error, Value, guard};

/// One migration as the component's manifest declares it.
#[derive(Debug, Clone)]
pub struct Migration {
    pub id: u32,
    pub name: String,
    pub sql: String,
}

const RECORDS: &str = "truevalue_migrations";

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

    let mut transaction = db.begin().await.map_err(describe)?;
    transaction
        .execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {RECORDS} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
            ),
            &[],
        )
        .await
        .map_err(describe)?;
    let applied = transaction
        .query(&format!("SELECT id, checksum FROM {RECORDS}"), &[])
        .await
        .map_err(describe)?;
    transaction.commit().await.map_err(describe)?;

    let recorded: Vec<(i64, String)> = applied
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Integer(id), Value::Text(checksum)] => Some((*id, checksum.clone())),
            _ => None,
        })
        .collect();

    let mut done = Vec::new();
    for migration in &migrations {
        let checksum = hex::encode(Sha256::digest(migration.sql.as_bytes()));
        if let Some((_, previous)) = recorded
            .iter()
            .find(|(id, _)| *id == i64::from(migration.id))
        {
            if *previous != checksum {
                anyhow::bail!(
                    "migration {} ({}) was changed after it was applied; add a new migration instead",
                    migration.id,
                    migration.name
                );
            }
            continue;
        }
        let statements = guard::statements(&migration.sql, dialect).map_err(|e| {
            anyhow::anyhow!(
                "migration {} ({}): {}",
                migration.id,
                migration.name,
                describe(e)
            )
        })?;
        let mut transaction = db.begin().await.map_err(describe)?;
        for statement in statements {
            transaction.execute(statement, &[]).await.map_err(|e| {
                anyhow::anyhow!(
                    "migration {} ({}) failed: {}",
                    migration.id,
                    migration.name,
                    describe(e)
                )
            })?;
        }
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        transaction
            .execute(
                &format!(
                    "INSERT INTO {RECORDS} (id, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
                ),
                &[
                    Value::Integer(i64::from(migration.id)),
                    Value::Text(migration.name.clone()),
                    Value::Text(checksum),
                    Value::Text(now),
                ],
            )
            .await
            .map_err(describe)?;
        transaction.commit().await.map_err(describe)?;
        done.push(migration.id);
    }
    Ok(done)
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
