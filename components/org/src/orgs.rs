//! Organizations: create (the creator becomes `admin`), list the caller's, show, rename, delete.

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::{now, rfc3339};

use crate::audit::{self, MEMBERS, ORGANIZATIONS};
use crate::remote::{self, Forget};
use crate::validate::{self, Errors};
use crate::{Organization, split_key, tenant_with};

#[derive(Deserialize)]
struct NewOrganization {
    name: String,
    slug: String,
}

/// `POST /org/api/organizations`: any signed-in user, with or without an organization token.
pub fn create(request: &Request) -> Result<Response, Problem> {
    let user = request.user()?;
    let body: NewOrganization = request.json()?;
    let mut errors = Errors::default();
    let name = errors.check("name", validate::name(&body.name), String::new());
    for rule in validate::slug(&body.slug) {
        errors.add("slug", rule);
    }
    errors.finish()?;
    let slug = body.slug;
    let taken = || Problem::conflict(format!("an organization with the slug `{slug}` exists"));
    if !db::query(
        "SELECT org_id FROM organizations WHERE slug = $1",
        &[slug.as_str().into()],
    )?
    .is_empty()
    {
        return Err(taken());
    }
    let organization = Organization {
        org_id: truevalue_sdk::id::new(),
        slug: slug.clone(),
        name,
        created_at: now(),
    };
    let org_id = organization.org_id.as_str();
    db::execute(
        "INSERT INTO organizations (org_id, slug, name, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            org_id.into(),
            slug.as_str().into(),
            organization.name.as_str().into(),
            user.id.as_str().into(),
            organization.created_at.into(),
        ],
    )
    // Created in parallel, between the check and the insert.
    .on_conflict(taken)?;
    db::execute(
        "INSERT INTO members (org_id, user_id, joined_at) VALUES ($1, $2, $3)",
        &[
            org_id.into(),
            user.id.as_str().into(),
            organization.created_at.into(),
        ],
    )?;
    remote::assign(org_id, &user.id, "admin")?;
    // The caller's token acts for no organization yet (or another): both name this one.
    audit::publish(
        org_id,
        ORGANIZATIONS,
        "org.created",
        org_id,
        &json!({ "org_id": org_id, "slug": slug, "name": organization.name,
                 "created_by": user.id }),
    )?;
    audit::publish(
        org_id,
        MEMBERS,
        "member.added",
        &user.id,
        &json!({ "user_id": user.id, "role": "admin", "via": "created" }),
    )?;
    log::info(&format!("organization {org_id} created by {}", user.id));
    Response::json(201, &organization.json())
}

#[derive(FromRow)]
struct MineRow {
    org_id: String,
    slug: String,
    name: String,
    joined_at: i64,
}

#[derive(Serialize)]
struct Mine {
    id: String,
    slug: String,
    name: String,
    plan: &'static str,
    joined_at: String,
    /// The page key: when the caller joined, then the organization's id.
    #[serde(skip)]
    key: String,
}

/// `GET /org/api/organizations`: the organizations the caller belongs to, in the order they
/// joined them. Scoped by the user, not by an organization: it answers an org-less token.
pub fn list_mine(request: &Request) -> Result<Response, Problem> {
    let user = request.user()?;
    let page = Page::from_request(request)?;
    let (after_joined, after_org) = match &page.after {
        Some(key) => split_key(key)?,
        None => (i64::MIN, String::new()),
    };
    let rows: Vec<MineRow> = db::query_as(
        "SELECT o.org_id, o.slug, o.name, m.joined_at
           FROM members m JOIN organizations o ON o.org_id = m.org_id
          WHERE m.user_id = $1 AND (m.joined_at > $2 OR (m.joined_at = $2 AND m.org_id > $3))
          ORDER BY m.joined_at, m.org_id LIMIT $4",
        &[
            user.id.as_str().into(),
            after_joined.into(),
            after_org.into(),
            page.fetch().into(),
        ],
    )?;
    let items = rows
        .into_iter()
        .map(|row| Mine {
            key: format!("{}.{}", row.joined_at, row.org_id),
            id: row.org_id,
            slug: row.slug,
            name: row.name,
            plan: "free",
            joined_at: rfc3339(row.joined_at),
        })
        .collect();
    page.respond(items, |mine| mine.key.clone())
}

/// `GET /org/api/organizations/{slug}` (`org:read`).
pub fn show(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "org:read")?;
    Response::json(200, &organization.json())
}

#[derive(Deserialize)]
struct Changes {
    name: Option<String>,
}

/// `PATCH /org/api/organizations/{slug}` `{name?}` (`org:write`). The slug cannot change: it is
/// in every URL and token of the organization.
pub fn rename(request: &Request) -> Result<Response, Problem> {
    let (_, mut organization) = tenant_with(request, "org:write")?;
    let changes: Changes = request.json()?;
    if let Some(name) = changes.name {
        let previous = std::mem::replace(
            &mut organization.name,
            validate::name(&name).map_err(|m| Problem::field("name", m))?,
        );
        db::execute(
            "UPDATE organizations SET name = $2 WHERE org_id = $1",
            &[
                organization.org_id.as_str().into(),
                organization.name.as_str().into(),
            ],
        )?;
        if organization.name != previous {
            audit::publish(
                &organization.org_id,
                ORGANIZATIONS,
                "org.updated",
                &organization.org_id,
                &json!({ "org_id": organization.org_id, "slug": organization.slug,
                         "name": organization.name, "previous_name": previous }),
            )?;
        }
    }
    Response::json(200, &organization.json())
}

/// `DELETE /org/api/organizations/{slug}` (`org:delete`): its members, teams and invites go with
/// it, permission forgets its roles, and every member's tokens for it stop working.
pub fn delete(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant_with(request, "org:delete")?;
    let org_id = organization.org_id.as_str();
    let members: Vec<String> = db::query(
        "SELECT user_id FROM members WHERE org_id = $1",
        &[org_id.into()],
    )?
    .iter()
    .map(|row| row.get("user_id"))
    .collect::<Result<_, _>>()?;
    for table in [
        "team_members",
        "teams",
        "invites",
        "members",
        "organizations",
    ] {
        db::execute(
            &format!("DELETE FROM {table} WHERE org_id = $1"),
            &[org_id.into()],
        )?;
    }
    remote::forget(org_id, Forget::Organization)?;
    for user_id in &members {
        services::rights_changed(user_id)?;
    }
    audit::publish(
        org_id,
        ORGANIZATIONS,
        "org.deleted",
        org_id,
        &json!({ "org_id": org_id, "slug": organization.slug, "name": organization.name,
                 "members": members.len() }),
    )?;
    log::info(&format!(
        "organization {org_id} deleted by {}",
        caller.user_id
    ));
    Ok(Response::no_content())
}
