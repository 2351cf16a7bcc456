//! The upstream side: where a login goes (routing), and one connection to that server (TCP, implicit TLS or STLS,
//! greeting, timeouts on every read, capabilities learned once).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{POP3S_PORT, ProxyConfig};
use crate::config::Config;
use crate::pop3::{Capabilities, Command, Pop3Error, Pop3Stream, Response};
use crate::tls::{self, MaybeTls, TlsError, TlsMode};

/// Bytes accepted for a CAPA answer; real lists are a few hundred bytes (see `pop3::capability`).
pub const MAX_CAPA_BODY: usize = 16 * 1024;

/// Where one upstream lives and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{} ({})", self.host, self.port, self.tls)
        } else {
            write!(f, "{}:{} ({})", self.host, self.port, self.tls)
        }
    }
}

/// The TLS mode an upstream gets when none is configured (issue 3): implicit on 995, STLS elsewhere, so a password
/// never leaves in clear unless the config says `none`.
pub fn default_tls_for_port(port: u16) -> TlsMode {
    if port == POP3S_PORT {
        TlsMode::Implicit
    } else {
        TlsMode::StartTls
    }
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not HOST:PORT");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(format!("{s:?}: write an IPv6 address as [ADDR]:PORT")),
            None => (s, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_owned(), port))
}

/// Whether a `host[:port]` string names a port.
fn has_port(s: &str) -> bool {
    let s = s.trim();
    if s.starts_with('[') {
        s.contains("]:")
    } else {
        s.matches(':').count() == 1
    }
}

/// The APOP timestamp `<...@...>` in a greeting text, if any (RFC 1939 §7).
pub fn apop_timestamp(text: &str) -> Option<&str> {
    let start = text.find('<')?;
    let end = start + text[start..].find('>')?;
    let stamp = &text[start..=end];
    stamp.contains('@').then_some(stamp)
}

/// A target from a `HOST:PORT` and an optional TLS mode string.
pub fn parse_target(addr: &str, tls: Option<&str>) -> Result<Target, String> {
    let (host, port) = parse_host_port(addr, POP3S_PORT)?;
    let tls = match tls {
        Some(t) => t.parse::<TlsMode>().map_err(|e| e.to_string())?,
        None => default_tls_for_port(port),
    };
    Ok(Target { host, port, tls })
}

/// Where a login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    /// The name sent upstream (the login without `@host` when routed by login).
    pub upstream_login: String,
    /// True when routed by `user@host`: SASL data must be rewritten with `upstream_login`.
    pub by_login: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no upstream server for this user: set proxy.upstream or users.NAME.upstream")]
    NoUpstream,
    #[error("empty user name before @{0}")]
    EmptyName(String),
}

/// The routing table, checked once at startup.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    default: Option<Target>,
    users: HashMap<String, Target>,
    by_login: bool,
    /// Allowed `user@host` upstreams: lower-case host and optional port.
    allow: Vec<(String, Option<u16>)>,
}

impl Routing {
    pub fn from_config(config: &Config) -> Result<Routing, String> {
        let p: &ProxyConfig = &config.proxy;
        let default = match &p.upstream {
            Some(u) => Some(
                parse_target(u, p.upstream_tls.as_deref())
                    .map_err(|e| format!("proxy.upstream: {e}"))?,
            ),
            None => None,
        };
        let mut users = HashMap::new();
        for (name, u) in &config.users {
            if let Some(addr) = &u.upstream {
                let t = parse_target(addr, u.upstream_tls.as_deref())
                    .map_err(|e| format!("users.{name}.upstream: {e}"))?;
                users.insert(name.clone(), t);
            } else if u.upstream_tls.is_some() {
                return Err(format!(
                    "users.{name}.upstream_tls is set without users.{name}.upstream"
                ));
            }
        }
        let mut allow = Vec::new();
        for a in &p.route_allow {
            let (host, port) =
                parse_host_port(a, POP3S_PORT).map_err(|e| format!("proxy.route_allow: {e}"))?;
            allow.push((host.to_ascii_lowercase(), has_port(a).then_some(port)));
        }
        if p.route_by_login && allow.is_empty() {
            return Err(
                "proxy.route_by_login is on but proxy.route_allow is empty: list the hosts logins may reach".into(),
            );
        }
        if default.is_none() && users.is_empty() && !p.route_by_login {
            return Err("no upstream: set proxy.upstream (or --upstream HOST:PORT)".into());
        }
        Ok(Routing {
            default,
            users,
            by_login: p.route_by_login,
            allow,
        })
    }

    /// True when every login goes to the same upstream: the proxy can connect before the login and pass the
    /// upstream's greeting (and its APOP timestamp) to the client.
    pub fn is_static(&self) -> bool {
        !self.by_login && self.users.is_empty() && self.default.is_some()
    }

    pub fn default_target(&self) -> Option<&Target> {
        self.default.as_ref()
    }

    /// Every target that may be used (to decide whether TLS client configuration is needed).
    pub fn needs_tls(&self) -> bool {
        self.by_login
            || self
                .default
                .iter()
                .chain(self.users.values())
                .any(|t| t.tls != TlsMode::None)
    }

    /// The upstream for a login. With `route_by_login`, `name@host` goes to `host` when it is allowed; any other
    /// login (an e-mail address whose domain is not listed, say) is passed unchanged to the usual upstream.
    pub fn route(&self, login: &str) -> Result<Route, RouteError> {
        if self.by_login
            && let Some((name, hostpart)) = login.rsplit_once('@')
            && let Some(target) = self.allowed(hostpart)
        {
            if name.is_empty() {
                return Err(RouteError::EmptyName(hostpart.to_owned()));
            }
            return Ok(Route {
                target,
                upstream_login: name.to_owned(),
                by_login: true,
            });
        }
        let target = self
            .users
            .get(login)
            .or(self.default.as_ref())
            .cloned()
            .ok_or(RouteError::NoUpstream)?;
        Ok(Route {
            target,
            upstream_login: login.to_owned(),
            by_login: false,
        })
    }

    fn allowed(&self, hostpart: &str) -> Option<Target> {
        let (host, port) = parse_host_port(hostpart, POP3S_PORT).ok()?;
        let explicit_port = has_port(hostpart);
        let host_l = host.to_ascii_lowercase();
        self.allow
            .iter()
            .find(|(h, p)| {
                *h == host_l
                    && match p {
                        Some(p) => *p == port,
                        None => !explicit_port || port == POP3S_PORT,
                    }
            })
            .map(|_| Target {
                host,
                port,
                tls: default_tls_for_port(port),
            })
    }
}

/// How the proxy opens a byte stream to an upstream; tests plug in in-memory pipes.
pub trait Connect: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain TCP, the production connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    type Stream = TcpStream;
    async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let s = TcpStream::connect((host, port)).await?;
        // One flush per command: Nagle would only delay the replies we wait for.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// Causes are part of the messages, not `source`s, so `{e:#}` chains print each once.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: io::Error },
    #[error("connecting to {target} timed out after {secs}s")]
    ConnectTimeout { target: String, secs: u64 },
    #[error("TLS with {target} failed: {cause}")]
    Tls { target: String, cause: TlsError },
    #[error("no TLS client configuration (needed for {0}); check ca_file")]
    NoTlsConfig(String),
    #[error("{target} greeted with an error: {greeting}")]
    Greeting { target: String, greeting: String },
    #[error(
        "{target} refused STLS ({answer}); set upstream_tls = \"implicit\" or \"none\" for this server"
    )]
    Stls { target: String, answer: String },
    #[error("the upstream refused {command}: {answer}")]
    Refused {
        command: &'static str,
        answer: String,
    },
    #[error("the upstream did not answer within {0}s")]
    Timeout(u64),
    #[error("upstream connection: {0}")]
    Pop3(Pop3Error),
}

impl From<Pop3Error> for UpstreamError {
    fn from(e: Pop3Error) -> Self {
        UpstreamError::Pop3(e)
    }
}

/// One connection to an upstream POP3 server.
pub struct Upstream<T> {
    stream: Pop3Stream<MaybeTls<T>>,
    timeout: Duration,
    /// The greeting (its `<timestamp>` decides whether APOP can be relayed).
    pub greeting: Response,
    pub target: Target,
    /// `None`: not asked yet; `Some(None)`: CAPA refused; `Some(Some(c))`: the list.
    caps: Option<Option<Capabilities>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream<T> {
    /// Connects, runs TLS as the target asks (certificate and host name verified), and reads the greeting.
    pub async fn connect<C>(
        connector: &C,
        target: &Target,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Upstream<T>, UpstreamError>
    where
        C: Connect<Stream = T>,
    {
        let name = target.to_string();
        let tcp = match tokio::time::timeout(
            connect_timeout,
            connector.connect(&target.host, target.port),
        )
        .await
        {
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    target: name,
                    secs: connect_timeout.as_secs(),
                });
            }
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    target: name,
                    cause: source,
                });
            }
            Ok(Ok(s)) => s,
        };
        let need_tls = || {
            tls_config
                .clone()
                .ok_or_else(|| UpstreamError::NoTlsConfig(name.clone()))
        };
        let stream = match target.tls {
            TlsMode::None => MaybeTls::Plain(tcp),
            TlsMode::Implicit => {
                tls::connect(tcp, &target.host, need_tls()?)
                    .await
                    .map_err(|source| UpstreamError::Tls {
                        target: name.clone(),
                        cause: source,
                    })?
            }
            TlsMode::StartTls => MaybeTls::Plain(tcp),
        };
        let mut up = Upstream {
            stream: Pop3Stream::new(stream),
            timeout,
            greeting: Response::ok(""),
            target: target.clone(),
            caps: None,
        };
        let greeting = up.response().await?;
        if !greeting.is_ok() {
            return Err(UpstreamError::Greeting {
                target: name,
                greeting: greeting.to_string(),
            });
        }
        up.greeting = greeting;
        if target.tls == TlsMode::StartTls {
            let answer = up.command(&Command::Stls).await?;
            if !answer.is_ok() {
                return Err(UpstreamError::Stls {
                    target: name,
                    answer: answer.to_string(),
                });
            }
            let inner = up.stream.into_inner_checked()?;
            let MaybeTls::Plain(tcp) = inner else {
                return Err(UpstreamError::NoTlsConfig(name));
            };
            let tls = tls::connect(tcp, &target.host, need_tls()?)
                .await
                .map_err(|source| UpstreamError::Tls {
                    target: name.clone(),
                    cause: source,
                })?;
            // A fresh parser after the upgrade: nothing read in clear survives (RFC 2595 §4).
            up.stream = Pop3Stream::new(tls);
            up.caps = None;
        }
        Ok(up)
    }

    /// The APOP timestamp `<...>` of the greeting, if any (RFC 1939 §7).
    pub fn greeting_timestamp(&self) -> Option<&str> {
        apop_timestamp(&self.greeting.text)
    }

    /// Sends a command and reads its status line.
    pub async fn command(&mut self, cmd: &Command) -> Result<Response, UpstreamError> {
        self.send(cmd).await?;
        self.response().await
    }

    /// Sends one command (flushed).
    pub async fn send(&mut self, cmd: &Command) -> Result<(), UpstreamError> {
        tracing::trace!(dir = "p→u", %cmd);
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.stream.write_command(cmd)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// Queues a command without sending it (pipelining); [`Upstream::flush`] sends the batch.
    pub fn queue(&mut self, cmd: &Command) {
        tracing::trace!(dir = "p→u", %cmd, "queued");
        self.stream.queue_raw(&cmd.to_wire());
    }

    pub async fn flush(&mut self) -> Result<(), UpstreamError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.stream.flush()).await {
            Err(_) => Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// Sends a raw line (a relayed SASL response).
    pub async fn send_line(&mut self, line: &str) -> Result<(), UpstreamError> {
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend(line.bytes().filter(|&b| b != b'\r' && b != b'\n'));
        wire.extend_from_slice(b"\r\n");
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.stream.write_raw(&wire)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// The next status line.
    pub async fn response(&mut self) -> Result<Response, UpstreamError> {
        let timeout = self.timeout;
        let r = match tokio::time::timeout(timeout, self.stream.read_response()).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => r?,
        };
        tracing::trace!(dir = "u→p", response = %r);
        Ok(r)
    }

    /// The next piece of a multi-line body; `true` once its terminator was read.
    pub async fn chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, UpstreamError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.stream.read_multiline_chunk(out)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// A whole (small) multi-line body.
    pub async fn multiline(&mut self, limit: usize) -> Result<Vec<u8>, UpstreamError> {
        let f = self.stream.read_multiline(limit);
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, f).await {
            Err(_) => Err(UpstreamError::Timeout(timeout.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// The upstream's capabilities, asked once per connection state; `None` when it does not support CAPA.
    pub async fn capabilities(&mut self) -> Result<Option<&Capabilities>, UpstreamError> {
        if self.caps.is_none() {
            let r = self.command(&Command::Capa).await?;
            let caps = if r.is_ok() {
                Some(Capabilities::parse(&self.multiline(MAX_CAPA_BODY).await?))
            } else {
                None
            };
            self.caps = Some(caps);
        }
        Ok(self.caps.as_ref().and_then(Option::as_ref))
    }

    /// Forgets the capability list (it may change after login, RFC 2449 §5).
    pub fn forget_capabilities(&mut self) {
        self.caps = None;
    }

    /// True when the upstream said it pipelines (RFC 2449 §6.6).
    pub fn pipelining(&self) -> bool {
        matches!(&self.caps, Some(Some(c)) if c.has("PIPELINING"))
    }

    /// False only when the upstream listed its capabilities without TOP.
    pub fn may_have_top(&self) -> bool {
        !matches!(&self.caps, Some(Some(c)) if !c.has("TOP"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("a.b:110", 995), Ok(("a.b".into(), 110)));
        assert_eq!(parse_host_port("a.b", 995), Ok(("a.b".into(), 995)));
        assert_eq!(parse_host_port("[::1]:1110", 995), Ok(("::1".into(), 1110)));
        assert_eq!(parse_host_port("[::1]", 995), Ok(("::1".into(), 995)));
        assert!(parse_host_port("::1", 995).is_err());
        assert!(parse_host_port("a:0", 995).is_err());
        assert!(parse_host_port("a:99999", 995).is_err());
        assert!(parse_host_port(":110", 995).is_err());
        assert!(parse_host_port("a b:1", 995).is_err());
    }

    #[test]
    fn tls_defaults_by_port() {
        assert_eq!(parse_target("h:995", None).unwrap().tls, TlsMode::Implicit);
        assert_eq!(parse_target("h:110", None).unwrap().tls, TlsMode::StartTls);
        assert_eq!(
            parse_target("h:110", Some("none")).unwrap().tls,
            TlsMode::None
        );
        assert!(parse_target("h:110", Some("maybe")).is_err());
    }

    fn routing(toml: &str) -> Result<Routing, String> {
        Routing::from_config(&Config::parse(toml).unwrap())
    }

    #[test]
    fn static_routing() {
        let r =
            routing("[proxy]\nupstream = \"127.0.0.1:110\"\nupstream_tls = \"none\"\n").unwrap();
        assert!(r.is_static());
        assert!(!r.needs_tls());
        let route = r.route("alice@example.org").unwrap();
        assert_eq!(route.upstream_login, "alice@example.org");
        assert!(!route.by_login);
    }

    #[test]
    fn per_user_upstreams_make_routing_dynamic() {
        let r = routing("[proxy]\nupstream = \"d:110\"\n[users.alice]\nupstream = \"a:995\"\n")
            .unwrap();
        assert!(!r.is_static());
        assert!(r.needs_tls());
        assert_eq!(r.route("alice").unwrap().target.host, "a");
        assert_eq!(r.route("bob").unwrap().target.host, "d");
        let only_users = routing("[users.alice]\nupstream = \"a:995\"\n").unwrap();
        assert_eq!(only_users.route("bob"), Err(RouteError::NoUpstream));
    }

    #[test]
    fn login_routing_is_limited_to_the_allow_list() {
        let r = routing(
            "[proxy]\nupstream = \"d:110\"\nroute_by_login = true\nroute_allow = [\"pop.example.org\", \"mail.x:110\"]\n",
        )
        .unwrap();
        let a = r.route("alice@pop.example.org").unwrap();
        assert_eq!(a.target.host, "pop.example.org");
        assert_eq!(a.target.port, 995);
        assert_eq!(a.target.tls, TlsMode::Implicit);
        assert_eq!(a.upstream_login, "alice");
        assert!(a.by_login);
        let b = r.route("bob@mail.x:110").unwrap();
        assert_eq!((b.target.port, b.target.tls), (110, TlsMode::StartTls));
        // Not listed: the login goes unchanged to the default upstream, never to the named host.
        for login in [
            "eve@evil.example",
            "bob@mail.x",
            "bob@mail.x:111",
            "x@pop.example.org:25",
        ] {
            let d = r.route(login).unwrap();
            assert_eq!(d.target.host, "d", "{login}");
            assert_eq!(d.upstream_login, login);
        }
        // E-mail logins routed with the last @.
        let c = r.route("carol@example.org@pop.example.org").unwrap();
        assert_eq!(c.upstream_login, "carol@example.org");
        assert!(r.route("@pop.example.org").is_err());
    }

    #[test]
    fn config_errors_are_explained() {
        assert!(routing("").unwrap_err().contains("proxy.upstream"));
        assert!(
            routing("[proxy]\nroute_by_login = true\n")
                .unwrap_err()
                .contains("route_allow")
        );
        assert!(
            routing("[proxy]\nupstream = \"x:1\"\n[users.a]\nupstream_tls = \"none\"\n")
                .unwrap_err()
                .contains("users.a.upstream")
        );
        assert!(routing("[proxy]\nupstream = \"x:1:2\"\n").is_err());
    }

    #[test]
    fn apop_timestamp_from_greeting() {
        assert_eq!(
            apop_timestamp("POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("<no-at>"), None);
        assert_eq!(apop_timestamp("<unclosed@x"), None);
    }
}
