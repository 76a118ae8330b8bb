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
        Policy::new(
            "hello",
            "hello",
            "hello",
            "capabilities = [\"database\", \"config\"]\n[config]\ngreeting = \"Welcome\"",
        ),
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
    let urls: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    gateway_to(prefix, &urls).start().await
}

fn gateway_to(prefix: &str, urls: &[String]) -> Spawn {
    let urls: Vec<String> = urls.iter().map(|url| format!("{url:?}")).collect();
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
}

/// The signature a gateway sends: HMAC-SHA256 over length-prefixed fields (the last one the
/// number of forwarded headers, none here), then the body.
fn sign(secret: &str, fields: [&str; 11], body: &[u8]) -> String {
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
            "0",
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

/// A component installed on the nodes through their admin API is routed by the gateway
/// without a restart once every node serves it, and no longer once one uninstalled it; its
/// routes are as the nodes' policy says.
#[tokio::test]
async fn a_gateway_routes_to_components_installed_on_its_nodes_without_a_restart() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (first, second) = (node(&prefix).await, node(&prefix).await);
    let gateway = gateway(&prefix, &[&first, &second]).await;
    let counter = "/hostile/counter";
    problem(gateway.get(counter).await, 404).await;

    // On one node of two: the gateway does not send requests to the other yet.
    install_hostile(&first).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for _ in 0..4 {
        problem(gateway.get(counter).await, 404).await;
    }

    install_hostile(&second).await;
    wait_for_status(&gateway, counter, 200).await;
    for _ in 0..4 {
        assert_eq!(gateway.get(counter).await.status(), 200);
    }
    // Only its public route is served without a token.
    problem(gateway.get("/hostile/notes").await, 401).await;

    let response = first
        .admin(reqwest::Method::DELETE, "/admin/components/hostile")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    wait_for_status(&gateway, counter, 404).await;
}

async fn install_hostile(node: &TestApp) {
    let form = reqwest::multipart::Form::new()
        .text("name", "hostile")
        .text(
            "policy",
            "routes = [\"/hostile\"]\npublic_routes = [\"/hostile/counter\"]\ncapabilities = [\"database\"]\n",
        )
        .part(
            "wasm",
            reqwest::multipart::Part::bytes(std::fs::read(crate::helpers::wasm("hostile")).unwrap()),
        );
    let response = node
        .admin(reqwest::Method::POST, "/admin/components")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Polls `path` on `app` until it answers `status` (within a few of the gateway's rounds of
/// asking its nodes); the body then.
async fn wait_for_status(app: &TestApp, path: &str, status: u16) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let response = app.get(path).await;
        if response.status() == status {
            return response.text().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < until,
            "{path} still answers {} instead of {status}",
            response.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What a gateway sent to a node, as a man in the middle would see it.
struct Captured {
    method: reqwest::Method,
    path_and_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: bytes::Bytes,
}

impl Captured {
    fn signature(&self) -> String {
        let (_, value) = self
            .headers
            .iter()
            .find(|(name, _)| name == "x-gateway-signature")
            .expect("signed");
        String::from_utf8(value.clone()).unwrap()
    }

    /// Sends it to `node` again with `change` applied to its headers.
    async fn replay(
        &self,
        node: &TestApp,
        change: impl Fn(&str, &[u8]) -> Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut request = node
            .client
            .request(self.method.clone(), node.url(&self.path_and_query))
            .body(self.body.clone());
        for (name, value) in &self.headers {
            if let Some(value) = change(name, value) {
                request = request.header(name, value);
            }
        }
        request.send().await.unwrap()
    }
}

fn unchanged(_: &str, value: &[u8]) -> Option<Vec<u8>> {
    Some(value.to_vec())
}

/// A stand-in node that answers 204 to everything and hands over what it received.
async fn capturing_node() -> (String, tokio::sync::mpsc::UnboundedReceiver<Captured>) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let sender = sender.clone();
        async move {
            let (parts, body) = request.into_parts();
            // The gateway asking which components are installed: none here, and not captured.
            if parts.uri.path() == "/_truevalue/installed" {
                return (axum::http::StatusCode::OK, "[]");
            }
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let headers = parts
                .headers
                .iter()
                .filter(|(name, _)| !["host", "content-length"].contains(&name.as_str()))
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect();
            let path_and_query = parts.uri.path_and_query().unwrap().to_string();
            let _ = sender.send(Captured {
                method: parts.method,
                path_and_query,
                headers,
                body,
            });
            (axum::http::StatusCode::NO_CONTENT, "")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// One captured request is served once: neither as sent again nor with its signature spelt
/// in other letter cases.
#[tokio::test]
async fn a_captured_request_is_served_once_however_its_signature_is_spelt() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let node = node(&prefix).await;
    let (capture_url, mut captured) = capturing_node().await;
    let capturing = gateway_to(&prefix, &[capture_url]).start().await;
    let entry = json!({ "name": "Mallory", "message": "once" });
    assert_eq!(
        capturing
            .post_json("/hello/guestbook", &entry)
            .await
            .status(),
        204
    );
    let request = captured.recv().await.unwrap();
    let signature = request.signature();
    assert!(signature.chars().any(|c| c.is_ascii_alphabetic()));

    assert_eq!(request.replay(&node, unchanged).await.status(), 201);
    let spellings = [
        signature.to_uppercase(),
        signature
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 2 {
                0 => c.to_ascii_uppercase(),
                _ => c,
            })
            .collect(),
    ];
    for spelling in &spellings {
        let recased = request
            .replay(&node, |name, value| match name {
                "x-gateway-signature" => Some(spelling.as_bytes().to_vec()),
                _ => Some(value.to_vec()),
            })
            .await;
        problem(recased, 401).await;
    }
    problem(request.replay(&node, unchanged).await, 401).await;

    let reader = gateway(&prefix, &[&node]).await;
    let list: Value = reader.get("/hello/guestbook").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

/// Components on a node see the headers the gateway forwarded, as it signed them: a change on
/// the way is refused, an addition never reaches the component.
#[tokio::test]
async fn a_node_refuses_forwarded_headers_changed_after_signing() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let node = node(&prefix).await;
    let (capture_url, mut captured) = capturing_node().await;
    let gateway = gateway_to(&prefix, &[capture_url]).start().await;
    let sent = gateway
        .client
        .post(gateway.url("/vault/headers?names=user-agent,content-type,x-added"))
        .header("user-agent", "Ada's laptop")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let request = captured.recv().await.unwrap();

    for (header, altered) in [
        ("user-agent", "Mallory's phone"),
        ("content-type", "text/plain"),
    ] {
        let tampered = request
            .replay(&node, |name, value| match name == header {
                true => Some(altered.as_bytes().to_vec()),
                false => Some(value.to_vec()),
            })
            .await;
        problem(tampered, 401).await;
        let dropped = request
            .replay(&node, |name, value| {
                (name != header).then(|| value.to_vec())
            })
            .await;
        problem(dropped, 401).await;
    }

    let mut added = node
        .client
        .request(request.method.clone(), node.url(&request.path_and_query))
        .header("x-added", "by the man in the middle")
        .body(request.body.clone());
    for (name, value) in &request.headers {
        added = added.header(name, value.clone());
    }
    let served = added.send().await.unwrap();
    assert_eq!(served.status(), 200);
    let seen: Value = served.json().await.unwrap();
    assert_eq!(
        seen["headers"],
        json!({ "user-agent": "Ada's laptop", "content-type": "application/json" }),
        "{seen}"
    );
}

/// A test certificate authority and a certificate it issued for 127.0.0.1, as PEM files.
struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "TrueValue test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let node_cert = node_params.signed_by(&node_key, &issuer).unwrap();
    let path = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: path("ca.pem", ca_cert.pem()),
        cert: path("node.pem", node_cert.pem()),
        key: path("node-key.pem", node_key.serialize_pem()),
        _dir: dir,
    }
}

async fn tls_node(prefix: &str, pki: &Pki) -> TestApp {
    node_on(Engine::Sqlite, prefix)
        .config(&format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}",
            pki.cert.display().to_string(),
            pki.key.display().to_string()
        ))
        .start()
        .await
}

fn trusting(gateway: Spawn, ca: &std::path::Path) -> Spawn {
    gateway.config(&format!("nodes_ca_file = {:?}", ca.display().to_string()))
}

/// Passwords cross the gateway → node hop inside TLS, and the session's device is the user
/// agent the client sent.
#[tokio::test]
async fn a_login_crosses_to_a_node_over_tls() {
    let pki = pki();
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let node = tls_node(&prefix, &pki).await;
    assert!(node.address.starts_with("https://"), "{}", node.address);
    let gateway = trusting(
        gateway_to(&prefix, std::slice::from_ref(&node.address)),
        &pki.ca,
    )
    .start()
    .await;

    let account = json!({ "email": "ada@example.com", "password": "correct horse battery staple",
                          "name": "Ada" });
    assert_eq!(
        gateway.post_json("/auth/register", &account).await.status(),
        201
    );
    let login = gateway
        .client
        .post(gateway.url("/auth/login"))
        .header("user-agent", "Ada's laptop")
        .json(&account)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let pair: Value = login.json().await.unwrap();
    let sessions: Value = gateway
        .client
        .get(gateway.url("/auth/sessions"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"][0]["device"], "Ada's laptop", "{sessions}");

    // The node speaks TLS only.
    let plain = node
        .client
        .get(node.address.replacen("https://", "http://", 1) + "/healthz")
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP to a TLS node"
    );
}

#[tokio::test]
async fn a_gateway_refuses_a_node_whose_certificate_is_not_from_its_ca() {
    let (pki, stranger) = (pki(), pki());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let node = tls_node(&prefix, &pki).await;
    let gateway = trusting(
        gateway_to(&prefix, std::slice::from_ref(&node.address)),
        &stranger.ca,
    )
    .start()
    .await;
    problem(gateway.get("/greeter").await, 502).await;
    assert_eq!(gateway.get("/readyz").await.status(), 503);
}

#[tokio::test]
async fn a_gateway_refuses_to_start_with_plain_nodes_when_tls_is_asked() {
    let pki = pki();
    let stderr = trusting(gateway_to("test", &["http://127.0.0.1:9".into()]), &pki.ca)
        .start_refused()
        .await;
    assert!(stderr.contains("nodes_ca_file"), "{stderr}");
    let stderr = gateway_to("test", &["https://127.0.0.1:9".into()])
        .start_refused()
        .await;
    assert!(stderr.contains("nodes_ca_file"), "{stderr}");
}
