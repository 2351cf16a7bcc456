//! Accuracy and speed of the Bayesian classifier against its peers, on the same folds in the same run.
//!
//! ```text
//! cargo bench --bench bayes_accuracy -- CORPUS [--quick] [--k N] [--test DIR] [--no-cv] [--no-split]
//!                                       [--no-process] [--process-only] [--set KEY=VALUE]...
//! ```
//! CORPUS holds `spam/`, `ham/` and optionally `hard-ham/` (one message per file); a `.tar.gz` of that layout is
//! unpacked to a temporary directory. Without a usable CORPUS a small corpus is made up (so CI can run it anywhere).
//! Engines: ours (Robinson/Fisher over our tokenizer and token store), bayespam fed by our tokenizer (same store),
//! bayespam on raw text (as the crate is meant to be used), and bogofilter when it is installed (`-C` defaults).
//! Evaluations: k-fold cross-validation (k = 5; pooled scores) and a train/test split — `--test DIR` trains on
//! all of CORPUS and tests on DIR, otherwise the older half of each class (by file name) predicts the newer half.
//! Then whole-process figures: `popguard train` vs `bogofilter -s/-n -B`, `popguard score --json --no-network` vs
//! `bogofilter -B` (best of 3 alternating runs). `--quick` uses a small subset and k = 3, and runs the
//! whole-process part on that subset (CI). `--process-only` runs just the whole-process part (e.g. with `--quick`).
//! `--only-ours` skips the other engines (tuning runs). `--set bayes_key=value` overrides `[bayes]` config keys for experiments; `--dump FILE` appends every score.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use popguard::config::Config;
use popguard::filter::bayes::store::{Label, PrunePolicy, TokenDb, TokenWriter};
use popguard::filter::bayes::{BayesScorer, Engine, TrainClass, Trainer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spam,
    Ham,
    HardHam,
}

impl Kind {
    fn is_spam(self) -> bool {
        self == Kind::Spam
    }
}

#[derive(Debug, Clone)]
struct Msg {
    path: PathBuf,
    kind: Kind,
}

struct Opts {
    corpus: Option<PathBuf>,
    quick: bool,
    k: usize,
    test: Option<PathBuf>,
    cv: bool,
    split: bool,
    process: bool,
    store_timing: bool,
    sets: Vec<String>,
    dump: Option<PathBuf>,
    only_ours: bool,
    explain: Vec<PathBuf>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        corpus: None,
        quick: false,
        k: 5,
        test: None,
        cv: true,
        split: true,
        process: true,
        store_timing: true,
        sets: Vec::new(),
        dump: None,
        only_ours: false,
        explain: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--quick" => o.quick = true,
            "--no-cv" => o.cv = false,
            "--no-split" => o.split = false,
            "--no-process" => o.process = false,
            // Whole processes only (`popguard train`/`score` vs bogofilter), no in-process evaluations.
            "--process-only" => {
                o.cv = false;
                o.split = false;
                o.store_timing = false;
            }
            "--only-ours" => o.only_ours = true,
            "--explain" => o
                .explain
                .push(args.next().ok_or("--explain needs a file")?.into()),
            "--k" => {
                o.k = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&k| k >= 2)
                    .ok_or("--k needs a number >= 2")?
            }
            "--test" => o.test = Some(args.next().ok_or("--test needs a directory")?.into()),
            "--set" => o.sets.push(args.next().ok_or("--set needs KEY=VALUE")?),
            "--dump" => o.dump = Some(args.next().ok_or("--dump needs a file")?.into()),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            s => o.corpus = Some(s.into()),
        }
    }
    if o.quick {
        o.k = o.k.min(3);
    }
    Ok(o)
}

fn list(dir: &Path, kind: Kind) -> Vec<Msg> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|path| Msg { path, kind }).collect()
}

fn load_corpus(dir: &Path) -> Vec<Msg> {
    let mut v = list(&dir.join("spam"), Kind::Spam);
    v.extend(list(&dir.join("ham"), Kind::Ham));
    v.extend(list(&dir.join("hard-ham"), Kind::HardHam));
    v
}

/// Every n-th message so a subset keeps the corpus's spread over time.
fn subsample(msgs: Vec<Msg>, kind: Kind, keep: usize) -> Vec<Msg> {
    let of: Vec<Msg> = msgs.into_iter().filter(|m| m.kind == kind).collect();
    if of.len() <= keep {
        return of;
    }
    let step = of.len() as f64 / keep as f64;
    (0..keep)
        .map(|i| of[(i as f64 * step) as usize].clone())
        .collect()
}

/// A small made-up corpus: enough shared vocabulary to be non-trivial, enough difference to be learnable.
fn synthesize(dir: &Path) -> std::io::Result<()> {
    let spam_words = [
        "free",
        "offer",
        "money",
        "click",
        "viagra",
        "winner",
        "cash",
        "credit",
        "loan",
        "cheap",
        "save",
        "discount",
        "guaranteed",
        "limited",
        "order",
        "bonus",
        "casino",
        "pills",
        "mortgage",
        "unsubscribe",
    ];
    let ham_words = [
        "meeting", "patch", "build", "release", "review", "kernel", "thanks", "tomorrow", "lunch",
        "project", "report", "question", "config", "server", "deadline", "draft", "agenda",
        "notes", "python", "commit",
    ];
    let shared = [
        "the",
        "and",
        "you",
        "your",
        "this",
        "today",
        "please",
        "time",
        "new",
        "information",
        "list",
        "email",
        "here",
        "more",
        "now",
        "free",
        "money",
        "offer",
        "order",
        "click",
    ];
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for (sub, count, spammy) in [
        ("spam", 120, true),
        ("ham", 240, false),
        ("hard-ham", 30, false),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        for i in 0..count {
            let own: &[&str] = if spammy { &spam_words } else { &ham_words };
            let hard = sub == "hard-ham";
            let mut body = String::new();
            for _ in 0..(30 + rnd(60)) {
                // Mostly shared vocabulary, a little of the class's own, and hard ham borrows spam's words.
                let w = match rnd(20) {
                    0..=1 => own[rnd(own.len())],
                    2..=3 if hard => spam_words[rnd(spam_words.len())],
                    4 => ham_words[rnd(ham_words.len())],
                    5 => spam_words[rnd(spam_words.len())],
                    _ => shared[rnd(shared.len())],
                };
                body.push_str(w);
                body.push(if rnd(12) == 0 { '\n' } else { ' ' });
            }
            let (from, subj) = if spammy {
                (
                    format!("deals{}@promo{}.example.biz", rnd(50), rnd(20)),
                    format!("{} {} now!!", own[rnd(20)], own[rnd(20)]),
                )
            } else {
                (
                    format!("person{}@work.example.org", rnd(10)),
                    format!("Re: {} {}", own[rnd(20)], own[rnd(20)]),
                )
            };
            let ctype = if spammy && rnd(2) == 0 {
                "text/html"
            } else {
                "text/plain"
            };
            let body = if ctype == "text/html" {
                format!(
                    "<html><body><p>{body}</p><a href=\"http://offer{}.example.biz/x\">go</a></body></html>",
                    rnd(30)
                )
            } else {
                body
            };
            let msg = format!(
                "From: {from}\nTo: user@example.net\nSubject: {subj}\nMessage-ID: <{i}.{sub}@example>\n\
                 Content-Type: {ctype}; charset=us-ascii\n\n{body}\n"
            );
            std::fs::write(d.join(format!("{i:05}.eml")), msg)?;
        }
    }
    Ok(())
}

/// CPU seconds used so far by this process and by its waited-for children (Linux `/proc/self/stat`; USER_HZ is
/// 100 on Linux). The machine may be shared, so rates are shown by CPU time as well as by wall-clock time.
fn cpu_times() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
    let get = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (get(14) + get(15), get(16) + get(17))
}

/// Wall and CPU time of a stretch of work (own CPU, or children's when `children`).
struct Clock {
    wall: Instant,
    cpu: (f64, f64),
    children: bool,
}

impl Clock {
    fn start(children: bool) -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: cpu_times(),
            children,
        }
    }
    fn stop(&self) -> (f64, f64) {
        let now = cpu_times();
        let cpu = if self.children {
            now.1 - self.cpu.1
        } else {
            now.0 - self.cpu.0
        };
        (self.wall.elapsed().as_secs_f64(), cpu)
    }
}

/// One engine's results on one evaluation.
#[derive(Default, Clone)]
struct Run {
    /// (kind, probability, class-alone: 0 ham / 1 unsure / 2 spam)
    scores: Vec<(Kind, f64, u8)>,
    trained: usize,
    train_secs: f64,
    train_cpu: f64,
    scored: usize,
    score_secs: f64,
    score_cpu: f64,
    /// The file behind each score, for `--dump`.
    paths: Vec<String>,
}

impl Run {
    fn absorb(&mut self, o: Run) {
        self.scores.extend(o.scores);
        self.trained += o.trained;
        self.train_secs += o.train_secs;
        self.train_cpu += o.train_cpu;
        self.score_cpu += o.score_cpu;
        self.scored += o.scored;
        self.score_secs += o.score_secs;
        self.paths.extend(o.paths);
    }
}

fn class_code(c: popguard::filter::Class) -> u8 {
    match c {
        popguard::filter::Class::Ham => 0,
        popguard::filter::Class::Unsure => 1,
        popguard::filter::Class::Spam => 2,
    }
}

const ENGINES: [&str; 4] = ["popguard", "bayespam+tok", "bayespam-raw", "bogofilter"];

fn evaluate(
    cfg: &Config,
    train: &[&Msg],
    test: &[&Msg],
    bogo: bool,
    only_ours: bool,
) -> Vec<Option<Run>> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = cfg.clone();
    cfg.data_dir = Some(tmp.path().to_owned());
    cfg.bayes.min_spam = 1;
    cfg.bayes.min_ham = 1;
    cfg.bayes.fallback_to_global = true;

    // Ours: read + tokenize + count + crash-safe write, timed as a whole.
    let mut ours = Run::default();
    let t0 = Clock::start(false);
    let mut trainer = Trainer::open(&cfg.bayes_settings(), None).expect("open store");
    for m in train {
        let Ok(bytes) = std::fs::read(&m.path) else {
            continue;
        };
        let class = if m.kind.is_spam() {
            TrainClass::Spam
        } else {
            TrainClass::Ham
        };
        trainer.train(&bytes, class, false).expect("train");
        ours.trained += 1;
    }
    trainer.commit().expect("commit");
    drop(trainer);
    (ours.train_secs, ours.train_cpu) = t0.stop();
    let mut bp_tok = Run {
        trained: ours.trained,
        train_secs: ours.train_secs,
        train_cpu: ours.train_cpu,
        ..Run::default()
    };

    for (engine, run) in [
        (Engine::Robinson, &mut ours),
        (Engine::Bayespam, &mut bp_tok),
    ] {
        if only_ours && engine == Engine::Bayespam {
            continue;
        }
        cfg.bayes.engine = engine;
        let scorer = BayesScorer::new(&cfg.bayes_settings()).expect("scorer");
        let t0 = Clock::start(false);
        for m in test {
            let Ok(bytes) = std::fs::read(&m.path) else {
                continue;
            };
            let Ok(Some(r)) = scorer.score(None, &bytes, false) else {
                continue;
            };
            let class = if engine == Engine::Bayespam {
                // bayespam's own rule: spam above 0.8, no unsure band.
                if r.probability > 0.8 { 2 } else { 0 }
            } else {
                class_code(r.class)
            };
            run.scores.push((m.kind, r.probability, class));
            run.paths.push(m.path.display().to_string());
        }
        (run.score_secs, run.score_cpu) = t0.stop();
        run.scored = run.scores.len();
    }

    if only_ours {
        return vec![Some(ours), None, None, None];
    }
    // bayespam on raw text, in memory, the way its README trains.
    let mut raw = Run::default();
    let t0 = Clock::start(false);
    let mut c = bayespam::classifier::Classifier::new();
    for m in train {
        let Ok(bytes) = std::fs::read(&m.path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        if m.kind.is_spam() {
            c.train_spam(&text);
        } else {
            c.train_ham(&text);
        }
        raw.trained += 1;
    }
    (raw.train_secs, raw.train_cpu) = t0.stop();
    let t0 = Clock::start(false);
    for m in test {
        let Ok(bytes) = std::fs::read(&m.path) else {
            continue;
        };
        let p = f64::from(c.score(&String::from_utf8_lossy(&bytes)));
        raw.scores.push((m.kind, p, if p > 0.8 { 2 } else { 0 }));
        raw.paths.push(m.path.display().to_string());
    }
    (raw.score_secs, raw.score_cpu) = t0.stop();
    raw.scored = raw.scores.len();

    let bogo_run = if bogo {
        bogofilter(train, test, tmp.path())
    } else {
        None
    };
    vec![Some(ours), Some(bp_tok), Some(raw), bogo_run]
}

fn bogofilter_installed() -> bool {
    Command::new("bogofilter")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bogofilter(train: &[&Msg], test: &[&Msg], tmp: &Path) -> Option<Run> {
    let dir = tmp.join("bogofilter");
    std::fs::create_dir_all(&dir).ok()?;
    let mut run = Run::default();
    let t0 = Clock::start(true);
    for (flag, spam) in [("-s", true), ("-n", false)] {
        let files: Vec<&Path> = train
            .iter()
            .filter(|m| m.kind.is_spam() == spam)
            .map(|m| m.path.as_path())
            .collect();
        for chunk in files.chunks(2000) {
            let st = Command::new("bogofilter")
                .args(["-C", "-d"])
                .arg(&dir)
                .args([flag, "-B"])
                .args(chunk)
                .status()
                .ok()?;
            if !st.success() {
                eprintln!("bogofilter {flag} failed: {st}");
                return None;
            }
        }
        run.trained += files.len();
    }
    (run.train_secs, run.train_cpu) = t0.stop();
    let t0 = Clock::start(true);
    let mut kinds = std::collections::HashMap::new();
    for m in test {
        kinds.insert(m.path.display().to_string(), m.kind);
    }
    let paths: Vec<&Path> = test.iter().map(|m| m.path.as_path()).collect();
    for chunk in paths.chunks(2000) {
        let out = Command::new("bogofilter")
            .args(["-C", "-d"])
            .arg(&dir)
            .args([
                "-B",
                "-v",
                "--spamicity-formats=%.12g,%.12g,%.12g",
                "--header-format=%c %p",
            ])
            .args(chunk)
            .output()
            .ok()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut it = line.rsplitn(3, ' ');
            let (Some(p), Some(class), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (Ok(p), Some(kind)) = (p.parse::<f64>(), kinds.get(path)) else {
                continue;
            };
            let code = match class {
                "Spam" => 2,
                "Unsure" => 1,
                _ => 0,
            };
            run.scores.push((*kind, p, code));
            run.paths.push(path.to_owned());
        }
    }
    (run.score_secs, run.score_cpu) = t0.stop();
    run.scored = run.scores.len();
    Some(run)
}

/// ROC AUC (spam vs all ham) by the rank-sum formula; ties count half.
fn auc(scores: &[(Kind, f64, u8)]) -> f64 {
    let mut v: Vec<(f64, bool)> = scores.iter().map(|s| (s.1, s.0.is_spam())).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (np, nn) = v.iter().fold(
        (0f64, 0f64),
        |(p, n), x| if x.1 { (p + 1.0, n) } else { (p, n + 1.0) },
    );
    if np == 0.0 || nn == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0; // ranks are 1-based
        rank_sum += v[i..j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j;
    }
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

struct Summary {
    auc: f64,
    spam: usize,
    ham: usize,
    hard: usize,
    fp_ham: usize,
    fp_hard: usize,
    unsure_ham: usize,
    fn_spam: usize,
    unsure_spam: usize,
    missed_at_zero_fp: usize,
    train_rate: f64,
    score_rate: f64,
    train_cpu_rate: f64,
    score_cpu_rate: f64,
}

fn summarise(r: &Run) -> Summary {
    let count = |f: &dyn Fn(&(Kind, f64, u8)) -> bool| r.scores.iter().filter(|s| f(s)).count();
    let max_ham = r
        .scores
        .iter()
        .filter(|s| !s.0.is_spam())
        .map(|s| s.1)
        .fold(f64::NEG_INFINITY, f64::max);
    Summary {
        auc: auc(&r.scores),
        spam: count(&|s| s.0 == Kind::Spam),
        ham: count(&|s| s.0 == Kind::Ham),
        hard: count(&|s| s.0 == Kind::HardHam),
        fp_ham: count(&|s| s.0 == Kind::Ham && s.2 == 2),
        fp_hard: count(&|s| s.0 == Kind::HardHam && s.2 == 2),
        unsure_ham: count(&|s| !s.0.is_spam() && s.2 == 1),
        fn_spam: count(&|s| s.0.is_spam() && s.2 == 0),
        unsure_spam: count(&|s| s.0.is_spam() && s.2 == 1),
        missed_at_zero_fp: count(&|s| s.0.is_spam() && s.1 <= max_ham),
        train_rate: r.trained as f64 / r.train_secs.max(1e-9),
        score_rate: r.scored as f64 / r.score_secs.max(1e-9),
        train_cpu_rate: r.trained as f64 / r.train_cpu.max(1e-2),
        score_cpu_rate: r.scored as f64 / r.score_cpu.max(1e-2),
    }
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / of as f64)
    }
}

/// Appends every score to `path` as `evaluation<TAB>engine<TAB>kind<TAB>probability<TAB>file` (for analysis).
fn dump(path: &Path, title: &str, runs: &[Option<Run>]) {
    let mut out = String::new();
    for (name, run) in ENGINES.iter().zip(runs) {
        let Some(run) = run else { continue };
        for (s, p) in run.scores.iter().zip(&run.paths) {
            let _ = writeln!(out, "{title}\t{name}\t{:?}\t{}\t{p}", s.0, s.1);
        }
    }
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, out.as_bytes()));
    if let Err(e) = r {
        eprintln!("bayes_accuracy: --dump {}: {e}", path.display());
    }
}

fn report(title: &str, runs: &[Option<Run>]) {
    println!("\n== {title} ==");
    println!(
        "{:<13} {:>7} {:>14} {:>9} {:>9} {:>10} {:>11} {:>12} {:>17} {:>17}",
        "engine",
        "AUC",
        "missed@0FP",
        "FP ham",
        "FP hard",
        "FN spam",
        "unsure s/h",
        "spam caught",
        "train msg/s",
        "score msg/s"
    );
    println!("{:>124} {:>17}", "wall / cpu", "wall / cpu");
    let sums: Vec<Option<Summary>> = runs.iter().map(|r| r.as_ref().map(summarise)).collect();
    for (name, s) in ENGINES.iter().zip(&sums) {
        let Some(s) = s else {
            println!("{name:<13} (not run)");
            continue;
        };
        println!(
            "{:<13} {:>7.4} {:>14} {:>9} {:>9} {:>10} {:>11} {:>12} {:>17} {:>17}",
            name,
            s.auc,
            format!(
                "{} ({})",
                pct(s.missed_at_zero_fp, s.spam),
                s.missed_at_zero_fp
            ),
            format!("{}/{}", s.fp_ham, s.ham),
            format!("{}/{}", s.fp_hard, s.hard),
            format!("{}/{}", s.fn_spam, s.spam),
            format!("{}/{}", s.unsure_spam, s.unsure_ham),
            pct(s.spam - s.fn_spam - s.unsure_spam, s.spam),
            format!("{:.0} / {:.0}", s.train_rate, s.train_cpu_rate),
            format!("{:.0} / {:.0}", s.score_rate, s.score_cpu_rate),
        );
    }
    if let (Some(ours), Some(bogo)) = (&sums[0], &sums[3]) {
        println!(
            "popguard vs bogofilter: AUC {:+.4}, missed@0FP {} vs {}, training speed x{:.2} (cpu x{:.2}), \
             scoring speed x{:.2} (cpu x{:.2})",
            ours.auc - bogo.auc,
            ours.missed_at_zero_fp,
            bogo.missed_at_zero_fp,
            ours.train_rate / bogo.train_rate,
            ours.train_cpu_rate / bogo.train_cpu_rate,
            ours.score_rate / bogo.score_rate,
            ours.score_cpu_rate / bogo.score_cpu_rate,
        );
    }
}

/// Scoring runs of each side in the whole-process comparison (the best wall time counts).
const PROCESS_RUNS: usize = 3;

/// Whole processes over whole directories: what a user (or the acceptance run) sees.
fn process_comparison(train_dir: &Path, test_dir: &Path) {
    let Some(exe) = option_env!("CARGO_BIN_EXE_popguard") else {
        println!("\n(whole-process comparison skipped: popguard binary unknown)");
        return;
    };
    println!(
        "\n== whole processes: train on {}, score {} ==",
        train_dir.display(),
        test_dir.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let ntrain = load_corpus(train_dir).len();
    let test: Vec<Msg> = load_corpus(test_dir);
    let hard: Vec<PathBuf> = [train_dir.join("hard-ham")]
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let t0 = Clock::start(true);
    let st = Command::new(exe)
        .args(["train", "--quiet", "--data-dir"])
        .arg(tmp.path().join("pg"))
        .arg("--spam")
        .arg(train_dir.join("spam"))
        .arg("--ham")
        .arg(train_dir.join("ham"))
        .args(&hard)
        .stdout(std::process::Stdio::null())
        .status();
    let pg_train = t0.stop();
    if !st.is_ok_and(|s| s.success()) {
        println!("popguard train failed; skipping");
        return;
    }
    let bdir = tmp.path().join("bogo");
    let _ = std::fs::create_dir_all(&bdir);
    let t0 = Clock::start(true);
    let mut bogo_ok = bogofilter_installed();
    for (flag, sub) in [("-s", vec!["spam"]), ("-n", vec!["ham", "hard-ham"])] {
        let dirs: Vec<PathBuf> = sub
            .iter()
            .map(|s| train_dir.join(s))
            .filter(|d| d.is_dir())
            .collect();
        if bogo_ok {
            bogo_ok = Command::new("bogofilter")
                .args(["-C", "-d"])
                .arg(&bdir)
                .args([flag, "-B"])
                .args(&dirs)
                .status()
                .is_ok_and(|s| s.success());
        }
    }
    let bogo_train = t0.stop();
    let paths: Vec<&Path> = test.iter().map(|m| m.path.as_path()).collect();
    // Alternating runs, best wall time of each: the machine may be shared, and both sides should see the same
    // moments of it.
    let mut pg = (None, (f64::INFINITY, f64::INFINITY));
    let mut bogo = (false, (f64::INFINITY, f64::INFINITY));
    for _ in 0..PROCESS_RUNS {
        let (out, t) = best_of(1, || {
            Command::new(exe)
                .args(["score", "--json", "--no-network", "--data-dir"])
                .arg(tmp.path().join("pg"))
                .args(&paths)
                .output()
        });
        if t.0 < pg.1.0 || pg.0.is_none() {
            pg = (out, t);
        }
        if bogo_ok {
            // Exit status 0/1/2 is spam/ham/unsure (of the last message); 3 is an error.
            let (out, t) = best_of(1, || {
                Command::new("bogofilter")
                    .args(["-C", "-d"])
                    .arg(&bdir)
                    .args(["-B", "-T"])
                    .args(&paths)
                    .stderr(std::process::Stdio::null())
                    .output()
            });
            let ok = out.is_some_and(|o| matches!(o.status.code(), Some(0..=2)));
            if t.0 < bogo.1.0 {
                bogo = (ok, t);
            }
        }
    }
    let (out, pg_score) = pg;
    let pg_ok = out.as_ref().is_some_and(|o| o.status.success());
    let (bogo_score_ok, bogo_score) = bogo;
    let rate = |n: usize, s: f64| n as f64 / s.max(1e-2);
    let show = |what: &str, n: usize, ours: (f64, f64), bogo: Option<(f64, f64)>| {
        let mut line = format!(
            "{what}: {n} msgs in {:.2} s wall, {:.2} s cpu ({:.0} / {:.0} msg/s)",
            ours.0,
            ours.1,
            rate(n, ours.0),
            rate(n, ours.1)
        );
        if let Some(b) = bogo {
            let _ = write!(
                line,
                "; bogofilter {:.2} s wall, {:.2} s cpu ({:.0} / {:.0} msg/s); popguard is x{:.2} as fast (cpu x{:.2})",
                b.0,
                b.1,
                rate(n, b.0),
                rate(n, b.1),
                b.0 / ours.0.max(1e-9),
                b.1 / ours.1.max(1e-2),
            );
        }
        println!("{line}");
    };
    show(
        "popguard train",
        ntrain,
        pg_train,
        bogo_ok.then_some(bogo_train),
    );
    if pg_ok {
        show(
            "popguard score --json --no-network",
            paths.len(),
            pg_score,
            bogo_score_ok.then_some(bogo_score),
        );
    } else {
        let why = out
            .map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_else(|| "did not start".to_owned());
        println!(
            "popguard score unavailable ({why}); bogofilter -B scored {} msgs in {:.2} s",
            paths.len(),
            bogo_score.0
        );
    }
}

/// A temporary corpus directory (`spam/`, `ham/`, `hard-ham/`) linking to the given messages.
fn link_subset(msgs: &[Msg]) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for m in msgs {
        let sub = dir.path().join(match m.kind {
            Kind::Spam => "spam",
            Kind::Ham => "ham",
            Kind::HardHam => "hard-ham",
        });
        std::fs::create_dir_all(&sub)?;
        let target = std::fs::canonicalize(&m.path)?;
        let name = m.path.file_name().unwrap_or_default();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, sub.join(name))?;
        #[cfg(not(unix))]
        std::fs::copy(&target, sub.join(name)).map(|_| ())?;
    }
    Ok(dir)
}

/// Best (shortest wall) of `runs` runs of `cmd`, with its (wall, cpu) seconds; the last run's output.
fn best_of(
    runs: usize,
    mut cmd: impl FnMut() -> std::io::Result<std::process::Output>,
) -> (Option<std::process::Output>, (f64, f64)) {
    let mut best = (f64::INFINITY, f64::INFINITY);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t0 = Clock::start(true);
        let out = cmd();
        let t = t0.stop();
        if t.0 < best.0 {
            best = t;
        }
        last = out.ok();
    }
    (last, best)
}

/// How long a session waits for a user's model: open (mmap + checksum) a store of 200 000 tokens.
fn store_open_timing() {
    const TOKENS: u64 = 200_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("tokens.db");
    let mut w = TokenWriter::open(&path, PrunePolicy::default()).expect("writer");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let tokens: Vec<u64> = (0..TOKENS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    for (i, chunk) in tokens.chunks(200).enumerate() {
        let label = if i % 3 == 0 { Label::Spam } else { Label::Ham };
        let mut digest = [0u8; 16];
        digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
        w.apply(chunk, label, &digest, false);
    }
    let t0 = Instant::now();
    w.commit().expect("commit");
    let write_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(w);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut times: Vec<f64> = (0..25)
        .map(|_| {
            let t0 = Instant::now();
            let db = TokenDb::open(&path).expect("open");
            std::hint::black_box(db.get(tokens[7]));
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let db = TokenDb::open(&path).expect("open");
    let t0 = Instant::now();
    let found = tokens.iter().filter(|t| db.get(**t).is_some()).count();
    let lookup_ns = t0.elapsed().as_secs_f64() * 1e9 / TOKENS as f64;
    println!(
        "\n== token store ==\n{} tokens, {:.1} MB: open median {:.2} ms, max {:.2} ms (target < 20 ms); \
         lookup {:.0} ns ({found} found); full rewrite {:.0} ms",
        db.len(),
        size as f64 / 1e6,
        times[times.len() / 2],
        times[times.len() - 1],
        lookup_ns,
        write_ms
    );
}

/// Trains on the corpus without the given files, then prints their scores and strongest tokens.
fn explain(cfg: &Config, msgs: &[Msg], files: &[PathBuf]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = cfg.clone();
    cfg.data_dir = Some(tmp.path().to_owned());
    let mut trainer = Trainer::open(&cfg.bayes_settings(), None).expect("open store");
    for m in msgs.iter().filter(|m| {
        !files
            .iter()
            .any(|f| m.path.ends_with(f) || f.ends_with(&m.path))
    }) {
        let Ok(bytes) = std::fs::read(&m.path) else {
            continue;
        };
        let class = if m.kind.is_spam() {
            TrainClass::Spam
        } else {
            TrainClass::Ham
        };
        trainer.train(&bytes, class, false).expect("train");
    }
    trainer.commit().expect("commit");
    drop(trainer);
    let scorer = BayesScorer::new(&cfg.bayes_settings()).expect("scorer");
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            println!("{}: unreadable", f.display());
            continue;
        };
        match scorer.score(None, &bytes, true) {
            Ok(Some(r)) => {
                println!("{}: {:.6} {:?}", f.display(), r.probability, r.class);
                for (t, p) in r.evidence {
                    println!("    {p:.4}  {t}");
                }
            }
            other => println!("{}: {other:?}", f.display()),
        }
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bayes_accuracy: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut _unpacked = None;
    let corpus_dir: PathBuf = match &opts.corpus {
        Some(p) if p.is_dir() && p.join("spam").is_dir() => p.clone(),
        Some(p) if p.is_file() && p.to_string_lossy().ends_with(".tar.gz") => {
            let t = tempfile::tempdir().expect("tempdir");
            let ok = Command::new("tar")
                .arg("xzf")
                .arg(p)
                .arg("-C")
                .arg(t.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("bayes_accuracy: cannot unpack {}", p.display());
                std::process::exit(2);
            }
            let dir = t.path().to_owned();
            _unpacked = Some(t);
            dir
        }
        other => {
            if let Some(p) = other {
                println!("no corpus at {}: using a small made-up corpus", p.display());
            } else {
                println!("no corpus given: using a small made-up corpus");
            }
            let t = tempfile::tempdir().expect("tempdir");
            synthesize(t.path()).expect("write corpus");
            let dir = t.path().to_owned();
            _unpacked = Some(t);
            dir
        }
    };

    let mut cfg = Config::default();
    if !opts.sets.is_empty() {
        let text = format!("[bayes]\n{}\n", opts.sets.join("\n"));
        cfg = Config::parse(&text).unwrap_or_else(|e| {
            eprintln!("bayes_accuracy: --set: {e}");
            std::process::exit(2);
        });
        println!("overrides: {}", opts.sets.join(", "));
    }

    let mut msgs = load_corpus(&corpus_dir);
    if opts.quick {
        let all = msgs;
        msgs = subsample(all.clone(), Kind::Spam, 150);
        msgs.extend(subsample(all.clone(), Kind::Ham, 300));
        msgs.extend(subsample(all, Kind::HardHam, 40));
    }
    let bogo = bogofilter_installed();
    let n = |k: Kind| msgs.iter().filter(|m| m.kind == k).count();
    println!(
        "corpus {}: {} spam, {} ham, {} hard ham{}; bogofilter {}",
        corpus_dir.display(),
        n(Kind::Spam),
        n(Kind::Ham),
        n(Kind::HardHam),
        if opts.quick { " (quick subset)" } else { "" },
        if bogo { "installed" } else { "not installed" }
    );
    let cut = &cfg.bayes;
    println!(
        "default thresholds: popguard spam >= {} / ham < {}; bogofilter spam >= 0.99 / ham < 0.45; bayespam spam > 0.8",
        cut.spam_cutoff, cut.ham_cutoff
    );

    if !opts.explain.is_empty() {
        explain(&cfg, &msgs, &opts.explain);
        return;
    }

    if opts.cv {
        let mut pooled: Vec<Option<Run>> = vec![None; ENGINES.len()];
        // Each class is dealt round-robin into folds, so every fold spans the whole period.
        let mut fold_of = Vec::with_capacity(msgs.len());
        let mut seen = [0usize; 3];
        for m in &msgs {
            let i = m.kind as usize;
            fold_of.push(seen[i] % opts.k);
            seen[i] += 1;
        }
        for f in 0..opts.k {
            let train: Vec<&Msg> = msgs
                .iter()
                .zip(&fold_of)
                .filter(|(_, k)| **k != f)
                .map(|(m, _)| m)
                .collect();
            let test: Vec<&Msg> = msgs
                .iter()
                .zip(&fold_of)
                .filter(|(_, k)| **k == f)
                .map(|(m, _)| m)
                .collect();
            for (slot, run) in
                pooled
                    .iter_mut()
                    .zip(evaluate(&cfg, &train, &test, bogo, opts.only_ours))
            {
                match (slot.as_mut(), run) {
                    (Some(acc), Some(r)) => acc.absorb(r),
                    (None, Some(r)) => *slot = Some(r),
                    _ => {}
                }
            }
        }
        report(
            &format!("{}-fold cross-validation (pooled)", opts.k),
            &pooled,
        );
        if let Some(d) = &opts.dump {
            dump(d, "cv", &pooled);
        }
    }

    if opts.split {
        let (train, test, title): (Vec<Msg>, Vec<Msg>, String) = match &opts.test {
            Some(t) => (
                msgs.clone(),
                load_corpus(t),
                format!("train on {}, test on {}", corpus_dir.display(), t.display()),
            ),
            None => {
                let mut train = Vec::new();
                let mut test = Vec::new();
                for kind in [Kind::Spam, Kind::Ham, Kind::HardHam] {
                    let of: Vec<&Msg> = msgs.iter().filter(|m| m.kind == kind).collect();
                    let half = of.len() / 2;
                    train.extend(of[..half].iter().map(|m| (*m).clone()));
                    test.extend(of[half..].iter().map(|m| (*m).clone()));
                }
                (
                    train,
                    test,
                    "split: older half of each class trains, newer half tests".into(),
                )
            }
        };
        let train_refs: Vec<&Msg> = train.iter().collect();
        let test_refs: Vec<&Msg> = test.iter().collect();
        let runs = evaluate(&cfg, &train_refs, &test_refs, bogo, opts.only_ours);
        report(&title, &runs);
        if let Some(d) = &opts.dump {
            dump(d, "split", &runs);
        }
    }

    if opts.store_timing {
        store_open_timing();
    }

    if opts.process {
        if opts.quick {
            // The quick subset as a corpus of its own (symbolic links), so the processes see the same mail.
            match link_subset(&msgs) {
                Ok(sub) => process_comparison(sub.path(), sub.path()),
                Err(e) => println!("\n(whole-process comparison skipped: {e})"),
            }
        } else {
            match &opts.test {
                Some(t) => process_comparison(&corpus_dir, t),
                None => process_comparison(&corpus_dir, &corpus_dir),
            }
        }
    }
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
