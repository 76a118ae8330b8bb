//! The one place the host generates bindings from `wit/`.

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
