//! Start-up: settings and policies are checked before anything serves.

use crate::helpers::{Engine, Policy, Spawn, TestApp};

fn greeter() -> Policy {
    Policy::new("greeter", "greeter", "greeter", "")
}

#[tokio::test]
async fn an_unknown_setting_stops_start_up_naming_it() {
    let stderr = Spawn::new(Engine::Sqlite, vec![greeter()])
        .config("colour = \"blue\"")
        .start_refused()
        .await;
    assert!(
        stderr.contains("colour"),
        "stderr names the setting: {stderr}"
    );
}

#[tokio::test]
async fn an_invalid_database_url_names_the_variable() {
    let stderr = Spawn::new(Engine::Sqlite, vec![greeter()])
        .env("TRUEVALUE_DATABASE_URL", "mysql://localhost/crm")
        .start_refused()
        .await;
    assert!(
        stderr.contains("TRUEVALUE_DATABASE_URL"),
        "stderr names the variable: {stderr}"
    );
}

#[tokio::test]
async fn an_invalid_value_in_the_file_names_the_setting() {
    let stderr = Spawn::new(Engine::Sqlite, vec![greeter()])
        .config("body_limit_bytes = \"big\"")
        .start_refused()
        .await;
    assert!(
        stderr.contains("body_limit_bytes"),
        "stderr names the setting: {stderr}"
    );
}

#[tokio::test]
async fn a_policy_with_an_unknown_key_is_refused_with_its_file() {
    let mut policy = greeter();
    policy.toml.push_str("grant_everything = true\n");
    let stderr = Spawn::new(Engine::Sqlite, vec![policy])
        .start_refused()
        .await;
    assert!(
        stderr.contains("grant_everything"),
        "names the key: {stderr}"
    );
    assert!(stderr.contains("greeter.toml"), "names the file: {stderr}");
}

#[tokio::test]
async fn a_policy_config_value_must_be_a_scalar() {
    let mut policy = greeter();
    policy
        .toml
        .push_str("[config]\nretries = 3\nnames = [\"a\", \"b\"]\n");
    let stderr = Spawn::new(Engine::Sqlite, vec![policy])
        .start_refused()
        .await;
    assert!(
        stderr.contains("config value `names` must be a string, number or boolean, not array"),
        "{stderr}"
    );
}

#[tokio::test]
async fn every_policy_problem_is_reported_at_once() {
    let bad_limits = Policy::new("greeter", "greeter", "greeter", "[limits]\nmemory_mib = 0");
    let clash = Policy::new("other", "greeter", "greeter", "");
    let nested = Policy::new("nested", "greeter", "greeter/admin", "");
    let stderr = Spawn::new(Engine::Sqlite, vec![bad_limits, clash, nested])
        .start_refused()
        .await;
    assert!(stderr.contains("memory_mib"), "reports the limit: {stderr}");
    assert!(
        stderr.contains("claimed by both"),
        "reports the route clash: {stderr}"
    );
    assert!(
        stderr.contains(
            "route \"/greeter/admin\" of `nested` lies under `greeter`'s route \"/greeter\""
        ),
        "reports a route under another component's: {stderr}"
    );
}

// A component importing an ungranted interface is left out at load, naming every import:
// `degraded::missing_garbage_and_ungranted_components_are_left_out_and_the_rest_serves`.

#[tokio::test]
async fn the_generated_admin_token_stays_in_the_data_dir_and_out_of_the_logs() {
    let app: TestApp = Spawn::new(Engine::Sqlite, vec![greeter()]).start().await;
    let path = app.data_dir.join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(token.trim().len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        !app.logs().contains(token.trim()),
        "the token is never logged"
    );
    let restarted_token = {
        let mut app = app;
        app.crash_and_restart().await;
        std::fs::read_to_string(app.data_dir.join("admin-token")).unwrap()
    };
    assert_eq!(restarted_token, token, "the token is kept across restarts");
}

#[tokio::test]
async fn a_log_written_to_a_file_is_plain_text() {
    let app: TestApp = Spawn::new(Engine::Sqlite, vec![greeter()]).start().await;
    let logs = app.logs();
    assert!(logs.contains("loaded"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no terminal colour codes in a log file: {logs:?}"
    );
}

#[tokio::test]
async fn the_admin_token_can_come_from_the_environment() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter()])
        .env("TRUEVALUE_ADMIN_TOKEN", "s3cret-operator-token")
        .start()
        .await;
    let response = app
        .admin(reqwest::Method::GET, "/admin/components")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        !app.data_dir.join("admin-token").exists(),
        "no token is generated when one is configured"
    );
}

#[tokio::test]
async fn an_empty_admin_token_variable_means_unset_and_a_short_one_is_refused() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter()])
        .env("TRUEVALUE_ADMIN_TOKEN", "")
        .start()
        .await;
    let url = format!("{}/admin/components", app.admin_address);
    let response = app
        .client
        .get(&url)
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "an empty bearer never matches");
    assert!(
        app.data_dir.join("admin-token").is_file(),
        "a token was generated instead"
    );

    let stderr = Spawn::new(Engine::Sqlite, vec![greeter()])
        .env("TRUEVALUE_ADMIN_TOKEN", "short")
        .start_refused()
        .await;
    assert!(stderr.contains("TRUEVALUE_ADMIN_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn the_data_directory_is_readable_by_the_host_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let hostile = Policy::new(
        "hostile",
        "hostile",
        "hostile",
        crate::helpers::HOSTILE_LIMITS,
    );
    let app = Spawn::new(Engine::Sqlite, vec![hostile]).start().await;
    let written = app
        .client
        .post(app.url("/hostile/notes?text=private"))
        .send()
        .await
        .unwrap();
    assert!(written.status().is_success(), "{}", written.status());

    let mut pending = vec![app.data_dir.clone()];
    let mut files = Vec::new();
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        if metadata.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "sqlite")),
        "the component's database is among the files checked: {files:?}"
    );
}
