//! Real POP3 clients (fetchmail, getmail6, mpop, curl, Python's poplib) run as subprocesses against a loopback
//! server; each returns the messages it retrieved, in order, or an error carrying the client's stderr.
//!
//! Every run gets its own temp dir (config, home, output), a hard timeout (the client is killed), and delivers each
//! message to a numbered file through a tiny MDA script, so the order is the order of retrieval. Client options
//! that would change a message (Received/Delivered-To headers, address rewriting) are turned off; getmail always
//! prepends `Return-Path:`, which is stripped again here (fixtures must not carry their own Return-Path).
//! Quirks followed (see /work/shared/peers/client-command-sequences.txt): fetchmail tries STLS unless told
//! `sslproto ''` and checks the certificate's names, not its IP SANs; mpop refuses a plaintext login without TLS
//! unless `auth user`; curl lists in one session, then RETRs (and DELEs) in a second; getmail has no STLS.
//!
//! getmail is run through a small launcher that replaces one piece of its local-delivery plumbing (not its POP3
//! code): it forks each delivery and installs its SIGCHLD handler after `fork()`, then waits on a `Condition`
//! without a predicate, so a child that exits before the wait starts is never noticed and the delivery stalls
//! for the full timeout (seen here under load, about once in 700 deliveries). The launcher waits with `waitpid`.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;

use super::which;

/// Hard limit for one client run; the client is killed after it.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The name fetchmail must find in the server certificate (see [`super::tls::SERVER_NAMES`]): fetchmail checks
/// names against the host it connects to and ignores IP SANs, so `127.0.0.1` would never match.
const FETCHMAIL_TLS_NAME: &str = "localhost";

/// Characters of stderr kept in a [`PeerError`].
const STDERR_KEEP: usize = 4000;

/// Stores stdin as the next numbered file in the directory `$1` (clients deliver one message at a time). Shell
/// builtins plus one `cat`: clients run it once per message. Numbers start at 1000000 so names sort by number.
const DELIVER_SCRIPT: &str = r#"#!/bin/sh
read -r n 2>/dev/null < "$1/.count" || n=1000000
echo $((n + 1)) > "$1/.count"
exec cat > "$1/$n"
"#;

/// Python poplib client: downloads everything (or only unseen UIDLs), writes numbered files, deletes if asked.
const POPLIB_SCRIPT: &str = r#"
import os, poplib, ssl, sys
# Real mail has lines beyond RFC 5322's 998 and poplib's own 2048-byte default (benchmarks use a public corpus).
poplib._MAXLINE = 1 << 20
host, port, tls, ca, keep, new_only, out, state = sys.argv[1:9]
port, keep, new_only = int(port), keep == "1", new_only == "1"
ctx = ssl.create_default_context(cafile=ca or None)
if tls == "implicit":
    p = poplib.POP3_SSL(host, port, context=ctx, timeout=60)
else:
    p = poplib.POP3(host, port, timeout=60)
    if tls == "stls":
        p.stls(context=ctx)
p.user(os.environ["PG_USER"])
p.pass_(os.environ["PG_PASS"])
seen_path = os.path.join(state, "poplib-seen")
seen = set()
if new_only and os.path.exists(seen_path):
    seen = set(open(seen_path).read().split())
count, _ = p.stat()
uids = {}
if new_only:
    for line in p.uidl()[1]:
        n, uid = line.decode().split()
        uids[int(n)] = uid
k = 0
for n in range(1, count + 1):
    if new_only and uids[n] in seen:
        continue
    _, lines, _ = p.retr(n)
    with open(os.path.join(out, "%06d" % k), "wb") as f:
        f.write(b"\r\n".join(lines) + b"\r\n")
    k += 1
    if new_only:
        seen.add(uids[n])
    if not keep:
        p.dele(n)
p.quit()
if new_only:
    with open(seen_path, "w") as f:
        f.write("\n".join(sorted(seen)))
"#;

/// Runs getmail (path in argv[1]) with its child wait replaced by a plain `waitpid` (see the module docs).
const GETMAIL_LAUNCHER: &str = r#"
import os, runpy, sys
from getmailcore import baseclasses
from getmailcore.exceptions import getmailOperationError

def prepare_child(self):
    pass

def wait_for_child(self, childpid):
    _, status = os.waitpid(childpid, 0)
    if os.WIFSIGNALED(status):
        raise getmailOperationError("child pid %d killed by signal %d" % (childpid, os.WTERMSIG(status)))
    return os.WEXITSTATUS(status)

baseclasses.ForkingBase._prepare_child = prepare_child
baseclasses.ForkingBase._wait_for_child = wait_for_child
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

/// How the client protects the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext, no STLS even when offered.
    #[default]
    None,
    /// Plain port, upgraded with STLS (RFC 2595).
    Stls,
    /// TLS from the first byte (port 995 style).
    Implicit,
}

/// What a client run should do.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Leave messages on the server (no DELE).
    pub keep: bool,
    pub tls: Tls,
    /// Extra trust anchor (PEM) for TLS; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Retrieve only messages whose UIDL this client has not seen in an earlier run with the same `state_dir`.
    pub new_only: bool,
    /// Where the client keeps state between runs (seen UIDLs); a fresh temp dir per run when `None`.
    pub state_dir: Option<PathBuf>,
    /// Hard timeout; [`DEFAULT_CLIENT_TIMEOUT`] when `None`.
    pub timeout: Option<Duration>,
}

/// A client run that failed: which client, why, and what it printed.
pub struct PeerError {
    pub client: &'static str,
    pub reason: String,
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl PeerError {
    /// An error found before or around the run, with nothing from the client's stderr.
    pub fn new(client: &'static str, reason: impl Into<String>) -> PeerError {
        PeerError {
            client,
            reason: reason.into(),
            status: None,
            stderr: String::new(),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.client, self.reason)?;
        if let Some(status) = self.status {
            write!(f, " ({status})")?;
        }
        if !self.stderr.trim().is_empty() {
            write!(
                f,
                "\n---- {} stderr ----\n{}\n----",
                self.client,
                self.stderr.trim_end()
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PeerError {}

/// The five real clients, for tests that loop over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Fetchmail,
    Getmail,
    Mpop,
    Curl,
    Poplib,
}

impl Client {
    pub const ALL: [Client; 5] = [
        Client::Fetchmail,
        Client::Getmail,
        Client::Mpop,
        Client::Curl,
        Client::Poplib,
    ];

    /// The client's name, also its name for [`super::require_peer`].
    pub fn name(self) -> &'static str {
        match self {
            Client::Fetchmail => "fetchmail",
            Client::Getmail => "getmail",
            Client::Mpop => "mpop",
            Client::Curl => "curl",
            Client::Poplib => "poplib",
        }
    }

    /// Whether the client can do what `opts` asks: getmail has no STLS, curl remembers no UIDLs.
    pub fn supports(self, opts: &Opts) -> bool {
        match self {
            Client::Getmail => opts.tls != Tls::Stls,
            Client::Curl => !opts.new_only,
            _ => true,
        }
    }

    /// Runs the client; see the module docs.
    pub async fn fetch(
        self,
        addr: SocketAddr,
        user: &str,
        pass: &str,
        opts: &Opts,
    ) -> Result<Vec<Vec<u8>>, PeerError> {
        match self {
            Client::Fetchmail => fetchmail(addr, user, pass, opts).await,
            Client::Getmail => getmail(addr, user, pass, opts).await,
            Client::Mpop => mpop(addr, user, pass, opts).await,
            Client::Curl => curl(addr, user, pass, opts).await,
            Client::Poplib => poplib(addr, user, pass, opts).await,
        }
    }
}

/// A client run's private directory: `out/` receives messages, `state` persists (or not) between runs.
struct Work {
    dir: tempfile::TempDir,
    out: PathBuf,
    state: PathBuf,
    deliver: PathBuf,
}

impl Work {
    fn new(client: &'static str, opts: &Opts) -> Result<Work, PeerError> {
        let err = |reason: String| PeerError::new(client, reason);
        let dir = tempfile::Builder::new()
            .prefix("pgcl")
            .tempdir()
            .map_err(|e| err(format!("cannot make a temp dir: {e}")))?;
        let out = dir.path().join("out");
        let state = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        for d in [&out, &state] {
            std::fs::create_dir_all(d)
                .map_err(|e| err(format!("cannot create {}: {e}", d.display())))?;
        }
        let deliver = dir.path().join("deliver.sh");
        std::fs::write(&deliver, DELIVER_SCRIPT)
            .map_err(|e| err(format!("cannot write the MDA script: {e}")))?;
        set_mode(&deliver, 0o755).map_err(|e| err(format!("cannot chmod the MDA script: {e}")))?;
        Ok(Work {
            dir,
            out,
            state,
            deliver,
        })
    }

    /// A private file (clients refuse configs with passwords that others can read).
    fn write_private(
        &self,
        client: &'static str,
        name: &str,
        content: &str,
    ) -> Result<PathBuf, PeerError> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)
            .and_then(|()| set_mode(&path, 0o600))
            .map_err(|e| PeerError::new(client, format!("cannot write {name}: {e}")))?;
        Ok(path)
    }

    /// The command line that delivers one message into `out/`.
    fn mda(&self) -> String {
        format!("{} {}", self.deliver.display(), self.out.display())
    }

    fn collect(&self, client: &'static str) -> Result<Vec<Vec<u8>>, PeerError> {
        let err = |reason: String| PeerError::new(client, reason);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .map_err(|e| err(format!("cannot read the output dir: {e}")))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| err(format!("cannot read {}: {e}", p.display()))))
            .collect()
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn unsupported(client: Client, what: &str) -> PeerError {
    PeerError::new(
        client.name(),
        format!("{what} is not supported by this client"),
    )
}

fn check_target(client: &'static str, addr: SocketAddr) -> Result<(), PeerError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(PeerError::new(
            client,
            format!("refusing to connect to non-loopback {addr}"),
        ))
    }
}

/// Quotes `s` for a config file that uses double quotes with backslash escapes (fetchmail, mpop, curl).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs `cmd` with a clean environment for the client (HOME in the work dir, no proxies), killing it after the
/// timeout. `ok_codes` are the exit codes that mean success.
async fn run(
    client: &'static str,
    mut cmd: Command,
    work: &Work,
    opts: &Opts,
    ok_codes: &[i32],
) -> Result<std::process::Output, PeerError> {
    cmd.env("HOME", &work.state)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("pop3_proxy")
        .env_remove("pop3s_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let timeout = opts.timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT);
    let child = cmd
        .spawn()
        .map_err(|e| PeerError::new(client, format!("cannot start: {e}")))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(PeerError::new(
                client,
                format!("waiting for it failed: {e}"),
            ));
        }
        Err(_) => {
            return Err(PeerError::new(
                client,
                format!("timed out after {timeout:?} and was killed"),
            ));
        }
    };
    let code = output.status.code();
    if code.is_some_and(|c| ok_codes.contains(&c)) {
        Ok(output)
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !stdout.trim().is_empty() {
            stderr = format!("{stderr}\n(stdout)\n{stdout}");
        }
        if stderr.len() > STDERR_KEEP {
            let cut = stderr.len() - STDERR_KEEP;
            let cut = (cut..stderr.len())
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(cut);
            stderr = format!("...{}", &stderr[cut..]);
        }
        Err(PeerError {
            client,
            reason: "exited with an error".into(),
            status: Some(output.status),
            stderr,
        })
    }
}

fn client_binary(client: &'static str) -> &'static str {
    match client {
        "poplib" => "python3",
        other => other,
    }
}

/// A command for the client's executable, or an error saying it is not installed.
fn command(client: &'static str) -> Result<Command, PeerError> {
    let binary = client_binary(client);
    let program = which(binary).ok_or_else(|| not_installed(client, binary))?;
    Ok(Command::new(program))
}

fn not_installed(client: &'static str, binary: &str) -> PeerError {
    PeerError::new(
        client,
        format!("`{binary}` is not installed (run `sudo .ci/install-peers`)"),
    )
}

/// fetchmail 6.4 with an rc file: `fetchall` unless `new_only` (then `uidl` with an idfile in the state dir),
/// `invisible` and `no rewrite` so messages arrive unchanged, delivery through the MDA script.
pub async fn fetchmail(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    opts: &Opts,
) -> Result<Vec<Vec<u8>>, PeerError> {
    const NAME: &str = "fetchmail";
    check_target(NAME, addr)?;
    let work = Work::new(NAME, opts)?;
    let tls = match opts.tls {
        Tls::None => "sslproto ''".to_string(),
        Tls::Stls | Tls::Implicit => {
            let mut s = format!(
                "sslproto 'tls1.2+' sslcertck sslcommonname {}",
                quoted(FETCHMAIL_TLS_NAME)
            );
            if opts.tls == Tls::Implicit {
                s = format!("ssl {s}");
            }
            if let Some(ca) = &opts.ca_file {
                s.push_str(&format!(
                    " sslcertfile {}",
                    quoted(&ca.display().to_string())
                ));
            }
            s
        }
    };
    let rc = format!(
        "set no syslog\npoll {ip} protocol POP3 service {port} {uidl}\n  user {user} password {pass}\n  {keep} {all} no rewrite {tls}\n  mda {mda}\n",
        ip = addr.ip(),
        port = addr.port(),
        uidl = if opts.new_only { "uidl" } else { "" },
        user = quoted(user),
        pass = quoted(pass),
        keep = if opts.keep { "keep" } else { "nokeep" },
        all = if opts.new_only { "" } else { "fetchall" },
        mda = quoted(&work.mda()),
    );
    let rc_path = work.write_private(NAME, "fetchmailrc", &rc)?;
    let mut cmd = command(NAME)?;
    cmd.arg("-f")
        .arg(&rc_path)
        .arg("--nodetach")
        .arg("--invisible")
        .arg("--idfile")
        .arg(work.state.join("fetchids"))
        .arg("--pidfile")
        .arg(work.dir.path().join("fetchmail.pid"))
        .env("FETCHMAILHOME", work.dir.path());
    // Exit status 1 means "no mail".
    run(NAME, cmd, &work, opts, &[0, 1]).await?;
    work.collect(NAME)
}

/// getmail6 with an rc file in its getmaildir (the state dir): `read_all` unless `new_only`, no Received or
/// Delivered-To headers, an external MDA; implicit TLS only (getmail has no STLS).
pub async fn getmail(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    opts: &Opts,
) -> Result<Vec<Vec<u8>>, PeerError> {
    const NAME: &str = "getmail";
    check_target(NAME, addr)?;
    let (retriever, tls_lines) = match opts.tls {
        Tls::None => ("SimplePOP3Retriever", String::new()),
        Tls::Implicit => (
            "SimplePOP3SSLRetriever",
            opts.ca_file
                .as_ref()
                .map(|ca| format!("ca_certs = {}\n", ca.display()))
                .unwrap_or_default(),
        ),
        Tls::Stls => return Err(unsupported(Client::Getmail, "STLS")),
    };
    for (what, value) in [("user name", user), ("password", pass)] {
        if value.contains(['%', '\n', '\r']) || value.trim() != value {
            return Err(PeerError::new(
                NAME,
                format!(
                    "the test {what} cannot go into a getmail rc file: avoid %, newlines, edge spaces"
                ),
            ));
        }
    }
    let work = Work::new(NAME, opts)?;
    let rc = format!(
        "[retriever]\ntype = {retriever}\nserver = {ip}\nport = {port}\nusername = {user}\npassword = {pass}\n{tls_lines}\n\
         [destination]\ntype = MDA_external\npath = {deliver}\narguments = (\"{out}\",)\nallow_root_commands = true\n\n\
         [options]\nverbose = 0\nread_all = {all}\ndelete = {delete}\ndelivered_to = false\nreceived = false\n",
        ip = addr.ip(),
        port = addr.port(),
        deliver = work.deliver.display(),
        out = work.out.display(),
        all = !opts.new_only,
        delete = !opts.keep,
    );
    let rc_path = work.write_private(NAME, "getmailrc", &rc)?;
    let script = which("getmail").ok_or_else(|| not_installed(NAME, "getmail"))?;
    // getmail's own interpreter (its shebang): getmailcore lives in that Python's site-packages only.
    let shebang = std::fs::read_to_string(&script).unwrap_or_default();
    let python = shebang
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("/usr/bin/python3")
        .to_string();
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(GETMAIL_LAUNCHER)
        .arg(&script)
        .arg("--getmaildir")
        .arg(&work.state)
        .arg("--rcfile")
        .arg(&rc_path);
    run(NAME, cmd, &work, opts, &[0]).await?;
    let msgs = work.collect(NAME)?;
    // getmail always prepends a Return-Path field of its own.
    Ok(msgs
        .into_iter()
        .map(|m| strip_leading_field(m, b"Return-Path:"))
        .collect())
}

/// Removes the first header line (with its continuation lines) if it starts with `name` (case-insensitive).
fn strip_leading_field(msg: Vec<u8>, name: &[u8]) -> Vec<u8> {
    if msg.len() < name.len() || !msg[..name.len()].eq_ignore_ascii_case(name) {
        return msg;
    }
    let mut end = 0;
    loop {
        match msg[end..].iter().position(|&b| b == b'\n') {
            Some(i) => end += i + 1,
            None => return Vec::new(),
        }
        if !matches!(msg.get(end), Some(b' ' | b'\t')) {
            return msg[end..].to_vec();
        }
    }
}

/// mpop 1.4 with a config file: `auth user` without TLS (it refuses plaintext passwords otherwise), `only_new`
/// with a uidls file in the state dir when `new_only`, no Received header, delivery through the MDA script.
pub async fn mpop(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    opts: &Opts,
) -> Result<Vec<Vec<u8>>, PeerError> {
    const NAME: &str = "mpop";
    check_target(NAME, addr)?;
    let work = Work::new(NAME, opts)?;
    let tls = match opts.tls {
        Tls::None => "tls off\nauth user\n".to_string(),
        Tls::Stls | Tls::Implicit => {
            let starttls = if opts.tls == Tls::Stls { "on" } else { "off" };
            let trust = match &opts.ca_file {
                Some(ca) => quoted(&ca.display().to_string()),
                None => "system".to_string(),
            };
            format!("tls on\ntls_starttls {starttls}\ntls_trust_file {trust}\n")
        }
    };
    let conf = format!(
        "defaults\ntimeout 30\n\naccount test\nhost {ip}\nport {port}\nuser {user}\npassword {pass}\n{tls}\
         delivery mda {mda}\nkeep {keep}\nonly_new {only_new}\nuidls_file {uidls}\nreceived_header off\n",
        ip = addr.ip(),
        port = addr.port(),
        user = quoted(user),
        pass = quoted(pass),
        mda = quoted(&work.mda()),
        keep = if opts.keep { "on" } else { "off" },
        only_new = if opts.new_only { "on" } else { "off" },
        uidls = quoted(&work.state.join("mpop-uidls").display().to_string()),
    );
    let conf_path = work.write_private(NAME, "mpoprc", &conf)?;
    let mut cmd = command(NAME)?;
    cmd.arg("-q").arg("-C").arg(&conf_path).arg("test");
    run(NAME, cmd, &work, opts, &[0]).await?;
    work.collect(NAME)
}

/// curl 7.88: one session that LISTs, then one that RETRs every message (and DELEs each when not `keep`),
/// driven by config files (`-K`) so the password is not on the command line. No UIDL memory (`new_only`).
pub async fn curl(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    opts: &Opts,
) -> Result<Vec<Vec<u8>>, PeerError> {
    const NAME: &str = "curl";
    check_target(NAME, addr)?;
    if opts.new_only {
        return Err(unsupported(Client::Curl, "new_only"));
    }
    let work = Work::new(NAME, opts)?;
    let scheme = if opts.tls == Tls::Implicit {
        "pop3s"
    } else {
        "pop3"
    };
    let base = format!("{scheme}://{}:{}/", addr.ip(), addr.port());
    let mut common = format!(
        "user = {}\nnoproxy = \"*\"\nsilent\nshow-error\n",
        quoted(&format!("{user}:{pass}"))
    );
    if opts.tls == Tls::Stls {
        common.push_str("ssl-reqd\n");
    }
    if let Some(ca) = &opts.ca_file {
        common.push_str(&format!("cacert = {}\n", quoted(&ca.display().to_string())));
    }

    let list_cfg = work.write_private(
        NAME,
        "curl-list",
        &format!("{common}url = {}\n", quoted(&base)),
    )?;
    let mut cmd = command(NAME)?;
    cmd.arg("-K").arg(&list_cfg);
    let listing = run(NAME, cmd, &work, opts, &[0]).await?;
    let numbers: Vec<u32> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if numbers.is_empty() {
        return Ok(Vec::new());
    }

    let mut cfg = common.clone();
    for (i, n) in numbers.iter().enumerate() {
        cfg.push_str(&format!(
            "url = {}\noutput = {}\n",
            quoted(&format!("{base}{n}")),
            quoted(&work.out.join(format!("{i:06}")).display().to_string())
        ));
    }
    if !opts.keep {
        // `next` starts a new option group; curl reuses the connection, so the DELEs share the RETR session.
        for n in &numbers {
            cfg.push_str(&format!(
                "next\n{common}request = DELE\nhead\nurl = {}\n",
                quoted(&format!("{base}{n}"))
            ));
        }
    }
    let retr_cfg = work.write_private(NAME, "curl-retr", &cfg)?;
    let mut cmd = command(NAME)?;
    cmd.arg("-K").arg(&retr_cfg);
    run(NAME, cmd, &work, opts, &[0]).await?;
    work.collect(NAME)
}

/// Python's poplib (`python3 -c`): USER/PASS, STAT, RETR each (UIDL first when `new_only`), DELE each unless
/// `keep`, QUIT. Credentials travel in the environment.
pub async fn poplib(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    opts: &Opts,
) -> Result<Vec<Vec<u8>>, PeerError> {
    const NAME: &str = "poplib";
    check_target(NAME, addr)?;
    let work = Work::new(NAME, opts)?;
    let tls = match opts.tls {
        Tls::None => "none",
        Tls::Stls => "stls",
        Tls::Implicit => "implicit",
    };
    let ca = opts
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut cmd = command(NAME)?;
    cmd.arg("-c")
        .arg(POPLIB_SCRIPT)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(tls)
        .arg(ca)
        .arg(if opts.keep { "1" } else { "0" })
        .arg(if opts.new_only { "1" } else { "0" })
        .arg(&work.out)
        .arg(&work.state)
        .env("PG_USER", user)
        .env("PG_PASS", pass);
    run(NAME, cmd, &work, opts, &[0]).await?;
    work.collect(NAME)
}
