//! Unit tests of the server session state machine.

use std::time::Duration;

use super::*;
use crate::pop3::Status;
use crate::server::users::Users;
use md5::{Digest, Md5};

struct Fixture {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
}

/// A server with users alice (plaintext `pw`) and bob (SHA-256 of `pw`), alice holding three messages.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(alice.join(sub)).unwrap();
    }
    std::fs::write(alice.join("new/1.a.h"), "Subject: one\n\nbody one\n").unwrap();
    std::fs::write(alice.join("new/2.b.h"), "Subject: two\r\n\r\nbody two\r\n").unwrap();
    std::fs::write(alice.join("cur/3.c.h:2,S"), "Subject: three\n\n.dot\n").unwrap();
    // printf pw | sha256sum
    let users = Users::parse(
        "alice:pw\nbob:{SHA256.HEX}30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4\n",
    )
    .unwrap();
    let mut config = ServerConfig::new(dir.path(), users);
    config.auth_failure_delay = Duration::from_millis(1);
    Fixture {
        _dir: dir,
        shared: Arc::new(Shared::new(Arc::new(config))),
    }
}

fn status(reply: &Reply) -> &Response {
    match reply {
        Reply::Status(r) | Reply::Close(r) | Reply::StartTls(r) | Reply::Lines(r, _) => r,
        Reply::Message { ok, .. } => ok,
        Reply::SaslContinue => panic!("continuation"),
    }
}

async fn cmd(s: &mut Session, line: &str) -> Reply {
    match Command::parse(line.as_bytes()) {
        Ok(c) => s.handle(c).await,
        Err(e) => s.bad_command(&e),
    }
}

async fn ok(s: &mut Session, line: &str) -> String {
    let r = cmd(s, line).await;
    let st = status(&r);
    assert!(st.is_ok(), "{line}: {st}");
    st.text.clone()
}

async fn err(s: &mut Session, line: &str) -> String {
    let r = cmd(s, line).await;
    let st = status(&r);
    assert_eq!(st.status, Status::Err, "{line}: {st}");
    st.text.clone()
}

async fn lines(s: &mut Session, line: &str) -> Vec<String> {
    match cmd(s, line).await {
        Reply::Lines(r, l) if r.is_ok() => l,
        other => panic!("{line}: {other:?}"),
    }
}

async fn logged_in(f: &Fixture) -> Session {
    let mut s = Session::new(Arc::clone(&f.shared), false);
    ok(&mut s, "USER alice").await;
    assert_eq!(
        ok(&mut s, "PASS pw").await,
        "maildrop has 3 messages (76 octets)"
    );
    s
}

#[tokio::test]
async fn dele_marks_rset_unmarks_and_numbers_stay_stable() {
    let f = fixture();
    let mut s = logged_in(&f).await;
    assert_eq!(ok(&mut s, "STAT").await, "3 76");
    assert_eq!(lines(&mut s, "LIST").await, ["1 26", "2 26", "3 24"]);
    ok(&mut s, "DELE 2").await;
    assert_eq!(ok(&mut s, "STAT").await, "2 50");
    assert_eq!(lines(&mut s, "LIST").await, ["1 26", "3 24"]);
    assert_eq!(lines(&mut s, "UIDL").await, ["1 1.a.h", "3 3.c.h"]);
    assert_eq!(ok(&mut s, "LIST 3").await, "3 24");
    assert_eq!(ok(&mut s, "UIDL 3").await, "3 3.c.h");
    for c in ["RETR 2", "TOP 2 0", "DELE 2", "LIST 2", "UIDL 2"] {
        assert!(err(&mut s, c).await.contains("already deleted"), "{c}");
    }
    for c in ["RETR 4", "LIST 4", "DELE 99999", "TOP 4 1"] {
        assert!(err(&mut s, c).await.contains("no such message"), "{c}");
    }
    assert!(err(&mut s, "RETR 0").await.contains("start at 1"));
    assert!(err(&mut s, "RETR -1").await.contains("invalid"));
    assert!(err(&mut s, "RETR 99999999999").await.contains("too large"));
    assert_eq!(
        ok(&mut s, "RSET").await,
        "maildrop has 3 messages (76 octets)"
    );
    assert_eq!(ok(&mut s, "STAT").await, "3 76");
    match cmd(&mut s, "RETR 2").await {
        Reply::Message {
            ok,
            path,
            size,
            top,
            ..
        } => {
            assert_eq!(ok.text, "26 octets");
            assert_eq!(size, 26);
            assert!(path.ends_with("new/2.b.h"));
            assert_eq!(top, None);
        }
        other => panic!("{other:?}"),
    }
    match cmd(&mut s, "TOP 1 0").await {
        Reply::Message { top, .. } => assert_eq!(top, Some(0)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn only_quit_removes_and_dropping_the_session_removes_nothing() {
    let f = fixture();
    let root = f.shared.config.maildirs.join("alice");
    {
        let mut s = logged_in(&f).await;
        ok(&mut s, "DELE 1").await;
        ok(&mut s, "DELE 3").await;
        // The connection vanishes here.
    }
    assert!(!f.shared.locks.is_locked("alice"), "lock released on drop");
    assert_eq!(Maildrop::open(&root).unwrap().messages().len(), 3);

    let mut s = logged_in(&f).await;
    ok(&mut s, "DELE 1").await;
    ok(&mut s, "DELE 3").await;
    let r = cmd(&mut s, "QUIT").await;
    assert!(matches!(&r, Reply::Close(r) if r.is_ok() && r.text.contains("1 messages left")));
    assert!(s.is_closed());
    assert!(!f.shared.locks.is_locked("alice"));
    let left = Maildrop::open(&root).unwrap();
    assert_eq!(left.messages().len(), 1);
    assert_eq!(left.messages()[0].uidl, "2.b.h");
}

#[tokio::test]
async fn second_session_gets_in_use_until_the_first_ends() {
    let f = fixture();
    let first = logged_in(&f).await;
    let mut second = Session::new(Arc::clone(&f.shared), false);
    ok(&mut second, "USER alice").await;
    let r = cmd(&mut second, "PASS pw").await;
    let st = status(&r);
    assert_eq!(st.code, Some(RespCode::InUse), "{st}");
    drop(first);
    ok(&mut second, "USER alice").await;
    ok(&mut second, "PASS pw").await;
}

#[tokio::test]
async fn commands_in_the_wrong_state_are_refused() {
    let f = fixture();
    let mut s = Session::new(Arc::clone(&f.shared), false);
    for c in [
        "STAT", "LIST", "RETR 1", "DELE 1", "RSET", "TOP 1 1", "UIDL", "LAST",
    ] {
        assert!(err(&mut s, c).await.contains("not logged in"), "{c}");
    }
    assert!(err(&mut s, "PASS pw").await.contains("USER first"));
    assert!(err(&mut s, "STLS").await.contains("no certificate"));
    assert!(err(&mut s, "XYZZY").await.contains("unknown command"));
    ok(&mut s, "USER alice").await;
    ok(&mut s, "PASS pw").await;
    for c in [
        "USER alice",
        "PASS pw",
        "APOP alice 0123456789abcdef0123456789abcdef",
        "AUTH PLAIN",
        "STLS",
    ] {
        assert!(
            err(&mut s, c).await.contains("not valid in this state"),
            "{c}"
        );
    }
    ok(&mut s, "NOOP").await;
}

#[tokio::test]
async fn failed_logins_get_auth_code_and_the_third_closes() {
    let f = fixture();
    let mut s = Session::new(Arc::clone(&f.shared), false);
    for attempt in 1..=MAX_AUTH_FAILURES {
        ok(&mut s, "USER alice").await;
        let r = cmd(&mut s, "PASS wrong").await;
        assert_eq!(status(&r).code, Some(RespCode::Auth));
        assert_eq!(matches!(r, Reply::Close(_)), attempt == MAX_AUTH_FAILURES);
    }
    // An unknown user looks exactly like a wrong password.
    let mut s = Session::new(Arc::clone(&f.shared), false);
    ok(&mut s, "USER nobody").await;
    let r = cmd(&mut s, "PASS pw").await;
    assert_eq!(status(&r).code, Some(RespCode::Auth));
    assert_eq!(status(&r).text, "authentication failed");
}

#[tokio::test]
async fn hashed_passwords_log_in() {
    let f = fixture();
    // bob has no maildrop directory: the login works, opening the maildrop fails with SYS/PERM.
    let mut s = Session::new(Arc::clone(&f.shared), false);
    ok(&mut s, "USER bob").await;
    let r = cmd(&mut s, "PASS pw").await;
    assert_eq!(status(&r).code, Some(RespCode::SysPerm), "{}", status(&r));
}

#[tokio::test]
async fn apop_uses_the_greeting_timestamp() {
    let f = fixture();
    let mut s = Session::new(Arc::clone(&f.shared), false);
    let greeting = s.greeting().text;
    let stamp = &greeting[greeting.find('<').unwrap()..];
    assert!(stamp.ends_with("@localhost>"), "{stamp}");
    let digest: String = Md5::digest(format!("{stamp}pw").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    err(&mut s, "APOP alice 0123456789abcdef0123456789abcdef").await;
    // bob's password is hashed: APOP cannot work for him even with the right digest.
    let bob: String = Md5::digest(format!("{stamp}pw").as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    err(&mut s, &format!("APOP bob {bob}")).await;
    assert_eq!(
        ok(&mut s, &format!("APOP alice {}", digest.to_uppercase())).await,
        "maildrop has 3 messages (76 octets)"
    );
    // A new session has a new timestamp, so the old digest is useless (no replay).
    let other = Session::new(Arc::clone(&f.shared), false);
    assert_ne!(other.greeting().text, greeting);
}

#[tokio::test]
async fn auth_plain_initial_continuation_and_cancel() {
    let f = fixture();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut s = Session::new(Arc::clone(&f.shared), false);
    assert_eq!(lines(&mut s, "AUTH").await, ["PLAIN"]);
    assert!(err(&mut s, "AUTH CRAM-MD5").await.contains("unsupported"));
    // Continuation, then cancel.
    assert!(matches!(
        cmd(&mut s, "AUTH PLAIN").await,
        Reply::SaslContinue
    ));
    assert!(s.expects_sasl_line());
    let r = s.sasl_line(SaslResponse::Cancel).await;
    assert!(status(&r).text.contains("cancelled"));
    assert!(!s.expects_sasl_line());
    // authzid different from authcid is refused.
    let r = cmd(&mut s, &format!("AUTH PLAIN {}", b64(b"bob\0alice\0pw"))).await;
    assert_eq!(status(&r).code, Some(RespCode::Auth));
    // Continuation with the right data.
    assert!(matches!(
        cmd(&mut s, "AUTH PLAIN").await,
        Reply::SaslContinue
    ));
    let r = s
        .sasl_line(SaslResponse::Data(Secret::new(b64(b"\0alice\0pw"))))
        .await;
    assert!(status(&r).is_ok(), "{}", status(&r));
    assert_eq!(s.user(), Some("alice"));
    drop(s);
    // Initial response with authzid = authcid.
    let mut s = Session::new(Arc::clone(&f.shared), false);
    ok(&mut s, &format!("AUTH plain {}", b64(b"alice\0alice\0pw"))).await;
}

#[tokio::test]
async fn capa_depends_on_state_and_tls() {
    let f = fixture();
    let mut s = Session::new(Arc::clone(&f.shared), false);
    let caps = lines(&mut s, "CAPA").await;
    for want in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        "SASL PLAIN",
    ] {
        assert!(caps.iter().any(|c| c == want), "{want} in {caps:?}");
    }
    assert!(!caps.iter().any(|c| c == "STLS"), "no certificate, no STLS");
    assert!(
        caps.iter()
            .any(|c| c.starts_with("IMPLEMENTATION popguard"))
    );
    ok(&mut s, "USER alice").await;
    ok(&mut s, "PASS pw").await;
    let caps = lines(&mut s, "CAPA").await;
    assert!(!caps.iter().any(|c| c == "USER" || c.starts_with("SASL")));
    assert!(caps.iter().any(|c| c == "TOP"));
}

#[tokio::test]
async fn garbage_closes_after_too_many_bad_commands() {
    let f = fixture();
    let mut s = Session::new(Arc::clone(&f.shared), false);
    for i in 1..MAX_BAD_COMMANDS {
        let r = cmd(&mut s, "\u{1}\u{2}garbage").await;
        assert!(
            matches!(r, Reply::Status(ref r) if !r.is_ok()),
            "{i}: {r:?}"
        );
    }
    // A good command resets the count.
    ok(&mut s, "NOOP").await;
    for _ in 1..MAX_BAD_COMMANDS {
        assert!(matches!(cmd(&mut s, "RETR 1").await, Reply::Status(_)));
    }
    assert!(matches!(cmd(&mut s, "RETR 1").await, Reply::Close(_)));
}
