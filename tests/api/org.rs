//! The org component as a REST client meets it, with auth and permission beside it: the
//! reference flow, slugs, members and the last admin, profiles, invites, teams, and a probe of
//! every org route from another tenant's admin.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, repo, wasm};
use crate::on_both_engines;

const PASSWORD: &str = "correct horse battery staple";

/// `policies/<name>.toml` as shipped, with the wasm path pointing at the built component and
/// `edit` applied to each line.
pub fn shipped(name: &str, edit: impl Fn(&str) -> String) -> Policy {
    let path = repo().join(format!("policies/{name}.toml"));
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    let wasm_line = format!("wasm = {:?}", wasm(name).display().to_string());
    let toml = shipped
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => wasm_line.clone(),
            false => edit(line),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Policy {
        name: name.into(),
        toml,
    }
}

/// auth, org and permission with their shipped policies: what the reference flow needs. The
/// shipped files are what a deployment loads, so the tests check their grants too.
pub fn tenancy_policies() -> Vec<Policy> {
    tenancy_policies_with_invite_ttl(None)
}

fn tenancy_policies_with_invite_ttl(seconds: Option<u64>) -> Vec<Policy> {
    let org = shipped("org", |line| {
        match (seconds, line.starts_with("invite_ttl_seconds")) {
            (Some(seconds), true) => format!("invite_ttl_seconds = {seconds}"),
            _ => line.to_string(),
        }
    });
    vec![
        shipped("auth", str::to_string),
        org,
        shipped("permission", str::to_string),
    ]
}

async fn app(engine: Engine) -> TestApp {
    Spawn::new(engine, tenancy_policies()).start().await
}

/// A status and the JSON body (null when there is none).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn field(&self, name: &str) -> &str {
        self.body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no `{name}` in {}", self.body))
    }

    fn kind(&self) -> &str {
        self.field("type").rsplit('/').next().unwrap()
    }

    /// The fields named in a 422's `errors`.
    fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.body
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = app.client.request(method, app.url(path));
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
    Answer { status, body }
}

async fn get(app: &TestApp, path: &str, token: &str) -> Answer {
    call(app, Method::GET, path, token, None).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Answer {
    call(app, Method::POST, path, token, Some(body)).await
}

async fn delete(app: &TestApp, path: &str, token: &str) -> Answer {
    call(app, Method::DELETE, path, token, None).await
}

/// A registered user with an access token not scoped to any organization.
struct User {
    id: String,
    email: String,
    token: String,
}

async fn sign_up(app: &TestApp, name: &str) -> User {
    let email = format!(
        "{}-{}@example.com",
        name.to_lowercase(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let body = json!({ "email": email, "password": PASSWORD, "name": name });
    let registered = post(app, "/auth/register", "", body).await.expect(201);
    let token = login(app, &email, None).await;
    User {
        id: registered["id"].as_str().unwrap().to_string(),
        email,
        token,
    }
}

/// An access token, scoped to `org_slug` if given.
async fn login(app: &TestApp, email: &str, org_slug: Option<&str>) -> String {
    let mut body = json!({ "email": email, "password": PASSWORD });
    if let Some(slug) = org_slug {
        body["org_slug"] = json!(slug);
    }
    let pair = post(app, "/auth/login", "", body).await.expect(200);
    pair["access_token"].as_str().unwrap().to_string()
}

/// The caller's token for `slug`, through `POST /auth/switch-org`.
async fn switch(app: &TestApp, token: &str, slug: &str) -> String {
    let pair = post(app, "/auth/switch-org", token, json!({ "org_slug": slug }))
        .await
        .expect(200);
    pair["access_token"].as_str().unwrap().to_string()
}

/// A unique slug starting with `prefix`.
fn slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `user` creates an organization and switches into it; returns its slug and their token.
async fn found(app: &TestApp, user: &User, name: &str) -> (String, String) {
    let slug = slug(&name.to_lowercase().replace(' ', "-"));
    let body = json!({ "name": name, "slug": slug });
    post(app, "/org/api/organizations", &user.token, body)
        .await
        .expect(201);
    let token = switch(app, &user.token, &slug).await;
    (slug, token)
}

fn org_path(slug: &str, rest: &str) -> String {
    format!("/org/api/organizations/{slug}{rest}")
}

/// `admin` invites a newly registered user with `role`, who accepts; returns them with a token
/// for the organization.
async fn join(app: &TestApp, slug: &str, admin: &str, name: &str, role: &str) -> User {
    let mut user = sign_up(app, name).await;
    let invite = post(
        app,
        &org_path(slug, "/invites"),
        admin,
        json!({ "email": user.email, "role": role }),
    )
    .await
    .expect(201);
    let accept = format!(
        "/org/api/invites/{}/accept",
        invite["token"].as_str().unwrap()
    );
    post(app, &accept, &user.token, json!({})).await.expect(200);
    user.token = switch(app, &user.token, slug).await;
    user
}

/// The members list's items, by user id.
async fn members(app: &TestApp, slug: &str, token: &str) -> Vec<Value> {
    let list = get(app, &org_path(slug, "/members"), token)
        .await
        .expect(200);
    list["items"].as_array().unwrap().clone()
}

on_both_engines!(the_reference_flow_ends_with_both_members_listed_with_names_emails_and_roles);
async fn the_reference_flow_ends_with_both_members_listed_with_names_emails_and_roles(
    engine: Engine,
) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let slug = slug("acme");
    let created = post(
        &app,
        "/org/api/organizations",
        &alice.token,
        json!({ "name": "Acme Corp", "slug": slug }),
    )
    .await
    .expect(201);
    assert_eq!(created["slug"], slug.as_str());
    assert_eq!(created["name"], "Acme Corp");
    assert!(uuid::Uuid::parse_str(created["id"].as_str().unwrap()).is_ok());

    // The org-less token lists the caller's organizations.
    let mine = get(&app, "/org/api/organizations", &alice.token)
        .await
        .expect(200);
    assert_eq!(mine["items"][0]["slug"], slug.as_str(), "{mine}");

    let admin = switch(&app, &alice.token, &slug).await;
    let shown = get(&app, &org_path(&slug, ""), &admin).await.expect(200);
    assert_eq!(shown["id"], created["id"]);

    let bob = sign_up(&app, "Bob").await;
    let invite = post(
        &app,
        &org_path(&slug, "/invites"),
        &admin,
        json!({ "email": bob.email.to_uppercase(), "role": "member" }),
    )
    .await
    .expect(201);
    assert_eq!(invite["email"], bob.email.as_str(), "kept in lower case");
    assert_eq!(invite["role"], "member");
    let token = invite["token"].as_str().unwrap();
    assert!(token.len() >= 43, "32 random bytes: {token}");
    assert!(invite["expires_at"].as_str().unwrap().ends_with('Z'));
    let pending = get(&app, &org_path(&slug, "/invites"), &admin)
        .await
        .expect(200);
    assert_eq!(pending["items"][0]["id"], invite["id"]);
    assert!(
        pending["items"][0].get("token").is_none(),
        "shown once: {pending}"
    );

    let accepted = post(
        &app,
        &format!("/org/api/invites/{token}/accept"),
        &bob.token,
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(accepted["org_slug"], slug.as_str());
    assert_eq!(accepted["org_name"], "Acme Corp");
    assert_eq!(accepted["user_id"], bob.id.as_str());
    assert_eq!(accepted["roles"], json!(["member"]));
    let pending = get(&app, &org_path(&slug, "/invites"), &admin)
        .await
        .expect(200);
    assert_eq!(pending["items"], json!([]));

    let listed = members(&app, &slug, &admin).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (first, second) = (&listed[0], &listed[1]);
    assert_eq!(first["user_id"], alice.id.as_str());
    assert_eq!(first["email"], alice.email.as_str());
    assert_eq!(first["name"], "Alice");
    assert_eq!(first["status"], "active");
    assert_eq!(first["roles"], json!(["admin"]));
    assert_eq!(second["user_id"], bob.id.as_str());
    assert_eq!(second["email"], bob.email.as_str());
    assert_eq!(second["name"], "Bob");
    assert_eq!(second["roles"], json!(["member"]));
    assert!(second["joined_at"].as_str().unwrap().ends_with('Z'));

    // Bob can switch into Acme and read the members (`member` holds `members:read`).
    let bob_token = switch(&app, &bob.token, &slug).await;
    assert_eq!(members(&app, &slug, &bob_token).await.len(), 2);

    // A page at a time.
    let page = get(&app, &org_path(&slug, "/members?limit=1"), &admin)
        .await
        .expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = get(
        &app,
        &org_path(&slug, &format!("/members?limit=1&cursor={cursor}")),
        &admin,
    )
    .await
    .expect(200);
    assert_eq!(next["items"][0]["user_id"], bob.id.as_str());
    assert_eq!(next["next_cursor"], Value::Null);
}

on_both_engines!(slugs_follow_the_rules_and_a_taken_one_is_a_conflict);
async fn slugs_follow_the_rules_and_a_taken_one_is_a_conflict(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let create = |slug: String, name: &'static str| {
        let (app, token) = (&app, alice.token.clone());
        async move {
            post(
                app,
                "/org/api/organizations",
                &token,
                json!({ "name": name, "slug": slug }),
            )
            .await
        }
    };
    let cases = [
        ("ab", "3 to 40"),
        ("a-very-long-slug-that-goes-past-forty-chars", "3 to 40"),
        ("Acme", "lowercase"),
        ("acme_corp", "lowercase"),
        ("1acme", "start with"),
        ("ac--me", "`--`"),
        ("acme-", "end with"),
        ("api", "reserved"),
        ("admin", "reserved"),
        ("internal", "reserved"),
        ("new", "reserved"),
    ];
    for (bad, rule) in cases {
        let refused = create(bad.to_string(), "Acme").await;
        assert_eq!(refused.status, 422, "{bad}: {}", refused.body);
        assert_eq!(refused.kind(), "validation");
        assert!(
            refused.error_fields().iter().all(|f| f == "slug"),
            "{}",
            refused.body
        );
        assert!(
            refused.field("detail").contains(rule),
            "{bad}: {}",
            refused.body
        );
    }
    let unnamed = create(slug("acme"), "  ").await;
    assert_eq!(unnamed.status, 422);
    assert_eq!(unnamed.error_fields(), ["name"]);

    let taken = slug("acme");
    create(taken.clone(), "Acme").await.expect(201);
    let again = create(taken.clone(), "Other").await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.field("detail").contains(&taken));
    // None of the refused attempts made an organization.
    let mine = get(&app, "/org/api/organizations", &alice.token)
        .await
        .expect(200);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
}

on_both_engines!(the_last_admin_cannot_leave_or_be_removed);
async fn the_last_admin_cannot_leave_or_be_removed(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let leave = post(&app, &org_path(&slug, "/leave"), &admin, json!({})).await;
    assert_eq!(leave.status, 409, "{}", leave.body);
    assert!(leave.field("detail").contains("last admin"));
    let removed = delete(
        &app,
        &org_path(&slug, &format!("/members/{}", alice.id)),
        &admin,
    )
    .await;
    assert_eq!(removed.status, 409, "{}", removed.body);

    // A member is removed with their token for the organization; a second removal is a 404.
    let bob = join(&app, &slug, &admin, "Bob", "member").await;
    let forbidden = delete(
        &app,
        &org_path(&slug, &format!("/members/{}", alice.id)),
        &bob.token,
    )
    .await;
    assert_eq!(
        forbidden.status, 403,
        "`member` lacks members:write: {}",
        forbidden.body
    );
    delete(
        &app,
        &org_path(&slug, &format!("/members/{}", bob.id)),
        &admin,
    )
    .await
    .expect(204);
    let gone = get(&app, &org_path(&slug, "/members"), &bob.token).await;
    assert_eq!(gone.status, 401, "rights changed at once: {}", gone.body);
    let again = delete(
        &app,
        &org_path(&slug, &format!("/members/{}", bob.id)),
        &admin,
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(members(&app, &slug, &admin).await.len(), 1);

    // With a second admin, the first may leave.
    let carol = join(&app, &slug, &admin, "Carol", "admin").await;
    post(&app, &org_path(&slug, "/leave"), &admin, json!({}))
        .await
        .expect(204);
    let listed = members(&app, &slug, &carol.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["user_id"], carol.id.as_str());
    let fresh = login(&app, &alice.email, None).await;
    let mine = get(&app, "/org/api/organizations", &fresh)
        .await
        .expect(200);
    assert_eq!(mine["items"], json!([]));
}

on_both_engines!(profiles_are_edited_by_their_member_or_with_members_write);
async fn profiles_are_edited_by_their_member_or_with_members_write(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let bob = join(&app, &slug, &admin, "Bob", "member").await;
    let profile = |user: &User| org_path(&slug, &format!("/members/{}/profile", user.id));
    let put = |path: String, token: String, body: Value| {
        let app = &app;
        async move { call(app, Method::PUT, &path, &token, Some(body)).await }
    };

    let own =
        json!({ "title": "Sales lead", "phone": "+49 30 1234567", "time_zone": "Europe/Berlin" });
    let saved = put(profile(&bob), bob.token.clone(), own.clone())
        .await
        .expect(200);
    assert_eq!(saved["title"], "Sales lead");
    assert_eq!(saved["time_zone"], "Europe/Berlin");

    let bad = json!({ "title": "x", "phone": "call me", "time_zone": "Mars/Olympus" });
    let refused = put(profile(&bob), bob.token.clone(), bad).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.error_fields(), ["phone", "time_zone"]);

    let not_yours = put(profile(&alice), bob.token.clone(), own.clone()).await;
    assert_eq!(not_yours.status, 403, "{}", not_yours.body);
    let by_admin = json!({ "title": "Account executive", "phone": null, "time_zone": "UTC" });
    put(profile(&bob), admin.clone(), by_admin)
        .await
        .expect(200);

    let read = get(&app, &profile(&bob), &bob.token).await.expect(200);
    assert_eq!(
        read,
        json!({ "user_id": bob.id, "title": "Account executive", "phone": null, "time_zone": "UTC" })
    );
    let listed = members(&app, &slug, &admin).await;
    assert_eq!(listed[1]["title"], "Account executive");
    assert_eq!(listed[1]["time_zone"], "UTC");

    let stranger = sign_up(&app, "Stranger").await;
    let missing = get(&app, &profile(&stranger), &admin).await;
    assert_eq!(missing.status, 404);
}

on_both_engines!(invites_are_single_use_for_their_email_and_revocable);
async fn invites_are_single_use_for_their_email_and_revocable(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let bob = sign_up(&app, "Bob").await;
    let mallory = sign_up(&app, "Mallory").await;
    let invite = |email: String, role: &'static str| {
        let (app, path, admin) = (&app, org_path(&slug, "/invites"), admin.clone());
        async move { post(app, &path, &admin, json!({ "email": email, "role": role })).await }
    };
    let accept = |token: &str, user: &User| {
        let (app, path, user_token) = (
            &app,
            format!("/org/api/invites/{token}/accept"),
            user.token.clone(),
        );
        async move { post(app, &path, &user_token, json!({})).await }
    };

    // Bad input.
    let bad_email = invite("not an email".into(), "member").await;
    assert_eq!(
        (bad_email.status, bad_email.error_fields()),
        (422, vec!["email".to_string()])
    );
    let bad_role = invite(bob.email.clone(), "overlord").await;
    assert_eq!(
        (bad_role.status, bad_role.error_fields()),
        (422, vec!["role".to_string()]),
        "{}",
        bad_role.body
    );
    let member_already = invite(alice.email.clone(), "member").await;
    assert_eq!(member_already.status, 409, "{}", member_already.body);

    // Another address is refused, and the invite stays usable.
    let sent = invite(bob.email.clone(), "viewer").await.expect(201);
    let token = sent["token"].as_str().unwrap().to_string();
    let other = accept(&token, &mallory).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert!(
        other.field("detail").contains("another email"),
        "{}",
        other.body
    );
    let twice = invite(bob.email.clone(), "member").await;
    assert_eq!(
        twice.status, 409,
        "one pending invite per address: {}",
        twice.body
    );

    accept(&token, &bob).await.expect(200);
    let replay = accept(&token, &bob).await;
    assert_eq!(replay.status, 410, "{}", replay.body);
    assert_eq!(replay.kind(), "invite-used");
    let unknown = accept(&"0".repeat(64), &bob).await;
    assert_eq!(unknown.status, 404);
    let mangled = accept("not-a-token", &bob).await;
    assert_eq!(mangled.status, 404);

    // A revoked invite cannot be accepted.
    let revoked = invite(mallory.email.clone(), "member").await.expect(201);
    let revoke_path = org_path(
        &slug,
        &format!("/invites/{}", revoked["id"].as_str().unwrap()),
    );
    delete(&app, &revoke_path, &admin).await.expect(204);
    assert_eq!(delete(&app, &revoke_path, &admin).await.status, 404);
    let refused = accept(revoked["token"].as_str().unwrap(), &mallory).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let accepted_path = org_path(&slug, &format!("/invites/{}", sent["id"].as_str().unwrap()));
    assert_eq!(delete(&app, &accepted_path, &admin).await.status, 409);

    let listed = members(&app, &slug, &admin).await;
    let ids: Vec<&str> = listed
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alice.id.as_str(), bob.id.as_str()]);
    assert_eq!(listed[1]["roles"], json!(["viewer"]));

    // A viewer lacks `invites:write`.
    let bob_token = switch(&app, &bob.token, &slug).await;
    let path = org_path(&slug, "/invites");
    let by_viewer = post(
        &app,
        &path,
        &bob_token,
        json!({ "email": mallory.email, "role": "viewer" }),
    )
    .await;
    assert_eq!(by_viewer.status, 403, "{}", by_viewer.body);
}

on_both_engines!(an_expired_invite_is_gone);
async fn an_expired_invite_is_gone(engine: Engine) {
    let app = Spawn::new(engine, tenancy_policies_with_invite_ttl(Some(1)))
        .start()
        .await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let bob = sign_up(&app, "Bob").await;
    let sent = post(
        &app,
        &org_path(&slug, "/invites"),
        &admin,
        json!({ "email": bob.email, "role": "member" }),
    )
    .await
    .expect(201);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let path = format!(
        "/org/api/invites/{}/accept",
        sent["token"].as_str().unwrap()
    );
    let expired = post(&app, &path, &bob.token, json!({})).await;
    assert_eq!(expired.status, 410, "{}", expired.body);
    assert_eq!(expired.kind(), "invite-expired");
    assert_eq!(members(&app, &slug, &admin).await.len(), 1);
    // An expired invite no longer blocks a new one.
    post(
        &app,
        &org_path(&slug, "/invites"),
        &admin,
        json!({ "email": bob.email, "role": "member" }),
    )
    .await
    .expect(201);
}

on_both_engines!(teams_hold_members_of_the_organization_only);
async fn teams_hold_members_of_the_organization_only(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let bob = join(&app, &slug, &admin, "Bob", "member").await;
    let stranger = sign_up(&app, "Stranger").await;

    let teams = org_path(&slug, "/teams");
    let team = post(&app, &teams, &admin, json!({ "name": "Sales" }))
        .await
        .expect(201);
    let duplicate = post(&app, &teams, &admin, json!({ "name": "Sales" })).await;
    assert_eq!(duplicate.status, 409);
    let by_member = post(&app, &teams, &bob.token, json!({ "name": "Rogue" })).await;
    assert_eq!(by_member.status, 403, "{}", by_member.body);
    let listed = get(&app, &teams, &bob.token).await.expect(200);
    assert_eq!(listed["items"][0]["name"], "Sales");

    let team_path = format!("{teams}/{}", team["id"].as_str().unwrap());
    let team_members = format!("{team_path}/members");
    post(&app, &team_members, &admin, json!({ "user_id": bob.id }))
        .await
        .expect(201);
    let again = post(&app, &team_members, &admin, json!({ "user_id": bob.id })).await;
    assert_eq!(again.status, 409);
    let outsider = post(
        &app,
        &team_members,
        &admin,
        json!({ "user_id": stranger.id }),
    )
    .await;
    assert_eq!(outsider.status, 422, "{}", outsider.body);
    assert_eq!(outsider.error_fields(), ["user_id"]);
    let listed = get(&app, &team_members, &admin).await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["user_id"], bob.id.as_str());

    // A team change is a rights change for its member.
    let stale = get(&app, &teams, &bob.token).await;
    assert_eq!(stale.status, 401, "{}", stale.body);

    delete(&app, &format!("{team_members}/{}", bob.id), &admin)
        .await
        .expect(204);
    assert_eq!(
        delete(&app, &format!("{team_members}/{}", bob.id), &admin)
            .await
            .status,
        404
    );
    delete(&app, &team_path, &admin).await.expect(204);
    assert_eq!(get(&app, &team_members, &admin).await.status, 404);
    assert_eq!(delete(&app, &team_path, &admin).await.status, 404);
}

on_both_engines!(renaming_and_deleting_need_the_rights_and_deleting_ends_the_tokens);
async fn renaming_and_deleting_need_the_rights_and_deleting_ends_the_tokens(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    let bob = join(&app, &slug, &admin, "Bob", "member").await;
    let path = org_path(&slug, "");
    let patch = |token: &str, body: Value| {
        let (app, path, token) = (&app, path.clone(), token.to_string());
        async move { call(app, Method::PATCH, &path, &token, Some(body)).await }
    };
    assert_eq!(
        patch(&bob.token, json!({ "name": "Bob's" })).await.status,
        403
    );
    assert_eq!(patch(&admin, json!({ "name": "" })).await.status, 422);
    let renamed = patch(&admin, json!({ "name": "Acme Industries" }))
        .await
        .expect(200);
    assert_eq!(
        (renamed["name"].as_str(), renamed["slug"].as_str()),
        (Some("Acme Industries"), Some(slug.as_str()))
    );

    assert_eq!(delete(&app, &path, &bob.token).await.status, 403);
    delete(&app, &path, &admin).await.expect(204);
    assert_eq!(
        get(&app, &path, &admin).await.status,
        401,
        "the admin's token ended too"
    );
    let fresh = login(&app, &alice.email, None).await;
    let mine = get(&app, "/org/api/organizations", &fresh)
        .await
        .expect(200);
    assert_eq!(mine["items"], json!([]));
    // The slug is free again.
    post(
        &app,
        "/org/api/organizations",
        &fresh,
        json!({ "name": "Acme", "slug": slug }),
    )
    .await
    .expect(201);
}

/// What an admin of Acme sees of Acme: nothing a probe from another tenant may change.
async fn snapshot(app: &TestApp, slug: &str, admin: &str, team: &str, users: &[&str]) -> Value {
    let mut seen = json!({
        "org": get(app, &org_path(slug, ""), admin).await.body,
        "members": get(app, &org_path(slug, "/members"), admin).await.body,
        "invites": get(app, &org_path(slug, "/invites"), admin).await.body,
        "teams": get(app, &org_path(slug, "/teams"), admin).await.body,
        "team_members": get(app, &org_path(slug, &format!("/teams/{team}/members")), admin).await.body,
    });
    for user in users {
        seen[format!("profile {user}")] = get(
            app,
            &org_path(slug, &format!("/members/{user}/profile")),
            admin,
        )
        .await
        .body;
    }
    seen
}

on_both_engines!(another_tenants_admin_reaches_no_org_route_and_changes_nothing);
async fn another_tenants_admin_reaches_no_org_route_and_changes_nothing(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (acme, admin) = found(&app, &alice, "Acme").await;
    let bob = join(&app, &acme, &admin, "Bob", "member").await;
    let team = post(
        &app,
        &org_path(&acme, "/teams"),
        &admin,
        json!({ "name": "Sales" }),
    )
    .await
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &app,
        &org_path(&acme, &format!("/teams/{team}/members")),
        &admin,
        json!({ "user_id": bob.id }),
    )
    .await
    .expect(201);
    let carol = sign_up(&app, "Carol").await;
    let invite = post(
        &app,
        &org_path(&acme, "/invites"),
        &admin,
        json!({ "email": carol.email, "role": "member" }),
    )
    .await
    .expect(201);
    let invite_id = invite["id"].as_str().unwrap().to_string();
    let invite_token = invite["token"].as_str().unwrap().to_string();
    let users = [alice.id.as_str(), bob.id.as_str()];
    let before = snapshot(&app, &acme, &admin, &team, &users).await;

    // Eve is the admin of another organization, with a team of her own.
    let eve = sign_up(&app, "Eve").await;
    let (evil, eve_admin) = found(&app, &eve, "Evil").await;
    let eve_team = post(
        &app,
        &org_path(&evil, "/teams"),
        &eve_admin,
        json!({ "name": "Ops" }),
    )
    .await
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (alice_id, bob_id) = (alice.id.as_str(), bob.id.as_str());
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, String::new(), None),
        (
            Method::PATCH,
            String::new(),
            Some(json!({ "name": "Pwned" })),
        ),
        (Method::GET, "/members".into(), None),
        (Method::DELETE, format!("/members/{bob_id}"), None),
        (Method::GET, format!("/members/{alice_id}/profile"), None),
        (
            Method::PUT,
            format!("/members/{alice_id}/profile"),
            Some(json!({ "title": "Pwned" })),
        ),
        (Method::GET, "/invites".into(), None),
        (
            Method::POST,
            "/invites".into(),
            Some(json!({ "email": eve.email, "role": "admin" })),
        ),
        (Method::DELETE, format!("/invites/{invite_id}"), None),
        (Method::GET, "/teams".into(), None),
        (
            Method::POST,
            "/teams".into(),
            Some(json!({ "name": "Pwned" })),
        ),
        (Method::GET, format!("/teams/{team}/members"), None),
        (
            Method::POST,
            format!("/teams/{team}/members"),
            Some(json!({ "user_id": eve.id })),
        ),
        (
            Method::DELETE,
            format!("/teams/{team}/members/{bob_id}"),
            None,
        ),
        (Method::DELETE, format!("/teams/{team}"), None),
        (Method::POST, "/leave".into(), Some(json!({}))),
        (Method::DELETE, String::new(), None),
    ];
    let eve_plain = login(&app, &eve.email, None).await;
    for (method, rest, body) in &routes {
        // Acme's slug, with Eve's token for Evil, and with her token for no organization.
        for token in [&eve_admin, &eve_plain] {
            let answer = call(
                &app,
                method.clone(),
                &org_path(&acme, rest),
                token,
                body.clone(),
            )
            .await;
            assert!(
                matches!(answer.status, 403 | 404),
                "{method} {rest} on Acme answered Eve {}: {}",
                answer.status,
                answer.body
            );
        }
    }
    // Evil's slug with Acme's ids: the component scopes by Eve's organization, not by the ids.
    let foreign: Vec<(Method, String, Option<Value>)> = vec![
        (Method::DELETE, format!("/members/{bob_id}"), None),
        (Method::GET, format!("/members/{alice_id}/profile"), None),
        (
            Method::PUT,
            format!("/members/{alice_id}/profile"),
            Some(json!({ "title": "Pwned" })),
        ),
        (Method::DELETE, format!("/invites/{invite_id}"), None),
        (Method::GET, format!("/teams/{team}/members"), None),
        (
            Method::POST,
            format!("/teams/{team}/members"),
            Some(json!({ "user_id": eve.id })),
        ),
        (
            Method::DELETE,
            format!("/teams/{team}/members/{bob_id}"),
            None,
        ),
        (Method::DELETE, format!("/teams/{team}"), None),
        (
            Method::POST,
            format!("/teams/{eve_team}/members"),
            Some(json!({ "user_id": bob_id })),
        ),
    ];
    for (method, rest, body) in &foreign {
        let answer = call(
            &app,
            method.clone(),
            &org_path(&evil, rest),
            &eve_admin,
            body.clone(),
        )
        .await;
        assert!(
            matches!(answer.status, 403 | 404 | 422),
            "{method} {rest} on Evil with Acme's ids answered {}: {}",
            answer.status,
            answer.body
        );
    }
    // Acme's invite is not Eve's to accept, and internal routes are not reachable at all.
    let accept = post(
        &app,
        &format!("/org/api/invites/{invite_token}/accept"),
        &eve.token,
        json!({}),
    )
    .await;
    assert_eq!(accept.status, 403, "{}", accept.body);
    let internal = [
        format!("/org/internal/membership?user_id={alice_id}&org_slug={acme}"),
        format!("/org/internal/teams?user_id={bob_id}&org_id=x"),
        format!("/org/internal/teams/{team}?org_id=x"),
    ];
    for path in internal {
        assert_eq!(get(&app, &path, &eve_admin).await.status, 404, "{path}");
    }
    // Eve's own organization lists only Eve.
    let evil_members = members(&app, &evil, &eve_admin).await;
    assert_eq!(evil_members.len(), 1);

    let after = snapshot(&app, &acme, &admin, &team, &users).await;
    assert_eq!(before, after, "Eve changed Acme");
    assert_eq!(after["members"]["items"].as_array().unwrap().len(), 2);
}

on_both_engines!(nobody_gains_or_takes_away_more_than_they_hold_through_teams_or_removals);
async fn nobody_gains_or_takes_away_more_than_they_hold_through_teams_or_removals(engine: Engine) {
    let app = app(engine).await;
    let alice = sign_up(&app, "Alice").await;
    let (slug, admin) = found(&app, &alice, "Acme").await;
    // A custom role that manages teams and members and holds nothing else.
    let organizer = json!({
        "name": "organizer",
        "permissions": ["teams:read", "teams:write", "members:read", "members:write"],
    });
    post(&app, "/permission/api/roles", &admin, organizer)
        .await
        .expect(201);
    let mallory = join(&app, &slug, &admin, "Mallory", "organizer").await;
    let board = post(
        &app,
        &org_path(&slug, "/teams"),
        &admin,
        json!({ "name": "Board" }),
    )
    .await
    .expect(201);
    let board = board["id"].as_str().unwrap();
    let to_board = json!({ "team_id": board, "role": "admin" });
    post(&app, "/permission/api/assignments", &admin, to_board)
        .await
        .expect(201);

    // Joining the admins' team would make Mallory an admin: refused.
    let board_members = org_path(&slug, &format!("/teams/{board}/members"));
    let join_board = json!({ "user_id": mallory.id });
    post(&app, &board_members, &mallory.token, join_board)
        .await
        .expect(403);
    // Removing an admin takes away more than she holds: refused.
    delete(
        &app,
        &org_path(&slug, &format!("/members/{}", alice.id)),
        &mallory.token,
    )
    .await
    .expect(403);
    assert_eq!(members(&app, &slug, &admin).await.len(), 2);
    let listed = get(&app, &board_members, &admin).await.expect(200);
    assert_eq!(listed["items"], json!([]), "{listed}");

    // A team whose roles she holds, she may fill.
    let sales = post(
        &app,
        &org_path(&slug, "/teams"),
        &admin,
        json!({ "name": "Sales" }),
    )
    .await
    .expect(201);
    let sales_members = org_path(
        &slug,
        &format!("/teams/{}/members", sales["id"].as_str().unwrap()),
    );
    post(
        &app,
        &sales_members,
        &mallory.token,
        json!({ "user_id": mallory.id }),
    )
    .await
    .expect(201);
}
