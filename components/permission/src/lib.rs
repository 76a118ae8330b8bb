//! The permission component: roles, who holds them, scoped checks, and each organization's
//! sign-in policy.
//!
//! Every row belongs to one organization (`org_id`) and every statement filters by it. On a
//! public route the organization is the caller's verified one (`req.org()`); only the internal
//! routes, which answer nobody but the components named in `require_caller`, take an `org_id`
//! from the query or body — a login or an invite acceptance is not yet scoped to that
//! organization.
//!
//! # Built-in roles
//!
//! | role | scope | permissions |
//! | --- | --- | --- |
//! | `admin` | org | `*` |
//! | `manager` | team | `*:read`, `members:read`, `teams:read`, `roles:read`, and every declared record permission |
//! | `member` | own | `members:read`, `teams:read`, and every declared record permission |
//! | `viewer` | org | `*:read` |
//!
//! A *record permission* is one a component declares in its policy (`permissions = [...]`) on
//! a resource the platform does not manage (`contacts:read`, `deals:write`, ...); the platform's
//! resources are `org`, `members`, `invites`, `teams`, `roles`, `permissions`, `billing`,
//! `audit` and `analytics`. So `manager` and `member` gain a plugin's permissions when the
//! plugin is loaded, and never hold `roles:write`, `members:write`, `org:write` or any other
//! platform write: those come only from `admin` or a custom role.
//!
//! **Flattening.** A token carries the union of the user's roles' permissions (their own
//! assignments and their teams'), sorted and deduplicated, as `/permission/internal/grants`
//! answers it: a `member` token holds `contacts:write`, because a member may write *some*
//! contacts. The scope says which: `GET /permission/api/check?permission=&owner_id=&team_id=`
//! answers for one record — scope `org` reaches every record, `team` the records of the
//! holder's teams and their own, `own` only their own. Scope narrows records only: a platform
//! permission held by a scoped role (`members:read`) reaches the whole organization, as the
//! token says.
//!
//! Custom roles have scope `org`, names of 2 to 40 of `a-z0-9_-` starting with a letter (not a
//! built-in's), and permissions that are `resource:action` strings or wildcards (`*`,
//! `resource:*`, `*:action`).
//!
//! # Rules
//! - Only `roles:write` manages roles and assignments; nobody gives, changes, takes or deletes
//!   a role whose permissions their own do not cover (no escalation, no demoting those above).
//! - The last user holding `admin` (themselves, not through a team) keeps it (409); a custom
//!   role that is still assigned cannot be deleted (409); built-ins cannot be changed (403).
//! - Every change to who holds what calls `services::rights_changed` for each affected user:
//!   their older tokens for the organization stop working at once, a refresh carries the new
//!   permissions.
//! - Every change to roles, to who holds them and to the sign-in policy is published on
//!   `permission.role.events` with its organization's id (see [`audit`]).

mod api;
mod audit;
mod catalog;
mod internal;
mod org;
mod roles;
mod store;

use truevalue_sdk::prelude::*;

use crate::roles::Role;

struct Permission;

impl App for Permission {
    fn router() -> Router {
        Router::new()
            .get("/permission/api/permissions", api::catalog)
            .get("/permission/api/roles", api::list_roles)
            .post("/permission/api/roles", api::create_role)
            .put("/permission/api/roles/{name}", api::update_role)
            .delete("/permission/api/roles/{name}", api::delete_role)
            .get("/permission/api/assignments", api::list_assignments)
            .post("/permission/api/assignments", api::create_assignment)
            .delete(
                "/permission/api/assignments/{user_id}/{role}",
                api::delete_assignment,
            )
            .delete(
                "/permission/api/teams/{team_id}/roles/{role}",
                api::delete_team_role,
            )
            .get("/permission/api/check", api::check)
            .get("/permission/api/policy", api::get_policy)
            .put("/permission/api/policy", api::put_policy)
            .get("/permission/internal/grants", internal::grants)
            .get("/permission/internal/team-grants", internal::team_grants)
            .post("/permission/internal/assignments", internal::assign)
            .get("/permission/internal/roles/{name}", internal::role)
            .post("/permission/internal/roles-of", internal::roles_of)
            .post("/permission/internal/forget", internal::forget)
            .get("/permission/internal/admins", internal::admins)
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![Migration {
            id: 1,
            name: "custom roles, assignments, sign-in policies",
            sql: store::SCHEMA,
        }]
    }
}

truevalue_sdk::component!(Permission);

/// What a user holds in an organization: their roles (own and their teams') and their teams.
struct Held {
    roles: Vec<Role>,
    teams: Vec<String>,
}

fn held(org_id: &str, user_id: &str) -> Result<Held, Problem> {
    let teams = org::teams_of(org_id, user_id)?;
    let names = store::role_names(org_id, user_id, &teams)?;
    Ok(Held {
        roles: resolve(org_id, &names)?,
        teams,
    })
}

/// The roles `names` name in the organization (built-in or custom).
fn resolve(org_id: &str, names: &[String]) -> Result<Vec<Role>, Problem> {
    let records = catalog::record_permissions();
    let custom = match names.iter().any(|n| !roles::BUILT_IN.contains(&n.as_str())) {
        true => store::custom_roles(org_id)?,
        false => Vec::new(),
    };
    Ok(names
        .iter()
        .filter_map(|name| {
            roles::built_in(name, &records)
                .or_else(|| custom.iter().find(|r| &r.name == name).cloned())
        })
        .collect())
}

/// Tells the gateways that these users' rights in the request's organization changed.
fn rights_changed<'a>(users: impl IntoIterator<Item = &'a String>) -> Result<(), Problem> {
    let mut users: Vec<&String> = users.into_iter().collect();
    users.sort();
    users.dedup();
    users
        .into_iter()
        .try_for_each(|user| services::rights_changed(user))
}

/// The users of `teams` and `users` together, for [`rights_changed`].
fn with_team_members(
    org_id: &str,
    users: Vec<String>,
    teams: &[String],
) -> Result<Vec<String>, Problem> {
    let mut all = users;
    for team in teams {
        all.extend(org::team_members(org_id, team)?);
    }
    Ok(all)
}
