//! The component's tables, and every statement on them. Each statement is scoped by `org_id`.
//!
//! Both engines run each request in one transaction; SQLite's is `BEGIN IMMEDIATE`, so writers
//! take turns. On PostgreSQL (read committed) the checks that must hold at commit — the last
//! admin, a role in use — first lock the rows they read (`FOR UPDATE` / `FOR SHARE`), so two
//! requests cannot both pass them on the same data.

use serde::Serialize;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::{now, rfc3339};

use crate::roles::{self, Role, Scope};

/// Both engines accept this SQL as it is: text ids, Unix seconds, integer flags.
pub const SCHEMA: &str = "
CREATE TABLE roles (
    org_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Sorted, separated by single spaces (a permission has no spaces).
    permissions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);
-- A role given to a user or to a team (whose members then hold it), never both.
CREATE TABLE assignments (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT,
    team_id TEXT,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    CHECK ((user_id IS NULL) <> (team_id IS NULL)),
    UNIQUE (org_id, user_id, role),
    UNIQUE (org_id, team_id, role)
);
CREATE INDEX assignments_by_role ON assignments (org_id, role);
-- The organization's sign-in policy; no row means the defaults.
CREATE TABLE org_policies (
    org_id TEXT PRIMARY KEY,
    require_mfa BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT
);
";

/// How many custom roles one organization may define.
pub const MAX_CUSTOM_ROLES: i64 = 100;

fn postgres() -> bool {
    db::dialect() == Dialect::Postgres
}

/// `FOR UPDATE`/`FOR SHARE` on PostgreSQL; SQLite has no row locks and needs none.
fn lock(mode: &str) -> &str {
    if postgres() { mode } else { "" }
}

// ---------------------------------------------------------------------------------------------
// Roles

#[derive(FromRow)]
struct CustomRow {
    name: String,
    permissions: String,
}

impl CustomRow {
    fn into_role(self) -> Role {
        Role {
            name: self.name,
            permissions: split(&self.permissions),
            scope: Scope::Org,
            built_in: false,
        }
    }
}

fn split(permissions: &str) -> Vec<String> {
    permissions.split_whitespace().map(String::from).collect()
}

/// The organization's custom roles, by name.
pub fn custom_roles(org_id: &str) -> Result<Vec<Role>, Problem> {
    let rows: Vec<CustomRow> = db::query_as(
        "SELECT name, permissions FROM roles WHERE org_id = $1 ORDER BY name",
        &[org_id.into()],
    )?;
    Ok(rows.into_iter().map(CustomRow::into_role).collect())
}

/// A custom role; with `lock`, its row stays locked until the request ends on PostgreSQL
/// (`FOR SHARE` to use it, `FOR UPDATE` to change or delete it).
fn custom_role(org_id: &str, name: &str, mode: &str) -> Result<Option<Role>, Problem> {
    let row: Option<CustomRow> = db::query_one(
        &format!(
            "SELECT name, permissions FROM roles WHERE org_id = $1 AND name = $2 {}",
            lock(mode)
        ),
        &[org_id.into(), name.into()],
    )?;
    Ok(row.map(CustomRow::into_role))
}

/// The role `name` of the organization, built-in or custom; `None` when it has none.
pub fn role(org_id: &str, name: &str, records: &[String]) -> Result<Option<Role>, Problem> {
    match roles::built_in(name, records) {
        Some(role) => Ok(Some(role)),
        None => custom_role(org_id, name, ""),
    }
}

/// Like [`role`], and a custom role's row is share-locked so that it cannot be deleted before
/// the assignment that uses it is written.
pub fn role_to_assign(
    org_id: &str,
    name: &str,
    records: &[String],
) -> Result<Option<Role>, Problem> {
    match roles::built_in(name, records) {
        Some(role) => Ok(Some(role)),
        None => custom_role(org_id, name, "FOR SHARE"),
    }
}

/// A custom role, row-locked for a change or a delete.
pub fn custom_role_for_change(org_id: &str, name: &str) -> Result<Option<Role>, Problem> {
    custom_role(org_id, name, "FOR UPDATE")
}

pub fn count_custom_roles(org_id: &str) -> Result<i64, Problem> {
    let rows = db::query(
        "SELECT COUNT(*) AS n FROM roles WHERE org_id = $1",
        &[org_id.into()],
    )?;
    Ok(rows.first().map(|r| r.get("n")).transpose()?.unwrap_or(0))
}

pub fn insert_role(org_id: &str, name: &str, permissions: &[String]) -> Result<(), Problem> {
    let now = now();
    db::execute(
        "INSERT INTO roles (org_id, name, permissions, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4)",
        &[
            org_id.into(),
            name.into(),
            permissions.join(" ").into(),
            now.into(),
        ],
    )
    .on_conflict(|| Problem::conflict(format!("a role named `{name}` exists already")))?;
    Ok(())
}

pub fn update_role(org_id: &str, name: &str, permissions: &[String]) -> Result<(), Problem> {
    db::execute(
        "UPDATE roles SET permissions = $3, updated_at = $4 WHERE org_id = $1 AND name = $2",
        &[
            org_id.into(),
            name.into(),
            permissions.join(" ").into(),
            now().into(),
        ],
    )?;
    Ok(())
}

pub fn delete_role(org_id: &str, name: &str) -> Result<(), Problem> {
    db::execute(
        "DELETE FROM roles WHERE org_id = $1 AND name = $2",
        &[org_id.into(), name.into()],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Assignments

/// One assignment row: a role given to a user or to a team.
#[derive(Debug, Clone, FromRow)]
pub struct Assignment {
    pub id: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub role: String,
    pub created_at: i64,
}

/// An assignment as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AssignmentView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    pub role: String,
    pub created_at: String,
}

impl Assignment {
    pub fn view(self) -> AssignmentView {
        AssignmentView {
            id: self.id,
            user_id: self.user_id,
            team_id: self.team_id,
            role: self.role,
            created_at: rfc3339(self.created_at),
        }
    }
}

/// Who a role is given to.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    User(&'a str),
    Team(&'a str),
}

impl Holder<'_> {
    fn column(&self) -> &'static str {
        match self {
            Holder::User(_) => "user_id",
            Holder::Team(_) => "team_id",
        }
    }

    fn id(&self) -> &str {
        match self {
            Holder::User(id) | Holder::Team(id) => id,
        }
    }
}

/// Gives `role` to `holder`; `Ok(None)` when the holder has it already.
pub fn assign(
    org_id: &str,
    holder: Holder,
    role: &str,
    by: Option<&str>,
) -> Result<Option<Assignment>, Problem> {
    let assignment = Assignment {
        id: truevalue_sdk::id::new(),
        user_id: matches!(holder, Holder::User(_)).then(|| holder.id().to_string()),
        team_id: matches!(holder, Holder::Team(_)).then(|| holder.id().to_string()),
        role: role.into(),
        created_at: now(),
    };
    let written = db::execute(
        "INSERT INTO assignments (id, org_id, user_id, team_id, role, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            assignment.id.as_str().into(),
            org_id.into(),
            assignment.user_id.clone().into(),
            assignment.team_id.clone().into(),
            role.into(),
            assignment.created_at.into(),
            by.into(),
        ],
    )?;
    Ok((written == 1).then_some(assignment))
}

/// Takes `role` from `holder`; whether they had it.
pub fn unassign(org_id: &str, holder: Holder, role: &str) -> Result<bool, Problem> {
    let removed = db::execute(
        &format!(
            "DELETE FROM assignments WHERE org_id = $1 AND {} = $2 AND role = $3",
            holder.column()
        ),
        &[org_id.into(), holder.id().into(), role.into()],
    )?;
    Ok(removed > 0)
}

/// The users holding `admin` themselves (not through a team), row-locked on PostgreSQL with
/// `lock_rows` so that two removals cannot both see another admin left.
pub fn admins(org_id: &str, lock_rows: bool) -> Result<Vec<String>, Problem> {
    let rows = db::query(
        &format!(
            "SELECT user_id FROM assignments
             WHERE org_id = $1 AND role = 'admin' AND user_id IS NOT NULL ORDER BY user_id {}",
            if lock_rows { lock("FOR UPDATE") } else { "" }
        ),
        &[org_id.into()],
    )?;
    Ok(rows
        .iter()
        .map(|row| row.get("user_id"))
        .collect::<Result<_, _>>()?)
}

/// The names of the roles given to the user and to any of `teams`, sorted, once each.
pub fn role_names(org_id: &str, user_id: &str, teams: &[String]) -> Result<Vec<String>, Problem> {
    let mut params: Vec<Value> = vec![org_id.into(), user_id.into()];
    let mut sql =
        String::from("SELECT DISTINCT role FROM assignments WHERE org_id = $1 AND (user_id = $2");
    if !teams.is_empty() {
        sql.push_str(" OR team_id IN (");
        sql.push_str(&placeholders(3, teams.len()));
        sql.push(')');
        params.extend(teams.iter().map(|t| Value::from(t.as_str())));
    }
    sql.push_str(") ORDER BY role");
    let rows = db::query(&sql, &params)?;
    Ok(rows
        .iter()
        .map(|row| row.get("role"))
        .collect::<Result<_, _>>()?)
}

/// `$from, $from+1, ...`, `n` of them.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each user's own roles (not those of their teams), in the order of `user_ids`.
pub fn roles_of(org_id: &str, user_ids: &[String]) -> Result<Vec<(String, Vec<String>)>, Problem> {
    let mut result: Vec<(String, Vec<String>)> =
        user_ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    if user_ids.is_empty() {
        return Ok(result);
    }
    let mut params: Vec<Value> = vec![org_id.into()];
    params.extend(user_ids.iter().map(|id| Value::from(id.as_str())));
    let rows = db::query(
        &format!(
            "SELECT user_id, role FROM assignments WHERE org_id = $1 AND user_id IN ({})
             ORDER BY role",
            placeholders(2, user_ids.len())
        ),
        &params,
    )?;
    for row in &rows {
        let (user_id, role): (String, String) = (row.get("user_id")?, row.get("role")?);
        for (_, roles) in result.iter_mut().filter(|(id, _)| *id == user_id) {
            roles.push(role.clone());
        }
    }
    Ok(result)
}

/// Whether any user or team holds `role`.
pub fn role_in_use(org_id: &str, role: &str) -> Result<bool, Problem> {
    let rows = db::query(
        "SELECT id FROM assignments WHERE org_id = $1 AND role = $2 LIMIT 1",
        &[org_id.into(), role.into()],
    )?;
    Ok(!rows.is_empty())
}

/// Who holds `role`: the users given it and the teams given it.
pub fn holders(org_id: &str, role: &str) -> Result<(Vec<String>, Vec<String>), Problem> {
    let rows: Vec<Assignment> = db::query_as(
        "SELECT id, user_id, team_id, role, created_at FROM assignments
         WHERE org_id = $1 AND role = $2 ORDER BY id",
        &[org_id.into(), role.into()],
    )?;
    Ok(split_holders(rows))
}

fn split_holders(rows: Vec<Assignment>) -> (Vec<String>, Vec<String>) {
    let (mut users, mut teams) = (Vec::new(), Vec::new());
    for row in rows {
        match (row.user_id, row.team_id) {
            (Some(user), _) => users.push(user),
            (None, Some(team)) => teams.push(team),
            (None, None) => {}
        }
    }
    users.sort();
    users.dedup();
    teams.sort();
    teams.dedup();
    (users, teams)
}

/// A page of the organization's assignments, optionally of one user, team or role.
pub fn list_assignments(
    org_id: &str,
    filters: &[(&str, String)],
    page: &Page,
) -> Result<Vec<Assignment>, Problem> {
    let mut sql = String::from(
        "SELECT id, user_id, team_id, role, created_at FROM assignments
         WHERE org_id = $1 AND id > $2",
    );
    let mut params: Vec<Value> = vec![org_id.into(), page.after.clone().unwrap_or_default().into()];
    for (column, value) in filters {
        params.push(value.as_str().into());
        sql.push_str(&format!(" AND {column} = ${}", params.len()));
    }
    params.push(page.fetch().into());
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
    Ok(db::query_as(&sql, &params)?)
}

/// What [`forget`] dropped.
pub struct Forgotten {
    /// The users and the teams whose assignments were dropped.
    pub users: Vec<String>,
    pub teams: Vec<String>,
    /// The roles those assignments gave, sorted, once each.
    pub roles: Vec<String>,
    /// How many assignments were dropped.
    pub assignments: usize,
}

/// Drops the assignments of a user, of a team, or every row of the organization.
pub fn forget(org_id: &str, holder: Option<Holder>) -> Result<Forgotten, Problem> {
    let (filter, params): (String, Vec<Value>) = match holder {
        Some(holder) => (
            format!(" AND {} = $2", holder.column()),
            vec![org_id.into(), holder.id().into()],
        ),
        None => (String::new(), vec![org_id.into()]),
    };
    let rows: Vec<Assignment> = db::query_as(
        &format!(
            "SELECT id, user_id, team_id, role, created_at FROM assignments
             WHERE org_id = $1{filter}"
        ),
        &params,
    )?;
    db::execute(
        &format!("DELETE FROM assignments WHERE org_id = $1{filter}"),
        &params,
    )?;
    if holder.is_none() {
        db::execute("DELETE FROM roles WHERE org_id = $1", &[org_id.into()])?;
        db::execute(
            "DELETE FROM org_policies WHERE org_id = $1",
            &[org_id.into()],
        )?;
    }
    let assignments = rows.len();
    let mut roles: Vec<String> = rows.iter().map(|row| row.role.clone()).collect();
    roles.sort();
    roles.dedup();
    let (users, teams) = split_holders(rows);
    Ok(Forgotten {
        users,
        teams,
        roles,
        assignments,
    })
}

// ---------------------------------------------------------------------------------------------
// The organization's sign-in policy

pub fn require_mfa(org_id: &str) -> Result<bool, Problem> {
    let rows = db::query(
        "SELECT require_mfa FROM org_policies WHERE org_id = $1",
        &[org_id.into()],
    )?;
    Ok(rows
        .first()
        .map(|row| row.get::<bool>("require_mfa"))
        .transpose()?
        .unwrap_or(false))
}

pub fn set_require_mfa(org_id: &str, require: bool, by: &str) -> Result<(), Problem> {
    db::execute(
        "INSERT INTO org_policies (org_id, require_mfa, updated_at, updated_by)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (org_id) DO UPDATE SET require_mfa = excluded.require_mfa,
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        &[
            org_id.into(),
            i64::from(require).into(),
            now().into(),
            by.into(),
        ],
    )?;
    Ok(())
}
