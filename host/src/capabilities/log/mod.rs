//! The `log` capability: lines in the host's log, tagged with the component and request id.

use std::sync::Arc;

use crate::bindings::log::{Host, Level};

/// Longest message kept; the rest is cut so a component cannot flood the log with one call.
const MAX_MESSAGE: usize = 4096;

pub struct LogCtx {
    component: Arc<str>,
    request_id: Arc<str>,
}

impl LogCtx {
    pub fn new(component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            component,
            request_id,
        }
    }
}

impl Host for LogCtx {
    async fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_MESSAGE {
            let cut = (0..=MAX_MESSAGE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        let (component, request_id) = (&*self.component, &*self.request_id);
        match level {
            Level::Trace => tracing::trace!(component, request_id, "{message}"),
            Level::Debug => tracing::debug!(component, request_id, "{message}"),
            Level::Info => tracing::info!(component, request_id, "{message}"),
            Level::Warn => tracing::warn!(component, request_id, "{message}"),
            Level::Error => tracing::error!(component, request_id, "{message}"),
        }
        Ok(())
    }
}
