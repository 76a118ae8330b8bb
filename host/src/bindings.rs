//! The one place the host generates bindings from `wit/`: the `service` world (the first
//! release of the entry point) and the `plugin` world (the caller behind `context`), which share
//! every capability interface.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::exports::truevalue::platform::{handler, manifest};
pub use self::truevalue::platform::{
    cache, config, crypto, database, email, events, log, services, tokens,
};

/// The `plugin` world: its own entry point, context and manifest types; the capabilities are
/// the `service` world's.
pub mod plugin {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "truevalue:platform/database": super::database,
            "truevalue:platform/config": super::config,
            "truevalue:platform/log": super::log,
            "truevalue:platform/cache": super::cache,
            "truevalue:platform/crypto": super::crypto,
            "truevalue:platform/tokens": super::tokens,
            "truevalue:platform/services": super::services,
            "truevalue:platform/email": super::email,
            "truevalue:platform/events": super::events,
        },
    });

    pub use self::exports::truevalue::platform::{endpoint, manifest};
    pub use self::truevalue::platform::context;
}
