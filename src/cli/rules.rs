//! `popguard rules check|list`: validate rule files (reporting file, line and reason) and show the rule set.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use popguard::filter::rules::RuleEngine;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate every rule file (DIR/*.toml, DIR/users/*.toml and *.toml.sample, plus [users.NAME] rules
    /// files); prints FILE:LINE: reason for each problem and exits 1 if there is any.
    Check {
        #[command(flatten)]
        common: super::CommonArgs,
        /// Rules directory to check (default: --rules, then the config's rules.dir, then ./rules, then the
        /// built-in set).
        dir: Option<PathBuf>,
    },
    /// List the global rules: name, score, target, where defined, description.
    List {
        #[command(flatten)]
        common: super::CommonArgs,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Check { common, dir } => {
            let mut config = common.load()?;
            if let Some(d) = dir {
                config.rules.dir = Some(d);
            }
            match RuleEngine::check(&config.rules_settings()) {
                Ok(s) => {
                    let users: Vec<String> = s
                        .user_files
                        .iter()
                        .map(|(u, f)| format!("{u} ({f})"))
                        .collect();
                    println!(
                        "OK: {} rule files, {} rules ({} meta), {} user files{}{}{}",
                        s.files.len(),
                        s.rules,
                        s.meta_rules,
                        s.user_files.len(),
                        if users.is_empty() { "" } else { ": " },
                        users.join(", "),
                        if s.sample_files.is_empty() {
                            String::new()
                        } else {
                            format!("; {} sample files valid", s.sample_files.len())
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors {
                        println!("{e}");
                    }
                    eprintln!("popguard: {} error(s) in rule files", errors.len());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::List { common } => {
            let config = common.load()?;
            let engine = RuleEngine::load(&config.rules_settings())?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written: std::io::Result<()> = engine.list().iter().try_for_each(|r| {
                writeln!(
                    out,
                    "{:<30} {:>6.2} {:<18} {}:{}  {}{}",
                    r.name,
                    r.score,
                    r.target,
                    r.file,
                    r.line,
                    if r.enabled { "" } else { "[disabled] " },
                    r.description
                )
            });
            match written.and_then(|()| out.flush()) {
                // `rules list | head` closes the pipe early; that is not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    }
}
