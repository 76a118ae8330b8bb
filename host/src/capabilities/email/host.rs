//! The WIT `email` interface: `send` checks and queues; the runtime sends after the commit.

use super::EmailCtx;
use crate::bindings::email::{Host, Message};

impl Host for EmailCtx {
    async fn send(&mut self, message: Message) -> wasmtime::Result<Result<(), String>> {
        Ok(self.queue(message))
    }
}
