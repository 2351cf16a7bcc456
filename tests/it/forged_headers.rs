//! Forged spam fields through the proxy in front of a real Dovecot: a spam that carries its own `X-Spam-Flag: NO` and
//! `X-Spam-Status: No, score=-10.0` (folded, one name in odd case) and an `X-Popguard-*` field arrives with only the
//! proxy's `X-Spam-*` fields; the sender's are renamed to `X-Prev-*` at the same length (`proxy::tag::forged`), so
//! every LIST size still equals the bytes RETR sends, and TOP shows the header RETR shows. In tag mode with exact
//! and with fixed tag sizing, and in hide mode for a spam released from the quarantine.
//!
//! Scoring is the fixed scorer (spam = contains `SPAM-ME`), so these tests check the relay, not rule tuning.

use std::net::SocketAddr;

use popguard::proxy::tag::FIXED_TAG_SIZE;
use popguard::store::quarantine::Quarantine;
use popguard::store::verdicts::VerdictStore;
use popguard_test_support as support;
use support::raw::{self, RawSession};
use support::{Dovecot, ProxyBuilder, header_fields, header_value, require_peer, with_timeout};

const USER: &str = "alice";
const PASS: &str = "alicepw";
/// Bound for one test: Dovecot start, two or three short sessions.
const TEST_SECS: u64 = 60;
/// Largest body a test session reads.
const MAX_BODY: usize = 1 << 20;

/// A spam forging a clean bill (LF line ends in the maildir file: Dovecot sends CRLF).
const SPAM: &str = "Return-Path: <deals@example.biz>\n\
    X-Spam-Flag: NO\n\
    x-SPAM-status: No, score=-10.0 required=5.0\n\
    \ttests=ALL_TRUSTED,\n\
    \tBAYES_00\n\
    X-Spam-Level:\n\
    X-Popguard-Verdict: ham\n\
    From: Deals <deals@example.biz>\n\
    To: alice@example.org\n\
    Subject: cheap pills\n\
    Message-ID: <forged-1@example.biz>\n\
    \n\
    SPAM-ME: buy now.\n\
    X-Spam-Flag: NO (a body line, left alone)\n";

/// A ham forging a spam verdict (CRLF in the maildir file).
const HAM: &str = "From: Bob <bob@example.org>\r\n\
    To: alice@example.org\r\n\
    X-Spam-Flag: YES\r\n\
    X-Spam-Status: Yes, score=99.0\r\n\
    Subject: lunch\r\n\
    Message-ID: <ham-1@example.org>\r\n\
    \r\n\
    Noon?\r\n";

async fn login(addr: SocketAddr) -> RawSession {
    let mut s = raw::connect(addr).await;
    assert!(raw::command(&mut s, &format!("USER {USER}")).await.is_ok());
    let r = raw::command(&mut s, &format!("PASS {PASS}")).await;
    assert!(r.is_ok(), "login: {r}");
    s
}

/// A multi-line command's body.
async fn multi(s: &mut RawSession, line: &str) -> Vec<u8> {
    let r = raw::command(s, line).await;
    assert!(r.is_ok(), "{line}: {r}");
    s.read_multiline(MAX_BODY).await.unwrap()
}

/// One session: every message as (LIST size, RETR bytes, TOP 0 bytes), with STAT checked against them.
async fn fetch_all(addr: SocketAddr, label: &str) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
    let mut s = login(addr).await;
    let list = multi(&mut s, "LIST").await;
    let mut out = Vec::new();
    for line in String::from_utf8(list).unwrap().lines() {
        let (n, size) = line.split_once(' ').unwrap();
        let retr = multi(&mut s, &format!("RETR {n}")).await;
        let top = multi(&mut s, &format!("TOP {n} 0")).await;
        out.push((size.parse().unwrap(), retr, top));
    }
    let total: usize = out.iter().map(|(size, ..)| size).sum();
    let stat = raw::command(&mut s, "STAT").await;
    assert_eq!(stat.text, format!("{} {total}", out.len()), "{label}: STAT");
    assert!(raw::command(&mut s, "QUIT").await.is_ok());
    out
}

/// The names of the fields whose name starts with `prefix` (case-insensitive), in order.
fn names_starting(msg: &[u8], prefix: &str) -> Vec<String> {
    header_fields(msg)
        .into_iter()
        .filter(|f| {
            f.len() >= prefix.len() && f[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
        .map(|f| {
            String::from_utf8_lossy(&f[..f.iter().position(|&b| b == b':').unwrap()]).into_owned()
        })
        .collect()
}

/// Checks one delivered message against Dovecot's copy `orig`: the LIST size is the RETR size, TOP 0 is RETR's
/// header, the only `X-Spam-*` fields are the proxy's (`own`, in order, at the top), no `X-Popguard-*` field is
/// left, the sender's are there renamed, and nothing else changed but the Subject prefix (the body not at all).
fn check(label: &str, (listed, retr, top): &(usize, Vec<u8>, Vec<u8>), orig: &[u8], own: &[&str]) {
    let t = String::from_utf8_lossy(retr);
    assert_eq!(
        retr.len(),
        *listed,
        "{label}: LIST size is the RETR size\n{t}"
    );
    let header_len = t.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(top, &retr[..header_len], "{label}: TOP 0 is RETR's header");
    assert_eq!(
        names_starting(retr, "X-Spam-"),
        own,
        "{label}: only the proxy's fields\n{t}"
    );
    let fields = header_fields(retr);
    for (i, name) in own.iter().enumerate() {
        assert!(
            fields[i].starts_with(format!("{name}:").as_bytes()),
            "{label}: ours on top\n{t}"
        );
    }
    assert_eq!(
        names_starting(retr, "X-Popguard-"),
        Vec::<String>::new(),
        "{label}\n{t}"
    );
    let renamed = names_starting(orig, "X-Spam-").len() + names_starting(orig, "X-Popguard-").len();
    assert_eq!(
        names_starting(retr, "X-Prev-").len(),
        renamed,
        "{label}: renamed, not removed\n{t}"
    );
    let rest = |m: &[u8]| support::without_fields(m, &["X-Spam-", "X-Popguard-", "X-Prev-"]);
    let got = String::from_utf8(rest(retr))
        .unwrap()
        .replacen("Subject: [SPAM] ", "Subject: ", 1);
    assert_eq!(got.as_bytes(), rest(orig), "{label}: nothing else changed");
}

/// Dovecot with the two messages (spam first); the proxy scores with the fixed scorer.
fn dovecot() -> Dovecot {
    let dv = Dovecot::start(&[(USER, PASS)]);
    dv.deliver(USER, &[SPAM.as_bytes().to_vec(), HAM.as_bytes().to_vec()]);
    dv
}

/// Dovecot's own copies of its first `n` messages, as it sends them (CRLF).
async fn originals(dv: &Dovecot, n: usize) -> Vec<Vec<u8>> {
    let mut s = login(dv.addr()).await;
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(multi(&mut s, &format!("RETR {i}")).await);
    }
    assert!(raw::command(&mut s, "QUIT").await.is_ok());
    out
}

const SPAM_OWN: [&str; 3] = ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"];
const HAM_OWN: [&str; 1] = ["X-Spam-Status"];

#[tokio::test]
async fn tag_mode_delivers_only_the_proxys_fields_with_exact_and_fixed_sizes() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = dovecot();
        let orig = originals(&dv, 2).await;
        for sizing in ["exact", "fixed"] {
            let px = ProxyBuilder::new(dv.addr())
                .action("tag")
                .config(&format!("tag_sizing = \"{sizing}\"\n"))
                .fixed_scorer()
                .start()
                .await;
            let got = fetch_all(px.addr, sizing).await;
            assert_eq!(got.len(), 2, "{sizing}: both delivered");
            check(&format!("{sizing} spam"), &got[0], &orig[0], &SPAM_OWN);
            check(&format!("{sizing} ham"), &got[1], &orig[1], &HAM_OWN);
            let spam = &got[0].1;
            assert_eq!(header_value(spam, "X-Spam-Flag").as_deref(), Some("YES"));
            assert_eq!(header_value(spam, "X-Prev-Flag").as_deref(), Some("NO"));
            assert!(
                header_value(spam, "X-Prev-status")
                    .unwrap()
                    .starts_with("No, score=-10.0")
            );
            assert_eq!(
                header_value(spam, "X-Prev-Pgd-Verdict").as_deref(),
                Some("ham")
            );
            assert_eq!(
                header_value(spam, "Subject").as_deref(),
                Some("[SPAM] cheap pills")
            );
            let ham = &got[1].1;
            assert!(
                header_value(ham, "X-Spam-Flag").is_none(),
                "the forged YES is gone"
            );
            assert_eq!(header_value(ham, "X-Prev-Flag").as_deref(), Some("YES"));
            if sizing == "fixed" {
                for (g, o) in got.iter().zip(&orig) {
                    assert_eq!(
                        g.1.len(),
                        o.len() + FIXED_TAG_SIZE,
                        "fixed: grows by the fixed size"
                    );
                }
            }
            // A second session serves the cached verdicts: the same bytes.
            let again = fetch_all(px.addr, sizing).await;
            assert_eq!(again, got, "{sizing}: second session");
        }
    })
    .await
}

#[tokio::test]
async fn released_spam_in_hide_mode_has_only_the_proxys_fields() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = dovecot();
        let orig = originals(&dv, 2).await;
        let px = ProxyBuilder::new(dv.addr())
            .action("hide")
            .fixed_scorer()
            .start()
            .await;
        let first = fetch_all(px.addr, "hide").await;
        assert_eq!(first.len(), 1, "the spam is hidden");
        check("hide ham", &first[0], &orig[1], &HAM_OWN);

        let uidl = dv.uidls(USER).into_iter().next().unwrap();
        let q = Quarantine::open(px.data_dir(), USER);
        assert!(
            q.release(&uidl).unwrap().is_some(),
            "the spam was quarantined"
        );
        VerdictStore::release(px.data_dir(), USER, &uidl).unwrap();

        let second = fetch_all(px.addr, "released").await;
        assert_eq!(second.len(), 2, "the released spam is shown");
        check("released spam", &second[0], &orig[0], &HAM_OWN);
        let spam = &second[0].1;
        let status = header_value(spam, "X-Spam-Status").unwrap();
        assert!(
            status.starts_with("No, score=10.0") && status.contains("USER_RELEASED"),
            "{status}"
        );
        assert_eq!(header_value(spam, "X-Prev-Flag").as_deref(), Some("NO"));
        assert_eq!(
            header_value(spam, "Subject").as_deref(),
            Some("cheap pills")
        );
        check("hide ham again", &second[1], &orig[1], &HAM_OWN);
    })
    .await
}

#[tokio::test]
async fn forged_fields_past_the_buffered_head_are_renamed_as_they_stream() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        // A header well past `tag::MAX_TAG_HEADER` (64 KiB): the forged fields after it reach the client through
        // the streamed part of RETR, in whatever chunks TCP gives. The Subject, with the fixed scorer's spam
        // marker, comes first: inside the buffered head, it gets the prefix.
        let mut long = String::from("Subject: SPAM-ME late\r\n");
        for i in 0..3000 {
            long.push_str(&format!(
                "Received: from hop{i}.example.net by relay.example.net; {i}\r\n"
            ));
        }
        let msg = format!(
            "{long}X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-10.0\r\n\ttests=ALL_TRUSTED\r\n\
             To: alice@example.org\r\n\r\nbody\r\n"
        );
        assert!(msg.len() > 2 * popguard::proxy::tag::MAX_TAG_HEADER);
        let dv = Dovecot::start(&[(USER, PASS)]);
        dv.deliver(USER, &[msg.into_bytes()]);
        let orig = originals(&dv, 1).await;
        for sizing in ["exact", "fixed"] {
            let px = ProxyBuilder::new(dv.addr())
                .action("tag")
                .config(&format!("tag_sizing = \"{sizing}\"\n"))
                .fixed_scorer()
                .start()
                .await;
            let got = fetch_all(px.addr, sizing).await;
            check(
                &format!("{sizing} long header"),
                &got[0],
                &orig[0],
                &SPAM_OWN,
            );
            assert_eq!(
                header_value(&got[0].1, "X-Prev-Flag").as_deref(),
                Some("NO")
            );
        }
    })
    .await
}
