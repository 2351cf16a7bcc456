//! In-process tests of the proxy session over in-memory pipes, against a scripted upstream: the edge cases a real
//! server cannot be made to produce on demand (a connection cut in the middle of RETR, no UIDL, no TOP, no CAPA),
//! plus the renumbering, tagging and deletion rules. The real-peer evidence (Dovecot and real clients) is in
//! `tests/proxy_peers.rs`.
//!
//! Scoring is a fixed function here (spam = contains `SPAM-ME`), so these tests do not depend on rule tuning.

mod proxy_fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::prelude::*;
use md5::{Digest, Md5};
use popguard::pop3::Pop3Error;
use popguard::store::quarantine::Quarantine;
use proxy_fake::*;

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn tag_mode_delivers_everything_with_exact_sizes() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        let stat = c.cmd("STAT").await;
        let (_, list) = c.multi("LIST").await;
        let list = lines(&list);
        assert_eq!(list.len(), 3);
        let mut total = 0;
        for (i, m) in mixed().iter().enumerate() {
            let n = i + 1;
            let (r, body) = c.multi(&format!("RETR {n}")).await;
            let listed: usize = list[i].split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(
                body.len(),
                listed,
                "LIST size of {n} must equal the bytes of RETR"
            );
            assert_eq!(r.text, format!("{listed} octets"));
            total += listed;
            assert_eq!(
                untag(&body),
                m.data,
                "only X-Spam-* fields and the prefix are added"
            );
            let text = String::from_utf8_lossy(&body);
            if m.uidl == "uid-b" {
                assert!(text.starts_with(
                    "X-Spam-Flag: YES\r\nX-Spam-Score: 10.0\r\nX-Spam-Status: Yes, score=10.0"
                ));
                assert!(text.contains("\r\nSubject: [SPAM] SPAM-ME cheap pills\r\n"));
            } else {
                assert!(
                    text.starts_with(
                        "X-Spam-Status: No, score=0.5 required=5.0 tests=TEST_HAM\r\n"
                    )
                );
                assert!(!text.contains("X-Spam-Flag"));
            }
        }
        assert_eq!(stat.text, format!("3 {total}"));
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.quits(), 1);
        assert_eq!(fake.uidls().len(), 3, "nothing deleted");
    })
    .await
}

#[tokio::test]
async fn top_shows_the_same_tagged_header_as_retr() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(config(dir.path(), "tag", ""), fake, Default::default());
        let mut c = connect(&p).await;
        c.login().await;
        for n in 1..=3 {
            let (_, retr) = c.multi(&format!("RETR {n}")).await;
            let (_, top) = c.multi(&format!("TOP {n} 0")).await;
            let head_end = retr.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(top, &retr[..head_end], "TOP {n} 0");
            let (_, top1) = c.multi(&format!("TOP {n} 1")).await;
            assert!(retr.starts_with(&top1));
        }
    })
    .await
}

#[tokio::test]
async fn hide_mode_renumbers_and_never_deletes_hidden_spam() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "hide", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        let (a, cc) = (&mixed()[0], &mixed()[2]);
        let stat = c.cmd("STAT").await;
        let (_, list) = c.multi("LIST").await;
        let (_, uidl) = c.multi("UIDL").await;
        assert_eq!(lines(&uidl), vec!["1 uid-a", "2 uid-c"]);
        let list = lines(&list);
        assert_eq!(list.len(), 2);
        let (_, m1) = c.multi("RETR 1").await;
        let (_, m2) = c.multi("RETR 2").await;
        assert_eq!(untag(&m1), a.data);
        assert_eq!(untag(&m2), cc.data);
        assert_eq!(stat.text, format!("2 {}", m1.len() + m2.len()));
        assert_eq!(
            list,
            vec![format!("1 {}", m1.len()), format!("2 {}", m2.len())]
        );
        // Hidden and out-of-range numbers are "no such message", as a server would say.
        for bad in ["RETR 3", "TOP 3 0", "DELE 3", "LIST 3", "UIDL 3"] {
            assert!(!c.cmd(bad).await.is_ok(), "{bad}");
        }
        assert_eq!(c.cmd("UIDL 2").await.text, "2 uid-c");
        assert!(!c.cmd("RETR 0").await.is_ok());
        assert!(c.cmd("DELE 1").await.is_ok());
        assert!(c.cmd("DELE 2").await.is_ok());
        assert!(!c.cmd("DELE 1").await.is_ok(), "already deleted");
        assert!(
            !c.cmd("RETR 1").await.is_ok(),
            "deleted messages may not be referenced"
        );
        assert_eq!(c.cmd("STAT").await.text, "0 0");
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(
            fake.uidls(),
            vec!["uid-b"],
            "the hidden spam is still upstream"
        );
        // The proxy translated the deletions: upstream numbers 1 and 3.
        let log = fake.log();
        assert!(log.contains(&"DELE 1".to_string()) && log.contains(&"DELE 3".to_string()));
        assert!(!log.contains(&"DELE 2".to_string()));
        // And it is in the quarantine, with From and Subject.
        let q = Quarantine::open(dir.path(), "alice").list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].uidl, "uid-b");
        assert_eq!(q[0].subject, "SPAM-ME cheap pills");
        assert_eq!(q[0].from, "Alice <a@example.org>");
        assert_eq!(q[0].rules, vec!["TEST_SPAM"]);
    })
    .await
}

#[tokio::test]
async fn rset_restores_deleted_messages() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "hide", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        assert!(c.cmd("DELE 2").await.is_ok());
        assert!(!c.cmd("LIST 2").await.is_ok());
        let r = c.cmd("RSET").await;
        assert!(r.is_ok());
        assert!(r.text.contains("2 messages"), "{r}");
        assert!(c.cmd("LIST 2").await.is_ok());
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.uidls().len(), 3);
    })
    .await
}

#[tokio::test]
async fn client_that_drops_without_quit_deletes_nothing() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        assert!(c.cmd("DELE 1").await.is_ok());
        assert!(c.cmd("DELE 2").await.is_ok());
        drop(c);
        // Give the session a moment to notice the close and drop its upstream.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if fake.log().contains(&"DELE 2".to_string()) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fake.quits(), 0, "no QUIT may reach the upstream");
        assert_eq!(fake.uidls().len(), 3);
    })
    .await
}

#[tokio::test]
async fn upstream_dying_mid_retr_is_never_a_complete_message() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let big = msg("uid-big", "Large", &"0123456789abcdef\r\n".repeat(20_000));
        let fake = Fake::new(
            vec![big],
            Behaviour {
                cut_retr: Some((1, 200_000)),
                ..Behaviour::default()
            },
        );
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        let r = c.cmd("RETR 1").await;
        assert!(r.is_ok());
        let e = c.s.read_multiline(100 << 20).await.unwrap_err();
        assert!(matches!(e, Pop3Error::UnexpectedEof), "{e:?}");
    })
    .await
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(config(dir.path(), "hide", ""), fake.clone(), Default::default());
        let mut c = connect(&p).await;
        // Everything in one write, as mpop does.
        c.s.write_raw(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nRETR 2\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n")
            .await
            .unwrap();
        assert!(c.s.read_response().await.unwrap().is_ok());
        let capa = lines(&c.s.read_multiline(1 << 20).await.unwrap());
        assert!(capa.contains(&"PIPELINING".to_string()));
        for _ in 0..2 {
            assert!(c.s.read_response().await.unwrap().is_ok());
        }
        assert!(c.s.read_response().await.unwrap().text.starts_with("2 "));
        for _ in 0..2 {
            assert!(c.s.read_response().await.unwrap().is_ok());
            c.s.read_multiline(1 << 20).await.unwrap();
        }
        for want in [&mixed()[0], &mixed()[2]] {
            assert!(c.s.read_response().await.unwrap().is_ok());
            assert_eq!(untag(&c.s.read_multiline(1 << 20).await.unwrap()), want.data);
        }
        for _ in 0..3 {
            assert!(c.s.read_response().await.unwrap().is_ok());
        }
        assert_eq!(fake.uidls(), vec!["uid-b"]);
    })
    .await
}

#[tokio::test]
async fn verdicts_are_cached_per_uidl_across_sessions() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let p = proxy(config(dir.path(), "hide", ""), fake.clone(), calls.clone());
        let mut c = connect(&p).await;
        c.login().await;
        let first = c.multi("LIST").await.1;
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let tops = fake.count("TOP");
        assert_eq!(tops, 3, "the first scan fetches with TOP");

        let mut c = connect(&p).await;
        c.login().await;
        assert_eq!(c.multi("LIST").await.1, first, "same view from the cache");
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "nothing rescored");
        assert_eq!(fake.count("TOP"), tops, "nothing refetched");
    })
    .await
}

#[tokio::test]
async fn released_message_is_shown_from_the_next_session_on() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "hide", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        assert_eq!(c.cmd("STAT").await.text.split(' ').next(), Some("2"));
        assert!(c.cmd("QUIT").await.is_ok());

        let q = Quarantine::open(dir.path(), "alice");
        let released = q.release("uid-b").unwrap().unwrap();
        assert!(released.prefix.unwrap().starts_with(b"Return-Path:"));
        popguard::store::verdicts::VerdictStore::release(dir.path(), "alice", "uid-b").unwrap();

        let mut c = connect(&p).await;
        c.login().await;
        let (_, uidl) = c.multi("UIDL").await;
        assert_eq!(lines(&uidl), vec!["1 uid-a", "2 uid-b", "3 uid-c"]);
        let (_, m) = c.multi("RETR 2").await;
        let text = String::from_utf8_lossy(&m);
        assert!(text.starts_with(
            "X-Spam-Status: No, score=10.0 required=5.0 tests=TEST_SPAM,USER_RELEASED\r\n"
        ));
        assert!(
            text.contains("\r\nSubject: SPAM-ME cheap pills\r\n"),
            "released mail is not prefixed"
        );
        let listed: usize = c
            .cmd("LIST 2")
            .await
            .text
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(listed, m.len());
        assert!(
            Quarantine::open(dir.path(), "alice")
                .list()
                .unwrap()
                .is_empty()
        );
    })
    .await
}

#[tokio::test]
async fn upstream_without_uidl_top_or_capa_still_works() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(
            mixed(),
            Behaviour {
                capa: None,
                uidl: false,
                top: false,
                ..Behaviour::default()
            },
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let p = proxy(config(dir.path(), "hide", ""), fake.clone(), calls.clone());
        let mut c = connect(&p).await;
        assert!(
            !c.cmd("CAPA").await.is_ok(),
            "no CAPA upstream, no STLS to add: -ERR relayed"
        );
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(!c.cmd("UIDL").await.is_ok());
        let (_, m) = c.multi("RETR 2").await;
        assert_eq!(untag(&m), mixed()[2].data);
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // No UIDL: the cache is keyed by a header digest, so the next session rescans but does not rescore.
        let mut c = connect(&p).await;
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(fake.count("RETR") >= 6, "TOP refused, RETR used instead");
    })
    .await
}

#[tokio::test]
async fn capa_is_filtered_to_what_the_proxy_supports() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        let (_, caps) = c.multi("CAPA").await;
        let caps = lines(&caps);
        assert!(caps.contains(&"SASL PLAIN LOGIN".to_string()), "{caps:?}");
        assert!(
            !caps.iter().any(|l| l == "STLS" || l.starts_with("X-")),
            "{caps:?}"
        );
        assert!(caps.contains(&"PIPELINING".to_string()) && caps.contains(&"USER".to_string()));
        assert!(
            !c.cmd("STLS").await.is_ok(),
            "STLS never forwarded upstream"
        );
        assert_eq!(fake.count("STLS"), 0);
        c.login().await;
        let (_, caps) = c.multi("CAPA").await;
        let caps = lines(&caps);
        assert!(!caps.contains(&"USER".to_string()) && !caps.iter().any(|l| l.starts_with("SASL")));
        assert!(caps.contains(&"TOP".to_string()));
    })
    .await
}

#[tokio::test]
async fn auth_plain_is_relayed_with_continuations() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "hide", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        let r = c.cmd("AUTH PLAIN").await;
        assert_eq!(r.status, popguard::pop3::Status::Continue);
        let resp = BASE64_STANDARD.encode(b"\0bob\0secret");
        let r = c.cmd(&resp).await;
        assert!(r.is_ok(), "{r}");
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("QUIT").await.is_ok());
        // State is kept under the SASL user's name.
        assert_eq!(Quarantine::open(dir.path(), "bob").list().unwrap().len(), 1);
        // Wrong password: the upstream's -ERR is relayed.
        let mut c = connect(&p).await;
        let bad = BASE64_STANDARD.encode(b"\0bob\0wrong");
        assert!(!c.cmd(&format!("AUTH PLAIN {bad}")).await.is_ok());
        assert!(!c.cmd("STAT").await.is_ok(), "still not logged in");
        assert!(
            !c.cmd("AUTH GSSAPI").await.is_ok(),
            "mechanisms with a security layer are refused"
        );
    })
    .await
}

#[tokio::test]
async fn apop_is_relayed_when_the_greeting_has_a_timestamp() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        assert!(
            c.greeting.text.contains("<1234.5678@fake.test>"),
            "greeting relayed"
        );
        let digest: String = Md5::digest(b"<1234.5678@fake.test>secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let r = c.cmd(&format!("APOP carol {digest}")).await;
        assert!(r.is_ok(), "{r}");
        assert!(c.cmd("STAT").await.text.starts_with("3 "));

        // Without a timestamp the proxy refuses APOP itself.
        let fake2 = Fake::new(
            mixed(),
            Behaviour {
                greeting: "ready".into(),
                ..Behaviour::default()
            },
        );
        let p2 = proxy(
            config(dir.path(), "tag", ""),
            fake2.clone(),
            Default::default(),
        );
        let mut c = connect(&p2).await;
        assert!(!c.cmd(&format!("APOP carol {digest}")).await.is_ok());
        assert_eq!(fake2.count("APOP"), 0);
    })
    .await
}

#[tokio::test]
async fn last_counts_retrieved_client_numbers_not_the_scan() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(config(dir.path(), "hide", ""), fake, Default::default());
        let mut c = connect(&p).await;
        c.login().await;
        // The scan fetched every message with TOP; that must not make them look read.
        assert_eq!(c.cmd("LAST").await.text, "0");
        c.multi("RETR 2").await;
        c.multi("TOP 1 0").await;
        assert_eq!(c.cmd("LAST").await.text, "2");
        assert!(c.cmd("RSET").await.is_ok());
        assert_eq!(c.cmd("LAST").await.text, "0");
    })
    .await
}

#[tokio::test]
async fn delete_hidden_removes_spam_at_quit_only_when_configured() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "hide", "delete_hidden = true"),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        assert!(c.cmd("STAT").await.is_ok());
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.uidls(), vec!["uid-a", "uid-c"]);
    })
    .await
}

#[tokio::test]
async fn large_message_streams_through_intact() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        // 4 MB body with dot-leading lines everywhere.
        let body = ".line with a leading dot\r\nplain line of text here\r\n".repeat(80_000);
        let big = msg("uid-big", "SPAM-ME big", &body);
        let fake = Fake::new(vec![big.clone()], Behaviour::default());
        let p = proxy(config(dir.path(), "tag", ""), fake, Default::default());
        let mut c = connect(&p).await;
        c.login().await;
        let listed: usize = c
            .cmd("LIST 1")
            .await
            .text
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let (_, m) = c.multi("RETR 1").await;
        assert_eq!(m.len(), listed);
        assert_eq!(untag(&m), big.data);
    })
    .await
}

#[tokio::test]
async fn bad_commands_get_err_and_the_session_goes_on() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(config(dir.path(), "tag", ""), fake, Default::default());
        let mut c = connect(&p).await;
        assert!(!c.cmd("STAT").await.is_ok(), "not before login");
        assert!(!c.cmd("PASS secret").await.is_ok(), "PASS needs USER first");
        c.login().await;
        for bad in [
            "RETR",
            "RETR x",
            "RETR 99999999999",
            "XYZZY",
            "USER again",
            "TOP 1",
        ] {
            assert!(!c.cmd(bad).await.is_ok(), "{bad}");
        }
        assert!(c.cmd("NOOP").await.is_ok());
        assert!(c.cmd("QUIT").await.is_ok());
    })
    .await
}

#[tokio::test]
async fn per_user_upstreams_route_by_login_name() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let cfg = config(
            dir.path(),
            "tag",
            "route_by_login = true\nroute_allow = [\"allowed.test:110\"]\n[users.alice]\nupstream = \"alice.test:110\"\nupstream_tls = \"none\"\n",
        );
        // route_allow entries with port 110 default to STLS; this fake has no TLS, so check only where USER goes.
        let p = proxy(cfg, fake.clone(), Default::default());
        let mut c = connect(&p).await;
        assert!(c.greeting.text.contains("popguard"), "dynamic routing: the proxy greets itself");
        let (_, caps) = c.multi("CAPA").await;
        assert!(lines(&caps).iter().any(|l| l.starts_with("SASL PLAIN")));
        c.login().await;
        assert_eq!(fake.s.lock().unwrap().hosts, vec!["alice.test"]);
        assert!(c.cmd("QUIT").await.is_ok());
        let mut c = connect(&p).await;
        assert!(c.cmd("USER bob").await.is_ok());
        assert_eq!(fake.s.lock().unwrap().hosts.last().unwrap(), "fake.test");
        // A user@host login for a host not on the list goes, unchanged, to the default upstream.
        assert!(c.cmd("USER eve@evil.test").await.is_ok());
        assert_eq!(fake.s.lock().unwrap().hosts.last().unwrap(), "fake.test");
        assert!(fake.log().contains(&"USER eve@evil.test".to_string()));
    })
    .await
}

/// `popguard quarantine list` shows what was hidden; `release` brings it back next session and trains it as ham.
#[tokio::test]
async fn quarantine_cli_lists_and_releases() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(mixed(), Behaviour::default());
        let p = proxy(config(dir.path(), "hide", ""), fake, Default::default());
        let mut c = connect(&p).await;
        c.login().await;
        assert!(c.cmd("STAT").await.text.starts_with("2 "));
        assert!(c.cmd("QUIT").await.is_ok());

        let bin = env!("CARGO_BIN_EXE_popguard");
        let data = dir.path().to_str().unwrap();
        let run = |args: &[&str]| {
            std::process::Command::new(bin)
                .args(args)
                .env_remove("POPGUARD_CONFIG")
                .output()
                .unwrap()
        };
        let out = run(&[
            "quarantine",
            "list",
            "--user",
            "alice",
            "--data-dir",
            data,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "{text}");
        let entry: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(entry["uidl"], "uid-b");
        assert_eq!(entry["subject"], "SPAM-ME cheap pills");
        assert_eq!(entry["rules"][0], "TEST_SPAM");
        let table = run(&["quarantine", "list", "--user", "alice", "--data-dir", data]);
        assert!(String::from_utf8_lossy(&table.stdout).contains("uid-b"));

        let out = run(&[
            "quarantine",
            "release",
            "--user",
            "alice",
            "--data-dir",
            data,
            "uid-b",
        ]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("released uid-b") && said.contains("trained as ham"),
            "{said}"
        );
        let again = run(&[
            "quarantine",
            "release",
            "--user",
            "alice",
            "--data-dir",
            data,
            "nope",
        ]);
        assert!(!again.status.success());

        let mut c = connect(&p).await;
        c.login().await;
        assert!(
            c.cmd("STAT").await.text.starts_with("3 "),
            "released mail is visible again"
        );
        let empty = run(&[
            "quarantine",
            "list",
            "--user",
            "alice",
            "--data-dir",
            data,
            "--json",
        ]);
        assert_eq!(String::from_utf8_lossy(&empty.stdout).trim(), "");
    })
    .await
}

// ---------------------------------------------------------------- read-ahead

fn many(n: usize) -> Vec<Msg> {
    (1..=n)
        .map(|i| {
            let subject = if i % 3 == 0 { "SPAM-ME offer" } else { "notes" };
            msg(
                &format!("uid-{i}"),
                subject,
                &format!("Body {i}\r\n.dot line {i}\r\n"),
            )
        })
        .collect()
}

/// Waits (bounded) until the fake upstream has been sent `line`.
async fn until_sent(fake: &Fake, line: &str) -> bool {
    for _ in 0..200 {
        if fake.log().iter().any(|l| l == line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn retr_log(fake: &Fake) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|l| l.starts_with("RETR"))
        .collect()
}

#[tokio::test]
async fn read_ahead_asks_for_the_next_messages_and_the_client_sees_no_difference() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let msgs = many(12);
        let fake = Fake::new(msgs.clone(), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        let (_, list) = c.multi("LIST").await;
        let list = lines(&list);
        let (_, m1) = c.multi("RETR 1").await;
        assert_eq!(untag(&m1), msgs[0].data);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            retr_log(&fake),
            vec!["RETR 1"],
            "nothing is read ahead after a single RETR"
        );
        let (_, m2) = c.multi("RETR 2").await;
        assert_eq!(untag(&m2), msgs[1].data);
        // After two RETRs in a row, the next messages are asked for before the client asks (PIPELINING: a window).
        assert!(until_sent(&fake, "RETR 3").await, "{:?}", fake.log());
        assert!(until_sent(&fake, "RETR 10").await, "{:?}", fake.log());
        assert!(
            !retr_log(&fake).contains(&"RETR 11".to_string()),
            "at most {} ahead: {:?}",
            popguard::proxy::read_ahead::READ_AHEAD_WINDOW,
            fake.log()
        );
        // Commands between RETRs are answered in order: DELE and LIST wait for the answers on the wire.
        assert!(c.cmd("DELE 1").await.is_ok());
        assert_eq!(c.cmd("LIST 3").await.text, list[2]);
        assert!(c.cmd("NOOP").await.is_ok());
        assert!(c.cmd("RETR 1").await.status == popguard::pop3::Status::Err);
        for n in 3..=12usize {
            let (r, body) = c.multi(&format!("RETR {n}")).await;
            let listed: usize = list[n - 1].split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(r.text, format!("{listed} octets"));
            assert_eq!(body.len(), listed, "RETR {n} size equals LIST");
            assert_eq!(untag(&body), msgs[n - 1].data, "RETR {n}");
            if n == 5 {
                assert!(c.cmd("DELE 5").await.is_ok());
            }
        }
        let (_, top) = c.multi("TOP 4 0").await;
        assert!(top.ends_with(b"\r\n\r\n"));
        assert!(c.cmd("QUIT").await.is_ok());
        let left = fake.uidls();
        assert_eq!(left.len(), 10, "only 1 and 5 deleted: {left:?}");
        assert!(!left.contains(&"uid-1".to_string()) && !left.contains(&"uid-5".to_string()));
        // The proxy never asked for a message twice: each was read ahead once or asked for once.
        let retrs = retr_log(&fake);
        let unique: std::collections::HashSet<_> = retrs.iter().collect();
        assert_eq!(retrs.len(), unique.len(), "{retrs:?}");
    })
    .await
}

#[tokio::test]
async fn read_ahead_keeps_one_command_in_flight_without_pipelining_and_respects_hide() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let msgs = many(9);
        let b = Behaviour {
            capa: Some(vec!["TOP", "UIDL", "USER"]),
            ..Behaviour::default()
        };
        let fake = Fake::new(msgs.clone(), b);
        let p = proxy(
            config(dir.path(), "hide", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        // Hide: every third message is spam, so client 1..6 are upstream 1,2,4,5,7,8.
        let visible: Vec<&Msg> = msgs
            .iter()
            .filter(|m| !String::from_utf8_lossy(&m.data).contains("SPAM-ME"))
            .collect();
        assert_eq!(c.cmd("STAT").await.text.split(' ').next(), Some("6"));
        c.multi("RETR 1").await;
        c.multi("RETR 2").await;
        assert!(until_sent(&fake, "RETR 4").await, "{:?}", fake.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            retr_log(&fake),
            vec!["RETR 1", "RETR 2", "RETR 4"],
            "one read-ahead at a time, hidden spam skipped"
        );
        for n in 3..=6usize {
            let (_, body) = c.multi(&format!("RETR {n}")).await;
            assert_eq!(untag(&body), visible[n - 1].data);
        }
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(fake.uidls().len(), 9, "nothing deleted");
    })
    .await
}

#[tokio::test]
async fn read_ahead_can_be_turned_off() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(many(5), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", "read_ahead = false\n"),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        c.multi("RETR 1").await;
        c.multi("RETR 2").await;
        c.multi("RETR 3").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(retr_log(&fake), vec!["RETR 1", "RETR 2", "RETR 3"]);
        assert!(c.cmd("QUIT").await.is_ok());
    })
    .await
}

#[tokio::test]
async fn a_client_that_leaves_with_read_ahead_in_flight_deletes_nothing() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(many(6), Behaviour::default());
        let p = proxy(
            config(dir.path(), "tag", ""),
            fake.clone(),
            Default::default(),
        );
        let mut c = connect(&p).await;
        c.login().await;
        c.multi("RETR 1").await;
        c.multi("RETR 2").await;
        assert!(c.cmd("DELE 1").await.is_ok());
        assert!(until_sent(&fake, "RETR 3").await);
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fake.quits(), 0);
        assert_eq!(fake.uidls().len(), 6, "no QUIT, nothing deleted");
    })
    .await
}

// ---------------------------------------------------------------- scan budget

#[tokio::test]
async fn a_slow_first_scan_answers_within_the_budget_and_defers_the_rest() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let msgs = many(10);
        // No PIPELINING: one scan command at a time, so the budget can stop the requests.
        let b = Behaviour {
            capa: Some(vec!["TOP", "UIDL", "USER"]),
            ..Behaviour::default()
        };
        let fake = Fake::new(msgs.clone(), b);
        let config = config(
            dir.path(),
            "hide",
            "scan_budget = 1\ndelete_hidden = true\n",
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let filter = Arc::new(popguard::filter::Filter::new(&config.filter_settings()).unwrap());
        let counted = calls.clone();
        let p = Arc::new(
            popguard::proxy::Proxy::new(config, filter, fake.clone())
                .unwrap()
                .with_scorer(move |_user, bytes| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    // A slow scorer: 10 messages would take 3 s, three times the budget.
                    std::thread::sleep(Duration::from_millis(300));
                    let spam = bytes.windows(7).any(|w| w == b"SPAM-ME");
                    let hits = vec![popguard::filter::Hit {
                        name: if spam { "TEST_SPAM" } else { "TEST_HAM" }.into(),
                        score: if spam { 10.0 } else { 0.5 },
                        description: String::new(),
                    }];
                    popguard::filter::Verdict::from_hits(hits, 5.0, 3.0)
                }),
        );
        let ham = msgs
            .iter()
            .filter(|m| !String::from_utf8_lossy(&m.data).contains("SPAM-ME"))
            .count();
        let mut seen = Vec::new();
        for session in 0..6 {
            let mut c = connect(&p).await;
            c.login().await;
            let t = std::time::Instant::now();
            let stat = c.cmd("STAT").await;
            let elapsed = t.elapsed();
            assert!(
                elapsed < Duration::from_millis(2500),
                "session {session}: STAT took {elapsed:?} with a 1 s budget"
            );
            let visible: usize = stat.text.split(' ').next().unwrap().parse().unwrap();
            seen.push(visible);
            // Everything shown is whole and in upstream order.
            let (_, uidl) = c.multi("UIDL").await;
            for line in lines(&uidl) {
                let (n, u) = line.split_once(' ').unwrap();
                let (_, body) = c.multi(&format!("RETR {n}")).await;
                let m = msgs.iter().find(|m| m.uidl == u).unwrap();
                assert_eq!(untag(&body), m.data);
            }
            // QUIT with delete_hidden: hidden spam goes, deferred (unscanned) mail must not.
            assert!(c.cmd("QUIT").await.is_ok());
            if visible == ham {
                break;
            }
        }
        assert!(
            seen[0] < ham,
            "the first session was cut by the budget: {seen:?}"
        );
        assert_eq!(
            *seen.last().unwrap(),
            ham,
            "later sessions catch up: {seen:?}"
        );
        assert!(
            calls.load(Ordering::SeqCst) <= msgs.len(),
            "each message scored once across sessions"
        );
        let left = fake.uidls();
        for m in &msgs {
            let spam = String::from_utf8_lossy(&m.data).contains("SPAM-ME");
            assert_eq!(
                left.contains(&m.uidl),
                !spam,
                "{}: only scored spam is deleted (delete_hidden), never unscanned mail",
                m.uidl
            );
        }
    })
    .await
}

// ---------------------------------------------------------------- fixed tag sizing

#[tokio::test]
async fn fixed_tag_sizing_answers_at_once_and_keeps_every_size_true() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let msgs = many(7);
        let fake = Fake::new(msgs.clone(), Behaviour::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let config = config(dir.path(), "tag", "tag_sizing = \"fixed\"\n");
        let p = proxy(config, fake.clone(), calls.clone());
        let fixed = popguard::proxy::tag::FIXED_TAG_SIZE;

        let mut c = connect(&p).await;
        c.login().await;
        let (_, list) = c.multi("LIST").await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no scan before LIST");
        assert!(
            !fake.log().iter().any(|l| l.starts_with("TOP")),
            "{:?}",
            fake.log()
        );
        let list = lines(&list);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(list[i], format!("{} {}", i + 1, m.data.len() + fixed));
        }
        // TOP first: scored then, and RETR shows the same header.
        let (_, top) = c.multi("TOP 3 0").await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let mut bodies = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let (r, body) = c.multi(&format!("RETR {}", i + 1)).await;
            assert_eq!(r.text, format!("{} octets", m.data.len() + fixed));
            assert_eq!(body.len(), m.data.len() + fixed, "RETR {} size", i + 1);
            assert_eq!(untag(&body), m.data);
            let text = String::from_utf8_lossy(&body).into_owned();
            let spam = String::from_utf8_lossy(&m.data).contains("SPAM-ME");
            assert_eq!(text.starts_with("X-Spam-Flag: YES\r\n"), spam, "{text}");
            assert_eq!(text.contains("Subject: [SPAM] "), spam);
            if spam {
                assert!(!text.contains("X-Spam-Status: No"));
            } else {
                assert!(text.starts_with("X-Spam-Status: No, score=0.5"));
            }
            bodies.push(body);
        }
        let head_end = bodies[2].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(top, &bodies[2][..head_end], "TOP and RETR agree");
        assert_eq!(calls.load(Ordering::SeqCst), msgs.len(), "each scored once");
        assert!(c.cmd("QUIT").await.is_ok());

        // The verdicts reached on RETR are cached: the next session scores nothing and sends the same bytes.
        // (The session writes them after QUIT: wait for that, bounded.)
        let cached = || {
            popguard::store::verdicts::VerdictStore::open(dir.path(), "alice")
                .map(|s| s.len())
                .unwrap_or(0)
        };
        for _ in 0..100 {
            if cached() == msgs.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cached(), msgs.len());
        let mut c = connect(&p).await;
        c.login().await;
        let (_, again) = c.multi("RETR 1").await;
        assert!(c.cmd("QUIT").await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), msgs.len(), "cached verdicts");
        assert_eq!(again, bodies[0]);
    })
    .await
}
