//! The `config` capability: read-only values from the `[config]` table of the policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::config::Host;

pub struct ConfigCtx {
    values: Arc<BTreeMap<String, String>>,
}

impl ConfigCtx {
    pub fn new(values: Arc<BTreeMap<String, String>>) -> Self {
        Self { values }
    }
}

impl Host for ConfigCtx {
    /// Values come from the operator's policy, so their size is the operator's; the key a
    /// component asks for is only compared, never kept.
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.values.get(&key).cloned())
    }
}
