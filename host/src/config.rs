//! Host settings: defaults, then the TOML file, then `TRUEVALUE_*` variables, then flags.
//! Unknown keys and invalid values stop start-up with a message naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Everything the host reads at start-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What this process runs: `all` (gateway and components), `gateway` (forwards to nodes)
    /// or `node` (components, behind gateways).
    pub role: Role,
    /// The nodes a gateway forwards to, as base URLs (`http://10.0.0.5:8000`).
    pub nodes: Vec<String>,
    /// The secret gateways sign forwarded requests with and nodes check; required for both.
    pub gateway_secret: Option<SecretString>,
    /// PEM certificates a gateway trusts for `https://` nodes (and nothing else); required when
    /// a node URL is `https://`, and then every node must be.
    pub nodes_ca_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) the public listener serves TLS with; with
    /// `tls_key_file`. Absent: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Address of the public gateway.
    pub listen: String,
    /// Address of the admin API.
    pub admin_listen: String,
    /// SQLite files, deployed components, the compile cache and the generated admin token.
    pub data_dir: PathBuf,
    /// Where the component policies are read from.
    pub policies_dir: PathBuf,
    /// Compiled components, by digest; absent: `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// The compile cache's bound in MiB: past it, the oldest artefacts of versions no longer
    /// current or previous are deleted (after each deploy and at start-up).
    pub compile_cache_max_mib: u32,
    /// Most deploys and installs compiling or waiting to compile at once (one compiles at a
    /// time, at a lower priority than serving); past it they are refused with 503 and
    /// `Retry-After`. A version compiled before loads from the cache without waiting.
    pub compile_queue: u32,
    /// `postgres://…`; absent: one SQLite file per component in the data directory.
    pub database_url: Option<SecretString>,
    /// `redis://…`; absent: in-memory.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// Requests per minute per client: per client address on public routes and without a
    /// valid token, per user on the routes that need one.
    pub rate_limit_per_minute: u32,
    /// Load balancers and reverse proxies in front of the gateway, as addresses or networks
    /// (`10.0.0.0/8`). Only from these peers is `X-Forwarded-For` read: the right-most address
    /// in it that is not a trusted proxy is the client. Empty: the peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Components the operator approves for trusted capabilities (`tokens`, which mints any
    /// identity): a policy naming one for any other component stops start-up.
    pub trusted_components: Vec<String>,
    /// Browser origins allowed to call the API (`https://app.example.com`), or `["*"]`;
    /// empty: no CORS headers, browsers on other origins are refused.
    pub cors_origins: Vec<String>,
    /// The SMTP server the `email` capability sends through: `smtp://host:port` (plain, for a
    /// local mail catcher), `smtp://user:password@host:587?tls=required` (STARTTLS, refused
    /// without it) or `smtps://user:password@host` (TLS from the first byte). Absent: emails
    /// are logged by recipient and subject (never their text) and dropped.
    pub smtp_url: Option<SecretString>,
    /// The sender of every email, e.g. `TrueValue <no-reply@example.com>`; components cannot
    /// choose another.
    pub smtp_from: String,
    /// `host:port[,host:port…]`: committed events are produced there (and `/readyz` checks
    /// them). Absent: the in-process bus.
    pub kafka_brokers: Option<String>,
    /// Publishers whose ed25519 signatures on components the host trusts, `[{ name,
    /// public_key }]` (see `signatures`).
    pub trusted_publishers: Vec<crate::signatures::TrustedPublisher>,
    /// Load only components signed by a trusted publisher: unsigned or mis-signed ones are
    /// refused at start-up (left out, like any component that fails to load) and deploys get 422.
    pub require_signatures: bool,
    /// The host's own secret, from which it derives each component's HMAC key; at least 32
    /// characters, shared by every host of a deployment. Absent: generated into the data dir.
    pub secret_key: Option<SecretString>,
    /// Keys of access tokens, `[{ kid, secret }]`: the first signs, all verify, so a new key
    /// can be added in front and the old one dropped after 15 minutes. Empty: one key derived
    /// from `secret_key`.
    pub token_keys: Vec<TokenKey>,
    /// Bearer token of the admin API; absent: generated and stored in the data directory.
    pub admin_token: Option<SecretString>,
    /// Largest request body the gateway accepts, in bytes.
    pub body_limit_bytes: usize,
    /// Most component instances alive at once, over all components (the instance pool).
    pub max_instances: u32,
    /// Largest linear memory any policy may grant, in MiB.
    pub max_memory_mib: u32,
    /// How long an instance kept for reuse (`instance_reuse`) may wait idle before it is freed.
    pub kept_idle_ms: u64,
    /// Writes `/tmp/perf-<pid>.map`, naming each compiled guest function for `perf`.
    pub perf_map: bool,
    /// How long a client has to send a request's headers (the TLS handshake included), from
    /// connecting or from the first byte of a later request on a kept-alive connection.
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight after a response.
    pub idle_timeout_ms: u64,
    /// How long a client has to send a request's whole body once its headers are in.
    pub body_read_timeout_ms: u64,
    /// Most connections open at once, per listener (lowered to fit the open-file limit). At the
    /// cap, a new connection replaces the one idle longest; if none is idle it gets a 503.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            nodes: Vec::new(),
            gateway_secret: None,
            nodes_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            listen: "127.0.0.1:8000".into(),
            admin_listen: "127.0.0.1:8010".into(),
            data_dir: "data".into(),
            policies_dir: "policies".into(),
            cache_dir: None,
            compile_cache_max_mib: 1024,
            compile_queue: 4,
            database_url: None,
            redis_url: None,
            redis_prefix: "truevalue".into(),
            rate_limit_per_minute: 100,
            trusted_proxies: Vec::new(),
            // The first-party auth component, which signs users in.
            // The first-party components: auth signs users in (`tokens`); org and permission
            // publish events for organizations a request does not act for yet.
            trusted_components: vec!["auth".into(), "org".into(), "permission".into()],
            cors_origins: Vec::new(),
            kafka_brokers: None,
            trusted_publishers: Vec::new(),
            require_signatures: false,
            smtp_url: None,
            smtp_from: DEFAULT_SMTP_FROM.into(),
            secret_key: None,
            token_keys: Vec::new(),
            admin_token: None,
            body_limit_bytes: 1024 * 1024,
            max_instances: 256,
            max_memory_mib: 256,
            kept_idle_ms: 60_000,
            perf_map: false,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            body_read_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

/// What a `truevalue serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The gateway and the components, in one process.
    #[default]
    All,
    /// Only the gateway: verifies tokens, limits rates, and forwards signed requests to nodes.
    Gateway,
    /// Only the components, serving signed requests from gateways.
    Node,
}

/// One access-token key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKey {
    pub kid: String,
    pub secret: SecretString,
}

/// Command-line flags, which win over every other source.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies_dir: Option<PathBuf>,
}

/// The variables read from the environment, each overriding the key of the same name.
const ENV_KEYS: [&str; 8] = [
    "database_url",
    "redis_url",
    "kafka_brokers",
    "admin_token",
    "secret_key",
    "gateway_secret",
    "smtp_url",
    "smtp_from",
];

/// The sender when `smtp_from` is not set.
pub const DEFAULT_SMTP_FROM: &str = "TrueValue <no-reply@truevalue.local>";

impl Config {
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                bail!("--config: {} is not a readable file", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut config: Config = figment
            .merge(Env::prefixed("TRUEVALUE_").only(&ENV_KEYS))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.unset_empty();
        config.validate()?;
        Ok(config)
    }

    /// An empty variable (`TRUEVALUE_ADMIN_TOKEN=`, as compose files pass an unset one) means
    /// "not set", never an empty secret.
    fn unset_empty(&mut self) {
        for secret in [
            &mut self.database_url,
            &mut self.redis_url,
            &mut self.admin_token,
            &mut self.secret_key,
            &mut self.gateway_secret,
            &mut self.smtp_url,
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                *secret = None;
            }
        }
        if self
            .kafka_brokers
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            self.kafka_brokers = None;
        }
        if self.smtp_from.trim().is_empty() {
            self.smtp_from = DEFAULT_SMTP_FROM.into();
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            bail!("admin_token (TRUEVALUE_ADMIN_TOKEN) must be at least 16 characters");
        }
        if self
            .secret_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 32)
        {
            bail!("secret_key (TRUEVALUE_SECRET_KEY) must be at least 32 characters");
        }
        for key in &self.token_keys {
            let kid_ok = !key.kid.is_empty()
                && key
                    .kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !kid_ok || key.secret.expose_secret().len() < 32 {
                bail!(
                    "token_keys: each needs a kid of letters, digits and -_. and a secret of at least 32 characters"
                );
            }
        }
        match self.role {
            Role::Node if self.gateway_secret.is_none() => {
                bail!(
                    "role node needs gateway_secret (TRUEVALUE_GATEWAY_SECRET): nodes only trust signed requests"
                )
            }
            Role::Gateway if self.gateway_secret.is_none() => {
                bail!(
                    "role gateway needs gateway_secret (TRUEVALUE_GATEWAY_SECRET) to sign what it forwards"
                )
            }
            Role::Gateway if self.nodes.is_empty() => {
                bail!("role gateway needs nodes (--nodes URL,URL)")
            }
            Role::Gateway | Role::Node if self.redis_url.is_none() => bail!(
                "roles gateway and node need redis_url (TRUEVALUE_REDIS_URL): they share session \
                 revocations and the replay check through it"
            ),
            _ => {}
        }
        if self
            .gateway_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 32)
        {
            bail!("gateway_secret (TRUEVALUE_GATEWAY_SECRET) must be at least 32 characters");
        }
        for node in &self.nodes {
            if !(node.starts_with("http://") || node.starts_with("https://")) {
                bail!("nodes: {node:?} is not a URL like http://10.0.0.5:8000");
            }
            match (node.starts_with("https://"), &self.nodes_ca_file) {
                (true, None) => bail!(
                    "nodes: {node:?} is https:// but nodes_ca_file (the CA its certificate is from) is not set"
                ),
                // Passwords cross this hop: with TLS configured, none of it may be plain.
                (false, Some(_)) => bail!(
                    "nodes: {node:?} is plain http:// while nodes_ca_file asks for TLS to nodes"
                ),
                _ => {}
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            bail!("tls_cert_file and tls_key_file go together: set both or neither");
        }
        self.listen_addr()?;
        self.admin_addr()?;
        if let Some(url) = self.database_url.as_ref() {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("database_url (TRUEVALUE_DATABASE_URL) must be a postgres:// URL");
            }
        }
        if let Some(url) = self.redis_url.as_ref() {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                bail!("redis_url (TRUEVALUE_REDIS_URL) must be a redis:// or rediss:// URL");
            }
        }
        if let Some(brokers) = &self.kafka_brokers {
            let valid = brokers.split(',').all(|b| {
                b.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            });
            if !valid {
                bail!(
                    "kafka_brokers (TRUEVALUE_KAFKA_BROKERS) must be host:port[,host:port…], got {brokers:?}"
                );
            }
        }
        if let Some(url) = &self.smtp_url {
            crate::capabilities::email::smtp::check_url(url)?;
        }
        crate::capabilities::email::parse_from(&self.smtp_from)?;
        if !(1..=1_000_000).contains(&self.rate_limit_per_minute) {
            bail!("rate_limit_per_minute must be between 1 and 1000000");
        }
        crate::gateway::rate_limit::TrustedProxies::parse(&self.trusted_proxies)?;
        if let Some(name) = self
            .trusted_components
            .iter()
            .find(|name| !crate::policy::valid_name(name))
        {
            bail!("trusted_components: {name:?} is not a component name ([a-z][a-z0-9_]*)");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            bail!("redis_prefix must be a non-empty word");
        }
        for origin in &self.cors_origins {
            let valid = origin == "*"
                || (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin
                        .trim_end_matches('/')
                        .contains(|c: char| c.is_whitespace())
                    && origin.matches('/').count() == 2;
            if !valid {
                bail!(
                    "cors_origins: {origin:?} is not an origin like https://app.example.com (or \"*\")"
                );
            }
        }
        if self.body_limit_bytes == 0 {
            bail!("body_limit_bytes must be above 0");
        }
        if !(1..=64).contains(&self.compile_queue) {
            bail!("compile_queue must be between 1 and 64");
        }
        if !(1..=10_000).contains(&self.max_instances) {
            bail!("max_instances must be between 1 and 10000");
        }
        if !(1..=4096).contains(&self.max_memory_mib) {
            bail!("max_memory_mib must be between 1 and 4096");
        }
        if !(100..=3_600_000).contains(&self.kept_idle_ms) {
            bail!("kept_idle_ms must be between 100 and 3600000");
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            bail!("header_read_timeout_ms must be between 100 and 600000");
        }
        if !(100..=3_600_000).contains(&self.idle_timeout_ms) {
            bail!("idle_timeout_ms must be between 100 and 3600000");
        }
        if !(100..=3_600_000).contains(&self.body_read_timeout_ms) {
            bail!("body_read_timeout_ms must be between 100 and 3600000");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!("max_connections must be between 1 and 1000000");
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!(
                "listen: {:?} is not an address like 127.0.0.1:8000",
                self.listen
            )
        })
    }

    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        self.admin_listen.parse().with_context(|| {
            format!(
                "admin_listen: {:?} is not an address like 127.0.0.1:8010",
                self.admin_listen
            )
        })
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }
}
