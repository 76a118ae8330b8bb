//! What the host sets up once per PostgreSQL database, before any component: its own schema
//! (component passwords, migration records), the function through which a deploy records its
//! migrations, and the database's defaults taken back from `PUBLIC`.
//!
//! Isolation does not rest on a component never running a `GRANT`: its schema belongs to the
//! host's database user, so it cannot let anyone else use it, and whatever it grants on its own
//! tables reaches no other role. `TEMP` and `CONNECT` are no longer everyone's, and the catalogs
//! that list other components' schemas, tables, columns, row counts, databases and roles are
//! closed to components (see [`CATALOGS`] for what PostgreSQL still shows).

use anyhow::Context;
use sqlx::PgPool;

/// One lock id for every host's set-up, so hosts starting together do not race on the catalogs.
const SETUP_LOCK: i64 = 0x7472_7565_7661_6c75;

/// The host's tables, and the one function a component's role may call there: it records a
/// migration only with the token the host issued for this deploy, which the component's own
/// statements never see, for the role the connection logged in as.
const HOST_SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS truevalue_host;
REVOKE ALL ON SCHEMA truevalue_host FROM PUBLIC;
CREATE TABLE IF NOT EXISTS truevalue_host.component_roles
    (role TEXT PRIMARY KEY, password TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS truevalue_host.migrations
    (component TEXT NOT NULL, id BIGINT NOT NULL, name TEXT NOT NULL, checksum TEXT NOT NULL,
     applied_at TEXT NOT NULL, PRIMARY KEY (component, id));
CREATE TABLE IF NOT EXISTS truevalue_host.migration_tokens
    (role TEXT PRIMARY KEY, component TEXT NOT NULL, token TEXT NOT NULL);
CREATE OR REPLACE FUNCTION truevalue_host.record_migration
    (p_token TEXT, p_id BIGINT, p_name TEXT, p_checksum TEXT, p_applied_at TEXT)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted TEXT;
BEGIN
    SELECT t.component INTO granted FROM truevalue_host.migration_tokens t
        WHERE t.role = session_user AND t.token = p_token;
    IF granted IS NULL THEN
        RAISE EXCEPTION 'only the host records migrations' USING ERRCODE = '42501';
    END IF;
    INSERT INTO truevalue_host.migrations (component, id, name, checksum, applied_at)
        VALUES (granted, p_id, p_name, p_checksum, p_applied_at);
END $$;
REVOKE ALL ON FUNCTION truevalue_host.record_migration(TEXT, BIGINT, TEXT, TEXT, TEXT) FROM PUBLIC;

-- Row-level isolation: the organization each transaction on a tenant route is bound to, by
-- server process and transaction start. Only the host writes it (`bind_org` takes the key in
-- `binding_key`, which no component can read); row policies read it through `current_org`.
CREATE TABLE IF NOT EXISTS truevalue_host.binding_key
    (id INT PRIMARY KEY CHECK (id = 1), key TEXT NOT NULL);
CREATE UNLOGGED TABLE IF NOT EXISTS truevalue_host.request_orgs
    (pid INT PRIMARY KEY, xact_start TIMESTAMPTZ NOT NULL, org_id TEXT NOT NULL);
CREATE OR REPLACE FUNCTION truevalue_host.bind_org(p_key TEXT, p_org TEXT)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM truevalue_host.binding_key k WHERE k.key = p_key) THEN
        RAISE EXCEPTION 'only the host binds a transaction to an organization' USING ERRCODE = '42501';
    END IF;
    INSERT INTO truevalue_host.request_orgs (pid, xact_start, org_id)
        VALUES (pg_backend_pid(), transaction_timestamp(), p_org)
        ON CONFLICT (pid) DO UPDATE SET xact_start = excluded.xact_start, org_id = excluded.org_id;
END $$;
CREATE OR REPLACE FUNCTION truevalue_host.current_org()
    RETURNS TEXT LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.org_id FROM truevalue_host.request_orgs r
    WHERE r.pid = pg_backend_pid() AND r.xact_start = transaction_timestamp()
$$;
REVOKE ALL ON FUNCTION truevalue_host.bind_org(TEXT, TEXT) FROM PUBLIC;
REVOKE ALL ON FUNCTION truevalue_host.current_org() FROM PUBLIC;

-- The outbox: events written in a request's own transaction (with `binding_key`, which only
-- the host knows), relayed to the bus and removed once it acknowledged them.
CREATE TABLE IF NOT EXISTS truevalue_host.outbox
    (seq BIGSERIAL PRIMARY KEY, component TEXT NOT NULL, topic TEXT NOT NULL, key TEXT NOT NULL,
     attributes TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_component ON truevalue_host.outbox (component, seq);
CREATE OR REPLACE FUNCTION truevalue_host.publish_event
    (p_key TEXT, p_component TEXT, p_topic TEXT, p_partition_key TEXT, p_attributes TEXT, p_data TEXT)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM truevalue_host.binding_key k WHERE k.key = p_key) THEN
        RAISE EXCEPTION 'only the host writes the outbox' USING ERRCODE = '42501';
    END IF;
    INSERT INTO truevalue_host.outbox (component, topic, key, attributes, data)
        VALUES (p_component, p_topic, p_partition_key, p_attributes, p_data);
END $$;
REVOKE ALL ON FUNCTION truevalue_host.publish_event(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT) FROM PUBLIC;
"#;

/// The row policy on every table of a component with an `org_id` column: within a transaction
/// bound to an organization, only that organization's rows can be read or written. A
/// transaction bound to none (a route outside any organization) is not filtered.
pub const TENANT_POLICY: &str = "(SELECT truevalue_host.current_org()) IS NULL \
    OR org_id::text = (SELECT truevalue_host.current_org())";

/// The key `bind_org` asks for: made once per database, shared by every host on it.
pub async fn binding_key(admin: &PgPool) -> anyhow::Result<String> {
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query("INSERT INTO truevalue_host.binding_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(&fresh)
        .execute(admin)
        .await?;
    let key: String = sqlx::query_scalar("SELECT key FROM truevalue_host.binding_key WHERE id = 1")
        .fetch_one(admin)
        .await?;
    Ok(key)
}

/// Gives the component's tables back to its role, so its migrations can change them.
pub async fn release_tables(admin: &PgPool, schema: &str, role: &str) -> anyhow::Result<()> {
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, $2::text) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
           AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)",
    )
    .bind(schema)
    .bind(role)
    .fetch_all(admin)
    .await?;
    for statement in statements {
        sqlx::query(&statement).execute(admin).await?;
    }
    Ok(())
}

/// Puts every table of the component with an `org_id` column under row-level security that its
/// role cannot lift: the host's user takes ownership (an owner could switch the policy off),
/// the role keeps reading and writing rows (not `TRUNCATE`, which ignores row policies), and
/// the policy is forced.
pub async fn isolate_tenants(admin: &PgPool, schema: &str, role: &str) -> anyhow::Result<u32> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND EXISTS ( \
             SELECT 1 FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND a.attnum > 0 AND NOT a.attisdropped)",
    )
    .bind(schema)
    .fetch_all(admin)
    .await?;
    let mut transaction = admin.begin().await?;
    for table in &tables {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_policy \
             WHERE polrelid = $1::regclass AND polname = 'truevalue_tenant')",
        )
        .bind(table)
        .fetch_one(&mut *transaction)
        .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        for statement in [
            format!("ALTER TABLE {table} OWNER TO CURRENT_USER"),
            format!("REVOKE ALL ON {table} FROM \"{role}\""),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON {table} TO \"{role}\""),
            format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
            format!(
                "{verb} POLICY truevalue_tenant ON {table} USING ({TENANT_POLICY}) WITH CHECK ({TENANT_POLICY})"
            ),
        ] {
            sqlx::query(&statement)
                .execute(&mut *transaction)
                .await
                .with_context(|| format!("isolating tenants: {statement}"))?;
        }
    }
    // Sequences of `serial` and identity columns moved with their tables.
    sqlx::query(&format!(
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""
    ))
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(tables.len() as u32)
}

/// Takes the component's append-only tables from its role (an owner could grant itself
/// anything) and leaves it reading and inserting rows only: no `UPDATE`, `DELETE`, `TRUNCATE`
/// or `DROP`. Runs after [`isolate_tenants`], which grants more on tables with `org_id`.
pub async fn append_only(
    admin: &PgPool,
    schema: &str,
    role: &str,
    tables: &[String],
) -> anyhow::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let mut transaction = admin.begin().await?;
    for table in tables {
        let exists: bool = sqlx::query_scalar(
            "SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *transaction)
        .await?;
        if !exists {
            tracing::warn!(component = %schema, %table, "an append-only table of the policy does not exist (yet)");
            continue;
        }
        let table = format!("\"{schema}\".\"{table}\"");
        for statement in [
            format!("ALTER TABLE {table} OWNER TO CURRENT_USER"),
            format!("REVOKE ALL ON {table} FROM \"{role}\""),
            format!("GRANT SELECT, INSERT, REFERENCES ON {table} TO \"{role}\""),
        ] {
            sqlx::query(&statement)
                .execute(&mut *transaction)
                .await
                .with_context(|| format!("append-only: {statement}"))?;
        }
    }
    // Sequences of `serial` and identity columns moved with their tables.
    sqlx::query(&format!(
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""
    ))
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// Closes the catalogs to every role without its own grant (components have none): every
/// table and view of `pg_catalog` and `information_schema` except the three the driver reads
/// to decode column types, and the functions that report on relations by OID. The host's
/// database user, a superuser, is not affected.
///
/// What PostgreSQL still shows a component, having no per-role filtering of catalogs:
/// - the names of types in `pg_type`, and every table has a row type of its own name (with its
///   schema's OID), so table names are listed there, though not their columns or row counts;
/// - the existence and name of any object to a probe: `'other.t'::regclass`, `to_regclass`,
///   `oid::regclass` over a range of OIDs, `'name'::regrole`, `has_*_privilege`;
/// - its own session: `current_user`, `current_database()`, `version()`, settings not reserved
///   to superusers (`SHOW`, `current_setting`).
pub const CATALOGS: &str = r#"
DO $$
DECLARE
    item TEXT;
BEGIN
    FOR item IN
        SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
        WHERE c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          AND c.relkind IN ('r', 'v', 'm', 'p')
          AND NOT (c.relnamespace = 'pg_catalog'::regnamespace
                   AND c.relname IN ('pg_type', 'pg_enum', 'pg_range'))
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', item);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname LIKE 'pg\_stat\_%' OR p.proname LIKE 'lo\_%'
               OR p.proname LIKE 'pg\_get\_%def' OR p.proname LIKE 'pg\_get\_function\_%'
               OR p.proname LIKE 'pg\_partition\_%'
               OR p.proname IN ('loread', 'lowrite', 'pg_relation_size', 'pg_table_size',
                   'pg_indexes_size', 'pg_total_relation_size', 'pg_database_size',
                   'pg_tablespace_size', 'pg_relation_filenode', 'pg_relation_filepath',
                   'pg_filenode_relation', 'pg_get_expr', 'pg_get_serial_sequence',
                   'pg_get_userbyid', 'pg_get_statisticsobjdef_columns',
                   'pg_get_statisticsobjdef_expressions', 'pg_get_replica_identity_index',
                   'pg_describe_object', 'pg_identify_object', 'pg_identify_object_as_address',
                   'pg_get_object_address', 'pg_sequence_last_value', 'pg_sequence_parameters',
                   'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids',
                   'pg_get_publication_tables'))
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', item);
    END LOOP;
END $$
"#;

/// Sets up the host's schema and the database's defaults; idempotent, and serialized between
/// hosts sharing the database.
pub async fn prepare(admin: &PgPool, database: &str) -> anyhow::Result<()> {
    let mut transaction = admin.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut *transaction)
        .await?;
    sqlx::raw_sql(HOST_SCHEMA)
        .execute(&mut *transaction)
        .await
        .context("creating the host's schema")?;
    let (superuser, owner): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, pg_catalog.pg_has_role(d.datdba, 'USAGE') \
         FROM pg_catalog.pg_roles r, pg_catalog.pg_database d \
         WHERE r.rolname = current_user AND d.datname = current_database()",
    )
    .fetch_one(&mut *transaction)
    .await?;
    if superuser || owner {
        // Components connect with a grant of their own, and none may make temporary tables
        // (they would outlive the request on a pooled connection) or create in `public`.
        for statement in [
            format!("REVOKE ALL ON DATABASE \"{database}\" FROM PUBLIC"),
            "DO $$ BEGIN IF to_regnamespace('public') IS NOT NULL THEN \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; END IF; END $$"
                .to_string(),
        ] {
            sqlx::query(&statement).execute(&mut *transaction).await?;
        }
    } else {
        tracing::warn!(
            "the database user does not own the database: every role keeps CONNECT and TEMP on it"
        );
    }
    if superuser {
        sqlx::raw_sql(CATALOGS)
            .execute(&mut *transaction)
            .await
            .context("closing the catalogs to components")?;
    } else {
        tracing::warn!(
            "the database user is not a superuser: components can still list the catalogs \
             (schemas, tables, columns, row counts, databases and roles of this server)"
        );
        let can_cancel: bool = sqlx::query_scalar(
            "SELECT pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE') \
             AND pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')",
        )
        .fetch_one(&mut *transaction)
        .await?;
        if !can_cancel {
            tracing::warn!(
                "the database user is neither a superuser nor a member of pg_signal_backend and \
                 pg_read_all_stats: a component's statement is stopped at its deadline only by \
                 statement_timeout, which the component can lift"
            );
        }
    }
    transaction.commit().await?;
    Ok(())
}

/// Provisions one component's schema and the rights of its role (idempotent). The schema
/// belongs to the host's database user: the role may use it and create in it, not grant it.
/// A deployment made before this layout (schema owned by the role, records inside it) is
/// brought over in place.
pub async fn provision(
    admin: &PgPool,
    database: &str,
    schema: &str,
    role: &str,
) -> anyhow::Result<()> {
    let mut transaction = admin.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut *transaction)
        .await?;
    // Identifiers were checked to be plain by the caller; DDL takes no bind parameters.
    let statements = [
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO \"{role}\""),
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        format!("ALTER SCHEMA \"{schema}\" OWNER TO CURRENT_USER"),
        format!("REVOKE ALL ON SCHEMA \"{schema}\" FROM PUBLIC"),
        format!("GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO \"{role}\""),
        format!("GRANT USAGE ON SCHEMA truevalue_host TO \"{role}\""),
        format!(
            "GRANT EXECUTE ON FUNCTION truevalue_host.record_migration(TEXT, BIGINT, TEXT, TEXT, TEXT) TO \"{role}\""
        ),
        format!("GRANT EXECUTE ON FUNCTION truevalue_host.bind_org(TEXT, TEXT) TO \"{role}\""),
        format!("GRANT EXECUTE ON FUNCTION truevalue_host.current_org() TO \"{role}\""),
        format!(
            "GRANT EXECUTE ON FUNCTION truevalue_host.publish_event(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT) TO \"{role}\""
        ),
    ];
    for statement in &statements {
        sqlx::query(statement)
            .execute(&mut *transaction)
            .await
            .with_context(|| format!("provisioning {schema}: {statement}"))?;
    }
    let legacy = format!("\"{schema}\".truevalue_migrations");
    let moved: bool = sqlx::query_scalar(
        "SELECT to_regclass($1) IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM truevalue_host.migrations WHERE component = $2)",
    )
    .bind(&legacy)
    .bind(schema)
    .fetch_one(&mut *transaction)
    .await?;
    if moved {
        sqlx::query(&format!(
            "INSERT INTO truevalue_host.migrations (component, id, name, checksum, applied_at) \
             SELECT $1, id, name, checksum, applied_at FROM {legacy}"
        ))
        .bind(schema)
        .execute(&mut *transaction)
        .await
        .with_context(|| format!("moving the migration records out of {schema}"))?;
        sqlx::query(&format!("DROP TABLE {legacy}"))
            .execute(&mut *transaction)
            .await?;
        tracing::info!(
            component = schema,
            "moved the migration records to the host's schema"
        );
    }
    transaction.commit().await?;
    Ok(())
}

/// Undoes [`provision`] and the role's creation: the schema, the role's rights and the role,
/// and its stored password; unless a migration was recorded for it (another host sharing the
/// database installed the component meanwhile), and then it changes nothing. Identifiers were
/// checked to be plain by the caller.
pub async fn discard(admin: &PgPool, schema: &str, role: &str) -> anyhow::Result<()> {
    let mut transaction = admin.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut *transaction)
        .await?;
    let migrated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM truevalue_host.migrations WHERE component = $1)",
    )
    .bind(schema)
    .fetch_one(&mut *transaction)
    .await?;
    if migrated {
        return Ok(());
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut *transaction)
        .await
        .with_context(|| format!("dropping schema {schema}"))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *transaction)
            .await?;
    if exists {
        for statement in [
            format!("DROP OWNED BY \"{role}\""),
            format!("DROP ROLE \"{role}\""),
        ] {
            sqlx::query(&statement)
                .execute(&mut *transaction)
                .await
                .with_context(|| statement.clone())?;
        }
    }
    sqlx::query("DELETE FROM truevalue_host.component_roles WHERE role = $1")
        .bind(role)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(())
}
