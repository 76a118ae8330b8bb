//! Fair execution: guest code never starves the gateway or other components.
//!
//! Guest code runs on the host's async workers and hands its thread back at every epoch tick
//! (1 ms, so a request queued behind guest code on a worker waits a tick at most). Two things
//! keep one component's long-running requests from taking the machine:
//!
//! - **Yielding for real.** A plain self-wake would put the task back in the worker's LIFO
//!   slot and run it again at once, and the worker would look at the network only every few
//!   dozen polls; `tokio::task::yield_now` instead lets every other ready task and the I/O and
//!   timer drivers run before the guest resumes.
//! - **A slot per long runner.** A request that has run guest code for [`FREE_RUN`] ticks needs
//!   one of a few *long-running slots* (half the cores, at least one) for each further slice.
//!   However many endless loops are in flight, they share those slots and wait for them
//!   without holding a thread, so the other cores stay free for the gateway and for ordinary
//!   requests. After each slice a slot rests for one tick before it is handed on, so long
//!   runners get at most half of the slots' cores: a quarter of the machine in all. Their
//!   deadlines still fire: a request waiting for a slot is dropped at its deadline like any
//!   other. A slot is held only while guest code runs: it is handed back when the guest calls
//!   the host (a database query may wait on a lock another long runner holds, and that one
//!   must be able to get a slot to finish) and when its request ends (an instance kept for
//!   reuse holds none while it waits).
//! - **Off the worker.** A long runner's slices run under `tokio::task::block_in_place`
//!   ([`OffWorker`]): for each slice the worker hands its queue and its share of the network to
//!   another thread, so no request queued behind it waits for the slice to end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{CallHook, Store, UpdateDeadline};

use super::state::State;

/// How many epoch ticks of guest code a request may run before it competes for a long-running
/// slot: ordinary requests finish well within it. Counted in ticks the guest was running at, not
/// in time since the request began, so that requests queued behind others on a loaded machine
/// (an interpreter's fresh instance takes milliseconds) are not taken for long runners.
pub const FREE_RUN: u32 = 20;

/// How long a long-running slot rests after each slice (one epoch tick) before it can be
/// taken again.
const REST: Duration = super::engine::EPOCH_TICK;

/// The long-running slots of this process: half the cores, at least one.
static LONG_RUNNING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new((cores / 2).max(1)))
});

/// Whether the request a store serves has become a long runner, and the long-running slot its
/// guest code runs in while it runs: shared between the store's callbacks, the slot's waiter
/// and the request's future ([`OffWorker`]). One per store, for every request it serves.
#[derive(Clone, Default)]
pub struct LongRunning(Arc<Shared>);

#[derive(Default)]
struct Shared {
    marked: AtomicBool,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

impl LongRunning {
    fn get(&self) -> bool {
        self.0.marked.load(Ordering::Relaxed)
    }

    /// Hands the slot back, if one is held: the guest no longer runs.
    fn release(&self) -> Option<OwnedSemaphorePermit> {
        self.0.held.lock().ok().and_then(|mut held| held.take())
    }
}

/// A store's account of guest time for the request it serves.
#[derive(Default)]
pub struct Slices {
    /// Ticks that found the guest running: at most one per tick, however long it was
    /// descheduled.
    ran: u32,
    long_running: LongRunning,
}

/// Makes the store yield at every epoch tick, and past [`FREE_RUN`] wait for a long-running
/// slot before each further slice. Once per store; [`restart`] before each request.
pub fn install(store: &mut Store<State>) {
    // A slot is held only while guest code runs: handed back when the guest calls the host,
    // and when the call into it returns (a request that ends in the middle of a slice, on an
    // instance kept for reuse, must not keep its slot while the instance waits).
    // Only a long runner ever takes a slot: the others' host calls cost one comparison here.
    store.call_hook(|mut store, hook| {
        let slices = &mut store.data_mut().slices;
        if slices.ran >= FREE_RUN
            && matches!(hook, CallHook::CallingHost | CallHook::ReturningFromWasm)
        {
            slices.long_running.release();
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut store| {
        let slices = &mut store.data_mut().slices;
        // A slice ends at the tick: its slot rests for as long before anyone may take it, so
        // long runners together get at most half of each slot's core.
        if let Some(permit) = slices.long_running.release()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                tokio::time::sleep(REST).await;
                drop(permit);
            });
        }
        slices.ran = slices.ran.saturating_add(1);
        let next: Pin<Box<dyn Future<Output = ()> + Send>> = if slices.ran < FREE_RUN {
            Box::pin(tokio::task::yield_now())
        } else {
            let shared = slices.long_running.0.clone();
            shared.marked.store(true, Ordering::Relaxed);
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Ok(permit) = LONG_RUNNING.clone().acquire_owned().await
                    && let Ok(mut held) = shared.held.lock()
                {
                    *held = Some(permit);
                }
            })
        };
        Ok(UpdateDeadline::YieldCustom(1, next))
    });
}

/// Starts the account of a new request in `store`: no ticks run, not a long runner, no slot.
/// Returns what tells the request's future, [`OffWorker`], when it becomes a long runner.
pub fn restart(store: &mut Store<State>) -> LongRunning {
    let slices = &mut store.data_mut().slices;
    slices.ran = 0;
    slices.long_running.0.marked.store(false, Ordering::Relaxed);
    slices.long_running.release();
    let long_running = slices.long_running.clone();
    store.set_epoch_deadline(1);
    long_running
}

/// A request's future that, once its guest is a long runner, is polled off the worker: each
/// poll (a slice of guest code, or a check for a slot) runs under `block_in_place`, which hands
/// the worker's queued tasks and network to another thread first. Ordinary requests are polled
/// as they are.
pub struct OffWorker<F> {
    inner: F,
    long_running: LongRunning,
}

impl<F> OffWorker<F> {
    pub fn new(inner: F, long_running: LongRunning) -> Self {
        Self {
            inner,
            long_running,
        }
    }
}

impl<F: Future + Unpin> Future for OffWorker<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // `block_in_place` needs the multi-threaded runtime the host serves on; elsewhere (a
        // single-threaded test runtime) the request stays where it is.
        let off_worker = this.long_running.get()
            && tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
                runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            });
        if off_worker {
            tokio::task::block_in_place(|| Pin::new(&mut this.inner).poll(cx))
        } else {
            Pin::new(&mut this.inner).poll(cx)
        }
    }
}
