//! Command-line parsing and dispatch: each subcommand's flags and entry point live in their own file.

pub mod client;
pub mod demo;
pub mod proxy;
pub mod quarantine;
pub mod rules;
pub mod score;
pub mod server;
pub mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use popguard::config::Config;

#[derive(Debug, Parser)]
#[command(name = "popguard", version, about = "A spam-filtering POP3 proxy", long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the filtering proxy between mail clients and an upstream POP3 server.
    Proxy(proxy::Args),
    /// Run the built-in POP3 server over maildirs.
    Server(server::Args),
    /// Talk to a POP3 server: stat, list, uidl, retr, top, dele, fetch.
    Client(client::Args),
    /// Train a user's Bayesian classifier on spam and ham.
    Train(train::Args),
    /// Score messages and explain the verdict, exactly as the proxy would.
    Score(score::Args),
    /// Work with rule files.
    Rules(rules::Args),
    /// List or release messages the proxy hid.
    Quarantine(quarantine::Args),
    /// Start the built-in server with sample mail and the proxy in front of it.
    Demo(demo::Args),
}

/// Flags shared by every subcommand that reads the config, rules or per-user state.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Config file (TOML); see popguard.example.toml.
    #[arg(long, env = "POPGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Per-user state directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Rules directory (overrides `rules.dir`).
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

impl CommonArgs {
    /// Loads the config file and applies the flag overrides shared by all subcommands.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            config.data_dir = Some(d.clone());
        }
        if let Some(r) = &self.rules {
            config.rules.dir = Some(r.clone());
        }
        Ok(config)
    }
}

pub fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // `RUST_LOG` as `level` or `target=level,...` lists (no span-field filters). `Targets` rather than
    // `EnvFilter`: EnvFilter's regex support switches the regex crate to building full DFAs for every rule
    // pattern, which doubled the rule engine's start-up time.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| {
            spec.parse::<Targets>()
                .map_err(|e| eprintln!("popguard: ignoring RUST_LOG={spec:?}: {e}"))
                .ok()
        })
        .unwrap_or_else(|| Targets::new().with_default(default));
    // Colours only on a terminal: logs redirected to a file or journald stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .with(filter)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Proxy(a) => proxy::run(a).await,
        Command::Server(a) => server::run(a).await,
        Command::Client(a) => client::run(a).await,
        Command::Train(a) => train::run(a).await,
        Command::Score(a) => score::run(a).await,
        Command::Rules(a) => rules::run(a).await,
        Command::Quarantine(a) => quarantine::run(a).await,
        Command::Demo(a) => demo::run(a).await,
    }
}
