//! The permission component with auth and org as a client meets them: built-in and custom
//! roles, assignments and scoped checks, no escalation, the last admin, other tenants, the
//! catalog with plugins' permissions, the sign-in policy, and rights that change at once.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, repo, wasm};
use crate::on_both_engines;

const PASSWORD: &str = "correct horse battery staple";

/// `policies/<name>.toml` as shipped, with the wasm path pointing at the built component.
pub(crate) fn shipped(name: &str) -> Policy {
    let text = std::fs::read_to_string(repo().join(format!("policies/{name}.toml"))).unwrap();
    let wasm_line = format!("wasm = {:?}", wasm(name).display().to_string());
    let toml = text
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => wasm_line.clone(),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Policy {
        name: name.into(),
        toml,
    }
}

/// The example component, declaring record permissions as a CRM plugin would.
fn hello_declaring(permissions: &str) -> Policy {
    Policy::new(
        "hello",
        "hello",
        "hello",
        &format!("capabilities = [\"database\", \"config\"]\npermissions = {permissions}"),
    )
}

async fn app(engine: Engine) -> TestApp {
    Spawn::new(
        engine,
        vec![
            shipped("auth"),
            shipped("org"),
            shipped("permission"),
            hello_declaring("[\"contacts:read\", \"contacts:write\"]"),
        ],
    )
    .start()
    .await
}

/// A signed-in user: their id, email and current token pair.
pub(crate) struct Person {
    id: String,
    email: String,
    pub(crate) access: String,
    refresh: String,
}

impl Person {
    fn take(&mut self, pair: &Value) {
        self.access = pair["access_token"].as_str().unwrap().into();
        self.refresh = pair["refresh_token"].as_str().unwrap().into();
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

pub(crate) async fn get(app: &TestApp, path: &str, who: &Person) -> reqwest::Response {
    send(app, Method::GET, path, &who.access, None).await
}

async fn post(app: &TestApp, path: &str, who: &Person, body: Value) -> reqwest::Response {
    send(app, Method::POST, path, &who.access, Some(body)).await
}

async fn put(app: &TestApp, path: &str, who: &Person, body: Value) -> reqwest::Response {
    send(app, Method::PUT, path, &who.access, Some(body)).await
}

async fn delete(app: &TestApp, path: &str, who: &Person) -> reqwest::Response {
    send(app, Method::DELETE, path, &who.access, None).await
}

pub(crate) async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A problem document with `status`; the body is shown when the status is another.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert_eq!(content_type, "application/problem+json", "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], status);
    body
}

/// The claims of an access token (its signature is the gateway's business).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn kind(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
}

async fn sign_up(app: &TestApp) -> Person {
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({ "email": email, "password": PASSWORD, "name": "Ada Lovelace" });
    json_of(app.post_json("/auth/register", &body).await, 201).await;
    let body = json!({ "email": email, "password": PASSWORD });
    let pair = json_of(app.post_json("/auth/login", &body).await, 200).await;
    let access = pair["access_token"].as_str().unwrap().to_string();
    Person {
        id: claims(&access)["sub"].as_str().unwrap().into(),
        email,
        access,
        refresh: pair["refresh_token"].as_str().unwrap().into(),
    }
}

async fn switch(app: &TestApp, who: &mut Person, slug: &str) {
    let pair = json_of(
        post(app, "/auth/switch-org", who, json!({ "org_slug": slug })).await,
        200,
    )
    .await;
    who.take(&pair);
}

async fn refresh(app: &TestApp, who: &mut Person) {
    let body = json!({ "refresh_token": who.refresh });
    let pair = json_of(app.post_json("/auth/refresh", &body).await, 200).await;
    who.take(&pair);
}

/// A new organization; its creator, switched into it, is its admin.
pub(crate) async fn organization(app: &TestApp) -> (String, Person) {
    let mut admin = sign_up(app).await;
    let slug = format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let body = json!({ "name": "Acme", "slug": slug });
    json_of(post(app, "/org/api/organizations", &admin, body).await, 201).await;
    switch(app, &mut admin, &slug).await;
    assert_eq!(claims(&admin.access)["permissions"], json!(["*"]));
    (slug, admin)
}

/// A new user invited with `role`, accepted and switched into the organization.
async fn invited(app: &TestApp, slug: &str, admin: &Person, role: &str) -> Person {
    let mut person = sign_up(app).await;
    let path = format!("/org/api/organizations/{slug}/invites");
    let body = json!({ "email": person.email, "role": role });
    let invite = json_of(post(app, &path, admin, body).await, 201).await;
    let token = invite["token"].as_str().unwrap();
    let accept = format!("/org/api/invites/{token}/accept");
    json_of(post(app, &accept, &person, json!({})).await, 200).await;
    switch(app, &mut person, slug).await;
    person
}

async fn team(app: &TestApp, slug: &str, admin: &Person, members: &[&Person]) -> String {
    let path = format!("/org/api/organizations/{slug}/teams");
    let team = json_of(
        post(
            app,
            &path,
            admin,
            json!({ "name": format!("Team {}", uuid::Uuid::new_v4().simple()) }),
        )
        .await,
        201,
    )
    .await;
    let id = team["id"].as_str().unwrap().to_string();
    for member in members {
        let path = format!("/org/api/organizations/{slug}/teams/{id}/members");
        let body = json!({ "user_id": member.id });
        assert_eq!(post(app, &path, admin, body).await.status(), 201);
    }
    id
}

async fn roles(app: &TestApp, who: &Person) -> Vec<Value> {
    let body = json_of(get(app, "/permission/api/roles", who).await, 200).await;
    body["items"].as_array().unwrap().clone()
}

async fn assign(app: &TestApp, admin: &Person, user_id: &str, role: &str) -> reqwest::Response {
    let body = json!({ "user_id": user_id, "role": role });
    post(app, "/permission/api/assignments", admin, body).await
}

async fn allowed(app: &TestApp, who: &Person, query: &str) -> bool {
    let path = format!("/permission/api/check?{query}");
    json_of(get(app, &path, who).await, 200).await["allowed"]
        .as_bool()
        .unwrap()
}

/// Waits (at most a second) until `who`'s access token is refused for changed rights.
async fn refused_for_changed_rights(app: &TestApp, who: &Person) {
    let start = Instant::now();
    loop {
        let response = get(app, "/permission/api/check?permission=contacts:read", who).await;
        if response.status() == 401 {
            assert_eq!(kind(&problem(response, 401).await), "rights-changed");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the old token still works a second after the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_engines!(built_in_roles_are_listed_with_their_scopes_and_permissions);
async fn built_in_roles_are_listed_with_their_scopes_and_permissions(engine: Engine) {
    let app = app(engine).await;
    let (_, admin) = organization(&app).await;
    let items = roles(&app, &admin).await;
    let role = |name: &str| items.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(
        role("admin"),
        json!({ "name": "admin", "permissions": ["*"], "scope": "org", "built_in": true })
    );
    assert_eq!(role("viewer")["permissions"], json!(["*:read"]));
    assert_eq!(role("viewer")["scope"], "org");
    assert_eq!(role("manager")["scope"], "team");
    assert_eq!(
        role("manager")["permissions"],
        json!([
            "*:read",
            "contacts:read",
            "contacts:write",
            "members:read",
            "roles:read",
            "teams:read"
        ])
    );
    assert_eq!(role("member")["scope"], "own");
    assert_eq!(
        role("member")["permissions"],
        json!([
            "contacts:read",
            "contacts:write",
            "members:read",
            "teams:read"
        ])
    );
}

#[tokio::test]
async fn a_permission_declared_in_a_policy_appears_in_the_catalog() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![
            shipped("auth"),
            shipped("org"),
            shipped("permission"),
            hello_declaring("[\"contacts:read\"]"),
        ],
    )
    .start()
    .await;
    let (_, admin) = organization(&app).await;
    let catalog = json_of(get(&app, "/permission/api/permissions", &admin).await, 200).await;
    let items = catalog["items"].as_array().unwrap();
    assert!(items.contains(&json!({ "permission": "contacts:read", "component": "hello" })));
    assert!(items.contains(&json!({ "permission": "roles:write", "component": "permission" })));
    assert!(items.contains(&json!({ "permission": "billing:manage", "component": "billing" })));
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["permission"].as_str().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
    assert!(!names.contains(&"contacts:write"));
}

on_both_engines!(custom_roles_are_created_changed_and_deleted_by_the_rules);
async fn custom_roles_are_created_changed_and_deleted_by_the_rules(engine: Engine) {
    let app = app(engine).await;
    let (_, admin) = organization(&app).await;
    let create = |body: Value| post(&app, "/permission/api/roles", &admin, body);

    for bad in ["S", "Sales", "sales team", "admin", "-x"] {
        let refused = problem(
            create(json!({ "name": bad, "permissions": ["contacts:read"] })).await,
            422,
        )
        .await;
        assert_eq!(refused["errors"][0]["field"], "name", "{bad}: {refused}");
    }
    let refused = problem(
        create(json!({ "name": "sales", "permissions": ["contacts:read", "Contacts:Write"] }))
            .await,
        422,
    )
    .await;
    assert_eq!(refused["errors"][0]["field"], "permissions[1]");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("Contacts:Write"),
        "{refused}"
    );

    let created =
        create(json!({ "name": "sales", "permissions": ["contacts:*", "members:read"] })).await;
    let created = json_of(created, 201).await;
    assert_eq!(
        created,
        json!({ "name": "sales", "permissions": ["contacts:*", "members:read"], "scope": "org", "built_in": false })
    );
    let again = create(json!({ "name": "sales", "permissions": ["contacts:read"] })).await;
    problem(again, 409).await;
    assert!(roles(&app, &admin).await.contains(&created));

    let changed = put(
        &app,
        "/permission/api/roles/sales",
        &admin,
        json!({ "permissions": ["contacts:read"] }),
    )
    .await;
    assert_eq!(
        json_of(changed, 200).await["permissions"],
        json!(["contacts:read"])
    );
    let bad = put(
        &app,
        "/permission/api/roles/sales",
        &admin,
        json!({ "permissions": ["nope"] }),
    )
    .await;
    problem(bad, 422).await;
    let unknown = put(
        &app,
        "/permission/api/roles/ghost",
        &admin,
        json!({ "permissions": ["contacts:read"] }),
    )
    .await;
    problem(unknown, 404).await;
    for built_in in ["admin", "viewer"] {
        let path = format!("/permission/api/roles/{built_in}");
        let changed = put(
            &app,
            &path,
            &admin,
            json!({ "permissions": ["contacts:read"] }),
        )
        .await;
        assert!(
            problem(changed, 403).await["detail"]
                .as_str()
                .unwrap()
                .contains("built-in")
        );
        problem(delete(&app, &path, &admin).await, 403).await;
    }

    assert_eq!(
        delete(&app, "/permission/api/roles/sales", &admin)
            .await
            .status(),
        204
    );
    problem(
        delete(&app, "/permission/api/roles/sales", &admin).await,
        404,
    )
    .await;
    assert_eq!(roles(&app, &admin).await.len(), 4);
}

on_both_engines!(checks_apply_the_own_team_and_org_scopes);
async fn checks_apply_the_own_team_and_org_scopes(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let mut manager = invited(&app, &slug, &admin, "manager").await;
    let mut member = invited(&app, &slug, &admin, "member").await;
    let viewer = invited(&app, &slug, &admin, "viewer").await;
    let theirs = team(&app, &slug, &admin, &[&manager]).await;
    let other = team(&app, &slug, &admin, &[]).await;
    // Joining a team changes what a member's roles reach: the org component says so.
    refused_for_changed_rights(&app, &manager).await;
    refresh(&app, &mut manager).await;
    assert!(
        claims(&member.access)["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("contacts:write"))
    );

    let write = "permission=contacts:write";
    assert!(allowed(&app, &manager, &format!("{write}&team_id={theirs}")).await);
    assert!(!allowed(&app, &manager, &format!("{write}&team_id={other}")).await);
    assert!(allowed(&app, &manager, &format!("{write}&owner_id={}", manager.id)).await);
    assert!(allowed(&app, &manager, "permission=members:read").await);
    assert!(!allowed(&app, &manager, "permission=members:write").await);

    assert!(allowed(&app, &member, &format!("{write}&owner_id={}", member.id)).await);
    assert!(!allowed(&app, &member, &format!("{write}&owner_id={}", viewer.id)).await);
    assert!(!allowed(&app, &member, &format!("{write}&team_id={theirs}")).await);

    assert!(
        allowed(
            &app,
            &viewer,
            &format!("permission=contacts:read&owner_id={}", member.id)
        )
        .await
    );
    assert!(!allowed(&app, &viewer, &format!("{write}&owner_id={}", viewer.id)).await);
    assert!(allowed(&app, &admin, &format!("{write}&team_id={other}")).await);
    problem(
        get(&app, "/permission/api/check?permission=contacts", &member).await,
        422,
    )
    .await;

    // A role given to a team reaches its members, and is gone when taken from the team.
    let path = format!("/org/api/organizations/{slug}/teams/{other}/members");
    assert_eq!(
        post(&app, &path, &admin, json!({ "user_id": member.id }))
            .await
            .status(),
        201
    );
    let given = post(
        &app,
        "/permission/api/assignments",
        &admin,
        json!({ "team_id": other, "role": "manager" }),
    )
    .await;
    assert_eq!(json_of(given, 201).await["team_id"], other.as_str());
    refused_for_changed_rights(&app, &member).await;
    refresh(&app, &mut member).await;
    let roles = claims(&member.access)["roles"].clone();
    assert!(
        roles.as_array().unwrap().contains(&json!("manager")),
        "{roles}"
    );
    assert!(allowed(&app, &member, &format!("{write}&team_id={other}")).await);
    let path = format!("/permission/api/teams/{other}/roles/manager");
    assert_eq!(delete(&app, &path, &admin).await.status(), 204);
    refused_for_changed_rights(&app, &member).await;
    refresh(&app, &mut member).await;
    assert!(!allowed(&app, &member, &format!("{write}&team_id={other}")).await);
    problem(delete(&app, &path, &admin).await, 404).await;
}

on_both_engines!(only_roles_write_manages_roles_and_nobody_grants_above_themselves);
async fn only_roles_write_manages_roles_and_nobody_grants_above_themselves(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let manager = invited(&app, &slug, &admin, "manager").await;
    let member = invited(&app, &slug, &admin, "member").await;

    for who in [&manager, &member] {
        let create = post(
            &app,
            "/permission/api/roles",
            who,
            json!({ "name": "mine", "permissions": ["contacts:read"] }),
        )
        .await;
        problem(create, 403).await;
        problem(assign(&app, who, &who.id, "viewer").await, 403).await;
        let path = format!("/permission/api/assignments/{}/member", member.id);
        problem(delete(&app, &path, who).await, 403).await;
    }
    problem(get(&app, "/permission/api/roles", &member).await, 403).await;

    // A delegate may manage roles, but only within what they hold themselves.
    let body = json!({ "name": "delegate", "permissions": ["roles:read", "roles:write", "contacts:read"] });
    json_of(post(&app, "/permission/api/roles", &admin, body).await, 201).await;
    let mut delegate = invited(&app, &slug, &admin, "delegate").await;
    assert_eq!(claims(&delegate.access)["roles"], json!(["delegate"]));
    let create = |body: Value| post(&app, "/permission/api/roles", &delegate, body);
    json_of(
        create(json!({ "name": "reader", "permissions": ["contacts:read"] })).await,
        201,
    )
    .await;
    let above = problem(
        create(json!({ "name": "writer", "permissions": ["contacts:read", "contacts:write"] }))
            .await,
        403,
    )
    .await;
    assert!(
        above["detail"]
            .as_str()
            .unwrap()
            .contains("`contacts:write`"),
        "{above}"
    );
    problem(
        create(json!({ "name": "wide", "permissions": ["contacts:*"] })).await,
        403,
    )
    .await;
    for role in ["admin", "viewer", "manager", "member"] {
        problem(assign(&app, &delegate, &member.id, role).await, 403).await;
    }
    json_of(assign(&app, &delegate, &member.id, "reader").await, 201).await;
    let path = format!("/permission/api/assignments/{}/admin", admin.id);
    problem(delete(&app, &path, &delegate).await, 403).await;
    let widen = put(
        &app,
        "/permission/api/roles/delegate",
        &delegate,
        json!({ "permissions": ["*"] }),
    )
    .await;
    problem(widen, 403).await;
    // Nothing the refusals touched changed.
    refresh(&app, &mut delegate).await;
    assert_eq!(
        claims(&delegate.access)["permissions"],
        json!(["contacts:read", "roles:read", "roles:write"])
    );
    let admins = json_of(
        get(&app, "/permission/api/assignments?role=admin", &admin).await,
        200,
    )
    .await;
    assert_eq!(admins["items"].as_array().unwrap().len(), 1);
}

on_both_engines!(the_last_admin_and_a_role_in_use_stay);
async fn the_last_admin_and_a_role_in_use_stay(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let member = invited(&app, &slug, &admin, "member").await;
    let own_admin = format!("/permission/api/assignments/{}/admin", admin.id);
    let last = problem(delete(&app, &own_admin, &admin).await, 409).await;
    assert!(
        last["detail"].as_str().unwrap().contains("last admin"),
        "{last}"
    );

    json_of(assign(&app, &admin, &member.id, "admin").await, 201).await;
    problem(assign(&app, &admin, &member.id, "admin").await, 409).await;
    assert_eq!(delete(&app, &own_admin, &admin).await.status(), 204);
    let mut second = member;
    refused_for_changed_rights(&app, &second).await;
    refresh(&app, &mut second).await;
    let theirs = format!("/permission/api/assignments/{}/admin", second.id);
    problem(delete(&app, &theirs, &second).await, 409).await;

    let body = json!({ "name": "auditor", "permissions": ["audit:read"] });
    json_of(
        post(&app, "/permission/api/roles", &second, body).await,
        201,
    )
    .await;
    json_of(assign(&app, &second, &second.id, "auditor").await, 201).await;
    refused_for_changed_rights(&app, &second).await;
    refresh(&app, &mut second).await;
    let in_use = problem(
        delete(&app, "/permission/api/roles/auditor", &second).await,
        409,
    )
    .await;
    assert!(
        in_use["detail"].as_str().unwrap().contains("assigned"),
        "{in_use}"
    );
    let path = format!("/permission/api/assignments/{}/auditor", second.id);
    json_of(delete(&app, &path, &second).await, 204).await;
    refused_for_changed_rights(&app, &second).await;
    refresh(&app, &mut second).await;
    assert_eq!(
        delete(&app, "/permission/api/roles/auditor", &second)
            .await
            .status(),
        204
    );
    problem(assign(&app, &second, &second.id, "auditor").await, 422).await;
    let unknown = assign(
        &app,
        &second,
        "0190a6e2-7c1e-7000-8000-000000000000",
        "member",
    )
    .await;
    problem(unknown, 404).await;
}

on_both_engines!(another_tenants_admin_sees_and_changes_nothing);
async fn another_tenants_admin_sees_and_changes_nothing(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let mut member = invited(&app, &slug, &admin, "member").await;
    let sales = team(&app, &slug, &admin, &[&member]).await;
    let body = json!({ "name": "sales", "permissions": ["contacts:read"] });
    json_of(post(&app, "/permission/api/roles", &admin, body).await, 201).await;
    json_of(assign(&app, &admin, &member.id, "sales").await, 201).await;
    refused_for_changed_rights(&app, &member).await;
    refresh(&app, &mut member).await;
    let before = json_of(get(&app, "/permission/api/assignments", &admin).await, 200).await;
    let (_, outsider) = organization(&app).await;

    assert_eq!(roles(&app, &outsider).await.len(), 4);
    let listed = json_of(
        get(&app, "/permission/api/assignments", &outsider).await,
        200,
    )
    .await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only their own admin: {listed}"
    );
    let probes = [
        put(
            &app,
            "/permission/api/roles/sales",
            &outsider,
            json!({ "permissions": ["*"] }),
        )
        .await,
        delete(&app, "/permission/api/roles/sales", &outsider).await,
        assign(&app, &outsider, &member.id, "member").await,
        post(
            &app,
            "/permission/api/assignments",
            &outsider,
            json!({ "team_id": sales, "role": "member" }),
        )
        .await,
        delete(
            &app,
            &format!("/permission/api/assignments/{}/sales", member.id),
            &outsider,
        )
        .await,
        delete(
            &app,
            &format!("/permission/api/assignments/{}/member", member.id),
            &outsider,
        )
        .await,
        delete(
            &app,
            &format!("/permission/api/assignments/{}/admin", admin.id),
            &outsider,
        )
        .await,
        delete(
            &app,
            &format!("/permission/api/teams/{sales}/roles/member"),
            &outsider,
        )
        .await,
    ];
    for response in probes {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(matches!(status, 403 | 404), "{status} {body}");
    }
    // The internal routes are not the gateway's to serve, whatever the token.
    let grants = format!("/permission/internal/grants?user_id={}&org_id=x", member.id);
    assert_eq!(get(&app, &grants, &outsider).await.status(), 404);
    let forget = post(
        &app,
        "/permission/internal/forget",
        &outsider,
        json!({ "org_id": "x" }),
    )
    .await;
    assert_eq!(forget.status(), 404);

    let after = json_of(get(&app, "/permission/api/assignments", &admin).await, 200).await;
    assert_eq!(before, after);
    assert!(
        roles(&app, &admin)
            .await
            .iter()
            .any(|r| r["name"] == "sales")
    );
    assert!(
        allowed(
            &app,
            &member,
            &format!("permission=contacts:read&owner_id={}", member.id)
        )
        .await
    );
}

on_both_engines!(an_organization_can_require_two_factor_sign_in);
async fn an_organization_can_require_two_factor_sign_in(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let member = invited(&app, &slug, &admin, "member").await;
    let policy = json_of(get(&app, "/permission/api/policy", &admin).await, 200).await;
    assert_eq!(policy, json!({ "require_mfa": false }));
    problem(
        put(
            &app,
            "/permission/api/policy",
            &member,
            json!({ "require_mfa": true }),
        )
        .await,
        403,
    )
    .await;
    problem(
        put(
            &app,
            "/permission/api/policy",
            &admin,
            json!({ "require_mfa": "yes" }),
        )
        .await,
        422,
    )
    .await;

    let set = put(
        &app,
        "/permission/api/policy",
        &admin,
        json!({ "require_mfa": true }),
    )
    .await;
    assert_eq!(json_of(set, 200).await, json!({ "require_mfa": true }));
    assert_eq!(
        json_of(get(&app, "/permission/api/policy", &admin).await, 200).await["require_mfa"],
        true
    );
    let switched = post(
        &app,
        "/auth/switch-org",
        &member,
        json!({ "org_slug": slug }),
    )
    .await;
    let refused = problem(switched, 403).await;
    assert!(
        kind(&refused).ends_with("mfa-required-by-organization"),
        "{refused}"
    );
}

on_both_engines!(a_role_change_stops_old_tokens_within_a_second);
async fn a_role_change_stops_old_tokens_within_a_second(engine: Engine) {
    let app = app(engine).await;
    let (slug, admin) = organization(&app).await;
    let mut member = invited(&app, &slug, &admin, "member").await;
    assert_eq!(claims(&member.access)["roles"], json!(["member"]));

    json_of(assign(&app, &admin, &member.id, "viewer").await, 201).await;
    refused_for_changed_rights(&app, &member).await;
    refresh(&app, &mut member).await;
    assert_eq!(claims(&member.access)["roles"], json!(["member", "viewer"]));
    assert!(
        claims(&member.access)["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("*:read"))
    );
    json_of(get(&app, "/permission/api/roles", &member).await, 200).await;

    let path = format!("/permission/api/assignments/{}/viewer", member.id);
    assert_eq!(delete(&app, &path, &admin).await.status(), 204);
    refused_for_changed_rights(&app, &member).await;
    refresh(&app, &mut member).await;
    let permissions = claims(&member.access)["permissions"].clone();
    assert_eq!(
        permissions,
        json!([
            "contacts:read",
            "contacts:write",
            "members:read",
            "teams:read"
        ])
    );
    problem(get(&app, "/permission/api/roles", &member).await, 403).await;
}
