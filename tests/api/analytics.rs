//! The platform as shipped: auth, org and permission publish, and the audit log and the
//! analytics dashboard (their shipped policies, subscribed to the platform's topics) show each
//! organization what happened in it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::Spawn;
use crate::helpers::{Engine, TestApp};
use crate::on_both_engines;
use crate::org::{shipped, tenancy_policies};

const PASSWORD: &str = "correct horse battery staple";

async fn platform(engine: Engine) -> TestApp {
    let mut policies = tenancy_policies();
    policies.push(shipped("audit", str::to_string));
    policies.push(shipped("analytics", str::to_string));
    Spawn::new(engine, policies).start().await
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

/// Polls `path` until `done` holds for its answer (or 20 s pass), and returns the last answer.
async fn until(app: &TestApp, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(app, path, token).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn the_dashboard_and_the_audit_log_follow_what_happens_in_an_organization(engine: Engine) {
    let app = platform(engine).await;
    let email = format!("ada-{}@example.com", uuid::Uuid::new_v4().simple());
    let ada = post(
        &app,
        "/auth/register",
        None,
        json!({ "email": email, "password": PASSWORD, "name": "Ada" }),
    )
    .await;
    let ada_id = ada["id"].as_str().unwrap().to_string();
    let pair = post(
        &app,
        "/auth/login",
        None,
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    let token = pair["access_token"].as_str().unwrap().to_string();
    let slug = format!("acme-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let org = post(
        &app,
        "/org/api/organizations",
        Some(&token),
        json!({ "name": "Acme", "slug": slug }),
    )
    .await;
    let org_id = org["id"].as_str().unwrap().to_string();
    // Two sign-ins into the organization.
    let mut admin = String::new();
    for _ in 0..2 {
        let pair = post(
            &app,
            "/auth/login",
            None,
            json!({ "email": email, "password": PASSWORD, "org_slug": slug }),
        )
        .await;
        admin = pair["access_token"].as_str().unwrap().to_string();
    }

    let dashboard = until(&app, "/analytics/api/dashboard", &admin, |d| {
        d["logins"][0]["count"] == 2 && d["members"] == 1
    })
    .await;
    let today = dashboard["logins"][0]["day"].as_str().unwrap().to_string();
    assert_eq!(dashboard["org_id"], org_id.as_str());
    assert_eq!(
        dashboard["logins"],
        json!([{ "day": today, "count": 2 }]),
        "{dashboard}"
    );
    assert_eq!(
        dashboard["signups"],
        json!([{ "day": today, "count": 1 }]),
        "{dashboard}"
    );
    assert_eq!(dashboard["members"], 1, "{dashboard}");
    assert_eq!(
        dashboard["active_users"],
        json!({ "day_1": 1, "day_7": 1, "day_30": 1 }),
        "{dashboard}"
    );

    let logs = until(&app, "/audit/api/logs?limit=200", &admin, |l| {
        let actions: Vec<&str> = l["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["action"].as_str())
            .collect();
        [
            "org.created",
            "member.added",
            "role.assigned",
            "user.logged_in",
        ]
        .iter()
        .all(|a| actions.contains(a))
    })
    .await;
    let items = logs["items"].as_array().unwrap();
    let created = items.iter().find(|e| e["action"] == "org.created").unwrap();
    assert_eq!(created["actor_id"], ada_id.as_str());
    assert_eq!(created["org_id"], org_id.as_str());
    assert_eq!(created["resource"], org_id.as_str());
    assert!(
        items.iter().all(|e| e["org_id"] == org_id.as_str()),
        "{logs}"
    );
    let report = until(&app, "/audit/api/verify", &admin, |_| true).await;
    assert_eq!(report["valid"], true, "{report}");
}
on_both_engines!(the_dashboard_and_the_audit_log_follow_what_happens_in_an_organization);
