//! The POP3 client against a scripted in-test server on loopback: logins, listings, -ERR, a connection closed
//! mid-RETR, dot-stuffing, a 50 MiB message streamed, TLS verification, STLS, and maildir fetch safety.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use popguard::client::fetch::{self, FetchOptions, FetchSummary, Progress};
use popguard::client::maildir::Maildir;
use popguard::client::{
    AuthMethod, Client, ClientError, ConnectOptions, Eol, Security, apop_digest,
};
use popguard::secret::Secret;
use popguard::tls::TlsMode;
use popguard_test_support::{TestCa, with_timeout};

/// Every test ends within this, so a deadlock fails instead of hanging CI.
const TEST_SECS: u64 = 60;
/// The 50 MiB streaming test moves the message through un-stuffing twice; unoptimised builds need longer.
const HUGE_SECS: u64 = 240;
const HUGE_SIZE: usize = 50 * 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
enum Body {
    Bytes(Vec<u8>),
    /// `huge_line(0..)` repeated until at least this many octets, generated while sending.
    Huge(usize),
}

fn huge_line(i: usize) -> String {
    // Every 50th line starts with a dot, so stuffing is exercised all the way through.
    format!(
        "{}line {i:08} of a very large message, padded to look like text\r\n",
        if i.is_multiple_of(50) { "." } else { "" }
    )
}

/// The huge message in chunks (wire form before stuffing), for both the server and the expected hash.
fn huge_chunks(size: usize, mut f: impl FnMut(&[u8])) -> usize {
    let (mut total, mut i, mut buf) = (0, 0, String::new());
    while total < size {
        let l = huge_line(i);
        total += l.len();
        buf.push_str(&l);
        i += 1;
        if buf.len() >= 64 * 1024 {
            f(buf.as_bytes());
            buf.clear();
        }
    }
    f(buf.as_bytes());
    total
}

/// LF → CRLF (bare LF only), dot-stuffing, terminator: what a POP3 server sends.
fn stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The message as POP3 carries it before stuffing: CRLF line ends. Its length is the LIST size (RFC 1939 §11).
fn crlf(content: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(content)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn wire_size(body: &Body) -> usize {
    match body {
        Body::Bytes(b) => crlf(b).len(),
        Body::Huge(n) => huge_chunks(*n, |_| {}),
    }
}

#[derive(Clone)]
struct Script {
    greeting: String,
    capa: Option<Vec<String>>,
    uidl: bool,
    user: String,
    password: String,
    close_mid_retr: Option<u32>,
    err_on_retr: Option<u32>,
    stls: Option<Arc<rustls::ServerConfig>>,
    inject_after_stls: bool,
    implicit_tls: Option<Arc<rustls::ServerConfig>>,
    /// Greet, then never answer anything.
    stall: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "+OK scripted server ready <1896.697170952@dbc.mtview.ca.us>".into(),
            capa: Some(vec![
                "TOP".into(),
                "UIDL".into(),
                "USER".into(),
                "RESP-CODES".into(),
            ]),
            uidl: true,
            user: "alice".into(),
            password: "s3cret".into(),
            close_mid_retr: None,
            err_on_retr: None,
            stls: None,
            inject_after_stls: false,
            implicit_tls: None,
            stall: false,
        }
    }
}

/// The server's maildrop and a transcript of every command it received (passwords redacted).
#[derive(Default)]
struct Shared {
    maildrop: Mutex<Vec<(String, Body)>>,
    commands: Mutex<Vec<String>>,
}

impl Shared {
    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
    fn uids(&self) -> Vec<String> {
        self.maildrop
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.0.clone())
            .collect()
    }
}

struct Fake {
    port: u16,
    shared: Arc<Shared>,
}

async fn start(script: Script, messages: Vec<(&str, Body)>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = Arc::new(Shared::default());
    *shared.maildrop.lock().unwrap() = messages
        .into_iter()
        .map(|(u, b)| (u.to_string(), b))
        .collect();
    let sh = shared.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, sh) = (script.clone(), sh.clone());
            tokio::spawn(async move {
                let io: Box<dyn Io> = match &script.implicit_tls {
                    Some(cfg) => match tokio_rustls::TlsAcceptor::from(cfg.clone())
                        .accept(tcp)
                        .await
                    {
                        Ok(t) => Box::new(t),
                        Err(_) => return,
                    },
                    None => Box::new(tcp),
                };
                let _ = session(io, &script, &sh).await;
            });
        }
    });
    Fake { port, shared }
}

async fn session(io: Box<dyn Io>, script: &Script, shared: &Shared) -> std::io::Result<()> {
    let mut conn = BufReader::new(io);
    conn.write_all(format!("{}\r\n", script.greeting).as_bytes())
        .await?;
    conn.flush().await?;
    let snapshot = shared.maildrop.lock().unwrap().clone();
    let mut deleted: BTreeSet<usize> = BTreeSet::new();
    let mut authed = false;
    let mut user = None;
    loop {
        let mut line = Vec::new();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let mut words = text.split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let logged = if verb == "PASS" || verb == "AUTH" || verb == "APOP" {
            verb.clone()
        } else {
            text.clone()
        };
        shared.commands.lock().unwrap().push(logged);
        if script.stall {
            continue;
        }
        let num = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
        let live = |n: Option<usize>| {
            n.filter(|&n| n >= 1 && n <= snapshot.len() && !deleted.contains(&n))
        };
        let mut reply: Vec<u8> = Vec::new();
        match verb.as_str() {
            "CAPA" => match &script.capa {
                Some(lines) => {
                    reply.extend_from_slice(b"+OK capabilities\r\n");
                    for l in lines {
                        reply.extend_from_slice(format!("{l}\r\n").as_bytes());
                    }
                    reply.extend_from_slice(b".\r\n");
                }
                None => reply.extend_from_slice(b"-ERR unknown command\r\n"),
            },
            "STLS" => match &script.stls {
                Some(cfg) => {
                    let mut ok = b"+OK begin TLS\r\n".to_vec();
                    if script.inject_after_stls {
                        ok.extend_from_slice(b"+OK injected in clear text\r\n");
                    }
                    conn.write_all(&ok).await?;
                    conn.flush().await?;
                    let tls = tokio_rustls::TlsAcceptor::from(cfg.clone())
                        .accept(conn.into_inner())
                        .await?;
                    let io: Box<dyn Io> = Box::new(tls);
                    conn = BufReader::new(io);
                    continue;
                }
                None => reply.extend_from_slice(b"-ERR STLS not available\r\n"),
            },
            "USER" => {
                user = args.first().map(|s| s.to_string());
                reply.extend_from_slice(b"+OK\r\n");
            }
            "PASS" => {
                if user.as_deref() == Some(&script.user) && args.join(" ") == script.password {
                    authed = true;
                    reply.extend_from_slice(b"+OK logged in\r\n");
                } else {
                    reply.extend_from_slice(b"-ERR [AUTH] invalid login\r\n");
                }
            }
            "AUTH"
                if args
                    .first()
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) =>
            {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(args.get(1).unwrap_or(&""))
                    .unwrap_or_default();
                let expected = format!("\0{}\0{}", script.user, script.password);
                if raw == expected.as_bytes() {
                    authed = true;
                    reply.extend_from_slice(b"+OK logged in\r\n");
                } else {
                    reply.extend_from_slice(b"-ERR [AUTH] invalid login\r\n");
                }
            }
            "APOP" => {
                let stamp = &script.greeting[script.greeting.find('<').unwrap()..];
                let want = apop_digest(stamp, &Secret::new(script.password.clone()));
                if args.first() == Some(&script.user.as_str())
                    && args.get(1) == Some(&want.expose())
                {
                    authed = true;
                    reply.extend_from_slice(b"+OK logged in\r\n");
                } else {
                    reply.extend_from_slice(b"-ERR [AUTH] invalid login\r\n");
                }
            }
            "QUIT" => {
                if authed {
                    let mut md = shared.maildrop.lock().unwrap();
                    let gone: BTreeSet<String> =
                        deleted.iter().map(|&n| snapshot[n - 1].0.clone()).collect();
                    md.retain(|m| !gone.contains(&m.0));
                }
                conn.write_all(b"+OK bye\r\n").await?;
                conn.flush().await?;
                return Ok(());
            }
            _ if !authed => reply.extend_from_slice(b"-ERR log in first\r\n"),
            "STAT" => {
                let (n, size) = snapshot
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !deleted.contains(&(i + 1)))
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + wire_size(&m.1)));
                reply.extend_from_slice(format!("+OK {n} {size}\r\n").as_bytes());
            }
            "LIST" | "UIDL" if verb == "UIDL" && !script.uidl => {
                reply.extend_from_slice(b"-ERR no UIDL here\r\n")
            }
            "LIST" | "UIDL" => {
                let item = |n: usize| -> String {
                    let m = &snapshot[n - 1];
                    if verb == "LIST" {
                        format!("{n} {}", wire_size(&m.1))
                    } else {
                        format!("{n} {}", m.0)
                    }
                };
                if args.is_empty() {
                    reply.extend_from_slice(b"+OK\r\n");
                    for n in 1..=snapshot.len() {
                        if !deleted.contains(&n) {
                            reply.extend_from_slice(format!("{}\r\n", item(n)).as_bytes());
                        }
                    }
                    reply.extend_from_slice(b".\r\n");
                } else {
                    match live(num(0)) {
                        Some(n) => {
                            reply.extend_from_slice(format!("+OK {}\r\n", item(n)).as_bytes())
                        }
                        None => reply.extend_from_slice(b"-ERR no such message\r\n"),
                    }
                }
            }
            "RETR" | "TOP" => match live(num(0)) {
                None => reply.extend_from_slice(b"-ERR no such message\r\n"),
                Some(n) if script.err_on_retr == Some(n as u32) => {
                    reply.extend_from_slice(b"-ERR [SYS/TEMP] message is locked, try later\r\n")
                }
                Some(n) => {
                    let body = snapshot[n - 1].1.clone();
                    conn.write_all(b"+OK message follows\r\n").await?;
                    match body {
                        Body::Huge(size) => {
                            let mut pending = Vec::new();
                            huge_chunks(size, |c| pending.push(stuff_lines(c)));
                            for c in pending {
                                conn.write_all(&c).await?;
                            }
                            conn.write_all(b".\r\n").await?;
                        }
                        Body::Bytes(b) => {
                            let b = if verb == "TOP" {
                                top_of(&b, num(1).unwrap_or(0))
                            } else {
                                b
                            };
                            let wire = stuff(&b);
                            if script.close_mid_retr == Some(n as u32) {
                                conn.write_all(&wire[..wire.len() / 2]).await?;
                                conn.flush().await?;
                                return Ok(());
                            }
                            conn.write_all(&wire).await?;
                        }
                    }
                }
            },
            "DELE" => match live(num(0)) {
                Some(n) => {
                    deleted.insert(n);
                    reply.extend_from_slice(b"+OK marked\r\n");
                }
                None => reply.extend_from_slice(b"-ERR no such message\r\n"),
            },
            "RSET" => {
                deleted.clear();
                reply.extend_from_slice(b"+OK\r\n");
            }
            "NOOP" => reply.extend_from_slice(b"+OK\r\n"),
            _ => reply.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        conn.write_all(&reply).await?;
        conn.flush().await?;
    }
}

/// Dot-stuffs complete CRLF lines (the huge message is generated as whole lines).
fn stuff_lines(chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 64);
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

fn top_of(msg: &[u8], lines: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut out = format!("{head}\n\n");
    for l in body.lines().take(lines) {
        out.push_str(l);
        out.push('\n');
    }
    out.into_bytes()
}

fn msg(i: usize) -> Vec<u8> {
    format!(
        "From: sender{i}@example.org\nTo: alice@example.org\nSubject: message {i}\n\nfirst body line\n.starts with a dot\n..two dots\n.\nlast line {i}\n"
    )
    .into_bytes()
}

fn messages(n: usize) -> Vec<(String, Body)> {
    (1..=n)
        .map(|i| (format!("uid-{i:04}"), Body::Bytes(msg(i))))
        .collect()
}

fn opts(port: u16) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.timeout = Duration::from_secs(20);
    o
}

async fn start_with(script: Script, n: usize) -> Fake {
    let msgs = messages(n);
    let f = start(script, vec![]).await;
    *f.shared.maildrop.lock().unwrap() = msgs;
    f
}

async fn logged_in(fake: &Fake) -> Client<popguard::tls::MaybeTls<TcpStream>> {
    let mut c = Client::connect(&opts(fake.port)).await.unwrap();
    c.login("alice", &Secret::new("s3cret"), AuthMethod::Auto)
        .await
        .unwrap();
    c
}

#[tokio::test]
async fn user_pass_login_and_listings() {
    with_timeout(TEST_SECS, async {
        let fake = start_with(Script::default(), 3).await;
        let mut c = logged_in(&fake).await;
        let sizes: Vec<u64> = (1..=3).map(|i| crlf(&msg(i)).len() as u64).collect();
        assert_eq!(c.stat().await.unwrap(), (3, sizes.iter().sum()));
        assert_eq!(
            c.list().await.unwrap(),
            vec![(1, sizes[0]), (2, sizes[1]), (3, sizes[2])]
        );
        assert_eq!(c.list_one(2).await.unwrap(), sizes[1]);
        assert_eq!(c.uidl().await.unwrap()[2], (3, "uid-0003".to_string()));
        assert_eq!(c.uidl_one(1).await.unwrap(), "uid-0001");
        c.noop().await.unwrap();
        c.quit().await.unwrap();
        let cmds = fake.shared.commands();
        assert_eq!(&cmds[..3], ["CAPA", "USER alice", "PASS"], "{cmds:?}");
    })
    .await
}

#[tokio::test]
async fn auth_plain_when_user_is_not_offered_and_apop_on_request() {
    with_timeout(TEST_SECS, async {
        let script = Script {
            capa: Some(vec!["SASL PLAIN".into(), "UIDL".into()]),
            ..Script::default()
        };
        let fake = start_with(script, 1).await;
        let mut c = Client::connect(&opts(fake.port)).await.unwrap();
        let used = c
            .login("alice", &Secret::new("s3cret"), AuthMethod::Auto)
            .await
            .unwrap();
        assert_eq!(used, AuthMethod::Plain);
        assert_eq!(c.stat().await.unwrap().0, 1);
        c.quit().await.unwrap();
        assert!(fake.shared.commands().contains(&"AUTH".to_string()));

        let mut c = Client::connect(&opts(fake.port)).await.unwrap();
        assert_eq!(
            c.apop_timestamp(),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        c.login("alice", &Secret::new("s3cret"), AuthMethod::Apop)
            .await
            .unwrap();
        c.quit().await.unwrap();

        let mut c = Client::connect(&opts(fake.port)).await.unwrap();
        let err = c
            .login("alice", &Secret::new("wrong"), AuthMethod::Apop)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::LoginFailed { .. }), "{text}");
        assert!(
            text.contains("[AUTH]") && text.contains("check the user name and password"),
            "{text}"
        );
        assert!(
            !text.contains("wrong"),
            "the password must not appear in errors: {text}"
        );
    })
    .await
}

#[tokio::test]
async fn err_replies_are_reported_and_the_session_goes_on() {
    with_timeout(TEST_SECS, async {
        let fake = start_with(
            Script {
                err_on_retr: Some(2),
                ..Script::default()
            },
            3,
        )
        .await;
        let mut c = logged_in(&fake).await;
        let err = c.retr(2, 1 << 20).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "the server said -ERR [SYS/TEMP] message is locked, try later (in reply to RETR)"
            ),
            "{text}"
        );
        let err = c.retr(9, 1 << 20).await.unwrap_err();
        assert!(err.to_string().contains("no such message"), "{err}");
        c.dele(1).await.unwrap();
        assert!(
            c.retr(1, 1 << 20).await.is_err(),
            "a deleted message is gone for the session"
        );
        c.rset().await.unwrap();
        assert_eq!(c.retr(1, 1 << 20).await.unwrap(), crlf(&msg(1)));
        c.quit().await.unwrap();
        assert_eq!(fake.shared.uids().len(), 3, "RSET undid the DELE");
    })
    .await
}

#[tokio::test]
async fn a_connection_closed_mid_retr_is_a_clear_error() {
    with_timeout(TEST_SECS, async {
        let fake = start_with(
            Script {
                close_mid_retr: Some(1),
                ..Script::default()
            },
            2,
        )
        .await;
        let mut c = logged_in(&fake).await;
        let mut sink = Vec::new();
        let err = c.retr_to(1, &mut sink, Eol::Lf).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::ClosedMidMessage {
                    command: "RETR",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("closed the connection in the middle of a message"),
            "{err}"
        );
        assert!(matches!(c.noop().await, Err(ClientError::Broken)));
    })
    .await
}

#[tokio::test]
async fn dot_stuffed_lines_come_back_exactly() {
    with_timeout(TEST_SECS, async {
        let fake = start_with(Script::default(), 1).await;
        let mut c = logged_in(&fake).await;
        let mut lf = Vec::new();
        c.retr_to(1, &mut lf, Eol::Lf).await.unwrap();
        assert_eq!(lf, msg(1), "LF form equals the original");
        let wire = c.retr(1, 1 << 20).await.unwrap();
        assert_eq!(String::from_utf8(wire).unwrap(), String::from_utf8(crlf(&msg(1))).unwrap());
        let top = c.top(1, 2, 1 << 20).await.unwrap();
        assert_eq!(
            String::from_utf8(top).unwrap(),
            "From: sender1@example.org\r\nTo: alice@example.org\r\nSubject: message 1\r\n\r\nfirst body line\r\n.starts with a dot\r\n"
        );
        c.quit().await.unwrap();
    })
    .await
}

/// Counts and hashes what it is given, remembering the largest single write: proof the body arrives in pieces.
#[derive(Default)]
struct HashSink {
    hash: Sha256,
    total: usize,
    largest_write: usize,
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.hash.update(buf);
        self.total += buf.len();
        self.largest_write = self.largest_write.max(buf.len());
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_50_mib_message_is_streamed_not_buffered() {
    with_timeout(HUGE_SECS, async {
        let fake = start(
            Script::default(),
            vec![
                ("huge", Body::Huge(HUGE_SIZE)),
                ("small", Body::Bytes(msg(2))),
            ],
        )
        .await;
        let mut c = logged_in(&fake).await;
        let mut expected = Sha256::new();
        let size = huge_chunks(HUGE_SIZE, |c| expected.update(c));
        assert_eq!(c.list_one(1).await.unwrap(), size as u64);

        let mut sink = HashSink::default();
        let written = c.retr_to(1, &mut sink, Eol::Crlf).await.unwrap();
        assert_eq!((written as usize, sink.total), (size, size));
        assert_eq!(sink.hash.finalize(), expected.finalize(), "content differs");
        assert!(
            sink.largest_write <= 1 << 20,
            "one write of {} octets: the body was buffered",
            sink.largest_write
        );

        // In memory with a cap: refused, and the session is still in step afterwards.
        let err = c.retr(1, 1 << 20).await.unwrap_err();
        assert!(
            matches!(err, ClientError::TooLarge { limit: 1048576, .. }),
            "{err}"
        );
        assert_eq!(c.retr(2, 1 << 20).await.unwrap(), crlf(&msg(2)));
        c.quit().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_silent_server_times_out() {
    with_timeout(TEST_SECS, async {
        let fake = start_with(
            Script {
                stall: true,
                ..Script::default()
            },
            1,
        )
        .await;
        let mut o = opts(fake.port);
        o.tls = Some(TlsMode::None);
        o.timeout = Duration::from_millis(300);
        let mut c = Client::connect(&o).await.unwrap();
        let err = c.stat().await.unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { what: "STAT", .. }),
            "{err}"
        );
    })
    .await
}

// ---- TLS ----

/// A test CA and a server certificate for `names`, signed by it.
fn pki(names: &[&str]) -> TestCa {
    TestCa::new_with("popguard client test CA", names)
}

#[tokio::test]
async fn implicit_tls_verifies_the_certificate_and_the_name() {
    with_timeout(TEST_SECS, async {
        let good = pki(&["localhost", "127.0.0.1"]);
        let ca = good.ca_file.clone();
        let fake = start_with(
            Script {
                implicit_tls: Some(good.server_config()),
                ..Script::default()
            },
            2,
        )
        .await;

        let mut o = opts(fake.port);
        o.tls = Some(TlsMode::Implicit);
        let err = Client::connect(&o)
            .await
            .err()
            .expect("an unknown CA must be refused");
        let text = err.to_string();
        assert!(matches!(err, ClientError::TlsVerify { .. }), "{text}");
        assert!(
            text.contains("TLS verification of 127.0.0.1 failed because")
                && text.contains("--ca-file"),
            "{text}"
        );

        o.ca_file = Some(ca.clone());
        let mut c = Client::connect(&o).await.unwrap();
        assert_eq!(c.security(), Security::Implicit);
        c.login("alice", &Secret::new("s3cret"), AuthMethod::Auto)
            .await
            .unwrap();
        assert_eq!(c.stat().await.unwrap().0, 2);
        c.quit().await.unwrap();

        // A certificate for another name is refused even from a trusted CA.
        let other = pki(&["mail.example.org"]);
        let ca2 = other.ca_file.clone();
        let fake2 = start_with(
            Script {
                implicit_tls: Some(other.server_config()),
                ..Script::default()
            },
            1,
        )
        .await;
        let mut o = opts(fake2.port);
        o.tls = Some(TlsMode::Implicit);
        o.ca_file = Some(ca2);
        let err = Client::connect(&o)
            .await
            .err()
            .expect("a name mismatch must be refused");
        assert!(matches!(err, ClientError::TlsVerify { .. }), "{err}");
        assert!(err.to_string().contains("not valid for"), "{err}");
    })
    .await
}

#[tokio::test]
async fn stls_by_default_when_offered_and_capabilities_are_asked_again() {
    with_timeout(TEST_SECS, async {
        let p = pki(&["127.0.0.1"]);
        let script = Script {
            capa: Some(vec!["USER".into(), "UIDL".into(), "STLS".into()]),
            stls: Some(p.server_config()),
            ..Script::default()
        };
        let fake = start_with(script, 2).await;
        let mut o = opts(fake.port);
        o.ca_file = Some(p.ca_file.clone());
        let mut c = Client::connect(&o).await.unwrap();
        assert_eq!(c.security(), Security::StartTls);
        c.login("alice", &Secret::new("s3cret"), AuthMethod::Auto)
            .await
            .unwrap();
        assert_eq!(c.stat().await.unwrap().0, 2);
        c.quit().await.unwrap();
        let cmds = fake.shared.commands();
        assert_eq!(
            &cmds[..4],
            ["CAPA", "STLS", "CAPA", "USER alice"],
            "{cmds:?}"
        );
    })
    .await
}

#[tokio::test]
async fn stls_refusals_and_injection() {
    with_timeout(TEST_SECS, async {
        // No STLS on a loopback server: clear text by default, a clear error when STLS was asked for.
        let fake = start_with(Script::default(), 1).await;
        let c = Client::connect(&opts(fake.port)).await.unwrap();
        assert_eq!(c.security(), Security::Plain);
        let mut o = opts(fake.port);
        o.tls = Some(TlsMode::StartTls);
        let err = Client::connect(&o).await.err().expect("STLS was required");
        assert!(matches!(err, ClientError::NoStls { .. }), "{err}");
        assert!(err.to_string().contains("--tls implicit"), "{err}");

        // Data after "+OK" to STLS and before the handshake is refused.
        let p = pki(&["127.0.0.1"]);
        let script = Script {
            capa: Some(vec!["USER".into(), "STLS".into()]),
            stls: Some(p.server_config()),
            inject_after_stls: true,
            ..Script::default()
        };
        let fake = start_with(script, 1).await;
        let err = Client::connect(&opts(fake.port))
            .await
            .err()
            .expect("injection must be refused");
        assert!(err.to_string().contains("injection"), "{err}");
    })
    .await
}

// ---- fetch ----

fn fetch_opts(delete: bool, new_only: bool) -> FetchOptions {
    FetchOptions {
        delete,
        new_only,
        account: "alice@127.0.0.1".into(),
        eol: Eol::Lf,
    }
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut contents: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    contents.sort();
    contents
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test]
async fn fetch_delete_saves_everything_then_commits_at_quit() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Maildir")).unwrap();
        let fake = start_with(Script::default(), 5).await;
        let c = logged_in(&fake).await;
        let mut summary = FetchSummary::default();
        fetch::fetch(c, &md, &fetch_opts(true, false), &mut summary, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(
            (summary.fetched, summary.deleted, summary.committed),
            (5, 5, true)
        );
        assert_eq!(
            files_in(&md.root().join("new")),
            sorted((1..=5).map(msg).collect())
        );
        assert!(files_in(&md.root().join("tmp")).is_empty());
        assert!(
            fake.shared.uids().is_empty(),
            "QUIT committed the deletions"
        );
    })
    .await
}

#[tokio::test]
async fn fetch_interrupted_mid_message_deletes_nothing_and_keeps_no_partial_file() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Maildir")).unwrap();
        let fake = start_with(
            Script {
                close_mid_retr: Some(3),
                ..Script::default()
            },
            5,
        )
        .await;
        let c = logged_in(&fake).await;
        let mut summary = FetchSummary::default();
        let err = fetch::fetch(c, &md, &fetch_opts(true, false), &mut summary, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::ClosedMidMessage { .. }), "{err}");
        assert_eq!(
            (summary.fetched, summary.deleted, summary.committed),
            (2, 2, false)
        );
        assert_eq!(
            files_in(&md.root().join("new")),
            sorted(vec![msg(1), msg(2)])
        );
        assert!(
            files_in(&md.root().join("tmp")).is_empty(),
            "the half message was removed"
        );
        let cmds = fake.shared.commands();
        assert!(
            cmds.contains(&"DELE 2".into()) && !cmds.contains(&"DELE 3".into()),
            "{cmds:?}"
        );
        assert_eq!(
            fake.shared.uids().len(),
            5,
            "no QUIT, so the server deleted nothing"
        );
    })
    .await
}

#[tokio::test]
async fn fetch_local_write_failure_commits_only_the_saved_messages() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Maildir")).unwrap();
        let fake = start_with(Script::default(), 5).await;
        let c = logged_in(&fake).await;
        let tmp = md.root().join("tmp");
        // After message 2 is saved, tmp/ stops being a directory: message 3 cannot be written.
        let mut break_disk = |p: Progress| {
            if let Progress::Saved { number: 2, .. } = p {
                std::fs::remove_dir(&tmp).unwrap();
                std::fs::write(&tmp, b"not a directory").unwrap();
            }
        };
        let mut summary = FetchSummary::default();
        let err = fetch::fetch(
            c,
            &md,
            &fetch_opts(true, false),
            &mut summary,
            &mut break_disk,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::Maildir { .. }), "{err}");
        assert_eq!(
            (summary.fetched, summary.deleted, summary.committed),
            (2, 2, true)
        );
        assert_eq!(
            files_in(&md.root().join("new")),
            sorted(vec![msg(1), msg(2)])
        );
        assert_eq!(
            fake.shared.uids(),
            ["uid-0003", "uid-0004", "uid-0005"],
            "QUIT committed exactly the deletions of the saved messages"
        );
    })
    .await
}

#[tokio::test]
async fn fetch_new_only_skips_what_it_has_seen() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Maildir")).unwrap();
        let fake = start_with(Script::default(), 3).await;
        let mut s1 = FetchSummary::default();
        fetch::fetch(
            logged_in(&fake).await,
            &md,
            &fetch_opts(false, true),
            &mut s1,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!((s1.fetched, s1.skipped), (3, 0));
        let mut s2 = FetchSummary::default();
        fetch::fetch(
            logged_in(&fake).await,
            &md,
            &fetch_opts(false, true),
            &mut s2,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!((s2.fetched, s2.skipped), (0, 3));
        fake.shared
            .maildrop
            .lock()
            .unwrap()
            .push(("uid-new".into(), Body::Bytes(msg(9))));
        let mut s3 = FetchSummary::default();
        fetch::fetch(
            logged_in(&fake).await,
            &md,
            &fetch_opts(false, true),
            &mut s3,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!((s3.fetched, s3.skipped), (1, 3));
        assert_eq!(files_in(&md.root().join("new")).len(), 4);
        assert_eq!(
            fake.shared.uids().len(),
            4,
            "keep mode leaves the maildrop alone"
        );
    })
    .await
}

#[tokio::test]
async fn fetch_new_only_needs_uidl() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open_or_create(dir.path().join("Maildir")).unwrap();
        let fake = start_with(
            Script {
                uidl: false,
                ..Script::default()
            },
            2,
        )
        .await;
        let mut s = FetchSummary::default();
        let err = fetch::fetch(
            logged_in(&fake).await,
            &md,
            &fetch_opts(false, true),
            &mut s,
            &mut |_| {},
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--new-only needs UIDL"), "{err}");
        // Without --new-only the same server is fine.
        let mut s = FetchSummary::default();
        fetch::fetch(
            logged_in(&fake).await,
            &md,
            &fetch_opts(false, false),
            &mut s,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(s.fetched, 2);
    })
    .await
}

// ---- the command line ----

async fn cli(args: &[&str], password: Option<&str>, stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_popguard"));
    cmd.arg("client").args(args).kill_on_drop(true);
    cmd.env_remove("POPGUARD_PASSWORD");
    if let Some(p) = password {
        cmd.env("POPGUARD_PASSWORD", p);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn cli_commands_against_the_scripted_server() {
    with_timeout(TEST_SECS, async {
        let dir = tempfile::tempdir().unwrap();
        let fake = start_with(Script::default(), 3).await;
        let server = format!("127.0.0.1:{}", fake.port);
        let base = ["--server", server.as_str(), "--user", "alice"];
        let with = |rest: &[&'static str]| -> Vec<String> {
            base.iter().chain(rest.iter()).map(|s| s.to_string()).collect()
        };
        let run = |a: Vec<String>, pw: Option<&'static str>, stdin: Option<&'static str>| async move {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            cli(&refs, pw, stdin).await
        };

        let (ok, out, err) = run(with(&["stat"]), Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert!(out.starts_with("3 messages, "), "{out}");

        // Password as one line on a non-terminal stdin.
        let (ok, out, err) = run(with(&["uidl"]), None, Some("s3cret\n")).await;
        assert!(ok, "{err}");
        assert_eq!(out, "1 uid-0001\n2 uid-0002\n3 uid-0003\n");

        let (ok, _, err) = run(with(&["list"]), None, None).await;
        assert!(!ok && err.contains("no password"), "{err}");

        let (ok, _, err) = run(with(&["list"]), Some("nope"), None).await;
        assert!(!ok && err.contains("login as alice failed"), "{err}");

        let (ok, out, err) = run(with(&["retr", "2"]), Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert_eq!(out.as_bytes(), msg(2));

        let file = dir.path().join("m1.eml");
        let mut a = with(&["retr", "1", "-o"]);
        a.push(file.display().to_string());
        let (ok, _, err) = run(a, Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), msg(1));

        let (ok, out, err) = run(with(&["top", "3", "0"]), Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert!(out.ends_with("Subject: message 3\n\n"), "{out:?}");

        let (ok, out, err) = run(with(&["dele", "2"]), Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert_eq!(out, "message 2 deleted\n");
        assert_eq!(fake.shared.uids(), ["uid-0001", "uid-0003"], "dele committed with QUIT");

        let md = dir.path().join("md");
        let mut a = with(&["fetch", "--delete", "--to"]);
        a.push(md.display().to_string());
        let (ok, _, err) = run(a, Some("s3cret"), None).await;
        assert!(ok, "{err}");
        assert!(err.contains("fetched 2 of 2 messages") && err.contains("deleted 2 from the server"), "{err}");
        assert_eq!(files_in(&md.join("new")), sorted(vec![msg(1), msg(3)]));
        assert!(fake.shared.uids().is_empty());
    })
    .await
}

#[tokio::test]
async fn cli_refuses_clear_text_to_a_remote_host_in_help_and_parses_servers() {
    with_timeout(TEST_SECS, async {
        let (ok, out, _) = cli(&["--help"], None, None).await;
        assert!(ok);
        assert!(
            out.contains("refuses to send a password in clear text")
                && out.contains("POPGUARD_PASSWORD"),
            "{out}"
        );
        assert!(
            out.contains("QUIT"),
            "dele's help says it sends QUIT: {out}"
        );
        let (ok, _, err) = cli(
            &["--server", "a:b:c", "--user", "u", "stat"],
            Some("x"),
            None,
        )
        .await;
        assert!(!ok && err.contains("IPv6 address in brackets"), "{err}");
        let (ok, _, err) = cli(
            &["--server", "host:0", "--user", "u", "stat"],
            Some("x"),
            None,
        )
        .await;
        assert!(!ok && err.contains("expected HOST:PORT"), "{err}");
    })
    .await
}
