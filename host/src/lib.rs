//! The TrueValue host: owns the network, the keys and the databases, and runs the business
//! services as sandboxed WebAssembly components loaded from `policies/`.

pub mod admin;
pub mod backends;
pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod listener;
pub mod policy;
pub mod runtime;
pub mod scaffold;
pub mod secrets;
pub mod security_state;
pub mod serve;
pub mod signatures;
pub mod signing;
