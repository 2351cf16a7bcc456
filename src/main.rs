//! The `popguard` command: one binary, one subcommand per job.

mod cli;

use clap::Parser;

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
