//! The audit trail of the first-party components: auth, org and permission publish an event for
//! every change and every sign-in (and org for every read of a member list), with the
//! organization, the actor and the thing changed; a refused request publishes nothing, and no
//! event carries a password, a code or an invite's token.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use totp_rs::TOTP;

use crate::events::{Published, on_the_bus, wait_for_events};
use crate::helpers::{Engine, Spawn, TestApp};
use crate::on_both_engines;

const PASSWORD: &str = "correct horse battery staple";

const AUTH: &str = "auth.user.events";
const ORGANIZATIONS: &str = "org.organization.events";
const MEMBERS: &str = "org.member.events";
const ROLES: &str = "permission.role.events";

/// auth, org and permission with their shipped policies, which grant them `events`.
async fn app(engine: Engine) -> TestApp {
    Spawn::new(engine, crate::org::tenancy_policies())
        .start()
        .await
}

/// A status and the JSON body (null when there is none).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("user-agent", "audit-trail-test");
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = match text.is_empty() {
        true => Value::Null,
        false => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    (status, body)
}

#[track_caller]
fn expect(answer: (u16, Value), status: u16) -> Value {
    assert_eq!(answer.0, status, "{}", answer.1);
    answer.1
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(app, Method::POST, path, token, Some(body)).await
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Registers `name` with a fresh address; returns their id and address.
async fn register(app: &TestApp, name: &str) -> (String, String) {
    let email = format!("{}@example.com", unique(&name.to_lowercase()));
    let body = json!({ "email": email, "password": PASSWORD, "name": name });
    let registered = expect(post(app, "/auth/register", "", body).await, 201);
    (registered["id"].as_str().unwrap().to_string(), email)
}

/// Logs in (outside any organization); returns the token pair.
async fn login(app: &TestApp, email: &str) -> Value {
    let body = json!({ "email": email, "password": PASSWORD });
    expect(post(app, "/auth/login", "", body).await, 200)
}

fn access(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_string()
}

/// Creates an organization with an org-less token; returns its id and slug.
async fn create_org(app: &TestApp, token: &str) -> (String, String) {
    let slug = unique("acme");
    let body = json!({ "name": "Acme Corp", "slug": slug });
    let created = expect(post(app, "/org/api/organizations", token, body).await, 201);
    (created["id"].as_str().unwrap().to_string(), slug)
}

/// A token for the organization `slug`.
async fn switch(app: &TestApp, token: &str, slug: &str) -> String {
    let body = json!({ "org_slug": slug });
    access(&expect(
        post(app, "/auth/switch-org", token, body).await,
        200,
    ))
}

/// Waits until the bus holds `n` events, then a little longer, and returns them all: more
/// than `n` means something published that should not have.
async fn settled_trail(app: &TestApp, n: usize) -> Vec<Published> {
    wait_for_events(app, n).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    on_the_bus(app).await
}

/// `(topic, type, subject)` of each event, sorted: the trail without its order, which the
/// relay keeps per component only.
fn trail(events: &[Published]) -> Vec<(String, String, String)> {
    let mut trail: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.topic.clone(),
                text(&e.attributes, "type"),
                text(&e.attributes, "subject"),
            )
        })
        .collect();
    trail.sort();
    trail
}

fn expected(entries: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut expected: Vec<(String, String, String)> = entries
        .iter()
        .map(|(t, k, s)| (t.to_string(), k.to_string(), s.to_string()))
        .collect();
    expected.sort();
    expected
}

fn text(value: &Value, name: &str) -> String {
    value[name].as_str().unwrap_or_default().to_string()
}

/// The one event of `kind` about `subject`.
#[track_caller]
fn event<'a>(events: &'a [Published], kind: &str, subject: &str) -> &'a Published {
    let found: Vec<&Published> = events
        .iter()
        .filter(|e| e.attributes["type"] == kind && text(&e.attributes, "subject") == subject)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} about {subject:?}: {events:#?}");
    found[0]
}

/// Every event of `kind` about `subject`.
fn events_of<'a>(events: &'a [Published], kind: &str, subject: &str) -> Vec<&'a Published> {
    events
        .iter()
        .filter(|e| e.attributes["type"] == kind && text(&e.attributes, "subject") == subject)
        .collect()
}

/// The event belongs to the organization `org_id` (its `orgid` and its key) and was caused by
/// `actor` (None: an anonymous request).
#[track_caller]
fn assert_origin(event: &Published, org_id: Option<&str>, actor: Option<&str>) {
    let attributes = &event.attributes;
    assert_eq!(attributes["orgid"].as_str(), org_id, "{event:#?}");
    assert_eq!(event.key, org_id.unwrap_or_default(), "{event:#?}");
    assert_eq!(attributes["actorid"].as_str(), actor, "{event:#?}");
    assert_eq!(attributes["specversion"], "1.0");
    // Also on events of a component another one called (permission, for org).
    assert_eq!(attributes["useragent"], "audit-trail-test", "{event:#?}");
    assert!(
        attributes["requestid"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{event:#?}"
    );
}

/// Everything on the bus, as one text, to look for what must never be there.
fn everything(events: &[Published]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {} {}", e.topic, e.key, e.attributes, e.data))
        .collect::<Vec<_>>()
        .join("\n")
}

on_both_engines!(a_sign_up_an_organization_and_an_invite_leave_an_audit_trail);
async fn a_sign_up_an_organization_and_an_invite_leave_an_audit_trail(engine: Engine) {
    let app = app(engine).await;

    // Ada registers (twice: the second is refused), mistypes her password, signs in.
    let (ada, ada_email) = register(&app, "Ada").await;
    let again = json!({ "email": ada_email, "password": PASSWORD, "name": "Ada" });
    expect(post(&app, "/auth/register", "", again).await, 409);
    let wrong = json!({ "email": ada_email, "password": "not the password at all" });
    expect(post(&app, "/auth/login", "", wrong).await, 401);
    let ada_token = access(&login(&app, &ada_email).await);

    // She creates an organization (and fails to create it twice) and switches into it.
    let (org, slug) = create_org(&app, &ada_token).await;
    let twice = json!({ "name": "Acme Corp", "slug": slug });
    expect(
        post(&app, "/org/api/organizations", &ada_token, twice).await,
        409,
    );
    let ada_org = switch(&app, &ada_token, &slug).await;

    // Grace signs up; Ada invites her (a bad role is refused first), Grace accepts, twice.
    let (grace, grace_email) = register(&app, "Grace").await;
    let grace_token = access(&login(&app, &grace_email).await);
    let invites = format!("/org/api/organizations/{slug}/invites");
    let bad_role = json!({ "email": grace_email, "role": "nosuch" });
    expect(post(&app, &invites, &ada_org, bad_role).await, 422);
    let body = json!({ "email": grace_email, "role": "member" });
    let invite = expect(post(&app, &invites, &ada_org, body).await, 201);
    let (invite_id, invite_token) = (text(&invite, "id"), text(&invite, "token"));
    let accept = format!("/org/api/invites/{invite_token}/accept");
    expect(post(&app, &accept, &grace_token, json!({})).await, 200);
    let (status, _) = post(&app, &accept, &grace_token, json!({})).await;
    assert!(status == 409 || status == 410, "accepted twice: {status}");

    // Ada reads the member list; Grace, outside the organization, cannot.
    let members = format!("/org/api/organizations/{slug}/members");
    let list = expect(call(&app, Method::GET, &members, &ada_org, None).await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (status, _) = call(&app, Method::GET, &members, &grace_token, None).await;
    assert!(status == 403 || status == 404, "{status}");

    // Ada gives Grace `viewer` (then again, and an unknown role: both refused).
    let assignments = "/permission/api/assignments";
    let viewer = json!({ "user_id": grace, "role": "viewer" });
    let assigned = expect(post(&app, assignments, &ada_org, viewer.clone()).await, 201);
    expect(post(&app, assignments, &ada_org, viewer).await, 409);
    let unknown = json!({ "user_id": grace, "role": "nosuch" });
    expect(post(&app, assignments, &ada_org, unknown).await, 422);

    // A team gains Grace and loses her; then the organization does, though not its last admin.
    let teams = format!("/org/api/organizations/{slug}/teams");
    let team = expect(
        post(&app, &teams, &ada_org, json!({ "name": "Ops" })).await,
        201,
    );
    let team_id = text(&team, "id");
    let team_members = format!("{teams}/{team_id}/members");
    let body = json!({ "user_id": grace });
    expect(post(&app, &team_members, &ada_org, body).await, 201);
    let in_team = format!("{team_members}/{grace}");
    expect(
        call(&app, Method::DELETE, &in_team, &ada_org, None).await,
        204,
    );
    let member = |user: &str| format!("/org/api/organizations/{slug}/members/{user}");
    expect(
        call(&app, Method::DELETE, &member(&ada), &ada_org, None).await,
        409,
    );
    expect(
        call(&app, Method::DELETE, &member(&grace), &ada_org, None).await,
        204,
    );

    let want = expected(&[
        (AUTH, "user.registered", &ada),
        (AUTH, "user.login_failed", &ada),
        (AUTH, "user.logged_in", &ada),
        (ROLES, "role.assigned", &ada),
        (ORGANIZATIONS, "org.created", &org),
        (MEMBERS, "member.added", &ada),
        (AUTH, "session.org_switched", &ada),
        (AUTH, "user.registered", &grace),
        (AUTH, "user.logged_in", &grace),
        (MEMBERS, "invite.created", &invite_id),
        (ROLES, "role.assigned", &grace),
        (MEMBERS, "invite.accepted", &invite_id),
        (MEMBERS, "member.added", &grace),
        (MEMBERS, "members.listed", &org),
        (ROLES, "role.assigned", &grace),
        (ORGANIZATIONS, "team.created", &team_id),
        (MEMBERS, "team.member_added", &grace),
        (MEMBERS, "team.member_removed", &grace),
        (ROLES, "roles.forgotten", &grace),
        (MEMBERS, "member.removed", &grace),
    ]);
    let events = settled_trail(&app, want.len()).await;
    assert_eq!(trail(&events), want, "{events:#?}");

    // Events outside any organization have none; each event names who caused it.
    let registered = event(&events, "user.registered", &ada);
    assert_origin(registered, None, None);
    assert_eq!(
        registered.data,
        json!({ "user_id": ada, "email": ada_email })
    );
    assert_eq!(
        registered.attributes["source"], "/truevalue/auth",
        "{registered:#?}"
    );
    let failed = event(&events, "user.login_failed", &ada);
    assert_origin(failed, None, None);
    assert_eq!(failed.data["reason"], "wrong_password");
    assert_eq!(failed.data["user_id"], ada.as_str());
    let logged_in = event(&events, "user.logged_in", &ada);
    assert_origin(logged_in, None, None);
    assert!(logged_in.data["session_id"].is_string(), "{logged_in:#?}");
    assert!(logged_in.data["mfa"].is_null(), "{logged_in:#?}");

    // The organization's creation names it though Ada's token did not, and so do the calls
    // it made: permission's assignment shares its request id.
    let created = event(&events, "org.created", &org);
    assert_origin(created, Some(&org), Some(&ada));
    assert_eq!(created.topic, ORGANIZATIONS);
    assert_eq!(created.data["slug"], slug.as_str());
    assert_eq!(created.data["created_by"], ada.as_str());
    assert_eq!(created.attributes["source"], "/truevalue/org");
    let founder = event(&events, "member.added", &ada);
    assert_origin(founder, Some(&org), Some(&ada));
    assert_eq!(founder.data["role"], "admin");
    let admin = event(&events, "role.assigned", &ada);
    assert_origin(admin, Some(&org), Some(&ada));
    assert_eq!(admin.data["role"], "admin");
    assert_eq!(admin.attributes["source"], "/truevalue/permission");
    assert_eq!(
        admin.attributes["requestid"], created.attributes["requestid"],
        "one request, through org into permission"
    );
    assert_origin(
        event(&events, "session.org_switched", &ada),
        Some(&org),
        Some(&ada),
    );

    let invited = event(&events, "invite.created", &invite_id);
    assert_origin(invited, Some(&org), Some(&ada));
    assert_eq!(invited.data["email"], grace_email.as_str());
    assert_eq!(invited.data["role"], "member");
    // Grace's token acts for no organization: the acceptance names the invite's.
    let accepted = event(&events, "invite.accepted", &invite_id);
    assert_origin(accepted, Some(&org), Some(&grace));
    assert_eq!(accepted.data["user_id"], grace.as_str());
    let joined = event(&events, "member.added", &grace);
    assert_origin(joined, Some(&org), Some(&grace));
    assert_eq!(joined.data["role"], "member");
    assert_eq!(joined.data["invite_id"], invite_id.as_str());

    let listed = event(&events, "members.listed", &org);
    assert_origin(listed, Some(&org), Some(&ada));
    assert_eq!(listed.topic, MEMBERS);
    assert_eq!(listed.data["count"], 2);

    let mut grace_roles: Vec<&Published> = events_of(&events, "role.assigned", &grace);
    grace_roles.sort_by_key(|e| e.data["role"].as_str().unwrap_or_default().to_string());
    assert_origin(grace_roles[0], Some(&org), Some(&grace));
    assert_eq!(grace_roles[0].data["role"], "member");
    assert_origin(grace_roles[1], Some(&org), Some(&ada));
    assert_eq!(grace_roles[1].data["role"], "viewer");
    assert_eq!(grace_roles[1].data["assignment_id"], assigned["id"]);

    for (kind, subject) in [
        ("team.created", team_id.as_str()),
        ("team.member_added", grace.as_str()),
        ("team.member_removed", grace.as_str()),
        ("roles.forgotten", grace.as_str()),
        ("member.removed", grace.as_str()),
    ] {
        assert_origin(event(&events, kind, subject), Some(&org), Some(&ada));
    }
    assert_eq!(
        event(&events, "team.member_added", &grace).data["team_id"],
        team_id.as_str()
    );
    assert_eq!(
        event(&events, "member.removed", &grace).data["reason"],
        "removed"
    );
    let forgotten = event(&events, "roles.forgotten", &grace);
    assert_eq!(forgotten.data["reason"], "member_removed");
    assert_eq!(forgotten.data["roles"], json!(["member", "viewer"]));

    // No password and no invite token anywhere; each event once, by id.
    let all = everything(&events);
    assert!(!all.contains(PASSWORD), "{all}");
    assert!(!all.contains("not the password at all"), "{all}");
    assert!(!all.contains(&invite_token), "{all}");
    let ids: BTreeSet<&str> = events.iter().map(Published::id).collect();
    assert_eq!(ids.len(), events.len());
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

on_both_engines!(failed_sign_ins_the_lock_and_two_factor_changes_are_published_without_secrets);
async fn failed_sign_ins_the_lock_and_two_factor_changes_are_published_without_secrets(
    engine: Engine,
) {
    let app = app(engine).await;

    // Five wrong passwords lock Bob's account; the sixth attempt, right or not, is refused.
    let (bob, bob_email) = register(&app, "Bob").await;
    let wrong_passwords: Vec<String> = (0..5).map(|n| format!("wrong password {n}")).collect();
    for password in &wrong_passwords {
        let body = json!({ "email": bob_email, "password": password });
        expect(post(&app, "/auth/login", "", body).await, 401);
    }
    let body = json!({ "email": bob_email, "password": PASSWORD });
    expect(post(&app, "/auth/login", "", body).await, 423);

    // An address no account has: failed all the same, without the address.
    let nobody = format!("{}@example.com", unique("nobody"));
    let body = json!({ "email": nobody, "password": PASSWORD });
    expect(post(&app, "/auth/login", "", body).await, 401);

    // Cleo turns TOTP on, gets a code wrong, signs in with the next one, and turns it off
    // (the wrong password first) with a recovery code.
    let (cleo, cleo_email) = register(&app, "Cleo").await;
    let token = access(&login(&app, &cleo_email).await);
    let setup = expect(
        post(&app, "/auth/mfa/totp/setup", &token, json!({})).await,
        200,
    );
    let generator = TOTP::from_url(text(&setup, "otpauth_uri")).unwrap();
    let code = |offset: u64| generator.generate(now() + offset);
    let first = code(0);
    let enabled = expect(
        post(
            &app,
            "/auth/mfa/totp/enable",
            &token,
            json!({ "code": first }),
        )
        .await,
        200,
    );
    let recovery: Vec<String> = enabled["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let wrong_code = if code(30) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let with_code =
        |code: &str| json!({ "email": cleo_email, "password": PASSWORD, "mfa_code": code });
    expect(
        post(&app, "/auth/login", "", with_code(wrong_code)).await,
        401,
    );
    let next = code(30);
    let signed_in = access(&expect(
        post(&app, "/auth/login", "", with_code(&next)).await,
        200,
    ));
    let disable = |password: &str| json!({ "password": password, "code": recovery[0] });
    expect(
        post(
            &app,
            "/auth/mfa/disable",
            &signed_in,
            disable("not the password"),
        )
        .await,
        403,
    );
    expect(
        post(&app, "/auth/mfa/disable", &signed_in, disable(PASSWORD)).await,
        204,
    );

    let want = expected(&[
        (AUTH, "user.registered", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.locked", &bob),
        (AUTH, "user.login_failed", &bob),
        (AUTH, "user.login_failed", ""),
        (AUTH, "user.registered", &cleo),
        (AUTH, "user.logged_in", &cleo),
        (AUTH, "mfa.setup_started", &cleo),
        (AUTH, "mfa.enabled", &cleo),
        (AUTH, "user.login_failed", &cleo),
        (AUTH, "user.logged_in", &cleo),
        (AUTH, "user.reauth_failed", &cleo),
        (AUTH, "mfa.disabled", &cleo),
    ]);
    let events = settled_trail(&app, want.len()).await;
    assert_eq!(trail(&events), want, "{events:#?}");

    let reasons = |subject: &str, kind: &str| -> Vec<String> {
        events_of(&events, kind, subject)
            .iter()
            .map(|e| text(&e.data, "reason"))
            .collect()
    };
    let mut bob_reasons = reasons(&bob, "user.login_failed");
    bob_reasons.sort();
    assert_eq!(
        bob_reasons,
        [
            "locked",
            "wrong_password",
            "wrong_password",
            "wrong_password",
            "wrong_password",
            "wrong_password"
        ]
    );
    let locked = event(&events, "user.locked", &bob);
    assert_origin(locked, None, None);
    assert_eq!(locked.data["user_id"], bob.as_str());
    assert_eq!(locked.data["failed_attempts"], 5);
    assert!(locked.data["locked_until"].is_string(), "{locked:#?}");

    let unknown = event(&events, "user.login_failed", "");
    assert_origin(unknown, None, None);
    assert_eq!(unknown.data["reason"], "unknown_email");
    assert!(unknown.data.get("email").is_none(), "{unknown:#?}");

    assert_eq!(reasons(&cleo, "user.login_failed"), ["mfa_invalid"]);
    let enabled = event(&events, "mfa.enabled", &cleo);
    assert_origin(enabled, None, Some(&cleo));
    assert_eq!(enabled.data["method"], "totp");
    let with_totp = events_of(&events, "user.logged_in", &cleo)
        .into_iter()
        .filter(|e| e.data["mfa"] == "totp")
        .count();
    assert_eq!(with_totp, 1, "{events:#?}");
    let reauth = event(&events, "user.reauth_failed", &cleo);
    assert_eq!(reauth.data["reason"], "wrong_password");
    assert_eq!(reauth.data["action"], "mfa.disable");
    let disabled = event(&events, "mfa.disabled", &cleo);
    assert_origin(disabled, None, Some(&cleo));
    assert_eq!(disabled.data["confirmed_with"], "recovery_code");

    // Never a password, a TOTP secret, a recovery code or an unknown address, and no code in
    // any event's data (six digits may turn up in an id or a time by chance).
    let all = everything(&events);
    let mut secrets: Vec<String> = wrong_passwords;
    secrets.extend([
        PASSWORD.to_string(),
        "not the password".into(),
        text(&setup, "secret"),
        text(&setup, "otpauth_uri"),
        nobody,
    ]);
    secrets.extend(recovery);
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "{secret:?} is in {all}");
    }
    let data: String = events.iter().map(|e| e.data.to_string()).collect();
    for code in [first.as_str(), next.as_str(), wrong_code] {
        assert!(!data.contains(code), "{code:?} is in {data}");
    }
}

on_both_engines!(role_team_policy_session_and_password_changes_are_published);
async fn role_team_policy_session_and_password_changes_are_published(engine: Engine) {
    let app = app(engine).await;
    let (dora, dora_email) = register(&app, "Dora").await;
    let _first = login(&app, &dora_email).await;
    let _second = login(&app, &dora_email).await;
    let third = access(&login(&app, &dora_email).await);
    let (org, slug) = create_org(&app, &third).await;
    let token = switch(&app, &third, &slug).await;

    // Roles, the sign-in policy and teams.
    let sales = json!({ "name": "sales", "permissions": ["members:read"] });
    expect(
        post(&app, "/permission/api/roles", &token, sales).await,
        201,
    );
    let change = json!({ "permissions": ["members:read", "teams:read"] });
    expect(
        call(
            &app,
            Method::PUT,
            "/permission/api/roles/sales",
            &token,
            Some(change),
        )
        .await,
        200,
    );
    let policy = json!({ "require_mfa": false });
    expect(
        call(
            &app,
            Method::PUT,
            "/permission/api/policy",
            &token,
            Some(policy),
        )
        .await,
        200,
    );
    let teams = format!("/org/api/organizations/{slug}/teams");
    let team = expect(
        post(&app, &teams, &token, json!({ "name": "Ops" })).await,
        201,
    );
    let team_id = text(&team, "id");
    let to_team = json!({ "team_id": team_id, "role": "sales" });
    expect(
        post(&app, "/permission/api/assignments", &token, to_team).await,
        201,
    );
    let team_role = format!("/permission/api/teams/{team_id}/roles/sales");
    expect(
        call(&app, Method::DELETE, &team_role, &token, None).await,
        204,
    );
    expect(
        call(
            &app,
            Method::DELETE,
            "/permission/api/roles/sales",
            &token,
            None,
        )
        .await,
        204,
    );
    expect(
        call(
            &app,
            Method::DELETE,
            &format!("{teams}/{team_id}"),
            &token,
            None,
        )
        .await,
        204,
    );
    let org_path = format!("/org/api/organizations/{slug}");
    let rename = json!({ "name": "Acme Holdings" });
    expect(
        call(&app, Method::PATCH, &org_path, &token, Some(rename)).await,
        200,
    );

    // Sessions: the oldest revoked from the list, the second by a password change.
    let sessions = expect(
        call(&app, Method::GET, "/auth/sessions", &token, None).await,
        200,
    );
    let oldest = sessions["items"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expect(
        call(
            &app,
            Method::DELETE,
            &format!("/auth/sessions/{oldest}"),
            &token,
            None,
        )
        .await,
        204,
    );
    let new_password = "an entirely new passphrase 42";
    let wrong = json!({ "current_password": "not it", "new_password": new_password });
    expect(
        post(&app, "/auth/password/change", &token, wrong).await,
        403,
    );
    let right = json!({ "current_password": PASSWORD, "new_password": new_password });
    expect(
        post(&app, "/auth/password/change", &token, right).await,
        204,
    );

    // The organization goes; then a last sign-in, and its logout.
    expect(
        call(&app, Method::DELETE, &org_path, &token, None).await,
        204,
    );
    let body = json!({ "email": dora_email, "password": new_password });
    let last = access(&expect(post(&app, "/auth/login", "", body).await, 200));
    expect(post(&app, "/auth/logout", &last, json!({})).await, 204);

    let want = expected(&[
        (AUTH, "user.registered", &dora),
        (AUTH, "user.logged_in", &dora),
        (AUTH, "user.logged_in", &dora),
        (AUTH, "user.logged_in", &dora),
        (ROLES, "role.assigned", &dora),
        (ORGANIZATIONS, "org.created", &org),
        (MEMBERS, "member.added", &dora),
        (AUTH, "session.org_switched", &dora),
        (ROLES, "role.created", "sales"),
        (ROLES, "role.updated", "sales"),
        (ROLES, "policy.updated", &org),
        (ORGANIZATIONS, "team.created", &team_id),
        (ROLES, "role.assigned", &team_id),
        (ROLES, "role.unassigned", &team_id),
        (ROLES, "role.deleted", "sales"),
        (ORGANIZATIONS, "team.deleted", &team_id),
        (ORGANIZATIONS, "org.updated", &org),
        (AUTH, "session.revoked", &dora),
        (AUTH, "user.reauth_failed", &dora),
        (AUTH, "user.password_changed", &dora),
        (ROLES, "roles.forgotten", &org),
        (ORGANIZATIONS, "org.deleted", &org),
        (AUTH, "user.logged_in", &dora),
        (AUTH, "session.revoked", &dora),
    ]);
    let events = settled_trail(&app, want.len()).await;
    assert_eq!(trail(&events), want, "{events:#?}");

    for (kind, subject) in [
        ("role.created", "sales"),
        ("role.updated", "sales"),
        ("policy.updated", org.as_str()),
        ("team.created", team_id.as_str()),
        ("role.assigned", team_id.as_str()),
        ("role.unassigned", team_id.as_str()),
        ("role.deleted", "sales"),
        ("team.deleted", team_id.as_str()),
        ("org.updated", org.as_str()),
        ("roles.forgotten", org.as_str()),
        ("org.deleted", org.as_str()),
    ] {
        assert_origin(event(&events, kind, subject), Some(&org), Some(&dora));
    }
    let updated = event(&events, "role.updated", "sales");
    assert_eq!(
        updated.data["previous_permissions"],
        json!(["members:read"])
    );
    assert_eq!(
        updated.data["permissions"],
        json!(["members:read", "teams:read"])
    );
    assert_eq!(
        event(&events, "role.assigned", &team_id).data["team_id"],
        team_id.as_str()
    );
    assert_eq!(
        event(&events, "policy.updated", &org).data["require_mfa"],
        false
    );
    assert_eq!(
        event(&events, "org.updated", &org).data["name"],
        "Acme Holdings"
    );
    let forgotten = event(&events, "roles.forgotten", &org);
    assert_eq!(forgotten.data["reason"], "organization_deleted");
    assert_eq!(forgotten.data["assignments"], 1);

    let mut revoked: Vec<(String, String)> = events_of(&events, "session.revoked", &dora)
        .iter()
        .map(|e| (text(&e.data, "reason"), text(&e.data, "session_id")))
        .collect();
    revoked.sort();
    assert_eq!(revoked[0].0, "logout");
    assert_eq!(revoked[1], ("revoked".to_string(), oldest));
    let changed = event(&events, "user.password_changed", &dora);
    assert_eq!(changed.data["sessions_revoked"], 1, "the second session");
    let reauth = event(&events, "user.reauth_failed", &dora);
    assert_eq!(reauth.data["action"], "password.change");

    let all = everything(&events);
    for secret in [PASSWORD, new_password, "not it"] {
        assert!(!all.contains(secret), "{secret:?} is in {all}");
    }
}
