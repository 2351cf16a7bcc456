//! A scripted POP3 upstream and test client for the proxy tests: in-memory or TCP, plain, implicit TLS or STLS,
//! with faults on demand (a connection cut in the middle of RETR, no UIDL, no TOP, no CAPA).

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::prelude::*;
use md5::{Digest, Md5};
use popguard::config::Config;
use popguard::filter::{Filter, Hit, Verdict};
use popguard::pop3::{Command, Pop3Stream, Response, Stuffer};
use popguard::proxy::Proxy;
use popguard::proxy::session::serve_connection;
use popguard::proxy::upstream::Connect;
use popguard::tls::{self, MaybeTls};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, duplex};

/// Every test finishes in well under this; a deadlock fails instead of hanging.
pub const T: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future<Output = R>, R>(f: F) -> R {
    tokio::time::timeout(T, f).await.expect("test timed out")
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub uidl: String,
    pub data: Vec<u8>,
}

pub fn msg(uidl: &str, subject: &str, body: &str) -> Msg {
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
pub fn mixed() -> Vec<Msg> {
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
pub struct Behaviour {
    pub capa: Option<Vec<&'static str>>,
    pub uidl: bool,
    pub top: bool,
    pub greeting: String,
    /// RETR of this message drops the connection after this many body bytes.
    pub cut_retr: Option<(u32, usize)>,
    /// Implicit TLS with this server configuration.
    pub implicit_tls: Option<Arc<rustls::ServerConfig>>,
    /// STLS offered with this server configuration.
    pub stls: Option<Arc<rustls::ServerConfig>>,
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
            implicit_tls: None,
            stls: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Shared {
    pub msgs: Vec<Msg>,
    pub log: Vec<String>,
    pub quits: usize,
    pub hosts: Vec<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub b: Behaviour,
    pub s: Arc<Mutex<Shared>>,
}

impl Fake {
    pub fn new(msgs: Vec<Msg>, b: Behaviour) -> Fake {
        Fake {
            b,
            s: Arc::new(Mutex::new(Shared {
                msgs,
                ..Shared::default()
            })),
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.s.lock().unwrap().log.clone()
    }

    pub fn uidls(&self) -> Vec<String> {
        self.s
            .lock()
            .unwrap()
            .msgs
            .iter()
            .map(|m| m.uidl.clone())
            .collect()
    }

    pub fn quits(&self) -> usize {
        self.s.lock().unwrap().quits
    }

    pub fn count(&self, verb: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(verb)).count()
    }

    /// Serves one connection (TLS as the behaviour says).
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: S) {
        let io = match &self.b.implicit_tls {
            Some(cfg) => match tls::accept(io, cfg.clone()).await {
                Ok(t) => t,
                Err(_) => return,
            },
            None => MaybeTls::Plain(io),
        };
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
                Command::Stls if self.b.stls.is_some() && !s.get_ref().is_tls() => {
                    let _ = s
                        .write_response(&Response::ok("Begin TLS negotiation now."))
                        .await;
                    let Ok(MaybeTls::Plain(raw)) = s.into_inner_checked() else {
                        return;
                    };
                    let Some(cfg) = self.b.stls.clone() else {
                        return;
                    };
                    match tls::accept(raw, cfg).await {
                        Ok(t) => s = Pop3Stream::new(t),
                        Err(_) => return,
                    }
                    continue;
                }
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

pub fn top_of(data: &[u8], lines: u32) -> Vec<u8> {
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

pub fn config(dir: &Path, action: &str, extra: &str) -> Arc<Config> {
    let text = format!(
        "data_dir = {:?}\n[proxy]\nupstream = \"fake.test:110\"\nupstream_tls = \"none\"\naction = \"{action}\"\n{extra}",
        dir.to_str().unwrap()
    );
    Arc::new(Config::parse(&text).unwrap())
}

/// Spam when the message contains `SPAM-ME`; counts calls so tests can see caching.
pub fn proxy(config: Arc<Config>, fake: Fake, calls: Arc<AtomicUsize>) -> Arc<Proxy<Fake>> {
    Arc::new(proxy_unshared(config, fake, calls))
}

/// [`proxy`] with any connector, before it is shared (tests that adjust TLS trust).
pub fn proxy_unshared<C: Connect>(
    config: Arc<Config>,
    connector: C,
    calls: Arc<AtomicUsize>,
) -> Proxy<C> {
    let filter = Arc::new(Filter::new(&config.filter_settings()).unwrap());
    Proxy::new(config, filter, connector)
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
        })
}

pub struct Client<S = DuplexStream> {
    pub s: Pop3Stream<S>,
    pub greeting: Response,
}

/// A client on an in-memory pipe to a new session (peer unknown, so not loopback).
pub async fn connect(p: &Arc<Proxy<Fake>>) -> Client {
    let (a, b) = duplex(1 << 16);
    tokio::spawn(serve_connection(p.clone(), b, None));
    Client::on(a).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client on an already connected stream; reads the greeting.
    pub async fn on(io: S) -> Client<S> {
        let mut s = Pop3Stream::new(io);
        let greeting = s.read_response().await.unwrap();
        Client { s, greeting }
    }

    pub async fn cmd(&mut self, line: &str) -> Response {
        self.s
            .write_raw(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.s.read_response().await.unwrap()
    }

    pub async fn multi(&mut self, line: &str) -> (Response, Vec<u8>) {
        let r = self.cmd(line).await;
        let body = if r.is_ok() {
            self.s.read_multiline(100 << 20).await.unwrap()
        } else {
            Vec::new()
        };
        (r, body)
    }

    pub async fn login(&mut self) {
        assert!(self.cmd("USER alice").await.is_ok());
        let r = self.cmd("PASS secret").await;
        assert!(r.is_ok(), "{r}");
    }
}

pub fn lines(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The message with the proxy's additions removed: `X-Spam-*` fields and the Subject prefix.
pub fn untag(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.starts_with("X-Spam-"))
        .map(|l| l.replacen("Subject: [SPAM] ", "Subject: ", 1))
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}
