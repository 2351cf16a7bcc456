//! The POP3 client library behind `popguard client` (and the proxy's upstream side): connect with or without TLS,
//! log in, and run every RFC 1939 transaction command, streaming message bodies without holding them whole.

pub mod eol;
pub mod fetch;
pub mod maildir;
pub mod uidl_state;

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use md5::Digest as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pop3::{Capabilities, Command, Pop3Error, Pop3Stream, RespCode, Response, Status};
use crate::secret::Secret;
use crate::tls::{self, MaybeTls, TlsError, TlsMode};

pub use eol::{CrlfToLf, Eol};

/// How long one network step (connect, handshake, one reply line, one chunk of a message) may take. RFC 1939 §3
/// gives servers an inactivity timer of at least 10 minutes, but a server that says nothing for 2 minutes while we
/// wait for a reply is stuck, and a fetch from cron must end.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Cap on a CAPA reply: RFC 2449 capabilities are a few dozen short lines.
pub const MAX_CAPA_BYTES: usize = 64 * 1024;

/// Cap on a LIST or UIDL listing: a UIDL line is at most ~84 octets (RFC 1939 §7: message number, space, a
/// unique-id of up to 70 characters, CRLF), so 64 MiB covers maildrops of about 800 000 messages.
pub const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;

/// Cap on one reply line that we quote back in an error message, so a hostile server cannot flood the terminal.
const MAX_QUOTED: usize = 200;

/// The one error type of the client layer; every message says what happened and, where it helps, what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "could not connect to {addr}: {cause} (check the host and port, and that a POP3 server listens there)"
    )]
    Connect { addr: String, cause: io::Error },
    #[error(
        "TLS verification of {host} failed because the server certificate was refused: {reason}"
    )]
    TlsVerify { host: String, reason: String },
    #[error("TLS with {host} failed: {cause}")]
    Tls { host: String, cause: TlsError },
    #[error(
        "the server does not support STLS ({detail}); use --tls implicit (usually port 995), or --tls none only if the network path is trusted"
    )]
    NoStls { detail: String },
    #[error(
        "refusing to send the password in clear text to {addr}, which is not a loopback address and offered no STLS; \
         use --tls implicit (usually port 995), or pass --tls none explicitly if the network path is trusted"
    )]
    PlaintextRefused { addr: String },
    #[error(
        "the server said -ERR{} {text} (in reply to {command})",
        code_text(code)
    )]
    Server {
        command: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    #[error(
        "login as {user} failed with {method}: the server said -ERR{} {text} (check the user name and password)",
        code_text(code)
    )]
    LoginFailed {
        user: String,
        method: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    #[error("cannot log in: {0}")]
    NoLoginMethod(String),
    #[error("the user name or password contains a line break or NUL, which POP3 cannot carry")]
    BadCredentials,
    #[error("the server closed the connection while we waited for the reply to {command}")]
    Closed { command: &'static str },
    #[error(
        "the server closed the connection in the middle of a message ({command}, after {received} octets); nothing of it was kept"
    )]
    ClosedMidMessage {
        command: &'static str,
        received: u64,
    },
    #[error("timed out after {secs:?} waiting for {what}")]
    Timeout { what: &'static str, secs: Duration },
    #[error("the reply to {command} is not valid POP3: {detail}")]
    Protocol {
        command: &'static str,
        detail: String,
    },
    #[error("the reply to {command} is larger than {limit} octets; stream it instead (retr_to)")]
    TooLarge { command: &'static str, limit: usize },
    #[error("POP3 wire error during {command}: {cause}")]
    Wire {
        command: &'static str,
        cause: Pop3Error,
    },
    #[error("the connection is unusable after an earlier error; reconnect")]
    Broken,
    #[error("writing the message failed: {0}")]
    Sink(io::Error),
    #[error("maildir {}: {cause}", path.display())]
    Maildir { path: PathBuf, cause: io::Error },
}

fn code_text(code: &Option<RespCode>) -> String {
    match code {
        None => String::new(),
        Some(c) => format!(" [{}]", quote(c.as_str().as_bytes())),
    }
}

/// Keeps server text printable and short before it goes into an error message.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED)]);
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// How to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// USER/PASS when the server offers USER (or offers no CAPA), else AUTH PLAIN, else APOP.
    #[default]
    Auto,
    /// USER then PASS (RFC 1939 §7).
    User,
    /// AUTH PLAIN with an initial response (RFC 5034, RFC 4616).
    Plain,
    /// APOP with the greeting's timestamp (RFC 1939 §7).
    Apop,
}

impl AuthMethod {
    fn name(self) -> &'static str {
        match self {
            AuthMethod::Auto => "auto",
            AuthMethod::User => "USER/PASS",
            AuthMethod::Plain => "AUTH PLAIN",
            AuthMethod::Apop => "APOP",
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or IP address; also the name the server certificate must be valid for.
    pub host: String,
    pub port: u16,
    /// `None` = the safe default: implicit TLS on port 995; elsewhere STLS when the server offers it, and clear text
    /// only to a loopback address. `Some(TlsMode::None)` allows clear text anywhere.
    pub tls: Option<TlsMode>,
    /// Extra trust anchors (PEM) on top of the system roots.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl ConnectOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            tls: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the connection ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    Implicit,
    StartTls,
}

/// What [`TlsPlan`] says to do once the greeting and CAPA are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsPlan {
    /// TLS from the first byte.
    Implicit,
    /// STLS; fail when the server refuses.
    RequireStls,
    /// STLS when offered; clear text is acceptable (loopback peer).
    TryStls,
    /// STLS even though CAPA did not list it (servers without CAPA); refuse clear text when it fails.
    TryStlsOrRefuse,
    Plain,
}

/// The default-TLS policy, kept pure so it can be tested without a network: never send a password in clear text
/// to a non-loopback peer unless the caller asked for `TlsMode::None` explicitly.
fn tls_plan(requested: Option<TlsMode>, port: u16, loopback: bool) -> TlsPlan {
    match requested {
        Some(TlsMode::Implicit) => TlsPlan::Implicit,
        Some(TlsMode::StartTls) => TlsPlan::RequireStls,
        Some(TlsMode::None) => TlsPlan::Plain,
        // 995 is pop3s (RFC 8314 §7.3 recommends implicit TLS there).
        None if port == 995 => TlsPlan::Implicit,
        None if loopback => TlsPlan::TryStls,
        None => TlsPlan::TryStlsOrRefuse,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Runs one network step under the client's timeout.
async fn timed<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, Pop3Error>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(ClientError::Timeout { what, secs: limit }),
        Ok(Err(Pop3Error::Closed | Pop3Error::UnexpectedEof)) => {
            Err(ClientError::Closed { command: what })
        }
        Ok(Err(cause)) => Err(ClientError::Wire {
            command: what,
            cause,
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Turns a TLS failure into [`ClientError::TlsVerify`] when the cause is the peer's certificate.
fn tls_failure(host: &str, err: TlsError) -> ClientError {
    match err {
        TlsError::Certificate { host, reason } => {
            // webpki's name for a self-signed certificate that is its own CA (what `openssl req -x509` makes).
            let reason = if reason.contains("CaUsedAsEndEntity") {
                format!(
                    "{reason}: it is a CA certificate used as a server certificate (self-signed?); give the \
                     server a certificate signed by a CA and pass that CA with --ca-file"
                )
            } else {
                reason
            };
            ClientError::TlsVerify { host, reason }
        }
        cause => ClientError::Tls {
            host: host.to_owned(),
            cause,
        },
    }
}

/// A POP3 session over any byte stream (TCP, TLS, `tokio::io::duplex`).
pub struct Client<S> {
    stream: Pop3Stream<S>,
    greeting: Response,
    caps: Option<Option<Capabilities>>,
    timeout: Duration,
    security: Security,
    /// Set when an error left the stream mid-reply: any further command would read garbage.
    broken: bool,
}

impl Client<MaybeTls<TcpStream>> {
    /// Connects, negotiates TLS as `opts.tls` says, and reads the greeting; the session is ready for [`login`].
    ///
    /// [`login`]: Client::login
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, ClientError> {
        let addr = opts.addr();
        let tcp = match tokio::time::timeout(
            opts.timeout,
            TcpStream::connect((opts.host.as_str(), opts.port)),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: "the TCP connection",
                    secs: opts.timeout,
                });
            }
            Ok(Err(cause)) => return Err(ClientError::Connect { addr, cause }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let loopback = tcp
            .peer_addr()
            .map(|a| is_loopback(a.ip()))
            .unwrap_or(false);
        let plan = tls_plan(opts.tls, opts.port, loopback);
        let tls_config =
            || tls::client_config(opts.ca_file.as_deref()).map_err(|e| tls_failure(&opts.host, e));

        if plan == TlsPlan::Implicit {
            let cfg = tls_config()?;
            let stream = Self::handshake(tcp, &opts.host, cfg, opts.timeout).await?;
            let mut client = Client::with_timeout(stream, opts.timeout).await?;
            client.security = Security::Implicit;
            return Ok(client);
        }
        let mut client = Client::with_timeout(tcp, opts.timeout).await?;
        let offered = match plan {
            TlsPlan::Plain => return client.map_stream(MaybeTls::Plain),
            TlsPlan::TryStls => client.capa().await?.is_some_and(|c| c.has("STLS")),
            // RequireStls and TryStlsOrRefuse (Implicit returned above): ask even if CAPA is missing or silent.
            _ => true,
        };
        if !offered {
            tracing::info!(server = %addr, "server on a loopback address offers no STLS; continuing in clear text");
            return client.map_stream(MaybeTls::Plain);
        }
        let cfg = tls_config()?;
        match client.starttls(&opts.host, cfg).await {
            Ok(c) => Ok(c),
            Err(ClientError::NoStls { detail }) if plan == TlsPlan::TryStlsOrRefuse => {
                tracing::debug!(%detail, "STLS refused");
                Err(ClientError::PlaintextRefused { addr })
            }
            Err(e) => Err(e),
        }
    }

    async fn handshake(
        tcp: TcpStream,
        host: &str,
        cfg: Arc<rustls::ClientConfig>,
        limit: Duration,
    ) -> Result<MaybeTls<TcpStream>, ClientError> {
        match tokio::time::timeout(limit, tls::connect(tcp, server_name(host), cfg)).await {
            Err(_) => Err(ClientError::Timeout {
                what: "the TLS handshake",
                secs: limit,
            }),
            Ok(Err(e)) => Err(tls_failure(host, e)),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// The name to verify the certificate against: an IPv6 literal without its brackets.
fn server_name(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Starts a session on an already connected stream: reads the greeting with [`DEFAULT_TIMEOUT`].
    pub async fn new(stream: S) -> Result<Self, ClientError> {
        Self::with_timeout(stream, DEFAULT_TIMEOUT).await
    }

    /// Starts a session on an already connected stream: reads the greeting, giving every network step `limit`.
    pub async fn with_timeout(stream: S, limit: Duration) -> Result<Self, ClientError> {
        let mut stream = Pop3Stream::new(stream);
        let greeting = timed(limit, "the greeting", stream.read_response()).await?;
        if greeting.status != Status::Ok {
            return Err(ClientError::Server {
                command: "the greeting",
                code: greeting.code,
                text: quote(greeting.text.as_bytes()),
            });
        }
        Ok(Client {
            stream,
            greeting,
            caps: None,
            timeout: limit,
            security: Security::Plain,
            broken: false,
        })
    }

    /// Rewraps the transport (clear TCP into `MaybeTls::Plain`); only between replies, when nothing is buffered.
    fn map_stream<T: AsyncRead + AsyncWrite + Unpin>(
        self,
        f: impl FnOnce(S) -> T,
    ) -> Result<Client<T>, ClientError> {
        if self.stream.has_buffered_input() {
            return Err(ClientError::Protocol {
                command: "the greeting",
                detail: "the server sent data nobody asked for".into(),
            });
        }
        Ok(Client {
            stream: Pop3Stream::new(f(self.stream.into_inner())),
            greeting: self.greeting,
            caps: self.caps,
            timeout: self.timeout,
            security: self.security,
            broken: self.broken,
        })
    }

    pub fn set_timeout(&mut self, limit: Duration) {
        self.timeout = limit;
    }

    pub fn greeting(&self) -> &Response {
        &self.greeting
    }

    pub fn security(&self) -> Security {
        self.security
    }

    /// The APOP timestamp of the greeting (`<...@...>`, RFC 1939 §7), if it has one.
    pub fn apop_timestamp(&self) -> Option<&str> {
        let text = &self.greeting.text;
        let start = text.find('<')?;
        let end = start + text[start..].find('>')?;
        let stamp = &text[start..=end];
        stamp.contains('@').then_some(stamp)
    }

    /// Sends one command and reads its status line; `-ERR` becomes [`ClientError::Server`].
    async fn command(&mut self, cmd: &Command) -> Result<Response, ClientError> {
        let resp = self.exchange(cmd).await?;
        match resp.status {
            Status::Ok => Ok(resp),
            Status::Err => Err(ClientError::Server {
                command: cmd.verb(),
                code: resp.code,
                text: quote(resp.text.as_bytes()),
            }),
            Status::Continue => {
                self.broken = true;
                Err(ClientError::Protocol {
                    command: cmd.verb(),
                    detail: "unexpected \"+ \" continuation".into(),
                })
            }
        }
    }

    /// Sends one command and reads its status line, whatever it says.
    async fn exchange(&mut self, cmd: &Command) -> Result<Response, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let verb = cmd.verb();
        let limit = self.timeout;
        let result = async {
            timed(limit, verb, self.stream.write_command(cmd)).await?;
            timed(limit, verb, self.stream.read_response()).await
        }
        .await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Reads a multi-line body into memory, refusing more than `limit` octets (the session stays usable).
    async fn read_body(
        &mut self,
        command: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let mut sink = CappedVec {
            data: Vec::new(),
            limit,
            overflowed: false,
        };
        match self.copy_body(command, &mut sink, Eol::Crlf).await {
            Err(ClientError::Sink(_)) if sink.overflowed => {
                Err(ClientError::TooLarge { command, limit })
            }
            Err(e) => Err(e),
            Ok(_) => Ok(sink.data),
        }
    }

    /// Streams a multi-line body (already un-stuffed, terminator removed) into `out`, returning the octets written.
    ///
    /// When `out` fails, the rest of the body is still read and dropped, so the session can go on (a fetch can then
    /// QUIT and commit the deletions of the messages that were saved).
    async fn copy_body<W: AsyncWrite + Unpin>(
        &mut self,
        command: &'static str,
        out: &mut W,
        eol: Eol,
    ) -> Result<u64, ClientError> {
        let mut body = self.body(command, eol);
        let mut written: u64 = 0;
        let mut sink_error = None;
        while let Some(data) = body.next_chunk().await? {
            if sink_error.is_none() {
                match out.write_all(data).await {
                    Ok(()) => written += data.len() as u64,
                    Err(e) => sink_error = Some(e),
                }
            }
        }
        if sink_error.is_none()
            && let Err(e) = out.flush().await
        {
            sink_error = Some(e);
        }
        match sink_error {
            Some(e) => Err(ClientError::Sink(e)),
            None => Ok(written),
        }
    }

    fn body(&mut self, command: &'static str, eol: Eol) -> Body<'_, S> {
        Body {
            client: self,
            command,
            eol,
            lf: CrlfToLf::new(),
            chunk: Vec::new(),
            converted: Vec::new(),
            received: 0,
            done: false,
        }
    }

    /// CAPA (RFC 2449), cached until login or STLS; `None` when the server answers `-ERR` (a pre-CAPA server).
    pub async fn capa(&mut self) -> Result<Option<&Capabilities>, ClientError> {
        if self.caps.is_none() {
            let parsed = match self.command(&Command::Capa).await {
                Ok(_) => Some(Capabilities::parse(
                    &self.read_body("CAPA", MAX_CAPA_BYTES).await?,
                )),
                Err(ClientError::Server { .. }) => None,
                Err(e) => return Err(e),
            };
            self.caps = Some(parsed);
        }
        Ok(self.caps.as_ref().and_then(|c| c.as_ref()))
    }

    /// STLS (RFC 2595 §4): on `+OK` the TLS handshake runs on the same connection; capabilities are forgotten, as
    /// the RFC requires, because what the server said in clear text may have been forged.
    pub async fn starttls(
        mut self,
        host: &str,
        cfg: Arc<rustls::ClientConfig>,
    ) -> Result<Client<MaybeTls<S>>, ClientError> {
        match self.command(&Command::Stls).await {
            Ok(_) => {}
            Err(ClientError::Server { text, .. }) => {
                return Err(ClientError::NoStls {
                    detail: format!("-ERR {text}"),
                });
            }
            Err(e) => return Err(e),
        }
        // Bytes that arrived after "+OK" but before the handshake were sent in clear text and would be read as if
        // they came through TLS (the CVE-2011-0411 family of injection bugs): refuse instead.
        if self.stream.has_buffered_input() {
            return Err(ClientError::Protocol {
                command: "STLS",
                detail: "the server sent data after +OK and before the TLS handshake; refusing it (possible injection)".into(),
            });
        }
        let limit = self.timeout;
        let inner = self.stream.into_inner();
        let tls =
            match tokio::time::timeout(limit, tls::connect(inner, server_name(host), cfg)).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        what: "the TLS handshake",
                        secs: limit,
                    });
                }
                Ok(Err(e)) => return Err(tls_failure(host, e)),
                Ok(Ok(s)) => s,
            };
        Ok(Client {
            stream: Pop3Stream::new(tls),
            greeting: self.greeting,
            caps: None,
            timeout: limit,
            security: Security::StartTls,
            broken: false,
        })
    }

    /// Logs in; returns the method that worked. See [`AuthMethod::Auto`] for how it picks.
    pub async fn login(
        &mut self,
        user: &str,
        password: &Secret,
        method: AuthMethod,
    ) -> Result<AuthMethod, ClientError> {
        if [user, password.expose()]
            .iter()
            .any(|s| s.contains(['\r', '\n', '\0']))
        {
            return Err(ClientError::BadCredentials);
        }
        let method = match method {
            AuthMethod::Auto => self.pick_method().await?,
            m => m,
        };
        let result = match method {
            AuthMethod::Plain => self.auth_plain(user, password).await,
            AuthMethod::Apop => self.apop(user, password).await,
            _ => self.user_pass(user, password).await,
        };
        // Capabilities may differ after login (RFC 2449 §5).
        self.caps = None;
        result.map(|()| method)
    }

    async fn pick_method(&mut self) -> Result<AuthMethod, ClientError> {
        let stamp = self.apop_timestamp().is_some();
        Ok(match self.capa().await? {
            None => AuthMethod::User,
            Some(c) if c.has("USER") => AuthMethod::User,
            Some(c)
                if c.sasl_mechanisms()
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case("PLAIN")) =>
            {
                AuthMethod::Plain
            }
            Some(_) if stamp => AuthMethod::Apop,
            // CAPA lists neither: USER is mandatory-to-try in practice (RFC 1939 servers rarely omit it).
            Some(_) => AuthMethod::User,
        })
    }

    fn login_error(e: ClientError, user: &str, method: AuthMethod) -> ClientError {
        match e {
            ClientError::Server { code, text, .. } => ClientError::LoginFailed {
                user: user.to_owned(),
                method: method.name(),
                code,
                text,
            },
            other => other,
        }
    }

    async fn user_pass(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        let m = AuthMethod::User;
        self.command(&Command::User(user.to_owned()))
            .await
            .map_err(|e| Self::login_error(e, user, m))?;
        self.command(&Command::Pass(password.clone()))
            .await
            .map_err(|e| Self::login_error(e, user, m))?;
        Ok(())
    }

    async fn auth_plain(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        // RFC 4616: authzid NUL authcid NUL passwd; an empty authzid means "act as authcid".
        let mut raw = Vec::with_capacity(user.len() + password.expose().len() + 2);
        raw.push(0);
        raw.extend_from_slice(user.as_bytes());
        raw.push(0);
        raw.extend_from_slice(password.expose().as_bytes());
        let encoded = Secret::new(base64::engine::general_purpose::STANDARD.encode(&raw));
        let mut cmd = Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial: Some(encoded.clone()),
        };
        if !cmd.fits_line_limit() {
            // RFC 5034 §4: an initial response that would push the line past 255 octets is sent after "+ ".
            cmd = Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: None,
            };
        }
        let mut resp = self.exchange(&cmd).await?;
        if resp.status == Status::Continue {
            // Sent without an initial response, or a server that ignores it and asks with an empty challenge.
            let mut line = encoded.expose().as_bytes().to_vec();
            line.extend_from_slice(b"\r\n");
            let limit = self.timeout;
            let result = async {
                timed(limit, "AUTH", self.stream.write_raw(&line)).await?;
                timed(limit, "AUTH", self.stream.flush()).await?;
                timed(limit, "AUTH", self.stream.read_response()).await
            }
            .await;
            resp = match result {
                Ok(r) => r,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
        }
        match resp.status {
            Status::Ok => Ok(()),
            Status::Err => Err(ClientError::LoginFailed {
                user: user.to_owned(),
                method: AuthMethod::Plain.name(),
                code: resp.code,
                text: quote(resp.text.as_bytes()),
            }),
            Status::Continue => {
                self.broken = true;
                Err(ClientError::Protocol {
                    command: "AUTH",
                    detail: "a second SASL challenge for PLAIN".into(),
                })
            }
        }
    }

    async fn apop(&mut self, user: &str, password: &Secret) -> Result<(), ClientError> {
        let Some(stamp) = self.apop_timestamp() else {
            return Err(ClientError::NoLoginMethod(
                "the greeting has no APOP timestamp; the server does not offer APOP".into(),
            ));
        };
        let digest = apop_digest(stamp, password);
        let cmd = Command::Apop {
            name: user.to_owned(),
            digest,
        };
        self.command(&cmd)
            .await
            .map_err(|e| Self::login_error(e, user, AuthMethod::Apop))?;
        Ok(())
    }

    /// STAT: (message count, maildrop size in octets).
    pub async fn stat(&mut self) -> Result<(u32, u64), ClientError> {
        let resp = self.command(&Command::Stat).await?;
        parse_pair(&resp.text).ok_or_else(|| ClientError::Protocol {
            command: "STAT",
            detail: quote(resp.text.as_bytes()),
        })
    }

    /// LIST: (message number, size in octets) for every message not marked deleted.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, ClientError> {
        self.command(&Command::List(None)).await?;
        let body = self.read_body("LIST", MAX_LISTING_BYTES).await?;
        listing(&body, "LIST", |rest| {
            rest.split_ascii_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
        })
    }

    /// LIST n: the size of message `n`.
    pub async fn list_one(&mut self, n: u32) -> Result<u64, ClientError> {
        let resp = self.command(&Command::List(Some(n))).await?;
        match parse_pair(&resp.text) {
            Some((m, size)) if m == n => Ok(size),
            _ => Err(ClientError::Protocol {
                command: "LIST",
                detail: quote(resp.text.as_bytes()),
            }),
        }
    }

    /// UIDL: (message number, unique-id) for every message not marked deleted.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, ClientError> {
        self.command(&Command::Uidl(None)).await?;
        let body = self.read_body("UIDL", MAX_LISTING_BYTES).await?;
        listing(&body, "UIDL", |rest| {
            valid_uid(rest.split_ascii_whitespace().next()?)
        })
    }

    /// UIDL n: the unique-id of message `n`.
    pub async fn uidl_one(&mut self, n: u32) -> Result<String, ClientError> {
        let resp = self.command(&Command::Uidl(Some(n))).await?;
        let mut words = resp.text.split_ascii_whitespace();
        match (
            words.next().and_then(|w| w.parse::<u32>().ok()),
            words.next().and_then(valid_uid),
        ) {
            (Some(m), Some(uid)) if m == n => Ok(uid),
            _ => Err(ClientError::Protocol {
                command: "UIDL",
                detail: quote(resp.text.as_bytes()),
            }),
        }
    }

    /// RETR n, streamed into `out` (a message of any size never sits whole in memory); returns octets written.
    pub async fn retr_to<W: AsyncWrite + Unpin>(
        &mut self,
        n: u32,
        out: &mut W,
        eol: Eol,
    ) -> Result<u64, ClientError> {
        self.command(&Command::Retr(n)).await?;
        self.copy_body("RETR", out, eol).await
    }

    /// RETR n as a [`Body`] to pull chunk by chunk (for callers that decide per chunk where the bytes go).
    pub async fn retr_body(&mut self, n: u32, eol: Eol) -> Result<Body<'_, S>, ClientError> {
        self.command(&Command::Retr(n)).await?;
        Ok(self.body("RETR", eol))
    }

    /// RETR n into memory as on the wire (CRLF, un-stuffed), refusing messages over `limit` octets.
    pub async fn retr(&mut self, n: u32, limit: usize) -> Result<Vec<u8>, ClientError> {
        self.command(&Command::Retr(n)).await?;
        self.read_body("RETR", limit).await
    }

    /// TOP n lines (RFC 1939 §7): the headers and the first `lines` body lines, streamed into `out`.
    pub async fn top_to<W: AsyncWrite + Unpin>(
        &mut self,
        n: u32,
        lines: u32,
        out: &mut W,
        eol: Eol,
    ) -> Result<u64, ClientError> {
        self.command(&Command::Top(n, lines)).await?;
        self.copy_body("TOP", out, eol).await
    }

    /// TOP n lines into memory as on the wire, refusing more than `limit` octets.
    pub async fn top(&mut self, n: u32, lines: u32, limit: usize) -> Result<Vec<u8>, ClientError> {
        self.command(&Command::Top(n, lines)).await?;
        self.read_body("TOP", limit).await
    }

    /// DELE n: marks the message; the server removes it only at QUIT (RFC 1939 §6).
    pub async fn dele(&mut self, n: u32) -> Result<(), ClientError> {
        self.command(&Command::Dele(n)).await.map(drop)
    }

    /// RSET: unmarks every message marked deleted in this session.
    pub async fn rset(&mut self) -> Result<(), ClientError> {
        self.command(&Command::Rset).await.map(drop)
    }

    pub async fn noop(&mut self) -> Result<(), ClientError> {
        self.command(&Command::Noop).await.map(drop)
    }

    /// QUIT: the server enters UPDATE and removes the marked messages; `-ERR` here means some were not removed.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        self.command(&Command::Quit).await?;
        let mut inner = self.stream.into_inner();
        // The server closes after +OK; a failed TLS close_notify changes nothing for the mail.
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.shutdown()).await;
        Ok(())
    }
}

/// A multi-line reply being read. Pull it with [`Body::next_chunk`] to the end; dropping it earlier leaves the
/// session out of step, so the client then refuses further commands ([`ClientError::Broken`]).
pub struct Body<'a, S> {
    client: &'a mut Client<S>,
    command: &'static str,
    eol: Eol,
    lf: CrlfToLf,
    chunk: Vec<u8>,
    converted: Vec<u8>,
    received: u64,
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Body<'_, S> {
    /// The next piece of content (un-stuffed, line ends as asked), never empty; `None` once the terminating line
    /// has been read. Each piece is at most about one read buffer of the wire layer.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>, ClientError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.client.broken {
                return Err(ClientError::Broken);
            }
            self.chunk.clear();
            let limit = self.client.timeout;
            let step = tokio::time::timeout(
                limit,
                self.client.stream.read_multiline_chunk(&mut self.chunk),
            )
            .await;
            let command = self.command;
            let done = match step {
                Ok(Ok(done)) => done,
                failed => {
                    self.client.broken = true;
                    return Err(match failed {
                        Err(_) => ClientError::Timeout {
                            what: command,
                            secs: limit,
                        },
                        Ok(Err(Pop3Error::Closed | Pop3Error::UnexpectedEof)) => {
                            ClientError::ClosedMidMessage {
                                command,
                                received: self.received,
                            }
                        }
                        Ok(Err(cause)) => ClientError::Wire { command, cause },
                        Ok(Ok(_)) => ClientError::Broken,
                    });
                }
            };
            self.received += self.chunk.len() as u64;
            self.done = done;
            let empty = match self.eol {
                Eol::Crlf => self.chunk.is_empty(),
                Eol::Lf => {
                    self.converted.clear();
                    self.lf.convert(&self.chunk, &mut self.converted);
                    if done {
                        self.lf.finish(&mut self.converted);
                    }
                    self.converted.is_empty()
                }
            };
            if !empty {
                return Ok(Some(match self.eol {
                    Eol::Crlf => &self.chunk,
                    Eol::Lf => &self.converted,
                }));
            }
        }
    }

    /// Octets of content received so far (un-stuffed, before any line-end conversion).
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl<S> Drop for Body<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.client.broken = true;
        }
    }
}

/// The APOP digest: lower-case hex MD5 of the greeting timestamp followed by the shared secret (RFC 1939 §7).
pub fn apop_digest(timestamp: &str, password: &Secret) -> Secret {
    let mut h = md5::Md5::new();
    h.update(timestamp.as_bytes());
    h.update(password.expose().as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Secret::new(hex)
}

/// "n m ..." → (n, m): the STAT and LIST n reply text (RFC 1939 §5 lets servers add text after the two numbers).
fn parse_pair(text: &str) -> Option<(u32, u64)> {
    let mut w = text.split_ascii_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// A unique-id is 1 to 70 characters in 0x21..=0x7E (RFC 1939 §7); we accept longer ones but never control
/// characters or spaces, because they become lines of the seen-UIDL state file.
fn valid_uid(s: &str) -> Option<String> {
    (!s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))).then(|| s.to_owned())
}

/// Parses a "number rest" listing (LIST, UIDL) line by line.
fn listing<T>(
    body: &[u8],
    command: &'static str,
    value: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(u32, T)>, ClientError> {
    let mut out = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = || ClientError::Protocol {
            command,
            detail: format!("bad line {:?}", quote(line)),
        };
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let (num, rest) = text.trim_start().split_once([' ', '\t']).ok_or_else(bad)?;
        let num: u32 = num.parse().map_err(|_| bad())?;
        out.push((num, value(rest.trim_start()).ok_or_else(bad)?));
    }
    Ok(out)
}

/// An in-memory sink with a cap: the write that would pass `limit` fails, and `overflowed` says why.
struct CappedVec {
    data: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl AsyncWrite for CappedVec {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if self.data.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            self.data = Vec::new();
            return std::task::Poll::Ready(Err(io::Error::other("over the size limit")));
        }
        self.data.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tls_never_sends_a_password_in_clear_off_loopback() {
        assert_eq!(tls_plan(None, 995, false), TlsPlan::Implicit);
        assert_eq!(tls_plan(None, 995, true), TlsPlan::Implicit);
        assert_eq!(tls_plan(None, 110, false), TlsPlan::TryStlsOrRefuse);
        assert_eq!(tls_plan(None, 110, true), TlsPlan::TryStls);
        assert_eq!(tls_plan(Some(TlsMode::None), 110, false), TlsPlan::Plain);
        assert_eq!(tls_plan(Some(TlsMode::None), 995, false), TlsPlan::Plain);
        assert_eq!(
            tls_plan(Some(TlsMode::StartTls), 110, true),
            TlsPlan::RequireStls
        );
        assert_eq!(
            tls_plan(Some(TlsMode::Implicit), 110, true),
            TlsPlan::Implicit
        );
    }

    #[test]
    fn loopback_includes_v4_mapped_v6() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn apop_digest_matches_rfc1939_example() {
        let d = apop_digest(
            "<1896.697170952@dbc.mtview.ca.us>",
            &Secret::new("tanstaaf"),
        );
        assert_eq!(d.expose(), "c4c9334bac560ecc979e58001b3e22fb");
    }

    #[test]
    fn listings_tolerate_extra_text_and_reject_garbage() {
        let v = listing(b"1 120\r\n2 300 extra\r\n", "LIST", |r| {
            r.split_ascii_whitespace().next()?.parse::<u64>().ok()
        });
        assert_eq!(v.unwrap(), vec![(1, 120), (2, 300)]);
        assert!(listing(b"x 1\r\n", "LIST", |r| r.parse::<u64>().ok()).is_err());
        assert!(listing(b"1\r\n", "LIST", |r| r.parse::<u64>().ok()).is_err());
        let u = listing(b"1 abc\r\n2 a\x01b\r\n", "UIDL", |r| {
            valid_uid(r.split_ascii_whitespace().next()?)
        });
        assert!(u.is_err());
        assert_eq!(parse_pair("2 320 octets"), Some((2, 320)));
        assert_eq!(parse_pair("2"), None);
    }

    #[test]
    fn certificate_failures_become_tls_verify_with_the_tls_layers_reason() {
        let e = tls_failure(
            "h",
            TlsError::Certificate {
                host: "h".into(),
                reason: "unknown issuer: pass --ca-file".into(),
            },
        );
        let msg = e.to_string();
        assert!(matches!(e, ClientError::TlsVerify { .. }), "{msg}");
        assert!(
            msg.starts_with("TLS verification of h failed because"),
            "{msg}"
        );
        assert!(msg.contains("--ca-file"), "{msg}");
        let e = tls_failure(
            "h",
            TlsError::Certificate {
                host: "h".into(),
                reason: "Other(CaUsedAsEndEntity)".into(),
            },
        );
        assert!(e.to_string().contains("self-signed"), "{e}");
        let e = tls_failure("h", TlsError::Timeout { peer: "h".into() });
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    }
}
