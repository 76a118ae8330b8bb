//! The `crypto` capability: password hashing, randomness, constant-time comparison and HMACs,
//! with every key kept in the host.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::bindings::crypto::Host;
use crate::secrets::hmac_sha256;

const MAX_RANDOM_BYTES: u32 = 4096;
/// Longest password hashed or verified, in bytes: far above any real password, and it keeps
/// what a component can make the hashers read small.
pub const MAX_PASSWORD_BYTES: usize = 4096;
/// Longest PHC string verified; real Argon2id ones are ~100 bytes.
const MAX_PHC_BYTES: usize = 512;
/// Most bytes one HMAC or comparison takes; the same as the largest cache value.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// What every component's crypto shares: the host's secret and the password hashers.
pub struct Crypto {
    secret: SecretString,
    hashers: Hashers,
}

impl Crypto {
    pub fn new(secret: SecretString) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            secret,
            hashers: Hashers::start(cores),
        }
    }

    /// The per-component state: the component's own HMAC key, derived from the host's secret.
    pub fn for_component(self: &Arc<Self>, component: &str) -> CryptoCtx {
        let key = hmac_sha256(
            self.secret.expose_secret().as_bytes(),
            format!("component key:{component}").as_bytes(),
        );
        CryptoCtx {
            shared: self.clone(),
            key,
        }
    }

    /// The state of a component without the `crypto` grant; never linked, so never called.
    pub fn ungranted(self: &Arc<Self>) -> CryptoCtx {
        CryptoCtx {
            shared: self.clone(),
            key: [0; 32],
        }
    }
}

#[derive(Clone)]
pub struct CryptoCtx {
    shared: Arc<Crypto>,
    key: [u8; 32],
}

/// OWASP's Argon2id parameters: m = 19456 KiB, t = 2, p = 1.
fn argon2() -> wasmtime::Result<Argon2<'static>> {
    let params = Params::new(19_456, 2, 1, None)
        .map_err(|e| wasmtime::format_err!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads that hash passwords. Argon2id takes ~19 MiB and tens of milliseconds a hash, so
/// it never runs on the threads serving requests: one hasher per core takes jobs from a queue,
/// at a lower scheduling priority (nice 10 on Linux). A burst of logins then uses whatever CPU
/// the other requests leave, instead of delaying them.
struct Hashers {
    jobs: mpsc::Sender<Job>,
}

impl Hashers {
    fn start(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("password-hasher-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panicking hash fails its own request (its reply is dropped).
                            Ok(job) => drop(std::panic::catch_unwind(AssertUnwindSafe(job))),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = started {
                tracing::error!(%error, "could not start a password hashing thread");
            }
        }
        Self { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> wasmtime::Result<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job = move || {
            // The request gave up waiting (its deadline passed): skip the hash.
            if !reply.is_closed() {
                drop(reply.send(work()));
            }
        };
        self.jobs
            .send(Box::new(job))
            .map_err(|_| wasmtime::format_err!("the password hashers have stopped"))?;
        result
            .await
            .map_err(|_| wasmtime::format_err!("hashing a password failed"))
    }
}

/// Makes the calling thread yield to the request threads when the CPU is contended.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread; a failure leaves the priority as is.
        let result = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, 10)
        };
        if result != 0 {
            tracing::debug!("could not lower a password hashing thread's priority");
        }
    }
}

impl Host for CryptoCtx {
    async fn hash_password(&mut self, password: String) -> wasmtime::Result<String> {
        if password.len() > MAX_PASSWORD_BYTES {
            wasmtime::bail!(
                "hash-password takes passwords of at most {MAX_PASSWORD_BYTES} bytes, not {}",
                password.len()
            );
        }
        let argon2 = argon2()?;
        let hashed = self
            .shared
            .hashers
            .run(move || {
                let salt = SaltString::generate(&mut OsRng);
                argon2
                    .hash_password(password.as_bytes(), &salt)
                    .map(|h| h.to_string())
            })
            .await?;
        hashed.map_err(|e| wasmtime::format_err!("hashing a password: {e}"))
    }

    async fn verify_password(&mut self, password: String, phc: String) -> wasmtime::Result<bool> {
        // No hash from hash-password can match a longer password: no need to hash it.
        if password.len() > MAX_PASSWORD_BYTES || phc.len() > MAX_PHC_BYTES {
            return Ok(false);
        }
        let argon2 = argon2()?;
        self.shared
            .hashers
            .run(move || {
                PasswordHash::new(&phc)
                    .is_ok_and(|hash| argon2.verify_password(password.as_bytes(), &hash).is_ok())
            })
            .await
    }

    async fn random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("random-bytes takes at most {MAX_RANDOM_BYTES} bytes, not {len}");
        }
        let mut bytes = vec![0u8; len as usize];
        rand::fill(bytes.as_mut_slice());
        Ok(bytes)
    }

    async fn constant_time_equal(&mut self, a: Vec<u8>, b: Vec<u8>) -> wasmtime::Result<bool> {
        too_large("constant-time-equal", a.len().max(b.len()))?;
        Ok(a.ct_eq(&b).into())
    }

    async fn hmac_sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        too_large("hmac-sha256", data.len())?;
        Ok(hmac_sha256(&self.key, &data).to_vec())
    }
}

/// These calls return no error, so an input over the documented size is a broken rule: a trap.
fn too_large(call: &str, len: usize) -> wasmtime::Result<()> {
    if len > MAX_DATA_BYTES {
        wasmtime::bail!("{call} takes at most {MAX_DATA_BYTES} bytes, not {len}");
    }
    Ok(())
}
