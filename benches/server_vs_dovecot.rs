//! `popguard server` against Dovecot: the same 1000 messages served by both, one full RETR-all session by the same
//! real client (mpop, then Python's poplib), timed from client start to client exit. Prints each server's median
//! and best time and the ratio popguard / Dovecot (target: at most 1.0).
//!
//! Run: `cargo bench --profile dev --bench server_vs_dovecot -- [CORPUS_DIR] [--runs N] [--messages N]`.
//! With CORPUS_DIR (e.g. /tmp/corpus from the SpamAssassin tarball) the messages are files spread evenly over the
//! directory tree; without it they are generated (test-support fixtures). Needs dovecot, mpop and python3; only
//! 127.0.0.1 is contacted. Both servers run warm: one untimed session each first (Dovecot builds its index, popguard
//! its size cache), then the timed sessions alternate between the two.

use popguard_test_support as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use popguard::server::users::Users;
use popguard::server::{ServerConfig, run};
use support::dovecot::DovecotOptions;
use support::{Dovecot, fixtures};

const DEFAULT_MESSAGES: usize = 1000;
const DEFAULT_RUNS: usize = 7;
const USER: &str = "alice";
const PASS: &str = "benchpw";
/// A client run that takes longer than this has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Downloads everything, keeps it on the server, and throws it away (the client's own work stays small).
const POPLIB_SCRIPT: &str = r#"
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=120)
p.user(sys.argv[3]); p.pass_(sys.argv[4])
n, _ = p.stat()
got = 0
for i in range(1, n + 1):
    p.retr(i)
    got += 1
p.quit()
print(got)
"#;

struct Options {
    corpus: Option<PathBuf>,
    messages: usize,
    runs: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        corpus: None,
        messages: DEFAULT_MESSAGES,
        runs: DEFAULT_RUNS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |what: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} needs a positive number"))
        };
        match a.as_str() {
            // cargo passes --bench to harness = false benchmarks.
            "--bench" => {}
            "--runs" => o.runs = number("--runs")?,
            "--messages" => o.messages = number("--messages")?,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            path => o.corpus = Some(PathBuf::from(path)),
        }
    }
    Ok(o)
}

/// `n` files spread evenly over the sorted file list of `dir` (so a ham/spam corpus gives both).
fn corpus_messages(dir: &Path, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    if files.len() < n {
        return Err(format!(
            "{} holds {} files, need {n}",
            dir.display(),
            files.len()
        ));
    }
    let step = files.len() / n;
    (0..n)
        .map(|i| {
            std::fs::read(&files[i * step])
                .map_err(|e| format!("{}: {e}", files[i * step].display()))
        })
        .collect()
}

/// One client session; returns the wall time and how many messages the client got.
async fn mpop_session(addr: SocketAddr, work: &Path) -> Result<(Duration, usize), String> {
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(out.join(sub)).map_err(|e| e.to_string())?;
    }
    // A fresh UIDL file each time, so every session retrieves everything.
    let uidls = work.join("uidls");
    let _ = std::fs::remove_file(&uidls);
    let conf = work.join("mpoprc");
    std::fs::write(
        &conf,
        format!(
            "defaults\ntimeout 60\n\naccount bench\nhost {}\nport {}\nuser {USER}\npassword {PASS}\nauth user\n\
             tls off\nkeep on\nuidls_file {}\ndelivery maildir {}\nreceived_header off\n",
            addr.ip(),
            addr.port(),
            uidls.display(),
            out.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let status = tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio::process::Command::new("mpop")
            .arg("-q")
            .arg("-C")
            .arg(&conf)
            .arg("bench")
            .status(),
    )
    .await
    .map_err(|_| "mpop timed out".to_owned())?
    .map_err(|e| format!("cannot run mpop: {e}"))?;
    let elapsed = t0.elapsed();
    if !status.success() {
        return Err(format!("mpop failed: {status}"));
    }
    let got = std::fs::read_dir(out.join("new"))
        .map_err(|e| e.to_string())?
        .count();
    Ok((elapsed, got))
}

async fn poplib_session(addr: SocketAddr) -> Result<(Duration, usize), String> {
    let t0 = Instant::now();
    let out = tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(POPLIB_SCRIPT)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(USER)
            .arg(PASS)
            .output(),
    )
    .await
    .map_err(|_| "poplib timed out".to_owned())?
    .map_err(|e| format!("cannot run python3: {e}"))?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "poplib failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let got = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((elapsed, got))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Mpop,
    Poplib,
}

async fn session(
    kind: ClientKind,
    addr: SocketAddr,
    work: &Path,
) -> Result<(Duration, usize), String> {
    match kind {
        ClientKind::Mpop => mpop_session(addr, work).await,
        ClientKind::Poplib => poplib_session(addr).await,
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("server_vs_dovecot: {e}");
            return ExitCode::from(2);
        }
    };
    for peer in ["dovecot", "mpop", "python3"] {
        if let Some(why) = support::peer_missing(peer) {
            eprintln!("server_vs_dovecot: SKIP, {why} (run `sudo .ci/install-peers`)");
            return ExitCode::SUCCESS;
        }
    }
    let (msgs, source) = match &opts.corpus {
        Some(dir) => match corpus_messages(dir, opts.messages) {
            Ok(m) => (m, format!("corpus {}", dir.display())),
            Err(e) => {
                eprintln!("server_vs_dovecot: {e}");
                return ExitCode::from(2);
            }
        },
        None => (
            fixtures::mailbox(opts.messages),
            "generated fixtures".to_owned(),
        ),
    };
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!(
        "server_vs_dovecot: {} messages ({:.1} MB) from {source}; {} timed sessions per server and client",
        msgs.len(),
        bytes as f64 / 1e6,
        opts.runs
    );

    // Dovecot's start is blocking: before the runtime.
    let stock = Dovecot::start(&[(USER, PASS)]);
    stock.deliver(USER, &msgs);
    let hp = Dovecot::start_with(
        &[(USER, PASS)],
        &DovecotOptions {
            high_performance: true,
            ..DovecotOptions::default()
        },
    );
    hp.deliver(USER, &msgs);

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("server_vs_dovecot: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let drop_dir = dir.path().join("mail").join(USER);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(drop_dir.join(sub)).map_err(|e| e.to_string())?;
        }
        for (i, m) in msgs.iter().enumerate() {
            std::fs::write(drop_dir.join("new").join(format!("1700000000.M{i:06}P1.bench")), m)
                .map_err(|e| e.to_string())?;
        }
        let users = Users::parse(&format!("{USER}:{PASS}\n")).map_err(|e| e.to_string())?;
        let config = ServerConfig::new(dir.path().join("mail"), users);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let popguard = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(listener, Arc::new(config), async {
            let _ = stopped.await;
        }));
        // Client output on tmpfs when there is one, so disk writes do not drown the servers' differences.
        let shm = Path::new("/dev/shm");
        let work = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .map_err(|e| e.to_string())?;

        let servers = [
            ("popguard server", popguard),
            ("Dovecot (stock)", stock.addr()),
            ("Dovecot (high-performance)", hp.addr()),
        ];
        let mut summary = Vec::new();
        for (kind, name) in [(ClientKind::Mpop, "mpop"), (ClientKind::Poplib, "poplib")] {
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
            // Warm-up: page cache, Dovecot's index, popguard's size cache.
            for (label, addr) in &servers {
                let (_, got) = session(kind, *addr, work.path()).await.map_err(|e| format!("{label}: {e}"))?;
                if got != msgs.len() {
                    return Err(format!("{name} got {got} of {} messages from {label}", msgs.len()));
                }
            }
            for _ in 0..opts.runs {
                for (i, (label, addr)) in servers.iter().enumerate() {
                    let (t, got) =
                        session(kind, *addr, work.path()).await.map_err(|e| format!("{label}: {e}"))?;
                    if got != msgs.len() {
                        return Err(format!("{name} got {got} of {} messages from {label}", msgs.len()));
                    }
                    times[i].push(t);
                }
            }
            println!("\n{name}, RETR-all of {} messages:", msgs.len());
            for (i, (label, _)) in servers.iter().enumerate() {
                let best = times[i].iter().min().copied().unwrap_or_default();
                println!(
                    "  {label:<28} median {:>8.1} ms   best {:>8.1} ms",
                    ms(median(&times[i])),
                    ms(best)
                );
            }
            let ours = median(&times[0]).as_secs_f64();
            let vs_stock = ours / median(&times[1]).as_secs_f64();
            let vs_hp = ours / median(&times[2]).as_secs_f64();
            println!("  ratio popguard/Dovecot (medians): {vs_stock:.2} vs stock, {vs_hp:.2} vs high-performance");
            summary.push((name, vs_stock, vs_hp));
        }
        let _ = stop.send(());
        Ok::<_, String>(summary)
    });
    match result {
        Ok(summary) => {
            println!();
            for (name, stock, hp) in summary {
                let verdict = if stock <= 1.0 { "meets" } else { "MISSES" };
                println!(
                    "RESULT {name}: popguard/Dovecot = {stock:.2} (stock), {hp:.2} (high-performance); {verdict} the \
                     target ratio <= 1.0"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("server_vs_dovecot: {e}");
            ExitCode::FAILURE
        }
    }
}
