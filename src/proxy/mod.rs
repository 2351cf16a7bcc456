//! The proxy: relays a client to an upstream POP3 server, scores RETR/TOP, and tags or hides spam.
//!
//! `settings` owns the `[proxy]` section and the typed settings resolved from it; `mailbox_map` the client↔upstream
//! numbering; `tag` the header splicing; the session phases, upstream connections and routing live beside them.

pub mod capa;
pub mod mailbox_map;
pub mod read_ahead;
pub mod sasl;
pub mod scan;
pub mod session;
pub mod settings;
pub mod tag;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;

use crate::filter::Filter;
use crate::tls::{self, TlsError};
pub use settings::{ClientTlsFiles, ProxyConfig, ProxySettings};
use upstream::{Connect, TcpConnect};

pub use crate::pop3::limits::{POP3_PORT, POP3S_PORT, RFC1939_MIN_AUTOLOGOUT};
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
/// The default Subject prefix for spam: short, ASCII, and what most filters' users already sort on.
pub const DEFAULT_SUBJECT_PREFIX: &str = "[SPAM]";

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

/// Why the proxy cannot start; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
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

/// Everything sessions share: settings, scorer, TLS configurations, and how to reach upstreams.
pub struct Proxy<C: Connect = TcpConnect> {
    pub settings: ProxySettings,
    /// What scores messages: the filter, unless replaced with [`Proxy::with_scorer`].
    pub scorer: scan::Scorer,
    pub connector: C,
    /// TLS towards clients (a certificate is configured).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS towards upstreams (system roots plus `ca_file`), built when some upstream needs it.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
}

impl<C: Connect> Proxy<C> {
    /// Loads the certificates the settings name; errors name the file at fault.
    pub fn new(
        settings: ProxySettings,
        filter: Arc<Filter>,
        connector: C,
    ) -> Result<Proxy<C>, ProxyError> {
        let client_tls = match &settings.client_tls {
            Some(t) => Some(tls::server_config(&t.cert, &t.key)?),
            None => None,
        };
        let upstream_tls = if settings.routing.needs_tls() {
            Some(tls::client_config(settings.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Proxy {
            settings,
            scorer: scan::Scorer::Filter(filter),
            connector,
            client_tls,
            upstream_tls,
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
        self.settings.action_for(user)
    }

    /// Refuses a listener reachable from other hosts unless clients get TLS or the config opts in.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ProxyError> {
        if addr.ip().is_loopback() || self.client_tls.is_some() || self.settings.allow_non_loopback
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
    settings: ProxySettings,
    filter: Arc<Filter>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let proxy = Arc::new(Proxy::new(settings, filter, TcpConnect)?);
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
    let max = proxy.settings.max_sessions;
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
