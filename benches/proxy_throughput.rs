//! Proxy throughput and memory against the real peer: 1000 corpus messages downloaded directly from Dovecot and
//! through `popguard proxy` (the binary, action tag, real filter without DNS), on the first scan (empty verdict
//! cache) and with cached verdicts, by a raw streaming POP3 client (the proxy's own cost) and by real clients
//! (mpop, which pipelines, and Python's poplib, which does not); then the proxy's peak RSS while relaying one 50 MB message.
//!
//! Run: `cargo bench --profile dev --bench proxy_throughput -- [CORPUS_DIR] [raw] [smoke]` (default `/tmp/corpus`,
//! the extracted SpamAssassin dev corpus with `ham/` and `spam/`; `raw` skips the real clients; `smoke` runs once
//! on 100 made-up messages, as CI does). Needs Dovecot, mpop and python3 (`.ci/install-peers`).
//! Targets: cached >= 0.9x direct throughput, first scan >= 0.5x, peak RSS for 50 MB < 32 MB.

use popguard_test_support as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use popguard::pop3::Pop3Stream;
use support::{ChildGuard, Client, Dovecot, DovecotOptions, Opts, free_port, spawn, wait_for_port};
use tokio::net::TcpStream;

const MESSAGES: usize = 1000;
/// Spam share of the maildrop (the rest is ham), interleaved.
const SPAM_EVERY: usize = 3;
/// Repetitions per measurement; the median is reported.
const REPS: usize = 3;
const USER: &str = "alice";
const PASS: &str = "alicepw";
const BIG_USER: &str = "big";
const BIG_SIZE: usize = 50 << 20;

fn corpus_messages(dir: &Path) -> Vec<Vec<u8>> {
    let read = |sub: &str| -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (pass the extracted corpus directory)",
                    dir.join(sub).display()
                )
            })
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    };
    let (ham, spam) = (read("ham"), read("spam"));
    let (mut h, mut s) = (ham.into_iter(), spam.into_iter());
    let mut out = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let next = if i % SPAM_EVERY == 0 {
            s.next().or_else(|| h.next())
        } else {
            h.next().or_else(|| s.next())
        };
        match next {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

/// `n` small messages, every third spam-like, for the smoke run (no corpus needed).
fn made_up_messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let (subject, body) = if i % SPAM_EVERY == 0 {
                (
                    "FREE MONEY!!! Act now",
                    "Click here http://cheap-pills.example.biz/buy now to claim your prize. Unsubscribe.\r\n",
                )
            } else {
                ("Minutes of the meeting", "Hi all,\r\nattached are the notes.\r\n.\r\nBye\r\n")
            };
            format!(
                "From: sender{i}@example.org\r\nTo: alice@example.net\r\nSubject: {subject}\r\n\
                 Message-ID: <{i}@example.org>\r\n\r\n{}",
                body.repeat(1 + i % 7)
            )
            .into_bytes()
        })
        .collect()
}

/// A 50 MB message: short header, then base64-looking 76-character lines.
fn big_message() -> Vec<u8> {
    let mut m =
        b"From: big@example.org\r\nTo: big@example.net\r\nSubject: a large attachment\r\n\r\n"
            .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while m.len() < BIG_SIZE {
        m.extend_from_slice(line);
    }
    m
}

/// A proxy process in front of Dovecot's plain port, with a fresh data directory.
fn start_proxy(upstream: SocketAddr, work: &Path) -> (ChildGuard, SocketAddr) {
    start_proxy_with(upstream, work, "")
}

/// [`start_proxy`] with extra `[proxy]` settings.
fn start_proxy_with(upstream: SocketAddr, work: &Path, proxy: &str) -> (ChildGuard, SocketAddr) {
    let data = tempfile::tempdir_in(work).unwrap().keep();
    let cfg = data.join("popguard.toml");
    std::fs::write(&cfg, format!("[dnsbl]\nenabled = false\n[proxy]\n{proxy}")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = spawn([
        "proxy".to_string(),
        // Info level: the first scan's duration is read from the log.
        "-v".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        addr.to_string(),
        "--upstream".into(),
        upstream.to_string(),
        "--upstream-tls".into(),
        "none".into(),
        "--action".into(),
        "tag".into(),
    ]);
    assert!(
        wait_for_port(addr, Duration::from_secs(20)),
        "proxy did not start"
    );
    (child, addr)
}

/// Downloads every message with a plain POP3 session (LIST, then RETR one by one, discarding the bytes as they
/// stream); returns (messages, bytes). Checks each LIST size against what RETR delivers.
async fn raw_download(addr: SocketAddr, user: &str) -> (usize, u64) {
    let (n, bytes, _) = raw_download_timed(addr, user).await;
    (n, bytes)
}

/// [`raw_download`], also returning how long the client waited from connecting until LIST was answered.
async fn raw_download_timed(addr: SocketAddr, user: &str) -> (usize, u64, Duration) {
    let started = Instant::now();
    let mut s = Pop3Stream::new(TcpStream::connect(addr).await.unwrap());
    assert!(s.read_response().await.unwrap().is_ok());
    for line in [
        format!("USER {user}"),
        format!("PASS {PASS}"),
        "LIST".to_string(),
    ] {
        s.write_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
        let r = s.read_response().await.unwrap();
        assert!(r.is_ok(), "{line}: {r}");
    }
    let list = s.read_multiline(16 << 20).await.unwrap();
    let list_answered = started.elapsed();
    let sizes: Vec<u64> = String::from_utf8_lossy(&list)
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(_, s)| s.parse().ok()))
        .collect();
    let mut total = 0;
    let mut buf = Vec::with_capacity(1 << 16);
    for (i, size) in sizes.iter().enumerate() {
        s.write_raw(format!("RETR {}\r\n", i + 1).as_bytes())
            .await
            .unwrap();
        assert!(s.read_response().await.unwrap().is_ok());
        let mut got = 0u64;
        loop {
            buf.clear();
            let done = s.read_multiline_chunk(&mut buf).await.unwrap();
            got += buf.len() as u64;
            if done {
                break;
            }
        }
        assert_eq!(
            got,
            *size,
            "message {}: LIST said {size}, RETR gave {got}",
            i + 1
        );
        total += got;
    }
    s.write_raw(b"QUIT\r\n").await.unwrap();
    let _ = s.read_response().await;
    (sizes.len(), total, list_answered)
}

/// A full download (keeping the mail upstream) by a real client; returns the message count.
async fn client_download(client: Client, addr: SocketAddr) -> usize {
    let opts = Opts {
        keep: true,
        timeout: Some(Duration::from_secs(600)),
        ..Opts::default()
    };
    client
        .fetch(addr, USER, PASS, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", client.name()))
        .len()
}

/// The first scan's duration from the proxy's `maildrop ready ... elapsed_ms=N` log line.
fn scan_ms(log: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("maildrop ready"))
        .filter_map(|l| l.split("elapsed_ms=").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
}

/// The bytes a client receives from the upstream directly: each message with CRLF line endings.
fn bytes_direct(msgs: &[Vec<u8>]) -> f64 {
    msgs.iter()
        .map(|m| {
            let lf = m.iter().filter(|&&b| b == b'\n').count();
            let crlf = m.windows(2).filter(|w| w == b"\r\n").count();
            let tail = usize::from(!m.ends_with(b"\n"));
            (m.len() + lf - crlf + 2 * tail) as f64
        })
        .sum()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn timed<F: std::future::Future<Output = R>, R>(f: F) -> (Duration, R) {
    let t = Instant::now();
    let r = f.await;
    (t.elapsed(), r)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // `raw` skips the (slow, MDA-bound) real clients; `smoke` runs once on 100 made-up messages (CI).
    let raw_only = args.iter().any(|a| a == "raw");
    let smoke = args.iter().any(|a| a == "smoke");
    let reps = if smoke { 1 } else { REPS };
    let corpus = args
        .iter()
        .find(|a| *a != "raw" && *a != "smoke")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/corpus"));
    if !support::require_peer("dovecot")
        || !support::require_peer("mpop")
        || !support::require_peer("poplib")
    {
        return;
    }
    let msgs = if smoke {
        made_up_messages(100)
    } else {
        corpus_messages(&corpus)
    };
    let work = tempfile::tempdir().unwrap();
    let dv = Dovecot::start_with(
        &[(USER, PASS), (BIG_USER, PASS)],
        &DovecotOptions {
            stls: false,
            high_performance: true,
        },
    );
    dv.deliver(USER, &msgs);
    dv.deliver(BIG_USER, &[big_message()]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory_ok = rt.block_on(async {
        let bytes: usize = msgs.iter().map(Vec::len).sum();
        println!("proxy_throughput: {} messages, {:.1} MB, Dovecot at {}", msgs.len(), bytes as f64 / 1e6, dv.addr());

        // mpop pipelines; poplib, like fetchmail and curl, sends one command at a time; the raw client is the
        // worst case for a proxy: it does nothing with the mail, so the proxy's cost is all there is.
        let raw = [(None, "raw streaming client")];
        let real = [(Some(Client::Mpop), "mpop"), (Some(Client::Poplib), "poplib")];
        let clients: Vec<(Option<Client>, &str)> =
            if raw_only { raw.to_vec() } else { raw.iter().chain(real.iter()).copied().collect() };
        for (client, label) in clients {
            let run = |addr: SocketAddr| async move {
                match client {
                    Some(c) => client_download(c, addr).await,
                    None => raw_download(addr, USER).await.0,
                }
            };
            // Warm-up: Dovecot's index and the page cache.
            run(dv.addr()).await;
            let mut direct = Vec::new();
            let mut first = Vec::new();
            let mut cached = Vec::new();
            let mut scans = Vec::new();
            for _ in 0..reps {
                let (t, n) = timed(run(dv.addr())).await;
                assert_eq!(n, msgs.len());
                direct.push(t);
                let (proxy, addr) = start_proxy(dv.addr(), work.path());
                let (t, n) = timed(run(addr)).await;
                assert_eq!(n, msgs.len());
                first.push(t);
                if let Some(ms) = scan_ms(&proxy.stderr()) {
                    scans.push(Duration::from_millis(ms));
                }
                let (t, n) = timed(run(addr)).await;
                assert_eq!(n, msgs.len());
                cached.push(t);
            }
            if !scans.is_empty() {
                let sc = median(scans);
                println!(
                    "{label}: first scan of {} messages took {:.3}s in the proxy ({:.0} messages/s)",
                    msgs.len(),
                    sc.as_secs_f64(),
                    msgs.len() as f64 / sc.as_secs_f64()
                );
            }
            let (d, f, c) = (median(direct), median(first), median(cached));
            let ratio = |t: Duration| d.as_secs_f64() / t.as_secs_f64();
            println!(
                "{label}: direct {:.3}s, proxy first scan {:.3}s ({:.2}x direct throughput, target >= 0.5), \
                 proxy cached {:.3}s ({:.2}x, target >= 0.9)",
                d.as_secs_f64(),
                f.as_secs_f64(),
                ratio(f),
                c.as_secs_f64(),
                ratio(c)
            );
        }

        // Tag sizing: `exact` scores every new message before answering LIST; `fixed` answers at once
        // and scores each message as it is retrieved, at the cost of a padded tag on every message.
        {
            let mut rows = Vec::new();
            for (mode, extra) in [("exact", ""), ("fixed", "tag_sizing = \"fixed\"\n")] {
                let mut total = Vec::new();
                let mut wait = Vec::new();
                let mut bytes = 0;
                for _ in 0..reps {
                    let (_proxy, addr) = start_proxy_with(dv.addr(), work.path(), extra);
                    let t = Instant::now();
                    let (n, b, to_list) = raw_download_timed(addr, USER).await;
                    assert_eq!(n, msgs.len());
                    total.push(t.elapsed());
                    wait.push(to_list);
                    bytes = b;
                }
                rows.push((mode, median(wait), median(total), bytes));
            }
            let (t0, _) = timed(raw_download(dv.addr(), USER)).await;
            for (mode, wait, total, bytes) in rows {
                println!(
                    "tag_sizing = {mode}: first download by the raw client: LIST answered after {:.3}s, all {} \
                     messages in {:.3}s ({:.2}x direct {:.3}s), {:.1} kB added to the mail",
                    wait.as_secs_f64(),
                    msgs.len(),
                    total.as_secs_f64(),
                    t0.as_secs_f64() / total.as_secs_f64(),
                    t0.as_secs_f64(),
                    (bytes as f64 - bytes_direct(&msgs)) / 1e3
                );
            }
        }

        // Peak memory while relaying one 50 MB message (first scan included: TOP reads up to the scan limit).
        let (proxy, addr) = start_proxy(dv.addr(), work.path());
        let before = peak_rss_kib(proxy.id()).unwrap_or(0);
        let (t, (n, got)) = timed(raw_download(addr, BIG_USER)).await;
        assert_eq!(n, 1);
        let peak = peak_rss_kib(proxy.id()).unwrap_or(0);
        println!(
            "50 MB message: {:.1} MB relayed in {:.2}s; proxy peak RSS {:.1} MB (idle peak before: {:.1} MB), \
             target < 32 MB: {}",
            got as f64 / 1e6,
            t.as_secs_f64(),
            peak as f64 / 1024.0,
            before as f64 / 1024.0,
            if peak < 32 * 1024 { "met" } else { "NOT met" }
        );
        peak < 32 * 1024
    });
    // Memory, unlike timing, does not depend on the machine's load: a regression fails the run (and CI), once
    // Dovecot and the proxies are stopped.
    drop(rt);
    drop(dv);
    if !memory_ok {
        eprintln!("proxy_throughput: the 50 MB relay used more than 32 MB");
        std::process::exit(1);
    }
}
