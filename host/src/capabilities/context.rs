//! `context`: the verified caller of the request an instance serves now, behind getters, for
//! components of the `plugin` world. Every component may import it: it tells a component only
//! what the host hands it in the request anyway.

use crate::bindings::handler::RequestContext;
use crate::bindings::plugin::context::Host;

/// The context of the request being served; none while the host reads a manifest.
#[derive(Default)]
pub struct ContextCtx(pub Option<RequestContext>);

impl ContextCtx {
    fn get<T>(&self, field: impl FnOnce(&RequestContext) -> T) -> Option<T> {
        self.0.as_ref().map(field)
    }
}

impl Host for ContextCtx {
    async fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.get(|c| c.request_id.clone()).unwrap_or_default())
    }

    async fn user_id(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.get(|c| c.user_id.clone()).flatten())
    }

    async fn org_id(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.get(|c| c.org_id.clone()).flatten())
    }

    async fn roles(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.get(|c| c.roles.clone()).unwrap_or_default())
    }

    async fn permissions(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.get(|c| c.permissions.clone()).unwrap_or_default())
    }

    async fn session_id(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.get(|c| c.session_id.clone()).flatten())
    }

    async fn client_ip(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.get(|c| c.client_ip.clone()).flatten())
    }

    async fn caller(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.get(|c| c.caller.clone()).flatten())
    }
}
