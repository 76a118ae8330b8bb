//! Trusted capabilities: `tokens` mints any identity, so only components the operator approves
//! in the host config (`trusted_components`) may hold it, whatever a policy says.

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Policy, Spawn, vault};

#[tokio::test]
async fn a_policy_granting_tokens_to_an_unapproved_component_stops_start_up() {
    let stderr = Spawn::new(Engine::Sqlite, vec![vault()])
        .start_refused()
        .await;
    assert!(stderr.contains("vault.toml"), "names the policy: {stderr}");
    assert!(
        stderr.contains("trusted_components"),
        "names the setting that approves it: {stderr}"
    );
}

#[tokio::test]
async fn the_operator_approves_a_component_for_tokens_in_the_host_config() {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let minted = app
        .post_json(
            "/vault/tokens",
            &serde_json::json!({ "user_id": "user-1", "session_id": "s-1" }),
        )
        .await;
    assert_eq!(minted.status(), 200);

    // The shipped auth component is approved by default; an operator can withdraw that.
    let stderr = Spawn::new(Engine::Sqlite, vec![crate::identity::auth_policy()])
        .config("trusted_components = []")
        .start_refused()
        .await;
    assert!(stderr.contains("auth.toml"), "{stderr}");
}

#[tokio::test]
async fn an_unapproved_component_that_imports_tokens_cannot_mint_any() {
    // The vault imports `tokens`; its policy here grants only what any component may hold.
    let unapproved = Policy::new(
        "vault",
        "vault",
        "vault",
        "capabilities = [\"cache\", \"crypto\"]",
    );
    let app = Spawn::new(Engine::Sqlite, vec![unapproved]).start().await;
    let minted = app
        .post_json(
            "/vault/tokens",
            &serde_json::json!({ "user_id": "user-1", "session_id": "s-1" }),
        )
        .await;
    assert_eq!(minted.status(), 500);
    let logs = app.logs();
    assert!(logs.contains("truevalue:platform/tokens"), "{logs}");
    assert!(logs.contains("trusted_components"), "{logs}");
}
