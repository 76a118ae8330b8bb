//! Gateway role: forwards each verified request to a node, signed, round-robin over the nodes,
//! trying the next node when one cannot be reached. `https://` nodes are reached over TLS and
//! must present a certificate from the configured CA.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

use super::auth::Caller;
use super::problem::ApiError;
use super::request_id;
use crate::policy::{Policy, RouteTable, Routes, Routing};
use crate::signing::{self, Signed};

/// Whether a request header stays at the gateway: credentials were verified here, hop-by-hop
/// headers belong to this connection, and the reserved ones are set by the gateway alone.
fn stays(name: &str) -> bool {
    super::dispatch::HIDDEN.contains(&name)
        || signing::reserved(name)
        || [request_id::HEADER, "host", "content-length"].contains(&name)
}

pub struct Nodes {
    urls: Vec<String>,
    next: AtomicUsize,
    client: reqwest::Client,
    secret: SecretString,
}

impl Nodes {
    /// `ca_file`: the PEM certificates `https://` nodes must chain to; no other root is trusted.
    pub fn new(
        urls: Vec<String>,
        secret: SecretString,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        // Idle connections are let go well before a node closes them (`idle_timeout_ms`), so a
        // request never goes out on a connection the node is closing.
        let mut client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tls_built_in_root_certs(false);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("nodes_ca_file: cannot read {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("nodes_ca_file: {} is not PEM", path.display()))?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "nodes_ca_file: {} holds no certificate",
                path.display()
            );
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build()?;
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Ok(Self {
            urls,
            next: AtomicUsize::new(0),
            client,
            secret,
        })
    }

    /// Forwards a client's request to the next node in turn.
    pub async fn forward(&self, parts: Parts, body: Bytes) -> Result<Response, ApiError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.send(start, parts, body).await
    }

    /// Sends a request signed to the node at `start` (modulo their number), or the next one
    /// that can be reached.
    async fn send(&self, start: usize, parts: Parts, body: Bytes) -> Result<Response, ApiError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let request_id = request_id::current();
        let (user, org, roles, permissions, session) = match parts.extensions.get::<Caller>() {
            Some(Caller::User(claims)) => (
                claims.user_id.clone(),
                claims.org_id.clone().unwrap_or_default(),
                claims.roles.join(","),
                claims.permissions.join(","),
                claims.session_id.clone(),
            ),
            _ => Default::default(),
        };
        let client_ip = super::client_ip(&parts.extensions).unwrap_or_default();
        let timestamp = signing::now().to_string();
        // Every header the node's components will see is signed, with all its values.
        let headers: Vec<signing::Header<'_>> = parts
            .headers
            .keys()
            .filter(|name| !stays(name.as_str()))
            .map(|name| {
                let values = parts.headers.get_all(name).iter();
                (name.as_str(), values.map(|v| v.as_bytes()).collect())
            })
            .collect();
        let signed_headers = headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(",");
        let signature = Signed {
            timestamp: &timestamp,
            method: parts.method.as_str(),
            path_and_query: &path_and_query,
            request_id: &request_id,
            context: [&user, &org, &roles, &permissions, &session, &client_ip],
            headers: &headers,
            body: &body,
        }
        .sign(&self.secret);

        let mut last_error = String::new();
        for attempt in 0..self.urls.len() {
            let url = format!(
                "{}{path_and_query}",
                self.urls[(start + attempt) % self.urls.len()]
            );
            let mut request = self
                .client
                .request(parts.method.clone(), &url)
                .body(body.clone());
            for (name, value) in &parts.headers {
                if !stays(name.as_str()) {
                    request = request.header(name, value);
                }
            }
            request = request
                .header(signing::TIMESTAMP, &timestamp)
                .header(signing::SIGNATURE, &signature)
                .header(signing::SIGNED_HEADERS, &signed_headers)
                .header(request_id::HEADER, &request_id)
                .header(signing::USER_ID, &user)
                .header(signing::ORG_ID, &org)
                .header(signing::ROLES, &roles)
                .header(signing::PERMISSIONS, &permissions)
                .header(signing::SESSION_ID, &session)
                .header(signing::CLIENT_IP, &client_ip);
            match request.send().await {
                Ok(response) => return relay(response).await,
                // Nothing reached that node: the request can safely go to the next one.
                Err(error) if error.is_connect() => last_error = format!("{url}: {error}"),
                Err(error) => {
                    return Err(ApiError::Unexpected(anyhow::anyhow!(
                        "forwarding to {url}: {error}"
                    )));
                }
            }
        }
        Err(ApiError::NoNode(last_error))
    }

    /// Ready when one node is.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut last = anyhow::anyhow!("no nodes");
        for url in &self.urls {
            match self
                .client
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => last = anyhow::anyhow!("{url}: {}", response.status()),
                Err(error) => last = anyhow::anyhow!("{url}: {error}"),
            }
        }
        Err(last)
    }
}

/// Response headers that belong to the node's connection, not to the client's.
const HOP_BY_HOP: [&str; 4] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "keep-alive",
];

/// The node's answer, as it is, minus hop-by-hop headers.
async fn relay(response: reqwest::Response) -> Result<Response, ApiError> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("reading a node's answer: {e}")))?;
    let mut relayed = Body::from(body).into_response();
    *relayed.status_mut() = status;
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            relayed.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(relayed)
}

/// How often a gateway asks its nodes which components were installed on them.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Most bytes of a node's list of installed components.
const MOST_INSTALLED_BYTES: usize = 4 * 1024 * 1024;

impl Nodes {
    /// The components installed on every node that answers, through its admin API, with their
    /// routes: a component is routed only once all the nodes serve it, so that during an
    /// install or uninstall across the nodes no request is sent to one that lacks it.
    pub async fn installed(&self) -> anyhow::Result<Vec<Routing>> {
        let answers =
            futures::future::join_all((0..self.urls.len()).map(|at| self.installed_at(at))).await;
        let mut answered = answers.into_iter().filter_map(|answer| {
            answer
                .map_err(|error| tracing::debug!(error = %format!("{error:#}"), "a node did not say which components are installed"))
                .ok()
        });
        let first = answered
            .next()
            .ok_or_else(|| anyhow::anyhow!("no node said which components are installed"))?;
        Ok(answered.fold(first, |common, other| {
            common.into_iter().filter(|r| other.contains(r)).collect()
        }))
    }

    /// What the node at `at` says is installed on it (signed like every request to a node).
    async fn installed_at(&self, at: usize) -> anyhow::Result<Vec<Routing>> {
        let (parts, ()) = axum::http::Request::get(super::node::INSTALLED_PATH)
            .body(())?
            .into_parts();
        // An id of its own: a node refuses a signature it has seen before.
        let id = uuid::Uuid::now_v7().to_string();
        let response = request_id::scope(id, self.send(at, parts, Bytes::new()))
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "the node answered {status}");
        let body = axum::body::to_bytes(response.into_body(), MOST_INSTALLED_BYTES).await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Keeps the gateway's `routes` at its own policies plus the components installed on all its
/// nodes through their admin API, asking every [`FOLLOW_EVERY`]: an install or uninstall on
/// the nodes reaches the gateway's routing without a restart. A policy file of the gateway's
/// own wins over an installed component of the same name; an installed component whose routes
/// clash with the gateway's policies is logged and not routed.
pub fn follow_installed(
    nodes: Arc<Nodes>,
    own: Vec<Arc<Policy>>,
    routes: Arc<Routes>,
    max_memory_mib: u32,
) {
    tokio::spawn(async move {
        let mut known: Vec<Routing> = Vec::new();
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let installed = match nodes.installed().await {
                Ok(installed) => installed,
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "could not ask the nodes which components are installed");
                    continue;
                }
            };
            if installed == known {
                continue;
            }
            let mut all = own.clone();
            for routing in &installed {
                if own.iter().any(|policy| policy.name == routing.name) {
                    continue;
                }
                match routing.policy(&all, max_memory_mib) {
                    Ok(policy) => all.push(Arc::new(policy)),
                    Err(problems) => tracing::warn!(
                        component = %routing.name,
                        problems = %problems.join("; "),
                        "not routing a component installed on the nodes"
                    ),
                }
            }
            routes.store(Arc::new(RouteTable::new(&all)));
            let names: Vec<&str> = installed.iter().map(|r| r.name.as_str()).collect();
            tracing::info!(installed = ?names, "routing the components installed on the nodes");
            known = installed;
        }
    });
}
