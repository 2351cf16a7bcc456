//! `popguard client` against a real Dovecot (tests/support): `fetch` downloads a maildrop of more than 100 varied
//! messages byte-identically (modulo CRLF) over plaintext, implicit TLS and STLS with the test CA; refuses an
//! unverifiable certificate clearly; `--delete` empties the maildrop; `--new-only` fetches nothing the second time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use popguard_test_support as support;
use support::compare::normalize;
use support::fixtures;
use support::{Dovecot, assert_same_messages, require_peer, with_timeout};

use popguard::client::{AuthMethod, Client, ConnectOptions, Eol, Security};
use popguard::secret::Secret;
use popguard::tls::TlsMode;

/// Messages in each maildrop (the issue asks for at least 100).
const MAILDROP_SIZE: usize = 120;
/// Bound for one test: Dovecot start, a few client runs, checks.
const TEST_TIMEOUT_SECS: u64 = 180;
/// Bound for one run of the binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const USER: &str = "alice";
const PASS: &str = "alicepw";

struct Run {
    ok: bool,
    stderr: String,
}

/// Runs `popguard client --server ADDR --user alice ARGS...` with the password in the environment.
async fn client(server: std::net::SocketAddr, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_popguard"));
    cmd.args(["client", "--server", &server.to_string(), "--user", USER])
        .args(args)
        .env("POPGUARD_PASSWORD", PASS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("popguard client did not finish in time")
        .expect("cannot run popguard");
    Run {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The Q field of a maildir name made by `popguard client` counts deliveries within one run: it gives the order.
fn delivery_number(name: &str) -> u64 {
    name.split('.')
        .nth(1)
        .and_then(|f| f.split_once('Q'))
        .and_then(|(_, q)| q.parse().ok())
        .unwrap_or_else(|| panic!("unexpected maildir file name {name:?}"))
}

/// The messages in `maildir/new`, in the order they were fetched; checks tmp/ is empty.
fn fetched(maildir: &Path) -> Vec<Vec<u8>> {
    let tmp: Vec<_> = std::fs::read_dir(maildir.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "tmp/ must be empty after a fetch: {tmp:?}");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (delivery_number(&e.file_name().to_string_lossy()), e.path())
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect()
}

/// Byte-identical modulo CRLF, in order, and more strictly: each file is exactly the source with LF line ends.
fn assert_fetched(label: &str, maildir: &Path, want: &[Vec<u8>]) {
    let got = fetched(maildir);
    assert_same_messages(label, &got, want);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            *g == normalize(w),
            "{label}: message {} is not exactly its source with LF line ends",
            i + 1
        );
    }
}

fn start() -> Option<(Dovecot, Vec<Vec<u8>>)> {
    if !require_peer("dovecot") {
        return None;
    }
    let dv = Dovecot::start(&[(USER, PASS)]);
    let msgs = fixtures::mailbox(MAILDROP_SIZE);
    dv.deliver(USER, &msgs);
    Some((dv, msgs))
}

#[tokio::test]
async fn fetch_over_plaintext_is_byte_identical_and_keeps_the_maildrop() {
    let Some((dv, msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let run = client(
            dv.addr(),
            &["--tls", "none", "fetch", "--to", md.to_str().unwrap()],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "fetched {MAILDROP_SIZE} of {MAILDROP_SIZE} messages"
            )),
            "{}",
            run.stderr
        );
        assert_fetched("plaintext", &md, &msgs);
        assert_eq!(
            dv.maildrop(USER).len(),
            MAILDROP_SIZE,
            "without --delete the maildrop stays"
        );
    })
    .await
}

#[tokio::test]
async fn fetch_over_implicit_tls_with_the_test_ca() {
    let Some((dv, msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let ca = dv.ca_file().to_str().unwrap().to_owned();
        let run = client(
            dv.tls_addr(),
            &[
                "--tls",
                "implicit",
                "--ca-file",
                &ca,
                "fetch",
                "--to",
                md.to_str().unwrap(),
            ],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
        assert_fetched("implicit TLS", &md, &msgs);
    })
    .await
}

#[tokio::test]
async fn fetch_over_stls_with_the_test_ca_and_delete_empties_the_maildrop() {
    let Some((dv, msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let ca = dv.ca_file().to_str().unwrap().to_owned();
        let args = [
            "--tls",
            "starttls",
            "--ca-file",
            &ca,
            "fetch",
            "--delete",
            "--to",
            md.to_str().unwrap(),
        ];
        let run = client(dv.addr(), &args).await;
        assert!(run.ok, "{}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("deleted {MAILDROP_SIZE} from the server")),
            "{}",
            run.stderr
        );
        assert_fetched("STLS", &md, &msgs);
        assert!(
            dv.maildrop(USER).is_empty(),
            "--delete must empty the maildrop"
        );
    })
    .await
}

#[tokio::test]
async fn tls_without_the_ca_fails_clearly_and_writes_nothing() {
    let Some((dv, _msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let md_arg = md.to_str().unwrap();
        // Implicit TLS, STLS, and the default (Dovecot offers STLS, so it is used even on loopback).
        for (addr, tls) in [
            (dv.tls_addr(), Some("implicit")),
            (dv.addr(), Some("starttls")),
            (dv.addr(), None),
        ] {
            let mut args = vec![];
            if let Some(t) = tls {
                args.extend(["--tls", t]);
            }
            args.extend(["fetch", "--delete", "--to", md_arg]);
            let run = client(addr, &args).await;
            assert!(!run.ok, "{tls:?}: an unknown CA must be refused");
            assert!(
                run.stderr.contains("TLS verification of 127.0.0.1 failed")
                    && run.stderr.contains("--ca-file"),
                "{tls:?}: {}",
                run.stderr
            );
        }
        assert!(
            !md.exists() || fetched(&md).is_empty(),
            "nothing may be written"
        );
        assert_eq!(
            dv.maildrop(USER).len(),
            MAILDROP_SIZE,
            "nothing may be deleted"
        );
    })
    .await
}

#[tokio::test]
async fn new_only_fetches_nothing_the_second_time() {
    let Some((dv, msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let ca = dv.ca_file().to_str().unwrap().to_owned();
        let args = [
            "--ca-file",
            &ca,
            "fetch",
            "--new-only",
            "--to",
            md.to_str().unwrap(),
        ];
        let first = client(dv.addr(), &args).await;
        assert!(first.ok, "{}", first.stderr);
        assert_fetched("new-only, first run", &md, &msgs);

        let second = client(dv.addr(), &args).await;
        assert!(second.ok, "{}", second.stderr);
        assert!(
            second
                .stderr
                .contains(&format!("fetched 0 of {MAILDROP_SIZE} messages"))
                && second
                    .stderr
                    .contains(&format!("skipped {MAILDROP_SIZE} seen before")),
            "{}",
            second.stderr
        );
        assert_eq!(fetched(&md).len(), MAILDROP_SIZE);

        // Only what arrived since is fetched by the third run.
        let more = fixtures::mailbox(MAILDROP_SIZE + 3).split_off(MAILDROP_SIZE);
        dv.deliver(USER, &more);
        let third = client(dv.addr(), &args).await;
        assert!(third.ok, "{}", third.stderr);
        assert!(
            third
                .stderr
                .contains(&format!("fetched 3 of {} messages", MAILDROP_SIZE + 3)),
            "{}",
            third.stderr
        );
        assert_eq!(fetched(&md).len(), MAILDROP_SIZE + 3);
    })
    .await
}

#[tokio::test]
async fn library_commands_agree_with_dovecot() {
    let Some((dv, msgs)) = start() else { return };
    with_timeout(TEST_TIMEOUT_SECS, async {
        let mut opts = ConnectOptions::new("127.0.0.1", dv.addr().port());
        opts.ca_file = Some(dv.ca_file().to_path_buf());
        let mut c = Client::connect(&opts).await.unwrap();
        assert_eq!(
            c.security(),
            Security::StartTls,
            "Dovecot offers STLS, so the default uses it"
        );
        assert_eq!(
            c.login(USER, &Secret::new(PASS), AuthMethod::Plain)
                .await
                .unwrap(),
            AuthMethod::Plain
        );

        let (count, total) = c.stat().await.unwrap();
        assert_eq!(count as usize, MAILDROP_SIZE);
        let list = c.list().await.unwrap();
        assert_eq!(list.iter().map(|l| l.1).sum::<u64>(), total);
        let uidl: Vec<String> = c.uidl().await.unwrap().into_iter().map(|u| u.1).collect();
        assert_eq!(uidl, dv.uidls(USER));
        assert_eq!(c.uidl_one(7).await.unwrap(), uidl[6]);

        // RETR into memory (as on the wire) has exactly the LIST size; TOP 0 is the header block.
        for n in [1u32, 2, 12] {
            let m = c.retr(n, 1 << 24).await.unwrap();
            assert_eq!(
                m.len() as u64,
                c.list_one(n).await.unwrap(),
                "LIST size of {n}"
            );
            assert_eq!(normalize(&m), normalize(&msgs[n as usize - 1]));
            let mut top = Vec::new();
            c.top_to(n, 0, &mut top, Eol::Lf).await.unwrap();
            let src = normalize(&msgs[n as usize - 1]);
            let head_end = src.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
            assert_eq!(top, src[..head_end].to_vec(), "TOP {n} 0");
        }
        c.dele(1).await.unwrap();
        assert_eq!(c.stat().await.unwrap().0 as usize, MAILDROP_SIZE - 1);
        c.rset().await.unwrap();
        c.quit().await.unwrap();
        assert_eq!(
            dv.maildrop(USER).len(),
            MAILDROP_SIZE,
            "RSET undid the DELE"
        );

        // Implicit TLS and APOP's absence: Dovecot's greeting has no timestamp, so APOP is refused up front.
        let mut opts = ConnectOptions::new("127.0.0.1", dv.tls_addr().port());
        opts.tls = Some(TlsMode::Implicit);
        opts.ca_file = Some(dv.ca_file().to_path_buf());
        let mut c = Client::connect(&opts).await.unwrap();
        assert_eq!(c.security(), Security::Implicit);
        let err = c
            .login(USER, &Secret::new(PASS), AuthMethod::Apop)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("APOP"), "{err}");
    })
    .await
}
