//! `popguard score`: scores message files exactly as the proxy would (same config, rules, scan limit and
//! `Filter::score` path) and explains the verdict.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Message files (RFC 5322, LF or CRLF line ends); `-` reads standard input.
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

async fn score_all(args: &Args) -> anyhow::Result<ExitCode> {
    let config = args.common.load()?;
    if let Some(_ns) = args.nameserver {
        // TODO(lead): set `config.dnsbl.nameservers = vec![ns]` (make `config` mutable) once the dnsbl helper's
        // `DnsblConfig::nameservers` field is merged. Until then the flag is accepted and ignored.
        eprintln!(
            "popguard: warning: --nameserver is not wired to the DNS blocklist code yet; ignored"
        );
    }
    let filter = Filter::new(&config)?;
    let scan_limit = filter.config().scan_limit;
    let opts = ScoreOptions {
        network: !args.no_network,
        explain: args.explain,
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    for path in &args.files {
        let name = path.display().to_string();
        let message = match read_prefix(path, scan_limit) {
            Ok(m) => m,
            Err(e) => {
                failed += 1;
                let error = format!("cannot read: {e}");
                if args.json {
                    serde_json::to_writer(&mut out, &JsonError { file: &name, error })
                        .map_err(std::io::Error::from)?;
                    writeln!(out)?;
                } else {
                    out.flush()?;
                    eprintln!("popguard: {name}: {error}");
                }
                continue;
            }
        };
        let verdict = filter.score(args.user.as_deref(), &message, &opts).await;
        if args.json {
            print_json(&mut out, &name, &verdict, args.explain)?;
        } else {
            print_text(&mut out, &name, &verdict, args.explain)?;
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "popguard: {failed} of {} files could not be read",
            args.files.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads at most `limit + 1` bytes: the filter scores only `limit` bytes, and the extra byte tells it the
/// message was cut (exactly what the proxy sees), without reading a huge file whole.
fn read_prefix(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(cap).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)?.take(cap).read_to_end(&mut buf)?;
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
