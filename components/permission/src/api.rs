//! The public routes (`/permission/api`): the organization is always the caller's own.

use serde::Deserialize;
use serde_json::json;
use truevalue_sdk::prelude::*;

use crate::roles::{self, Check, Role};
use crate::store::{self, Holder};
use crate::{audit, catalog, held, org, rights_changed, with_team_members};

/// `GET /permission/api/permissions`: every permission known, the platform's and the loaded
/// components' declared ones, as `{permission, component}` sorted by permission.
pub fn catalog(req: &Request) -> Result<Response, Problem> {
    req.require("permissions:read")?;
    Response::json(
        200,
        &json!({ "items": catalog::entries(), "next_cursor": null }),
    )
}

/// `GET /permission/api/roles`: the built-ins (with the permissions they hold today) and the
/// organization's custom roles. A short list, answered whole.
pub fn list_roles(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:read")?;
    let mut items = roles::built_ins(&catalog::record_permissions());
    items.extend(store::custom_roles(&caller.org_id)?);
    Response::json(200, &json!({ "items": items, "next_cursor": null }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    permissions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    permissions: Vec<String>,
}

pub fn create_role(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let body: NewRole = req.json()?;
    let name = body.name.trim();
    let (named, permissions) = (
        roles::validate_name(name),
        catalog::validate_permissions(&body.permissions),
    );
    let permissions = match (named, permissions) {
        (Ok(()), Ok(permissions)) => permissions,
        (Err(mut problem), Err(more)) => {
            for error in more.errors {
                problem = problem.and_field(&error.field, error.message);
            }
            return Err(problem);
        }
        (Err(problem), _) | (_, Err(problem)) => return Err(problem),
    };
    not_above(&caller, &permissions, "create")?;
    if store::count_custom_roles(&caller.org_id)? >= store::MAX_CUSTOM_ROLES {
        return Err(Problem::conflict(format!(
            "this organization has {} custom roles, the most it may have",
            store::MAX_CUSTOM_ROLES
        )));
    }
    store::insert_role(&caller.org_id, name, &permissions)?;
    audit::publish(
        &caller.org_id,
        "role.created",
        name,
        &json!({ "role": name, "permissions": permissions }),
    )?;
    let role = Role {
        name: name.into(),
        permissions,
        scope: roles::Scope::Org,
        built_in: false,
    };
    Ok(Response::json(201, &role)?.header("location", format!("/permission/api/roles/{name}")))
}

pub fn update_role(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let name = req.param("name")?;
    not_built_in(name, "changed")?;
    let body: RoleChange = req.json()?;
    let current =
        store::custom_role_for_change(&caller.org_id, name)?.ok_or_else(|| no_role(name))?;
    let permissions = catalog::validate_permissions(&body.permissions)?;
    not_above(&caller, &current.permissions, "change")?;
    not_above(&caller, &permissions, "change")?;
    store::update_role(&caller.org_id, name, &permissions)?;
    // Everybody holding the role, themselves or through a team, gets tokens with the change.
    let (users, teams) = store::holders(&caller.org_id, name)?;
    audit::publish(
        &caller.org_id,
        "role.updated",
        name,
        &json!({ "role": name, "permissions": permissions,
                 "previous_permissions": current.permissions,
                 "users": users.len(), "teams": teams.len() }),
    )?;
    rights_changed(&with_team_members(&caller.org_id, users, &teams)?)?;
    Response::json(
        200,
        &Role {
            permissions,
            ..current
        },
    )
}

pub fn delete_role(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let name = req.param("name")?;
    not_built_in(name, "deleted")?;
    let current =
        store::custom_role_for_change(&caller.org_id, name)?.ok_or_else(|| no_role(name))?;
    not_above(&caller, &current.permissions, "delete")?;
    if store::role_in_use(&caller.org_id, name)? {
        return Err(Problem::conflict(format!(
            "the role `{name}` is still assigned; unassign it from every user and team first"
        )));
    }
    store::delete_role(&caller.org_id, name)?;
    audit::publish(
        &caller.org_id,
        "role.deleted",
        name,
        &json!({ "role": name, "permissions": current.permissions }),
    )?;
    Ok(Response::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssignment {
    user_id: Option<String>,
    team_id: Option<String>,
    role: String,
}

pub fn create_assignment(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let body: NewAssignment = req.json()?;
    let holder = match (&body.user_id, &body.team_id) {
        (Some(user), None) => Holder::User(user),
        (None, Some(team)) => Holder::Team(team),
        _ => {
            return Err(
                Problem::field("user_id", "or `team_id` is needed, not both")
                    .and_field("team_id", "or `user_id` is needed, not both"),
            );
        }
    };
    let records = catalog::record_permissions();
    let role = store::role_to_assign(&caller.org_id, &body.role, &records)?.ok_or_else(|| {
        Problem::field(
            "role",
            format!("names no role of this organization: {:?}", body.role),
        )
    })?;
    not_above(&caller, &role.permissions, "assign")?;
    let affected = match holder {
        Holder::User(user) => {
            if !org::is_member(&caller.org_id, user)? {
                return Err(Problem::not_found(format!(
                    "no member {user} in this organization"
                )));
            }
            vec![user.to_string()]
        }
        Holder::Team(team) => {
            if !org::team_exists(&caller.org_id, team)? {
                return Err(Problem::not_found(format!(
                    "no team {team} in this organization"
                )));
            }
            org::team_members(&caller.org_id, team)?
        }
    };
    let assignment = store::assign(&caller.org_id, holder, &role.name, Some(&caller.user_id))?
        .ok_or_else(|| {
            Problem::conflict(format!("the role `{}` is assigned already", role.name))
        })?;
    let (subject, holder_field) = match holder {
        Holder::User(user) => (user, "user_id"),
        Holder::Team(team) => (team, "team_id"),
    };
    let mut data = json!({ "assignment_id": assignment.id, "role": role.name });
    data[holder_field] = json!(subject);
    if let Holder::Team(_) = holder {
        data["members"] = json!(affected.len());
    }
    audit::publish(&caller.org_id, "role.assigned", subject, &data)?;
    rights_changed(&affected)?;
    Response::json(201, &assignment.view())
}

/// `GET /permission/api/assignments`: a page of the organization's assignments, newest last;
/// `?user_id=`, `?team_id=` and `?role=` narrow it.
pub fn list_assignments(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:read")?;
    let page = Page::from_request(req)?;
    let filters: Vec<(&str, String)> = ["user_id", "team_id", "role"]
        .into_iter()
        .filter_map(|column| req.query(column).map(|value| (column, value)))
        .collect();
    let rows = store::list_assignments(&caller.org_id, &filters, &page)?;
    let items: Vec<store::AssignmentView> = rows.into_iter().map(store::Assignment::view).collect();
    page.respond(items, |assignment| assignment.id.clone())
}

pub fn delete_assignment(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let (user, role) = (req.param("user_id")?, req.param("role")?);
    let role = known_role(&caller.org_id, role)?;
    not_above(&caller, &role.permissions, "unassign")?;
    if role.name == "admin" {
        let admins = store::admins(&caller.org_id, true)?;
        if admins.len() <= 1 && admins.iter().any(|a| a == user) {
            return Err(Problem::conflict(
                "this is the organization's last admin; make somebody else admin first",
            ));
        }
    }
    if !store::unassign(&caller.org_id, Holder::User(user), &role.name)? {
        return Err(no_assignment());
    }
    audit::publish(
        &caller.org_id,
        "role.unassigned",
        user,
        &json!({ "user_id": user, "role": role.name }),
    )?;
    rights_changed(&[user.to_string()])?;
    Ok(Response::no_content())
}

pub fn delete_team_role(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("roles:write")?;
    let (team, role) = (req.param("team_id")?, req.param("role")?);
    let role = known_role(&caller.org_id, role)?;
    not_above(&caller, &role.permissions, "unassign")?;
    if !store::unassign(&caller.org_id, Holder::Team(team), &role.name)? {
        return Err(no_assignment());
    }
    audit::publish(
        &caller.org_id,
        "role.unassigned",
        team,
        &json!({ "team_id": team, "role": role.name }),
    )?;
    rights_changed(&org::team_members(&caller.org_id, team)?)?;
    Ok(Response::no_content())
}

/// `GET /permission/api/check?permission=&owner_id=&team_id=`: whether the caller's roles
/// allow the permission on a record owned by `owner_id` or belonging to `team_id`.
pub fn check(req: &Request) -> Result<Response, Problem> {
    let caller = req.org()?;
    let permission = req.query("permission").unwrap_or_default();
    if !catalog::is_concrete(&permission) {
        return Err(Problem::field(
            "permission",
            "must be one `resource:action` permission",
        ));
    }
    let (owner_id, team_id) = (req.query("owner_id"), req.query("team_id"));
    let held = held(&caller.org_id, &caller.user_id)?;
    let check = Check {
        permission: &permission,
        owner_id: owner_id.as_deref().filter(|s| !s.is_empty()),
        team_id: team_id.as_deref().filter(|s| !s.is_empty()),
    };
    let allowed = roles::allows(&held.roles, &caller.user_id, &held.teams, &check);
    Response::json(200, &json!({ "allowed": allowed }))
}

pub fn get_policy(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("org:read")?;
    let require_mfa = store::require_mfa(&caller.org_id)?;
    Response::json(200, &json!({ "require_mfa": require_mfa }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    require_mfa: bool,
}

/// `PUT /permission/api/policy`: auth reads it when it mints a token for the organization,
/// so it applies from each member's next sign-in, switch or refresh.
pub fn put_policy(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("org:write")?;
    let body: Policy = req.json()?;
    let previous = store::require_mfa(&caller.org_id)?;
    store::set_require_mfa(&caller.org_id, body.require_mfa, &caller.user_id)?;
    audit::publish(
        &caller.org_id,
        "policy.updated",
        &caller.org_id,
        &json!({ "require_mfa": body.require_mfa, "previous_require_mfa": previous }),
    )?;
    Response::json(200, &json!({ "require_mfa": body.require_mfa }))
}

/// 403 unless the caller's own permissions cover `permissions`.
fn not_above(caller: &OrgCaller, permissions: &[String], verb: &str) -> Result<(), Problem> {
    let missing: Vec<&str> = permissions
        .iter()
        .filter(|p| !roles::covers(&caller.permissions, std::slice::from_ref(p)))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Problem::new(
        403,
        "role-above-caller",
        "Forbidden",
        format!(
            "you may only {verb} a role whose permissions you hold yourself; you do not hold {}",
            missing
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

fn not_built_in(name: &str, verb: &str) -> Result<(), Problem> {
    match roles::BUILT_IN.contains(&name) {
        true => Err(Problem::new(
            403,
            "built-in-role",
            "Forbidden",
            format!(
                "`{name}` is a built-in role and cannot be {verb}; create a custom role instead"
            ),
        )),
        false => Ok(()),
    }
}

fn known_role(org_id: &str, name: &str) -> Result<Role, Problem> {
    store::role(org_id, name, &catalog::record_permissions())?.ok_or_else(no_assignment)
}

fn no_role(name: &str) -> Problem {
    Problem::not_found(format!("no role `{name}` in this organization"))
}

fn no_assignment() -> Problem {
    Problem::not_found("no such assignment in this organization")
}
