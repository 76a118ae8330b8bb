//! The org component: organizations, their members (with profiles), invites and teams.
//!
//! Every `/org` route of the REST contract, and the internal routes auth and permission call
//! (`/org/internal`, reachable only through `services`). This component is the one source of
//! truth for who belongs to which organization and team; roles live in the permission
//! component, accounts (email, name, status) in auth.
//!
//! - **Tenancy.** Every table has `org_id` and every query filters by it. Routes under
//!   `/org/api/organizations/{slug}` act for the organization of the caller's verified token
//!   (`req.org()`), never for the slug in the URL: the slug only has to name that same
//!   organization (the gateway checks it too), else 404.
//! - **Calls.** Member lists ask auth for every account of the page in one call and permission
//!   for every member's roles in one call. A write that permission must mirror (the creator's
//!   `admin`, an accepted invite's role, a removal) is made here first and then sent; should
//!   the call fail, the answer is a 5xx so that this component's transaction rolls back too.
//! - **Invites** carry a single-use token of 32 random bytes, shown once; only its keyed hash
//!   (HMAC-SHA256 by the host) is stored. It is accepted only by the signed-in user whose
//!   account has the invited address, before it expires (`invite_ttl_seconds`, 7 days).
//! - **Rights changes.** After a removal, a team change or an organization's deletion, the
//!   affected users' tokens for the organization are invalidated (`services::rights_changed`).
//! - **Events.** Every change, and every read of the member list, is published with its
//!   organization's id (see [`audit`]).

mod audit;
mod internal;
mod invites;
mod members;
mod orgs;
mod plugins;
mod remote;
mod teams;
mod validate;

use serde_json::{Value, json};
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::rfc3339;

struct Org;

impl App for Org {
    fn router() -> Router {
        Router::new()
            .post("/org/api/organizations", orgs::create)
            .get("/org/api/organizations", orgs::list_mine)
            .get("/org/api/organizations/{slug}", orgs::show)
            .patch("/org/api/organizations/{slug}", orgs::rename)
            .delete("/org/api/organizations/{slug}", orgs::delete)
            .get("/org/api/organizations/{slug}/members", members::list)
            .delete(
                "/org/api/organizations/{slug}/members/{user_id}",
                members::remove,
            )
            .get(
                "/org/api/organizations/{slug}/members/{user_id}/profile",
                members::profile,
            )
            .put(
                "/org/api/organizations/{slug}/members/{user_id}/profile",
                members::update_profile,
            )
            .post("/org/api/organizations/{slug}/leave", members::leave)
            .get("/org/api/organizations/{slug}/invites", invites::list)
            .post("/org/api/organizations/{slug}/invites", invites::create)
            .delete(
                "/org/api/organizations/{slug}/invites/{id}",
                invites::revoke,
            )
            .post("/org/api/invites/{token}/accept", invites::accept)
            .get("/org/api/organizations/{slug}/teams", teams::list)
            .post("/org/api/organizations/{slug}/teams", teams::create)
            .delete("/org/api/organizations/{slug}/teams/{id}", teams::delete)
            .get(
                "/org/api/organizations/{slug}/teams/{id}/members",
                teams::members,
            )
            .post(
                "/org/api/organizations/{slug}/teams/{id}/members",
                teams::add_member,
            )
            .delete(
                "/org/api/organizations/{slug}/teams/{id}/members/{user_id}",
                teams::remove_member,
            )
            .get("/org/api/organizations/{slug}/plugins", plugins::list)
            .put(
                "/org/api/organizations/{slug}/plugins/{name}",
                plugins::enable,
            )
            .delete(
                "/org/api/organizations/{slug}/plugins/{name}",
                plugins::disable,
            )
            .get("/org/internal/plugins", plugins::enabled)
            .get("/org/internal/membership", internal::membership)
            .get("/org/internal/teams", internal::teams_of)
            .get("/org/internal/teams/{team_id}", internal::team)
            .get(
                "/org/internal/teams/{team_id}/members",
                internal::team_members,
            )
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![
            Migration {
                id: 1,
                name: "organizations, members with profiles, invites, teams",
                sql: SCHEMA,
            },
            Migration {
                id: 2,
                name: "plugins enabled per organization",
                sql: "CREATE TABLE plugins (org_id TEXT NOT NULL, plugin TEXT NOT NULL, \
                      enabled_by TEXT NOT NULL, enabled_at BIGINT NOT NULL, \
                      PRIMARY KEY (org_id, plugin))",
            },
        ]
    }
}

truevalue_sdk::component!(Org);

/// Times are Unix seconds. Both engines accept this SQL as it is. Every table carries `org_id`
/// (the organizations table's key is named so too), so that every query can be scoped by it
/// and row-level security can key on it.
const SCHEMA: &str = "
CREATE TABLE organizations (
    org_id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE members (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    title TEXT,
    phone TEXT,
    time_zone TEXT,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id);
CREATE INDEX members_by_join ON members (org_id, joined_at, user_id);
-- An invite's token is stored only as a keyed hash; the token itself is shown once.
CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT,
    revoked_at BIGINT
);
CREATE INDEX invites_by_org ON invites (org_id, email);
CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
CREATE TABLE team_members (
    org_id TEXT NOT NULL,
    team_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, team_id, user_id)
);
CREATE INDEX team_members_by_user ON team_members (org_id, user_id);
";

/// An organization as stored.
#[derive(FromRow, Clone)]
pub(crate) struct Organization {
    pub org_id: String,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
}

impl Organization {
    /// The organization as the REST contract shows it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.org_id,
            "slug": self.slug,
            "name": self.name,
            "plan": "free",
            "created_at": rfc3339(self.created_at),
        })
    }

    pub fn by_id(org_id: &str) -> Result<Option<Organization>, Problem> {
        Ok(db::query_one(
            "SELECT org_id, slug, name, created_at FROM organizations WHERE org_id = $1",
            &[org_id.into()],
        )?)
    }
}

/// The caller and the organization their verified token acts for, which the URL's `{slug}`
/// must name: 404 otherwise, whatever the slug names, so another tenant's existence is not
/// revealed. The tenant is always the token's `org_id`, never the slug.
pub(crate) fn tenant(request: &Request) -> Result<(OrgCaller, Organization), Problem> {
    let caller = request.org()?;
    let slug = request.param("slug")?;
    let organization = Organization::by_id(&caller.org_id)?
        .filter(|org| org.slug == slug)
        .ok_or_else(|| Problem::not_found("no such organization"))?;
    Ok((caller, organization))
}

/// Like [`tenant`], and 403 naming `permission` unless the caller holds it.
pub(crate) fn tenant_with(
    request: &Request,
    permission: &str,
) -> Result<(OrgCaller, Organization), Problem> {
    let (caller, organization) = tenant(request)?;
    if !caller.allows(permission) {
        return Err(Problem::forbidden(format!(
            "this needs the permission `{permission}`"
        )));
    }
    Ok((caller, organization))
}

/// Whether `user_id` is a member of the organization.
pub(crate) fn is_member(org_id: &str, user_id: &str) -> Result<bool, Problem> {
    Ok(!db::query(
        "SELECT user_id FROM members WHERE org_id = $1 AND user_id = $2",
        &[org_id.into(), user_id.into()],
    )?
    .is_empty())
}

/// A `{joined_at}.{id}`-style cursor key split into its number and its id; a 422 on the
/// `cursor` field when it is not one this component made.
pub(crate) fn split_key(key: &str) -> Result<(i64, String), Problem> {
    key.split_once('.')
        .and_then(|(number, id)| Some((number.parse().ok()?, id.to_string())))
        .ok_or_else(|| Problem::field("cursor", "is not one this API returned"))
}
