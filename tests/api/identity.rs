//! The auth component as a REST client meets it: accounts, sessions, refresh-token rotation,
//! logout and revocation, password change, lockout and TOTP, with its shipped policy.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};
use totp_rs::TOTP;

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem, repo, wasm};
use crate::on_both_engines;

const PASSWORD: &str = "correct horse battery staple";

/// `policies/auth.toml` as shipped, with the wasm path pointing at the built component.
pub fn auth_policy() -> Policy {
    let shipped = std::fs::read_to_string(repo().join("policies/auth.toml")).unwrap();
    let wasm_line = format!("wasm = {:?}", wasm("auth").display().to_string());
    let toml = shipped
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => wasm_line.clone(),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Policy {
        name: "auth".into(),
        toml,
    }
}

async fn app(engine: Engine) -> TestApp {
    Spawn::new(engine, vec![auth_policy()]).start().await
}

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn register(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/auth/register",
        None,
        json!({ "email": email, "password": password, "name": "Ada Lovelace" }),
    )
    .await
}

async fn login_with(app: &TestApp, body: Value, device: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/login"))
        .header("user-agent", device)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Logs in and returns the token pair.
async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    let response = login_with(
        app,
        json!({ "email": email, "password": password }),
        "test-client",
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// A registered user and a logged-in token pair.
async fn signed_up(app: &TestApp) -> (String, Value) {
    let email = unique_email();
    assert_eq!(register(app, &email, PASSWORD).await.status(), 201);
    let pair = login(app, &email, PASSWORD).await;
    (email, pair)
}

fn text<'a>(pair: &'a Value, field: &str) -> &'a str {
    pair[field].as_str().unwrap()
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

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    post(
        app,
        "/auth/refresh",
        None,
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

on_both_engines!(a_user_registers_logs_in_and_reads_their_account);
async fn a_user_registers_logs_in_and_reads_their_account(engine: Engine) {
    let app = app(engine).await;
    let email = unique_email();
    let created = register(&app, &email.to_uppercase(), PASSWORD).await;
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(text(&user, "id")).is_ok());
    assert_eq!(
        user["email"],
        email.as_str(),
        "emails are kept in lower case"
    );
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["status"], "active");
    let created_at = text(&user, "created_at");
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z') && created_at.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {created_at}"
    );

    let taken = problem(register(&app, &email, PASSWORD).await, 409).await;
    assert!(text(&taken, "detail").contains("already exists"));

    let pair = login(&app, &email, PASSWORD).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    assert_eq!(pair["user_info"]["id"], user["id"]);
    assert_eq!(pair["user_info"]["email"], email.as_str());
    assert_eq!(pair["user_info"]["name"], "Ada Lovelace");
    assert!(text(&pair, "refresh_token").len() >= 43);
    let claims = claims(text(&pair, "access_token"));
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["email"], email.as_str());
    assert_eq!(claims["iss"], "truevalue-auth");
    assert_eq!(claims["aud"], "truevalue-platform");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert!(uuid::Uuid::parse_str(claims["session_id"].as_str().unwrap()).is_ok());
    assert!(
        claims.get("org_id").is_none_or(Value::is_null),
        "no organization yet: {claims}"
    );

    let me = get(&app, "/auth/me", text(&pair, "access_token")).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["mfa_enabled"], false);

    // Everything but register, login and refresh needs a token.
    problem(app.get("/auth/me").await, 401).await;
    problem(post(&app, "/auth/logout", None, json!({})).await, 401).await;
}

#[tokio::test]
async fn weak_passwords_and_bad_input_are_refused_and_change_nothing() {
    let app = app(Engine::Sqlite).await;
    let email = unique_email();
    let cases = [
        ("short1!", "password-too-short"),
        ("password1", "password-too-common"),
        ("Iloveyou", "password-too-common"),
        (email.as_str(), "password-is-email"),
    ];
    for (password, rule) in cases {
        let refused = problem(register(&app, &email, password).await, 422).await;
        assert_eq!(kind(&refused), rule, "{password}: {refused}");
    }
    let too_short = problem(register(&app, &email, "short").await, 422).await;
    assert!(
        text(&too_short, "detail").contains("12"),
        "the message recommends 12 characters: {too_short}"
    );
    let too_long = problem(register(&app, &email, &"x".repeat(129)).await, 422).await;
    assert_eq!(kind(&too_long), "password-too-long");

    problem(register(&app, "not an email", PASSWORD).await, 422).await;
    let missing = post(&app, "/auth/register", None, json!({ "email": email })).await;
    problem(missing, 422).await;
    let garbage = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(garbage, 400).await;

    // Nothing was created by the refused attempts.
    let refused = login_with(&app, json!({ "email": email, "password": "short1!" }), "t").await;
    problem(refused, 401).await;

    // A 64-character passphrase is fine, with no composition rules.
    let long = "a long passphrase of plain lower case words is perfectly fine ok";
    assert_eq!(long.chars().count(), 64);
    assert_eq!(register(&app, &email, long).await.status(), 201);
    login(&app, &email, long).await;
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_look_the_same() {
    let app = app(Engine::Sqlite).await;
    let (email, _) = signed_up(&app).await;
    let attempt = |email: String| {
        let app = &app;
        async move {
            let started = Instant::now();
            let body = json!({ "email": email, "password": "not the password" });
            let response = login_with(app, body, "t").await;
            let elapsed = started.elapsed();
            let mut body = problem(response, 401).await;
            body.as_object_mut().unwrap().remove("request_id");
            (body, elapsed)
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // Four wrong passwords, one short of a lock; then a success clears the count.
        for _ in 0..4 {
            let (body_known, time_known) = attempt(email.clone()).await;
            let (body_unknown, time_unknown) = attempt(unique_email()).await;
            assert_eq!(body_known, body_unknown, "the same answer for both");
            known.push(time_known);
            unknown.push(time_unknown);
        }
        login(&app, &email, PASSWORD).await;
    }
    known.sort();
    unknown.sort();
    // An unknown email costs a password hash too, so the medians are of the same order; without
    // it an unknown email answers an order of magnitude sooner.
    let (known, unknown) = (known[4], unknown[4]);
    assert!(
        unknown * 3 > known && known * 3 > unknown,
        "median wrong password {known:?}, unknown email {unknown:?}"
    );
}

on_both_engines!(refresh_rotates_and_a_reused_token_revokes_its_session);
async fn refresh_rotates_and_a_reused_token_revokes_its_session(engine: Engine) {
    let app = app(engine).await;
    let (email, first) = signed_up(&app).await;
    let other_device = login(&app, &email, PASSWORD).await;

    let second = refresh(&app, text(&first, "refresh_token")).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(
        claims(text(&second, "access_token"))["session_id"],
        claims(text(&first, "access_token"))["session_id"],
        "a refresh stays in its session"
    );
    assert_eq!(
        get(&app, "/auth/me", text(&second, "access_token"))
            .await
            .status(),
        200
    );

    // The first token is spent: presenting it again revokes the whole session…
    let reused = problem(refresh(&app, text(&first, "refresh_token")).await, 401).await;
    assert_eq!(kind(&reused), "invalid-refresh-token");
    assert!(text(&reused, "detail").contains("revoked"), "{reused}");
    problem(refresh(&app, text(&second, "refresh_token")).await, 401).await;
    problem(
        get(&app, "/auth/me", text(&second, "access_token")).await,
        401,
    )
    .await;
    problem(
        get(&app, "/auth/me", text(&first, "access_token")).await,
        401,
    )
    .await;
    // …and only that session.
    assert_eq!(
        get(&app, "/auth/me", text(&other_device, "access_token"))
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh(&app, text(&other_device, "refresh_token"))
            .await
            .status(),
        200
    );

    problem(refresh(&app, "made-up").await, 401).await;
    problem(post(&app, "/auth/refresh", None, json!({})).await, 422).await;
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let app = app(Engine::Sqlite).await;
    let (_, pair) = signed_up(&app).await;
    let token = text(&pair, "access_token");
    assert_eq!(get(&app, "/auth/me", token).await.status(), 200);
    let out = post(&app, "/auth/logout", Some(token), json!({})).await;
    assert_eq!(out.status(), 204);
    let refused = problem(get(&app, "/auth/me", token).await, 401).await;
    assert!(text(&refused, "detail").contains("revoked"), "{refused}");
    problem(refresh(&app, text(&pair, "refresh_token")).await, 401).await;
}

on_both_engines!(sessions_show_device_and_ip_and_can_be_revoked);
async fn sessions_show_device_and_ip_and_can_be_revoked(engine: Engine) {
    let app = app(engine).await;
    let email = unique_email();
    assert_eq!(register(&app, &email, PASSWORD).await.status(), 201);
    let body = json!({ "email": email, "password": PASSWORD });
    let phone: Value = login_with(&app, body.clone(), "Phone/1.0")
        .await
        .json()
        .await
        .unwrap();
    let laptop: Value = login_with(&app, body, "Laptop/2.0")
        .await
        .json()
        .await
        .unwrap();
    let phone_token = text(&phone, "access_token");
    let laptop_session = claims(text(&laptop, "access_token"))["session_id"].clone();

    let list: Value = get(&app, "/auth/sessions", phone_token)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(list["next_cursor"], Value::Null);
    let devices: Vec<&str> = items
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    assert!(
        devices.contains(&"Phone/1.0") && devices.contains(&"Laptop/2.0"),
        "{list}"
    );
    for session in items {
        assert_eq!(session["ip"], "127.0.0.1");
        assert!(session["last_seen_at"].is_string() && session["created_at"].is_string());
        assert_eq!(session["current"], session["device"] == "Phone/1.0");
    }

    // One per page, then the next with the cursor.
    let page: Value = get(&app, "/auth/sessions?limit=1", phone_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = text(&page, "next_cursor").to_string();
    let next: Value = get(
        &app,
        &format!("/auth/sessions?limit=1&cursor={cursor}"),
        phone_token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert_ne!(next["items"][0]["id"], page["items"][0]["id"]);
    problem(
        get(&app, "/auth/sessions?limit=500", phone_token).await,
        400,
    )
    .await;

    // Revoking the laptop's session from the phone stops the laptop's token at once.
    let path = format!("/auth/sessions/{}", laptop_session.as_str().unwrap());
    let revoke = |path: String, token: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(revoke(path.clone(), phone_token.into()).await.status(), 204);
    problem(
        get(&app, "/auth/me", text(&laptop, "access_token")).await,
        401,
    )
    .await;
    problem(refresh(&app, text(&laptop, "refresh_token")).await, 401).await;
    problem(revoke(path, phone_token.into()).await, 404).await;
    let list: Value = get(&app, "/auth/sessions", phone_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Another user's session is not found, and stays alive.
    let (_, stranger) = signed_up(&app).await;
    let stranger_session = claims(text(&stranger, "access_token"))["session_id"].clone();
    let path = format!("/auth/sessions/{}", stranger_session.as_str().unwrap());
    problem(revoke(path, phone_token.into()).await, 404).await;
    assert_eq!(
        get(&app, "/auth/me", text(&stranger, "access_token"))
            .await
            .status(),
        200
    );
}

on_both_engines!(changing_the_password_ends_the_other_sessions);
async fn changing_the_password_ends_the_other_sessions(engine: Engine) {
    let app = app(engine).await;
    let (email, here) = signed_up(&app).await;
    let elsewhere = login(&app, &email, PASSWORD).await;
    let token = text(&here, "access_token");
    let change = |current: &str, new: &str| {
        post(
            &app,
            "/auth/password/change",
            Some(token),
            json!({ "current_password": current, "new_password": new }),
        )
    };
    problem(
        change("wrong password", "a brand new passphrase").await,
        403,
    )
    .await;
    let weak = problem(change(PASSWORD, "password123").await, 422).await;
    assert_eq!(kind(&weak), "password-too-common");
    assert_eq!(
        get(&app, "/auth/me", text(&elsewhere, "access_token"))
            .await
            .status(),
        200
    );

    assert_eq!(
        change(PASSWORD, "a brand new passphrase").await.status(),
        204
    );
    assert_eq!(
        get(&app, "/auth/me", token).await.status(),
        200,
        "this session stays"
    );
    problem(
        get(&app, "/auth/me", text(&elsewhere, "access_token")).await,
        401,
    )
    .await;
    problem(refresh(&app, text(&elsewhere, "refresh_token")).await, 401).await;
    let old = login_with(&app, json!({ "email": email, "password": PASSWORD }), "t").await;
    problem(old, 401).await;
    login(&app, &email, "a brand new passphrase").await;
}

on_both_engines!(five_failures_lock_the_account_even_for_the_right_password);
async fn five_failures_lock_the_account_even_for_the_right_password(engine: Engine) {
    let app = app(engine).await;
    let (email, _) = signed_up(&app).await;
    let wrong = json!({ "email": email, "password": "not the password" });
    for _ in 0..5 {
        problem(login_with(&app, wrong.clone(), "t").await, 401).await;
    }
    let right = json!({ "email": email, "password": PASSWORD });
    let mut locked = problem(login_with(&app, right, "t").await, 423).await;
    assert!(text(&locked, "detail").contains("15 minutes"), "{locked}");

    // An address without an account locks alike, so the lock does not tell which exist.
    let unknown = json!({ "email": unique_email(), "password": "not the password" });
    for _ in 0..5 {
        problem(login_with(&app, unknown.clone(), "t").await, 401).await;
    }
    let mut also_locked = problem(login_with(&app, unknown, "t").await, 423).await;
    locked.as_object_mut().unwrap().remove("request_id");
    also_locked.as_object_mut().unwrap().remove("request_id");
    assert_eq!(locked, also_locked);
}

on_both_engines!(a_lock_runs_out_and_the_count_starts_afresh);
async fn a_lock_runs_out_and_the_count_starts_afresh(engine: Engine) {
    let mut policy = auth_policy();
    policy.toml = policy
        .toml
        .replace("lockout_seconds = 900", "lockout_seconds = 2");
    let app = Spawn::new(engine, vec![policy]).start().await;
    let (email, _) = signed_up(&app).await;
    let wrong = json!({ "email": email, "password": "not the password" });
    let right = json!({ "email": email, "password": PASSWORD });
    for _ in 0..5 {
        problem(login_with(&app, wrong.clone(), "t").await, 401).await;
    }
    let locked = problem(login_with(&app, right.clone(), "t").await, 423).await;
    assert!(text(&locked, "detail").contains("2 seconds"), "{locked}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // One more failure does not lock again at once: the count started afresh.
    problem(login_with(&app, wrong.clone(), "t").await, 401).await;
    assert_eq!(login_with(&app, right, "t").await.status(), 200);
}

on_both_engines!(twenty_parallel_attempts_cannot_pass_the_lockout);
async fn twenty_parallel_attempts_cannot_pass_the_lockout(engine: Engine) {
    let app = app(engine).await;
    let (email, _) = signed_up(&app).await;
    let wrong = json!({ "email": email, "password": "not the password" });
    let attempts = (0..20).map(|_| login_with(&app, wrong.clone(), "t"));
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let locked = statuses.iter().filter(|&&s| s == 423).count();
    assert_eq!((checked, locked), (5, 15), "{statuses:?}");
    let right = json!({ "email": email, "password": PASSWORD });
    problem(login_with(&app, right, "t").await, 423).await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

on_both_engines!(totp_guards_the_login_and_each_code_works_once);
async fn totp_guards_the_login_and_each_code_works_once(engine: Engine) {
    let app = app(engine).await;
    let (email, pair) = signed_up(&app).await;
    let token = text(&pair, "access_token");

    let setup = post(&app, "/auth/mfa/totp/setup", Some(token), json!({})).await;
    assert_eq!(setup.status(), 200);
    let setup: Value = setup.json().await.unwrap();
    // An independent implementation reads the URI an authenticator app would scan.
    let generator = TOTP::from_url(text(&setup, "otpauth_uri")).unwrap();
    assert_eq!(generator.get_secret_base32(), text(&setup, "secret"));
    assert!(generator.secret.len() >= 20, "at least 160 bits");
    assert_eq!((generator.digits, generator.step), (6, 30));
    assert_eq!(generator.account_name, email);
    let code = |offset: i64| generator.generate(now().saturating_add_signed(offset));

    let enable = |code: String| {
        post(
            &app,
            "/auth/mfa/totp/enable",
            Some(token),
            json!({ "code": code }),
        )
    };
    let wrong_code = if code(0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let refused = problem(enable(wrong_code.into()).await, 422).await;
    assert_eq!(kind(&refused), "mfa-invalid");
    let enabled = enable(code(0)).await;
    assert_eq!(enabled.status(), 200);
    let enabled: Value = enabled.json().await.unwrap();
    let recovery: Vec<String> = enabled["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(
        recovery
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        10
    );
    let me: Value = get(&app, "/auth/me", token).await.json().await.unwrap();
    assert_eq!(me["mfa_enabled"], true);
    // The secret is not in the component's database in the clear, in any encoding.
    let stored = stored_totp_secret(&app, engine, &email).await;
    let raw = generator.secret.clone();
    assert!(
        !stored.to_lowercase().contains(&hex::encode(&raw)),
        "{stored}"
    );
    assert!(
        !stored.to_uppercase().contains(text(&setup, "secret")),
        "{stored}"
    );

    let attempt = |mfa_code: Option<&str>| {
        let mut body = json!({ "email": email, "password": PASSWORD });
        if let Some(code) = mfa_code {
            body["mfa_code"] = code.into();
        }
        login_with(&app, body, "t")
    };
    // Without a code, as often as it takes: the password was right, nothing counts as failed.
    for _ in 0..6 {
        let required = problem(attempt(None).await, 401).await;
        assert_eq!(kind(&required), "mfa-required");
    }
    assert_eq!(
        kind(&problem(attempt(Some(wrong_code)).await, 401).await),
        "mfa-invalid"
    );

    // The next step's code (within the ±1 step window) works once, then never again.
    let next = code(30);
    assert_eq!(attempt(Some(&next)).await.status(), 200);
    assert_eq!(
        kind(&problem(attempt(Some(&next)).await, 401).await),
        "mfa-invalid"
    );

    // A recovery code works once, in any case and with or without its dash.
    let recovery_code = recovery[0].to_uppercase().replace('-', "");
    assert_eq!(attempt(Some(&recovery_code)).await.status(), 200);
    assert_eq!(
        kind(&problem(attempt(Some(&recovery[0])).await, 401).await),
        "mfa-invalid"
    );

    // Disabling takes the password and a code.
    let disable = |password: &str, code: &str| {
        post(
            &app,
            "/auth/mfa/disable",
            Some(token),
            json!({ "password": password, "code": code }),
        )
    };
    problem(disable("not the password", &recovery[1]).await, 403).await;
    problem(disable(PASSWORD, "not-a-code").await, 403).await;
    assert_eq!(disable(PASSWORD, &recovery[1]).await.status(), 204);
    assert_eq!(attempt(None).await.status(), 200);
}

/// The `totp_secret` column of the account, read straight from the component's database.
async fn stored_totp_secret(app: &TestApp, engine: Engine, email: &str) -> String {
    let sql = "SELECT totp_secret FROM users WHERE email = $1";
    match engine {
        Engine::Sqlite => {
            let path = app.data_dir.join("db/auth.sqlite");
            let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let value: String = sqlx::query_scalar(&sql.replace("users", "main.users"))
                .bind(email)
                .fetch_one(&db)
                .await
                .unwrap();
            db.close().await;
            value
        }
        Engine::Postgres => {
            let db = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
                .await
                .unwrap();
            let value: String = sqlx::query_scalar(&sql.replace("users", "auth.users"))
                .bind(email)
                .fetch_one(&db)
                .await
                .unwrap();
            db.close().await;
            value
        }
    }
}

on_both_engines!(control_and_direction_characters_are_refused_in_names_and_addresses);
async fn control_and_direction_characters_are_refused_in_names_and_addresses(engine: Engine) {
    let app = app(engine).await;
    let plain = unique_email();
    for (email, name) in [
        (format!("nul\u{0}{plain}"), "Ada".to_string()),
        (format!("{plain}\u{202E}moc.evil"), "Ada".to_string()),
        (format!("esc\u{1b}{plain}"), "Ada".to_string()),
        (plain.clone(), "Ada\u{0}Lovelace".to_string()),
        (plain.clone(), "Ada \u{202E}ecalevoL".to_string()),
    ] {
        let body = json!({ "email": email, "password": PASSWORD, "name": name });
        let refused = post(&app, "/auth/register", None, body).await;
        let problem = problem(refused, 422).await;
        assert_eq!(kind(&problem), "validation", "{email:?} {name:?}");
    }
    // Nothing was stored: the plain address is still free, and a login naming the refused
    // address is an ordinary wrong login, not a server error.
    assert_eq!(register(&app, &plain, PASSWORD).await.status(), 201);
    let body = json!({ "email": format!("nul\u{0}{plain}"), "password": PASSWORD });
    problem(login_with(&app, body, "t").await, 401).await;
    let body = json!({ "email": plain, "password": PASSWORD, "org_slug": "acme\u{0}" });
    problem(login_with(&app, body, "t").await, 404).await;
}

#[tokio::test]
async fn a_taken_address_costs_a_registration_as_much_as_a_new_one() {
    let app = app(Engine::Sqlite).await;
    let (taken, _) = signed_up(&app).await;
    let attempt = |email: String, expected: u16| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = register(app, &email, PASSWORD).await;
            let elapsed = started.elapsed();
            assert_eq!(response.status(), expected);
            elapsed
        }
    };
    let (mut new, mut existing) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        new.push(attempt(unique_email(), 201).await);
        existing.push(attempt(taken.clone(), 409).await);
    }
    new.sort();
    existing.sort();
    // A new account costs a password hash; a taken address costs one too, so the medians are
    // of the same order. Without it a taken address answers an order of magnitude sooner.
    let (new, existing) = (new[3], existing[3]);
    assert!(
        existing * 3 > new && new * 3 > existing,
        "median new address {new:?}, taken address {existing:?}"
    );
}
