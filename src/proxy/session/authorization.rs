//! AUTHORIZATION: the greeting, routing a login to its upstream, and relaying USER/PASS, APOP and AUTH (SASL) to
//! it; CAPA and STLS. The proxy only reads the login name; the upstream decides.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::{Client, Flow, SessionError, Shared};
use crate::pop3::{Command, RespCode, Response, SaslResponse, Status};
use crate::proxy::Proxy;
use crate::proxy::capa::{self, CapaContext};
use crate::proxy::sasl;
use crate::proxy::upstream::{Connect, Route, Target, Upstream, UpstreamError};
use crate::secret::Secret;

/// What AUTHORIZATION holds: the upstream, once routed, and the login waiting for its PASS.
pub(super) struct Authorization<C: Connect> {
    up: Option<Upstream<C::Stream>>,
    /// Where `up` goes (a later USER for another route reconnects).
    up_target: Option<Target>,
    /// The upstream's greeting carried an APOP timestamp, relayed to the client.
    apop_allowed: bool,
    /// The login accepted by USER, waiting for PASS.
    pending_user: Option<String>,
}

/// Connects to one upstream with the configured budgets.
pub(super) async fn connect<C: Connect>(
    proxy: &Proxy<C>,
    target: &Target,
) -> Result<Upstream<C::Stream>, UpstreamError> {
    let s = &proxy.settings;
    Upstream::connect(
        &proxy.connector,
        target,
        proxy.upstream_tls.clone(),
        s.connect_timeout,
        s.upstream_timeout,
    )
    .await
}

/// CAPA in either phase: the upstream's list filtered to what the proxy relays, or (before routing) the proxy's.
pub(super) async fn capa<T, S>(
    up: Option<&mut Upstream<T>>,
    ctx: CapaContext,
    client: &mut Client<S>,
) -> Result<(), SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let caps = match up {
        // Routing waits for the login name: show what the proxy can relay.
        None => Some(capa::before_routing(ctx.offer_stls)),
        Some(up) => {
            up.forget_capabilities();
            up.capabilities().await?.map(|c| capa::filter(c, ctx))
        }
    };
    match caps {
        Some(c) => {
            client
                .multiline(Response::ok("Capability list follows"), &c.to_body())
                .await?
        }
        None => client.reply(Response::err("CAPA not supported by the mail server")),
    }
    Ok(())
}

fn unreachable_upstream(e: &UpstreamError) -> Response {
    Response::err(format!("popguard cannot reach the mail server: {e}"))
        .with_code(RespCode::SysTemp)
}

impl<C: Connect> Authorization<C> {
    pub(super) fn new() -> Self {
        Authorization {
            up: None,
            up_target: None,
            apop_allowed: false,
            pending_user: None,
        }
    }

    /// After STLS nothing said in clear counts (RFC 2595 §4).
    pub(super) fn forget_pending_user(&mut self) {
        self.pending_user = None;
    }

    /// The upstream the login went through, for TRANSACTION.
    pub(super) fn take_upstream(&mut self) -> Option<Upstream<C::Stream>> {
        self.up.take()
    }

    /// The greeting: the upstream's (with static routing, connected at once), else the proxy's own.
    pub(super) async fn greet<S>(
        &mut self,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let routing = &shared.proxy.settings.routing;
        if let (true, Some(target)) = (routing.is_static(), routing.default_target().cloned()) {
            match connect(&shared.proxy, &target).await {
                Ok(up) => {
                    // Relaying the greeting passes its APOP timestamp (RFC 1939 §7) to the client.
                    self.apop_allowed = up.greeting_timestamp().is_some();
                    let g = up.greeting.clone();
                    self.up = Some(up);
                    self.up_target = Some(target);
                    client.reply(g);
                }
                Err(e) => {
                    warn!("upstream {target}: {e}");
                    client.reply(unreachable_upstream(&e));
                    client.flush().await?;
                    return Ok(Flow::End);
                }
            }
        } else {
            client.reply(Response::ok("popguard POP3 proxy ready"));
        }
        client.flush().await?;
        Ok(Flow::Continue)
    }

    pub(super) async fn command<S>(
        &mut self,
        cmd: Command,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match cmd {
            Command::Capa => {
                let ctx = CapaContext {
                    authorization: true,
                    offer_stls: shared.offers_stls(),
                };
                capa(self.up.as_mut(), ctx, client).await?;
            }
            Command::Stls => return Ok(stls(client, shared)),
            Command::Quit => {
                let r = match self.up.as_mut() {
                    Some(up) => up.command(&Command::Quit).await?,
                    None => Response::ok("popguard signing off"),
                };
                client.reply(r);
                return Ok(Flow::End);
            }
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. }
                if shared.must_use_stls() =>
            {
                client.reply(
                    Response::err("use STLS first: this proxy does not take passwords in clear over the network")
                        .with_code(RespCode::Auth),
                );
            }
            Command::User(name) => self.user(name, client, shared).await?,
            Command::Pass(pw) => return self.pass(pw, client).await,
            Command::Apop { name, digest } => return self.apop(name, digest, client).await,
            Command::Auth {
                mechanism: None, ..
            } => self.auth_list(client).await?,
            Command::Auth {
                mechanism: Some(m),
                initial,
            } => return self.auth(m, initial, client, shared).await,
            Command::Unknown(v) => client.reply(Response::err(format!("unknown command {v}"))),
            other => client.reply(Response::err(format!(
                "{} is not valid before login",
                other.verb()
            ))),
        }
        Ok(Flow::Continue)
    }

    /// Connects to the route's upstream unless already there; on failure the client got `-ERR` and `None`.
    async fn ensure_upstream<S>(
        &mut self,
        route: &Route,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Option<&mut Upstream<C::Stream>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.up.is_none() || self.up_target.as_ref() != Some(&route.target) {
            self.up = None;
            match connect(&shared.proxy, &route.target).await {
                Ok(up) => {
                    self.up = Some(up);
                    self.up_target = Some(route.target.clone());
                }
                Err(e) => {
                    warn!("upstream {}: {e}", route.target);
                    client.reply(unreachable_upstream(&e));
                    return None;
                }
            }
        }
        self.up.as_mut()
    }

    async fn user<S>(
        &mut self,
        login: String,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.pending_user = None;
        let Some(route) = route(&login, client, shared) else {
            return Ok(());
        };
        let Some(up) = self.ensure_upstream(&route, client, shared).await else {
            return Ok(());
        };
        let r = up
            .command(&Command::User(route.upstream_login.clone()))
            .await?;
        if r.is_ok() {
            self.pending_user = Some(login);
        }
        client.reply(r);
        Ok(())
    }

    async fn pass<S>(&mut self, pw: Secret, client: &mut Client<S>) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (Some(login), Some(up)) = (self.pending_user.take(), self.up.as_mut()) else {
            client.reply(Response::err("send USER first"));
            return Ok(Flow::Continue);
        };
        let r = up.command(&Command::Pass(pw)).await?;
        let ok = r.is_ok();
        client.reply(r);
        Ok(if ok {
            Flow::LoggedIn(login)
        } else {
            Flow::Continue
        })
    }

    async fn apop<S>(
        &mut self,
        name: String,
        digest: Secret,
        client: &mut Client<S>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let up = match self.up.as_mut() {
            Some(up) if self.apop_allowed => up,
            _ => {
                client.reply(Response::err(
                    "APOP is not available through this proxy: use USER/PASS or AUTH",
                ));
                return Ok(Flow::Continue);
            }
        };
        let r = up
            .command(&Command::Apop {
                name: name.clone(),
                digest,
            })
            .await?;
        let ok = r.is_ok();
        client.reply(r);
        Ok(if ok {
            Flow::LoggedIn(name)
        } else {
            Flow::Continue
        })
    }

    /// `AUTH` alone: the mechanisms the proxy relays (and the upstream has, when known).
    async fn auth_list<S>(&mut self, client: &mut Client<S>) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut mechs: Vec<String> = sasl::RELAYED_MECHANISMS
            .iter()
            .map(|m| m.to_string())
            .collect();
        if let Some(up) = self.up.as_mut()
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
        client
            .multiline(Response::ok("SASL mechanisms follow"), &body)
            .await
    }

    async fn auth<S>(
        &mut self,
        mech: String,
        initial: Option<Secret>,
        client: &mut Client<S>,
        shared: &Shared<C>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !sasl::is_relayed(&mech) {
            client.reply(Response::err(
                sasl::SaslError::Unsupported(mech).to_string(),
            ));
            return Ok(Flow::Continue);
        }
        if shared.proxy.settings.routing.is_static()
            && let Some(up) = self.up.as_mut()
        {
            // One upstream for everyone: relay the exchange as it comes (an empty "=" initial response too),
            // reading the user name on the way.
            let user = initial
                .as_ref()
                .filter(|i| i.expose() != "=")
                .and_then(|i| sasl::user_of(&mech, i).ok());
            up.send(&Command::Auth {
                mechanism: Some(mech.clone()),
                initial,
            })
            .await?;
            return self.sasl_relay(&mech, user, client).await;
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
                client.reply(Response::cont(challenge));
                client.flush().await?;
                match client.read_sasl().await? {
                    SaslResponse::Cancel => {
                        client.reply(Response::err("AUTH cancelled"));
                        return Ok(Flow::Continue);
                    }
                    SaslResponse::Data(d) => d,
                }
            }
        };
        let login = match sasl::user_of(&mech, &first) {
            Ok(u) => u,
            Err(e) => {
                client.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
                return Ok(Flow::Continue);
            }
        };
        let Some(route) = route(&login, client, shared) else {
            return Ok(Flow::Continue);
        };
        let Some(up) = self.ensure_upstream(&route, client, shared).await else {
            return Ok(Flow::Continue);
        };
        let first = if route.by_login {
            match sasl::with_user(&mech, &first, &route.upstream_login) {
                Ok(f) => f,
                Err(e) => {
                    client.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
                    return Ok(Flow::Continue);
                }
            }
        } else {
            first
        };
        // Two steps upstream, so a long first message never meets a command-line limit (RFC 5034 §4).
        let r = up
            .command(&Command::Auth {
                mechanism: Some(mech.clone()),
                initial: None,
            })
            .await?;
        if r.status != Status::Continue {
            client.reply(r);
            return Ok(Flow::Continue);
        }
        up.send_line(first.expose()).await?;
        self.sasl_relay(&mech, Some(login), client).await
    }

    /// Relays `+ ` challenges and client responses until the upstream answers `+OK` or `-ERR`.
    async fn sasl_relay<S>(
        &mut self,
        mech: &str,
        mut user: Option<String>,
        client: &mut Client<S>,
    ) -> Result<Flow, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        loop {
            let up = self.up.as_mut().ok_or(SessionError::MissingUpstream)?;
            let r = up.response().await?;
            match r.status {
                Status::Continue => {
                    client.reply(r);
                    client.flush().await?;
                    let line = match client.read_sasl().await? {
                        SaslResponse::Cancel => Secret::new("*"),
                        SaslResponse::Data(d) => {
                            if user.is_none() {
                                user = sasl::user_of(mech, &d).ok();
                            }
                            d
                        }
                    };
                    let up = self.up.as_mut().ok_or(SessionError::MissingUpstream)?;
                    up.send_line(line.expose()).await?;
                }
                Status::Ok => {
                    let Some(u) = user else {
                        // Logged in upstream, but whose state applies is unknown: refuse rather than guess.
                        warn!("AUTH {mech} succeeded upstream but named no user; closing");
                        client.reply(Response::err(
                            "popguard could not read the user name from this AUTH exchange",
                        ));
                        self.up = None;
                        return Ok(Flow::Continue);
                    };
                    client.reply(r);
                    return Ok(Flow::LoggedIn(u));
                }
                Status::Err => {
                    client.reply(r);
                    return Ok(Flow::Continue);
                }
            }
        }
    }
}

/// STLS: `+OK` and the upgrade, unless it is not offered or the client already sent more.
fn stls<C: Connect, S>(client: &mut Client<S>, shared: &Shared<C>) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !shared.offers_stls() {
        client.reply(Response::err("STLS is not available here"));
        return Flow::Continue;
    }
    if client.has_buffered_input() {
        // Plaintext sent after STLS would be taken as protected (RFC 3207 §6 / CVE-2011-0411).
        client.reply(Response::err(
            "data after STLS before the handshake; closing",
        ));
        return Flow::End;
    }
    client.reply(Response::ok("Begin TLS negotiation"));
    Flow::StartTls
}

/// The route for a login; on failure the client got `-ERR`.
fn route<C: Connect, S>(login: &str, client: &mut Client<S>, shared: &Shared<C>) -> Option<Route>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match shared.proxy.settings.routing.route(login) {
        Ok(r) => Some(r),
        Err(e) => {
            client.reply(Response::err(e.to_string()).with_code(RespCode::Auth));
            None
        }
    }
}
