//! Host capabilities that components import, one folder each, granted per policy.

pub mod cache;
pub mod config;
pub mod context;
pub mod crypto;
pub mod database;
pub mod email;
pub mod events;
pub mod http;
pub mod log;
pub mod services;
pub mod tokens;

use std::sync::Arc;

/// What the capabilities share across components, built once at start-up from the config.
pub struct Capabilities {
    pub database: Arc<dyn database::Backend>,
    pub cache: Arc<dyn cache::CacheStore>,
    pub crypto: Arc<crypto::Crypto>,
    pub tokens: Arc<tokens::Tokens>,
    /// Sends what successful requests queued through the `email` capability.
    pub email: Arc<email::Mailer>,
    /// Moves what successful requests published through the `events` capability to the bus.
    pub events: Arc<events::Relay>,
    /// The publishers whose signed components load, and whether a signature is required.
    pub signatures: Arc<crate::signatures::Signatures>,
}
