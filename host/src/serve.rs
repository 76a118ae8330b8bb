//! `truevalue serve`: wires the configuration, backends, runtime, gateway and admin API.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::backends::Backends;
use crate::capabilities::Capabilities;
use crate::capabilities::cache::{CacheStore, MemoryCache, RedisCache};
use crate::capabilities::crypto::Crypto;
use crate::capabilities::email::Mailer;
use crate::capabilities::events::{Bus, KafkaBus, LocalBus, Relay};
use crate::capabilities::tokens::{Key, Tokens};
use crate::config::{Config, Role};
use crate::gateway::Upstream;
use crate::gateway::auth::Auth;
use crate::gateway::forward::Nodes;
use crate::gateway::node::NodeGuard;
use crate::gateway::rate_limit::{Limiter, MemoryLimiter, RateLimit, RedisLimiter, TrustedProxies};
use crate::gateway::{self, AppState};
use crate::policy::RouteTable;
use crate::runtime::{Runtime, Settings, new_engine};
use crate::security_state::{MemorySecurityState, RedisSecurityState, SecurityState};
use crate::signatures::Signatures;
use crate::{admin, capabilities, listener, policy, secrets};
use secrecy::SecretString;

/// How often histogram samples are folded into their buckets between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();

    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples wait in the recorder until upkeep folds them into their buckets; a
    // scrape runs it, but a host nobody scrapes would hold every request's samples for ever.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    secrets::private_data_dir(&config.data_dir)?;
    let policies = policy::load_dir(
        &config.policies_dir,
        config.max_memory_mib,
        &config.trusted_components,
    )?;
    let backends = Backends::new(&config)?;
    let cache: Arc<dyn CacheStore> = match &backends.redis {
        Some(redis) => Arc::new(RedisCache::new(redis.clone())),
        None => Arc::new(MemoryCache::default()),
    };
    // Revocations and replay marks: apart from the components' cache, which cannot evict them.
    let security: Arc<dyn SecurityState> = match &backends.redis {
        Some(redis) => Arc::new(RedisSecurityState::new(redis.clone())),
        None => Arc::new(MemorySecurityState::default()),
    };
    let (secret, _) =
        secrets::load_or_generate(config.secret_key.clone(), &config.data_dir, "secret-key")?;
    let keys = match config.token_keys.is_empty() {
        true => vec![Tokens::derived_key(&secret)],
        false => config
            .token_keys
            .iter()
            .map(|k| Key {
                kid: k.kid.clone(),
                secret: k.secret.clone(),
            })
            .collect(),
    };
    // Revocations are shared by every gateway when Redis is configured.
    let tokens = Arc::new(Tokens::new(&keys, security.clone())?);

    // A gateway runs no components: it only needs the policies' routes.
    let (upstream, routes, runtime) = match config.role {
        Role::Gateway => {
            let own: Vec<Arc<policy::Policy>> = policies.into_iter().map(Arc::new).collect();
            let routes = Arc::new(arc_swap::ArcSwap::from_pointee(RouteTable::new(&own)));
            let nodes = Arc::new(Nodes::new(
                config.nodes.clone(),
                gateway_secret(&config)?,
                config.nodes_ca_file.as_deref(),
            )?);
            // Components installed on the nodes join the routes while the gateway runs.
            gateway::forward::follow_installed(
                nodes.clone(),
                own,
                routes.clone(),
                config.max_memory_mib,
            );
            (Upstream::Nodes(nodes), routes, None)
        }
        Role::All | Role::Node => {
            // Components installed through the admin API, after the policies directory's.
            let mut policies = policies;
            let installed = policy::load_installed(
                &config.data_dir.join(crate::runtime::INSTALLED_DIR),
                &policies,
                config.max_memory_mib,
                &config.trusted_components,
            );
            policies.extend(installed);
            let database =
                capabilities::database::connect(config.database_url.as_ref(), &config.data_dir)
                    .await?;
            let bus: Arc<dyn Bus> = match &config.kafka_brokers {
                Some(brokers) => Arc::new(KafkaBus::new(brokers)?),
                None => Arc::new(LocalBus::open(&config.data_dir).await?),
            };
            let relay = Relay::new(bus);
            let capabilities = Capabilities {
                database,
                cache,
                crypto: Arc::new(Crypto::new(secret)),
                tokens: tokens.clone(),
                email: Arc::new(Mailer::from_settings(
                    config.smtp_url.as_ref(),
                    &config.smtp_from,
                )?),
                events: relay.clone(),
                signatures: Arc::new(Signatures::new(
                    &config.trusted_publishers,
                    config.require_signatures,
                )?),
            };
            match &config.smtp_url {
                Some(_) => {
                    tracing::info!(from = %config.smtp_from, "emails are sent through the SMTP server in smtp_url")
                }
                None => tracing::info!(
                    "smtp_url is not set: emails are logged by recipient and subject, and dropped"
                ),
            }
            let engine = new_engine(config.max_instances, config.max_memory_mib, config.perf_map)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let runtime = Arc::new(
                Runtime::start(
                    engine,
                    capabilities,
                    policies,
                    Settings {
                        data_dir: config.data_dir.clone(),
                        cache_dir: config.cache_dir(),
                        cache_max_bytes: u64::from(config.compile_cache_max_mib) * 1024 * 1024,
                        compile_queue: config.compile_queue as usize,
                        max_instances: config.max_instances,
                        max_memory_mib: config.max_memory_mib,
                        trusted_components: config.trusted_components.clone(),
                    },
                )
                .await?,
            );
            runtime.expire_kept(Duration::from_millis(config.kept_idle_ms));
            relay.start();
            for policy in runtime.policies() {
                runtime.consume_events(&policy)?;
            }
            for component in runtime.components() {
                match (&component.version, &component.digest) {
                    (Some(version), Some(digest)) => {
                        tracing::info!(component = %component.name, %version, %digest, routes = ?component.routes, "loaded")
                    }
                    // Logged at error with the whole reason by the runtime.
                    _ => {
                        tracing::warn!(component = %component.name, routes = ?component.routes, "not serving: its routes answer 503 until a fixed version is deployed")
                    }
                }
            }
            (
                Upstream::Local(runtime.clone()),
                runtime.routes(),
                Some(runtime),
            )
        }
    };
    let request_metrics = gateway::RequestMetrics::new(routes.load().components());

    let limits = connection_limits(&config);
    // Operators and metric scrapers only: a small share, so the two listeners together stay
    // within the open-file limit the public cap was fitted to.
    let admin_limits = listener::Limits {
        max_connections: limits.max_connections.min(ADMIN_MAX_CONNECTIONS),
        ..limits
    };
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(listener::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(config.listen_addr()?)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    // Printed on stdout for people and scripts: the addresses actually bound (port 0 resolved).
    println!(
        "gateway listening on {}://{} (role {:?})",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        config.role
    );
    let admin = match &runtime {
        Some(runtime) => {
            let (token, token_source) = admin::token(config.admin_token.clone(), &config.data_dir)?;
            let admin = TcpListener::bind(config.admin_addr()?)
                .await
                .with_context(|| format!("admin_listen: cannot bind {}", config.admin_listen))?;
            println!(
                "admin API listening on http://{} (token from {token_source})",
                admin.local_addr()?
            );
            Some(listener::serve(
                admin,
                admin::router(runtime.clone(), &token, metrics.clone()),
                admin_limits,
                None,
                shutdown(),
            ))
        }
        None => {
            let admin = TcpListener::bind(config.admin_addr()?)
                .await
                .with_context(|| format!("admin_listen: cannot bind {}", config.admin_listen))?;
            println!(
                "admin API listening on http://{} (metrics only: a gateway runs no components; deploy on the nodes)",
                admin.local_addr()?
            );
            Some(listener::serve(
                admin,
                admin::metrics_only(metrics.clone()),
                admin_limits,
                None,
                shutdown(),
            ))
        }
    };

    let limiter: Arc<dyn Limiter> = match &backends.redis {
        Some(redis) => Arc::new(RedisLimiter::new(redis.clone())),
        None => Arc::new(MemoryLimiter::default()),
    };
    let rate = Arc::new(RateLimit {
        limiter,
        limit: u64::from(config.rate_limit_per_minute),
        routes: routes.clone(),
        proxies: TrustedProxies::parse(&config.trusted_proxies)?,
    });
    let body = gateway::BodyRules {
        limit: config.body_limit_bytes,
        timeout: Duration::from_millis(config.body_read_timeout_ms),
    };
    let state = Arc::new(AppState {
        upstream,
        routes: routes.clone(),
        backends,
        body,
        metrics: request_metrics,
    });
    let app = match config.role {
        Role::Node => {
            let guard = NodeGuard {
                secret: gateway_secret(&config)?,
                seen: security,
                body,
            };
            gateway::node_router(state, Arc::new(guard))
        }
        Role::All | Role::Gateway => {
            let auth = Arc::new(Auth { routes, tokens });
            gateway::router(state, auth, rate, gateway::cors(&config.cors_origins))
        }
    };
    let gateway = listener::serve(listener, app, limits, tls, shutdown());
    let admin = async {
        match admin {
            Some(admin) => admin.await.context("admin API"),
            None => Ok(()),
        }
    };
    tokio::try_join!(async { gateway.await.context("gateway") }, admin)?;
    tracing::info!("stopped");
    Ok(())
}

/// Most connections the admin listener holds at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The listeners' timeouts and connection cap, with the open-file limit raised to hold the cap.
fn connection_limits(config: &Config) -> listener::Limits {
    let max_connections = match listener::raise_fd_limit() {
        Ok(fd_limit) => {
            let cap = listener::connection_cap(config.max_connections, fd_limit);
            if cap < config.max_connections {
                tracing::warn!(
                    max_connections = config.max_connections,
                    fd_limit,
                    cap,
                    "the open-file limit lowers the connection cap"
                );
            }
            cap
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            config.max_connections
        }
    };
    listener::Limits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        max_connections,
    }
}

fn gateway_secret(config: &Config) -> anyhow::Result<SecretString> {
    config
        .gateway_secret
        .clone()
        .context("gateway_secret (TRUEVALUE_GATEWAY_SECRET) is required for this role")
}

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish before the process exits.
async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
}
