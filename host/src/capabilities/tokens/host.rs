//! The WIT `tokens` interface over the host's keys.

use std::sync::Arc;

use super::{AccessToken, Claims, Error, Tokens};
use crate::bindings::tokens::Host;

#[derive(Clone)]
pub struct TokensCtx {
    tokens: Arc<Tokens>,
    /// When the request began (Unix milliseconds): the rights a token minted in it carries are
    /// those read after this moment.
    started_ms: u64,
}

impl TokensCtx {
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self {
            tokens,
            started_ms: 0,
        }
    }

    /// The state of one request, stamped with its start.
    pub fn for_request(&self) -> Self {
        Self {
            tokens: self.tokens.clone(),
            started_ms: super::now_ms(),
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }
}

impl Host for TokensCtx {
    async fn mint_access(&mut self, claims: Claims) -> wasmtime::Result<AccessToken> {
        self.tokens
            .mint(claims, self.started_ms)
            .map_err(|e| wasmtime::format_err!("minting a token: {e:#}"))
    }

    async fn verify_access(&mut self, token: String) -> wasmtime::Result<Result<Claims, Error>> {
        Ok(self.tokens.verify(&token).await)
    }

    async fn revoke_session(&mut self, session_id: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.tokens.revoke(&session_id).await)
    }
}
