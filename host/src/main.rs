use std::process::ExitCode;

use clap::Parser;

/// Every request allocates (headers, the store, the guest's strings) from several worker
/// threads at once; mimalloc's per-thread heaps avoid glibc's contended arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = truevalue::cli::Cli::parse();
    match truevalue::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
