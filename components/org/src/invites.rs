//! Invites: an email address and a role, a single-use token shown once, accepted by the
//! signed-in user whose account has that address, before it expires; revocable until then.

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::bindings::truevalue::platform::crypto;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::{now, rfc3339};

use crate::audit::{self, MEMBERS};
use crate::validate::{self, Errors};
use crate::{Organization, is_member, remote, tenant_with};

/// How long an invite can be accepted unless the policy's `invite_ttl_seconds` says otherwise.
const INVITE_TTL: i64 = 7 * 24 * 3600;
/// Random bytes in a token.
const TOKEN_BYTES: u32 = 32;

/// The path that accepts an invite, for the email that carries it.
pub fn invite_link(token: &str) -> String {
    format!("/org/api/invites/{token}/accept")
}

/// The invitation, sent by the host once the invite is committed. The link is the API's accept
/// route under the policy's `public_url`; the token in it is the only copy the invitee gets.
fn send_invite_email(
    email: &str,
    org_name: &str,
    role: &str,
    token: &str,
    expires_at: i64,
) -> Result<(), Problem> {
    let base = config::get("public_url").unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let link = format!("{}{}", base.trim_end_matches('/'), invite_link(token));
    let subject: String = format!("You are invited to join {org_name}")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    truevalue_sdk::email::send(
        email,
        &subject,
        &format!(
            "You have been invited to join {org_name} on TrueValue as {role}.\n\n\
             Sign in (or register) with this address, then accept the invitation:\n\n\
             POST {link}\n\n\
             The invitation can be used once, by this address only, until {}.\n",
            rfc3339(expires_at)
        ),
    )
}

/// A fresh token (64 hex digits) and the hash to store.
fn new_token() -> Result<(String, String), Problem> {
    let bytes = crypto::random_bytes(TOKEN_BYTES);
    if bytes.len() != TOKEN_BYTES as usize {
        return Err(Problem::internal("the host gave too few random bytes"));
    }
    let token = truevalue_sdk::hex::encode(&bytes);
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The stored form of a token: an HMAC-SHA256 under this component's host-derived key, so the
/// table alone does not let anyone accept an invite.
fn token_hash(token: &str) -> String {
    truevalue_sdk::hex::encode(&crypto::hmac_sha256(token.as_bytes()))
}

fn ttl() -> Result<i64, Problem> {
    Ok(config::get_as::<i64>("invite_ttl_seconds")?
        .filter(|ttl| *ttl > 0)
        .unwrap_or(INVITE_TTL))
}

#[derive(Deserialize)]
struct NewInvite {
    email: String,
    role: String,
}

/// `POST /org/api/organizations/{slug}/invites` `{email, role}` (`invites:write`). 201 with the
/// token, which is never shown again.
pub fn create(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant_with(request, "invites:write")?;
    let org_id = organization.org_id.as_str();
    let body: NewInvite = request.json()?;
    let mut errors = Errors::default();
    let email = errors.check("email", validate::email(&body.email), String::new());
    let role_name = errors.check("role", validate::role(&body.role), String::new());
    errors.finish()?;

    let role = remote::role(org_id, &role_name)?.ok_or_else(|| {
        Problem::field(
            "role",
            format!("`{role_name}` is not a role of this organization"),
        )
    })?;
    // No escalation: an invite grants nothing the inviter does not hold.
    if let Some(beyond) = role.permissions.iter().find(|p| !caller.allows(p)) {
        return Err(Problem::forbidden(format!(
            "the role `{role_name}` grants `{beyond}`, which you do not hold"
        )));
    }
    if has_member_with_email(org_id, &email)? {
        return Err(Problem::conflict(format!(
            "{email} is already a member of this organization"
        )));
    }
    let now = now();
    if !db::query(
        "SELECT id FROM invites WHERE org_id = $1 AND email = $2
            AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
        &[org_id.into(), email.as_str().into(), now.into()],
    )?
    .is_empty()
    {
        return Err(Problem::conflict(format!(
            "{email} has a pending invite: revoke it first to send another"
        )));
    }

    let (token, hash) = new_token()?;
    let (id, expires_at) = (truevalue_sdk::id::new(), now.saturating_add(ttl()?));
    db::execute(
        "INSERT INTO invites (id, org_id, email, role, token_hash, invited_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            id.as_str().into(),
            org_id.into(),
            email.as_str().into(),
            role_name.as_str().into(),
            hash.into(),
            caller.user_id.as_str().into(),
            now.into(),
            expires_at.into(),
        ],
    )?;
    send_invite_email(&email, &organization.name, &role_name, &token, expires_at)?;
    audit::publish(
        org_id,
        MEMBERS,
        "invite.created",
        &id,
        &json!({ "invite_id": id, "email": email, "role": role_name,
                 "expires_at": rfc3339(expires_at) }),
    )?;
    Response::json(
        201,
        &json!({ "id": id, "email": email, "role": role_name, "token": token,
                 "accept_path": invite_link(&token), "expires_at": rfc3339(expires_at) }),
    )
}

/// Whether a member's account has `email`: the members' accounts, from auth, 200 per call.
fn has_member_with_email(org_id: &str, email: &str) -> Result<bool, Problem> {
    let ids: Vec<String> = db::query(
        "SELECT user_id FROM members WHERE org_id = $1",
        &[org_id.into()],
    )?
    .iter()
    .map(|row| row.get("user_id"))
    .collect::<Result<_, _>>()?;
    Ok(remote::accounts(&ids)?
        .values()
        .any(|account| account.email.eq_ignore_ascii_case(email)))
}

#[derive(FromRow)]
struct PendingRow {
    id: String,
    email: String,
    role: String,
    invited_by: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(Serialize)]
struct Pending {
    id: String,
    email: String,
    role: String,
    invited_by: String,
    created_at: String,
    expires_at: String,
}

/// `GET /org/api/organizations/{slug}/invites` (`invites:read`): invites not yet accepted,
/// revoked or expired, oldest first. Tokens are never shown again.
pub fn list(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "invites:read")?;
    let page = Page::from_request(request)?;
    let rows: Vec<PendingRow> = db::query_as(
        "SELECT id, email, role, invited_by, created_at, expires_at FROM invites
          WHERE org_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2
            AND id > $3
          ORDER BY id LIMIT $4",
        &[
            organization.org_id.as_str().into(),
            now().into(),
            page.after.clone().unwrap_or_default().into(),
            page.fetch().into(),
        ],
    )?;
    let items = rows
        .into_iter()
        .map(|row| Pending {
            id: row.id,
            email: row.email,
            role: row.role,
            invited_by: row.invited_by,
            created_at: rfc3339(row.created_at),
            expires_at: rfc3339(row.expires_at),
        })
        .collect();
    page.respond(items, |invite| invite.id.clone())
}

/// `DELETE /org/api/organizations/{slug}/invites/{id}` (`invites:write`): 204; 404 when the
/// organization has no such pending invite, 409 when it was accepted already.
pub fn revoke(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "invites:write")?;
    let (org_id, id) = (organization.org_id.as_str(), request.param("id")?);
    let revoked = db::query(
        "UPDATE invites SET revoked_at = $3
          WHERE org_id = $1 AND id = $2 AND accepted_at IS NULL AND revoked_at IS NULL
          RETURNING email, role",
        &[org_id.into(), id.into(), now().into()],
    )?;
    let Some(invite) = revoked.first() else {
        let accepted = !db::query(
            "SELECT id FROM invites WHERE org_id = $1 AND id = $2 AND accepted_at IS NOT NULL",
            &[org_id.into(), id.into()],
        )?
        .is_empty();
        return Err(match accepted {
            true => Problem::conflict("this invite was accepted already"),
            false => Problem::not_found("no such pending invite"),
        });
    };
    let (email, role): (String, String) = (invite.get("email")?, invite.get("role")?);
    audit::publish(
        org_id,
        MEMBERS,
        "invite.revoked",
        id,
        &json!({ "invite_id": id, "email": email, "role": role }),
    )?;
    Ok(Response::no_content())
}

#[derive(FromRow)]
struct Invite {
    id: String,
    org_id: String,
    email: String,
    role: String,
    expires_at: i64,
    accepted_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// `POST /org/api/invites/{token}/accept`: a signed-in user (any token, with or without an
/// organization) whose account has the invited email joins with the invite's role.
///
/// 404: no such token, or revoked. 403: the caller's email is another. 410: used or expired.
/// 409: the caller is a member already.
pub fn accept(request: &Request) -> Result<Response, Problem> {
    let user = request.user()?;
    let token = request.param("token")?;
    let unknown = || Problem::not_found("no such invite: check the link, or ask for a new one");
    let well_formed = token.len() == 2 * TOKEN_BYTES as usize
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(unknown());
    }
    // The token is the only key an invitee has: this lookup is the one not scoped by an
    // organization; everything after it is scoped by the invite's.
    let invite: Invite = db::query_one(
        "SELECT id, org_id, email, role, expires_at, accepted_at, revoked_at
           FROM invites WHERE token_hash = $1",
        &[token_hash(token).into()],
    )?
    .ok_or_else(unknown)?;
    if invite.revoked_at.is_some() {
        return Err(Problem::new(
            404,
            "invite-revoked",
            "Not found",
            "this invite was revoked; ask for a new one",
        ));
    }
    let account = remote::accounts(std::slice::from_ref(&user.id))?
        .remove(&user.id)
        .ok_or_else(|| Problem::forbidden("your account could not be found"))?;
    if account.email.to_lowercase() != invite.email {
        return Err(Problem::forbidden(
            "this invite was sent to another email address: sign in with that address to accept it",
        ));
    }
    let now = now();
    if invite.accepted_at.is_some() {
        return Err(used());
    }
    if invite.expires_at <= now {
        return Err(Problem::new(
            410,
            "invite-expired",
            "Gone",
            format!(
                "this invite expired at {}; ask for a new one",
                rfc3339(invite.expires_at)
            ),
        ));
    }
    let org_id = invite.org_id.as_str();
    let organization = Organization::by_id(org_id)?.ok_or_else(unknown)?;
    if is_member(org_id, &user.id)? {
        return Err(Problem::conflict(
            "you are already a member of this organization",
        ));
    }
    // Claimed in one conditional statement, so two accepts in parallel cannot both succeed.
    let claimed = db::execute(
        "UPDATE invites SET accepted_at = $3, accepted_by = $4
          WHERE org_id = $1 AND id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
        &[
            org_id.into(),
            invite.id.as_str().into(),
            now.into(),
            user.id.as_str().into(),
        ],
    )?;
    if claimed == 0 {
        return Err(used());
    }
    db::execute(
        "INSERT INTO members (org_id, user_id, joined_at) VALUES ($1, $2, $3)",
        &[org_id.into(), user.id.as_str().into(), now.into()],
    )
    // Joined in parallel through another invite: roll the claim back with a 5xx.
    .map_err(|e| Problem::internal(format!("could not add the member: {e:?}")))?;
    remote::assign(org_id, &user.id, &invite.role)?;
    // The caller's token acts for no organization yet (or another): both name the invite's.
    audit::publish(
        org_id,
        MEMBERS,
        "invite.accepted",
        &invite.id,
        &json!({ "invite_id": invite.id, "user_id": user.id, "email": invite.email,
                 "role": invite.role }),
    )?;
    audit::publish(
        org_id,
        MEMBERS,
        "member.added",
        &user.id,
        &json!({ "user_id": user.id, "role": invite.role, "via": "invite",
                 "invite_id": invite.id }),
    )?;
    log::info(&format!(
        "{} joined {org_id} as {} through invite {}",
        user.id, invite.role, invite.id
    ));
    Response::json(
        200,
        &json!({ "org_id": org_id, "org_slug": organization.slug, "org_name": organization.name,
                 "user_id": user.id, "roles": [invite.role], "joined_at": rfc3339(now) }),
    )
}

fn used() -> Problem {
    Problem::new(
        410,
        "invite-used",
        "Gone",
        "this invite was used already; ask for a new one",
    )
}
