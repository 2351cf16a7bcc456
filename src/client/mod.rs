//! The POP3 client library behind `popguard client`: connect with or without TLS, log in, and run every RFC 1939
//! transaction command, streaming message bodies without holding them whole. A policy (default TLS, login
//! method, error wording) over the one connection type, [`crate::pop3::Connection`].

mod body;
mod error;
pub mod fetch;
mod login;
pub mod maildir;
pub mod uidl_state;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pop3::connection::{self, Connection};
use crate::pop3::limits::default_tls_for_port;
use crate::pop3::listing::{self, ListingParser};
use crate::pop3::{Capabilities, Command, Pop3Error, Response, Status};
use crate::tls::{self, MaybeTls, TlsMode};

pub use self::body::Body;
pub use self::error::ClientError;
use self::error::{quote, tls_failure, tls_step, wire};
pub use crate::pop3::auth::apop_digest;
pub use crate::pop3::limits::{MAX_CAPA_BYTES, MAX_LISTING_BYTES};
pub use crate::pop3::{CrlfToLf, Eol};

/// How long one network step (connect, handshake, one reply line, one chunk of a message) may take. RFC 1939 §3
/// gives servers an inactivity timer of at least 10 minutes, but a server that says nothing for 2 minutes while we
/// wait for a reply is stuck, and a fetch from cron must end.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// The budget of each network step; connecting (TCP, TLS handshake and greeting together) gets one of them.
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

/// What [`tls_plan`] says to do once the greeting and CAPA are in.
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

/// The default-TLS policy, kept pure so it can be tested without a network: the port's default mode comes from
/// [`default_tls_for_port`]; on top of it, a loopback peer may stay in clear text when it offers no STLS, and a
/// password never goes in clear text to any other peer unless the caller asked for `TlsMode::None` explicitly.
fn tls_plan(requested: Option<TlsMode>, port: u16, loopback: bool) -> TlsPlan {
    match requested.unwrap_or_else(|| default_tls_for_port(port)) {
        TlsMode::Implicit => TlsPlan::Implicit,
        TlsMode::None => TlsPlan::Plain,
        TlsMode::StartTls if requested.is_some() => TlsPlan::RequireStls,
        TlsMode::StartTls if loopback => TlsPlan::TryStls,
        TlsMode::StartTls => TlsPlan::TryStlsOrRefuse,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The name to verify the certificate against: an IPv6 literal without its brackets.
fn server_name(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A POP3 session over any byte stream (TCP, TLS, `tokio::io::duplex`).
pub struct Client<S> {
    conn: Connection<S>,
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
        let host = server_name(&opts.host);
        let tls_config =
            || tls::client_config(opts.ca_file.as_deref()).map_err(|e| tls_failure(&opts.host, e));
        // Only implicit TLS is decided before connecting: the others depend on the peer being loopback.
        let implicit = tls_plan(opts.tls, opts.port, false) == TlsPlan::Implicit;
        let implicit_tls = if implicit {
            Some((host, tls_config()?))
        } else {
            None
        };
        let tcp = async {
            let s = TcpStream::connect((opts.host.as_str(), opts.port)).await?;
            // One flush per command: Nagle would only delay the replies we wait for.
            let _ = s.set_nodelay(true);
            Ok(s)
        };
        let conn = connection::dial(tcp, implicit_tls, opts.timeout, opts.timeout)
            .await
            .map_err(|e| match e {
                Pop3Error::Connect(cause) => ClientError::Connect {
                    addr: addr.clone(),
                    cause,
                },
                e => tls_step("the greeting", &opts.host, e),
            })?;
        let mut client = Client {
            conn,
            security: Security::Plain,
            broken: false,
        };
        if implicit {
            client.security = Security::Implicit;
            return Ok(client);
        }
        let loopback = match client.conn.get_ref() {
            MaybeTls::Plain(tcp) => tcp
                .peer_addr()
                .map(|a| is_loopback(a.ip()))
                .unwrap_or(false),
            _ => false,
        };
        let plan = tls_plan(opts.tls, opts.port, loopback);
        let offered = match plan {
            TlsPlan::Plain => return Ok(client),
            TlsPlan::TryStls => client.capa().await?.is_some_and(|c| c.has("STLS")),
            // RequireStls and TryStlsOrRefuse (Implicit returned above): ask even if CAPA is missing or silent.
            _ => true,
        };
        if !offered {
            tracing::info!(server = %addr, "server on a loopback address offers no STLS; continuing in clear text");
            return Ok(client);
        }
        let cfg = tls_config()?;
        let result = if client.broken {
            Err(ClientError::Broken)
        } else {
            client
                .conn
                .starttls_plain(host, cfg)
                .await
                .map_err(|e| stls_error(&opts.host, e))
        };
        match result {
            Ok(conn) => Ok(Client {
                conn,
                security: Security::StartTls,
                broken: false,
            }),
            Err(ClientError::NoStls { detail }) if plan == TlsPlan::TryStlsOrRefuse => {
                tracing::debug!(%detail, "STLS refused");
                Err(ClientError::PlaintextRefused { addr })
            }
            Err(e) => Err(e),
        }
    }
}

/// A failed STLS upgrade in the client's terms: a refusal is [`ClientError::NoStls`].
fn stls_error(host: &str, e: Pop3Error) -> ClientError {
    match e {
        Pop3Error::Refused {
            command: "STLS",
            response,
        } => ClientError::NoStls {
            detail: quote(response.to_string().as_bytes()),
        },
        e => tls_step("STLS", host, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Starts a session on an already connected stream: reads the greeting with [`DEFAULT_TIMEOUT`].
    pub async fn new(stream: S) -> Result<Self, ClientError> {
        Self::with_timeout(stream, DEFAULT_TIMEOUT).await
    }

    /// Starts a session on an already connected stream: reads the greeting, giving every network step `limit`.
    pub async fn with_timeout(stream: S, limit: Duration) -> Result<Self, ClientError> {
        let mut conn = Connection::new(stream, limit);
        conn.read_greeting()
            .await
            .map_err(|e| wire("the greeting", e))?;
        Ok(Client {
            conn,
            security: Security::Plain,
            broken: false,
        })
    }

    pub fn set_timeout(&mut self, limit: Duration) {
        self.conn.set_timeout(limit);
    }

    pub fn greeting(&self) -> &Response {
        self.conn.greeting()
    }

    pub fn security(&self) -> Security {
        self.security
    }

    /// The APOP timestamp of the greeting (`<...@...>`, RFC 1939 §7), if it has one.
    pub fn apop_timestamp(&self) -> Option<&str> {
        self.conn.apop_timestamp()
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
        self.conn.command(cmd).await.map_err(|e| {
            self.broken = true;
            wire(cmd.verb(), e)
        })
    }

    /// CAPA (RFC 2449), cached until login or STLS; `None` when the server answers `-ERR` (a pre-CAPA server).
    pub async fn capa(&mut self) -> Result<Option<&Capabilities>, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        if !self.conn.capabilities_known()
            && let Err(e) = self.conn.capabilities().await
        {
            // An oversized answer was read to its end: the session is still in step.
            if !matches!(e, Pop3Error::TooLarge { .. }) {
                self.broken = true;
            }
            return Err(match e {
                Pop3Error::Refused { .. } => ClientError::Protocol {
                    command: "CAPA",
                    detail: "unexpected \"+ \" continuation".into(),
                },
                e => wire("CAPA", e),
            });
        }
        Ok(self.conn.cached_capabilities())
    }

    /// STLS (RFC 2595 §4): on `+OK` the TLS handshake runs on the same connection; capabilities are forgotten, as
    /// the RFC requires, because what the server said in clear text may have been forged.
    pub async fn starttls(
        self,
        host: &str,
        cfg: Arc<rustls::ClientConfig>,
    ) -> Result<Client<MaybeTls<S>>, ClientError> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let name = server_name(host).to_owned();
        let conn = self
            .conn
            .starttls(|s| async move { tls::connect(s, &name, cfg).await })
            .await
            .map_err(|e| stls_error(host, e))?;
        Ok(Client {
            conn,
            security: Security::StartTls,
            broken: false,
        })
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
        self.read_listing("LIST", ListingParser::list(), MAX_LISTING_BYTES)
            .await
    }

    /// LIST n: the size of message `n`.
    pub async fn list_one(&mut self, n: u32) -> Result<u64, ClientError> {
        let resp = self.command(&Command::List(Some(n))).await?;
        match listing::parse_list(resp.text.as_bytes())
            .into_clean()
            .as_deref()
        {
            Ok([(m, size)]) if *m == n => Ok(*size),
            _ => Err(ClientError::Protocol {
                command: "LIST",
                detail: quote(resp.text.as_bytes()),
            }),
        }
    }

    /// UIDL: (message number, unique-id) for every message not marked deleted. A listing with a line the shared
    /// policy refuses (see [`crate::pop3::listing`]: an invalid or repeated unique-id, a malformed line) is an
    /// error: such a unique-id cannot identify a message in the seen-state file.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, ClientError> {
        self.command(&Command::Uidl(None)).await?;
        self.read_listing("UIDL", ListingParser::uidl(), MAX_LISTING_BYTES)
            .await
    }

    /// UIDL n: the unique-id of message `n`.
    pub async fn uidl_one(&mut self, n: u32) -> Result<String, ClientError> {
        let resp = self.command(&Command::Uidl(Some(n))).await?;
        match listing::parse_uidl(resp.text.as_bytes()).into_clean() {
            Ok(mut v) if v.len() == 1 && v[0].0 == n => Ok(v.remove(0).1),
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
        let mut inner = self.conn.into_inner();
        // The server closes after +OK; a failed TLS close_notify changes nothing for the mail.
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.shutdown()).await;
        Ok(())
    }
}

/// "n m ..." → (n, m): the STAT reply text (RFC 1939 §5 lets servers add text after the two numbers).
fn parse_pair(text: &str) -> Option<(u32, u64)> {
    let mut w = text.split_ascii_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

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

    async fn scripted(server_says: &'static [u8]) -> Client<tokio::io::DuplexStream> {
        use tokio::io::AsyncWriteExt as _;
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(server_says).await.unwrap();
        // The server half stays open for the test's duration.
        std::mem::forget(server);
        Client::new(client).await.unwrap()
    }

    #[tokio::test]
    async fn listings_tolerate_extra_text_and_reject_garbage() {
        let mut c = scripted(
            b"+OK\r\n+OK\r\n1 120\r\n2 300 extra\r\n.\r\n+OK\r\nx 1\r\n.\r\n+OK\r\n1\r\n.\r\n",
        )
        .await;
        assert_eq!(c.list().await.unwrap(), vec![(1, 120), (2, 300)]);
        assert!(matches!(c.list().await, Err(ClientError::Protocol { .. })));
        assert!(matches!(c.list().await, Err(ClientError::Protocol { .. })));
        let mut c = scripted(
            b"+OK\r\n+OK\r\n1 abc\r\n2 a\x01b\r\n.\r\n+OK\r\n1 a\r\n2 a\r\n.\r\n+OK 1 ok\r\n",
        )
        .await;
        assert!(matches!(c.uidl().await, Err(ClientError::Protocol { .. })));
        let e = c.uidl().await.unwrap_err();
        assert!(e.to_string().contains("same unique-id"), "{e}");
        assert_eq!(c.uidl_one(1).await.unwrap(), "ok");
        assert_eq!(parse_pair("2 320 octets"), Some((2, 320)));
        assert_eq!(parse_pair("2"), None);
    }
}
