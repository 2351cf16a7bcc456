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

use super::ProxyConfig;
pub use crate::pop3::auth::apop_timestamp;
use crate::pop3::connection::{self, Connection};
use crate::pop3::limits::POP3S_PORT;
pub use crate::pop3::limits::default_tls_for_port;
use crate::pop3::{Capabilities, Command, Pop3Error, Response};
use crate::tls::{MaybeTls, TlsError, TlsMode};

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

/// One `[users.NAME]` section's upstream keys, as the config file spells them.
#[derive(Debug, Clone, Copy)]
pub struct UserUpstream<'a> {
    pub name: &'a str,
    pub upstream: Option<&'a str>,
    pub upstream_tls: Option<&'a str>,
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
    /// Checks and parses the `[proxy]` routing keys and every user's upstream; errors name the key to fix.
    pub fn new<'a>(
        p: &ProxyConfig,
        user_upstreams: impl IntoIterator<Item = UserUpstream<'a>>,
    ) -> Result<Routing, String> {
        let default = match &p.upstream {
            Some(u) => Some(
                parse_target(u, p.upstream_tls.as_deref())
                    .map_err(|e| format!("proxy.upstream: {e}"))?,
            ),
            None => None,
        };
        let mut users = HashMap::new();
        for u in user_upstreams {
            let name = u.name;
            if let Some(addr) = u.upstream {
                let t = parse_target(addr, u.upstream_tls)
                    .map_err(|e| format!("users.{name}.upstream: {e}"))?;
                users.insert(name.to_owned(), t);
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

/// The proxy's reading of a wire failure: a step over its budget is [`UpstreamError::Timeout`].
fn wire(e: Pop3Error) -> UpstreamError {
    match e {
        Pop3Error::Timeout { after, .. } => UpstreamError::Timeout(after.as_secs()),
        e => UpstreamError::Pop3(e),
    }
}

/// One connection to an upstream POP3 server: the proxy's policy (routing target, error wording) over the shared
/// [`Connection`].
pub struct Upstream<T> {
    conn: Connection<MaybeTls<T>>,
    /// The greeting (its `<timestamp>` decides whether APOP can be relayed).
    pub greeting: Response,
    pub target: Target,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream<T> {
    /// Connects, runs TLS as the target asks (certificate and host name verified), and reads the greeting.
    /// `connect_timeout` covers all of it: TCP connect, TLS handshake (implicit, or STLS and its handshake) and
    /// the greeting; `timeout` then bounds each read and write.
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
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let cfg = match target.tls {
            TlsMode::None => None,
            _ => Some(tls_config.ok_or_else(|| UpstreamError::NoTlsConfig(name.clone()))?),
        };
        let implicit = match (&cfg, target.tls) {
            (Some(cfg), TlsMode::Implicit) => Some((target.host.as_str(), cfg.clone())),
            _ => None,
        };
        let timed_out = || UpstreamError::ConnectTimeout {
            target: name.clone(),
            secs: connect_timeout.as_secs(),
        };
        let tls_failed = |source| UpstreamError::Tls {
            target: name.clone(),
            cause: source,
        };
        let tcp = connector.connect(&target.host, target.port);
        let mut conn = match connection::dial(tcp, implicit, connect_timeout, timeout).await {
            Ok(c) => c,
            Err(Pop3Error::Timeout {
                what: connection::DIAL_STEPS,
                ..
            }) => return Err(timed_out()),
            Err(Pop3Error::Connect(source)) => {
                return Err(UpstreamError::Connect {
                    target: name,
                    cause: source,
                });
            }
            Err(Pop3Error::Tls(source)) => return Err(tls_failed(source)),
            Err(Pop3Error::Refused { response, .. }) => {
                return Err(UpstreamError::Greeting {
                    target: name,
                    greeting: response.to_string(),
                });
            }
            Err(e) => return Err(wire(e)),
        };
        if let (Some(cfg), TlsMode::StartTls) = (cfg, target.tls) {
            conn = match tokio::time::timeout_at(deadline, conn.starttls_plain(&target.host, cfg))
                .await
            {
                Err(_) => return Err(timed_out()),
                Ok(Ok(c)) => c,
                Ok(Err(Pop3Error::Refused { response, .. })) => {
                    return Err(UpstreamError::Stls {
                        target: name,
                        answer: response.to_string(),
                    });
                }
                Ok(Err(Pop3Error::Tls(source))) => return Err(tls_failed(source)),
                Ok(Err(e)) => return Err(wire(e)),
            };
        }
        Ok(Upstream {
            greeting: conn.greeting().clone(),
            conn,
            target: target.clone(),
        })
    }

    /// The APOP timestamp `<...>` of the greeting, if any (RFC 1939 §7).
    pub fn greeting_timestamp(&self) -> Option<&str> {
        apop_timestamp(&self.greeting.text)
    }

    /// Sends a command and reads its status line.
    pub async fn command(&mut self, cmd: &Command) -> Result<Response, UpstreamError> {
        self.conn.command(cmd).await.map_err(wire)
    }

    /// Sends one command (flushed).
    pub async fn send(&mut self, cmd: &Command) -> Result<(), UpstreamError> {
        self.conn.send(cmd).await.map_err(wire)
    }

    /// Queues a command without sending it (pipelining); [`Upstream::flush`] sends the batch.
    pub fn queue(&mut self, cmd: &Command) {
        self.conn.queue(cmd);
    }

    pub async fn flush(&mut self) -> Result<(), UpstreamError> {
        self.conn.flush().await.map_err(wire)
    }

    /// Sends a raw line (a relayed SASL response).
    pub async fn send_line(&mut self, line: &str) -> Result<(), UpstreamError> {
        self.conn
            .send_line(line.as_bytes(), "a SASL response")
            .await
            .map_err(wire)
    }

    /// The next status line.
    pub async fn response(&mut self) -> Result<Response, UpstreamError> {
        self.conn.response("a response").await.map_err(wire)
    }

    /// The next piece of a multi-line body; `true` once its terminator was read.
    pub async fn chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, UpstreamError> {
        self.conn
            .chunk(out, "a multi-line body")
            .await
            .map_err(wire)
    }

    /// A whole (small) multi-line body; the timeout applies to each chunk of it.
    pub async fn multiline(&mut self, limit: usize) -> Result<Vec<u8>, UpstreamError> {
        self.conn
            .multiline(limit, "a multi-line body")
            .await
            .map_err(wire)
    }

    /// The upstream's capabilities, asked once per connection state; `None` when it does not support CAPA.
    pub async fn capabilities(&mut self) -> Result<Option<&Capabilities>, UpstreamError> {
        match self.conn.capabilities().await {
            Ok(_) => Ok(self.conn.cached_capabilities()),
            // A "+ " answer to CAPA: treated as no CAPA support, as before.
            Err(Pop3Error::Refused { .. }) => Ok(None),
            Err(e) => Err(wire(e)),
        }
    }

    /// Forgets the capability list (it may change after login, RFC 2449 §5).
    pub fn forget_capabilities(&mut self) {
        self.conn.forget_capabilities();
    }

    /// True when the upstream said it pipelines (RFC 2449 §6.6).
    pub fn pipelining(&self) -> bool {
        self.conn
            .cached_capabilities()
            .is_some_and(|c| c.has("PIPELINING"))
    }

    /// False only when the upstream listed its capabilities without TOP.
    pub fn may_have_top(&self) -> bool {
        self.conn.cached_capabilities().is_none_or(|c| c.has("TOP"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A connector whose upstream sends `script` and then holds the connection open.
    struct Scripted(&'static [u8]);

    impl Connect for Scripted {
        type Stream = tokio::io::DuplexStream;
        async fn connect(&self, _: &str, _: u16) -> io::Result<tokio::io::DuplexStream> {
            use tokio::io::AsyncWriteExt;
            let (ours, mut theirs) = tokio::io::duplex(4096);
            theirs.write_all(self.0).await?;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(theirs);
            });
            Ok(ours)
        }
    }

    async fn connect(
        script: &'static [u8],
        tls: TlsMode,
    ) -> Result<Upstream<tokio::io::DuplexStream>, UpstreamError> {
        let target = Target {
            host: "127.0.0.1".into(),
            port: 110,
            tls,
        };
        let secs = Duration::from_secs;
        let cfg = (tls != TlsMode::None).then(|| {
            let roots = rustls::RootCertStore::empty();
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        });
        tokio::time::timeout(
            secs(10),
            Upstream::connect(&Scripted(script), &target, cfg, secs(1), secs(5)),
        )
        .await
        .expect("connect returned within its budget")
    }

    #[tokio::test]
    async fn connect_reads_the_greeting_and_keeps_its_timestamp() {
        let mut up = connect(
            b"+OK hi <1.2@x>\r\n+OK\r\nPIPELINING\r\n.\r\n",
            TlsMode::None,
        )
        .await
        .unwrap();
        assert_eq!(up.greeting_timestamp(), Some("<1.2@x>"));
        assert!(up.may_have_top());
        assert!(up.capabilities().await.unwrap().is_some());
        assert!(up.pipelining() && !up.may_have_top());
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_the_greeting_and_stls() {
        // No greeting: the one-second connect budget ends it, not the five-second read timeout.
        let e = connect(b"", TlsMode::None).await.err().unwrap();
        assert!(
            matches!(e, UpstreamError::ConnectTimeout { secs: 1, .. }),
            "{e}"
        );
        // STLS answered, handshake never completed: still the connect budget.
        let e = connect(b"+OK\r\n+OK go\r\n", TlsMode::StartTls)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, UpstreamError::ConnectTimeout { .. }), "{e}");
        let e = connect(b"+OK\r\n-ERR no\r\n", TlsMode::StartTls)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, UpstreamError::Stls { .. }), "{e}");
        let e = connect(b"-ERR busy\r\n", TlsMode::None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, UpstreamError::Greeting { .. }), "{e}");
    }

    /// The `[proxy]` and `[users.NAME]` keys routing reads, parsed as the config file spells them.
    fn routing(toml: &str) -> Result<Routing, String> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct User {
            upstream: Option<String>,
            upstream_tls: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            proxy: ProxyConfig,
            #[serde(default)]
            users: std::collections::BTreeMap<String, User>,
        }
        let f: File = toml::from_str(toml).unwrap();
        Routing::new(
            &f.proxy,
            f.users.iter().map(|(name, u)| UserUpstream {
                name,
                upstream: u.upstream.as_deref(),
                upstream_tls: u.upstream_tls.as_deref(),
            }),
        )
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
}
