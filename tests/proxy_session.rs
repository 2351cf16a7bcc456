//! In-process tests of the proxy session over in-memory pipes, against a scripted upstream: the edge cases a real
//! server cannot be made to produce on demand (a connection cut in the middle of RETR, no UIDL, no TOP, no CAPA),
//! plus the renumbering, tagging and deletion rules. The real-peer evidence (Dovecot and real clients) is in
//! `tests/proxy_peers.rs`.
//!
//! Scoring is a fixed function here (spam = contains `SPAM-ME`), so these tests do not depend on rule tuning.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::prelude::*;
use md5::{Digest, Md5};
use popguard::config::Config;
use popguard::filter::{Filter, Hit, Verdict};
use popguard::pop3::{Command, Pop3Error, Pop3Stream, Response, Stuffer};
use popguard::proxy::Proxy;
use popguard::proxy::session::serve_connection;
use popguard::proxy::upstream::Connect;
use popguard::store::quarantine::Quarantine;
use tokio::io::{DuplexStream, duplex};

/// Every test finishes in well under this; a deadlock fails instead of hanging.
const T: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future<Output = R>, R>(f: F) -> R {
    tokio::time::timeout(T, f).await.expect("test timed out")
}

// ---------------------------------------------------------------- scripted upstream

#[derive(Clone, Debug)]
struct Msg {
    uidl: String,
    data: Vec<u8>,
}

fn msg(uidl: &str, subject: &str, body: &str) -> Msg {
    Msg {
        uidl: uidl.into(),
        data: format!(
            "Return-Path: <a@example.org>\r\nFrom: Alice <a@example.org>\r\nTo: b@example.org\r\n\
             Subject: {subject}\r\nMessage-ID: <{uidl}@test>\r\n\r\n{body}"
        )
        .into_bytes(),
    }
}

/// Two hams around a spam; the bodies have dot-leading lines to exercise stuffing.
fn mixed() -> Vec<Msg> {
    vec![
        msg(
            "uid-a",
            "Lunch on Friday",
            "Hi,\r\n.see you there\r\n-- \r\nA\r\n",
        ),
        msg(
            "uid-b",
            "SPAM-ME cheap pills",
            "Buy now\r\n..\r\n.\r\nend\r\n",
        ),
        msg("uid-c", "Minutes", "Attached.\r\n"),
    ]
}

#[derive(Clone, Debug)]
struct Behaviour {
    capa: Option<Vec<&'static str>>,
    uidl: bool,
    top: bool,
    greeting: String,
    /// RETR of this message drops the connection after this many body bytes.
    cut_retr: Option<(u32, usize)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            capa: Some(vec![
                "TOP",
                "UIDL",
                "RESP-CODES",
                "PIPELINING",
                "AUTH-RESP-CODE",
                "STLS",
                "USER",
                "SASL PLAIN LOGIN GSSAPI",
                "X-SECRET-EXTENSION",
            ]),
            uidl: true,
            top: true,
            greeting: "Fake POP3 ready <1234.5678@fake.test>".into(),
            cut_retr: None,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    msgs: Vec<Msg>,
    log: Vec<String>,
    quits: usize,
    hosts: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    b: Behaviour,
    s: Arc<Mutex<Shared>>,
}

impl Fake {
    fn new(msgs: Vec<Msg>, b: Behaviour) -> Fake {
        Fake {
            b,
            s: Arc::new(Mutex::new(Shared {
                msgs,
                ..Shared::default()
            })),
        }
    }

    fn log(&self) -> Vec<String> {
        self.s.lock().unwrap().log.clone()
    }

    fn uidls(&self) -> Vec<String> {
        self.s
            .lock()
            .unwrap()
            .msgs
            .iter()
            .map(|m| m.uidl.clone())
            .collect()
    }

    fn quits(&self) -> usize {
        self.s.lock().unwrap().quits
    }

    fn count(&self, verb: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(verb)).count()
    }

    async fn serve(self, io: DuplexStream) {
        let mut s = Pop3Stream::new(io);
        let greeting = Response::ok(self.b.greeting.clone());
        if s.write_response(&greeting).await.is_err() {
            return;
        }
        let mut user: Option<String> = None;
        let mut drop_: Vec<Msg> = Vec::new();
        let mut deleted: HashSet<usize> = HashSet::new();
        let mut authed = false;
        let mut last = 0u32;
        loop {
            let cmd = match s.read_command().await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    let _ = s.write_response(&Response::err(e.to_string())).await;
                    continue;
                }
                _ => return,
            };
            self.s.lock().unwrap().log.push(cmd.to_string());
            let get = |n: u32, deleted: &HashSet<usize>, drop_: &Vec<Msg>| {
                let i = (n as usize).checked_sub(1)?;
                (i < drop_.len() && !deleted.contains(&i)).then(|| drop_[i].clone())
            };
            let r = match cmd {
                Command::Capa => match &self.b.capa {
                    Some(lines) => {
                        s.queue_response(&Response::ok("Capability list follows"));
                        let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
                        let _ = s.write_multiline_chunk(body.as_bytes()).await;
                        let _ = s.finish_multiline().await;
                        continue;
                    }
                    None => Response::err("unknown command"),
                },
                Command::User(u) => {
                    user = Some(u);
                    Response::ok("")
                }
                Command::Pass(p) if user.is_some() && p.expose() == "secret" => {
                    authed = true;
                    drop_ = self.s.lock().unwrap().msgs.clone();
                    Response::ok("Logged in.")
                }
                Command::Pass(_) => Response::err("[AUTH] Authentication failed."),
                Command::Apop { digest, .. } => {
                    let stamp = &self.b.greeting[self.b.greeting.find('<').unwrap()..];
                    let want: String = Md5::digest(format!("{stamp}secret"))
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    if digest.expose() == want {
                        authed = true;
                        drop_ = self.s.lock().unwrap().msgs.clone();
                        Response::ok("Logged in.")
                    } else {
                        Response::err("[AUTH] APOP failed")
                    }
                }
                Command::Auth {
                    mechanism: Some(m),
                    initial,
                } if m == "PLAIN" => {
                    let data = match initial {
                        Some(i) => i.expose().to_owned(),
                        None => {
                            let _ = s.write_raw(b"+ \r\n").await;
                            match s.read_line(8192).await {
                                Ok(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
                                _ => return,
                            }
                        }
                    };
                    let raw = BASE64_STANDARD.decode(data.trim()).unwrap_or_default();
                    if raw.ends_with(b"\0secret") {
                        authed = true;
                        drop_ = self.s.lock().unwrap().msgs.clone();
                        Response::ok("Logged in.")
                    } else {
                        Response::err("[AUTH] Authentication failed.")
                    }
                }
                _ if !authed && !matches!(cmd, Command::Quit | Command::Stls) => {
                    Response::err("not logged in")
                }
                Command::Stat => {
                    let live: Vec<&Msg> = drop_
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !deleted.contains(i))
                        .map(|(_, m)| m)
                        .collect();
                    let size: usize = live.iter().map(|m| m.data.len()).sum();
                    Response::ok(format!("{} {size}", live.len()))
                }
                Command::List(None) | Command::Uidl(None) => {
                    if matches!(cmd, Command::Uidl(_)) && !self.b.uidl {
                        Response::err("unknown command")
                    } else {
                        s.queue_response(&Response::ok(""));
                        let mut body = String::new();
                        for (i, m) in drop_.iter().enumerate() {
                            if !deleted.contains(&i) {
                                match cmd {
                                    Command::List(_) => {
                                        body.push_str(&format!("{} {}\r\n", i + 1, m.data.len()))
                                    }
                                    _ => body.push_str(&format!("{} {}\r\n", i + 1, m.uidl)),
                                }
                            }
                        }
                        let _ = s.write_multiline_chunk(body.as_bytes()).await;
                        let _ = s.finish_multiline().await;
                        continue;
                    }
                }
                Command::List(Some(n)) => match get(n, &deleted, &drop_) {
                    Some(m) => Response::ok(format!("{n} {}", m.data.len())),
                    None => Response::err("There's no message"),
                },
                Command::Top(..) if !self.b.top => Response::err("unknown command"),
                Command::Top(n, _) | Command::Retr(n) if get(n, &deleted, &drop_).is_some() => {
                    let m = get(n, &deleted, &drop_).unwrap_or_else(|| unreachable!());
                    last = last.max(n);
                    let data = match cmd {
                        Command::Top(_, l) => top_of(&m.data, l),
                        _ => m.data.clone(),
                    };
                    s.queue_response(&Response::ok(format!("{} octets", data.len())));
                    if let (Command::Retr(_), Some((cut_n, cut_at))) = (&cmd, self.b.cut_retr)
                        && cut_n == n
                    {
                        // The connection dies in the middle of the body.
                        let _ = s.write_raw(&Stuffer::stuff_all(&data)[..cut_at]).await;
                        return;
                    }
                    let _ = s.write_multiline_chunk(&data).await;
                    let _ = s.finish_multiline().await;
                    continue;
                }
                Command::Top(..) | Command::Retr(_) => Response::err("There's no message"),
                Command::Dele(n) => match get(n, &deleted, &drop_) {
                    Some(_) => {
                        deleted.insert(n as usize - 1);
                        Response::ok("Marked to be deleted.")
                    }
                    None => Response::err("There's no message"),
                },
                Command::Rset => {
                    deleted.clear();
                    Response::ok("")
                }
                Command::Noop => Response::ok(""),
                Command::Last => Response::ok(last.to_string()),
                Command::Quit => {
                    {
                        let mut sh = self.s.lock().unwrap();
                        if authed {
                            let gone: HashSet<String> =
                                deleted.iter().map(|&i| drop_[i].uidl.clone()).collect();
                            sh.msgs.retain(|m| !gone.contains(&m.uidl));
                        }
                        sh.quits += 1;
                    }
                    let _ = s.write_response(&Response::ok("Logging out.")).await;
                    return;
                }
                _ => Response::err("unknown command"),
            };
            if s.write_response(&r).await.is_err() {
                return;
            }
        }
    }
}

fn top_of(data: &[u8], lines: u32) -> Vec<u8> {
    let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return data.to_vec();
    };
    let mut end = p + 4;
    for _ in 0..lines {
        match data[end..].iter().position(|&b| b == b'\n') {
            Some(i) => end += i + 1,
            None => return data.to_vec(),
        }
    }
    data[..end].to_vec()
}

impl Connect for Fake {
    type Stream = DuplexStream;
    async fn connect(&self, host: &str, _port: u16) -> std::io::Result<DuplexStream> {
        let (a, b) = duplex(1 << 16);
        self.s.lock().unwrap().hosts.push(host.to_owned());
        let me = self.clone();
        tokio::spawn(me.serve(b));
        Ok(a)
    }
}

// ---------------------------------------------------------------- proxy and client

fn config(dir: &Path, action: &str, extra: &str) -> Arc<Config> {
    let text = format!(
        "data_dir = {:?}\n[proxy]\nupstream = \"fake.test:110\"\nupstream_tls = \"none\"\naction = \"{action}\"\n{extra}",
        dir.to_str().unwrap()
    );
    Arc::new(Config::parse(&text).unwrap())
}

/// Spam when the message contains `SPAM-ME`; counts calls so tests can see caching.
fn proxy(config: Arc<Config>, fake: Fake, calls: Arc<AtomicUsize>) -> Arc<Proxy<Fake>> {
    let filter = Arc::new(Filter::new(&config).unwrap());
    let p = Proxy::new(config, filter, fake)
        .unwrap()
        .with_scorer(move |_user, bytes| {
            calls.fetch_add(1, Ordering::SeqCst);
            let spam = bytes.windows(7).any(|w| w == b"SPAM-ME");
            let hits = vec![Hit {
                name: if spam { "TEST_SPAM" } else { "TEST_HAM" }.into(),
                score: if spam { 10.0 } else { 0.5 },
                description: String::new(),
            }];
            Verdict::from_hits(hits, 5.0, 3.0)
        });
    Arc::new(p)
}

struct Client {
    s: Pop3Stream<DuplexStream>,
    greeting: Response,
}

async fn connect(p: &Arc<Proxy<Fake>>) -> Client {
    let (a, b) = duplex(1 << 16);
    tokio::spawn(serve_connection(p.clone(), b, None));
    let mut s = Pop3Stream::new(a);
    let greeting = s.read_response().await.unwrap();
    Client { s, greeting }
}

impl Client {
    async fn cmd(&mut self, line: &str) -> Response {
        self.s
            .write_raw(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.s.read_response().await.unwrap()
    }

    async fn multi(&mut self, line: &str) -> (Response, Vec<u8>) {
        let r = self.cmd(line).await;
        let body = if r.is_ok() {
            self.s.read_multiline(100 << 20).await.unwrap()
        } else {
            Vec::new()
        };
        (r, body)
    }

    async fn login(&mut self) {
        assert!(self.cmd("USER alice").await.is_ok());
        let r = self.cmd("PASS secret").await;
        assert!(r.is_ok(), "{r}");
    }
}

fn lines(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The message with the proxy's additions removed: `X-Spam-*` fields and the Subject prefix.
fn untag(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("X-Spam-"))
        .map(|l| l.replacen("Subject: [SPAM] ", "Subject: ", 1))
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

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
