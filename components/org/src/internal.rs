//! Routes for other components (`/org/internal`, reachable only through `services`; 404 for
//! anybody else). Their requests are not scoped to the organization they ask about (a login,
//! an invite accept), so `org_id` comes in the query: trusted because only the listed callers
//! get an answer.

use serde_json::json;
use truevalue_sdk::prelude::*;

fn required(request: &Request, name: &str) -> Result<String, Problem> {
    request
        .query(name)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Problem::field(name, "is required"))
}

#[derive(FromRow)]
struct Membership {
    org_id: String,
    slug: String,
    name: String,
}

/// `GET /org/internal/membership?user_id=U&org_slug=S` (or `&org_id=O`) [auth, permission]:
/// `{org_id, org_slug, org_name, plan}`; 404 when U is not a member or there is no such
/// organization.
pub fn membership(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&["auth", "permission"])?;
    let user_id = required(request, "user_id")?;
    let (column, value) = match (request.query("org_id"), request.query("org_slug")) {
        (Some(org_id), _) if !org_id.is_empty() => ("o.org_id", org_id),
        (_, Some(slug)) if !slug.is_empty() => ("o.slug", slug),
        _ => return Err(Problem::field("org_id", "or `org_slug` is required")),
    };
    let membership: Membership = db::query_one(
        &format!(
            "SELECT o.org_id, o.slug, o.name
               FROM organizations o JOIN members m ON m.org_id = o.org_id
              WHERE m.user_id = $1 AND {column} = $2"
        ),
        &[user_id.into(), value.into()],
    )?
    .ok_or_else(|| Problem::not_found("not a member of such an organization"))?;
    Response::json(
        200,
        &json!({ "org_id": membership.org_id, "org_slug": membership.slug,
                 "org_name": membership.name, "plan": "free" }),
    )
}

/// `GET /org/internal/teams?user_id=U&org_id=O` [permission]: `{team_ids}` U is in.
pub fn teams_of(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&["permission"])?;
    let user_id = required(request, "user_id")?;
    let org_id = required(request, "org_id")?;
    let team_ids: Vec<String> = db::query(
        "SELECT team_id FROM team_members WHERE org_id = $1 AND user_id = $2 ORDER BY team_id",
        &[org_id.into(), user_id.into()],
    )?
    .iter()
    .map(|row| row.get("team_id"))
    .collect::<Result<_, _>>()?;
    Response::json(200, &json!({ "team_ids": team_ids }))
}

#[derive(FromRow, serde::Serialize)]
struct Team {
    id: String,
    name: String,
}

/// `GET /org/internal/teams/{team_id}?org_id=O` [permission]: `{id, name}`, 404 unless the
/// team is O's.
pub fn team(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&["permission"])?;
    let org_id = required(request, "org_id")?;
    let team: Team = db::query_one(
        "SELECT id, name FROM teams WHERE org_id = $1 AND id = $2",
        &[org_id.into(), request.param("team_id")?.into()],
    )?
    .ok_or_else(|| Problem::not_found("no such team"))?;
    Response::json(200, &team)
}

/// `GET /org/internal/teams/{team_id}/members?org_id=O` [permission]: `{user_ids}` of the
/// team's members (whose rights change with the team's roles); 404 unless the team is O's.
pub fn team_members(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&["permission"])?;
    let org_id = required(request, "org_id")?;
    let team_id = request.param("team_id")?;
    let exists = !db::query(
        "SELECT id FROM teams WHERE org_id = $1 AND id = $2",
        &[org_id.as_str().into(), team_id.into()],
    )?
    .is_empty();
    if !exists {
        return Err(Problem::not_found("no such team"));
    }
    let user_ids: Vec<String> = db::query(
        "SELECT user_id FROM team_members WHERE org_id = $1 AND team_id = $2 ORDER BY user_id",
        &[org_id.as_str().into(), team_id.into()],
    )?
    .iter()
    .map(|row| row.get("user_id"))
    .collect::<Result<_, _>>()?;
    Response::json(200, &json!({ "user_ids": user_ids }))
}
