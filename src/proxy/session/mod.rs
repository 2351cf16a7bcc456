//! One client session: the proxy's POP3 state machine as typed phases. AUTHORIZATION ([`authorization`]) is relayed
//! to the upstream (the proxy only reads the login name); TRANSACTION ([`transaction`]) is answered from the
//! renumbered mailbox ([`plan`]) with message bodies streamed and tagged on the way ([`relay`]); QUIT is forwarded so
//! the upstream, not the proxy, commits deletions. This file owns the connection: the command loop, client I/O with
//! its timeouts, and the STLS upgrade.
//!
//! Nothing is lost: a client that leaves without QUIT (or times out) gets its upstream connection dropped without
//! QUIT, so no deletion is committed; an upstream that fails in the middle of a message makes the proxy close the
//! client connection without the terminating dot, so the client never takes a truncated message for a whole one.

mod authorization;
mod plan;
mod relay;
mod transaction;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, info, warn};

use super::upstream::{Connect, UpstreamError};
use super::{ClientTls, Proxy};
use crate::pop3::{Command, Pop3Error, Pop3Stream, RespCode, Response, SaslResponse};
use crate::tls::{self, MaybeTls};
use authorization::Authorization;
use transaction::Transaction;

pub use plan::RELEASED_RULE;

pub use crate::pop3::limits::MAX_BAD_COMMANDS;

/// Why a session ended early. Each cause has its own variant, so the log says which side failed.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client connection lost ({0}); upstream closed without QUIT, nothing deleted")]
    ClientDisconnected(Pop3Error),
    #[error(
        "the client did not take our reply within {0}s; upstream closed without QUIT, nothing deleted"
    )]
    ClientWriteTimeout(u64),
    #[error(
        "the client sent no AUTH response within {0}s; closed the connection (the upstream login was not completed)"
    )]
    SaslTimeout(u64),
    #[error("the mail server connection failed: {0}; closed it without QUIT, nothing deleted")]
    Upstream(UpstreamError),
    #[error(
        "no mail server connection after login (the login went through an upstream that is gone); closing"
    )]
    MissingUpstream,
    #[error(
        "upstream failed in the middle of a message ({0}); closed the client connection without the terminating \
         dot so the partial message is not taken for a whole one"
    )]
    MidBody(UpstreamError),
    #[error(
        "STLS was answered but no client TLS configuration is loaded; check proxy.tls_cert and proxy.tls_key"
    )]
    NoClientTls,
    #[error("client TLS handshake failed: {0}")]
    Tls(tls::TlsError),
}

impl From<Pop3Error> for SessionError {
    fn from(e: Pop3Error) -> Self {
        SessionError::ClientDisconnected(e)
    }
}

impl From<UpstreamError> for SessionError {
    fn from(e: UpstreamError) -> Self {
        SessionError::Upstream(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The session is over (QUIT answered, or nothing more to say).
    End,
    /// The client asked for STLS and got `+OK`: upgrade, then continue.
    StartTls,
    /// The upstream accepted this login: enter TRANSACTION.
    LoggedIn(String),
}

/// The session's phase, owning what only that phase has. One per connection, replaced once at login: the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Phase<C: Connect> {
    Authorization(Authorization<C>),
    Transaction(Transaction<C>),
}

/// The client side of the connection: the POP3 stream and the timeout every read and write gets.
struct Client<S> {
    stream: Pop3Stream<MaybeTls<S>>,
    timeout: Duration,
}

/// Maps a client write that timed out or failed.
async fn timed<T>(
    t: Duration,
    fut: impl Future<Output = Result<T, Pop3Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(t, fut).await {
        Err(_) => Err(SessionError::ClientWriteTimeout(t.as_secs())),
        Ok(r) => Ok(r?),
    }
}

impl<S> Client<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn reply(&mut self, r: Response) {
        debug!(dir = "p→c", response = %r);
        self.stream.queue_response(&r);
    }

    fn has_buffered_input(&self) -> bool {
        self.stream.has_buffered_input()
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        timed(self.timeout, self.stream.flush()).await
    }

    /// After a reply: flush unless a complete pipelined command is waiting and little is queued (the stream's
    /// one policy, [`Pop3Stream::flush_if_needed`]), so replies leave together but never pile up.
    async fn flush_if_needed(&mut self) -> Result<(), SessionError> {
        timed(self.timeout, self.stream.flush_if_needed()).await
    }

    /// Sends a multi-line reply built in memory (CAPA, LIST, UIDL).
    async fn multiline(&mut self, first: Response, body: &[u8]) -> Result<(), SessionError> {
        self.reply(first);
        let c = &mut self.stream;
        timed(self.timeout, async {
            c.write_multiline_chunk(body).await?;
            c.finish_multiline().await
        })
        .await
    }

    async fn write_chunk(&mut self, data: &[u8]) -> Result<(), SessionError> {
        timed(self.timeout, self.stream.write_multiline_chunk(data)).await
    }

    async fn finish_multiline(&mut self) -> Result<(), SessionError> {
        timed(self.timeout, self.stream.finish_multiline()).await
    }

    /// One SASL response line; a malformed line cancels the exchange, as `*` would.
    async fn read_sasl(&mut self) -> Result<SaslResponse, SessionError> {
        let t = self.timeout;
        match tokio::time::timeout(t, self.stream.read_sasl_response()).await {
            Err(_) => Err(SessionError::SaslTimeout(t.as_secs())),
            Ok(Err(e)) => Err(SessionError::ClientDisconnected(e)),
            Ok(Ok(Err(_))) => Ok(SaslResponse::Cancel),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }
}

/// What every phase reads: the proxy, and what is known about this client connection.
struct Shared<C: Connect> {
    proxy: Arc<Proxy<C>>,
    peer_ip: Option<IpAddr>,
    client_is_tls: bool,
}

impl<C: Connect> Shared<C> {
    /// STLS is offered (in AUTHORIZATION) when the proxy holds a certificate for STLS mode and the connection is
    /// still plain.
    fn offers_stls(&self) -> bool {
        self.proxy.client_tls.is_some()
            && self.proxy.settings.client_tls_mode() == ClientTls::Stls
            && !self.client_is_tls
    }

    /// A plain connection from another host, when STLS is available, must upgrade before sending a password.
    fn must_use_stls(&self) -> bool {
        self.offers_stls()
            && !self.proxy.settings.allow_non_loopback
            && !self.peer_ip.is_some_and(|ip| ip.is_loopback())
    }
}

struct Session<C: Connect, S> {
    client: Client<S>,
    shared: Shared<C>,
    phase: Phase<C>,
    bad_commands: u32,
}

/// Serves one accepted client connection to its end. Never panics on input; every exit path drops the upstream
/// without QUIT unless the client QUIT.
pub async fn serve_connection<C, S>(
    proxy: Arc<Proxy<C>>,
    stream: S,
    peer: Option<std::net::SocketAddr>,
) where
    C: Connect,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!(
        "session",
        peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        user = tracing::field::Empty
    );
    async move {
        let implicit = proxy.settings.client_tls_mode() == ClientTls::Implicit;
        let client = match (&proxy.client_tls, implicit) {
            (Some(cfg), true) => match tls::accept(stream, cfg.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    info!("client TLS handshake failed: {e}");
                    return;
                }
            },
            _ => MaybeTls::Plain(stream),
        };
        let client_is_tls = client.is_tls();
        let mut session = Session {
            client: Client {
                stream: Pop3Stream::new(client),
                timeout: proxy.settings.client_timeout,
            },
            shared: Shared {
                peer_ip: peer.map(|p| p.ip()),
                client_is_tls,
                proxy,
            },
            phase: Phase::Authorization(Authorization::new()),
            bad_commands: 0,
        };
        let mut greeted = false;
        loop {
            match session.run(greeted).await {
                Ok(Flow::StartTls) => {
                    greeted = true;
                    match session.upgrade().await {
                        Ok(s) => session = s,
                        Err(e) => {
                            info!("{e}");
                            return;
                        }
                    }
                }
                Ok(_) => {
                    debug!("session ended");
                    break;
                }
                Err(e @ SessionError::ClientDisconnected(_)) => {
                    info!("{e}");
                    break;
                }
                Err(e) => {
                    warn!("{e}");
                    break;
                }
            }
        }
        session.finish().await;
    }
    .instrument(span)
    .await
}

impl<C, S> Session<C, S>
where
    C: Connect,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The STLS upgrade (RFC 2595 §4): a fresh parser on the TLS stream, and nothing read in clear carried over.
    async fn upgrade(self) -> Result<Session<C, S>, SessionError> {
        let Session {
            client,
            mut shared,
            mut phase,
            bad_commands,
        } = self;
        let inner = client.stream.into_inner_checked()?;
        let (MaybeTls::Plain(raw), Some(cfg)) = (inner, shared.proxy.client_tls.clone()) else {
            return Err(SessionError::NoClientTls);
        };
        let tls = tls::accept(raw, cfg).await.map_err(SessionError::Tls)?;
        shared.client_is_tls = true;
        if let Phase::Authorization(a) = &mut phase {
            a.forget_pending_user();
        }
        Ok(Session {
            client: Client {
                stream: Pop3Stream::new(tls),
                timeout: client.timeout,
            },
            shared,
            phase,
            bad_commands,
        })
    }

    async fn run(&mut self, greeted: bool) -> Result<Flow, SessionError> {
        if !greeted {
            let Phase::Authorization(a) = &mut self.phase else {
                return Ok(Flow::End);
            };
            if a.greet(&mut self.client, &self.shared).await? == Flow::End {
                return Ok(Flow::End);
            }
        }
        loop {
            let Some(cmd) = self.next_command().await? else {
                return Ok(Flow::End);
            };
            let flow = match self.dispatch(cmd).await {
                Ok(f) => f,
                Err(e @ (SessionError::Upstream(_) | SessionError::MissingUpstream)) => {
                    // Tell the client why before closing; the upstream is in an unknown state and is dropped
                    // without QUIT.
                    let text = match &e {
                        SessionError::Upstream(u) => {
                            format!("popguard: the mail server connection failed: {u}")
                        }
                        other => format!("popguard: {other}"),
                    };
                    self.client
                        .reply(Response::err(text).with_code(RespCode::SysTemp));
                    let _ = self.client.flush().await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match flow {
                Flow::Continue => {}
                other => {
                    self.client.flush().await?;
                    return Ok(other);
                }
            }
            // Pipelined commands are answered in order and flushed together (RFC 2449 §6.6).
            self.client.flush_if_needed().await?;
        }
    }

    /// One command in the current phase; a login moves the session to TRANSACTION.
    async fn dispatch(&mut self, cmd: Command) -> Result<Flow, SessionError> {
        match &mut self.phase {
            Phase::Authorization(a) => {
                match a.command(cmd, &mut self.client, &self.shared).await? {
                    Flow::LoggedIn(login) => {
                        let up = a.take_upstream().ok_or(SessionError::MissingUpstream)?;
                        let t = Transaction::open(&self.shared.proxy, login, up).await;
                        self.phase = Phase::Transaction(t);
                        Ok(Flow::Continue)
                    }
                    other => Ok(other),
                }
            }
            Phase::Transaction(t) => t.command(cmd, &mut self.client, &self.shared).await,
        }
    }

    async fn next_command(&mut self) -> Result<Option<Command>, SessionError> {
        loop {
            let t = self.client.timeout;
            match tokio::time::timeout(t, self.client.stream.read_command()).await {
                Err(_) => {
                    // RFC 1939 §3: close without a response and without entering UPDATE.
                    info!(
                        "client idle for {}s: autologout; upstream closed without QUIT, nothing deleted",
                        t.as_secs()
                    );
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(SessionError::ClientDisconnected(e)),
                Ok(Ok(None)) => {
                    if matches!(self.phase, Phase::Transaction(_)) {
                        info!(
                            "client left without QUIT: upstream closed without QUIT, nothing deleted"
                        );
                    }
                    return Ok(None);
                }
                Ok(Ok(Some(Err(e)))) => {
                    self.bad_commands += 1;
                    if self.bad_commands > MAX_BAD_COMMANDS {
                        self.client
                            .reply(Response::err("too many bad commands, closing"));
                        self.client.flush().await?;
                        return Ok(None);
                    }
                    self.client.reply(Response::err(e.to_string()));
                    self.client.flush_if_needed().await?;
                }
                Ok(Ok(Some(Ok(cmd)))) => {
                    debug!(dir = "c→p", %cmd);
                    return Ok(Some(cmd));
                }
            }
        }
    }

    /// End of session: a transaction writes what it still holds and prunes per-user state.
    async fn finish(self) {
        if let Phase::Transaction(t) = self.phase {
            t.finish(&self.shared.proxy).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a client that went away is reported as a lost client connection; the upstream, SASL and write
    /// time-outs each say what happened.
    #[test]
    fn session_errors_name_the_side_that_failed() {
        let lost = SessionError::from(Pop3Error::Closed).to_string();
        assert!(lost.contains("client connection lost"), "{lost}");
        let others = [
            SessionError::ClientWriteTimeout(600),
            SessionError::SaslTimeout(600),
            SessionError::MissingUpstream,
            SessionError::NoClientTls,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in others {
            let text = e.to_string();
            assert!(!text.contains("client connection lost"), "{text}");
            assert!(seen.insert(text.clone()), "{text}");
        }
        assert!(SessionError::SaslTimeout(600).to_string().contains("AUTH"));
        assert!(
            SessionError::MissingUpstream
                .to_string()
                .contains("mail server")
        );
    }
}
