//! Upstreams that break RFC 1939's listing promises must never cost mail: repeated unique-ids (a real Dovecot told
//! to give every message the same one), invalid unique-ids, and LIST sizes near `u64::MAX` (the scripted upstream).
//! A message whose unique-id is no identity is scored in every session, hidden (and deleted, with
//! `delete_hidden`) only on that session's verdict, and shown to the client under a unique-id the proxy makes up.

use std::collections::HashSet;
use std::sync::Arc;

use popguard::proxy::Proxy;
use popguard::proxy::session::serve_connection;
use popguard::proxy::upstream::Connect;
use popguard_test_support as support;
use support::dovecot::REPEATED_UIDL_FORMAT;
use support::fake::{Behaviour, Client, FAKE_UPSTREAM, Fake, lines, msg};
use support::raw::{self, RawSession};
use support::{Dovecot, DovecotOptions, ProxyBuilder, fixtures, require_peer, with_timeout};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};

/// Bound for one test (Dovecot start and a few short sessions).
const TEST_SECS: u64 = 60;
/// The prefix of the unique-ids the proxy makes up (`proxy::session::plan`).
const MADE_UP: &str = "popguard-";

const USER: &str = "alice";
const PASS: &str = "alicepw";

// ---------------------------------------------------------------- a real Dovecot with repeated UIDLs

/// One proxied session: login, STAT count, the UIDL listing, the Message-IDs of what RETR gives, QUIT.
async fn session(addr: std::net::SocketAddr) -> (usize, Vec<String>, Vec<String>) {
    let mut s = raw::connect(addr).await;
    assert!(raw::command(&mut s, &format!("USER {USER}")).await.is_ok());
    let r = raw::command(&mut s, &format!("PASS {PASS}")).await;
    assert!(r.is_ok(), "PASS: {r}");
    let stat = raw::command(&mut s, "STAT").await;
    assert!(stat.is_ok(), "STAT: {stat}");
    let count: usize = stat.text.split(' ').next().unwrap().parse().unwrap();
    let uids: Vec<String> = multi(&mut s, "UIDL")
        .await
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    let mut ids = Vec::new();
    for n in 1..=count {
        let body = multi(&mut s, &format!("RETR {n}")).await;
        let id = body
            .iter()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or_else(|| panic!("RETR {n}: no Message-ID"));
        ids.push(id.to_owned());
    }
    assert!(raw::command(&mut s, "QUIT").await.is_ok());
    (count, uids, ids)
}

async fn multi(s: &mut RawSession, cmd: &str) -> Vec<String> {
    let r = raw::command(s, cmd).await;
    assert!(r.is_ok(), "{cmd}: {r}");
    lines(&s.read_multiline(1 << 24).await.unwrap())
}

#[tokio::test]
async fn dovecot_repeated_uidls_never_hide_nor_delete_the_ham() {
    if !require_peer("dovecot") {
        return;
    }
    with_timeout(TEST_SECS, async {
        let dv = Dovecot::start_with_uidl_format(
            &[(USER, PASS)],
            &DovecotOptions::default(),
            REPEATED_UIDL_FORMAT,
        );
        let ham = fixtures::ham_message(0);
        let spam = fixtures::spam_message(0);
        dv.deliver(USER, &[ham.clone(), spam]);
        let upstream = dv.uidls(USER);
        assert_eq!(upstream.len(), 2);
        assert_eq!(
            upstream[0], upstream[1],
            "Dovecot repeats the UIDL: {upstream:?}"
        );

        let data = tempfile::tempdir().unwrap();
        let start = || {
            ProxyBuilder::new(dv.addr())
                .data_dir(data.path())
                .action("hide")
                .config("delete_hidden = true")
                .fixed_scorer()
                .start()
        };
        // First session: the spam, scored now, is hidden and deleted at QUIT; the ham is shown under a made-up
        // unique-id.
        let px = start().await;
        let (count, uids, ids) = session(px.addr).await;
        assert_eq!(count, 1);
        assert_eq!(ids, vec!["<ham-0@popguard.test>"]);
        assert_eq!(uids.len(), 1);
        assert!(uids[0].starts_with(MADE_UP), "{uids:?}");
        assert_eq!(
            dv.maildrop(USER),
            vec![ham.clone()],
            "only the spam is gone"
        );
        drop(px);

        // Second session, with new mail under the very same UIDL: the ham is still there and still shown, with
        // the same unique-id; the new spam goes, the new ham stays.
        let ham2 = fixtures::ham_message(1);
        dv.deliver(USER, &[fixtures::spam_message(1), ham2.clone()]);
        let upstream = dv.uidls(USER);
        assert!(upstream.iter().all(|u| *u == upstream[0]), "{upstream:?}");
        let px = start().await;
        let (count, uids2, ids) = session(px.addr).await;
        assert_eq!(count, 2);
        assert_eq!(ids, vec!["<ham-0@popguard.test>", "<ham-1@popguard.test>"]);
        assert_eq!(
            uids2[0], uids[0],
            "a made-up id is kept while the header is"
        );
        assert_ne!(uids2[0], uids2[1]);
        assert!(
            uids2
                .iter()
                .all(|u| u.starts_with(MADE_UP) && *u != upstream[0])
        );
        assert_eq!(dv.maildrop(USER), vec![ham, ham2]);
    })
    .await;
}

// ---------------------------------------------------------------- the scripted upstream

/// A client on an in-memory pipe to a new session of `p`.
async fn connect_to<C: Connect>(p: &Arc<Proxy<C>>) -> Client {
    let (a, b) = duplex(1 << 16);
    tokio::spawn(serve_connection(p.clone(), b, None));
    Client::on(a).await
}

/// The UIDL listing as `(client number, unique-id)`.
async fn uidl(c: &mut Client) -> Vec<(String, String)> {
    let (r, body) = c.multi("UIDL").await;
    assert!(r.is_ok(), "UIDL: {r}");
    lines(&body)
        .iter()
        .map(|l| {
            let (n, u) = l.split_once(' ').unwrap();
            (n.to_owned(), u.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn invalid_uids_get_made_up_ones_and_only_scored_spam_is_deleted() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(71);
        let msgs = vec![
            msg("has space", "Lunch", "Hi\r\n"),
            msg(&long, "SPAM-ME pills", "Buy\r\n"),
            msg("ok-3", "Minutes", "Attached.\r\n"),
        ];
        let fake = Fake::new(msgs, Behaviour::default());
        let p = fake
            .proxy(dir.path(), "hide")
            .config("delete_hidden = true")
            .build();
        let mut seen = Vec::new();
        for round in 0..2 {
            let mut c = support::fake::connect(&p).await;
            c.login().await;
            let u = uidl(&mut c).await;
            assert_eq!(u.len(), 2, "round {round}: {u:?}");
            assert!(u[0].1.starts_with(MADE_UP), "{u:?}");
            assert_eq!(u[1].1, "ok-3");
            let (_, body) = c.multi("RETR 1").await;
            assert!(String::from_utf8_lossy(&body).contains("Subject: Lunch"));
            assert!(c.cmd("QUIT").await.is_ok());
            assert_eq!(fake.uidls(), vec!["has space", "ok-3"], "round {round}");
            seen.push(u[0].1.clone());
        }
        assert_eq!(seen[0], seen[1], "the made-up id is kept across sessions");
    })
    .await;
}

#[tokio::test]
async fn repeated_uids_are_never_cached_and_each_message_keeps_its_own_verdict() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        // A ham and a spam under one UID, then a ham under its own.
        let msgs = vec![
            msg("same", "Lunch", "Hi\r\n"),
            msg("same", "SPAM-ME pills", "Buy\r\n"),
            msg("own", "Minutes", "Attached.\r\n"),
        ];
        let fake = Fake::new(msgs, Behaviour::default());
        let scorer = support::FixedScorer::new();
        let p = fake
            .proxy(dir.path(), "hide")
            .scorer(scorer.clone())
            .build();
        for round in 0..3 {
            let mut c = support::fake::connect(&p).await;
            c.login().await;
            let stat = c.cmd("STAT").await;
            assert!(stat.text.starts_with("2 "), "round {round}: {stat}");
            let u = uidl(&mut c).await;
            let ids: HashSet<&str> = u.iter().map(|(_, u)| u.as_str()).collect();
            assert_eq!(ids.len(), 2, "unique: {u:?}");
            assert!(!ids.contains("same"), "never the repeated UID: {u:?}");
            let (_, body) = c.multi("RETR 1").await;
            assert!(String::from_utf8_lossy(&body).contains("Subject: Lunch"));
            assert!(c.cmd("QUIT").await.is_ok());
        }
        // `own` is scored once and cached; the two without an identity are scored in every session.
        assert_eq!(scorer.calls(), 1 + 2 * 3);
        assert_eq!(
            fake.uidls().len(),
            3,
            "hide mode without delete_hidden deletes nothing"
        );
    })
    .await;
}

/// A connector that passes the scripted upstream through, replacing one exact line of its answers.
#[derive(Clone)]
struct Rewrite {
    inner: Fake,
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Connect for Rewrite {
    type Stream = DuplexStream;
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<DuplexStream> {
        let upstream = self.inner.connect(host, port).await?;
        let (ours, theirs) = duplex(1 << 16);
        let (from, to) = (self.from.clone(), self.to.clone());
        tokio::spawn(async move {
            let (up_r, mut up_w) = tokio::io::split(upstream);
            let (mut proxy_r, mut proxy_w) = tokio::io::split(theirs);
            let down = async move {
                let mut r = BufReader::new(up_r);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let out = if line == from { &to } else { &line };
                    if proxy_w.write_all(out).await.is_err() {
                        break;
                    }
                }
                let _ = proxy_w.shutdown().await;
            };
            let up = async move {
                let _ = tokio::io::copy(&mut proxy_r, &mut up_w).await;
                let _ = up_w.shutdown().await;
            };
            tokio::join!(down, up);
        });
        Ok(ours)
    }
}

#[tokio::test]
async fn an_absurd_list_size_is_refused_and_nothing_changes() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let msgs = support::fake::mixed();
        let size = msgs[1].data.len();
        let fake = Fake::new(msgs, Behaviour::default());
        let rewrite = Rewrite {
            inner: fake.clone(),
            from: format!("2 {size}\r\n").into_bytes(),
            to: format!("2 {}\r\n", u64::MAX - 1).into_bytes(),
        };
        let p = ProxyBuilder::new(FAKE_UPSTREAM)
            .connector(rewrite)
            .data_dir(dir.path())
            .action("hide")
            .config("delete_hidden = true")
            .fixed_scorer()
            .build();
        let mut c = connect_to(&p).await;
        c.login().await;
        for cmd in [
            "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "LAST",
        ] {
            let r = c.cmd(cmd).await;
            assert!(!r.is_ok(), "{cmd}: {r}");
            assert!(
                r.text.contains("message 2") && r.text.contains("nothing was changed"),
                "{cmd}: {r}"
            );
        }
        assert!(c.cmd("NOOP").await.is_ok(), "the session goes on");
        assert!(c.cmd("QUIT").await.is_ok());
        let log = fake.log();
        assert!(
            !log.iter()
                .any(|l| ["RETR", "TOP", "DELE"].iter().any(|v| l.starts_with(v))),
            "nothing scanned or deleted: {log:?}"
        );
        assert_eq!(fake.uidls(), vec!["uid-a", "uid-b", "uid-c"]);
        assert_eq!(
            fake.count("LIST"),
            1,
            "asked once, refused for the whole session"
        );

        // The same maildrop with honest sizes is served as usual.
        let p = fake.proxy(dir.path(), "hide").build();
        let mut c = support::fake::connect(&p).await;
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("QUIT").await.is_ok());
    })
    .await;
}
