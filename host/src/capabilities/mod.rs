//! Host capabilities that components import, one folder each, granted per policy.

pub mod config;
pub mod database;
pub mod log;
