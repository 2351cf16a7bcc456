//! Security properties of the proxy and the built-in server: no password or SASL data in logs even at
//! `RUST_LOG=trace`; upstream certificate checks have no off switch; per-user data is owner-only; a failed login is
//! never answered faster than the upstream answers it.
//!
//! Not repeated here: refusing a non-loopback listen without TLS (tests/it/proxy_net.rs
//! `network_listener_without_tls_needs_an_opt_in`) and refusing an untrusted upstream certificate with a clear
//! `-ERR` (tests/it/proxy_net.rs `failed_certificate_verification_is_a_clear_err`, tests/it/proxy_peers.rs
//! `untrusted_upstream_certificate_is_refused_with_the_reason`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use popguard::config::Config;
use popguard::server::{self, ServerConfig, users::Users};
use popguard_test_support as support;
use support::raw::{command as cmd, connect};
use support::{
    Dovecot, ProxyBuilder, fixtures, popguard_bin, require_peer, spawn_command, wait_for_port,
    with_timeout,
};
use tokio::net::TcpListener;

const USER: &str = "alice";
/// Distinctive, so a hit in a log cannot be a coincidence.
const PASS: &str = "Tr0ub4dor-x7Q9-secret";
const TEST_SECS: u64 = 30;
/// The built-in upstream's delay before answering a failed login, for the timing test.
const UPSTREAM_AUTH_DELAY: Duration = Duration::from_millis(600);

fn b64(data: &[u8]) -> String {
    fixtures::base64(data)
}

/// USER/PASS, a wrong PASS, AUTH PLAIN with an initial response and with a continuation, RETR and QUIT: every way a
/// secret crosses the session. `wrong` is the wrong password used.
async fn secret_session(addr: SocketAddr, wrong: &str) {
    let mut s = connect(addr).await;
    assert!(cmd(&mut s, &format!("USER {USER}")).await.is_ok());
    assert!(!cmd(&mut s, &format!("PASS {wrong}")).await.is_ok());
    drop(s);
    let mut s = connect(addr).await;
    assert!(cmd(&mut s, &format!("USER {USER}")).await.is_ok());
    assert!(cmd(&mut s, &format!("PASS {PASS}")).await.is_ok());
    assert!(cmd(&mut s, "RETR 1").await.is_ok());
    s.read_multiline(1 << 20).await.unwrap();
    assert!(cmd(&mut s, "QUIT").await.is_ok());
    let blob = b64(format!("\0{USER}\0{PASS}").as_bytes());
    let mut s = connect(addr).await;
    let r = cmd(&mut s, &format!("AUTH PLAIN {blob}")).await;
    assert!(r.is_ok(), "AUTH PLAIN initial: {r}");
    assert!(cmd(&mut s, "QUIT").await.is_ok());
    let mut s = connect(addr).await;
    let r = cmd(&mut s, "AUTH PLAIN").await;
    assert!(r.text.is_empty() || !r.is_ok(), "continuation: {r}");
    let r = cmd(&mut s, &blob).await;
    assert!(r.is_ok(), "AUTH PLAIN continued: {r}");
    assert!(cmd(&mut s, "QUIT").await.is_ok());
}

/// Panics if `log` shows any form of the secrets; also insists that the log is not empty (trace was on).
fn assert_no_secrets(label: &str, log: &str, wrong: &str) {
    let blob = b64(format!("\0{USER}\0{PASS}").as_bytes());
    assert!(
        log.lines().count() >= 5,
        "{label}: the trace log is nearly empty:\n{log}"
    );
    for secret in [
        PASS,
        wrong,
        blob.as_str(),
        &format!("{USER}\0{PASS}"),
        &format!("{USER}\\0{PASS}"),
    ] {
        assert!(
            !log.contains(secret),
            "{label}: the log shows {secret:?}:\n{log}"
        );
    }
    eprintln!(
        "{label}: {} trace log lines, no secret",
        log.lines().count()
    );
}

#[tokio::test]
async fn proxy_and_server_logs_never_show_passwords_or_sasl_data_at_trace() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let wrong = "WrongPw-z8K2-guess";
        let dv = Dovecot::start(&[(USER, PASS)]);
        dv.deliver(USER, &fixtures::mailbox(2));
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        let text = ProxyBuilder::new(dv.addr()).config_text(&dir.path().join("data"));
        std::fs::write(&config, text).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let mut c = std::process::Command::new(popguard_bin());
        c.args(["proxy", "--listen", &addr.to_string(), "--config"])
            .arg(&config)
            .env("RUST_LOG", "trace");
        let px = spawn_command(c);
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "{}",
            px.stderr()
        );
        secret_session(addr, wrong).await;
        assert_no_secrets("proxy", &px.stderr(), wrong);

        // The built-in server, same session.
        let maildirs = dir.path().join("maildirs");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildirs.join(USER).join(sub)).unwrap();
        }
        std::fs::write(
            maildirs.join(USER).join("new").join("1.eml"),
            &fixtures::mailbox(1)[0],
        )
        .unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{USER}:{PASS}\n")).unwrap();
        let saddr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        let mut c = std::process::Command::new(popguard_bin());
        c.args([
            "server",
            "--listen",
            &saddr.to_string(),
            "--auth-failure-delay",
            "0",
        ])
        .arg("--maildirs")
        .arg(&maildirs)
        .arg("--users")
        .arg(&users)
        .env("RUST_LOG", "trace");
        let sv = spawn_command(c);
        assert!(
            wait_for_port(saddr, Duration::from_secs(10)),
            "{}",
            sv.stderr()
        );
        secret_session(saddr, wrong).await;
        assert_no_secrets("server", &sv.stderr(), wrong);
    })
    .await;
}

#[test]
fn upstream_certificate_checks_have_no_off_switch() {
    // No config key turns verification off: the usual names are unknown keys and the config is refused.
    for key in [
        "insecure",
        "tls_verify",
        "verify_certificate",
        "danger_accept_invalid_certs",
        "upstream_insecure",
    ] {
        let text = format!("[proxy]\n{key} = false\n");
        assert!(Config::parse(&text).is_err(), "{key} was accepted");
        let text = format!("[proxy]\n{key} = true\n");
        assert!(Config::parse(&text).is_err(), "{key} was accepted");
    }
    // Nor a command-line flag.
    let help = std::process::Command::new(popguard_bin())
        .args(["proxy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_lowercase();
    assert!(help.contains("--ca-file"), "{help}");
    for word in ["insecure", "no-verify", "skip-verify", "accept-invalid"] {
        assert!(!help.contains(word), "proxy --help offers {word}:\n{help}");
    }
}

/// Every file and directory under `root` with permissions for group or others.
fn loose_modes(root: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            loose_modes(&p, out);
        }
    }
}

fn all_files(root: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
        if p.is_dir() {
            all_files(&p, out);
        }
    }
}

#[tokio::test]
async fn per_user_data_files_are_owner_only() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let mut all = fixtures::ham(3);
        all.extend(fixtures::spam(3));
        dv.deliver(USER, &all);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Token DB through `popguard train`.
        let ham = dir.path().join("ham.eml");
        let spam = dir.path().join("spam.eml");
        std::fs::write(&ham, &fixtures::ham(1)[0]).unwrap();
        std::fs::write(&spam, &fixtures::spam(1)[0]).unwrap();
        let out = std::process::Command::new(popguard_bin())
            .args(["train", "--quiet", "--user", USER, "--data-dir"])
            .arg(&data)
            .arg("--ham")
            .arg(&ham)
            .arg("--spam")
            .arg(&spam)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Verdict cache and quarantine through a hide-mode session; the fixed scorer quarantines the fixture spam.
        let px = ProxyBuilder::new(dv.addr())
            .action("hide")
            .data_dir(&data)
            .fixed_scorer()
            .start()
            .await;
        let addr = px.addr;
        let mut s = connect(addr).await;
        assert!(cmd(&mut s, &format!("USER {USER}")).await.is_ok());
        assert!(cmd(&mut s, &format!("PASS {PASS}")).await.is_ok());
        let stat = cmd(&mut s, "STAT").await;
        assert!(stat.text.starts_with("3 "), "STAT: {stat}");
        assert!(cmd(&mut s, "QUIT").await.is_ok());

        let user_dir = popguard::fsutil::user_dir(&data, USER);
        let mut files = Vec::new();
        all_files(&user_dir, &mut files);
        assert!(files.iter().any(|f| f == "tokens.db"), "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.contains("quarantine") || f.contains("verdict")),
            "{files:?}"
        );
        let mut loose = Vec::new();
        let meta = std::fs::metadata(&data).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            loose.push(format!(
                "{} {:o}",
                data.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        loose_modes(&data, &mut loose);
        assert!(
            loose.is_empty(),
            "readable by others: {loose:#?}\nfiles: {files:?}"
        );
    })
    .await;
}

/// The proxy has no delay of its own; it answers a failed login only once the upstream has, so it cannot be used to
/// guess faster than the upstream allows. Measured against the built-in server with a known failure delay, directly
/// and through the proxy, on the same connection-per-guess pattern.
#[tokio::test]
async fn failed_login_is_never_answered_faster_than_by_the_upstream() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let maildirs = dir.path().join("maildirs");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildirs.join(USER).join(sub)).unwrap();
        }
        let users = Users::parse(&format!("{USER}:{PASS}\n")).unwrap();
        let mut sc = ServerConfig::new(&maildirs, users);
        sc.auth_failure_delay = UPSTREAM_AUTH_DELAY;
        let sl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = sl.local_addr().unwrap();
        tokio::spawn(server::run(sl, Arc::new(sc), std::future::pending()));

        let proxy = ProxyBuilder::new(upstream)
            .data_dir(&dir.path().join("data"))
            .start()
            .await;
        let px = proxy.addr;

        async fn guess(addr: SocketAddr, n: usize) -> Duration {
            let mut s = connect(addr).await;
            assert!(cmd(&mut s, &format!("USER {USER}")).await.is_ok());
            let started = Instant::now();
            let r = cmd(&mut s, &format!("PASS guess-{n}")).await;
            let took = started.elapsed();
            assert!(!r.is_ok(), "guess {n} succeeded: {r}");
            took
        }
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        for n in 0..3 {
            direct.push(guess(upstream, n).await);
            proxied.push(guess(px, n).await);
        }
        let min_direct = *direct.iter().min().unwrap();
        let min_proxied = *proxied.iter().min().unwrap();
        eprintln!("failed login: direct {direct:?}, through the proxy {proxied:?}");
        assert!(min_direct >= UPSTREAM_AUTH_DELAY, "direct {direct:?}");
        assert!(
            min_proxied >= UPSTREAM_AUTH_DELAY,
            "the proxy answered a failed login in {min_proxied:?}, faster than the upstream's {UPSTREAM_AUTH_DELAY:?}"
        );
    })
    .await;
}
