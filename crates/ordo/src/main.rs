use std::process::ExitCode;

use clap::Parser;

/// mimalloc gives freed memory back to the system: glibc's malloc keeps
/// the large buffers argon2 hashes secrets in (and per-thread arenas),
/// which more than doubled the server's resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking work: SQLite reads and secret hashing. Reads are
/// short and queue well; each thread costs resident memory (its stack and
/// its allocator heap), and tokio's default of 512 let a read burst start
/// dozens of them.
const BLOCKING_THREADS: usize = 4;

fn main() -> ExitCode {
    let cli = ordo_app::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ordo: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ordo_app::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ordo: {err:#}");
            ExitCode::FAILURE
        }
    }
}
