//! The proxy: relays a client to an upstream POP3 server, scores RETR/TOP, and tags or hides spam.
//!
//! `config` (this file) owns the `[proxy]` section; `mailbox_map` the client↔upstream numbering; `tag` the header
//! splicing; the session state machine, upstream connections and routing live beside them.

pub mod capa;
pub mod mailbox_map;
pub mod read_ahead;
pub mod sasl;
pub mod scan;
pub mod session;
pub mod tag;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::filter::Filter;
use crate::tls::{self, TlsError};
use upstream::{Connect, Routing, TcpConnect};

/// RFC 1939 §3: an autologout timer "MUST be of at least 10 minutes' duration" for an idle client.
pub const RFC1939_MIN_AUTOLOGOUT: Duration = Duration::from_secs(10 * 60);
/// How long the proxy waits for one upstream read (a response line or a chunk of a multi-line body) before it gives
/// up; two minutes covers a busy server computing a large UIDL list, and is far below a client's own patience.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// TCP connect plus TLS handshake budget for the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent client sessions; each holds at most a few bounded buffers, so this bounds the proxy's memory.
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// Default first-scan budget: half of the shortest common client timeout (Outlook's 60 s).
pub const DEFAULT_SCAN_BUDGET: Duration = Duration::from_secs(30);
/// The listen address when neither the config nor `--listen` names one: loopback only, so a fresh install is not
/// an open relay on the LAN.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1110";
/// The default Subject prefix for spam (issue 3).
pub const DEFAULT_SUBJECT_PREFIX: &str = "[SPAM]";
/// The POP3-over-TLS port (RFC 8314 §7.3); an upstream on this port defaults to implicit TLS.
pub const POP3S_PORT: u16 = 995;
/// The plain POP3 port (RFC 1939 §3).
pub const POP3_PORT: u16 = 110;

/// What the proxy does with a message the filter calls spam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver it with a Subject prefix and `X-Spam-*` headers.
    #[default]
    Tag,
    /// Leave it out of STAT/LIST/UIDL (renumbering the rest) and record it in the quarantine.
    Hide,
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tag" => Ok(Action::Tag),
            "hide" => Ok(Action::Hide),
            other => Err(format!("unknown action {other:?}: use \"tag\" or \"hide\"")),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Tag => "tag",
            Action::Hide => "hide",
        })
    }
}

/// How the proxy offers TLS to its own clients (only with `tls_cert` and `tls_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Plain POP3; STLS advertised and served (RFC 2595) when a certificate is configured.
    #[default]
    Stls,
    /// TLS from the first byte (POP3S, RFC 8314).
    Implicit,
}

/// How the first scan fetches what the filter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMethod {
    /// `TOP n L`: the header and the first body lines; falls back to RETR when the upstream lacks TOP.
    #[default]
    Top,
    /// `RETR n`, keeping the first `filter.scan_limit` bytes and discarding the rest as it streams past.
    Retr,
}

/// How `action = "tag"` keeps LIST sizes true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagSizing {
    /// Score every new message before the first STAT/LIST answer (as `hide` must), so each message grows by
    /// exactly its own tag.
    #[default]
    Exact,
    /// Answer at once: every message grows by the same fixed number of bytes (the tag padded to
    /// `proxy::tag::FIXED_TAG_SIZE`), and is scored when it is retrieved. Needs UIDL upstream; else `exact`.
    Fixed,
}

/// `[proxy]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy listens on, `HOST:PORT` (default `127.0.0.1:1110`).
    pub listen: String,
    /// Upstream POP3 server, `HOST:PORT`, for every user without an upstream of their own.
    pub upstream: Option<String>,
    /// Upstream TLS: `none`, `implicit` or `starttls`. Default: implicit on port 995, starttls otherwise.
    pub upstream_tls: Option<String>,
    /// Extra trust anchor (PEM) for upstream certificates, added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// What to do with spam: `tag` (deliver it marked) or `hide` (leave it upstream, out of the client's view).
    pub action: Action,
    /// Prefix added to the Subject of spam (RFC 2047-encoded when it is not plain ASCII).
    pub subject_prefix: String,
    /// Add an `X-Spam-Status: No, ...` field to ham as well, so every message shows it was scanned.
    pub mark_ham: bool,
    /// Certificate chain (PEM) for TLS towards clients; with `tls_key`, enables `client_tls`.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How clients get TLS when a certificate is configured: `stls` (RFC 2595 upgrade) or `implicit` (POP3S).
    pub client_tls: ClientTls,
    /// Allow listening on a non-loopback address without client TLS (passwords would cross the LAN in clear).
    pub allow_non_loopback: bool,
    /// Route a login `user@host` to upstream `host` (the part after the last `@`). Off by default: it would make
    /// the proxy an open relay. When on, only hosts in `route_allow` are used; other logins go unchanged to the
    /// default upstream.
    pub route_by_login: bool,
    /// Upstreams that `route_by_login` may reach: `host` (port 995, implicit TLS) or `host:port`.
    pub route_allow: Vec<String>,
    /// How the first scan fetches messages: `top` or `retr`.
    pub scan: ScanMethod,
    /// Body lines fetched with `TOP n L` when scanning. Unset: enough lines to cover `filter.scan_limit`, so the
    /// scanned bytes are exactly what `popguard score` reads from a file.
    pub scan_lines: Option<u32>,
    /// Seconds an idle client may wait between commands (at least 600, RFC 1939 §3).
    pub client_timeout: u64,
    /// Seconds to wait for any single read from the upstream.
    pub upstream_timeout: u64,
    /// Seconds to connect to the upstream, TLS handshake included.
    pub connect_timeout: u64,
    /// Delete hidden spam upstream when the client QUITs. Off by default: hidden mail stays on the server.
    pub delete_hidden: bool,
    /// Concurrent client sessions; further connections wait.
    pub max_sessions: usize,
    /// When a client retrieves messages one after another without pipelining, ask the upstream for the next
    /// messages (up to 256 KiB each, a few at a time) while the client takes this one, so it does not wait for two round trips per
    /// message. Servers that flag retrieved mail as seen (Dovecot's IMAP view) then flag those next messages a
    /// little early; set `false` to ask only for what the client asked.
    pub read_ahead: bool,
    /// Seconds the first scan of a session may take before the proxy answers the client with what it has scored
    /// so far; messages not scanned by then are left out of this session (untouched upstream) and scanned first
    /// in the next one, as verdicts are cached. Keeps a large new maildrop from timing out the client (Outlook
    /// waits 60 s by default, Thunderbird 100 s, mpop 180 s). 0: no limit.
    pub scan_budget: u64,
    /// With `action = "tag"`: `exact` (score before the first LIST; each message grows by its own tag) or
    /// `fixed` (answer LIST at once; every message grows by the same padded 400-byte tag, scored on RETR/TOP).
    pub tag_sizing: TagSizing,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: DEFAULT_LISTEN.to_owned(),
            upstream: None,
            upstream_tls: None,
            ca_file: None,
            action: Action::Tag,
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            mark_ham: true,
            tls_cert: None,
            tls_key: None,
            client_tls: ClientTls::Stls,
            allow_non_loopback: false,
            route_by_login: false,
            route_allow: Vec::new(),
            scan: ScanMethod::Top,
            scan_lines: None,
            client_timeout: RFC1939_MIN_AUTOLOGOUT.as_secs(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT.as_secs(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.as_secs(),
            delete_hidden: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            read_ahead: true,
            scan_budget: DEFAULT_SCAN_BUDGET.as_secs(),
            tag_sizing: TagSizing::Exact,
        }
    }
}

impl ProxyConfig {
    /// The client idle timeout in force, never below the RFC 1939 minimum.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout).max(RFC1939_MIN_AUTOLOGOUT)
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_timeout.max(1))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout.max(1))
    }

    /// The first-scan time limit, if any.
    pub fn scan_budget(&self) -> Option<Duration> {
        (self.scan_budget > 0).then(|| Duration::from_secs(self.scan_budget))
    }

    /// True when a certificate and key are configured for client TLS.
    pub fn client_tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The `TOP` line count used when scanning with `scan_limit` bytes scored.
    ///
    /// Unset `scan_lines` asks for one line per two bytes of the limit: every body line holds at least its CRLF, so
    /// that many lines always reach `scan_limit` bytes (or the end of the message), and the scanned prefix is then
    /// simply the first `scan_limit` bytes, as for `popguard score`.
    pub fn top_lines(&self, scan_limit: usize) -> u32 {
        match self.scan_lines {
            Some(n) => n,
            None => u32::try_from(scan_limit / 2 + 1).unwrap_or(u32::MAX),
        }
    }
}

/// Why the proxy cannot start; each message says what to change. Causes are part of the messages, not `source`s,
/// so `{e:#}` chains print each once.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy configuration: {0}")]
    Config(String),
    #[error("TLS setup: {0}")]
    Tls(TlsError),
    #[error(
        "refusing to listen on {0} without client TLS: passwords would cross the network in clear. Listen on \
         127.0.0.1, set proxy.tls_cert and proxy.tls_key, or set proxy.allow_non_loopback = true on a trusted network"
    )]
    NonLoopback(SocketAddr),
    #[error("listener: {0}")]
    Io(std::io::Error),
}

impl From<TlsError> for ProxyError {
    fn from(e: TlsError) -> Self {
        ProxyError::Tls(e)
    }
}

impl From<std::io::Error> for ProxyError {
    fn from(e: std::io::Error) -> Self {
        ProxyError::Io(e)
    }
}

/// Everything sessions share: configuration, filter, routing, TLS settings, and how to reach upstreams.
pub struct Proxy<C: Connect = TcpConnect> {
    pub config: Arc<Config>,
    pub filter: Arc<Filter>,
    /// What scores messages: the filter, unless replaced with [`Proxy::with_scorer`].
    pub scorer: scan::Scorer,
    pub connector: C,
    pub routing: Routing,
    /// TLS towards clients (a certificate is configured).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS towards upstreams (system roots plus `ca_file`), built when some upstream needs it.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    pub data_dir: PathBuf,
    user_actions: HashMap<String, Action>,
}

impl<C: Connect> Proxy<C> {
    /// Checks the configuration and loads certificates; errors name the key to fix.
    pub fn new(
        config: Arc<Config>,
        filter: Arc<Filter>,
        connector: C,
    ) -> Result<Proxy<C>, ProxyError> {
        let p = &config.proxy;
        let routing = Routing::from_config(&config).map_err(ProxyError::Config)?;
        let mut user_actions = HashMap::new();
        for (name, u) in &config.users {
            if let Some(a) = &u.action {
                let a = a
                    .parse::<Action>()
                    .map_err(|e| ProxyError::Config(format!("users.{name}.action: {e}")))?;
                user_actions.insert(name.clone(), a);
            }
        }
        let client_tls = match (&p.tls_cert, &p.tls_key) {
            (Some(c), Some(k)) => Some(tls::server_config(c, k)?),
            (None, None) => None,
            _ => {
                return Err(ProxyError::Config(
                    "proxy.tls_cert and proxy.tls_key go together: set both or neither".into(),
                ));
            }
        };
        let upstream_tls = if routing.needs_tls() {
            Some(tls::client_config(p.ca_file.as_deref())?)
        } else {
            None
        };
        if p.subject_prefix.contains(['\r', '\n']) {
            return Err(ProxyError::Config(
                "proxy.subject_prefix must be one line".into(),
            ));
        }
        Ok(Proxy {
            data_dir: config.data_dir(),
            config,
            scorer: scan::Scorer::Filter(filter.clone()),
            filter,
            connector,
            routing,
            client_tls,
            upstream_tls,
            user_actions,
        })
    }

    /// Replaces the upstream TLS trust (tests trust only their own CA).
    pub fn with_upstream_tls(mut self, cfg: Arc<rustls::ClientConfig>) -> Self {
        self.upstream_tls = Some(cfg);
        self
    }

    /// Scores with a fixed function instead of the filter (tests and benchmarks independent of rule tuning).
    pub fn with_scorer(
        mut self,
        f: impl Fn(Option<&str>, &[u8]) -> crate::filter::Verdict + Send + Sync + 'static,
    ) -> Self {
        self.scorer = scan::Scorer::Func(Arc::new(f));
        self
    }

    /// The action for a user: `users.NAME.action`, else `proxy.action`.
    pub fn action_for(&self, user: &str) -> Action {
        self.user_actions
            .get(user)
            .copied()
            .unwrap_or(self.config.proxy.action)
    }

    /// Refuses a listener reachable from other hosts unless clients get TLS or the config opts in.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ProxyError> {
        if addr.ip().is_loopback()
            || self.client_tls.is_some()
            || self.config.proxy.allow_non_loopback
        {
            Ok(())
        } else {
            Err(ProxyError::NonLoopback(addr))
        }
    }
}

/// Runs the proxy on an already bound listener until `shutdown` completes (tests bind port 0).
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    filter: Arc<Filter>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let proxy = Arc::new(Proxy::new(config, filter, TcpConnect)?);
    serve(listener, proxy, shutdown).await
}

/// Like [`run`] with a prepared [`Proxy`] (custom connector or TLS trust).
pub async fn serve<C: Connect>(
    listener: TcpListener,
    proxy: Arc<Proxy<C>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let addr = listener.local_addr()?;
    proxy.check_listen(addr)?;
    tracing::info!(%addr, "proxy listening");
    let max = proxy.config.proxy.max_sessions;
    crate::listener::serve(listener, max, shutdown, move |stream, peer| {
        session::serve_connection(proxy.clone(), stream, Some(peer))
    })
    .await;
    Ok(())
}

/// The bytes of `message` that the proxy scores: with `scan_lines` set, the header and that many body lines; then at
/// most `scan_limit` bytes. `popguard score` uses this so it reproduces the proxy's verdict.
pub fn scanned_prefix<'a>(message: &'a [u8], config: &ProxyConfig, scan_limit: usize) -> &'a [u8] {
    let mut end = message.len().min(scan_limit);
    if let (ScanMethod::Top, Some(lines)) = (config.scan, config.scan_lines) {
        end = end.min(top_prefix_len(message, lines));
    }
    &message[..end]
}

/// The length of what `TOP n lines` returns for `message`: the header block, its blank line, then `lines` lines.
fn top_prefix_len(message: &[u8], lines: u32) -> usize {
    let body_start = match tag::find_header_end(message, message.len()) {
        tag::HeadEnd::Found(n) => n,
        _ => return message.len(),
    };
    let mut pos = body_start;
    for _ in 0..lines {
        match message[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos += i + 1,
            None => return message.len(),
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let c = ProxyConfig::default();
        assert_eq!(c.listen, "127.0.0.1:1110");
        assert_eq!(c.action, Action::Tag);
        assert!(!c.delete_hidden);
        assert!(!c.route_by_login);
        assert!(!c.allow_non_loopback);
        assert_eq!(c.client_timeout(), RFC1939_MIN_AUTOLOGOUT);
    }

    #[test]
    fn client_timeout_never_below_rfc_minimum() {
        let c = ProxyConfig {
            client_timeout: 5,
            ..ProxyConfig::default()
        };
        assert_eq!(c.client_timeout(), RFC1939_MIN_AUTOLOGOUT);
    }

    #[test]
    fn config_section_parses_every_key() {
        let c: crate::config::Config = crate::config::Config::parse(
            r#"
[proxy]
listen = "127.0.0.1:2110"
upstream = "127.0.0.1:995"
upstream_tls = "implicit"
ca_file = "ca.pem"
action = "hide"
subject_prefix = "[JUNK]"
mark_ham = false
tls_cert = "c.pem"
tls_key = "k.pem"
client_tls = "implicit"
allow_non_loopback = true
route_by_login = true
route_allow = ["pop.example.org", "mail.example.net:110"]
scan = "retr"
scan_lines = 50
client_timeout = 900
upstream_timeout = 60
connect_timeout = 10
delete_hidden = true
max_sessions = 8
"#,
        )
        .unwrap();
        let p = &c.proxy;
        assert_eq!(p.action, Action::Hide);
        assert_eq!(p.client_tls, ClientTls::Implicit);
        assert_eq!(p.scan, ScanMethod::Retr);
        assert_eq!(p.route_allow.len(), 2);
        assert_eq!(p.scan_lines, Some(50));
        assert!(p.client_tls_enabled());
    }

    /// The shipped example parses, shows the real defaults, and every commented `# key = value` line parses too.
    #[test]
    fn example_config_parses_with_every_optional_key() {
        let text = include_str!("../../popguard.example.toml");
        let c = Config::parse(text).unwrap();
        let d = ProxyConfig::default();
        let p = &c.proxy;
        assert_eq!(p.listen, d.listen);
        assert_eq!(p.subject_prefix, d.subject_prefix);
        assert_eq!(
            (
                p.client_timeout,
                p.upstream_timeout,
                p.connect_timeout,
                p.max_sessions
            ),
            (
                d.client_timeout,
                d.upstream_timeout,
                d.connect_timeout,
                d.max_sessions
            )
        );
        assert_eq!(
            (p.delete_hidden, p.route_by_login, p.allow_non_loopback),
            (false, false, false)
        );
        assert_eq!(c.filter.scan_limit, crate::filter::DEFAULT_SCAN_LIMIT);
        assert_eq!(
            c.filter.spam_threshold,
            crate::filter::DEFAULT_SPAM_THRESHOLD
        );
        assert_eq!(
            c.filter.unsure_threshold,
            crate::filter::DEFAULT_UNSURE_THRESHOLD
        );
        let dn = crate::filter::dnsbl::DnsblConfig::default();
        assert_eq!(c.dnsbl.zones.len(), dn.zones.len());
        assert_eq!(c.dnsbl.budget_ms, dn.budget_ms);
        let b = crate::filter::bayes::BayesConfig::default();
        assert_eq!(c.bayes.bands, b.bands);
        assert_eq!(
            (c.bayes.min_spam, c.bayes.max_tokens),
            (b.min_spam, b.max_tokens)
        );
        assert_eq!(c.bayes.max_tokens_per_message, b.max_tokens_per_message);
        upstream::Routing::from_config(&c).unwrap();

        let key_line = regex::Regex::new(r"^# ?[a-z_]+ = ").unwrap();
        let all: Vec<&str> = text
            .lines()
            .map(|l| {
                if key_line.is_match(l) {
                    l.trim_start_matches('#').trim_start()
                } else {
                    l
                }
            })
            .collect();
        let c = Config::parse(&all.join("\n")).unwrap();
        assert!(c.data_dir.is_some() && c.rules.dir.is_some());
        assert!(c.proxy.client_tls_enabled() && c.proxy.ca_file.is_some());
        assert_eq!(c.proxy.scan_lines, Some(200));
        assert!(c.user("alice").unwrap().rules.is_some());
        assert!(c.bayes.autolearn_spam.is_some() && c.bayes.autolearn_ham.is_some());
    }

    #[test]
    fn bad_action_is_an_error() {
        let e = crate::config::Config::parse("[proxy]\naction = \"drop\"\n").unwrap_err();
        assert!(e.contains("action") || e.contains("drop"), "{e}");
        assert!("hide".parse::<Action>().is_ok());
        assert!("Drop".parse::<Action>().unwrap_err().contains("tag"));
    }

    #[test]
    fn top_lines_cover_the_scan_limit() {
        let c = ProxyConfig::default();
        assert_eq!(c.top_lines(1000), 501);
        // The shortest possible body lines (bare CRLF) still reach the limit.
        let body = "\r\n".repeat(600);
        let msg = format!("Subject: x\r\n\r\n{body}");
        let top = top_prefix_len(msg.as_bytes(), c.top_lines(1000));
        assert!(top >= 1000);
        assert_eq!(scanned_prefix(msg.as_bytes(), &c, 1000).len(), 1000);
    }

    #[test]
    fn scanned_prefix_with_scan_lines_stops_after_those_lines() {
        let c = ProxyConfig {
            scan_lines: Some(2),
            ..ProxyConfig::default()
        };
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(
            scanned_prefix(msg, &c, 1000),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
        );
        assert_eq!(scanned_prefix(msg, &c, 8), b"A: 1\r\nB:");
        // No body: everything is header.
        assert_eq!(scanned_prefix(b"A: 1\r\n", &c, 1000), b"A: 1\r\n");
        let retr = ProxyConfig {
            scan: ScanMethod::Retr,
            ..c
        };
        assert_eq!(scanned_prefix(msg, &retr, 1000), &msg[..]);
    }
}
