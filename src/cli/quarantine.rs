//! `popguard quarantine list|release`: what the proxy hid for a user, and putting a message back.

use std::process::ExitCode;

use anyhow::Context;
use popguard::filter::bayes::{TrainClass, train_message};
use popguard::store::quarantine::Quarantine;
use popguard::store::verdicts::VerdictStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Show the messages hidden for a user: UIDL, score, sender, subject and the rules that hit.
    List(ListArgs),
    /// Make a hidden message visible from the user's next session on, and record the correction.
    Release(ReleaseArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// The POP3 login name.
    #[arg(long)]
    pub user: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// The POP3 login name.
    #[arg(long)]
    pub user: String,
    /// The UIDL shown by `quarantine list`.
    pub uidl: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::List(a) => list(a),
        Sub::Release(a) => release(a),
    }
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let config = a.common.load()?;
    let q = Quarantine::open(&config.data_dir(), &a.user);
    let entries = q.list().context("reading the quarantine")?;
    if a.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("nothing hidden for {}", a.user);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>6}  {:<30}  {:<40}  RULES",
        "UIDL", "SCORE", "FROM", "SUBJECT"
    );
    for e in &entries {
        println!(
            "{:<24} {:>6.1}  {:<30}  {:<40}  {}",
            e.uidl,
            e.score,
            clip(&e.from, 30),
            clip(&e.subject, 40),
            e.rules.join(",")
        );
    }
    println!(
        "{} hidden; release one with: popguard quarantine release --user {} UIDL",
        entries.len(),
        a.user
    );
    Ok(ExitCode::SUCCESS)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn release(a: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let config = a.common.load()?;
    let data_dir = config.data_dir();
    let q = Quarantine::open(&data_dir, &a.user);
    let Some(released) = q.release(&a.uidl).context("updating the quarantine")? else {
        eprintln!(
            "{} is not in {}'s quarantine (see `popguard quarantine list --user {}`)",
            a.uidl, a.user, a.user
        );
        return Ok(ExitCode::FAILURE);
    };
    VerdictStore::release(&data_dir, &a.user, &a.uidl).context("updating the verdict cache")?;
    // The user's correction: the bytes that were scored, trained as ham (moved out of spam if autolearn put
    // them there).
    let trained = match (&released.prefix, config.bayes.train_on_release) {
        (Some(bytes), true) => match train_message(
            &config.bayes_settings(),
            &a.user,
            bytes,
            TrainClass::Ham,
            false,
        ) {
            Ok(outcome) => Some(format!("{outcome:?}")),
            Err(e) => {
                eprintln!("warning: could not train the released message as ham: {e}");
                None
            }
        },
        (None, true) => {
            eprintln!(
                "warning: the scanned copy of {} is gone; not trained",
                a.uidl
            );
            None
        }
        (_, false) => None,
    };
    println!(
        "released {} ({}) for {}: it will be shown from the next session on{}",
        a.uidl,
        released.entry.subject,
        a.user,
        match trained {
            Some(outcome) => format!("; Bayes: trained as ham ({outcome})"),
            None => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
