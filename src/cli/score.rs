//! `popguard score`: scores message files exactly as the proxy would (same config, rules, scan limit and
//! `Filter::score` path) and explains the verdict.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use popguard::filter::bayes::source;
use popguard::filter::{Filter, ScoreOptions, Verdict};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// Score as this POP3 user: their rule file, sender lists and Bayes model apply.
    #[arg(long)]
    pub user: Option<String>,
    /// Print one JSON object per message (file, verdict, score, rules, hits, bayes, skipped).
    #[arg(long)]
    pub json: bool,
    /// Show each rule's description and the Bayes tokens that weighed most.
    #[arg(long)]
    pub explain: bool,
    /// Skip DNS blocklist lookups (the verdict may then differ from the proxy's).
    #[arg(long)]
    pub no_network: bool,
    /// DNS server for blocklist lookups, e.g. 127.0.0.1:5353 (overrides the config).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nameserver: Option<SocketAddr>,
    /// Message files (RFC 5322, LF or CRLF line ends), directories or maildirs of them (walked like `train`
    /// walks them), or mbox files (one result per message, `FILE#N`); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// One line of `--json` output.
#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a str,
    verdict: &'a str,
    score: f64,
    rules: Vec<&'a str>,
    hits: &'a [popguard::filter::Hit],
    bayes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bayes_evidence: Option<&'a [(String, f64)]>,
    skipped: &'a [String],
}

#[derive(Serialize)]
struct JsonError<'a> {
    file: &'a str,
    error: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match score_all(&args).await {
        // `score ... | head` closes the pipe early; stop quietly.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

/// Batches scored ahead of the output per core: enough to keep every core busy, few enough to bound memory
/// (each holds at most `scan_limit` bytes).
const SCORE_WINDOW_PER_CORE: usize = 2;
/// Files per scoring task: one task per file spent ~5% of a bulk run waking threads.
const SCORE_BATCH: usize = 8;

async fn score_all(args: &Args) -> anyhow::Result<ExitCode> {
    let mut config = args.common.load()?;
    if let Some(ns) = args.nameserver {
        config.dnsbl.nameservers = vec![ns];
    }
    let ctx = Arc::new(Context {
        filter: Filter::new(&config.filter_settings())?,
        proxy: config.proxy.clone(),
        user: args.user.clone(),
        opts: ScoreOptions {
            network: !args.no_network,
            explain: args.explain,
        },
    });

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut failed, mut total) = (0usize, 0usize);
    // Files are read and scored on every core, a bounded window ahead of the output, which stays in argument
    // order: scoring is CPU-bound and a run over thousands of files should use the whole machine.
    let window =
        std::thread::available_parallelism().map_or(2, |n| n.get()) * SCORE_WINDOW_PER_CORE;
    let mut pending = std::collections::VecDeque::with_capacity(window);
    // Directories are walked lazily, one argument at a time.
    let mut jobs = args.files.iter().flat_map(|p| jobs_for(p));
    loop {
        while pending.len() < window {
            let batch: Vec<Job> = jobs.by_ref().take(SCORE_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let ctx = ctx.clone();
            pending.push_back(tokio::spawn(async move {
                let mut out = Vec::with_capacity(batch.len());
                for job in batch {
                    out.extend(ctx.run(job).await);
                }
                out
            }));
        }
        let Some(task) = pending.pop_front() else {
            break;
        };
        for (name, result) in task.await? {
            total += 1;
            match result {
                Ok(verdict) if args.json => print_json(&mut out, &name, &verdict, args.explain)?,
                Ok(verdict) => print_text(&mut out, &name, &verdict, args.explain)?,
                Err(error) => {
                    failed += 1;
                    if args.json {
                        serde_json::to_writer(&mut out, &JsonError { file: &name, error })
                            .map_err(std::io::Error::from)?;
                        writeln!(out)?;
                    } else {
                        out.flush()?;
                        eprintln!("popguard: {name}: {error}");
                    }
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("popguard: {failed} of {total} files could not be read");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What every scoring task shares.
struct Context {
    filter: Filter,
    proxy: popguard::proxy::ProxyConfig,
    user: Option<String>,
    opts: ScoreOptions,
}

/// One unit of work: a file (or `-`), or an argument that could not be expanded.
enum Job {
    Path(PathBuf),
    Failed(String, String),
}

/// The files an argument stands for: a directory (or maildir) is walked as `train` walks it; anything else is
/// itself (a missing file is reported when it is read, in argument order).
fn jobs_for(path: &Path) -> Vec<Job> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return vec![Job::Path(path.to_owned())];
    }
    match source::files(path) {
        Ok(files) => files.into_iter().map(Job::Path).collect(),
        Err(e) => vec![Job::Failed(
            path.display().to_string(),
            format!("cannot read: {e}"),
        )],
    }
}

/// Results of one job, in order: `(file key, verdict or error text)`.
type Scored = Vec<(String, Result<Verdict, String>)>;

impl Context {
    async fn run(&self, job: Job) -> Scored {
        let path = match job {
            Job::Path(p) => p,
            Job::Failed(name, error) => return vec![(name, Err(error))],
        };
        let name = path.display().to_string();
        let scan_limit = self.filter.config().scan_limit;
        // `-` (stdin) is read here too: it can appear only once in a sensible call.
        let message = match read_prefix(&path, scan_limit) {
            Ok(m) => m,
            Err(e) => return vec![(name, Err(format!("cannot read: {e}")))],
        };
        if path.as_os_str() != "-" && message.starts_with(b"From ") {
            return self.run_mbox(&path, name).await;
        }
        vec![(name, Ok(self.score(&message).await))]
    }

    /// Every message of an mbox file, keyed `FILE#N` (just `FILE` when it holds one message).
    async fn run_mbox(&self, path: &Path, name: String) -> Scored {
        let scan_limit = self.filter.config().scan_limit;
        let mut reader = match std::fs::File::open(path) {
            Ok(f) => source::MboxReader::new(std::io::BufReader::new(f)),
            Err(e) => return vec![(name, Err(format!("cannot read: {e}")))],
        };
        let mut results = Vec::new();
        loop {
            match reader.next_message() {
                Ok(Some((mut bytes, _))) => {
                    bytes.truncate(scan_limit.saturating_add(1));
                    let key = format!("{name}#{}", results.len() + 1);
                    results.push((key, Ok(self.score(&bytes).await)));
                }
                Ok(None) => break,
                Err(e) => {
                    let key = format!("{name}#{}", results.len() + 1);
                    results.push((key, Err(format!("cannot read: {e}"))));
                    break;
                }
            }
        }
        if let [(key, _)] = &mut results[..] {
            *key = name;
        }
        results
    }

    async fn score(&self, message: &[u8]) -> Verdict {
        let scan_limit = self.filter.config().scan_limit;
        // The same prefix the proxy's first scan scores (`scan_lines` may cut it shorter than the limit).
        let prefix = popguard::proxy::scanned_prefix(message, &self.proxy, scan_limit + 1);
        let verdict = self
            .filter
            .score(self.user.as_deref(), prefix, &self.opts)
            .await;
        if let Err(e) = self.filter.autolearn() {
            tracing::warn!("bayes: auto-learned messages not saved: {e}");
        }
        verdict
    }
}

/// Reads at most `limit + 1` bytes: the filter scores only `limit` bytes, and the extra byte tells it the
/// message was cut (exactly what the proxy sees), without reading a huge file whole.
fn read_prefix(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(cap).read_to_end(&mut buf)?;
    } else {
        let file = std::fs::File::open(path)?;
        // `Take` hides the file's size from `read_to_end`: reserve it, so one read usually does.
        let size = file.metadata().map_or(0, |m| m.len()).min(cap);
        buf.reserve_exact(usize::try_from(size).unwrap_or(0));
        file.take(cap).read_to_end(&mut buf)?;
    }
    Ok(buf)
}

fn print_json(out: &mut impl Write, file: &str, v: &Verdict, explain: bool) -> std::io::Result<()> {
    let line = JsonLine {
        file,
        verdict: v.class.as_str(),
        score: round2(v.score),
        rules: v.rule_names(),
        hits: &v.hits,
        bayes: v.bayes,
        bayes_evidence: explain.then_some(&v.bayes_evidence[..]),
        skipped: &v.skipped,
    };
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    writeln!(out)
}

fn print_text(out: &mut impl Write, file: &str, v: &Verdict, explain: bool) -> std::io::Result<()> {
    if !explain {
        let hits: Vec<String> = v
            .hits
            .iter()
            .map(|h| format!("{}={}", h.name, round2(h.score)))
            .collect();
        let bayes = v
            .bayes
            .map(|b| format!(" bayes={b:.3}"))
            .unwrap_or_default();
        return writeln!(
            out,
            "{file}: {} {:.2}{bayes} [{}]",
            v.class,
            v.score,
            hits.join(" ")
        );
    }
    writeln!(out, "{file}: {} {:.2}", v.class, v.score)?;
    for h in &v.hits {
        writeln!(out, "  {:>+7.2}  {:<28} {}", h.score, h.name, h.description)?;
    }
    match v.bayes {
        Some(p) => writeln!(out, "  bayes: spam probability {p:.3}")?,
        None => writeln!(out, "  bayes: not consulted (too little training)")?,
    }
    for (token, p) in &v.bayes_evidence {
        writeln!(out, "    {p:.3}  {token}")?;
    }
    for s in &v.skipped {
        writeln!(out, "  skipped: {s}")?;
    }
    Ok(())
}

/// Scores are sums of one-decimal weights; rounding hides float noise like 5.300000000000001.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
