use std::process::ExitCode;

use clap::Parser;

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
