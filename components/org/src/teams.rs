//! Teams of an organization and their members. Roles can be assigned to teams (in permission),
//! so every change of a team's members is a change of those members' rights.

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::{now, rfc3339};

use crate::audit::{self, MEMBERS, ORGANIZATIONS};
use crate::remote::{self, Forget};
use crate::validate;
use crate::{is_member, tenant_with};

#[derive(FromRow)]
struct TeamRow {
    id: String,
    name: String,
    created_at: i64,
}

#[derive(Serialize)]
struct Team {
    id: String,
    name: String,
    created_at: String,
}

impl From<TeamRow> for Team {
    fn from(row: TeamRow) -> Self {
        Team {
            id: row.id,
            name: row.name,
            created_at: rfc3339(row.created_at),
        }
    }
}

/// The team `{id}` of the organization; 404 when it has none by that id.
fn find(org_id: &str, team_id: &str) -> Result<TeamRow, Problem> {
    db::query_one(
        "SELECT id, name, created_at FROM teams WHERE org_id = $1 AND id = $2",
        &[org_id.into(), team_id.into()],
    )?
    .ok_or_else(|| Problem::not_found("no such team"))
}

#[derive(Deserialize)]
struct NewTeam {
    name: String,
}

/// `POST /org/api/organizations/{slug}/teams` `{name}` (`teams:write`); names are unique in
/// an organization.
pub fn create(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "teams:write")?;
    let body: NewTeam = request.json()?;
    let name = validate::name(&body.name).map_err(|m| Problem::field("name", m))?;
    let row = TeamRow {
        id: truevalue_sdk::id::new(),
        name,
        created_at: now(),
    };
    db::execute(
        "INSERT INTO teams (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
        &[
            row.id.as_str().into(),
            organization.org_id.as_str().into(),
            row.name.as_str().into(),
            row.created_at.into(),
        ],
    )
    .on_conflict(|| Problem::conflict(format!("a team named `{}` exists", body.name.trim())))?;
    audit::publish(
        &organization.org_id,
        ORGANIZATIONS,
        "team.created",
        &row.id,
        &json!({ "team_id": row.id, "name": row.name }),
    )?;
    Response::json(201, &Team::from(row))
}

/// `GET /org/api/organizations/{slug}/teams` (`teams:read`), oldest first.
pub fn list(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "teams:read")?;
    let page = Page::from_request(request)?;
    let rows: Vec<TeamRow> = db::query_as(
        "SELECT id, name, created_at FROM teams WHERE org_id = $1 AND id > $2
          ORDER BY id LIMIT $3",
        &[
            organization.org_id.as_str().into(),
            page.after.clone().unwrap_or_default().into(),
            page.fetch().into(),
        ],
    )?;
    let teams = rows.into_iter().map(Team::from).collect();
    page.respond(teams, |team: &Team| team.id.clone())
}

/// `DELETE /org/api/organizations/{slug}/teams/{id}` (`teams:write`): permission forgets the
/// team's roles, and its members' rights change.
pub fn delete(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "teams:write")?;
    let org_id = organization.org_id.as_str();
    let team = find(org_id, request.param("id")?)?;
    let members = team_member_ids(org_id, &team.id)?;
    db::execute(
        "DELETE FROM team_members WHERE org_id = $1 AND team_id = $2",
        &[org_id.into(), team.id.as_str().into()],
    )?;
    db::execute(
        "DELETE FROM teams WHERE org_id = $1 AND id = $2",
        &[org_id.into(), team.id.as_str().into()],
    )?;
    remote::forget(org_id, Forget::Team(&team.id))?;
    for user_id in &members {
        services::rights_changed(user_id)?;
    }
    audit::publish(
        org_id,
        ORGANIZATIONS,
        "team.deleted",
        &team.id,
        &json!({ "team_id": team.id, "name": team.name, "members": members.len() }),
    )?;
    Ok(Response::no_content())
}

fn team_member_ids(org_id: &str, team_id: &str) -> Result<Vec<String>, Problem> {
    Ok(db::query(
        "SELECT user_id FROM team_members WHERE org_id = $1 AND team_id = $2",
        &[org_id.into(), team_id.into()],
    )?
    .iter()
    .map(|row| row.get("user_id"))
    .collect::<Result<_, _>>()?)
}

#[derive(FromRow)]
struct TeamMemberRow {
    user_id: String,
    added_at: i64,
}

#[derive(Serialize)]
struct TeamMember {
    team_id: String,
    user_id: String,
    added_at: String,
}

/// `GET /org/api/organizations/{slug}/teams/{id}/members` (`teams:read`), by user id.
pub fn members(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "teams:read")?;
    let org_id = organization.org_id.as_str();
    let team = find(org_id, request.param("id")?)?;
    let page = Page::from_request(request)?;
    let rows: Vec<TeamMemberRow> = db::query_as(
        "SELECT user_id, added_at FROM team_members
          WHERE org_id = $1 AND team_id = $2 AND user_id > $3
          ORDER BY user_id LIMIT $4",
        &[
            org_id.into(),
            team.id.as_str().into(),
            page.after.clone().unwrap_or_default().into(),
            page.fetch().into(),
        ],
    )?;
    let items = rows
        .into_iter()
        .map(|row| TeamMember {
            team_id: team.id.clone(),
            user_id: row.user_id,
            added_at: rfc3339(row.added_at),
        })
        .collect();
    page.respond(items, |member: &TeamMember| member.user_id.clone())
}

#[derive(Deserialize)]
struct NewTeamMember {
    user_id: String,
}

/// `POST /org/api/organizations/{slug}/teams/{id}/members` `{user_id}` (`teams:write`): the
/// user must be a member of the organization (422 otherwise).
pub fn add_member(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant_with(request, "teams:write")?;
    let org_id = organization.org_id.as_str();
    let team = find(org_id, request.param("id")?)?;
    let body: NewTeamMember = request.json()?;
    let user_id = body.user_id.trim();
    if !is_member(org_id, user_id)? {
        return Err(Problem::field(
            "user_id",
            "is not a member of this organization",
        ));
    }
    let granted = remote::team_permissions(org_id, &team.id)?;
    remote::within(&caller, &granted, "the team's roles grant")?;
    let added_at = now();
    db::execute(
        "INSERT INTO team_members (org_id, team_id, user_id, added_at) VALUES ($1, $2, $3, $4)",
        &[
            org_id.into(),
            team.id.as_str().into(),
            user_id.into(),
            added_at.into(),
        ],
    )
    .on_conflict(|| Problem::conflict("this member is in the team already"))?;
    services::rights_changed(user_id)?;
    audit::publish(
        org_id,
        MEMBERS,
        "team.member_added",
        user_id,
        &json!({ "team_id": team.id, "user_id": user_id }),
    )?;
    Response::json(
        201,
        &TeamMember {
            team_id: team.id,
            user_id: user_id.to_string(),
            added_at: rfc3339(added_at),
        },
    )
}

/// `DELETE /org/api/organizations/{slug}/teams/{id}/members/{user_id}` (`teams:write`).
pub fn remove_member(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "teams:write")?;
    let org_id = organization.org_id.as_str();
    let team = find(org_id, request.param("id")?)?;
    let user_id = request.param("user_id")?;
    let removed = db::execute(
        "DELETE FROM team_members WHERE org_id = $1 AND team_id = $2 AND user_id = $3",
        &[org_id.into(), team.id.as_str().into(), user_id.into()],
    )?;
    if removed == 0 {
        return Err(Problem::not_found("no such member in this team"));
    }
    services::rights_changed(user_id)?;
    audit::publish(
        org_id,
        MEMBERS,
        "team.member_removed",
        user_id,
        &json!({ "team_id": team.id, "user_id": user_id }),
    )?;
    Ok(Response::no_content())
}
