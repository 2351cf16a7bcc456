//! `popguard server` over loopback, driven by a raw line client: RFC 1939 semantics on the wire, pipelining,
//! timeouts, the maildrop lock, and bad input (over-long lines, garbage, vanishing clients).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use popguard::server::maildir::Maildrop;
use popguard::server::users::Users;
use popguard::server::{ServerConfig, run};
use popguard_test_support::with_timeout;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

/// Every test's upper bound: a hang fails instead of blocking the suite.
const TEST_SECS: u64 = 30;

/// A running server on a temporary maildirs directory; stops when dropped.
struct TestServer {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    async fn start(messages: &[(&str, &[u8])]) -> TestServer {
        TestServer::start_with(messages, |_| {}).await
    }

    async fn start_with(
        messages: &[(&str, &[u8])],
        tune: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("alice");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(drop.join(sub)).unwrap();
        }
        for (name, data) in messages {
            std::fs::write(drop.join(name), data).unwrap();
        }
        let users = Users::parse("alice:secret\n").unwrap();
        let mut config = ServerConfig::new(dir.path(), users);
        config.auth_failure_delay = Duration::from_millis(10);
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run(listener, Arc::new(config), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            dir,
            _stop: stop,
        }
    }

    fn maildrop(&self) -> PathBuf {
        self.dir.path().join("alice")
    }

    /// The files now in the maildrop, oldest first.
    fn files(&self) -> Vec<Vec<u8>> {
        Maildrop::open(&self.maildrop())
            .unwrap()
            .messages()
            .iter()
            .map(|m| std::fs::read(&m.path).unwrap())
            .collect()
    }
}

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> (Client, String) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.line().await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        (c, greeting)
    }

    async fn login(addr: std::net::SocketAddr) -> Client {
        let (mut c, _) = Client::connect(addr).await;
        c.ok("USER alice").await;
        c.ok("PASS secret").await;
        c
    }

    async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// One reply line without CRLF; empty string when the server closed.
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.r.read_until(b'\n', &mut buf).await.unwrap();
        assert!(
            buf.is_empty() || buf.ends_with(b"\r\n"),
            "reply without CRLF: {buf:?}"
        );
        String::from_utf8_lossy(&buf).trim_end().to_owned()
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    async fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line).await;
        assert!(r.starts_with("+OK"), "{line}: {r}");
        r
    }

    async fn err(&mut self, line: &str) -> String {
        let r = self.cmd(line).await;
        assert!(r.starts_with("-ERR"), "{line}: {r}");
        r
    }

    /// A multi-line body after its status line, un-stuffed, with CRLF line ends, without the terminator.
    async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line).await.unwrap();
            assert!(n > 0, "connection closed inside a multi-line body");
            assert!(line.ends_with(b"\r\n"), "body line without CRLF: {line:?}");
            if line == b".\r\n" {
                return out;
            }
            let data = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            out.extend_from_slice(data);
        }
    }

    async fn multi(&mut self, line: &str) -> Vec<u8> {
        self.ok(line).await;
        self.body().await
    }

    async fn lines(&mut self, line: &str) -> Vec<String> {
        let b = self.multi(line).await;
        String::from_utf8(b)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// True once the server has closed the connection: EOF, or a reset when it closed with our data unread.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), self.r.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Err(_) => false,
        }
    }
}

fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

const M1: &[u8] = b"From: a@example.org\nSubject: lf only\n\n.leading dot\n..two dots\n.\nend\n";
const M2: &[u8] = b"From: b@example.org\r\nSubject: crlf\r\n\r\nline 1\r\nline 2\r\nline 3\r\n";
const M3: &[u8] = b"Subject: mixed\r\nX: y\n\r\nbody\nno final newline";

fn three() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("new/1700000001.A.host", M1),
        ("new/1700000002.B.host", M2),
        ("cur/1700000003.C.host:2,S", M3),
    ]
}

#[tokio::test]
async fn a_full_session_follows_rfc_1939() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, greeting) = Client::connect(srv.addr).await;
        assert!(
            greeting.contains('<') && greeting.ends_with('>'),
            "APOP stamp: {greeting}"
        );
        let caps = c.lines("CAPA").await;
        for want in [
            "TOP",
            "UIDL",
            "USER",
            "RESP-CODES",
            "PIPELINING",
            "SASL PLAIN",
        ] {
            assert!(caps.iter().any(|l| l == want), "{want} in {caps:?}");
        }
        c.ok("USER alice").await;
        c.ok("PASS secret").await;

        // Exact sizes: CRLF counted, stuffing not; the added final CRLF of M3 is not part of the message.
        let sizes: Vec<u64> = [M1, M2, M3].iter().map(|m| crlf(m).len() as u64).collect();
        let total: u64 = sizes.iter().sum();
        assert_eq!(c.ok("STAT").await, format!("+OK 3 {total}"));
        let list = c.lines("LIST").await;
        assert_eq!(
            list,
            (1..=3)
                .map(|i| format!("{i} {}", sizes[i - 1]))
                .collect::<Vec<_>>()
        );
        let uidl = c.lines("UIDL").await;
        assert_eq!(
            uidl,
            [
                "1 1700000001.A.host",
                "2 1700000002.B.host",
                "3 1700000003.C.host"
            ]
        );

        for (i, m) in [M1, M2, M3].iter().enumerate() {
            let r = c.ok(&format!("RETR {}", i + 1)).await;
            assert_eq!(r, format!("+OK {} octets", sizes[i]));
            let mut want = crlf(m);
            if !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            let got = c.body().await;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
        // TOP n 0: header and the blank line; TOP n 2: two body lines.
        assert_eq!(
            c.multi("TOP 1 0").await,
            b"From: a@example.org\r\nSubject: lf only\r\n\r\n"
        );
        assert_eq!(
            c.multi("TOP 2 2").await,
            b"From: b@example.org\r\nSubject: crlf\r\n\r\nline 1\r\nline 2\r\n"
        );
        assert_eq!(
            c.multi("TOP 3 100").await,
            crlf(b"Subject: mixed\r\nX: y\n\r\nbody\nno final newline\n")
        );

        c.ok("DELE 1").await;
        assert_eq!(c.ok("STAT").await, format!("+OK 2 {}", total - sizes[0]));
        assert!(c.err("RETR 1").await.contains("deleted"));
        assert_eq!(c.ok("UIDL 3").await, "+OK 3 1700000003.C.host");
        c.ok("RSET").await;
        c.ok("DELE 2").await;
        c.ok("NOOP").await;
        let bye = c.ok("QUIT").await;
        assert!(bye.contains("2 messages left"), "{bye}");
        assert!(c.closed().await);
        assert_eq!(srv.files(), vec![M1.to_vec(), M3.to_vec()]);
    })
    .await
}

#[tokio::test]
async fn uidls_are_stable_across_sessions_and_the_maildrop_is_not_touched() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let before: Vec<_> = walk(&srv.maildrop());
        let mut c = Client::login(srv.addr).await;
        let first = c.lines("UIDL").await;
        c.multi("RETR 1").await;
        c.ok("QUIT").await;
        assert!(c.closed().await);
        let mut c = Client::login(srv.addr).await;
        assert_eq!(c.lines("UIDL").await, first);
        c.ok("QUIT").await;
        // RETR without DELE leaves every file where it was, with its name (no new/ -> cur/ move, no flags).
        assert_eq!(walk(&srv.maildrop()), before);
    })
    .await
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["new", "cur", "tmp"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            out.push(e.unwrap().path());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        // Everything in one write, as mpop does with PIPELINING.
        c.w.write_all(
            b"USER alice\r\nPASS secret\r\nSTAT\r\nRETR 2\r\nDELE 1\r\nDELE 2\r\nLIST\r\nQUIT\r\n",
        )
        .await
        .unwrap();
        assert!(c.line().await.starts_with("+OK"));
        assert!(c.line().await.starts_with("+OK maildrop has 3"));
        assert!(c.line().await.starts_with("+OK 3 "));
        assert!(c.line().await.starts_with("+OK"));
        assert_eq!(c.body().await, M2);
        assert!(c.line().await.starts_with("+OK message 1 deleted"));
        assert!(c.line().await.starts_with("+OK message 2 deleted"));
        assert!(c.line().await.starts_with("+OK 1 messages"));
        assert_eq!(
            c.body().await,
            format!("3 {}\r\n", crlf(M3).len()).as_bytes()
        );
        assert!(c.line().await.starts_with("+OK"));
        assert!(c.closed().await);
        assert_eq!(srv.files(), vec![M3.to_vec()]);
    })
    .await
}

#[tokio::test]
async fn bad_numbers_and_wrong_state_get_clear_errors() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        assert!(c.err("STAT").await.contains("not logged in"));
        assert!(c.err("RETR 1").await.contains("not logged in"));
        assert!(c.err("PASS secret").await.contains("USER first"));
        c.ok("USER alice").await;
        c.ok("PASS secret").await;
        assert!(
            c.err("USER alice")
                .await
                .contains("not valid in this state")
        );
        for bad in [
            "RETR 0",
            "RETR -1",
            "RETR 4",
            "RETR 99999999999",
            "RETR x",
            "DELE 0",
            "TOP 1",
            "TOP 1 -1",
            "LIST 0",
            "UIDL 9",
        ] {
            let e = c.err(bad).await;
            assert!(e.len() > "-ERR ".len(), "{bad}: message says why: {e}");
        }
        c.ok("DELE 3").await;
        assert!(c.err("DELE 3").await.contains("already deleted"));
        assert!(c.err("TOP 3 0").await.contains("already deleted"));
        assert!(c.err("LIST 3").await.contains("already deleted"));
        // Still a working session after all of that.
        assert_eq!(c.lines("LIST").await.len(), 2);
        c.ok("QUIT").await;
        assert_eq!(srv.files().len(), 2);
    })
    .await
}

#[tokio::test]
async fn over_long_lines_and_binary_garbage_never_break_the_server() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        // A 10 000-octet line: -ERR, and the session goes on.
        let long = format!("USER {}", "a".repeat(10_000));
        assert!(c.err(&long).await.contains("too long"));
        // NULs, invalid UTF-8, control characters, a lone CR.
        c.w.write_all(b"\x00\x01\x02\xff\xfe\r\n").await.unwrap();
        assert!(c.line().await.starts_with("-ERR"));
        c.w.write_all(b"RETR \xc3\x28\r\n").await.unwrap();
        assert!(c.line().await.starts_with("-ERR"));
        c.w.write_all(b"\r\n").await.unwrap();
        assert!(c.line().await.starts_with("-ERR"));
        c.w.write_all(b"USER al\rice\r\n").await.unwrap();
        assert!(c.line().await.starts_with("-ERR"));
        c.ok("USER alice").await;
        c.ok("PASS secret").await;
        assert_eq!(c.lines("UIDL").await.len(), 3);
        drop(c);

        // An endless line (2 MB without LF) closes the connection.
        let (mut c, _) = Client::connect(srv.addr).await;
        let junk = vec![b'x'; 2 << 20];
        let _ = c.w.write_all(&junk).await;
        let r = c.line().await;
        assert!(r.is_empty() || r.starts_with("-ERR"), "{r}");
        assert!(c.closed().await);

        // A stream of garbage lines ends with a close, not an endless -ERR loop.
        let (mut c, _) = Client::connect(srv.addr).await;
        for _ in 0..100 {
            if c.w.write_all(b"\x13\x37 garbage\r\n").await.is_err() {
                break;
            }
        }
        assert!(c.closed().await);

        // The server still serves.
        let mut c = Client::login(srv.addr).await;
        c.ok("QUIT").await;
        assert_eq!(srv.files().len(), 3);
    })
    .await
}

#[tokio::test]
async fn a_client_vanishing_mid_retr_changes_nothing_and_releases_the_lock() {
    with_timeout(TEST_SECS, async {
        // A message far larger than socket buffers, so the server is mid-body when the client goes.
        let big: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i} of a large message\n").into_bytes())
            .collect();
        let msgs = [("new/1.big.host", &big[..]), ("new/2.small.host", M2)];
        let srv = TestServer::start(&msgs).await;
        let mut c = Client::login(srv.addr).await;
        c.ok("DELE 2").await;
        c.ok("RETR 1").await;
        let mut some = vec![0u8; 4096];
        c.r.read_exact(&mut some).await.unwrap();
        drop(c);
        // The lock is released once the server notices; a new session gets in and sees everything.
        let mut tries = 0;
        let mut c = loop {
            let mut c = Client::connect(srv.addr).await.0;
            c.ok("USER alice").await;
            let r = c.cmd("PASS secret").await;
            if r.starts_with("+OK") {
                break c;
            }
            assert!(r.contains("[IN-USE]"), "{r}");
            tries += 1;
            assert!(tries < 100, "lock never released");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(c.ok("STAT").await.starts_with("+OK 2 "));
        assert_eq!(c.multi("RETR 1").await, crlf(&big));
        c.ok("QUIT").await;
        assert_eq!(srv.files(), vec![big.clone(), M2.to_vec()]);
    })
    .await
}

#[tokio::test]
async fn a_second_session_gets_in_use() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let mut first = Client::login(srv.addr).await;
        let (mut second, _) = Client::connect(srv.addr).await;
        second.ok("USER alice").await;
        let r = second.err("PASS secret").await;
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        first.ok("DELE 1").await;
        first.ok("QUIT").await;
        assert!(first.closed().await);
        second.ok("USER alice").await;
        assert!(second.ok("PASS secret").await.contains("2 messages"));
    })
    .await
}

#[tokio::test]
async fn failed_login_gets_auth_code() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        c.ok("USER alice").await;
        assert!(c.err("PASS wrong").await.starts_with("-ERR [AUTH]"));
        c.ok("USER mallory").await;
        assert!(c.err("PASS secret").await.starts_with("-ERR [AUTH]"));
        c.ok("USER alice").await;
        assert!(c.err("PASS ").await.starts_with("-ERR [AUTH]"));
        // Third failure: the server closes.
        assert!(c.closed().await);
    })
    .await
}

#[tokio::test]
async fn auth_plain_with_continuation() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        // The continuation is "+ " CRLF (`line` trims the space).
        assert_eq!(c.cmd("AUTH PLAIN").await, "+");
        assert!(c.cmd("*").await.starts_with("-ERR"));
        assert_eq!(c.cmd("AUTH PLAIN").await, "+");
        // base64("\0alice\0secret")
        assert!(c.cmd("AGFsaWNlAHNlY3JldA==").await.starts_with("+OK"));
        assert!(c.ok("STAT").await.starts_with("+OK 3 "));
    })
    .await
}

#[tokio::test]
async fn idle_clients_are_logged_out_without_update() {
    with_timeout(TEST_SECS, async {
        let srv =
            TestServer::start_with(&three(), |c| c.idle_timeout = Duration::from_millis(300)).await;
        let mut c = Client::login(srv.addr).await;
        c.ok("DELE 1").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = c.line().await;
        assert!(r.starts_with("-ERR") && r.contains("idle"), "{r}");
        assert!(c.closed().await);
        assert_eq!(
            srv.files().len(),
            3,
            "the timeout must not remove DELE'd messages"
        );
        // And the lock is free again.
        let mut c = Client::login(srv.addr).await;
        c.ok("QUIT").await;
    })
    .await
}

#[tokio::test]
async fn stls_is_refused_without_a_certificate() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&three()).await;
        let (mut c, _) = Client::connect(srv.addr).await;
        assert!(!c.lines("CAPA").await.iter().any(|l| l == "STLS"));
        assert!(c.err("STLS").await.contains("certificate"));
        c.ok("USER alice").await;
        c.ok("PASS secret").await;
    })
    .await
}

#[tokio::test]
async fn an_empty_or_missing_maildrop() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&[]).await;
        let mut c = Client::login(srv.addr).await;
        assert_eq!(c.ok("STAT").await, "+OK 0 0");
        assert!(c.lines("LIST").await.is_empty());
        assert!(c.err("RETR 1").await.contains("no such message"));
        c.ok("QUIT").await;
        std::fs::remove_dir_all(srv.maildrop()).unwrap();
        let (mut c, _) = Client::connect(srv.addr).await;
        c.ok("USER alice").await;
        let r = c.err("PASS secret").await;
        assert!(r.starts_with("-ERR [SYS/PERM]"), "{r}");
    })
    .await
}

/// A maildrop owner plants links: `cur/` pointing at another user's files, and a message swapped for a link to a
/// file outside after LIST. RETR reads nothing outside the maildrop and QUIT deletes nothing outside it.
#[tokio::test]
async fn symbolic_links_never_lead_out_of_the_maildrop() {
    with_timeout(TEST_SECS, async {
        let srv = TestServer::start(&[("new/1.a.host", M1), ("new/2.b.host", M2)]).await;
        let outside = srv.dir.path().join("bob-private");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(
            outside.join("9.secret.host:2,S"),
            b"Subject: bob's\n\nsecret\n",
        )
        .unwrap();
        let drop = srv.maildrop();
        std::fs::remove_dir(drop.join("cur")).unwrap();
        std::os::unix::fs::symlink(&outside, drop.join("cur")).unwrap();

        let mut c = Client::login(srv.addr).await;
        // Only the two real messages are listed: the linked cur/ is not read.
        assert!(
            c.ok("STAT").await.starts_with("+OK 2 "),
            "linked cur/ was listed"
        );
        // Message 1 becomes a link to bob's file after LIST.
        std::fs::remove_file(drop.join("new/1.a.host")).unwrap();
        std::os::unix::fs::symlink(outside.join("9.secret.host:2,S"), drop.join("new/1.a.host"))
            .unwrap();
        let r = c.err("RETR 1").await;
        assert!(r.contains("no longer available"), "{r}");
        assert_eq!(c.multi("RETR 2").await, crlf(M2));
        c.ok("DELE 1").await;
        c.ok("DELE 2").await;
        // RFC 1939 §6: the impostor is not removed, and QUIT says so.
        let r = c.err("QUIT").await;
        assert!(r.contains("not removed (1 of 2)"), "{r}");
        assert!(c.closed().await);
        // Bob's file is still there; the planted link was left alone; message 2 is gone.
        assert!(outside.join("9.secret.host:2,S").exists());
        assert!(std::fs::symlink_metadata(drop.join("new/1.a.host")).is_ok());
        assert!(!drop.join("new/2.b.host").exists());
    })
    .await
}
