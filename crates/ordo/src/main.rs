use std::process::ExitCode;

use clap::Parser;

/// mimalloc gives freed memory back to the system: glibc's malloc keeps
/// the large buffers argon2 hashes secrets in (and per-thread arenas),
/// which more than doubled the server's resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ordo_app::cli::Cli::parse();
    match ordo_app::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ordo: {err:#}");
            ExitCode::FAILURE
        }
    }
}
