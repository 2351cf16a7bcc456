//! One client session: the proxy's POP3 state machine. AUTHORIZATION is relayed to the upstream (the proxy only
//! reads the login name), TRANSACTION is answered from the renumbered mailbox map with message bodies streamed
//! and tagged on the way, and QUIT is forwarded so the upstream, not the proxy, commits deletions.
//!
//! Nothing is lost: a client that leaves without QUIT (or times out) gets its upstream connection dropped without
//! QUIT, so no deletion is committed; an upstream that fails in the middle of a message makes the proxy close the
//! client connection without the terminating dot, so the client never takes a truncated message for a whole one.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, info, warn};

use super::capa::{self, CapaContext};
use super::mailbox_map::{MailboxMap, MapError, MessageInfo};
use super::read_ahead::{Answer, ReadAhead};
use super::sasl;
use super::scan::{self, Outcome, ScanJob, ScanSettings};
use super::tag::{self, Eol, HeadEnd, TagPlan, TagSettings, TagVerdict};
use super::upstream::{Connect, Route, Target, Upstream, UpstreamError};
use super::{Action, ClientTls, Proxy, TagSizing};
use crate::config::Config;
use crate::filter::{Class, Verdict};
use crate::pop3::{Command, Pop3Error, Pop3Stream, RespCode, Response, SaslResponse, Status};
use crate::secret::Secret;
use crate::store::quarantine::{Quarantine, QuarantineEntry};
use crate::store::verdicts::{CachedVerdict, VerdictStore, now_secs};
use crate::tls::{self, MaybeTls};

/// Verdicts reached during a session (`tag_sizing = "fixed"`) are written to the cache in batches of this many,
/// and at the end: a crash loses at most a batch, which is only scored again.
const PENDING_BATCH: usize = 64;
/// Malformed commands tolerated per session: a client that sends only garbage is not speaking POP3.
pub const MAX_BAD_COMMANDS: u32 = 20;
/// The pseudo-rule added to a released message's `X-Spam-Status`, so the user sees why spam got through.
pub const RELEASED_RULE: &str = "USER_RELEASED";

/// Causes are part of the messages, not `source`s, so `{e:#}` chains print each once.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client connection: {0}")]
    Client(Pop3Error),
    #[error("the client did not take our reply within {0}s")]
    ClientWriteTimeout(u64),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(
        "upstream failed in the middle of a message ({0}); closed the client connection without the terminating \
         dot so the partial message is not taken for a whole one"
    )]
    MidBody(UpstreamError),
    #[error("client TLS handshake failed: {0}")]
    Tls(tls::TlsError),
}

impl From<Pop3Error> for SessionError {
    fn from(e: Pop3Error) -> Self {
        SessionError::Client(e)
    }
}

impl From<tls::TlsError> for SessionError {
    fn from(e: tls::TlsError) -> Self {
        SessionError::Tls(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Authorization,
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The session is over (QUIT answered, or nothing more to say).
    End,
    /// The client asked for STLS and got `+OK`: upgrade, then continue.
    StartTls,
}

/// What the proxy knows about one message it can tag.
#[derive(Debug, Clone)]
struct MsgTag {
    class: Class,
    score: f64,
    rules: Vec<String>,
    /// Bytes the tag adds, as promised in LIST.
    promised: u64,
}

/// The client's maildrop, built on the first command that needs it.
struct Mailbox {
    map: MailboxMap,
    tags: HashMap<u32, MsgTag>,
    has_uidl: bool,
    /// Cache keys of every message in the maildrop (for pruning the stores).
    keys: HashSet<String>,
    /// Highest client number retrieved with RETR since login or RSET, for LAST.
    last: u32,
    /// `tag_sizing = "fixed"` in force: every message was promised [`tag::FIXED_TAG_SIZE`] more bytes, and
    /// messages without a tag yet are scored when retrieved.
    fixed: bool,
}

/// Everything but the client stream (which is replaced on STLS).
struct Core<C: Connect> {
    proxy: Arc<Proxy<C>>,
    peer_ip: Option<IpAddr>,
    up: Option<Upstream<C::Stream>>,
    /// Where `up` goes (a later USER for another route reconnects).
    up_target: Option<Target>,
    apop_allowed: bool,
    client_is_tls: bool,
    /// The login accepted by USER, waiting for PASS.
    pending_user: Option<String>,
    user: Option<String>,
    state: State,
    action: Action,
    bad_commands: u32,
    mailbox: Option<Mailbox>,
    store: Option<VerdictStore>,
    /// Client number of the previous RETR (0: none), to spot a sequential download.
    prev_retr: u32,
    ahead: ReadAhead,
    /// Verdicts reached after the first scan (`tag_sizing = "fixed"`), not yet in the verdict cache.
    pending: Vec<(String, CachedVerdict)>,
}

struct Session<C: Connect, S> {
    client: Pop3Stream<MaybeTls<S>>,
    core: Core<C>,
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
        let implicit = matches!(proxy.config.proxy.client_tls, ClientTls::Implicit);
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
            client: Pop3Stream::new(client),
            core: Core {
                proxy,
                peer_ip: peer.map(|p| p.ip()),
                up: None,
                up_target: None,
                apop_allowed: false,
                client_is_tls,
                pending_user: None,
                user: None,
                state: State::Authorization,
                action: Action::Tag,
                bad_commands: 0,
                mailbox: None,
                store: None,
                prev_retr: 0,
                ahead: ReadAhead::default(),
                pending: Vec::new(),
            },
        };
        let mut greeted = false;
        loop {
            match session.run(greeted).await {
                Ok(Flow::StartTls) => {
                    greeted = true;
                    let Session { client, core } = session;
                    match upgrade(client, &core).await {
                        Ok(c) => {
                            session = Session {
                                client: c,
                                core: Core {
                                    client_is_tls: true,
                                    pending_user: None,
                                    ..core
                                },
                            };
                        }
                        Err(e) => {
                            info!("{e}");
                            core.finish().await;
                            return;
                        }
                    }
                }
                Ok(_) => {
                    debug!("session ended");
                    break;
                }
                Err(SessionError::Client(e)) => {
                    info!(
                        "client connection lost: {e}; upstream closed without QUIT, nothing deleted"
                    );
                    break;
                }
                Err(e) => {
                    warn!("{e}");
                    break;
                }
            }
        }
        session.core.finish().await;
    }
    .instrument(span)
    .await
}

/// The STLS upgrade (RFC 2595 §4): a fresh parser on the TLS stream, and nothing read in clear carried over.
async fn upgrade<C: Connect, S>(
    client: Pop3Stream<MaybeTls<S>>,
    core: &Core<C>,
) -> Result<Pop3Stream<MaybeTls<S>>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = client.into_inner_checked()?;
    let (MaybeTls::Plain(raw), Some(cfg)) = (inner, core.proxy.client_tls.clone()) else {
        return Err(SessionError::Client(Pop3Error::Closed));
    };
    let tls = tls::accept(raw, cfg).await?;
    Ok(Pop3Stream::new(tls))
}

impl<C, S> Session<C, S>
where
    C: Connect,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(&mut self, greeted: bool) -> Result<Flow, SessionError> {
        if !greeted && self.greet().await? == Flow::End {
            return Ok(Flow::End);
        }
        loop {
            let Some(cmd) = self.next_command().await? else {
                return Ok(Flow::End);
            };
            let result = match self.core.state {
                State::Authorization => self.authorization(cmd).await,
                State::Transaction => self.transaction(cmd).await,
            };
            let flow = match result {
                Ok(f) => f,
                Err(SessionError::Upstream(e)) => {
                    // Tell the client why before closing; the upstream is in an unknown state and is dropped
                    // without QUIT.
                    let msg =
                        Response::err(format!("popguard: the mail server connection failed: {e}"))
                            .with_code(RespCode::SysTemp);
                    self.client.queue_response(&msg);
                    let _ = self.flush().await;
                    return Err(SessionError::Upstream(e));
                }
                Err(e) => return Err(e),
            };
            match flow {
                Flow::Continue => {}
                other => {
                    self.flush().await?;
                    return Ok(other);
                }
            }
            // Pipelined commands are answered in order and flushed together (RFC 2449 §6.6).
            if !self.client.has_buffered_input() {
                self.flush().await?;
            }
        }
    }

    fn client_timeout(&self) -> Duration {
        self.core.proxy.config.proxy.client_timeout()
    }

    fn reply(&mut self, r: Response) {
        debug!(dir = "p→c", response = %r);
        self.client.queue_response(&r);
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        let t = self.client_timeout();
        match tokio::time::timeout(t, self.client.flush()).await {
            Err(_) => Err(SessionError::ClientWriteTimeout(t.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    /// Sends a multi-line reply built in memory (CAPA, LIST, UIDL).
    async fn multiline(&mut self, first: Response, body: &[u8]) -> Result<(), SessionError> {
        self.reply(first);
        let t = self.client_timeout();
        let c = &mut self.client;
        let fut = async {
            c.write_multiline_chunk(body).await?;
            c.finish_multiline().await
        };
        match tokio::time::timeout(t, fut).await {
            Err(_) => Err(SessionError::ClientWriteTimeout(t.as_secs())),
            Ok(r) => Ok(r?),
        }
    }

    async fn greet(&mut self) -> Result<Flow, SessionError> {
        let routing = &self.core.proxy.routing;
        if let (true, Some(target)) = (routing.is_static(), routing.default_target().cloned()) {
            match self.core.connect(&target).await {
                Ok(up) => {
                    // Relaying the greeting passes its APOP timestamp (RFC 1939 §7) to the client.
                    self.core.apop_allowed = up.greeting_timestamp().is_some();
                    let g = up.greeting.clone();
                    self.core.up = Some(up);
                    self.core.up_target = Some(target);
                    self.reply(g);
                }
                Err(e) => {
                    warn!("upstream {target}: {e}");
                    self.reply(
                        Response::err(format!("popguard cannot reach the mail server: {e}"))
                            .with_code(RespCode::SysTemp),
                    );
                    self.flush().await?;
                    return Ok(Flow::End);
                }
            }
        } else {
            self.reply(Response::ok("popguard POP3 proxy ready"));
        }
        self.flush().await?;
        Ok(Flow::Continue)
    }

    async fn next_command(&mut self) -> Result<Option<Command>, SessionError> {
        loop {
            let t = self.client_timeout();
            match tokio::time::timeout(t, self.client.read_command()).await {
                Err(_) => {
                    // RFC 1939 §3: close without a response and without entering UPDATE.
                    info!(
                        "client idle for {}s: autologout; upstream closed without QUIT, nothing deleted",
                        t.as_secs()
                    );
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(SessionError::Client(e)),
                Ok(Ok(None)) => {
                    if self.core.state == State::Transaction {
                        info!(
                            "client left without QUIT: upstream closed without QUIT, nothing deleted"
                        );
                    }
                    return Ok(None);
                }
                Ok(Ok(Some(Err(e)))) => {
                    self.core.bad_commands += 1;
                    if self.core.bad_commands > MAX_BAD_COMMANDS {
                        self.reply(Response::err("too many bad commands, closing"));
                        self.flush().await?;
                        return Ok(None);
                    }
                    self.reply(Response::err(e.to_string()));
                    if !self.client.has_buffered_input() {
                        self.flush().await?;
                    }
                }
                Ok(Ok(Some(Ok(cmd)))) => {
                    debug!(dir = "c→p", %cmd);
                    return Ok(Some(cmd));
                }
            }
        }
    }

    // ---- AUTHORIZATION ----

    async fn authorization(&mut self, cmd: Command) -> Result<Flow, SessionError> {
        match cmd {
            Command::Capa => self.capa().await?,
            Command::Stls => return self.stls().await,
            Command::Quit => return self.quit_authorization().await,
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. }
                if self.core.must_use_stls() =>
            {
                self.reply(
                    Response::err("use STLS first: this proxy does not take passwords in clear over the network")
                        .with_code(RespCode::Auth),
                );
            }
            Command::User(name) => self.user(name).await?,
            Command::Pass(pw) => self.pass(pw).await?,
            Command::Apop { name, digest } => self.apop(name, digest).await?,
            Command::Auth {
                mechanism: None, ..
            } => self.auth_list().await?,
            Command::Auth {
                mechanism: Some(m),
                initial,
            } => self.auth(m, initial).await?,
            Command::Unknown(v) => self.reply(Response::err(format!("unknown command {v}"))),
            other => self.reply(Response::err(format!(
                "{} is not valid before login",
                other.verb()
            ))),
        }
        Ok(Flow::Continue)
    }

    async fn capa(&mut self) -> Result<(), SessionError> {
        let ctx = CapaContext {
            authorization: self.core.state == State::Authorization,
            offer_stls: self.core.offers_stls(),
        };
        let caps = match self.core.up.as_mut() {
            // Routing waits for the login name: show what the proxy can relay.
            None => Some(capa::before_routing(ctx.offer_stls)),
            Some(up) => {
                up.forget_capabilities();
                up.capabilities().await?.map(|c| capa::filter(c, ctx))
            }
        };
        match caps {
            Some(c) => {
                self.multiline(Response::ok("Capability list follows"), &c.to_body())
                    .await?
            }
            None => self.reply(Response::err("CAPA not supported by the mail server")),
        }
        Ok(())
    }

    async fn stls(&mut self) -> Result<Flow, SessionError> {
        if !self.core.offers_stls() {
            self.reply(Response::err("STLS is not available here"));
            return Ok(Flow::Continue);
        }
        if self.client.has_buffered_input() {
            // Plaintext sent after STLS would be taken as protected (RFC 3207 §6 / CVE-2011-0411).
            self.reply(Response::err(
                "data after STLS before the handshake; closing",
            ));
            return Ok(Flow::End);
        }
        self.reply(Response::ok("Begin TLS negotiation"));
        Ok(Flow::StartTls)
    }

    async fn quit_authorization(&mut self) -> Result<Flow, SessionError> {
        let r = match self.core.up.as_mut() {
            Some(up) => up.command(&Command::Quit).await?,
            None => Response::ok("popguard signing off"),
        };
        self.reply(r);
        Ok(Flow::End)
    }

    /// Connects to the route's upstream unless already there; on failure the client got `-ERR` and `false`.
    async fn ensure_upstream(&mut self, route: &Route) -> Result<bool, SessionError> {
        if self.core.up.is_some() && self.core.up_target.as_ref() == Some(&route.target) {
            return Ok(true);
        }
        self.core.up = None;
        match self.core.connect(&route.target).await {
            Ok(up) => {
                self.core.up = Some(up);
                self.core.up_target = Some(route.target.clone());
                Ok(true)
            }
            Err(e) => {
                warn!("upstream {}: {e}", route.target);
                self.reply(
                    Response::err(format!("popguard cannot reach the mail server: {e}"))
                        .with_code(RespCode::SysTemp),
                );
                Ok(false)
            }
        }
    }

    fn route(&mut self, login: &str) -> Option<Route> {
        match self.core.proxy.routing.route(login) {
            Ok(r) => Some(r),
            Err(e) => {
                self.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
                None
            }
        }
    }

    async fn user(&mut self, login: String) -> Result<(), SessionError> {
        self.core.pending_user = None;
        let Some(route) = self.route(&login) else {
            return Ok(());
        };
        if !self.ensure_upstream(&route).await? {
            return Ok(());
        }
        let Some(up) = self.core.up.as_mut() else {
            return Ok(());
        };
        let r = up
            .command(&Command::User(route.upstream_login.clone()))
            .await?;
        if r.is_ok() {
            self.core.pending_user = Some(login);
        }
        self.reply(r);
        Ok(())
    }

    async fn pass(&mut self, pw: Secret) -> Result<(), SessionError> {
        let (Some(login), Some(up)) = (self.core.pending_user.take(), self.core.up.as_mut()) else {
            self.reply(Response::err("send USER first"));
            return Ok(());
        };
        let r = up.command(&Command::Pass(pw)).await?;
        if r.is_ok() {
            self.core.enter_transaction(login).await;
        }
        self.reply(r);
        Ok(())
    }

    async fn apop(&mut self, name: String, digest: Secret) -> Result<(), SessionError> {
        let up = match self.core.up.as_mut() {
            Some(up) if self.core.apop_allowed => up,
            _ => {
                self.reply(Response::err(
                    "APOP is not available through this proxy: use USER/PASS or AUTH",
                ));
                return Ok(());
            }
        };
        let r = up
            .command(&Command::Apop {
                name: name.clone(),
                digest,
            })
            .await?;
        if r.is_ok() {
            self.core.enter_transaction(name).await;
        }
        self.reply(r);
        Ok(())
    }

    /// `AUTH` alone: the mechanisms the proxy relays (and the upstream has, when known).
    async fn auth_list(&mut self) -> Result<(), SessionError> {
        let mut mechs: Vec<String> = sasl::RELAYED_MECHANISMS
            .iter()
            .map(|m| m.to_string())
            .collect();
        if let Some(up) = self.core.up.as_mut()
            && let Some(caps) = up.capabilities().await?
            && caps.has("SASL")
        {
            let offered = caps.sasl_mechanisms();
            mechs.retain(|m| offered.contains(m));
        }
        let mut body = Vec::new();
        for m in mechs {
            body.extend_from_slice(m.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        self.multiline(Response::ok("SASL mechanisms follow"), &body)
            .await
    }

    async fn read_sasl(&mut self) -> Result<SaslResponse, SessionError> {
        let t = self.client_timeout();
        match tokio::time::timeout(t, self.client.read_sasl_response()).await {
            Err(_) => Err(SessionError::Client(Pop3Error::Closed)),
            Ok(Err(e)) => Err(SessionError::Client(e)),
            // A malformed line cancels the exchange, as `*` would.
            Ok(Ok(Err(_))) => Ok(SaslResponse::Cancel),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }

    async fn auth(&mut self, mech: String, initial: Option<Secret>) -> Result<(), SessionError> {
        if !sasl::is_relayed(&mech) {
            self.reply(Response::err(
                sasl::SaslError::Unsupported(mech).to_string(),
            ));
            return Ok(());
        }
        if self.core.proxy.routing.is_static() && self.core.up.is_some() {
            // One upstream for everyone: relay the exchange as it comes (an empty "=" initial response too),
            // reading the user name on the way.
            let user = initial
                .as_ref()
                .filter(|i| i.expose() != "=")
                .and_then(|i| sasl::user_of(&mech, i).ok());
            if let Some(up) = self.core.up.as_mut() {
                up.send(&Command::Auth {
                    mechanism: Some(mech.clone()),
                    initial,
                })
                .await?;
            }
            return self.sasl_relay(&mech, user).await;
        }
        // Routing needs the user before the upstream is known: take the first message from the client.
        let first = match initial.filter(|i| i.expose() != "=") {
            Some(i) => i,
            None => {
                let challenge = if mech == "LOGIN" {
                    sasl::LOGIN_USERNAME_CHALLENGE
                } else {
                    ""
                };
                self.reply(Response::cont(challenge));
                self.flush().await?;
                match self.read_sasl().await? {
                    SaslResponse::Cancel => {
                        self.reply(Response::err("AUTH cancelled"));
                        return Ok(());
                    }
                    SaslResponse::Data(d) => d,
                }
            }
        };
        let login = match sasl::user_of(&mech, &first) {
            Ok(u) => u,
            Err(e) => {
                self.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
                return Ok(());
            }
        };
        let Some(route) = self.route(&login) else {
            return Ok(());
        };
        if !self.ensure_upstream(&route).await? {
            return Ok(());
        }
        let first = if route.by_login {
            match sasl::with_user(&mech, &first, &route.upstream_login) {
                Ok(f) => f,
                Err(e) => {
                    self.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
                    return Ok(());
                }
            }
        } else {
            first
        };
        let Some(up) = self.core.up.as_mut() else {
            return Ok(());
        };
        // Two steps upstream, so a long first message never meets a command-line limit (RFC 5034 §4).
        let r = up
            .command(&Command::Auth {
                mechanism: Some(mech.clone()),
                initial: None,
            })
            .await?;
        if r.status != Status::Continue {
            self.reply(r);
            return Ok(());
        }
        up.send_line(first.expose()).await?;
        self.sasl_relay(&mech, Some(login)).await
    }

    /// Relays `+ ` challenges and client responses until the upstream answers `+OK` or `-ERR`.
    async fn sasl_relay(
        &mut self,
        mech: &str,
        mut user: Option<String>,
    ) -> Result<(), SessionError> {
        loop {
            let Some(up) = self.core.up.as_mut() else {
                return Ok(());
            };
            let r = up.response().await?;
            match r.status {
                Status::Continue => {
                    self.reply(r);
                    self.flush().await?;
                    let line = match self.read_sasl().await? {
                        SaslResponse::Cancel => Secret::new("*"),
                        SaslResponse::Data(d) => {
                            if user.is_none() {
                                user = sasl::user_of(mech, &d).ok();
                            }
                            d
                        }
                    };
                    if let Some(up) = self.core.up.as_mut() {
                        up.send_line(line.expose()).await?;
                    }
                }
                Status::Ok => {
                    match user {
                        Some(u) => self.core.enter_transaction(u).await,
                        None => {
                            // Logged in upstream, but whose state applies is unknown: refuse rather than guess.
                            warn!("AUTH {mech} succeeded upstream but named no user; closing");
                            self.reply(Response::err(
                                "popguard could not read the user name from this AUTH exchange",
                            ));
                            self.core.up = None;
                            return Ok(());
                        }
                    }
                    self.reply(r);
                    return Ok(());
                }
                Status::Err => {
                    self.reply(r);
                    return Ok(());
                }
            }
        }
    }

    // ---- TRANSACTION ----

    async fn transaction(&mut self, cmd: Command) -> Result<Flow, SessionError> {
        if !matches!(cmd, Command::Retr(_)) {
            // The upstream answers in order: a read-ahead still on the wire is read before anything else is asked.
            self.core.settle_ahead().await?;
        }
        if matches!(
            cmd,
            Command::Stat
                | Command::List(_)
                | Command::Uidl(_)
                | Command::Retr(_)
                | Command::Top(..)
                | Command::Dele(_)
                | Command::Last
        ) {
            self.core.ensure_mailbox().await?;
        }
        match cmd {
            Command::Stat => {
                let (count, size) = self.map().map_or((0, 0), MailboxMap::stat);
                self.reply(Response::ok(format!("{count} {size}")));
            }
            Command::List(None) => {
                let (count, size) = self.map().map_or((0, 0), MailboxMap::stat);
                let mut body = Vec::new();
                if let Some(map) = self.map() {
                    for (n, m) in map.listing() {
                        body.extend_from_slice(format!("{n} {}\r\n", m.client_size).as_bytes());
                    }
                }
                self.multiline(
                    Response::ok(format!("{count} messages ({size} octets)")),
                    &body,
                )
                .await?;
            }
            Command::List(Some(n)) => {
                let r = match self.lookup(n) {
                    Ok(m) => Response::ok(format!("{n} {}", m.client_size)),
                    Err(e) => e,
                };
                self.reply(r);
            }
            Command::Uidl(arg) if !self.core.mailbox.as_ref().is_some_and(|m| m.has_uidl) => {
                let _ = arg;
                self.reply(Response::err("UIDL is not supported by the mail server"));
            }
            Command::Uidl(None) => {
                let mut body = Vec::new();
                if let Some(map) = self.map() {
                    for (n, m) in map.listing() {
                        if let Some(u) = &m.uidl {
                            body.extend_from_slice(format!("{n} {u}\r\n").as_bytes());
                        }
                    }
                }
                self.multiline(Response::ok("unique-id listing follows"), &body)
                    .await?;
            }
            Command::Uidl(Some(n)) => {
                let r = match self.lookup(n) {
                    Ok(m) => Response::ok(format!("{n} {}", m.uidl.as_deref().unwrap_or("-"))),
                    Err(e) => e,
                };
                self.reply(r);
            }
            Command::Retr(n) => self.relay_message(n, None).await?,
            Command::Top(n, lines) => self.relay_message(n, Some(lines)).await?,
            Command::Dele(n) => self.dele(n).await?,
            Command::Last => self.last(),
            Command::Noop => {
                let r = self.core.upstream()?.command(&Command::Noop).await?;
                self.reply(r);
            }
            Command::Rset => {
                let r = self.core.upstream()?.command(&Command::Rset).await?;
                if r.is_ok()
                    && let Some(mb) = self.core.mailbox.as_mut()
                {
                    mb.map.rset();
                    mb.last = 0;
                    let (count, size) = mb.map.stat();
                    self.reply(Response::ok(format!(
                        "maildrop has {count} messages ({size} octets)"
                    )));
                } else {
                    self.reply(r);
                }
            }
            Command::Quit => return self.quit().await,
            Command::Capa => self.capa().await?,
            Command::Unknown(v) => self.reply(Response::err(format!("unknown command {v}"))),
            other => self.reply(Response::err(format!(
                "{} is not valid after login",
                other.verb()
            ))),
        }
        Ok(Flow::Continue)
    }

    fn map(&self) -> Option<&MailboxMap> {
        self.core.mailbox.as_ref().map(|m| &m.map)
    }

    /// The message behind client number `n`, or the `-ERR` a server would give.
    fn lookup(&self, n: u32) -> Result<MessageInfo, Response> {
        let Some(map) = self.map() else {
            return Err(Response::err("no such message"));
        };
        map.get(n).cloned().map_err(|e| match e {
            MapError::NoSuchMessage => {
                Response::err(format!("no such message, only {} in maildrop", map.len()))
            }
            MapError::Deleted => Response::err(format!("message {n} already deleted")),
        })
    }

    async fn dele(&mut self, n: u32) -> Result<(), SessionError> {
        let m = match self.lookup(n) {
            Ok(m) => m,
            Err(e) => {
                self.reply(e);
                return Ok(());
            }
        };
        let r = self
            .core
            .upstream()?
            .command(&Command::Dele(m.upstream))
            .await?;
        if r.is_ok()
            && let Some(mb) = self.core.mailbox.as_mut()
        {
            let _ = mb.map.mark_deleted(n);
            self.core.ahead.forget(m.upstream);
        }
        self.reply(r);
        Ok(())
    }

    /// LAST (RFC 1725 §5): the highest message number retrieved in this session, counted by the proxy. The
    /// upstream's own answer would count the scan's TOP commands as accesses and make new mail look read.
    fn last(&mut self) {
        let n = self.core.mailbox.as_ref().map_or(0, |m| m.last);
        self.reply(Response::ok(n.to_string()));
    }

    /// RETR (`top == None`) or TOP: the upstream body streamed to the client, tagged in its header.
    async fn relay_message(&mut self, n: u32, top: Option<u32>) -> Result<(), SessionError> {
        let m = match self.lookup(n) {
            Ok(m) => m,
            Err(e) => {
                self.reply(e);
                return Ok(());
            }
        };
        let fixed = self.core.mailbox.as_ref().is_some_and(|mb| mb.fixed);
        if fixed && top.is_some() && !self.core.has_tag(m.upstream) {
            // TOP must show the tag RETR will: score the message the way the scan does, first.
            self.core.score_now(&m).await?;
        }
        let mut tag = self
            .core
            .mailbox
            .as_ref()
            .and_then(|mb| mb.tags.get(&m.upstream).cloned());
        // Fixed sizes: a message not scored yet is scored from the first `scan_limit` bytes of this RETR.
        let score_inline = fixed && tag.is_none();
        let scan_limit = self.core.proxy.config.filter.scan_limit;
        let settings = self.core.tag_settings();
        let head_cap = self.core.head_cap();
        let t = self.client_timeout();
        let Session { client, core } = self;
        let cmd = match top {
            None => Command::Retr(m.upstream),
            Some(l) => Command::Top(m.upstream, l),
        };
        // A read-ahead of this very message answers it; the body may already be in memory.
        let ahead = match (top, core.up.as_mut()) {
            (None, Some(up)) => core.ahead.take(up, m.upstream).await?,
            _ => None,
        };
        let (r, ready) = match ahead {
            Some(Answer::OnWire(r)) => (r, None),
            Some(Answer::Read(r, body)) => (r, body),
            None => (core.upstream()?.command(&cmd).await?, None),
        };
        // The field, not `core.upstream()`: scoring below reads other fields of `core` meanwhile.
        let up = core
            .up
            .as_mut()
            .ok_or(SessionError::Client(Pop3Error::Closed))?;
        if !r.is_ok() {
            client.queue_response(&r);
            return Ok(());
        }
        client.queue_response(&match top {
            None => Response::ok(format!("{} octets", m.client_size)),
            Some(_) => Response::ok("top of message follows"),
        });

        // Buffer the header (bounded by the cap), splice the tag, then stream the rest as it comes.
        let mut done = ready.is_some();
        let mut head = ready.unwrap_or_default();
        let end = loop {
            match tag::find_header_end(&head, head_cap) {
                HeadEnd::NeedMore if !done => {
                    done = up.chunk(&mut head).await.map_err(SessionError::MidBody)?;
                }
                HeadEnd::NeedMore => break HeadEnd::NoBody,
                e => break e,
            }
        };
        if score_inline {
            while !done && head.len() < scan_limit {
                done = up.chunk(&mut head).await.map_err(SessionError::MidBody)?;
            }
            let prefix = &head[..head.len().min(scan_limit)];
            let end = tag::head_end(prefix, head_cap, done && head.len() <= scan_limit);
            let user = core.user.as_deref().unwrap_or_default();
            let (verdict, subject_delta) = scan::score_prefix(
                &core.proxy.scorer,
                user,
                prefix,
                end,
                head_cap,
                &settings.prefix,
            )
            .await;
            tag = Some(record_fixed(
                &mut core.mailbox,
                &mut core.pending,
                (m.upstream, m.uidl.clone()),
                &verdict,
                subject_delta,
                &settings,
            ));
        }
        let plan = match &tag {
            Some(tg) => {
                let v = TagVerdict {
                    class: tg.class,
                    score: tg.score,
                    rules: &tg.rules,
                };
                if fixed {
                    let size = tag::FIXED_TAG_SIZE;
                    tag::plan_fixed(&head, end, head_cap, v, &settings, Eol::Crlf, size)
                } else {
                    tag::plan(&head, end, head_cap, v, &settings, Eol::Crlf)
                }
            }
            None => TagPlan::default(),
        };
        if let Some(tg) = &tag
            && plan.added_len() as u64 != tg.promised
        {
            warn!(
                message = n,
                promised = tg.promised,
                actual = plan.added_len(),
                "the header changed since the scan; LIST size will be off"
            );
        }
        let mut out = Vec::with_capacity(head.len() + plan.added_len());
        plan.apply(&head, &mut out);
        drop(head);
        let mut sent = out.len() as u64;
        write_chunk(client, &out, t).await?;
        drop(out);
        let mut buf = Vec::with_capacity(crate::pop3::stream::READ_BUFFER);
        while !done {
            buf.clear();
            done = up.chunk(&mut buf).await.map_err(SessionError::MidBody)?;
            sent += buf.len() as u64;
            write_chunk(client, &buf, t).await?;
        }
        match tokio::time::timeout(t, client.finish_multiline()).await {
            Err(_) => return Err(SessionError::ClientWriteTimeout(t.as_secs())),
            Ok(r) => r?,
        }
        if top.is_none()
            && let Some(mb) = core.mailbox.as_mut()
        {
            mb.last = mb.last.max(n);
        }
        if core.pending.len() >= PENDING_BATCH {
            core.persist_pending().await;
        }
        if top.is_none() {
            let sequential = core.prev_retr != 0 && n == core.prev_retr.saturating_add(1);
            core.prev_retr = n;
            // A client that pipelines hides the round trip itself; one that waits for each answer gets the next
            // message asked for while it takes this one.
            if sequential && core.proxy.config.proxy.read_ahead && !client.has_buffered_input() {
                let map = core.mailbox.as_ref().map(|mb| &mb.map);
                let lookup = |k: u32| {
                    map.and_then(|m| m.get(k).ok())
                        .map(|m| (m.upstream, m.upstream_size))
                };
                if let Some(up) = core.up.as_mut() {
                    core.ahead.extend(up, n, lookup).await;
                }
            }
        }
        if top.is_none() && sent != m.client_size {
            warn!(
                message = n,
                listed = m.client_size,
                sent,
                "RETR size differs from LIST (the upstream's LIST size was not exact)"
            );
        }
        Ok(())
    }

    async fn quit(&mut self) -> Result<Flow, SessionError> {
        let delete_hidden = self.core.proxy.config.proxy.delete_hidden;
        let Session { client, core } = self;
        let up = match core.up.as_mut() {
            Some(u) => u,
            None => {
                client.queue_response(&Response::ok("popguard signing off"));
                return Ok(Flow::End);
            }
        };
        if delete_hidden && let Some(mb) = core.mailbox.as_mut() {
            let hidden: Vec<u32> = mb.map.hidden_undeleted().map(|m| m.upstream).collect();
            let mut deleted = 0;
            for u in hidden {
                if up.command(&Command::Dele(u)).await?.is_ok() {
                    mb.map.mark_hidden_deleted(u);
                    deleted += 1;
                }
            }
            info!(
                deleted,
                "deleted hidden spam upstream (delete_hidden = true)"
            );
        }
        // The upstream enters UPDATE and commits the deletions the client asked for; its answer is the client's.
        let r = up.command(&Command::Quit).await?;
        debug!(dir = "p→c", response = %r);
        client.queue_response(&r);
        Ok(Flow::End)
    }
}

/// How a scan runs, from the config (no time limit: the first scan sets one).
fn scan_settings(config: &Config, head_cap: usize, quarantine: Option<Quarantine>) -> ScanSettings {
    ScanSettings {
        method: config.proxy.scan,
        top_lines: config.proxy.top_lines(config.filter.scan_limit),
        scan_limit: config.filter.scan_limit,
        head_cap,
        subject_prefix: config.proxy.subject_prefix.clone(),
        quarantine,
        parallel: std::thread::available_parallelism().map_or(1, |n| n.get()),
        deadline: None,
    }
}

/// A verdict as the per-user cache keeps it.
fn cached_verdict(verdict: &Verdict, subject_delta: u32, prefix: &str) -> CachedVerdict {
    CachedVerdict {
        class: verdict.class,
        score: verdict.score,
        rules: verdict
            .rule_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        subject_delta,
        prefix: prefix.to_owned(),
        released: false,
        at: now_secs(),
    }
}

/// The tag for a cached verdict and the bytes it adds: its own size, or the fixed size.
fn msg_tag(v: &CachedVerdict, settings: &TagSettings, fixed: bool) -> MsgTag {
    let class = v.effective_class();
    let mut rules = v.rules.clone();
    if v.released {
        rules.push(RELEASED_RULE.to_owned());
    }
    let promised = if fixed {
        tag::FIXED_TAG_SIZE as u64
    } else {
        let fields = tag::status_fields(
            TagVerdict {
                class,
                score: v.score,
                rules: &rules,
            },
            settings,
            Eol::Crlf,
        );
        fields.len() as u64
            + if class == Class::Spam {
                u64::from(v.subject_delta)
            } else {
                0
            }
    };
    MsgTag {
        class,
        score: v.score,
        rules,
        promised,
    }
}

/// Keeps a verdict reached after the first scan (`tag_sizing = "fixed"`): the message's tag for the rest of the
/// session, and its cache entry (under `key`, when there is one) for the next batch written.
fn record_fixed(
    mailbox: &mut Option<Mailbox>,
    pending: &mut Vec<(String, CachedVerdict)>,
    (upstream, key): (u32, Option<String>),
    verdict: &Verdict,
    subject_delta: u32,
    settings: &TagSettings,
) -> MsgTag {
    let cv = cached_verdict(verdict, subject_delta, &settings.prefix);
    let tg = msg_tag(&cv, settings, true);
    if let Some(mb) = mailbox {
        mb.tags.insert(upstream, tg.clone());
    }
    if let Some(key) = key {
        pending.push((key, cv));
    }
    tg
}

async fn write_chunk<S>(
    client: &mut Pop3Stream<S>,
    data: &[u8],
    t: Duration,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(t, client.write_multiline_chunk(data)).await {
        Err(_) => Err(SessionError::ClientWriteTimeout(t.as_secs())),
        Ok(r) => Ok(r?),
    }
}

impl<C: Connect> Core<C> {
    async fn connect(&self, target: &Target) -> Result<Upstream<C::Stream>, UpstreamError> {
        let p = &self.proxy.config.proxy;
        Upstream::connect(
            &self.proxy.connector,
            target,
            self.proxy.upstream_tls.clone(),
            p.connect_timeout(),
            p.upstream_timeout(),
        )
        .await
    }

    fn has_tag(&self, upstream: u32) -> bool {
        self.mailbox
            .as_ref()
            .is_some_and(|mb| mb.tags.contains_key(&upstream))
    }

    /// Scores one message now, as the first scan would have (`tag_sizing = "fixed"`, before its first TOP).
    async fn score_now(&mut self, m: &MessageInfo) -> Result<(), SessionError> {
        self.settle_ahead().await?;
        let settings = scan_settings(&self.proxy.config, self.head_cap(), None);
        let scorer = self.proxy.scorer.clone();
        let user = self.user.clone().unwrap_or_default();
        let job = ScanJob {
            upstream: m.upstream,
            uidl: m.uidl.clone(),
        };
        let up = self.upstream()?;
        let outcomes = scan::scan(up, &scorer, &user, vec![job], &settings, &|_| false).await?;
        let tag_settings = self.tag_settings();
        for o in outcomes {
            if let Outcome::Scored {
                upstream,
                key,
                verdict,
                subject_delta,
                ..
            } = o
            {
                record_fixed(
                    &mut self.mailbox,
                    &mut self.pending,
                    (upstream, Some(key)),
                    &verdict,
                    subject_delta,
                    &tag_settings,
                );
            }
        }
        Ok(())
    }

    /// Writes the verdicts reached since the last write to the per-user cache.
    async fn persist_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let store = self.store.take();
        self.store = tokio::task::spawn_blocking(move || {
            let mut store = store;
            if let Some(s) = store.as_mut()
                && let Err(e) = s.insert_many(batch)
            {
                warn!("verdict cache not saved: {e}");
            }
            store
        })
        .await
        .unwrap_or(None);
    }

    /// Reads any read-ahead answer still on the wire, so the next command's answer is the next thing read.
    async fn settle_ahead(&mut self) -> Result<(), SessionError> {
        if let Some(up) = self.up.as_mut() {
            self.ahead.settle(up).await?;
        }
        Ok(())
    }

    fn upstream(&mut self) -> Result<&mut Upstream<C::Stream>, SessionError> {
        self.up
            .as_mut()
            .ok_or(SessionError::Client(Pop3Error::Closed))
    }

    /// STLS is offered when the proxy holds a certificate for STLS mode and the connection is still plain.
    fn offers_stls(&self) -> bool {
        self.proxy.client_tls.is_some()
            && self.proxy.config.proxy.client_tls == ClientTls::Stls
            && !self.client_is_tls
            && self.state == State::Authorization
    }

    /// A plain connection from another host, when STLS is available, must upgrade before sending a password.
    fn must_use_stls(&self) -> bool {
        self.offers_stls()
            && !self.proxy.config.proxy.allow_non_loopback
            && !self.peer_ip.is_some_and(|ip| ip.is_loopback())
    }

    fn tag_settings(&self) -> TagSettings {
        let c = &self.proxy.config;
        TagSettings {
            prefix: c.proxy.subject_prefix.clone(),
            mark_ham: c.proxy.mark_ham,
            required: c.filter.spam_threshold,
        }
    }

    /// Header bytes the tag reads: never more than is scanned, so the scan and RETR see the same header.
    fn head_cap(&self) -> usize {
        tag::MAX_TAG_HEADER.min(self.proxy.config.filter.scan_limit.max(1))
    }

    async fn enter_transaction(&mut self, login: String) {
        tracing::Span::current().record("user", login.as_str());
        info!("logged in");
        self.action = self.proxy.action_for(&login);
        self.state = State::Transaction;
        if let Some(up) = self.up.as_mut() {
            // Capabilities may change after login (RFC 2449 §5).
            up.forget_capabilities();
        }
        let data_dir = self.proxy.data_dir.clone();
        let l = login.clone();
        self.store =
            match tokio::task::spawn_blocking(move || VerdictStore::open(&data_dir, &l)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    warn!("verdict cache unavailable, every message will be scored: {e}");
                    None
                }
                Err(e) => {
                    warn!("verdict cache unavailable: {e}");
                    None
                }
            };
        self.user = Some(login);
    }

    /// Learns the maildrop, scans what is not cached, and builds the client's map (once per session).
    async fn ensure_mailbox(&mut self) -> Result<(), SessionError> {
        if self.mailbox.is_some() {
            return Ok(());
        }
        let user = self.user.clone().unwrap_or_default();
        let config = self.proxy.config.clone();
        let prefix = config.proxy.subject_prefix.clone();
        let action = self.action;
        let head_cap = self.head_cap();
        let quarantine =
            (action == Action::Hide).then(|| Quarantine::open(&self.proxy.data_dir, &user));
        let filter = self.proxy.scorer.clone();
        let started = std::time::Instant::now();

        let up = self
            .up
            .as_mut()
            .ok_or(SessionError::Client(Pop3Error::Closed))?;
        up.capabilities().await?;
        let listing = scan::fetch_listing(up).await?;

        let store = &self.store;
        let valid = |v: &CachedVerdict| v.effective_class() != Class::Spam || v.prefix == prefix;
        let cached = |k: &str| {
            store
                .as_ref()
                .and_then(|s| s.get(k))
                .filter(|v| valid(v))
                .cloned()
        };
        let uidl_of = |u: u32| listing.uidls.as_ref().and_then(|m| m.get(&u)).cloned();
        let mut verdicts: HashMap<u32, (String, CachedVerdict)> = HashMap::new();
        let mut jobs = Vec::new();
        for &(u, _) in &listing.sizes {
            let uidl = uidl_of(u);
            match uidl.as_deref().and_then(cached) {
                Some(v) => {
                    verdicts.insert(u, (uidl.unwrap_or_default(), v));
                }
                None => jobs.push(ScanJob { upstream: u, uidl }),
            }
        }
        // Fixed tag sizes need no scan before LIST; the cache key is the UIDL, so without UIDL it is `exact`.
        let fixed = action == Action::Tag
            && config.proxy.tag_sizing == TagSizing::Fixed
            && listing.uidls.is_some();
        if fixed {
            jobs.clear();
        }
        let scanned = jobs.len();
        let mut settings = scan_settings(&config, head_cap, quarantine.clone());
        settings.deadline = config.proxy.scan_budget().map(|b| started + b);
        let known = |k: &str| cached(k).is_some();
        let outcomes = if jobs.is_empty() {
            Vec::new()
        } else {
            scan::scan(up, &filter, &user, jobs, &settings, &known).await?
        };

        let mut new_entries = Vec::new();
        let mut hidden_now = Vec::new();
        let mut deferred = HashSet::new();
        for o in outcomes {
            match o {
                Outcome::Deferred { upstream } => {
                    deferred.insert(upstream);
                }
                Outcome::Scored {
                    upstream,
                    key,
                    verdict,
                    subject_delta,
                    summary,
                } => {
                    let cv = cached_verdict(&verdict, subject_delta, &prefix);
                    if action == Action::Hide && verdict.is_spam() {
                        let s = summary.unwrap_or_default();
                        hidden_now.push(QuarantineEntry::new(
                            &key,
                            &s.from,
                            &s.subject,
                            verdict.score,
                            cv.rules.clone(),
                        ));
                    }
                    new_entries.push((key.clone(), cv.clone()));
                    verdicts.insert(upstream, (key, cv));
                }
                Outcome::Known { upstream, key } => {
                    if let Some(v) = cached(&key) {
                        verdicts.insert(upstream, (key, v));
                    }
                }
                Outcome::Failed { upstream, reason } => {
                    warn!(
                        message = upstream,
                        "could not be scanned ({reason}); shown untagged"
                    );
                }
            }
        }

        // Persist before answering: a crash after this point does not lose the scan.
        let store = self.store.take();
        let (store, q) = tokio::task::spawn_blocking(move || {
            let mut store = store;
            if let Some(s) = store.as_mut()
                && let Err(e) = s.insert_many(new_entries)
            {
                warn!("verdict cache not saved: {e}");
            }
            if let Some(q) = &quarantine
                && let Err(e) = q.add_entries(&hidden_now)
            {
                warn!("quarantine not saved: {e}");
            }
            (store, quarantine)
        })
        .await
        .unwrap_or((None, None));
        self.store = store;
        drop(q);

        let settings = self.tag_settings();
        let mut infos = Vec::with_capacity(listing.sizes.len());
        let mut tags = HashMap::new();
        let mut keys = HashSet::new();
        for &(u, size) in &listing.sizes {
            if deferred.contains(&u) {
                // Not scored in time: out of this session's view (not hidden, so never deleted as spam), and
                // scanned first thing next time.
                if let Some(uidl) = uidl_of(u) {
                    keys.insert(uidl);
                }
                continue;
            }
            let mut info = MessageInfo {
                upstream: u,
                upstream_size: size,
                client_size: size,
                uidl: uidl_of(u),
                hidden: false,
            };
            if let Some((key, v)) = verdicts.get(&u) {
                keys.insert(key.clone());
                let tg = msg_tag(v, &settings, fixed);
                info.client_size = size + tg.promised;
                info.hidden = action == Action::Hide && tg.class == Class::Spam;
                tags.insert(u, tg);
            } else {
                if let Some(uidl) = &info.uidl {
                    keys.insert(uidl.clone());
                }
                if fixed {
                    info.client_size = size + tag::FIXED_TAG_SIZE as u64;
                }
            }
            infos.push(info);
        }
        if !deferred.is_empty() {
            info!(
                deferred = deferred.len(),
                budget_secs = config.proxy.scan_budget,
                "scan budget reached: the messages not scanned yet are left out of this session (untouched \
                 upstream) and scanned first in the next one"
            );
        }
        let map = MailboxMap::new(infos);
        info!(
            messages = listing.sizes.len(),
            visible = map.len(),
            scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "maildrop ready"
        );
        self.mailbox = Some(Mailbox {
            map,
            tags,
            has_uidl: listing.uidls.is_some(),
            keys,
            last: 0,
            fixed,
        });
        Ok(())
    }

    /// End of session: prune per-user state of messages that left the maildrop (only after a full listing).
    async fn finish(mut self) {
        self.persist_pending().await;
        let (Some(mb), Some(user)) = (self.mailbox, self.user) else {
            return;
        };
        let keys = mb.keys;
        let store = self.store;
        let data_dir = self.proxy.data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let live = |k: &str| keys.contains(k);
            if let Some(mut s) = store
                && let Err(e) = s.compact_if_worthwhile(&live)
            {
                warn!("verdict cache compaction: {e}");
            }
            if let Err(e) = Quarantine::open(&data_dir, &user).prune(&live) {
                warn!("quarantine pruning: {e}");
            }
        })
        .await;
    }
}
