//! Faults around the proxy, each checked against the upstream maildrop afterwards: a real Dovecot behind a small
//! fault-injecting TCP relay (cut or stall the upstream's replies once the proxy sends a given command), clients
//! that vanish mid-RETR or during the first scan, the proxy binary killed with SIGKILL mid-session and restarted on
//! the same data dir, and a data dir that cannot be written. In every case no message is lost and nothing is
//! deleted that a client did not commit with QUIT.
//!
//! Not repeated here (already proven elsewhere): a client dropping after DELE without QUIT (tests/it/proxy_peers.rs
//! against Dovecot, tests/it/proxy_session.rs against a scripted upstream).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use popguard::pop3::Response;
use popguard::server::{self, ServerConfig, users::Users};
use popguard_test_support as support;
use support::raw::{RawSession, connect, try_command as cmd};
use support::{
    Dovecot, ProxyBuilder, RunningProxy, fixtures, popguard_bin, require_peer, spawn_command,
    wait_for_port, with_timeout,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = "alice";
const PASS: &str = "alicepw";
/// Bound for one test (Dovecot start, a session or two, checks).
const TEST_SECS: u64 = 30;
/// The upstream timeout configured for the stall test, in seconds (the smallest the proxy accepts).
const STALL_TIMEOUT_SECS: u64 = 1;

/// What the relay does to the upstream's replies once the proxy has sent the trigger.
#[derive(Clone, Copy)]
enum Fault {
    /// Forward this many more bytes of the upstream's replies, then close both connections.
    Cut(usize),
    /// Forward this many more bytes, then forward nothing more while keeping the connections open.
    Stall(usize),
}

/// A loopback relay to `upstream` that injects `fault` after it sees `trigger` in the proxy's commands. Returns its
/// address; it serves connections until the test's runtime ends.
async fn relay(upstream: SocketAddr, trigger: &'static [u8], fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            tokio::spawn(relay_one(down, upstream, trigger, fault));
        }
    });
    addr
}

async fn relay_one(down: TcpStream, upstream: SocketAddr, trigger: &'static [u8], fault: Fault) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut down_r, mut down_w) = down.into_split();
    let (mut up_r, mut up_w) = up.into_split();
    let armed = Arc::new(AtomicBool::new(false));
    let armed2 = armed.clone();
    // Proxy -> upstream: arm the fault before the trigger is forwarded, so every reply byte to it counts.
    let commands = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match down_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(trigger.len()).any(|w| w == trigger) {
                armed2.store(true, Ordering::SeqCst);
            }
            if up_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let (Fault::Cut(mut budget) | Fault::Stall(mut budget)) = fault;
    let mut buf = [0u8; 4096];
    loop {
        let n = match up_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut send = n;
        if armed.load(Ordering::SeqCst) {
            send = n.min(budget);
            budget -= send;
        }
        if down_w.write_all(&buf[..send]).await.is_err() {
            break;
        }
        if send < n || (armed.load(Ordering::SeqCst) && budget == 0) {
            match fault {
                Fault::Cut(_) => break,
                Fault::Stall(_) => {
                    // Hold both connections open and silent until the proxy gives up.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }
    }
    commands.abort();
}

/// The proxy in front of `upstream` (tag, no DNSBL); `extra` adds `[proxy]` keys.
fn proxy_builder(upstream: SocketAddr, extra: &str) -> ProxyBuilder {
    ProxyBuilder::new(upstream).config(extra)
}

/// A config file text for the proxy on `data` in front of `upstream`, for `popguard proxy --config`.
fn config_text(data: &Path, upstream: SocketAddr, extra: &str) -> String {
    proxy_builder(upstream, extra).config_text(data)
}

/// The proxy in this process, in front of `upstream` with state in `data`, until the handle is dropped.
async fn start_proxy(data: &Path, upstream: SocketAddr, extra: &str) -> RunningProxy {
    proxy_builder(upstream, extra).data_dir(data).start().await
}

/// Messages big enough that a RETR spans many TCP reads.
fn big_mailbox(n: usize) -> Vec<Vec<u8>> {
    fixtures::mailbox(n)
        .into_iter()
        .map(|mut m| {
            for i in 0..600 {
                m.extend_from_slice(
                    format!("filler line {i} of a long body, to be cut\r\n").as_bytes(),
                );
            }
            m
        })
        .collect()
}

async fn login(s: &mut RawSession) {
    for line in [format!("USER {USER}"), format!("PASS {PASS}")] {
        let r = cmd(s, &line).await.unwrap();
        assert!(r.is_ok(), "{line}: {r}");
    }
}

/// Every message is still in the maildrop, byte for byte. Dovecot renames files from new/ to cur/ while a session
/// ends, so a read that races with a rename is retried.
fn assert_untouched(dv: &Dovecot, all: &[Vec<u8>], what: &str) {
    let md = dv.maildir(USER);
    for _ in 0..100 {
        let mut files: Vec<std::path::PathBuf> = ["new", "cur"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(md.join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let read: Result<Vec<Vec<u8>>, _> = files.iter().map(std::fs::read).collect();
        if let Ok(read) = read {
            let mut got = read;
            let mut want = all.to_vec();
            got.sort();
            want.sort();
            assert!(
                got == want,
                "{what}: the maildrop changed ({} messages, {} expected)",
                got.len(),
                all.len()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: the maildrop kept changing under the reader");
}

/// How many disconnects Dovecot has logged so far (login processes and mail sessions).
fn disconnects(dv: &Dovecot) -> usize {
    dv.log().matches("Disconnected").count()
}

/// Waits until Dovecot has logged more than `base` disconnects (the proxy dropped its upstream connection).
async fn await_disconnects(dv: &Dovecot, base: usize) {
    for _ in 0..400 {
        if disconnects(dv) > base {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("Dovecot logged no disconnect after {base}:\n{}", dv.log());
}

/// A full session through `addr` that reads every message and QUITs without deleting: the proxy still works.
async fn full_session(addr: SocketAddr, expect: usize) {
    let mut s = connect(addr).await;
    login(&mut s).await;
    let stat = cmd(&mut s, "STAT").await.unwrap();
    assert!(stat.text.starts_with(&format!("{expect} ")), "STAT: {stat}");
    for n in 1..=expect {
        let r = cmd(&mut s, &format!("RETR {n}")).await.unwrap();
        assert!(r.is_ok(), "RETR {n}: {r}");
        s.read_multiline(1 << 22).await.unwrap();
    }
    assert!(cmd(&mut s, "QUIT").await.unwrap().is_ok());
}

/// The client sees the upstream failure as `-ERR` or a closed connection, never a complete reply.
fn assert_failed(r: Option<Response>, what: &str) {
    if let Some(r) = r {
        assert!(
            !r.is_ok(),
            "{what}: expected -ERR or a closed connection, got {r}"
        );
    }
}

#[tokio::test]
async fn upstream_closing_mid_login_loses_nothing() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let all = fixtures::mailbox(4);
        dv.deliver(USER, &all);
        let base = disconnects(&dv);
        let data = tempfile::tempdir().unwrap();
        let cut = relay(dv.addr(), b"PASS ", Fault::Cut(0)).await;
        let px = start_proxy(data.path(), cut, "").await;
        let mut s = connect(px.addr).await;
        assert!(cmd(&mut s, &format!("USER {USER}")).await.unwrap().is_ok());
        assert_failed(cmd(&mut s, &format!("PASS {PASS}")).await, "PASS");
        assert_failed(cmd(&mut s, "STAT").await, "STAT after the cut");
        await_disconnects(&dv, base).await;
        assert_untouched(&dv, &all, "cut mid-login");
        // The same proxy data dir, healthy upstream: everything is there.
        full_session(
            start_proxy(data.path(), dv.addr(), "").await.addr,
            all.len(),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn upstream_closing_mid_list_loses_nothing() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let all = fixtures::mailbox(6);
        dv.deliver(USER, &all);
        let base = disconnects(&dv);
        let data = tempfile::tempdir().unwrap();
        // "+OK 6 messages:\r\n1 " then nothing: the listing is cut in its first entries.
        let cut = relay(dv.addr(), b"LIST\r\n", Fault::Cut(20)).await;
        let px = start_proxy(data.path(), cut, "").await;
        let mut s = connect(px.addr).await;
        login(&mut s).await;
        assert_failed(cmd(&mut s, "DELE 1").await, "DELE during a cut LIST");
        assert_failed(cmd(&mut s, "QUIT").await, "QUIT after the cut");
        await_disconnects(&dv, base).await;
        assert_untouched(&dv, &all, "cut mid-LIST");
        full_session(
            start_proxy(data.path(), dv.addr(), "").await.addr,
            all.len(),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn upstream_closing_mid_retr_loses_nothing_and_commits_no_dele() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let all = big_mailbox(3);
        dv.deliver(USER, &all);
        let base = disconnects(&dv);
        let data = tempfile::tempdir().unwrap();
        let cut = relay(dv.addr(), b"RETR 2", Fault::Cut(3000)).await;
        let px = start_proxy(data.path(), cut, "").await;
        let mut s = connect(px.addr).await;
        login(&mut s).await;
        assert!(cmd(&mut s, "DELE 1").await.unwrap().is_ok());
        // The reply may start (+OK and part of the body) but must never end as a complete message.
        if let Some(r) = cmd(&mut s, "RETR 2").await
            && r.is_ok()
        {
            let body = s.read_multiline(1 << 22).await;
            assert!(body.is_err(), "a cut RETR must not look complete");
        }
        assert_failed(cmd(&mut s, "QUIT").await, "QUIT after the cut");
        await_disconnects(&dv, base).await;
        assert_untouched(&dv, &all, "cut mid-RETR after DELE 1");
        full_session(
            start_proxy(data.path(), dv.addr(), "").await.addr,
            all.len(),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn stalled_upstream_is_an_err_within_the_upstream_timeout() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let all = big_mailbox(2);
        dv.deliver(USER, &all);
        let data = tempfile::tempdir().unwrap();
        let stall = relay(dv.addr(), b"RETR 1", Fault::Stall(0)).await;
        let extra = format!("upstream_timeout = {STALL_TIMEOUT_SECS}");
        let px = start_proxy(data.path(), stall, &extra).await;
        let mut s = connect(px.addr).await;
        login(&mut s).await;
        assert!(cmd(&mut s, "DELE 2").await.unwrap().is_ok());
        let started = Instant::now();
        let r = cmd(&mut s, "RETR 1").await;
        let took = started.elapsed();
        let r = r.expect("the client gets an answer, not a closed connection");
        assert!(!r.is_ok(), "stalled RETR answered {r}");
        // One upstream read timeout, plus scheduling slack; far below a hang.
        assert!(
            took >= Duration::from_millis(900)
                && took < Duration::from_secs(STALL_TIMEOUT_SECS + 3),
            "-ERR after {took:?}"
        );
        eprintln!("stalled upstream: -ERR after {took:?} ({r})");
        drop(s);
        assert_untouched(&dv, &all, "stalled upstream after DELE 2");
    })
    .await;
}

#[tokio::test]
async fn client_vanishing_mid_retr_or_during_the_first_scan_deletes_nothing() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let mut all = big_mailbox(2);
        all.extend(fixtures::mailbox(40));
        dv.deliver(USER, &all);
        let base = disconnects(&dv);
        let data = tempfile::tempdir().unwrap();
        let px = start_proxy(data.path(), dv.addr(), "").await;

        // Mid-RETR: read a little of a large message after DELE 2, then drop.
        let mut s = connect(px.addr).await;
        login(&mut s).await;
        assert!(cmd(&mut s, "DELE 2").await.unwrap().is_ok());
        s.write_raw(b"RETR 1\r\n").await.unwrap();
        let mut tcp = s.into_inner();
        let mut some = [0u8; 100];
        let n = tcp.read(&mut some).await.unwrap();
        assert!(
            some[..n].starts_with(b"+OK"),
            "{:?}",
            String::from_utf8_lossy(&some[..n])
        );
        drop(tcp);
        await_disconnects(&dv, base).await;
        assert_untouched(&dv, &all, "client gone mid-RETR");

        // During the first scan: a fresh data dir, so STAT starts scanning all 42 messages; drop at once.
        let data2 = tempfile::tempdir().unwrap();
        let base2 = disconnects(&dv);
        let px2 = start_proxy(data2.path(), dv.addr(), "").await;
        let mut s = connect(px2.addr).await;
        login(&mut s).await;
        s.write_raw(b"DELE 1\r\nSTAT\r\n").await.unwrap();
        drop(s);
        await_disconnects(&dv, base2).await;
        assert_untouched(&dv, &all, "client gone during the first scan");
        full_session(px2.addr, all.len()).await;
    })
    .await;
}

/// `log` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `popguard proxy` as a child process on `data` in front of `upstream`; returns it and its address.
fn spawn_proxy(
    config: &Path,
    data: &Path,
    upstream: SocketAddr,
    extra: &str,
) -> (support::ChildGuard, SocketAddr) {
    std::fs::write(config, config_text(data, upstream, extra)).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let mut cmd = std::process::Command::new(popguard_bin());
    cmd.arg("proxy")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "popguard=info");
    let mut child = spawn_command(cmd);
    if !wait_for_port(addr, Duration::from_secs(10)) {
        let _ = child.try_wait();
        panic!("proxy did not start:\n{}", child.stderr());
    }
    (child, addr)
}

#[tokio::test]
async fn sigkill_mid_session_deletes_nothing_and_state_loads_at_restart() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let mut all = fixtures::ham(5);
        all.extend(fixtures::spam(5));
        dv.deliver(USER, &all);
        let base = disconnects(&dv);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("popguard.toml");

        // A trained token DB, so there is one to damage.
        let (ham_dir, spam_dir) = (dir.path().join("ham"), dir.path().join("spam"));
        for (d, msgs) in [(&ham_dir, fixtures::ham(5)), (&spam_dir, fixtures::spam(5))] {
            std::fs::create_dir_all(d).unwrap();
            for (i, m) in msgs.iter().enumerate() {
                std::fs::write(d.join(format!("{i}.eml")), m).unwrap();
            }
        }
        std::fs::write(&config, config_text(&data, dv.addr(), "")).unwrap();
        let train = std::process::Command::new(popguard_bin())
            .args(["train", "--quiet", "--user", USER, "--config"])
            .arg(&config)
            .arg("--ham")
            .arg(&ham_dir)
            .arg("--spam")
            .arg(&spam_dir)
            .output()
            .unwrap();
        assert!(
            train.status.success(),
            "train: {}",
            String::from_utf8_lossy(&train.stderr)
        );

        let (mut px, addr) = spawn_proxy(&config, &data, dv.addr(), "");
        let mut s = connect(addr).await;
        login(&mut s).await;
        let stat = cmd(&mut s, "STAT").await.unwrap();
        assert!(stat.is_ok(), "STAT: {stat}");
        assert!(cmd(&mut s, "DELE 1").await.unwrap().is_ok());
        assert!(cmd(&mut s, "RETR 2").await.unwrap().is_ok());
        px.kill(); // SIGKILL, with the client mid-RETR and a DELE pending
        drop(s);
        await_disconnects(&dv, base).await;
        assert_untouched(&dv, &all, "proxy killed mid-session");

        let user_dir = popguard::fsutil::user_dir(&data, USER);
        let files: Vec<String> = std::fs::read_dir(&user_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(files.iter().any(|f| f == "tokens.db"), "{files:?}");
        let db = popguard::filter::bayes::store::TokenDb::open(&user_dir.join("tokens.db"))
            .unwrap_or_else(|e| panic!("the token DB does not load after SIGKILL: {e}"));
        assert_eq!(
            (db.nham(), db.nspam()),
            (5, 5),
            "trained counts after SIGKILL"
        );

        // Restart on the same data dir: the cache and the token DB load, a full session works, QUIT commits DELE.
        let (px2, addr2) = spawn_proxy(&config, &data, dv.addr(), "");
        full_session(addr2, all.len()).await;
        let mut s = connect(addr2).await;
        login(&mut s).await;
        assert!(cmd(&mut s, "DELE 1").await.unwrap().is_ok());
        assert!(cmd(&mut s, "QUIT").await.unwrap().is_ok());
        assert_untouched(&dv, &all[1..], "QUIT commits exactly DELE 1");
        let log = strip_ansi(&px2.stderr());
        // The first session's verdicts were saved before it was killed: the restart scans nothing again.
        assert!(
            log.contains("maildrop ready") && log.contains("scanned=0"),
            "the restarted proxy did not use the saved verdicts:\n{log}"
        );
        for bad in ["corrupt", "damaged", "unavailable", "not saved", "ERROR"] {
            assert!(!log.contains(bad), "restart log mentions {bad:?}:\n{log}");
        }
    })
    .await;
}

/// The data dir cannot be created or written: its path is a regular FILE (chmod does not stop root, who runs the
/// tests in CI; a file in the way fails for everyone). The proxy relays every message, tagged, and logs what it
/// could not save.
#[tokio::test]
async fn unwritable_data_dir_still_relays_and_says_what_it_cannot_save() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let mut all = fixtures::ham(3);
        all.extend(fixtures::spam(3));
        dv.deliver(USER, &all);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data-is-a-file");
        std::fs::write(&data, b"not a directory").unwrap();
        let (px, addr) = spawn_proxy(&dir.path().join("c.toml"), &data, dv.addr(), "");
        let mut s = connect(addr).await;
        login(&mut s).await;
        let mut got = Vec::new();
        for n in 1..=all.len() {
            let r = cmd(&mut s, &format!("RETR {n}")).await.unwrap();
            assert!(r.is_ok(), "RETR {n}: {r}");
            got.push(s.read_multiline(1 << 22).await.unwrap());
        }
        assert!(cmd(&mut s, "QUIT").await.unwrap().is_ok());
        for (n, (g, m)) in got.iter().zip(&all).enumerate() {
            support::assert_same_message(&format!("message {}", n + 1), &support::strip_tag(g), m);
            // Scanned and marked as configured (mark_ham is on by default), although nothing could be saved.
            assert!(
                support::header_value(g, "X-Spam-Status").is_some(),
                "message {} is not marked",
                n + 1
            );
        }
        assert_untouched(&dv, &all, "unwritable data dir");
        let log = px.stderr();
        assert!(
            log.contains("verdict cache") && log.contains("data-is-a-file"),
            "the log says what it cannot save and where:\n{log}"
        );
    })
    .await;
}

/// A full disk: a 64 KB tmpfs as the data dir (needs root and mount permission; skipped otherwise).
#[tokio::test]
async fn full_data_dir_still_relays() {
    if !require_peer("dovecot") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&data);
    // Fill it up.
    let _ = std::fs::write(data.join("filler"), vec![0u8; 1 << 20]);
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let mut all = fixtures::ham(3);
        all.extend(fixtures::spam(3));
        dv.deliver(USER, &all);
        let (px, addr) = spawn_proxy(&dir.path().join("c.toml"), &data, dv.addr(), "");
        full_session(addr, all.len()).await;
        assert_untouched(&dv, &all, "full data dir");
        let log = px.stderr();
        assert!(
            log.contains("not saved") && log.contains("No space left"),
            "the log says what it cannot save:\n{log}"
        );
    })
    .await;
}

/// The messages of `user` in the built-in server's maildir tree, ordered by file name.
fn builtin_maildrop(maildirs: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<std::path::PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(maildirs.join(USER).join(sub))
                .unwrap()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The same cuts with the built-in server as the upstream (in this process, so no peer needed).
#[tokio::test]
async fn builtin_server_upstream_cut_mid_login_list_retr_loses_nothing() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let maildirs = dir.path().join("maildirs");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildirs.join(USER).join(sub)).unwrap();
        }
        for (i, m) in big_mailbox(3).iter().enumerate() {
            std::fs::write(
                maildirs.join(USER).join("new").join(format!("100{i}.msg")),
                m,
            )
            .unwrap();
        }
        let before = builtin_maildrop(&maildirs);
        let users = Users::parse(&format!("{USER}:{PASS}\n")).unwrap();
        let mut sc = ServerConfig::new(&maildirs, users);
        sc.auth_failure_delay = Duration::from_millis(1);
        let sl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = sl.local_addr().unwrap();
        tokio::spawn(server::run(sl, Arc::new(sc), std::future::pending()));
        let data = tempfile::tempdir().unwrap();

        let faults: [(&'static [u8], usize); 3] =
            [(b"PASS ", 0), (b"LIST\r\n", 12), (b"RETR 2", 3000)];
        for (trigger, after) in faults {
            let what = String::from_utf8_lossy(trigger).trim().to_string();
            let cut = relay(upstream, trigger, Fault::Cut(after)).await;
            let px = start_proxy(data.path(), cut, "").await;
            let mut s = connect(px.addr).await;
            assert!(cmd(&mut s, &format!("USER {USER}")).await.unwrap().is_ok());
            if let Some(r) = cmd(&mut s, &format!("PASS {PASS}")).await
                && r.is_ok()
                && let Some(r) = cmd(&mut s, "DELE 1").await
                && r.is_ok()
                && let Some(r) = cmd(&mut s, "RETR 2").await
                && r.is_ok()
            {
                assert!(
                    s.read_multiline(1 << 22).await.is_err(),
                    "{what}: a cut RETR looked complete"
                );
            }
            assert_failed(
                cmd(&mut s, "QUIT").await,
                &format!("QUIT after the cut at {what}"),
            );
            drop(s);
            // The server drops its session when the relay closes; give it a moment, then compare.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                builtin_maildrop(&maildirs) == before,
                "cut at {what}: the maildrop changed"
            );
        }
        full_session(
            start_proxy(data.path(), upstream, "").await.addr,
            before.len(),
        )
        .await;
    })
    .await;
}
