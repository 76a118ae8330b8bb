//! Split deployment: gateways in front of nodes that only trust signed requests.

use hmac::Mac;
use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};

const GATEWAY_SECRET: &str = "the secret gateways and nodes share, 32 chars+";
const HOST_SECRET: &str = "the deployment's host secret, at least 32 characters";

fn policies() -> Vec<Policy> {
    vec![
        Policy::new("greeter", "greeter", "greeter", ""),
        Policy::with_routes(
            "vault",
            "vault",
            "routes = [\"/vault\", \"/private\"]\npublic_routes = [\"/vault\"]",
            "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
        ),
        crate::identity::auth_policy(),
    ]
}

/// Gateways and nodes of one deployment share Redis under one prefix.
async fn node(prefix: &str) -> TestApp {
    node_on(Engine::Sqlite, prefix)
        .env("TRUEVALUE_SECRET_KEY", HOST_SECRET)
        .start()
        .await
}

fn node_on(engine: Engine, prefix: &str) -> Spawn {
    Spawn::new(engine, policies())
        .config(TRUSTS_VAULT)
        .config(&format!("role = \"node\"\nredis_prefix = {prefix:?}"))
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("TRUEVALUE_GATEWAY_SECRET", GATEWAY_SECRET)
        .env("TRUEVALUE_SECRET_KEY", HOST_SECRET)
}

async fn gateway(prefix: &str, nodes: &[&TestApp]) -> TestApp {
    let urls: Vec<String> = nodes.iter().map(|n| format!("{:?}", n.address)).collect();
    let config = format!(
        "role = \"gateway\"\nnodes = [{}]\nredis_prefix = {prefix:?}",
        urls.join(", ")
    );
    Spawn::new(Engine::Sqlite, policies())
        .config(TRUSTS_VAULT)
        .config(&config)
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("TRUEVALUE_GATEWAY_SECRET", GATEWAY_SECRET)
        .env("TRUEVALUE_SECRET_KEY", HOST_SECRET)
        .start()
        .await
}

/// The signature a gateway sends: HMAC-SHA256 over length-prefixed fields, then the body.
fn sign(secret: &str, fields: [&str; 10], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for field in fields {
        mac.update(format!("{}:{field}|", field.len()).as_bytes());
    }
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request to a node as a gateway would send it, with what the signature covered.
struct Signed {
    timestamp: String,
    method: &'static str,
    path: &'static str,
    request_id: String,
    user: &'static str,
    body: &'static str,
}

impl Signed {
    fn new(
        method: &'static str,
        path: &'static str,
        user: &'static str,
        body: &'static str,
    ) -> Self {
        Self {
            timestamp: now().to_string(),
            method,
            path,
            request_id: uuid::Uuid::new_v4().to_string(),
            user,
            body,
        }
    }

    fn signature(&self, secret: &str) -> String {
        let fields = [
            &*self.timestamp,
            self.method,
            self.path,
            &self.request_id,
            self.user,
            "",
            "",
            "",
            "",
            "",
        ];
        sign(secret, fields, self.body.as_bytes())
    }

    async fn send(
        &self,
        node: &TestApp,
        signature: &str,
        user: &str,
        body: &'static str,
    ) -> reqwest::Response {
        node.client
            .request(self.method.parse().unwrap(), node.url(self.path))
            .header("x-gateway-timestamp", &self.timestamp)
            .header("x-gateway-signature", signature)
            .header("x-request-id", &self.request_id)
            .header("x-user-id", user)
            .header("x-org-id", "")
            .header("x-user-roles", "")
            .header("x-user-permissions", "")
            .header("x-session-id", "")
            .header("x-client-ip", "")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_node_refuses_to_start_without_the_gateway_secret() {
    let stderr = Spawn::new(Engine::Sqlite, policies())
        .config(TRUSTS_VAULT)
        .config("role = \"node\"")
        .start_refused()
        .await;
    assert!(stderr.contains("TRUEVALUE_GATEWAY_SECRET"), "{stderr}");
}

#[tokio::test]
async fn split_roles_refuse_to_start_without_a_shared_redis() {
    let stderr = Spawn::new(Engine::Sqlite, policies())
        .config(TRUSTS_VAULT)
        .config("role = \"node\"")
        .env("TRUEVALUE_GATEWAY_SECRET", GATEWAY_SECRET)
        .start_refused()
        .await;
    assert!(stderr.contains("TRUEVALUE_REDIS_URL"), "{stderr}");
}

#[tokio::test]
async fn a_gateway_spreads_requests_over_its_nodes_with_the_verified_caller() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (first, second) = (node(&prefix).await, node(&prefix).await);
    let gateway = gateway(&prefix, &[&first, &second]).await;
    for _ in 0..6 {
        assert_eq!(gateway.get("/greeter").await.status(), 200);
    }
    for node in [&first, &second] {
        let metrics = node.metrics().await;
        assert!(
            metrics.contains(r#"truevalue_requests_total{component="greeter",status="200"} 3"#),
            "{metrics}"
        );
    }

    // Tokens are checked at the gateway; the node's component sees the verified caller.
    problem(gateway.get("/private/me").await, 401).await;
    let claims = json!({ "user_id": "user-7", "email": "u@example.com", "org_id": "org-9", "roles": ["admin"],
                         "permissions": ["contacts:read"], "session_id": "s-7" });
    let token: Value = gateway
        .post_json("/vault/tokens", &claims)
        .await
        .json()
        .await
        .unwrap();
    let me = gateway
        .client
        .get(gateway.url("/private/me"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let context: Value = me.json().await.unwrap();
    assert_eq!(context["user_id"], "user-7");
    assert_eq!(context["org_id"], "org-9");
    assert_eq!(context["roles"], json!(["admin"]));
    assert_eq!(context["permissions"], json!(["contacts:read"]));
    assert_eq!(context["session_id"], "s-7");
    assert_eq!(context["client_ip"], "127.0.0.1");

    // Revoked on a node (where the auth component runs), refused at the gateway at once.
    let revoked = gateway
        .client
        .post(gateway.url("/vault/sessions/s-7/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let me = gateway
        .client
        .get(gateway.url("/private/me"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await;
    problem(me.unwrap(), 401).await;
}

#[tokio::test]
async fn nodes_refuse_unsigned_tampered_stale_and_replayed_requests() {
    let node = node(&format!("test-{}", uuid::Uuid::new_v4().simple())).await;
    let body = problem(node.get("/greeter").await, 401).await;
    assert!(
        body["detail"].as_str().unwrap().contains("not signed"),
        "{body}"
    );

    // The control: a request signed as a gateway signs it is served, once.
    let request = Signed::new("GET", "/private/me", "user-1", "");
    let signature = request.signature(GATEWAY_SECRET);
    let served = request.send(&node, &signature, "user-1", "").await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.json::<Value>().await.unwrap()["user_id"], "user-1");
    let replayed = problem(request.send(&node, &signature, "user-1", "").await, 401).await;
    assert!(
        replayed["detail"].as_str().unwrap().contains("replay"),
        "{replayed}"
    );

    let request = Signed::new("GET", "/private/me", "user-1", "");
    let signature = request.signature(GATEWAY_SECRET);
    problem(request.send(&node, &signature, "admin-user", "").await, 401).await;

    let request = Signed::new("POST", "/vault/hmac", "", "original body");
    let signature = request.signature(GATEWAY_SECRET);
    problem(
        request.send(&node, &signature, "", "altered body").await,
        401,
    )
    .await;

    let mut stale = Signed::new("GET", "/greeter", "", "");
    stale.timestamp = (now() - 60).to_string();
    let signature = stale.signature(GATEWAY_SECRET);
    let body = problem(stale.send(&node, &signature, "", "").await, 401).await;
    assert!(body["detail"].as_str().unwrap().contains("30 s"), "{body}");

    let request = Signed::new("GET", "/greeter", "", "");
    let signature = request.signature("some other secret, also 32 characters long");
    problem(request.send(&node, &signature, "", "").await, 401).await;
}

/// Nodes of one deployment share PostgreSQL: an account made through one node logs in through
/// the other, and the session context (id, client IP) crosses the signed hop.
#[tokio::test]
async fn accounts_and_sessions_work_through_a_gateway_and_two_nodes() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let first = node_on(Engine::Postgres, &prefix).start().await;
    let shared = first.database_url.clone().unwrap();
    let second = node_on(Engine::Sqlite, &prefix)
        .env("TRUEVALUE_DATABASE_URL", &shared)
        .start()
        .await;
    let gateway = gateway(&prefix, &[&first, &second]).await;

    let account = json!({ "email": "ada@example.com", "password": "correct horse battery staple",
                          "name": "Ada" });
    assert_eq!(
        gateway.post_json("/auth/register", &account).await.status(),
        201
    );
    let pair: Value = gateway
        .post_json("/auth/login", &account)
        .await
        .json()
        .await
        .unwrap();
    let token = pair["access_token"].as_str().unwrap();
    let get = |path: &'static str| {
        let gateway = &gateway;
        async move {
            gateway
                .client
                .get(gateway.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // Round-robin: both nodes answer for the same account.
    for _ in 0..2 {
        assert_eq!(get("/auth/me").await.status(), 200);
    }
    let sessions: Value = get("/auth/sessions").await.json().await.unwrap();
    assert_eq!(sessions["items"][0]["ip"], "127.0.0.1", "{sessions}");
    assert_eq!(sessions["items"][0]["current"], true, "{sessions}");

    let refreshed = gateway
        .post_json(
            "/auth/refresh",
            &json!({ "refresh_token": pair["refresh_token"] }),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let logout = gateway
        .client
        .post(gateway.url("/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    problem(get("/auth/me").await, 401).await;
}

#[tokio::test]
async fn gateways_and_nodes_serve_metrics_only_on_their_admin_listeners() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let node = node(&prefix).await;
    let gateway = gateway(&prefix, &[&node]).await;
    assert_eq!(gateway.get("/greeter").await.status(), 200);

    problem(gateway.get("/metrics").await, 404).await;
    assert_ne!(node.get("/metrics").await.status(), 200);
    for host in [&gateway, &node] {
        let metrics = host.metrics().await;
        assert!(
            metrics.contains(r#"truevalue_requests_total{component="greeter",status="200"} 1"#),
            "{metrics}"
        );
    }
}
