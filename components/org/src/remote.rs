//! Calls to auth (accounts) and permission (roles), through `services`.
//!
//! Reads pass a callee's 4xx on as it is. Writes ([`assign`], [`forget`]) follow this
//! component's own writes, so any failure of theirs becomes a 5xx: the request's transaction
//! then rolls back and the two components do not disagree.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;
use truevalue_sdk::http::percent_encode as encode;
use truevalue_sdk::prelude::*;

/// How many accounts one call to auth asks for.
const ACCOUNTS_PER_CALL: usize = 200;

/// An account as auth shows it to other components.
#[derive(Deserialize, Clone)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    pub status: String,
}

/// The accounts of `ids`, by id, in one call to auth per 200 ids. An id auth does not know is
/// missing from the map.
pub fn accounts(ids: &[String]) -> Result<HashMap<String, Account>, Problem> {
    #[derive(Deserialize)]
    struct Accounts {
        items: Vec<Account>,
    }
    let mut found = HashMap::new();
    for chunk in ids.chunks(ACCOUNTS_PER_CALL) {
        let answer: Accounts = services::call_json(
            "auth",
            "POST",
            "/auth/internal/users",
            &json!({ "ids": chunk }),
        )?;
        found.extend(answer.items.into_iter().map(|a| (a.id.clone(), a)));
    }
    Ok(found)
}

/// The roles each of `user_ids` holds in the organization, in one call to permission.
pub fn roles_of(
    org_id: &str,
    user_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, Problem> {
    #[derive(Deserialize)]
    struct Holder {
        user_id: String,
        roles: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Holders {
        items: Vec<Holder>,
    }
    let answer: Holders = services::call_json(
        "permission",
        "POST",
        "/permission/internal/roles-of",
        &json!({ "org_id": org_id, "user_ids": user_ids }),
    )?;
    Ok(answer
        .items
        .into_iter()
        .map(|h| (h.user_id, h.roles))
        .collect())
}

/// The users holding `admin` in the organization.
pub fn admins(org_id: &str) -> Result<Vec<String>, Problem> {
    #[derive(Deserialize)]
    struct Admins {
        user_ids: Vec<String>,
    }
    let answer: Admins = services::get_json(
        "permission",
        &format!("/permission/internal/admins?org_id={}", encode(org_id)),
    )?;
    Ok(answer.user_ids)
}

/// A role of the organization and what it grants.
#[derive(Deserialize)]
pub struct Role {
    pub permissions: Vec<String>,
}

/// The role `name` of the organization, or none when it has no such role.
pub fn role(org_id: &str, name: &str) -> Result<Option<Role>, Problem> {
    let path = format!(
        "/permission/internal/roles/{}?org_id={}",
        encode(name),
        encode(org_id)
    );
    match services::get_json::<Role>("permission", &path) {
        Ok(role) => Ok(Some(role)),
        Err(problem) if problem.status == 404 => Ok(None),
        Err(problem) => Err(problem),
    }
}

/// The permissions `user_id` holds in the organization (their roles and their teams').
pub fn permissions_of(org_id: &str, user_id: &str) -> Result<Vec<String>, Problem> {
    let path = format!(
        "/permission/internal/grants?user_id={}&org_id={}",
        encode(user_id),
        encode(org_id)
    );
    Ok(services::get_json::<Granted>("permission", &path)?.permissions)
}

/// The permissions the roles given to `team_id` carry.
pub fn team_permissions(org_id: &str, team_id: &str) -> Result<Vec<String>, Problem> {
    let path = format!(
        "/permission/internal/team-grants?team_id={}&org_id={}",
        encode(team_id),
        encode(org_id)
    );
    Ok(services::get_json::<Granted>("permission", &path)?.permissions)
}

#[derive(Deserialize)]
struct Granted {
    permissions: Vec<String>,
}

/// 403 naming the first of `permissions` the caller does not hold: nobody gives, through a
/// team, or takes away, by removing a member, more than they hold themselves.
pub fn within(caller: &OrgCaller, permissions: &[String], what: &str) -> Result<(), Problem> {
    match permissions.iter().find(|p| !caller.allows(p)) {
        Some(beyond) => Err(Problem::forbidden(format!(
            "{what} `{beyond}`, which you do not hold"
        ))),
        None => Ok(()),
    }
}

/// Assigns `role` to `user_id` in the organization.
pub fn assign(org_id: &str, user_id: &str, role: &str) -> Result<(), Problem> {
    write(
        "POST",
        "/permission/internal/assignments",
        &json!({ "org_id": org_id, "user_id": user_id, "role": role }),
    )
}

/// What permission should forget about the organization.
pub enum Forget<'a> {
    /// A member's assignments (removed or left).
    User(&'a str),
    /// A team's assignments (team deleted).
    Team(&'a str),
    /// Everything (organization deleted).
    Organization,
}

/// Drops permission's data about a user, a team or the whole organization.
pub fn forget(org_id: &str, what: Forget<'_>) -> Result<(), Problem> {
    let body = match what {
        Forget::User(user_id) => json!({ "org_id": org_id, "user_id": user_id }),
        Forget::Team(team_id) => json!({ "org_id": org_id, "team_id": team_id }),
        Forget::Organization => json!({ "org_id": org_id }),
    };
    write("POST", "/permission/internal/forget", &body)
}

/// A write to permission after this component's own: any answer but a 2xx is a 5xx here.
fn write(method: &str, path: &str, body: &serde_json::Value) -> Result<(), Problem> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| Problem::internal(format!("could not encode a call to permission: {e}")))?;
    match services::call("permission", method, path, &bytes) {
        Ok(reply) if (200..300).contains(&reply.status) => Ok(()),
        Ok(reply) => Err(Problem::internal(format!(
            "permission answered {} to {method} {path}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ))),
        Err(services::CallError::Busy) => Err(Problem::new(
            503,
            "busy",
            "Service unavailable",
            "permission is busy; try again shortly",
        )),
        Err(error) => Err(Problem::internal(format!(
            "could not call permission {method} {path}: {error:?}"
        ))),
    }
}
