//! The real-peer harness proves itself against Dovecot: each of the five real clients downloads a maildrop of
//! varied fixtures byte-identically (modulo CRLF), plaintext and over TLS, keeping or deleting; plus checks of the
//! fixtures and comparison helpers themselves. Every interop test in the project builds on these helpers.

use std::time::Instant;

use popguard_test_support as support;
use support::dovecot::DovecotOptions;
use support::fixtures;
use support::{
    Client, Dovecot, Opts, Tls, assert_same_messages, require_peer, same_message, with_timeout,
};

/// Messages in each download test's maildrop (the issue asks for at least 100).
const MAILDROP_SIZE: usize = 120;
/// Bound for one download test (Dovecot start, one client run, checks).
const TEST_TIMEOUT_SECS: u64 = 180;

const USER: &str = "alice";
const PASS: &str = "alicepw";

/// One client downloads `MAILDROP_SIZE` fixtures from a fresh Dovecot over `tls`; the result must equal the
/// fixtures, and afterwards the maildrop must be untouched (`keep`) or empty.
async fn download(client: Client, tls: Tls, keep: bool) {
    if !require_peer("dovecot") || !require_peer(client.name()) {
        return;
    }
    let label = format!("{} tls={tls:?} keep={keep}", client.name());
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let msgs = fixtures::mailbox(MAILDROP_SIZE);
        dv.deliver(USER, &msgs);
        let addr = if tls == Tls::Implicit {
            dv.tls_addr()
        } else {
            dv.addr()
        };
        let opts = Opts {
            keep,
            tls,
            ca_file: Some(dv.ca_file().to_path_buf()),
            ..Opts::default()
        };
        assert!(
            client.supports(&opts),
            "{label}: not supported by the client"
        );

        let t0 = Instant::now();
        let got = client
            .fetch(addr, USER, PASS, &opts)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        eprintln!("{label}: {} messages in {:?}", got.len(), t0.elapsed());
        assert_same_messages(&label, &got, &msgs);

        let left = dv.maildrop(USER);
        if keep {
            assert!(
                left == msgs,
                "{label}: keep mode changed the maildrop ({} messages left)",
                left.len()
            );
        } else {
            assert!(
                left.is_empty(),
                "{label}: {} of {} messages left after delete",
                left.len(),
                msgs.len()
            );
        }
    })
    .await;
}

/// `new_only` remembers what was fetched: a second run gets nothing, and after more mail arrives exactly the new
/// messages come, while everything stays on the server (keep).
async fn new_only(client: Client) {
    if !require_peer("dovecot") || !require_peer(client.name()) {
        return;
    }
    let label = format!("{} new_only", client.name());
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let opts = Opts {
            keep: true,
            new_only: true,
            state_dir: Some(state.path().to_path_buf()),
            ..Opts::default()
        };
        let msgs = fixtures::mailbox(30);
        let (first, later) = msgs.split_at(20);
        dv.deliver(USER, first);

        let addr = dv.addr();
        let run = |round: &'static str| {
            let (opts, label) = (opts.clone(), format!("{label} ({round})"));
            async move {
                client
                    .fetch(addr, USER, PASS, &opts)
                    .await
                    .unwrap_or_else(|e| panic!("{label}: {e}"))
            }
        };
        assert_same_messages(
            &format!("{label} first run"),
            &run("first run").await,
            first,
        );
        assert_same_messages(
            &format!("{label} second run"),
            &run("second run").await,
            &[],
        );
        dv.deliver(USER, later);
        assert_same_messages(
            &format!("{label} after new mail"),
            &run("after new mail").await,
            later,
        );
        assert!(
            dv.maildrop(USER) == msgs,
            "{label}: keep mode changed the maildrop"
        );
    })
    .await;
}

macro_rules! download_tests {
    ($($name:ident: $client:ident, $tls:ident, $keep:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                download(Client::$client, Tls::$tls, $keep).await;
            }
        )*
    };
}

download_tests! {
    fetchmail_plain_keep: Fetchmail, None, true;
    fetchmail_plain_delete: Fetchmail, None, false;
    fetchmail_stls_delete: Fetchmail, Stls, false;
    fetchmail_implicit_keep: Fetchmail, Implicit, true;
    getmail_plain_keep: Getmail, None, true;
    getmail_plain_delete: Getmail, None, false;
    getmail_implicit_delete: Getmail, Implicit, false;
    mpop_plain_keep: Mpop, None, true;
    mpop_plain_delete: Mpop, None, false;
    mpop_stls_delete: Mpop, Stls, false;
    mpop_implicit_keep: Mpop, Implicit, true;
    curl_plain_keep: Curl, None, true;
    curl_plain_delete: Curl, None, false;
    curl_stls_delete: Curl, Stls, false;
    curl_implicit_keep: Curl, Implicit, true;
    poplib_plain_keep: Poplib, None, true;
    poplib_plain_delete: Poplib, None, false;
    poplib_stls_delete: Poplib, Stls, false;
    poplib_implicit_keep: Poplib, Implicit, true;
}

#[tokio::test]
async fn fetchmail_new_only() {
    new_only(Client::Fetchmail).await;
}

#[tokio::test]
async fn getmail_new_only() {
    new_only(Client::Getmail).await;
}

#[tokio::test]
async fn mpop_new_only() {
    new_only(Client::Mpop).await;
}

#[tokio::test]
async fn poplib_new_only() {
    new_only(Client::Poplib).await;
}

#[tokio::test]
async fn getmail_has_no_stls_and_curl_no_uidl_memory() {
    let stls = Opts {
        tls: Tls::Stls,
        ..Opts::default()
    };
    let new_only = Opts {
        new_only: true,
        ..Opts::default()
    };
    assert!(!Client::Getmail.supports(&stls));
    assert!(!Client::Curl.supports(&new_only));
    assert!(Client::ALL.iter().all(|c| c.supports(&Opts::default())));
    // An unsupported request fails before anything is started.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let err = with_timeout(10, support::getmail(addr, USER, PASS, &stls))
        .await
        .expect_err("getmail with STLS");
    assert!(err.to_string().contains("not supported"), "{err}");
}

/// Dovecot's own contract: deliveries appear in order with stable UIDLs, TLS listens, and the instance (processes
/// and directory) is gone after drop. Prints the startup time.
#[test]
fn dovecot_starts_serves_and_cleans_up() {
    if !require_peer("dovecot") {
        return;
    }
    let t0 = Instant::now();
    let dv = Dovecot::start(&[(USER, PASS), ("bob", "bobpw")]);
    eprintln!(
        "dovecot startup (incl. CA, warm-up login): {:?}",
        t0.elapsed()
    );
    assert!(support::wait_for_port(
        dv.tls_addr(),
        std::time::Duration::from_secs(5)
    ));

    let msgs = fixtures::mailbox(12);
    dv.deliver(USER, &msgs[..6]);
    dv.deliver(USER, &msgs[6..]);
    assert!(
        dv.maildrop(USER) == msgs,
        "maildrop differs from what was delivered"
    );
    assert!(dv.maildrop("bob").is_empty());
    let uidls = dv.uidls(USER);
    assert_eq!(uidls.len(), msgs.len());
    assert_eq!(dv.uidls(USER), uidls, "UIDLs changed between sessions");
    // Dovecot moved the files to cur/; order and bytes are unchanged.
    assert!(
        dv.maildrop(USER) == msgs,
        "maildrop changed after a UIDL session"
    );

    let dir = dv.dir().to_path_buf();
    let addr = dv.addr();
    let group = dv.pid();
    assert!(
        processes_in_group(group) >= 3,
        "Dovecot's processes should share its process group"
    );
    let t1 = Instant::now();
    drop(dv);
    eprintln!("dovecot stop: {:?}", t1.elapsed());
    assert!(!dir.exists(), "{} left behind", dir.display());
    // SIGKILL is delivered asynchronously: the children (not ours to reap) may take a moment to go.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while processes_in_group(group) > 0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        processes_in_group(group),
        0,
        "Dovecot processes left running"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "Dovecot still listens on {addr}"
    );
}

/// Live (non-zombie) processes whose process group is `pgid`, from /proc.
fn processes_in_group(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the parenthesised command name: state, ppid, pgrp, ...
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .count()
}

#[test]
fn fixtures_cover_the_awkward_cases() {
    let msgs = fixtures::mailbox(MAILDROP_SIZE);
    let lines = |m: &Vec<u8>| -> Vec<Vec<u8>> {
        m.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect()
    };
    let any_line =
        |pred: &dyn Fn(&[u8]) -> bool| msgs.iter().any(|m| lines(m).iter().any(|l| pred(l)));
    assert!(
        any_line(&|l| l.len() > 1 && l[0] == b'.'),
        "a line starting with '.'"
    );
    assert!(any_line(&|l| l == b"."), "a line that is just '.'");
    assert!(any_line(&|l| l.len() > 1000), "a line over 1000 octets");
    assert!(any_line(&|l| l.starts_with(b"From ")), "a 'From ' line");
    assert!(
        msgs.iter().any(|m| std::str::from_utf8(m).is_err()),
        "invalid UTF-8"
    );
    assert!(
        msgs.iter()
            .any(|m| m.windows(2).any(|w| w == "ü".as_bytes())),
        "UTF-8 text"
    );
    assert!(
        msgs.iter().any(|m| !m.windows(2).any(|w| w == b"\r\n")),
        "an LF-only message"
    );
    assert!(
        msgs.iter().any(|m| m.windows(2).any(|w| w == b"\r\n")),
        "a CRLF message"
    );
    assert!(
        msgs.iter()
            .any(|m| contains(m, b"Content-Transfer-Encoding: base64")),
        "a base64 part"
    );
    assert!(
        msgs.iter().any(|m| contains(m, b"Subject: =?UTF-8?B?")),
        "an RFC 2047 subject"
    );
    assert!(
        msgs.iter()
            .any(|m| m.ends_with(b"\r\n\r\n") || m.ends_with(b"\n\n")),
        "an empty body"
    );
    assert!(msgs.iter().any(|m| !m.ends_with(b"\n")), "no final newline");
    for (i, m) in msgs.iter().enumerate() {
        assert!(!m.contains(&0), "message {i} contains NUL");
        assert!(
            !m.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
            "message {i} has a bare CR"
        );
        assert!(
            !contains(m, b"Return-Path:"),
            "message {i} has Return-Path (getmail replaces it)"
        );
        assert!(
            lines(m).iter().all(|l| l.len() <= fixtures::MAX_LINE),
            "message {i} has a line over MAX_LINE"
        );
        assert!(contains(
            m,
            format!("Message-ID: <fixture-{i}@popguard.test>").as_bytes()
        ));
    }
    assert_eq!(
        fixtures::mailbox(5),
        fixtures::mailbox(5),
        "fixtures are deterministic"
    );
}

/// getmail refolds header lines over 78 octets and rewrites the space after the colon (Python's `email`), so the
/// fixtures every client must preserve keep their headers tidy.
#[test]
fn fixture_headers_are_tidy() {
    let all = [
        fixtures::mailbox(MAILDROP_SIZE),
        fixtures::spam(12),
        fixtures::ham(12),
    ]
    .concat();
    for m in &all {
        let subject = support::compare::subject_of(m);
        for field in support::header_fields(m) {
            for line in field.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(
                    line.len() <= fixtures::MAX_HEADER_LINE,
                    "{subject}: header line too long: {}",
                    line.escape_ascii()
                );
            }
            let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
            assert!(
                colon > 0 && field.get(colon + 1) == Some(&b' '),
                "{subject}: untidy field {}",
                field.escape_ascii()
            );
        }
    }
    let odd = fixtures::odd_headers(2);
    assert!(
        odd.iter()
            .all(|m| support::header_fields(m).iter().any(|f| f.len() > 1000))
    );
}

#[test]
fn header_helpers_split_unfold_and_strip() {
    let m = b"Subject: hello\r\n world\r\nX-Spam-Status: Yes,\r\n\ttests=A\r\nx-spam-flag: YES\r\nTo: b\r\n\r\nX-Spam-Body: kept\r\n";
    assert_eq!(support::header_fields(m).len(), 4);
    assert_eq!(
        support::header_value(m, "subject").as_deref(),
        Some("hello world")
    );
    assert_eq!(
        support::header_value(m, "X-Spam-Status").as_deref(),
        Some("Yes,\ttests=A")
    );
    assert_eq!(support::header_value(m, "Cc"), None);
    assert_eq!(
        support::without_fields(m, &["X-Spam-"]),
        b"Subject: hello\r\n world\r\nTo: b\r\n\r\nX-Spam-Body: kept\r\n".to_vec()
    );
}

/// Untidy headers survive the four clients that do not re-serialise messages.
#[tokio::test]
async fn odd_headers_survive_byte_preserving_clients() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_TIMEOUT_SECS, async {
        let dv = Dovecot::start(&[(USER, PASS)]);
        let msgs = fixtures::odd_headers(6);
        dv.deliver(USER, &msgs);
        for client in [
            Client::Fetchmail,
            Client::Mpop,
            Client::Curl,
            Client::Poplib,
        ] {
            if !require_peer(client.name()) {
                continue;
            }
            let opts = Opts {
                keep: true,
                ..Opts::default()
            };
            let got = client
                .fetch(dv.addr(), USER, PASS, &opts)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_same_messages(&format!("{} odd headers", client.name()), &got, &msgs);
        }
    })
    .await;
}

#[test]
fn spam_and_ham_fixtures_look_the_part() {
    let markers: &[&[u8]] = &[
        b"Viagra",
        b"VIAGRA",
        b"100% FREE",
        b"Click here",
        b"$$$",
        b"unsubscribe",
        b"http://198.51.100.",
    ];
    let spam = fixtures::spam(12);
    for marker in markers {
        assert!(
            spam.iter().any(|m| contains(m, marker)),
            "no spam contains {}",
            marker.escape_ascii()
        );
    }
    for (i, m) in spam.iter().enumerate() {
        let hits = markers.iter().filter(|mk| contains(m, mk)).count();
        assert!(hits >= 2, "spam {i} has only {hits} classic markers");
    }
    let ham = fixtures::ham(12);
    for (i, m) in ham.iter().enumerate() {
        for marker in markers {
            assert!(
                !contains(m, marker),
                "ham {i} contains spam marker {}",
                marker.escape_ascii()
            );
        }
        assert!(!contains(m, b"!!!"), "ham {i} shouts");
    }
}

#[test]
fn same_message_ignores_only_line_ends() {
    assert!(same_message(b"A: b\r\n\r\nbody\r\n", b"A: b\n\nbody\n"));
    assert!(same_message(
        b"A: b\n\nno final newline",
        b"A: b\r\n\r\nno final newline\r\n"
    ));
    assert!(!same_message(b"A: b\n\nbody\n", b"A: b\n\nbody!\n"));
    assert!(
        !same_message(b"A: b\n\n.\n", b"A: b\n\n..\n"),
        "dot-stuffing must not be forgiven"
    );
    assert!(
        !same_message(b"A: b\n\nx\n", b"A: b\n\nx\n\n"),
        "an extra blank line is a difference"
    );
    let diff = support::compare::first_difference(
        b"A: b\n\nline one\nline two\n",
        b"A: b\n\nline one\nline 2\n",
    );
    assert!(
        diff.as_deref()
            .is_some_and(|d| d.contains("line 4") && d.contains("line two")),
        "{diff:?}"
    );
    let outcome = std::panic::catch_unwind(|| {
        assert_same_messages("t", &[b"x\n".to_vec()], &[b"x\n".to_vec(), b"y\n".to_vec()]);
    });
    assert!(outcome.is_err(), "a missing message must fail");
}

#[test]
fn require_peer_fails_in_ci_and_skips_elsewhere() {
    assert!(support::peer_missing("surely-not-an-installed-peer").is_some());
    let outcome = std::panic::catch_unwind(|| require_peer("surely-not-an-installed-peer"));
    if support::in_ci() {
        assert!(outcome.is_err(), "a missing peer must fail the test in CI");
    } else {
        assert!(
            matches!(outcome, Ok(false)),
            "a missing peer must be skipped outside CI"
        );
    }
    assert!(require_peer("sh"), "sh is always there");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `stls: false` removes STLS from the plain port's CAPA (implicit TLS still works); high-performance mode starts
/// and serves.
#[tokio::test]
async fn dovecot_options_stls_off_and_high_performance() {
    if !require_peer("dovecot") || !require_peer("poplib") {
        return;
    }
    with_timeout(TEST_TIMEOUT_SECS, async {
        let stock = Dovecot::start(&[(USER, PASS)]);
        assert!(capa(stock.addr()).contains(&"STLS".to_string()));
        let options = DovecotOptions {
            stls: false,
            high_performance: true,
        };
        let dv = Dovecot::start_with(&[(USER, PASS)], &options);
        let caps = capa(dv.addr());
        assert!(
            caps.contains(&"USER".to_string()) && !caps.contains(&"STLS".to_string()),
            "{caps:?}"
        );
        let msgs = fixtures::mailbox(5);
        dv.deliver(USER, &msgs);
        let tls = Opts {
            keep: true,
            tls: Tls::Implicit,
            ca_file: Some(dv.ca_file().to_path_buf()),
            ..Opts::default()
        };
        let got = Client::Poplib
            .fetch(dv.tls_addr(), USER, PASS, &tls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_same_messages("poplib implicit, no-STLS instance", &got, &msgs);
    })
    .await;
}

/// The CAPA list of the POP3 server at `addr` (blocking; a short raw session).
fn capa(addr: std::net::SocketAddr) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("greeting: {e}"));
    writer
        .write_all(b"CAPA\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if l == "." {
            break;
        }
        if !l.starts_with("+OK") {
            lines.push(l.to_string());
        }
    }
    let _ = writer.write_all(b"QUIT\r\n");
    lines
}
