//! Members: the list (with accounts from auth and roles from permission), removal, leaving,
//! and each member's profile (title, phone, time zone).

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::rfc3339;

use crate::audit::{self, MEMBERS};
use crate::remote::{self, Forget};
use crate::validate::{self, Errors};
use crate::{is_member, split_key, tenant, tenant_with};

#[derive(FromRow)]
struct MemberRow {
    user_id: String,
    joined_at: i64,
    title: Option<String>,
    phone: Option<String>,
    time_zone: Option<String>,
}

#[derive(Serialize)]
struct Member {
    user_id: String,
    /// None when auth no longer knows the account.
    email: Option<String>,
    name: Option<String>,
    status: String,
    roles: Vec<String>,
    joined_at: String,
    title: Option<String>,
    phone: Option<String>,
    time_zone: Option<String>,
    #[serde(skip)]
    key: String,
}

/// `members.listed`: who read the member list (the actor) and how many members it showed.
fn listed(org_id: &str, count: usize) -> Result<(), Problem> {
    audit::publish(
        org_id,
        MEMBERS,
        "members.listed",
        org_id,
        &json!({ "org_id": org_id, "count": count }),
    )
}

/// `GET /org/api/organizations/{slug}/members` (`members:read`): in the order they joined, a
/// page at a time. One call to auth and one to permission per page, whatever its size.
/// Every page read is published (`members.listed`): the list holds names and addresses.
pub fn list(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "members:read")?;
    let org_id = organization.org_id.as_str();
    let page = Page::from_request(request)?;
    let (after_joined, after_user) = match &page.after {
        Some(key) => split_key(key)?,
        None => (i64::MIN, String::new()),
    };
    let mut rows: Vec<MemberRow> = db::query_as(
        "SELECT user_id, joined_at, title, phone, time_zone FROM members
          WHERE org_id = $1 AND (joined_at > $2 OR (joined_at = $2 AND user_id > $3))
          ORDER BY joined_at, user_id LIMIT $4",
        &[
            org_id.into(),
            after_joined.into(),
            after_user.into(),
            page.fetch().into(),
        ],
    )?;
    if rows.is_empty() {
        listed(org_id, 0)?;
        return page.respond(Vec::<Member>::new(), |member| member.key.clone());
    }
    // The extra row only tells that there is a next page: it needs no account or roles.
    let shown = rows
        .len()
        .min(usize::try_from(page.limit).unwrap_or(usize::MAX));
    let ids: Vec<String> = rows[..shown].iter().map(|r| r.user_id.clone()).collect();
    let mut accounts = remote::accounts(&ids)?;
    let mut roles = remote::roles_of(org_id, &ids)?;
    listed(org_id, shown)?;
    let members = rows
        .drain(..)
        .map(|row| {
            let account = accounts.remove(&row.user_id);
            Member {
                key: format!("{}.{}", row.joined_at, row.user_id),
                roles: roles.remove(&row.user_id).unwrap_or_default(),
                status: account
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |a| a.status.clone()),
                email: account.as_ref().map(|a| a.email.clone()),
                name: account.map(|a| a.name),
                joined_at: rfc3339(row.joined_at),
                user_id: row.user_id,
                title: row.title,
                phone: row.phone,
                time_zone: row.time_zone,
            }
        })
        .collect();
    page.respond(members, |member| member.key.clone())
}

/// `DELETE /org/api/organizations/{slug}/members/{user_id}` (`members:write`).
pub fn remove(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant_with(request, "members:write")?;
    let user_id = request.param("user_id")?;
    if user_id != caller.user_id && is_member(&organization.org_id, user_id)? {
        let held = remote::permissions_of(&organization.org_id, user_id)?;
        remote::within(&caller, &held, "this member holds")?;
    }
    remove_member(&organization.org_id, user_id, "removed")?;
    log::info(&format!(
        "{user_id} removed from {} by {}",
        organization.org_id, caller.user_id
    ));
    Ok(Response::no_content())
}

/// `POST /org/api/organizations/{slug}/leave`: the caller leaves the organization.
pub fn leave(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant(request)?;
    remove_member(&organization.org_id, &caller.user_id, "left")?;
    Ok(Response::no_content())
}

/// Removes a member with their team memberships, has permission forget their roles there and
/// ends their tokens for the organization; publishes `member.removed` with `reason` (`removed`
/// or `left`). 404 for a non-member; 409 for the last admin.
fn remove_member(org_id: &str, user_id: &str, reason: &str) -> Result<(), Problem> {
    if !is_member(org_id, user_id)? {
        return Err(Problem::not_found("no such member"));
    }
    let admins = remote::admins(org_id)?;
    if admins.iter().any(|a| a == user_id) && admins.iter().all(|a| a == user_id) {
        return Err(Problem::conflict(
            "this is the organization's last admin: make another member admin first, \
             or delete the organization",
        ));
    }
    for table in ["team_members", "members"] {
        db::execute(
            &format!("DELETE FROM {table} WHERE org_id = $1 AND user_id = $2"),
            &[org_id.into(), user_id.into()],
        )?;
    }
    remote::forget(org_id, Forget::User(user_id))?;
    services::rights_changed(user_id)?;
    audit::publish(
        org_id,
        MEMBERS,
        "member.removed",
        user_id,
        &json!({ "user_id": user_id, "reason": reason }),
    )
}

#[derive(FromRow, Serialize)]
struct Profile {
    user_id: String,
    title: Option<String>,
    phone: Option<String>,
    time_zone: Option<String>,
}

fn load_profile(org_id: &str, user_id: &str) -> Result<Profile, Problem> {
    db::query_one(
        "SELECT user_id, title, phone, time_zone FROM members WHERE org_id = $1 AND user_id = $2",
        &[org_id.into(), user_id.into()],
    )?
    .ok_or_else(|| Problem::not_found("no such member"))
}

/// `GET …/members/{user_id}/profile`: one's own, or anyone's with `members:read`.
pub fn profile(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant(request)?;
    let user_id = request.param("user_id")?;
    if user_id != caller.user_id && !caller.allows("members:read") {
        return Err(Problem::forbidden(
            "reading another member's profile needs the permission `members:read`",
        ));
    }
    Response::json(200, &load_profile(&organization.org_id, user_id)?)
}

/// The whole profile: a field left out or `null` (or empty) is cleared.
#[derive(Deserialize)]
struct ProfileChange {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

/// `PUT …/members/{user_id}/profile` `{title, phone, time_zone}`: one's own, or anyone's with
/// `members:write`. Every invalid field is named in one 422.
pub fn update_profile(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant(request)?;
    let user_id = request.param("user_id")?;
    if user_id != caller.user_id && !caller.allows("members:write") {
        return Err(Problem::forbidden(
            "editing another member's profile needs the permission `members:write`",
        ));
    }
    let change: ProfileChange = request.json()?;
    let mut errors = Errors::default();
    let or_empty = |value: &Option<String>| value.clone().unwrap_or_default();
    let title = errors.check("title", validate::title(&or_empty(&change.title)), None);
    let phone = errors.check("phone", validate::phone(&or_empty(&change.phone)), None);
    let time_zone = errors.check(
        "time_zone",
        validate::time_zone(&or_empty(&change.time_zone)),
        None,
    );
    errors.finish()?;
    let changed = db::execute(
        "UPDATE members SET title = $3, phone = $4, time_zone = $5
          WHERE org_id = $1 AND user_id = $2",
        &[
            organization.org_id.as_str().into(),
            user_id.into(),
            title.into(),
            phone.into(),
            time_zone.into(),
        ],
    )?;
    if changed == 0 {
        return Err(Problem::not_found("no such member"));
    }
    let profile = load_profile(&organization.org_id, user_id)?;
    // Which fields are set, not what they say.
    let set: Vec<&str> = [
        ("title", &profile.title),
        ("phone", &profile.phone),
        ("time_zone", &profile.time_zone),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|_| name))
    .collect();
    audit::publish(
        &organization.org_id,
        MEMBERS,
        "member.profile_updated",
        user_id,
        &json!({ "user_id": user_id, "fields_set": set }),
    )?;
    Response::json(200, &profile)
}
