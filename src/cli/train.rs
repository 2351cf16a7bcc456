//! `popguard train`: feeds spam and ham from files, directories, maildirs and mboxes into a user's Bayes model.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use popguard::filter::bayes::source::{self, Input};
use popguard::filter::bayes::{TrainClass, TrainOutcome, Trainer, model_path};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// Whose model to train (the POP3 login name); without it, the global model used for users without their own.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Spam to learn: .eml files, directories of them, maildirs or mbox files.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub spam: Vec<PathBuf>,
    /// Ham (good mail) to learn: .eml files, directories of them, maildirs or mbox files.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub ham: Vec<PathBuf>,
    /// Remove these messages from the model instead (they must have been trained into that class).
    #[arg(long)]
    pub untrain: bool,
    /// Drop stale rare tokens now (`bayes.prune_after_days`, `bayes.prune_max_count`).
    #[arg(long)]
    pub prune: bool,
    /// Print nothing but errors and the one-line summary.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Default)]
struct Tally {
    trained: [u64; 2],
    already: u64,
    retrained: u64,
    untrained: u64,
    not_trained: u64,
    errors: u64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.spam.is_empty() && args.ham.is_empty() && !args.prune {
        anyhow::bail!("nothing to do: give --spam PATH... and/or --ham PATH... (or --prune)");
    }
    let config = args.common.load()?;
    // Training is file and CPU work: keep it off the async worker threads.
    tokio::task::spawn_blocking(move || train(&args, &config))
        .await
        .context("training task failed")?
}

fn train(args: &Args, config: &popguard::config::Config) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut jobs: Vec<(TrainClass, Input)> = Vec::new();
    for (class, paths) in [(TrainClass::Spam, &args.spam), (TrainClass::Ham, &args.ham)] {
        for input in source::expand(paths)? {
            jobs.push((class, input));
        }
    }
    let total = jobs
        .iter()
        .map(|(_, i)| source::total_bytes(std::slice::from_ref(i)))
        .sum();

    let user = args.user.as_deref();
    let who = user.map_or_else(|| "the global model".to_owned(), |u| format!("user {u}"));
    let path = model_path(&config.data_dir(), user);
    let mut trainer = Trainer::open(&config.bayes_settings(), user)
        .with_context(|| format!("cannot open the model of {who} at {}", path.display()))?;
    if args.prune {
        trainer.prune();
    }

    let target = if std::io::stderr().is_terminal() && !args.quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    ) {
        bar.set_style(style);
    }

    let mut tally = Tally::default();
    for (class, input) in &jobs {
        let result = source::for_each_message::<anyhow::Error>(input, |m| {
            match trainer.train(&m.bytes, *class, args.untrain) {
                Ok(TrainOutcome::Trained) => tally.trained[*class as usize] += 1,
                Ok(TrainOutcome::AlreadyTrained) => tally.already += 1,
                Ok(TrainOutcome::Retrained) => {
                    tally.retrained += 1;
                    tally.trained[*class as usize] += 1;
                }
                Ok(TrainOutcome::Untrained) => tally.untrained += 1,
                Ok(TrainOutcome::NotTrained) => tally.not_trained += 1,
                Err(e) => return Err(anyhow::Error::new(e).context(m.origin)),
            }
            bar.inc(m.consumed);
            let done = tally.trained[0] + tally.trained[1] + tally.untrained;
            if done.is_multiple_of(64) {
                bar.set_message(format!("{done} messages"));
            }
            Ok(())
        });
        if let Err(e) = result {
            // A store error is fatal (nothing more can be written); an unreadable input is reported and skipped.
            if e.downcast_ref::<popguard::filter::bayes::BayesError>()
                .is_some()
            {
                bar.abandon();
                return Err(e);
            }
            bar.suspend(|| eprintln!("popguard: skipped {}: {e:#}", input.path().display()));
            tally.errors += 1;
        }
    }
    bar.set_message("writing the model");
    let stats = trainer
        .commit()
        .with_context(|| format!("cannot write the model of {who} at {}", path.display()))?;
    bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let handled =
        tally.trained[0] + tally.trained[1] + tally.untrained + tally.already + tally.not_trained;
    let (nspam, nham) = trainer.message_counts();
    let verb = if args.untrain { "untrained" } else { "trained" };
    let mut line = if args.untrain {
        format!("{who}: {verb} {} messages", tally.untrained)
    } else {
        format!(
            "{who}: {verb} {} spam and {} ham",
            tally.trained[TrainClass::Spam as usize],
            tally.trained[TrainClass::Ham as usize]
        )
    };
    if tally.retrained > 0 {
        line.push_str(&format!(
            " ({} moved from the other class)",
            tally.retrained
        ));
    }
    if tally.already > 0 {
        line.push_str(&format!("; {} already trained, skipped", tally.already));
    }
    if tally.not_trained > 0 {
        line.push_str(&format!(
            "; {} were not trained, nothing to remove",
            tally.not_trained
        ));
    }
    if tally.errors > 0 {
        line.push_str(&format!("; {} inputs unreadable", tally.errors));
    }
    println!("{line}");
    if !args.quiet {
        println!(
            "model {}: {nspam} spam, {nham} ham messages, {} tokens{}",
            path.display(),
            stats.tokens,
            if stats.pruned > 0 {
                format!(" ({} stale tokens pruned)", stats.pruned)
            } else {
                String::new()
            }
        );
        println!(
            "{handled} messages in {secs:.2} s ({:.0} msg/s)",
            handled as f64 / secs.max(1e-9)
        );
    }
    Ok(if tally.errors > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
