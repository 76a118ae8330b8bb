//! The internal routes (`/permission/internal`), reachable only through `services` from the
//! components each one names. They take `org_id` from the query or body: the request they
//! serve (a login, an invite acceptance) is not scoped to that organization yet.

use serde::Deserialize;
use serde_json::json;
use truevalue_sdk::prelude::*;

use crate::store::{self, Holder};
use crate::{audit, catalog, held, org, rights_changed, roles};

/// At most this many users in one `roles-of` call (a page of members is at most 200).
const MAX_USERS: usize = 1000;

/// An id from the query: 422 naming it when missing or malformed.
fn query_id(req: &Request, name: &str) -> Result<String, Problem> {
    req.query(name)
        .filter(|id| org::is_id(id))
        .ok_or_else(|| Problem::field(name, "must be an id"))
}

fn body_id(id: &str, name: &str) -> Result<(), Problem> {
    match org::is_id(id) {
        true => Ok(()),
        false => Err(Problem::field(name, "must be an id")),
    }
}

/// Whether this request acts for `org_id`, so that `services::rights_changed` (scoped by the
/// host to the request's organization) reaches it. A login or an invite acceptance acts for
/// none: the user holds no token for that organization yet, and nobody needs telling.
fn acts_for(req: &Request, org_id: &str) -> bool {
    req.context().org_id.as_deref() == Some(org_id)
}

/// `GET /permission/internal/grants?user_id=&org_id=` [auth, org]: what a token for the user
/// in that organization carries (org checks that a remover holds at least as much).
pub fn grants(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["auth", "org"])?;
    let (user_id, org_id) = (query_id(req, "user_id")?, query_id(req, "org_id")?);
    let held = held(&org_id, &user_id)?;
    let names: Vec<&str> = held.roles.iter().map(|r| r.name.as_str()).collect();
    Response::json(
        200,
        &json!({
            "roles": names,
            "permissions": roles::flatten(&held.roles),
            "require_mfa": store::require_mfa(&org_id)?,
        }),
    )
}

/// `GET /permission/internal/team-grants?team_id=&org_id=` [org]: the permissions the roles
/// given to a team carry, so that adding a member to it grants no more than the adder holds.
pub fn team_grants(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let (team_id, org_id) = (query_id(req, "team_id")?, query_id(req, "org_id")?);
    // No user has the empty id: only the team's own assignments match.
    let names = store::role_names(&org_id, "", std::slice::from_ref(&team_id))?;
    let roles = crate::resolve(&org_id, &names)?;
    Response::json(200, &json!({ "permissions": roles::flatten(&roles) }))
}

#[derive(Deserialize)]
struct Assignment {
    org_id: String,
    user_id: String,
    role: String,
}

/// `POST /permission/internal/assignments {org_id, user_id, role}` [org]: an organization's
/// creator becomes `admin`, an accepted invite gives its role. Giving a role held already
/// changes nothing and answers 201 all the same.
pub fn assign(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let body: Assignment = req.json()?;
    body_id(&body.org_id, "org_id")?;
    body_id(&body.user_id, "user_id")?;
    let records = catalog::record_permissions();
    let role = store::role_to_assign(&body.org_id, &body.role, &records)?.ok_or_else(|| {
        Problem::not_found(format!("no role `{}` in this organization", body.role))
    })?;
    let assigned = store::assign(&body.org_id, Holder::User(&body.user_id), &role.name, None)?;
    if let Some(assignment) = assigned {
        audit::publish(
            &body.org_id,
            "role.assigned",
            &body.user_id,
            &json!({ "assignment_id": assignment.id, "user_id": body.user_id,
                     "role": role.name }),
        )?;
    }
    if acts_for(req, &body.org_id) {
        rights_changed(std::slice::from_ref(&body.user_id))?;
    }
    Response::json(
        201,
        &json!({ "org_id": body.org_id, "user_id": body.user_id, "role": role.name }),
    )
}

/// `GET /permission/internal/roles/{name}?org_id=` [org]: whether an invite may name the role.
pub fn role(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let org_id = query_id(req, "org_id")?;
    let name = req.param("name")?;
    let role = store::role(&org_id, name, &catalog::record_permissions())?
        .ok_or_else(|| Problem::not_found(format!("no role `{name}` in this organization")))?;
    Response::json(
        200,
        &json!({ "name": role.name, "permissions": role.permissions }),
    )
}

#[derive(Deserialize)]
struct RolesOf {
    org_id: String,
    user_ids: Vec<String>,
}

/// `POST /permission/internal/roles-of {org_id, user_ids}` [org]: each user's own roles (not
/// their teams'), for the members list, in one call.
pub fn roles_of(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let body: RolesOf = req.json()?;
    body_id(&body.org_id, "org_id")?;
    if body.user_ids.len() > MAX_USERS {
        return Err(Problem::field(
            "user_ids",
            format!("must list at most {MAX_USERS} users"),
        ));
    }
    let items: Vec<serde_json::Value> = store::roles_of(&body.org_id, &body.user_ids)?
        .into_iter()
        .map(|(user_id, roles)| json!({ "user_id": user_id, "roles": roles }))
        .collect();
    Response::json(200, &json!({ "items": items }))
}

#[derive(Deserialize)]
struct Forget {
    org_id: String,
    user_id: Option<String>,
    team_id: Option<String>,
}

/// `POST /permission/internal/forget {org_id, user_id?, team_id?}` [org]: a member removed or
/// gone, a team deleted, or (with neither) the whole organization deleted.
///
/// Call it before the org component forgets the team's members: the members of a team that
/// loses its roles are told their rights changed, and only the org component knows them.
pub fn forget(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let body: Forget = req.json()?;
    body_id(&body.org_id, "org_id")?;
    let holder = match (&body.user_id, &body.team_id) {
        (Some(user), None) => Some(Holder::User(user)),
        (None, Some(team)) => Some(Holder::Team(team)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(Problem::field("team_id", "cannot come with `user_id`"));
        }
    };
    let forgotten = store::forget(&body.org_id, holder)?;
    // One event however many assignments went (a request publishes at most 100 events).
    let (subject, mut data) = match holder {
        Some(Holder::User(user)) => (user, json!({ "user_id": user, "reason": "member_removed" })),
        Some(Holder::Team(team)) => (team, json!({ "team_id": team, "reason": "team_deleted" })),
        None => (
            body.org_id.as_str(),
            json!({ "reason": "organization_deleted" }),
        ),
    };
    if forgotten.assignments > 0 || holder.is_none() {
        data["assignments"] = json!(forgotten.assignments);
        if holder.is_some() {
            data["roles"] = json!(forgotten.roles);
        }
        audit::publish(&body.org_id, "roles.forgotten", subject, &data)?;
    }
    let (users, teams) = (forgotten.users, forgotten.teams);
    if acts_for(req, &body.org_id) {
        let mut affected = users;
        affected.extend(body.user_id.clone());
        // The team may be gone from the org component already: its members are then told by
        // the org component's own removal, not here.
        for team in &teams {
            match org::team_members(&body.org_id, team) {
                Ok(members) => affected.extend(members),
                Err(problem) => log::warn(&format!("members of team {team}: {problem}")),
            }
        }
        rights_changed(&affected)?;
    }
    Ok(Response::no_content())
}

/// `GET /permission/internal/admins?org_id=` [org]: who holds `admin` themselves, for the
/// last-admin rule when a member is removed or leaves.
pub fn admins(req: &Request) -> Result<Response, Problem> {
    req.require_caller(&["org"])?;
    let org_id = query_id(req, "org_id")?;
    Response::json(200, &json!({ "user_ids": store::admins(&org_id, false)? }))
}
