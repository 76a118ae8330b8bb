//! Policies: what each component is granted. A component gets nothing its policy does not
//! name; every problem in the policies is reported at once, with what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A host capability a component may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Database,
    Cache,
    Crypto,
    Tokens,
    Config,
    Log,
    Services,
    Email,
    Events,
    /// Outgoing HTTP through `wasi:http/outgoing-handler`, to the hosts of `http_hosts` only.
    Http,
}

impl Capability {
    /// The WIT interface the capability grants.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Database => "database",
            Capability::Cache => "cache",
            Capability::Crypto => "crypto",
            Capability::Tokens => "tokens",
            Capability::Config => "config",
            Capability::Log => "log",
            Capability::Services => "services",
            Capability::Email => "email",
            Capability::Events => "events",
            Capability::Http => "wasi:http/outgoing-handler",
        }
    }

    /// A trusted capability reaches past the component's own sandbox (`tokens` mints any
    /// identity): only components the operator approves in the host config may hold it.
    pub fn is_trusted(self) -> bool {
        matches!(self, Capability::Tokens)
    }

    /// The capability a `truevalue:platform` interface needs (`Http` is a WASI interface).
    pub fn from_interface(name: &str) -> Option<Self> {
        [
            Capability::Database,
            Capability::Cache,
            Capability::Crypto,
            Capability::Tokens,
            Capability::Config,
            Capability::Log,
            Capability::Services,
            Capability::Email,
            Capability::Events,
        ]
        .into_iter()
        .find(|c| c.interface() == name)
    }
}

/// Resource limits of each instance of the component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest linear memory of one instance, in MiB.
    pub memory_mib: u32,
    /// Wall-clock deadline of one request, host calls included, in milliseconds.
    pub timeout_ms: u64,
    /// Most instances serving requests at once; past it, clients get 503 with `Retry-After`.
    pub max_instances: u32,
    /// Most requests one instance serves. 1 (the default): a fresh instance for every
    /// request. Above 1, an instance that answered below 500 is kept for the next request of
    /// the same organization (a user in none, or anonymous requests, count as one), so a request skips
    /// instantiation — but what the guest keeps in its memory between requests is seen by the
    /// next ones of that organization. A trap, a timeout, an out-of-memory, a 5xx answer or a
    /// new version discards it.
    pub instance_reuse: u32,
    /// Keep one instance of the component instantiated ahead of its next request, so that the
    /// request does not wait for it: for a big guest (an interpreter) instantiation is a large
    /// part of a request's latency. The instance has served no one; it serves one request like
    /// any fresh instance (or, with `instance_reuse`, is then kept for that request's
    /// organization), and the next one is instantiated while that request runs. It holds a
    /// place in the host's instance pool while it waits, and is freed after `kept_idle_ms` idle.
    pub prestart: bool,
    /// Most cache entries the component may hold at once (expired ones do not count).
    pub cache_max_entries: u64,
    /// Most bytes of keys plus values the component may hold in the cache at once.
    pub cache_max_bytes: u64,
    /// Most rows one database query may return.
    pub max_result_rows: u64,
    /// Most bytes one database query may return, as the host holds them; by default (and at
    /// most) the memory limit, since the instance could not receive more anyway.
    pub max_result_bytes: Option<u64>,
}

impl Limits {
    /// The bytes one database query may return: see [`Limits::max_result_bytes`].
    pub fn result_bytes(&self) -> u64 {
        self.max_result_bytes.unwrap_or(self.memory_bytes())
    }

    fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) * 1024 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            timeout_ms: 5_000,
            max_instances: 32,
            instance_reuse: 1,
            prestart: false,
            cache_max_entries: 10_000,
            cache_max_bytes: 16 * 1024 * 1024,
            // A row costs the instance at least 8 bytes, so even 1 MiB could receive these.
            max_result_rows: 100_000,
            max_result_bytes: None,
        }
    }
}

/// One component's policy, from `policies/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The component's name: the policy file's stem.
    #[serde(skip)]
    pub name: String,
    /// Where the policy was read from, for messages.
    #[serde(skip)]
    pub source: PathBuf,
    /// The sha256 of the policy file, in hex: what a component's signature covers besides its
    /// bytes.
    #[serde(skip)]
    pub digest: String,
    /// The `.wasm` file to load at start-up, relative to the policy file. Ignored in a policy
    /// installed through the admin API, whose version comes with it.
    #[serde(default)]
    pub wasm: PathBuf,
    /// Path prefixes routed to the component, e.g. `/hello`.
    pub routes: Vec<String>,
    /// Path prefixes (within `routes`) served without an access token; everything else needs
    /// a valid one.
    #[serde(default)]
    pub public_routes: Vec<String>,
    /// Path prefixes (within `routes`) that only other components reach, through the
    /// `services` capability; the gateway answers 404 for them.
    #[serde(default)]
    pub internal_routes: Vec<String>,
    /// Tenant routes: prefixes served only for a token scoped to an organization (403
    /// `no-organization` otherwise), whose database transactions the host binds to that
    /// organization (row-level security on PostgreSQL). A prefix may have one `{org_slug}`
    /// segment, e.g. `/org/api/organizations/{org_slug}`: the gateway then answers 404 unless
    /// it is the token's `org_slug`.
    #[serde(default)]
    pub org_routes: Vec<String>,
    /// Host interfaces the component may import.
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
    /// The components whose internal routes this one may call (`services` capability).
    #[serde(default)]
    pub services: BTreeSet<String>,
    /// The topics the component may publish events to (`events` capability).
    #[serde(default)]
    pub events: BTreeSet<String>,
    /// The hosts (`name` or `name:port`) the component may send HTTP requests to (`http`
    /// capability), e.g. `["api.stripe.com", "hooks.example.com:8443"]`. Every other address is
    /// refused, and without the capability every request is.
    #[serde(default)]
    pub http_hosts: BTreeSet<String>,
    /// The topics the component consumes, each with the internal route (under
    /// `internal_routes`) the host delivers their events to, e.g.
    /// `"org.member.events" = "/audit/internal/events"`.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, String>,
    /// A plugin: served to an organization only once that organization's admin enabled it
    /// (`/org/api/organizations/{slug}/plugins`); every other request gets 404.
    #[serde(default)]
    pub per_organization: bool,
    /// Tables of the component's database whose rows its statements may insert and read but
    /// never update or delete (an audit log): enforced by the engine after every migration.
    #[serde(default)]
    pub append_only: Vec<String>,
    /// The permissions the component declares (`resource:action`), for the permission catalog.
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Values the component reads through the `config` capability, as text: numbers and
    /// booleans may be written as TOML numbers and booleans.
    #[serde(default, deserialize_with = "config_values")]
    pub config: BTreeMap<String, String>,
    /// Whether the host config lists the component in `trusted_components`; set by
    /// [`load_dir`], false otherwise, so a trusted capability is never granted by default.
    #[serde(skip)]
    pub approved: bool,
    /// Installed through the admin API (kept in the data directory), not read from the
    /// policies directory: the admin API may uninstall it.
    #[serde(skip)]
    pub installed: bool,
}

/// `[config]` values as text; a TOML number or boolean is written as it reads.
fn config_values<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let values = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
    values
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "config value `{key}` must be a string, number or boolean, not {}",
                        other.type_str()
                    )));
                }
            };
            Ok((key, text))
        })
        .collect()
}

impl Policy {
    /// Whether the component may import `capability`: named in the policy and, for a trusted
    /// capability, approved by the operator too.
    pub fn grants(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability) && (self.approved || !capability.is_trusted())
    }

    /// Whether `path` is served without an access token.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_routes.iter().any(|prefix| under(path, prefix))
    }

    /// Whether `path` is reachable only from other components.
    pub fn is_internal(&self, path: &str) -> bool {
        self.internal_routes
            .iter()
            .any(|prefix| under(path, prefix))
    }

    /// Whether `path` is under one of `org_routes`, and the slug it names there if the route
    /// has an `{org_slug}` segment.
    pub fn org_route<'p>(&self, path: &'p str) -> Option<OrgRoute<'p>> {
        self.org_routes
            .iter()
            .find_map(|pattern| org_route_in(pattern, path))
    }
}

/// A path under one of a policy's `org_routes`.
#[derive(Debug, PartialEq, Eq)]
pub struct OrgRoute<'p> {
    /// The segment in the place of `{org_slug}`, when the route has one.
    pub slug: Option<&'p str>,
}

/// Whether `path` is `pattern` or below it, with the segment in the place of `{org_slug}`.
fn org_route_in<'p>(pattern: &str, path: &'p str) -> Option<OrgRoute<'p>> {
    let mut segments = path.split('/');
    let mut slug = None;
    for expected in pattern.split('/') {
        let segment = segments.next()?;
        if expected == ORG_SLUG {
            slug = Some(Some(segment).filter(|s| !s.is_empty())?);
        } else if expected != segment {
            return None;
        }
    }
    Some(OrgRoute { slug })
}

const ORG_SLUG: &str = "{org_slug}";

/// Whether `path` is `prefix` or below it, by whole segments.
pub fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Reads every `*.toml` in `dir`; fails with all problems found, one per line. `trusted`: the
/// components the operator approved for trusted capabilities (`trusted_components`).
pub fn load_dir(
    dir: &Path,
    max_memory_mib: u32,
    trusted: &[String],
) -> anyhow::Result<Vec<Policy>> {
    let paths = toml_files(dir)
        .with_context(|| format!("reading the policies directory {}", dir.display()))?;
    let mut problems = Vec::new();
    let mut policies = Vec::new();
    for path in paths {
        match load_file(&path) {
            Ok(mut policy) => {
                if policy.wasm == path.parent().unwrap_or(Path::new(".")) {
                    problems.push(format!(
                        "{}: `wasm` is missing; name the component's file, e.g. wasm = \"{}.wasm\"",
                        path.display(),
                        policy.name
                    ));
                }
                problems.extend(check(&policy, max_memory_mib));
                problems.extend(approve(&mut policy, trusted));
                policies.push(policy);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    problems.extend(check_routes(&policies));
    if !problems.is_empty() {
        bail!("invalid policies:\n  - {}", problems.join("\n  - "));
    }
    Ok(policies)
}

/// The `*.toml` files in `dir`, sorted.
pub(crate) fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

pub(crate) fn load_file(path: &Path) -> anyhow::Result<Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let mut policy = parse(&text, name, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    policy.wasm = base.join(&policy.wasm);
    Ok(policy)
}

/// The first segment of the paths gateways ask their nodes on (`/_truevalue/installed`): no
/// component's route may cover it.
pub const HOST_SEGMENT: &str = "_truevalue";

/// What a gateway needs of a component installed on its nodes to route to it, and nothing
/// else of its policy (its `[config]` stays on the nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Routing {
    pub name: String,
    pub routes: Vec<String>,
    #[serde(default)]
    pub public_routes: Vec<String>,
    #[serde(default)]
    pub internal_routes: Vec<String>,
    #[serde(default)]
    pub org_routes: Vec<String>,
}

impl Routing {
    pub fn of(policy: &Policy) -> Self {
        Self {
            name: policy.name.clone(),
            routes: policy.routes.clone(),
            public_routes: policy.public_routes.clone(),
            internal_routes: policy.internal_routes.clone(),
            org_routes: policy.org_routes.clone(),
        }
    }

    /// A policy with these routes and nothing granted, checked as an install is against the
    /// gateway's own policies (`others`).
    pub fn policy(
        &self,
        others: &[Arc<Policy>],
        max_memory_mib: u32,
    ) -> Result<Policy, Vec<String>> {
        let at = PathBuf::from(format!("the nodes' installed component `{}`", self.name));
        let mut policy =
            parse("routes = []", &self.name, &at).map_err(|e| vec![format!("{e:#}")])?;
        policy.routes = self.routes.clone();
        policy.public_routes = self.public_routes.clone();
        policy.internal_routes = self.internal_routes.clone();
        policy.org_routes = self.org_routes.clone();
        policy.installed = true;
        check_installed(policy, others, max_memory_mib, &[])
    }
}

/// The policy of component `name` in `text`; `source` says where it came from in messages.
/// Its `wasm` is as written (relative to the policy file).
pub(crate) fn parse(text: &str, name: &str, source: &Path) -> anyhow::Result<Policy> {
    let mut policy: Policy = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", source.display(), e.to_string().trim()))?;
    policy.name = name.to_string();
    policy.source = source.to_path_buf();
    policy.digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    Ok(policy)
}

/// Checks a policy installed through the admin API as [`load_dir`] checks files, against the
/// policies already loaded (`others`); every problem found, or the policy ready to load.
pub fn check_installed(
    mut policy: Policy,
    others: &[Arc<Policy>],
    max_memory_mib: u32,
    trusted: &[String],
) -> Result<Policy, Vec<String>> {
    let mut problems = check(&policy, max_memory_mib);
    problems.extend(approve(&mut policy, trusted));
    for route in &policy.routes {
        for other in others.iter().filter(|other| other.name != policy.name) {
            if let Some(held) = other.routes.iter().find(|held| overlap(route, held)) {
                problems.push(format!(
                    "route {route:?} {}",
                    clash(route, held, &other.name)
                ));
            }
        }
    }
    policy.installed = true;
    match problems.is_empty() {
        true => Ok(policy),
        false => Err(problems),
    }
}

/// The policies installed through the admin API, kept in `dir` as `<name>.toml` beside the
/// version they were installed with, `<name>.wasm`. One that no longer passes the checks
/// (the host config changed, or a file in the policies directory now claims its name or a
/// route) is logged and left out: the others load.
pub fn load_installed(
    dir: &Path,
    loaded: &[Policy],
    max_memory_mib: u32,
    trusted: &[String],
) -> Vec<Policy> {
    let Ok(paths) = toml_files(dir) else {
        return Vec::new();
    };
    let mut others: Vec<Arc<Policy>> = loaded.iter().cloned().map(Arc::new).collect();
    let mut installed = Vec::new();
    for path in paths {
        let checked = load_file(&path)
            .map_err(|e| vec![format!("{e:#}")])
            .and_then(|policy| {
                if others.iter().any(|other| other.name == policy.name) {
                    return Err(vec![format!(
                        "{}: the policies directory has a component of this name",
                        path.display()
                    )]);
                }
                check_installed(policy, &others, max_memory_mib, trusted)
            });
        match checked {
            Ok(mut policy) => {
                policy.wasm = path.with_extension("wasm");
                others.push(Arc::new(policy.clone()));
                installed.push(policy);
            }
            Err(problems) => tracing::error!(
                policy = %path.display(),
                problems = %problems.join("; "),
                "an installed component is left out: uninstall it, or install it again"
            ),
        }
    }
    installed
}

/// A component name: also a schema, a file and a role suffix, so kept to `[a-z][a-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 32
}

pub(crate) fn check(policy: &Policy, max_memory_mib: u32) -> Vec<String> {
    let at = policy.source.display();
    let mut problems = Vec::new();
    if !valid_name(&policy.name) {
        problems.push(format!(
            "{at}: the file name is the component's name and must match [a-z][a-z0-9_]*, at most 32 characters"
        ));
    }
    if policy.routes.is_empty() {
        problems.push(format!(
            "{at}: `routes` is empty; give at least one path prefix like \"/{}\"",
            policy.name
        ));
    }
    for route in &policy.routes {
        if overlap(route, &format!("/{HOST_SEGMENT}")) {
            problems.push(format!(
                "{at}: route {route:?} covers /{HOST_SEGMENT}, which the host keeps for itself"
            ));
        }
        let valid = route.starts_with('/')
            && route.len() > 1
            && !route.ends_with('/')
            && route
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
        if !valid {
            problems.push(format!(
                "{at}: route {route:?} must be a path prefix like \"/{}\" (no trailing slash, no wildcards)",
                policy.name
            ));
        }
    }
    for public in &policy.public_routes {
        if !policy.routes.iter().any(|route| under(public, route)) {
            problems.push(format!(
                "{at}: public route {public:?} is not under any of `routes`"
            ));
        }
    }
    for internal in &policy.internal_routes {
        if !policy.routes.iter().any(|route| under(internal, route)) {
            problems.push(format!(
                "{at}: internal route {internal:?} is not under any of `routes`"
            ));
        }
        if policy
            .public_routes
            .iter()
            .any(|public| under(internal, public) || under(public, internal))
        {
            problems.push(format!(
                "{at}: internal route {internal:?} overlaps a public route"
            ));
        }
    }
    for pattern in &policy.org_routes {
        let literal = pattern.replace(ORG_SLUG, "x");
        let slugs = pattern.matches(ORG_SLUG).count();
        let whole = pattern
            .split('/')
            .filter(|segment| *segment == ORG_SLUG)
            .count();
        if slugs > 1
            || slugs != whole
            || pattern.ends_with('/')
            || !policy.routes.iter().any(|route| under(&literal, route))
        {
            problems.push(format!(
                "{at}: org route {pattern:?} must be a prefix under one of `routes`, with at most one whole segment `{ORG_SLUG}`, like \"/{}/orgs/{ORG_SLUG}\"",
                policy.name
            ));
        }
    }
    if !policy.services.is_empty() && !policy.capabilities.contains(&Capability::Services) {
        problems.push(format!(
            "{at}: `services` lists components to call, but `capabilities` does not grant \"services\""
        ));
    }
    if !policy.events.is_empty() && !policy.capabilities.contains(&Capability::Events) {
        problems.push(format!(
            "{at}: `events` lists topics to publish to, but `capabilities` does not grant \"events\""
        ));
    }
    if !policy.http_hosts.is_empty() && !policy.capabilities.contains(&Capability::Http) {
        problems.push(format!(
            "{at}: `http_hosts` lists hosts to call, but `capabilities` does not grant \"http\""
        ));
    }
    if policy.capabilities.contains(&Capability::Http) && policy.http_hosts.is_empty() {
        problems.push(format!(
            "{at}: the \"http\" capability needs `http_hosts`, the hosts the component may call, like [\"api.example.com\"]"
        ));
    }
    for host in &policy.http_hosts {
        if !crate::capabilities::http::valid_host(host) {
            problems.push(format!(
                "{at}: http host {host:?} must be a lower-case host name or IP address, with an optional `:port`, like \"api.example.com\" or \"10.0.0.7:8080\" (no scheme, no path)"
            ));
        }
    }
    if policy.capabilities.contains(&Capability::Events)
        && !policy.capabilities.contains(&Capability::Database)
    {
        problems.push(format!(
            "{at}: the \"events\" capability needs \"database\" too: events are written to an outbox in the request's transaction"
        ));
    }
    for topic in &policy.events {
        if !crate::capabilities::events::valid_topic(topic) {
            problems.push(format!(
                "{at}: topic {topic:?} must be 1-200 characters of [a-z0-9._-], like \"org.member.events\", and not end in \".dlq\""
            ));
        }
    }
    if policy.per_organization && !policy.subscriptions.is_empty() {
        problems.push(format!(
            "{at}: a per-organization plugin cannot have `subscriptions` yet: events of organizations that did not enable it would reach it"
        ));
    }
    for (topic, route) in &policy.subscriptions {
        let base = topic.strip_suffix(".dlq").unwrap_or(topic);
        if !crate::capabilities::events::valid_topic(base) {
            problems.push(format!(
                "{at}: subscription {topic:?} must name a topic of [a-z0-9._-], like \"org.member.events\" (or its \".dlq\")"
            ));
        }
        if !policy.is_internal(route) {
            problems.push(format!(
                "{at}: subscription {topic:?} delivers to {route:?}, which must be under `internal_routes` so that only the host reaches it"
            ));
        }
    }
    for table in &policy.append_only {
        let plain = table.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && table.len() <= 48
            && !table.starts_with("truevalue_");
        if !plain {
            problems.push(format!(
                "{at}: append-only table {table:?} must be a plain table name of [a-z0-9_]"
            ));
        }
        if !policy.capabilities.contains(&Capability::Database) {
            problems.push(format!(
                "{at}: `append_only` names tables, but `capabilities` does not grant \"database\""
            ));
        }
    }
    for permission in &policy.permissions {
        let valid = permission
            .split_once(':')
            .is_some_and(|(resource, action)| {
                [resource, action].iter().all(|part| {
                    !part.is_empty()
                        && part.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)
                        })
                })
            });
        if !valid {
            problems.push(format!(
                "{at}: permission {permission:?} must be `resource:action` in lower case, like \"contacts:read\""
            ));
        }
    }
    let limits = &policy.limits;
    if !(1..=max_memory_mib).contains(&limits.memory_mib) {
        problems.push(format!(
            "{at}: limits.memory_mib must be between 1 and {max_memory_mib}"
        ));
    }
    if !(1..=300_000).contains(&limits.timeout_ms) {
        problems.push(format!(
            "{at}: limits.timeout_ms must be between 1 and 300000"
        ));
    }
    if !(1..=10_000).contains(&limits.max_instances) {
        problems.push(format!(
            "{at}: limits.max_instances must be between 1 and 10000"
        ));
    }
    if !(1..=1_000_000).contains(&limits.instance_reuse) {
        problems.push(format!(
            "{at}: limits.instance_reuse must be between 1 (a fresh instance per request) and 1000000"
        ));
    }
    if !(1..=10_000_000).contains(&limits.cache_max_entries) {
        problems.push(format!(
            "{at}: limits.cache_max_entries must be between 1 and 10000000"
        ));
    }
    if !(1..=MAX_CACHE_BYTES).contains(&limits.cache_max_bytes) {
        problems.push(format!(
            "{at}: limits.cache_max_bytes must be between 1 and {MAX_CACHE_BYTES} (4 GiB)"
        ));
    }
    if !(1..=10_000_000).contains(&limits.max_result_rows) {
        problems.push(format!(
            "{at}: limits.max_result_rows must be between 1 and 10000000"
        ));
    }
    if !(1..=limits.memory_bytes()).contains(&limits.result_bytes()) {
        problems.push(format!(
            "{at}: limits.max_result_bytes must be between 1 and the memory limit ({} bytes)",
            limits.memory_bytes()
        ));
    }
    problems
}

/// Marks the policy approved when the operator listed it; a policy that names a trusted
/// capability without that approval is a problem, so a component dropped into the policies
/// directory cannot grant itself one.
fn approve(policy: &mut Policy, trusted: &[String]) -> Option<String> {
    policy.approved = trusted.contains(&policy.name);
    let asked: Vec<&str> = policy
        .capabilities
        .iter()
        .filter(|c| c.is_trusted())
        .map(|c| c.interface())
        .collect();
    (!policy.approved && !asked.is_empty()).then(|| {
        format!(
            "{}: {} is a trusted capability that only operator-approved components may hold; \
             add \"{}\" to `trusted_components` in the host config, or remove it from `capabilities`",
            policy.source.display(),
            asked.join(", "),
            policy.name
        )
    })
}

/// The largest cache quota one policy may ask for.
const MAX_CACHE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

fn check_routes(policies: &[Policy]) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, policy) in policies.iter().enumerate() {
        for other in &policies[at + 1..] {
            for route in &policy.routes {
                let Some(held) = other.routes.iter().find(|held| overlap(route, held)) else {
                    continue;
                };
                // Told from the side of the route that lies under the other.
                let ((inner, owner), (outer, holder)) = match under(route, held) {
                    true => ((route, policy), (held, other)),
                    false => ((held, other), (route, policy)),
                };
                problems.push(match inner == outer {
                    true => format!(
                        "route {inner:?} is claimed by both `{}` and `{}`",
                        holder.name, owner.name
                    ),
                    false => format!(
                        "route {inner:?} of `{}` {}",
                        owner.name,
                        clash(inner, outer, &holder.name)
                    ),
                });
            }
        }
    }
    problems
}

/// Whether two components' routes would share paths: the gateway serves a path by the longest
/// route it is under, so a route under another component's would take that part of it (a
/// plugin at `/auth/login` would read every password), and one above it would take the rest.
fn overlap(route: &str, other: &str) -> bool {
    under(route, other) || under(other, route)
}

/// How `route` clashes with `other`'s overlapping route `held`, for a problem's text.
fn clash(route: &str, held: &str, other: &str) -> String {
    if route == held {
        format!("is claimed by `{other}` already")
    } else if under(route, held) {
        format!("lies under `{other}`'s route {held:?}, which it would take part of")
    } else {
        format!("holds `{other}`'s route {held:?} under it")
    }
}

/// The route table as the gateway reads it: replaced whole when a component is installed or
/// uninstalled.
pub type Routes = arc_swap::ArcSwap<RouteTable>;

/// Which policy serves a path: the longest route prefix that matches by whole segments.
pub struct RouteTable(Vec<(String, Arc<Policy>)>);

impl RouteTable {
    pub fn new(policies: &[Arc<Policy>]) -> Self {
        let mut routes: Vec<(String, Arc<Policy>)> = policies
            .iter()
            .flat_map(|policy| {
                policy
                    .routes
                    .iter()
                    .map(|route| (route.clone(), policy.clone()))
            })
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self(routes)
    }

    pub fn find(&self, path: &str) -> Option<&Arc<Policy>> {
        self.0
            .iter()
            .find(|(prefix, _)| under(path, prefix))
            .map(|(_, policy)| policy)
    }

    /// The names of the components that serve a route, each once.
    pub fn components(&self) -> std::collections::BTreeSet<&str> {
        self.0
            .iter()
            .map(|(_, policy)| policy.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod org_route_tests {
    use super::{OrgRoute, org_route_in};

    fn slug(slug: &str) -> Option<OrgRoute<'_>> {
        Some(OrgRoute { slug: Some(slug) })
    }

    #[test]
    fn the_slug_is_the_segment_in_its_place_on_the_route_and_below() {
        let pattern = "/org/api/organizations/{org_slug}";
        assert_eq!(
            org_route_in(pattern, "/org/api/organizations/acme"),
            slug("acme")
        );
        assert_eq!(
            org_route_in(pattern, "/org/api/organizations/acme/members/u1"),
            slug("acme")
        );
        assert_eq!(org_route_in(pattern, "/org/api/organizations"), None);
        assert_eq!(org_route_in(pattern, "/org/api/organizations/"), None);
        assert_eq!(org_route_in(pattern, "/org/api/invites/t/accept"), None);
        assert_eq!(org_route_in(pattern, "/org/api/organizationsx/acme"), None);
    }

    #[test]
    fn a_route_without_a_slug_matches_by_whole_segments() {
        let route = Some(OrgRoute { slug: None });
        assert_eq!(org_route_in("/permission/api", "/permission/api"), route);
        assert_eq!(
            org_route_in("/permission/api", "/permission/api/roles"),
            route
        );
        assert_eq!(org_route_in("/permission/api", "/permission/apix"), None);
        assert_eq!(org_route_in("/permission/api", "/permission"), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod trusted_tests {
    use super::*;

    fn policy(name: &str, capabilities: &str) -> Policy {
        let mut policy: Policy = toml::from_str(&format!(
            "wasm = \"x.wasm\"\nroutes = [\"/{name}\"]\ncapabilities = {capabilities}"
        ))
        .unwrap();
        policy.name = name.into();
        policy
    }

    #[test]
    fn a_trusted_capability_is_granted_only_with_the_operators_approval() {
        let mut plugin = policy("plugin", "[\"tokens\", \"cache\"]");
        assert!(
            !plugin.grants(Capability::Tokens),
            "not approved by default"
        );
        let problem = approve(&mut plugin, &["auth".into()]).unwrap();
        assert!(problem.contains("trusted_components"), "{problem}");
        assert!(problem.contains("\"plugin\""), "{problem}");
        assert!(!plugin.grants(Capability::Tokens));
        assert!(plugin.grants(Capability::Cache), "ordinary grants stay");

        let mut auth = policy("auth", "[\"tokens\"]");
        assert_eq!(approve(&mut auth, &["auth".into()]), None);
        assert!(auth.grants(Capability::Tokens));
    }

    #[test]
    fn approval_grants_nothing_the_policy_does_not_name() {
        let mut auth = policy("auth", "[\"database\"]");
        assert_eq!(approve(&mut auth, &["auth".into()]), None);
        assert!(!auth.grants(Capability::Tokens));
    }
}
