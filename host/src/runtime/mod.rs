//! The component runtime: one engine, a registry of components behind atomic pointers,
//! and a fresh, limited instance for every request.

mod compiler;
mod deliveries;
mod deployed;
mod engine;
pub mod fairness;
mod install;
mod invoke;
pub(crate) mod loader;
mod plugins;
mod registry;
mod state;

pub use deliveries::Deliveries;
pub use engine::new_engine;
pub use install::{DIR as INSTALLED_DIR, Install};
pub use invoke::{Call, Failure, Outcome, RequestMeta};
pub use loader::Loaded;
pub use registry::{
    ComponentInfo, DeployError, KeptVersion, Runtime, Sandbox, Settings, Slot, Status,
};
pub use state::State;
