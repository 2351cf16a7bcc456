//! The `popguard` command: one binary, one subcommand per job.

mod cli;

use clap::Parser;

// Scoring allocates many short-lived strings per message (decoded parts, tokens); mimalloc serves that pattern
// faster than glibc's allocator, especially with several scoring threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.verbose);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("popguard: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
