//! The `tickerlake` binary: logging set-up, then the command line (`tickerlake::cli`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc for the whole process, DuckDB's C++ included (see Cargo.toml).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tickerlake::cli::Cli::parse();
    let default = match cli.verbose {
        // aws_config logs each credential provider it tries; its one-line errors reach us anyway.
        0 => "tickerlake=info,aws_config=error,warn",
        1 => "tickerlake=debug,aws_config=warn,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match tickerlake::cli::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the context chain: what failed, why, what to do.
            eprintln!("error: {}", tickerlake::cli::one_line(&e));
            ExitCode::from(tickerlake::cli::exit_code(&e))
        }
    }
}
