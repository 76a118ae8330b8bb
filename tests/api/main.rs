//! Black-box tests: the real `truevalue` binary on random ports, spoken to over HTTP.
//! `just test` builds the components they load first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod analytics;
mod audit;
mod audit_trail;
mod auth;
mod capabilities;
mod cli;
mod config;
mod database;
mod database_bounds;
mod degraded;
mod disclosure;
mod email;
mod events;
mod example_plugins;
mod fairness;
mod gateway;
mod guestbook;
mod hot_swap;
mod identity;
mod install;
mod kafka;
mod listener;
mod operations;
mod org;
mod permission;
mod plugins;
mod quotas;
mod rate_limit;
mod reuse;
mod sandbox;
mod scaffold;
mod services;
mod signatures;
mod split;
mod sql_guard;
mod tenancy_rls;
mod trusted;
mod versions;
mod wasi;
