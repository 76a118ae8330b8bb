//! The one wasmtime engine: component model, pooling allocator sized from the config, and
//! epoch interruption driven by a ticker thread for wall-clock deadlines.

use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// How often the epoch advances: guest code yields at every tick, so one tick is the longest a
/// request queued behind guest code on a worker waits for it (deadlines are tokio timers).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Builds the engine and starts its epoch ticker. With `perf_map`, every compiled guest function
/// is named in `/tmp/perf-<pid>.map`, where `perf report` finds it.
pub fn new_engine(
    max_instances: u32,
    max_memory_mib: u32,
    perf_map: bool,
) -> wasmtime::Result<Engine> {
    // A few instances beyond the request pool for deploys, which instantiate once to read the
    // manifest.
    let instances = max_instances + 8;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_core_instances(instances * 4)
        .total_stacks(instances)
        .max_memory_size(max_memory_mib as usize * 1024 * 1024)
        // Keeping the first pages resident and resetting them with pagemap makes a fresh
        // instance per request cost microseconds. Measured against the alternatives (`hello`
        // with a fresh instance per request, `wrk -t1 -c32`, 3 alternating rounds, a 2-core
        // virtual machine): wasmtime's defaults (nothing kept resident, each reset an
        // `madvise`) serve 0.54-0.62x of this, 0.62-0.73x with decommits batched by 16;
        // keeping 2 MiB resident without pagemap (a `memset` of all of it) 0.68-0.75x.
        .linear_memory_keep_resident(2 * 1024 * 1024)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto);

    // The compiler's worker pool (parallel compilation) yields the CPU to serving threads.
    let _already_built = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("compiler-{i}"))
        .start_handler(|_| super::compiler::lower_priority())
        .build_global();

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if perf_map {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;

    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(engine)
}
