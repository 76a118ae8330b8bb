//! The WIT `cache` interface over the configured store, in this component's space (its
//! namespace and quota).

use std::sync::Arc;
use std::time::Duration;

use super::{CacheStore, Error, Space};
use crate::bindings::cache::Host;

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 1024 * 1024;
/// Longest TTL: a year. Longer ones are refused rather than overflowing a clock.
const MAX_TTL_MS: u64 = 365 * 24 * 60 * 60 * 1000;

#[derive(Clone)]
pub struct CacheCtx {
    store: Option<Arc<dyn CacheStore>>,
    space: Arc<Space>,
}

impl CacheCtx {
    /// `store` is none when the policy does not grant `cache` (nothing is linked then).
    pub fn new(store: Option<Arc<dyn CacheStore>>, space: Space) -> Self {
        Self {
            store,
            space: Arc::new(space),
        }
    }

    fn scoped<'a>(&'a self, key: &'a str) -> Result<(&'a dyn CacheStore, &'a Space), Error> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::Invalid(format!("keys are 1 to {MAX_KEY} bytes")));
        }
        let store = self
            .store
            .as_deref()
            .ok_or_else(|| Error::Unavailable("no cache is granted".into()))?;
        Ok((store, &self.space))
    }
}

fn ttl(ms: Option<u64>) -> Result<Option<Duration>, Error> {
    match ms {
        Some(0) => Err(Error::Invalid("a ttl must be at least 1 ms".into())),
        Some(ms) if ms > MAX_TTL_MS => Err(Error::Invalid(format!(
            "a ttl is at most {MAX_TTL_MS} ms (a year)"
        ))),
        other => Ok(other.map(Duration::from_millis)),
    }
}

fn checked(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE {
        return Err(Error::Invalid(format!(
            "values are at most {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

impl CacheCtx {
    /// `set` and `set-if-absent`: checks the value and the TTL, then stores under the
    /// component's namespace.
    async fn store(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        only_if_absent: bool,
    ) -> Result<bool, Error> {
        checked(&value)?;
        let ttl = ttl(ttl_ms)?;
        let (store, space) = self.scoped(key)?;
        store.set(space, key, value, ttl, only_if_absent).await
    }
}

impl Host for CacheCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(match self.scoped(&key) {
            Ok((store, space)) => store.get(space, &key).await,
            Err(e) => Err(e),
        })
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.store(&key, value, ttl_ms, false).await.map(|_| ()))
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self.store(&key, value, ttl_ms, true).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        Ok(match self.scoped(&key) {
            Ok((store, space)) => store.delete(space, &key).await,
            Err(e) => Err(e),
        })
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let result = async {
            let ttl = ttl(ttl_ms)?;
            let (store, space) = self.scoped(&key)?;
            store.increment(space, &key, delta, ttl).await
        };
        Ok(result.await)
    }
}
