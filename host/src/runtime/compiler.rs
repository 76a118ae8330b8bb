//! Compilation, off the serving path. Compiling a big component takes seconds of CPU, so:
//! one version compiles at a time, on threads of lower scheduling priority than the ones
//! serving requests (the compiler's worker pool included), and at most `max_queued` deploys
//! compile or wait for their turn; past that a deploy is refused (503, retry later) rather than
//! queueing work without bound. A version compiled once is cached (`loader::artefact_path`)
//! and loads in milliseconds without taking a turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::sync::{Semaphore, oneshot};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::loader;

/// The gauge of deploys compiling or waiting to compile.
const QUEUE_GAUGE: &str = "truevalue_compile_queue";

pub struct Compiler {
    cache_dir: std::path::PathBuf,
    turn: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// The queue is full: a deploy that would compile is refused until one is done.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} deploys are compiling or waiting to compile, the most the host queues; retry when one is done"
)]
pub struct QueueFull(pub usize);

/// One place in the queue, given back when the compilation ends, or when the deploy's request
/// is dropped while it waits.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        let left = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(QUEUE_GAUGE).set(left as f64);
    }
}

impl Compiler {
    pub fn new(cache_dir: std::path::PathBuf, max_queued: usize) -> Self {
        metrics::gauge!(QUEUE_GAUGE).set(0.0);
        Self {
            cache_dir,
            turn: Arc::new(Semaphore::new(1)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: max_queued.max(1),
        }
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cache_dir
    }

    /// The component of version `digest`: from the cache, else compiled in its turn.
    pub async fn compile(
        &self,
        engine: &Engine,
        bytes: Arc<Vec<u8>>,
        digest: &str,
    ) -> anyhow::Result<Component> {
        let path = loader::artefact_path(engine, &self.cache_dir, digest);
        if let Some(component) = loader::cached(engine, &path) {
            return Ok(component);
        }
        let place = self.enter()?;
        let turn = self
            .turn
            .clone()
            .acquire_owned()
            .await
            .context("the compiler stopped")?;
        let (done, answer) = oneshot::channel();
        let engine = engine.clone();
        // The turn and the place are the thread's: a deploy dropped meanwhile does not let the
        // next compilation start beside this one.
        std::thread::Builder::new()
            .name("compiler".into())
            .spawn(move || {
                lower_priority();
                let _ = done.send(loader::compile(&engine, &path, &bytes));
                drop((turn, place));
            })
            .context("starting the compiler thread")?;
        answer.await.context("the compiler thread failed")?
    }

    fn enter(&self) -> Result<Place, QueueFull> {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let place = Place(self.queued.clone());
        if queued > self.max_queued {
            return Err(QueueFull(self.max_queued));
        }
        metrics::gauge!(QUEUE_GAUGE).set(queued as f64);
        Ok(place)
    }
}

/// How much less CPU a compiling thread gets than a serving one when both want it: nice 10
/// weighs about a tenth of nice 0 under Linux's scheduler.
const COMPILER_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (on Linux a thread's own, not the
/// process's). Best effort: where it cannot, compilation just competes as an equal.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with who = 0 changes only the calling thread, and reads no memory.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, COMPILER_NICENESS);
    }
}
