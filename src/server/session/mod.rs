//! One POP3 session's state machine (RFC 1939 §3–§7, CAPA from RFC 2449, AUTH PLAIN from RFC 5034/4616):
//! commands in, replies out, no sockets.
//!
//! The state is an enum carrying its data, and [`Session::handle`] decides first whether a command is allowed in
//! the current state, then runs it. What the connection must do beyond writing a status line (stream a message
//! file, read a SASL line, switch to TLS, close) comes back as a [`Reply`] variant.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;

use super::ServerConfig;
use super::lock::{LockError, LockTable, MaildropLock};
use super::maildir::{MaildirError, Maildrop, MessageSource, SizeCache};
use super::users::constant_time_eq;
use crate::pop3::{Command, CommandError, RespCode, Response, SaslResponse, auth};
use crate::secret::Secret;

/// Failed logins (USER/PASS, APOP or AUTH) after which the connection is closed; each failure already waits
/// `auth_failure_delay`, so guessing costs time and reconnects.
pub const MAX_AUTH_FAILURES: u32 = 3;

pub use crate::pop3::limits::MAX_BAD_COMMANDS;

/// The SASL mechanisms offered (RFC 5034 §4). PLAIN only: the server stores hashes, so challenge-response
/// mechanisms other than APOP cannot work.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN"];

/// What the server process shares between sessions.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<ServerConfig>,
    pub locks: LockTable,
    pub sizes: SizeCache,
}

impl Shared {
    pub fn new(config: Arc<ServerConfig>) -> Shared {
        Shared {
            config,
            locks: LockTable::new(),
            sizes: SizeCache::default(),
        }
    }
}

/// What the connection does with a command's outcome.
#[derive(Debug)]
pub enum Reply {
    /// A status line.
    Status(Response),
    /// A status line and a short multi-line body (LIST, UIDL, CAPA, the AUTH mechanism list); lines without CRLF.
    Lines(Response, Vec<String>),
    /// `ok` (unless the file cannot be opened any more), then the file streamed as a multi-line body; `top` cuts it
    /// to the header and that many body lines.
    Message {
        ok: Response,
        /// For the log: where the message was listed.
        path: PathBuf,
        /// Opens the listed file again without following links.
        source: MessageSource,
        /// The POP3 size from the maildrop snapshot (at least the file's length).
        size: u64,
        top: Option<u32>,
    },
    /// The `+ ` continuation of AUTH: the next client line is SASL data for [`Session::sasl_line`].
    SaslContinue,
    /// `+OK` to STLS: write it, then run the TLS handshake and call [`Session::tls_started`].
    StartTls(Response),
    /// A last status line, then close the connection.
    Close(Response),
}

/// Where the session is (RFC 1939 §3).
enum State {
    Authorization {
        user: Option<String>,
    },
    /// AUTH PLAIN sent `+ `; waiting for the client's base64 line.
    SaslPlain,
    Transaction(Box<Transaction>),
    Closed,
}

/// The TRANSACTION state's data: the maildrop as it was at login and the deletion marks.
struct Transaction {
    user: String,
    maildrop: Maildrop,
    deleted: Vec<bool>,
    deleted_count: usize,
    deleted_octets: u64,
    /// The size of the whole maildrop at login.
    total_octets: u64,
    /// Held until the session ends; dropping the transaction releases the maildrop.
    _lock: MaildropLock,
}

pub struct Session {
    shared: Arc<Shared>,
    state: State,
    /// The APOP timestamp of the greeting (RFC 1939 §7), `<...@host>`.
    stamp: String,
    tls_active: bool,
    auth_failures: u32,
    bad_commands: u32,
}

/// Makes every greeting timestamp unique within the process; pid and clock make it unique across restarts.
static STAMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_stamp(host: &str) -> String {
    let n = STAMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("<{}.{n}.{nanos}@{host}>", std::process::id())
}

fn wrong_state() -> Response {
    Response::err("command not valid in this state")
}

fn not_logged_in() -> Response {
    Response::err("not logged in; log in with USER/PASS, APOP or AUTH first")
}

impl Session {
    /// A session on a new connection; `tls_active` when the connection is already TLS (implicit TLS).
    pub fn new(shared: Arc<Shared>, tls_active: bool) -> Session {
        let stamp = new_stamp(&shared.config.hostname);
        Session {
            shared,
            state: State::Authorization { user: None },
            stamp,
            tls_active,
            auth_failures: 0,
            bad_commands: 0,
        }
    }

    /// The `+OK` greeting; it carries the APOP timestamp only when APOP can work (some password is plaintext).
    pub fn greeting(&self) -> Response {
        if self.shared.config.users.any_plaintext() {
            Response::ok(format!("popguard POP3 server ready {}", self.stamp))
        } else {
            Response::ok("popguard POP3 server ready")
        }
    }

    /// True after AUTH PLAIN without an initial response: the next line is SASL data, not a command.
    pub fn expects_sasl_line(&self) -> bool {
        matches!(self.state, State::SaslPlain)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Transaction(t) => Some(&t.user),
            _ => None,
        }
    }

    /// The reply to the inactivity timeout (RFC 1939 §3): the session ends without entering UPDATE, so nothing is
    /// removed.
    pub fn timed_out(&mut self) -> Response {
        self.state = State::Closed;
        Response::err("idle for too long; closing the connection (no messages were removed)")
    }

    /// After the STLS handshake: back to the start of AUTHORIZATION with nothing remembered from before TLS
    /// (RFC 2595 §4: the client must discard what it learned; the server forgets a USER given in plaintext).
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.state = State::Authorization { user: None };
    }

    /// Answers a line that did not parse as a command.
    pub fn bad_command(&mut self, err: &CommandError) -> Reply {
        self.bad(Response::err(err.to_string()))
    }

    fn bad(&mut self, r: Response) -> Reply {
        self.bad_commands += 1;
        if self.bad_commands >= MAX_BAD_COMMANDS {
            self.state = State::Closed;
            return Reply::Close(Response::err(
                "too many bad commands; closing the connection",
            ));
        }
        Reply::Status(r)
    }

    /// Runs one command.
    pub async fn handle(&mut self, cmd: Command) -> Reply {
        // One gate decides what each state allows before any handler runs.
        if let Err(r) = self.gate(&cmd) {
            return self.bad(r);
        }
        self.bad_commands = 0;
        match &self.state {
            State::Authorization { .. } => self.authorization(cmd).await,
            State::Transaction(_) => self.transaction(cmd).await,
            // The gate lets nothing through in these states.
            State::SaslPlain | State::Closed => Reply::Status(wrong_state()),
        }
    }

    /// Whether `cmd` is allowed now (RFC 1939 lists each command's state); the `-ERR` when it is not.
    fn gate(&mut self, cmd: &Command) -> Result<(), Response> {
        if let Command::Unknown(verb) = cmd {
            return Err(Response::err(format!("unknown command {verb}")));
        }
        // Valid in every state where commands are read.
        let anywhere = matches!(cmd, Command::Capa | Command::Noop | Command::Quit);
        let login_only = matches!(
            cmd,
            Command::User(_)
                | Command::Pass(_)
                | Command::Apop { .. }
                | Command::Auth { .. }
                | Command::Stls
                | Command::Utf8
        );
        match &self.state {
            State::Authorization { .. } if anywhere || login_only => Ok(()),
            State::Authorization { .. } => Err(not_logged_in()),
            State::Transaction(_) if !login_only => Ok(()),
            State::Transaction(_) => Err(wrong_state()),
            // A SASL line is read with `sasl_line`; a command here means the connection mixed them up.
            State::SaslPlain => {
                self.state = State::Authorization { user: None };
                Err(Response::err(
                    "expected SASL data; authentication cancelled",
                ))
            }
            State::Closed => Err(wrong_state()),
        }
    }

    fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if matches!(self.state, State::Authorization { .. }) {
            caps.push("USER".to_owned());
            caps.push(format!("SASL {}", SASL_MECHANISMS.join(" ")));
            if self.shared.config.tls.is_some() && !self.tls_active {
                caps.push("STLS".to_owned());
            }
        }
        caps.push(format!(
            "IMPLEMENTATION popguard-{}",
            env!("CARGO_PKG_VERSION")
        ));
        caps
    }

    async fn authorization(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Capa => {
                Reply::Lines(Response::ok("Capability list follows"), self.capabilities())
            }
            Command::Noop => Reply::Status(Response::ok("")),
            Command::Quit => {
                self.state = State::Closed;
                Reply::Close(Response::ok("popguard signing off"))
            }
            Command::User(name) => {
                // Always +OK: whether a name exists is only revealed (never) by PASS.
                let text = format!("send PASS for {name}");
                self.state = State::Authorization { user: Some(name) };
                Reply::Status(Response::ok(text))
            }
            Command::Pass(password) => {
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    _ => None,
                };
                match user {
                    None => Reply::Status(Response::err("send USER first")),
                    Some(user) => self.login(user, Some(password)).await,
                }
            }
            Command::Apop { name, digest } => {
                self.state = State::Authorization { user: None };
                if self.apop_matches(&name, &digest) {
                    self.enter_transaction(name).await
                } else {
                    self.fail_login().await
                }
            }
            Command::Auth {
                mechanism: None, ..
            } => Reply::Lines(
                Response::ok("SASL mechanisms follow"),
                SASL_MECHANISMS.iter().map(|s| (*s).to_owned()).collect(),
            ),
            Command::Auth {
                mechanism: Some(m),
                initial,
            } => {
                self.state = State::Authorization { user: None };
                if !SASL_MECHANISMS.iter().any(|s| s.eq_ignore_ascii_case(&m)) {
                    return Reply::Status(Response::err(format!(
                        "unsupported SASL mechanism {m}; use {}",
                        SASL_MECHANISMS.join(" ")
                    )));
                }
                match initial {
                    Some(data) => self.sasl_plain(data.expose().as_bytes()).await,
                    None => {
                        self.state = State::SaslPlain;
                        Reply::SaslContinue
                    }
                }
            }
            Command::Stls => {
                if self.shared.config.tls.is_none() {
                    Reply::Status(Response::err(
                        "STLS is not available: the server has no certificate",
                    ))
                } else if self.tls_active {
                    Reply::Status(Response::err("already using TLS"))
                } else {
                    self.state = State::Authorization { user: None };
                    Reply::StartTls(Response::ok("begin TLS negotiation"))
                }
            }
            Command::Utf8 => Reply::Status(Response::err("UTF8 is not supported")),
            // Turned away by the gate.
            _ => Reply::Status(not_logged_in()),
        }
    }

    /// The SASL line after `+ `: `*` cancels (RFC 5034 §4), anything else is base64 PLAIN data.
    pub async fn sasl_line(&mut self, line: SaslResponse) -> Reply {
        self.state = State::Authorization { user: None };
        match line {
            SaslResponse::Cancel => Reply::Status(Response::err("authentication cancelled")),
            SaslResponse::Data(data) => self.sasl_plain(data.expose().as_bytes()).await,
        }
    }

    /// Answers a SASL line that was not base64 (or too long): the exchange is over.
    pub fn bad_sasl_line(&mut self, err: &CommandError) -> Reply {
        self.state = State::Authorization { user: None };
        self.bad(Response::err(format!("{err}; authentication cancelled")))
    }

    /// AUTH PLAIN (RFC 4616): base64 of `authzid NUL authcid NUL password`; `=` is an empty response.
    async fn sasl_plain(&mut self, data: &[u8]) -> Reply {
        let decoded = if data == b"=" {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(data).ok()
        };
        let Some(decoded) = decoded else {
            return Reply::Status(Response::err("invalid base64 in SASL response"));
        };
        let Some((authzid, authcid, password)) = auth::split_plain(&decoded) else {
            return self.fail_login().await;
        };
        let (Ok(authzid), Ok(authcid), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            return self.fail_login().await;
        };
        // Acting as another user is not supported: the authorization identity must be empty or the same.
        if !authzid.is_empty() && authzid != authcid {
            return self.fail_login().await;
        }
        self.login(authcid.to_owned(), Some(Secret::new(password)))
            .await
    }

    fn apop_matches(&self, name: &str, digest: &Secret) -> bool {
        let Some(plain) = self
            .shared
            .config
            .users
            .get(name)
            .and_then(|c| c.plaintext())
        else {
            return false;
        };
        let want = auth::apop_digest(&self.stamp, plain);
        constant_time_eq(
            want.expose().as_bytes(),
            digest.expose().to_ascii_lowercase().as_bytes(),
        )
    }

    /// Checks the password (none for APOP, already checked), then locks and opens the maildrop.
    async fn login(&mut self, user: String, password: Option<Secret>) -> Reply {
        self.state = State::Authorization { user: None };
        if let Some(password) = password {
            let shared = Arc::clone(&self.shared);
            let name = user.clone();
            // Crypt hashes take milliseconds of CPU by design: keep them off the async workers.
            let ok = tokio::task::spawn_blocking(move || {
                shared
                    .config
                    .users
                    .verify(&name, password.expose().as_bytes())
            })
            .await
            .unwrap_or(false);
            if !ok {
                return self.fail_login().await;
            }
        }
        self.enter_transaction(user).await
    }

    async fn fail_login(&mut self) -> Reply {
        self.state = State::Authorization { user: None };
        self.auth_failures += 1;
        tokio::time::sleep(self.shared.config.auth_failure_delay).await;
        let r = Response::err("authentication failed").with_code(RespCode::Auth);
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.state = State::Closed;
            return Reply::Close(r);
        }
        Reply::Status(r)
    }

    async fn enter_transaction(&mut self, user: String) -> Reply {
        let shared = Arc::clone(&self.shared);
        let name = user.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let dir = shared.config.maildirs.join(&name);
            let lock = shared.locks.try_lock(&name, &dir)?;
            let maildrop =
                Maildrop::open_cached(&dir, &shared.sizes).map_err(OpenError::Maildir)?;
            Ok::<_, OpenError>((lock, maildrop))
        })
        .await;
        let (lock, maildrop) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(OpenError::Lock(LockError::InUse))) => {
                return Reply::Status(
                    Response::err("maildrop is in use by another session; try again later")
                        .with_code(RespCode::InUse),
                );
            }
            Ok(Err(OpenError::Maildir(e))) => {
                tracing::error!(user = %user, error = %e, "cannot open maildrop");
                let code = match e {
                    MaildirError::Missing { .. } => RespCode::SysPerm,
                    MaildirError::Read { .. } => RespCode::SysTemp,
                };
                return Reply::Status(Response::err("cannot open your maildrop").with_code(code));
            }
            Err(join) => {
                tracing::error!(user = %user, error = %join, "maildrop open task failed");
                return Reply::Status(Response::err("internal error").with_code(RespCode::SysTemp));
            }
        };
        let count = maildrop.messages().len();
        let octets: u64 = maildrop.messages().iter().map(|m| m.size).sum();
        tracing::info!(user = %user, messages = count, octets, "logged in");
        self.state = State::Transaction(Box::new(Transaction {
            user,
            deleted: vec![false; count],
            maildrop,
            deleted_count: 0,
            deleted_octets: 0,
            total_octets: octets,
            _lock: lock,
        }));
        Reply::Status(Response::ok(format!(
            "maildrop has {count} messages ({octets} octets)"
        )))
    }

    async fn transaction(&mut self, cmd: Command) -> Reply {
        let State::Transaction(t) = &mut self.state else {
            return Reply::Status(wrong_state());
        };
        match cmd {
            Command::Capa => {
                Reply::Lines(Response::ok("Capability list follows"), self.capabilities())
            }
            Command::Noop => Reply::Status(Response::ok("")),
            Command::Stat => {
                let (n, o) = t.totals();
                Reply::Status(Response::ok(format!("{n} {o}")))
            }
            Command::List(None) => {
                let (n, o) = t.totals();
                let lines = t
                    .live()
                    .map(|(i, m)| format!("{} {}", i + 1, m.size))
                    .collect();
                Reply::Lines(Response::ok(format!("{n} messages ({o} octets)")), lines)
            }
            Command::List(Some(n)) => match t.index(n) {
                Ok(i) => Reply::Status(Response::ok(format!(
                    "{n} {}",
                    t.maildrop.messages()[i].size
                ))),
                Err(r) => Reply::Status(r),
            },
            Command::Uidl(None) => {
                let lines = t
                    .live()
                    .map(|(i, m)| format!("{} {}", i + 1, m.uidl))
                    .collect();
                Reply::Lines(Response::ok("unique-id listing follows"), lines)
            }
            Command::Uidl(Some(n)) => match t.index(n) {
                Ok(i) => Reply::Status(Response::ok(format!(
                    "{n} {}",
                    t.maildrop.messages()[i].uidl
                ))),
                Err(r) => Reply::Status(r),
            },
            Command::Retr(n) => match t.index(n) {
                Ok(i) => {
                    let m = &t.maildrop.messages()[i];
                    Reply::Message {
                        ok: Response::ok(format!("{} octets", m.size)),
                        path: m.path.clone(),
                        source: m.source.clone(),
                        size: m.size,
                        top: None,
                    }
                }
                Err(r) => Reply::Status(r),
            },
            Command::Top(n, lines) => match t.index(n) {
                Ok(i) => Reply::Message {
                    ok: Response::ok("top of message follows"),
                    path: t.maildrop.messages()[i].path.clone(),
                    source: t.maildrop.messages()[i].source.clone(),
                    size: t.maildrop.messages()[i].size,
                    top: Some(lines),
                },
                Err(r) => Reply::Status(r),
            },
            Command::Dele(n) => match t.index(n) {
                Ok(i) => {
                    t.deleted[i] = true;
                    t.deleted_count += 1;
                    t.deleted_octets += t.maildrop.messages()[i].size;
                    Reply::Status(Response::ok(format!("message {n} deleted")))
                }
                Err(r) => Reply::Status(r),
            },
            Command::Rset => {
                t.deleted.iter_mut().for_each(|d| *d = false);
                t.deleted_count = 0;
                t.deleted_octets = 0;
                let (n, o) = t.totals();
                Reply::Status(Response::ok(format!(
                    "maildrop has {n} messages ({o} octets)"
                )))
            }
            Command::Quit => self.update().await,
            Command::Last => Reply::Status(Response::err(
                "LAST is obsolete (removed in RFC 1725); use UIDL",
            )),
            // Turned away by the gate.
            _ => Reply::Status(wrong_state()),
        }
    }

    /// The UPDATE state (RFC 1939 §6): remove the marked messages, then release the maildrop.
    async fn update(&mut self) -> Reply {
        let State::Transaction(t) = std::mem::replace(&mut self.state, State::Closed) else {
            return Reply::Close(Response::ok("popguard signing off"));
        };
        let marked: Vec<usize> = t
            .deleted
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.then_some(i))
            .collect();
        let left = t.deleted.len() - marked.len();
        let user = t.user.clone();
        if marked.is_empty() {
            return Reply::Close(Response::ok(format!(
                "popguard signing off ({left} messages left)"
            )));
        }
        // The transaction (and with it the lock) moves into the task and is dropped after the last removal.
        let report = tokio::task::spawn_blocking(move || t.maildrop.remove(&marked)).await;
        match report {
            Ok(r) if r.failed.is_empty() => {
                tracing::info!(user = %user, removed = r.removed, "update done");
                Reply::Close(Response::ok(format!(
                    "popguard signing off ({left} messages left)"
                )))
            }
            Ok(r) => {
                for (path, why) in &r.failed {
                    tracing::error!(user = %user, path = %path.display(), error = %why, "cannot remove message");
                }
                Reply::Close(
                    Response::err(format!(
                        "some deleted messages not removed ({} of {})",
                        r.failed.len(),
                        r.failed.len() + r.removed
                    ))
                    .with_code(RespCode::SysTemp),
                )
            }
            Err(join) => {
                tracing::error!(user = %user, error = %join, "update task failed");
                Reply::Close(
                    Response::err("deleted messages not removed").with_code(RespCode::SysTemp),
                )
            }
        }
    }
}

enum OpenError {
    Lock(LockError),
    Maildir(MaildirError),
}

impl From<LockError> for OpenError {
    fn from(e: LockError) -> Self {
        OpenError::Lock(e)
    }
}

impl Transaction {
    /// Messages not marked deleted, with their 0-based index.
    fn live(&self) -> impl Iterator<Item = (usize, &super::maildir::MessageInfo)> {
        self.maildrop
            .messages()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// Messages and octets not marked deleted (STAT, RSET, LIST).
    fn totals(&self) -> (usize, u64) {
        (
            self.deleted.len() - self.deleted_count,
            self.total_octets - self.deleted_octets,
        )
    }

    /// The 0-based index of message number `n`, or the `-ERR` for a number that is not (or no longer) valid.
    fn index(&self, n: u32) -> Result<usize, Response> {
        let i = (n as usize).wrapping_sub(1);
        match self.deleted.get(i) {
            None => Err(Response::err(format!("no such message: {n}"))),
            Some(true) => Err(Response::err(format!("message {n} already deleted"))),
            Some(false) => Ok(i),
        }
    }
}

#[cfg(test)]
mod tests;
