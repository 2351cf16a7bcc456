//! The proxy's settings: the raw `[proxy]` section as the config file spells it ([`ProxyConfig`]), and the typed
//! settings a running proxy reads ([`ProxySettings`]), resolved once at startup by the config layer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::upstream::Routing;
use super::{
    Action, ClientTls, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_SESSIONS,
    DEFAULT_SCAN_BUDGET, DEFAULT_SUBJECT_PREFIX, DEFAULT_UPSTREAM_TIMEOUT, RFC1939_MIN_AUTOLOGOUT,
    ScanMethod, TagSizing,
};

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

/// Certificate and key files for TLS towards clients, and how clients get TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: ClientTls,
}

/// Everything a running proxy reads, checked and typed once (built by `Config::proxy_settings`): sessions never
/// look at the raw config.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Address to listen on, `HOST:PORT`.
    pub listen: String,
    /// Where each login goes.
    pub routing: Routing,
    /// Extra trust anchor (PEM) for upstream certificates.
    pub ca_file: Option<PathBuf>,
    /// The action for users without one of their own.
    pub action: Action,
    /// `users.NAME.action`, parsed.
    pub user_actions: HashMap<String, Action>,
    /// Subject prefix for spam; one line.
    pub subject_prefix: String,
    pub mark_ham: bool,
    /// Score at or above which a message is spam (`filter.spam_threshold`), shown in `X-Spam-Status`.
    pub spam_threshold: f64,
    /// Client TLS, when a certificate and key are configured.
    pub client_tls: Option<ClientTlsFiles>,
    pub allow_non_loopback: bool,
    pub scan: ScanMethod,
    /// Body lines asked for with `TOP n L` when scanning.
    pub top_lines: u32,
    /// Bytes of each message that are scored (`filter.scan_limit`), at least 1.
    pub scan_limit: usize,
    /// Client idle timeout, never below the RFC 1939 minimum.
    pub client_timeout: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub delete_hidden: bool,
    pub max_sessions: usize,
    pub read_ahead: bool,
    /// The first-scan time limit, if any.
    pub scan_budget: Option<Duration>,
    pub tag_sizing: TagSizing,
    /// Where per-user state (verdict cache, quarantine) lives.
    pub data_dir: PathBuf,
}

impl ProxySettings {
    /// The action for a user: `users.NAME.action`, else `proxy.action`.
    pub fn action_for(&self, user: &str) -> Action {
        self.user_actions.get(user).copied().unwrap_or(self.action)
    }

    /// The client TLS mode in force (`stls` when no certificate is configured).
    pub fn client_tls_mode(&self) -> ClientTls {
        self.client_tls.as_ref().map_or(ClientTls::Stls, |t| t.mode)
    }
}
