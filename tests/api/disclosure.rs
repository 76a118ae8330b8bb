//! What the host tells a stranger: a refused token gets a fixed answer that quotes nothing of
//! it, and metrics are for the operator's listener only.

use base64::Engine as _;

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};

/// The greeter behind a token: every request needs a valid one.
async fn protected_app() -> TestApp {
    let greeter = Policy::with_routes("greeter", "greeter", "routes = [\"/greeter\"]", "");
    Spawn::new(Engine::Sqlite, vec![greeter]).start().await
}

fn token_with_header(header: &str) -> String {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        encode(header.as_bytes()),
        encode(br#"{"sub":"user-1"}"#),
        encode(b"not a signature")
    )
}

#[tokio::test]
async fn a_refused_token_gets_a_small_fixed_answer_that_quotes_none_of_it() {
    let app = protected_app().await;
    let huge_kid = format!("kid-marker-{}", "K".repeat(100_000));
    let odd_kid = "kid-marker\"\n<script>alert(1)</script>";
    let tokens = [
        token_with_header(&format!(
            r#"{{"alg":"HS256","typ":"JWT","kid":"{huge_kid}"}}"#
        )),
        token_with_header(&format!(
            r#"{{"alg":"HS256","typ":"JWT","kid":{}}}"#,
            serde_json::to_string(odd_kid).unwrap()
        )),
        token_with_header(r#"{"alg":"HS256","typ":"JWT","kid":"derived-1"}"#),
        "kid-marker.not-base64!.x".to_string(),
    ];
    let mut details = Vec::new();
    for token in &tokens {
        let response = app
            .client
            .get(app.url("/greeter"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body = response.text().await.unwrap();
        assert!(body.len() < 1024, "a small answer: {} bytes", body.len());
        assert!(!body.contains("kid-marker"), "{body}");
        assert!(!body.contains("script"), "{body}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        details.push(problem["detail"].as_str().unwrap().to_string());
    }
    // Unknown key, bad signature and a malformed token read the same: no parser detail.
    assert!(details.iter().all(|d| *d == details[0]), "{details:?}");
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_not_the_api_port() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    assert_eq!(app.get("/greeter").await.status(), 200);

    problem(app.get("/metrics").await, 404).await;
    // A scraper needs no admin token (so it never holds the power to deploy)…
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"truevalue_requests_total{component="greeter",status="200"} 1"#),
        "{metrics}"
    );
    // …while the admin API itself still does.
    let unauthorized = app
        .client
        .get(format!("{}/admin/components", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}
