//! What this component asks the org component (its `/org/internal` routes).
//!
//! Ids reach these paths only after [`is_id`] accepted them, so they need no escaping.

use serde::Deserialize;
use truevalue_sdk::prelude::*;

/// An id as the platform makes them (UUIDs); anything else names nothing and is never sent
/// on, so it cannot smuggle another query parameter into a call.
pub fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `user_id` is a member of the organization.
pub fn is_member(org_id: &str, user_id: &str) -> Result<bool, Problem> {
    if !is_id(user_id) {
        return Ok(false);
    }
    let answer: Result<serde_json::Value, Problem> = services::get_json(
        "org",
        &format!("/org/internal/membership?user_id={user_id}&org_id={org_id}"),
    );
    found(answer)
}

/// Whether the team exists in the organization.
pub fn team_exists(org_id: &str, team_id: &str) -> Result<bool, Problem> {
    if !is_id(team_id) {
        return Ok(false);
    }
    let answer: Result<serde_json::Value, Problem> = services::get_json(
        "org",
        &format!("/org/internal/teams/{team_id}?org_id={org_id}"),
    );
    found(answer)
}

fn found(answer: Result<serde_json::Value, Problem>) -> Result<bool, Problem> {
    match answer {
        Ok(_) => Ok(true),
        Err(problem) if problem.status == 404 => Ok(false),
        Err(problem) => Err(problem),
    }
}

/// The teams `user_id` is in.
pub fn teams_of(org_id: &str, user_id: &str) -> Result<Vec<String>, Problem> {
    #[derive(Deserialize)]
    struct Teams {
        team_ids: Vec<String>,
    }
    if !is_id(user_id) {
        return Ok(Vec::new());
    }
    let teams: Teams = services::get_json(
        "org",
        &format!("/org/internal/teams?user_id={user_id}&org_id={org_id}"),
    )
    .map_err(unexpected)?;
    Ok(teams.team_ids)
}

/// The members of a team (`GET /org/internal/teams/{team_id}/members`).
pub fn team_members(org_id: &str, team_id: &str) -> Result<Vec<String>, Problem> {
    #[derive(Deserialize)]
    struct Members {
        user_ids: Vec<String>,
    }
    if !is_id(team_id) {
        return Ok(Vec::new());
    }
    let members: Members = services::get_json(
        "org",
        &format!("/org/internal/teams/{team_id}/members?org_id={org_id}"),
    )
    .map_err(unexpected)?;
    Ok(members.user_ids)
}

/// A failed lookup the client cannot act on is this component's failure: a 500, so the
/// request's writes roll back rather than stand half done (a role given, nobody told).
fn unexpected(problem: Problem) -> Problem {
    match problem.status {
        500.. => problem,
        _ => Problem::internal(format!("org answered {problem}")),
    }
}
