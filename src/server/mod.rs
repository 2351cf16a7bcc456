//! The built-in POP3 server over maildirs (`popguard server`): configuration, the accept loop, and the wiring of
//! sessions to connections.
//!
//! `maildir` reads and updates maildrops, `users` checks logins, `lock` keeps one session per maildrop,
//! `session` is the RFC 1939 state machine, and `connection` moves its replies over a [`crate::pop3::Pop3Stream`].

pub mod connection;
pub mod lock;
pub mod maildir;
pub mod session;
pub mod users;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use self::session::Shared;
use self::users::Users;

/// The inactivity timer: the RFC 1939 §3 minimum, "an autologout timer ... MUST be of at least 10 minutes'
/// duration".
pub const DEFAULT_IDLE_TIMEOUT: Duration = crate::pop3::limits::RFC1939_MIN_AUTOLOGOUT;

/// Wait before answering a failed login: slows password guessing without bothering a user who mistyped.
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Concurrent connections served; more wait in the kernel's accept queue. Each session holds at most one
/// message chunk and the maildrop index, so this bounds memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How a server runs; build it with [`ServerConfig::new`] and adjust the public fields.
pub struct ServerConfig {
    /// The directory holding one maildir per user: `maildirs/USER/{new,cur,tmp}`.
    pub maildirs: PathBuf,
    pub users: Users,
    /// With a certificate, STLS is offered (RFC 2595); with `implicit_tls`, every connection starts with TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Start TLS on connect (the port-995 style) instead of offering STLS.
    pub implicit_tls: bool,
    /// Inactivity timer (RFC 1939 §3); at least 10 minutes in production, shorter in tests.
    pub idle_timeout: Duration,
    pub auth_failure_delay: Duration,
    pub max_connections: usize,
    /// The host name in the greeting's APOP timestamp.
    pub hostname: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("maildirs", &self.maildirs)
            .field("users", &self.users.len())
            .field("tls", &self.tls.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .field("idle_timeout", &self.idle_timeout)
            .field("auth_failure_delay", &self.auth_failure_delay)
            .field("max_connections", &self.max_connections)
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl ServerConfig {
    /// A plaintext server with the default timers.
    pub fn new(maildirs: impl Into<PathBuf>, users: Users) -> ServerConfig {
        ServerConfig {
            maildirs: maildirs.into(),
            users,
            tls: None,
            implicit_tls: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            auth_failure_delay: DEFAULT_AUTH_FAILURE_DELAY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            hostname: "localhost".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // The cause is part of the message, not a `source`, so `{e:#}` chains print it once.
    #[error("cannot read the listening address: {0}")]
    Listener(std::io::Error),
    #[error("implicit TLS needs a certificate and key (--tls-cert, --tls-key)")]
    ImplicitTlsWithoutCertificate,
}

/// Serves POP3 on `listener` until `shutdown` completes. Sessions cut short by the shutdown remove nothing.
pub async fn run(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    if config.implicit_tls && config.tls.is_none() {
        return Err(ServerError::ImplicitTlsWithoutCertificate);
    }
    if !addr.ip().is_loopback() && config.users.any_plaintext() {
        tracing::warn!(
            %addr,
            "the users file stores plaintext passwords and the server listens beyond loopback; \
             store hashes instead ({{SHA512-CRYPT}} from `openssl passwd -6`)"
        );
    }
    if !addr.ip().is_loopback() && config.tls.is_none() {
        tracing::warn!(%addr, "no TLS certificate: passwords cross the network in the clear (use --tls-cert/--tls-key)");
    }
    let shared = Arc::new(Shared::new(Arc::clone(&config)));
    tracing::info!(%addr, maildirs = %config.maildirs.display(), users = config.users.len(), "POP3 server listening");
    crate::listener::serve(
        listener,
        config.max_connections,
        shutdown,
        move |stream, peer| connection::serve(stream, peer, Arc::clone(&shared)),
    )
    .await;
    Ok(())
}
