//! Rule-set accuracy and speed over a mail corpus: per folder, how many messages the filter (rules only, no
//! network, the same `Filter::score` path as the proxy) calls spam or unsure, and messages per second.
//!
//! ```text
//! cargo bench --bench rules_corpus -- CORPUS_DIR [--rules DIR] [--hits N] [--misses]
//! cargo test  --bench rules_corpus -- CORPUS_DIR      # same, unoptimised build (no release compile)
//! ```
//! CORPUS_DIR (or env POPGUARD_CORPUS) holds one folder per class (`spam/`, `ham/`, `hard-ham/`), or is itself
//! a folder of messages. `--hits N` prints the N most frequent rules per folder; `--misses` lists spam-folder
//! messages not flagged and ham-folder messages flagged; `--histogram` prints messages per score band. The baseline in the same run is `MessageView::parse`
//! alone, so the printed ratio is what the rules cost on top of MIME parsing. Rates use the thread's CPU time
//! (Linux), so they hold on a loaded machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use popguard::config::Config;
use popguard::filter::{Class, Filter, ScoreOptions};
use popguard::message::MessageView;

struct Args {
    corpus: PathBuf,
    rules: Option<PathBuf>,
    hits: usize,
    misses: bool,
    histogram: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut corpus = std::env::var_os("POPGUARD_CORPUS").map(PathBuf::from);
    let mut rules = None;
    let mut hits = 0;
    let mut misses = false;
    let mut histogram = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rules" => rules = Some(PathBuf::from(it.next().ok_or("--rules needs a directory")?)),
            "--hits" => {
                hits = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--hits needs a number")?
            }
            "--misses" => misses = true,
            "--histogram" => histogram = true,
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" | "--nocapture" => {}
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            s => corpus = Some(PathBuf::from(s)),
        }
    }
    let corpus = corpus.ok_or(
        "usage: rules_corpus CORPUS_DIR [--rules DIR] [--hits N] [--misses] (or POPGUARD_CORPUS)",
    )?;
    Ok(Args {
        corpus,
        rules,
        hits,
        misses,
        histogram,
    })
}

/// CPU time of this thread in seconds (Linux `/proc/thread-self/schedstat`), so that rates stay comparable on
/// a machine shared with other jobs; falls back to wall-clock time elsewhere.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Runs `f`, returning its result and the seconds it took (CPU time when available).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let out = f();
    let secs = match (c0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => t0.elapsed().as_secs_f64(),
    };
    (out, secs.max(1e-9))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::default();
    if let Some(r) = &args.rules {
        config.rules.dir = Some(r.clone());
    }
    let filter = match Filter::new(&config.filter_settings()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot build the filter: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = ScoreOptions {
        network: false,
        explain: false,
    };
    let scan_limit = filter.config().scan_limit;

    let mut folders: Vec<PathBuf> = std::fs::read_dir(&args.corpus)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    if folders.is_empty() {
        folders.push(args.corpus.clone());
    }

    println!(
        "{:<12} {:>6} {:>6} {:>7} {:>7} {:>10} {:>11} {:>6}",
        "folder", "count", "spam", "spam%", "unsure", "msg/s", "parse msg/s", "ratio"
    );
    // rule -> folder -> messages hit, for --hits.
    let mut table: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut folder_names = Vec::new();
    for folder in folders {
        let name = folder.file_name().map_or_else(
            || folder.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let messages: Vec<(PathBuf, Vec<u8>)> = files_in(&folder)
            .into_iter()
            .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
            .collect();
        if messages.is_empty() {
            continue;
        }
        folder_names.push(name.clone());

        // Baseline: MIME parsing of the same scanned prefix, nothing else.
        let (sink, parse_secs) = timed(|| {
            messages
                .iter()
                .map(|(_, m)| {
                    MessageView::parse(&m[..m.len().min(scan_limit)])
                        .body_text
                        .len()
                })
                .sum::<usize>()
        });
        std::hint::black_box(sink);
        let parse_rate = messages.len() as f64 / parse_secs;

        let (verdicts, secs) = timed(|| {
            messages
                .iter()
                .map(|(_, m)| rt.block_on(filter.score(None, m, &opts)))
                .collect::<Vec<_>>()
        });
        let rate = messages.len() as f64 / secs;

        let spam = verdicts.iter().filter(|v| v.class == Class::Spam).count();
        let unsure = verdicts.iter().filter(|v| v.class == Class::Unsure).count();
        println!(
            "{:<12} {:>6} {:>6} {:>6.1}% {:>7} {:>10.0} {:>11.0} {:>5.2}x",
            name,
            messages.len(),
            spam,
            100.0 * spam as f64 / messages.len() as f64,
            unsure,
            rate,
            parse_rate,
            rate / parse_rate
        );

        if args.hits > 0 {
            for v in &verdicts {
                let mut seen = std::collections::BTreeSet::new();
                for h in &v.hits {
                    if seen.insert(h.name.as_str()) {
                        let row = table.entry(h.name.clone()).or_default();
                        *row.entry(name.clone()).or_default() += 1;
                    }
                }
            }
        }
        if args.histogram {
            // Messages per one-point score band, to see how close each folder sits to the thresholds.
            let mut bands: BTreeMap<i64, usize> = BTreeMap::new();
            for v in &verdicts {
                *bands
                    .entry(v.score.floor().clamp(-5.0, 20.0) as i64)
                    .or_default() += 1;
            }
            let line: Vec<String> = bands.iter().map(|(b, n)| format!("{b}:{n}")).collect();
            println!("    score bands {}", line.join(" "));
        }
        if args.misses {
            let is_spam_folder = name.contains("spam");
            for ((path, _), v) in messages.iter().zip(&verdicts) {
                let miss = if is_spam_folder {
                    v.class != Class::Spam
                } else {
                    v.class != Class::Ham
                };
                if miss {
                    let rules: Vec<String> = v
                        .hits
                        .iter()
                        .map(|h| format!("{}={}", h.name, h.score))
                        .collect();
                    println!(
                        "    {} {:.1} {} [{}]",
                        v.class,
                        v.score,
                        path.display(),
                        rules.join(" ")
                    );
                }
            }
        }
    }
    if args.hits > 0 {
        println!();
        print!("{:<32}", "rule (messages hit)");
        for f in &folder_names {
            print!(" {f:>9}");
        }
        println!();
        let mut rows: Vec<_> = table.into_iter().collect();
        rows.sort_by_key(|(rule, counts)| {
            (
                std::cmp::Reverse(counts.values().sum::<usize>()),
                rule.clone(),
            )
        });
        for (rule, counts) in rows.into_iter().take(args.hits) {
            print!("{rule:<32}");
            for f in &folder_names {
                print!(" {:>9}", counts.get(f).copied().unwrap_or(0));
            }
            println!();
        }
    }
    ExitCode::SUCCESS
}
