//! A private Dovecot 2.3 POP3 server per test: its own config, sockets, logs, TLS certificate and maildirs in a
//! short temp dir under /tmp, on free loopback ports; stopped and removed on drop.
//!
//! Adapted from the shared recipe (`dovecot-recipe.sh`): passwd-file users with `{PLAIN}` passwords, a static
//! userdb whose mail belongs to [`super::MAIL_USER`] (Dovecot serves no mail as root), the per-IP auth penalty off
//! (every test logs in from 127.0.0.1; one wrong-password test would otherwise slow every later login by 2-15 s),
//! and a short auth failure delay. When the tests do not run as root, Dovecot runs entirely as the current user.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::tls::TestCa;
use super::{MAIL_USER, which};

/// How long Dovecot gets to bind its ports after the master starts (it needs ~30 ms here).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts with fresh ports when another process grabbed a port between `free_port` and Dovecot's bind.
const START_ATTEMPTS: usize = 5;
/// How long a killed Dovecot process group gets to disappear before we stop waiting for it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of the helper's own short POP3 sessions (warm-up login, UIDL).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Dovecot's exit status when it cannot bind a listener (EX_CONFIG).
const EXIT_CONFIG: i32 = 89;
/// Log lines shown when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// Dovecot's delay before `-ERR [AUTH]` (default 2 s). It accepts 0; failures are still answered after ~0.5 s
/// because the auth process flushes failed requests on a 500 ms timer.
const AUTH_FAILURE_DELAY: &str = "0";
/// The `pop3_uidl_format` of every instance unless a test asks for another: Dovecot's recommended unique one (the
/// message's IMAP UID and the mailbox's UIDVALIDITY).
pub const DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";
/// A `pop3_uidl_format` that breaks RFC 1939 §7 on purpose: every message gets the mailbox's UIDVALIDITY, so all
/// unique-ids in a maildrop are the same (for tests of upstreams with repeated unique-ids).
pub const REPEATED_UIDL_FORMAT: &str = "%v";

/// Kills Dovecot and removes its directory if the test process dies without dropping [`Dovecot`] (SIGKILL, abort):
/// it waits for EOF on stdin, which only happens when the test process is gone.
const WATCHDOG_SCRIPT: &str =
    r#"read _ignored; kill -KILL "-$1" 2>/dev/null; sleep 1; rm -rf "$2""#;

/// Variations of the Dovecot setup.
#[derive(Clone, Debug)]
pub struct DovecotOptions {
    /// Offer STLS on the plain port (Dovecot's default). The implicit-TLS port works either way.
    pub stls: bool,
    /// Dovecot's documented high-performance mode (login processes serve many connections, pop3 processes are
    /// reused), for benchmarks; the default is the stock one-process-per-connection mode.
    pub high_performance: bool,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            stls: true,
            high_performance: false,
        }
    }
}

/// A running private Dovecot. See the module docs.
pub struct Dovecot {
    master: Child,
    watchdog: Option<(Child, ChildStdin)>,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    users: Vec<(String, String)>,
    /// uid/gid that must own mail files (the mail user when root; `None` = the current user).
    owner: Option<(u32, u32)>,
    ca: TestCa,
    /// Delivery counter: part of each file name so that Dovecot and [`Dovecot::maildrop`] sort in delivery order.
    next_seq: AtomicU32,
    /// The seconds part of every delivered file name (fixed, so the counter alone decides the order).
    epoch: u64,
    dir: tempfile::TempDir,
}

/// True when this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// uid and gid of system user `name` (through NSS, via `id`).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, name])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn current_user_name() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| panic!("cannot tell the current user's name (`id -un` failed)"))
}

fn current_group_name() -> String {
    Command::new("id")
        .arg("-gn")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| panic!("cannot tell the current group's name (`id -gn` failed)"))
}

fn check_name(what: &str, value: &str) {
    let ok = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b':' | b'"' | b'\'' | b'\\' | b'%' | b'$')
        });
    assert!(
        ok,
        "Dovecot test {what} {value:?}: use printable ASCII without : \" ' \\ % $ (it goes into config files)"
    );
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` pairs, with STLS on the plain port. Panics with Dovecot's
    /// log when it cannot start. Blocking (~50 ms): call it before spawning in-process servers on the runtime.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, &DovecotOptions::default())
    }

    /// Like [`Dovecot::start`], with options.
    pub fn start_with(users: &[(&str, &str)], options: &DovecotOptions) -> Dovecot {
        Dovecot::start_with_uidl_format(users, options, DEFAULT_UIDL_FORMAT)
    }

    /// Like [`Dovecot::start_with`], with this `pop3_uidl_format` (e.g. [`REPEATED_UIDL_FORMAT`]).
    pub fn start_with_uidl_format(
        users: &[(&str, &str)],
        options: &DovecotOptions,
        uidl_format: &str,
    ) -> Dovecot {
        assert!(
            !uidl_format.is_empty() && uidl_format.bytes().all(|b| b.is_ascii_graphic()),
            "pop3_uidl_format {uidl_format:?}: printable ASCII without spaces (it goes into the config file)"
        );
        let dovecot = which("dovecot")
            .unwrap_or_else(|| panic!("dovecot is not installed: run `sudo .ci/install-peers`"));
        for (user, pass) in users {
            check_name("user name", user);
            check_name("password", pass);
        }
        let owner = if running_as_root() {
            Some(user_ids(MAIL_USER).unwrap_or_else(|| {
                panic!("the mail user `{MAIL_USER}` does not exist: run `sudo .ci/install-peers`")
            }))
        } else {
            None
        };

        // Short path: unix socket paths under base_dir must stay below 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pgdv")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a Dovecot dir under /tmp: {e}"));
        let root = dir.path().to_path_buf();
        // tempdir makes 0700; the mail user must traverse it.
        set_mode(&root, 0o755);
        for sub in ["run", "state", "log", "mail"] {
            mkdir(&root.join(sub));
        }
        set_mode(&root.join("mail"), 0o755);
        if let Some((uid, gid)) = owner {
            chown(&root.join("mail"), uid, gid);
        }
        let ca = TestCa::create(&root);
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}::::::\n"))
            .collect();
        write_file(&root.join("users"), passwd.as_bytes());
        set_mode(&root.join("users"), 0o644);
        for (user, _) in &users {
            create_maildir(&root.join("mail").join(user), owner);
        }
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1_700_000_000);

        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let port = super::free_port();
            let mut tls_port = super::free_port();
            while tls_port == port {
                tls_port = super::free_port();
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
            let conf_path = root.join("dovecot.conf");
            write_file(
                &conf_path,
                config(
                    &root,
                    port,
                    tls_port,
                    &ca,
                    owner.is_some(),
                    options,
                    uidl_format,
                )
                .as_bytes(),
            );
            let stderr = fs::File::create(root.join("dovecot.stderr"))
                .unwrap_or_else(|e| panic!("cannot create dovecot.stderr: {e}"));
            // Its own session and process group (`setsid` execs without forking here, so the pid stays), so that
            // one signal stops the master and all its children at once, and a Ctrl-C meant for the tests
            // does not reach it.
            let mut master = Command::new("setsid")
                .arg(&dovecot)
                .arg("-F")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", dovecot.display()));
            let mut watchdog = start_watchdog(master.id(), &root);
            if let Err(Retry(why)) =
                wait_ready(&mut master, &mut watchdog, &root, &[addr, tls_addr])
            {
                last_failure = why;
                stop(&mut master, &mut watchdog);
                continue;
            }
            let dv = Dovecot {
                master,
                watchdog,
                addr,
                tls_addr,
                users,
                owner,
                ca,
                next_seq: AtomicU32::new(0),
                epoch,
                dir,
            };
            if let Some((user, _)) = dv.users.first() {
                // Warm the auth and login processes and prove the whole chain works now, with a clear error,
                // rather than in the middle of someone's test.
                if let Err(e) = dv.try_uidls(user) {
                    panic!("Dovecot started but a test login as {user} failed: {e}");
                }
            }
            return dv;
        }
        panic!("Dovecot did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// Plain POP3 port (offers STLS unless started with `stls: false`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Implicit-TLS POP3 port (certificate from [`Dovecot::ca_file`]'s CA, valid for 127.0.0.1 and localhost).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// PEM file of the CA that signed Dovecot's certificate (for `--ca-file` and clients).
    pub fn ca_file(&self) -> &Path {
        &self.ca.ca_file
    }

    /// The CA, plus the server certificate and key Dovecot uses (reusable for other test servers).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The password `user` was started with.
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("Dovecot has no user {user:?}"))
    }

    /// Process id of the Dovecot master, which is also the id of the process group of all its processes.
    pub fn pid(&self) -> u32 {
        self.master.id()
    }

    /// The folder holding everything of this instance (config, logs, mail).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `user`'s maildir (with `new/`, `cur/`, `tmp/`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.password(user);
        self.dir.path().join("mail").join(user)
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/dovecot.log")).unwrap_or_default()
    }

    /// Puts `msgs` into `user`'s maildir `new/`, in this order, after any earlier deliveries. Files are owned by
    /// the mail user and named so that Dovecot numbers them in delivery order.
    pub fn deliver(&self, user: &str, msgs: &[Vec<u8>]) {
        let md = self.maildir(user);
        for msg in msgs {
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            // Dovecot sorts new mail by the seconds, then the microseconds (`.M<usecs>`) of the name.
            assert!(
                seq < 1_000_000,
                "too many deliveries for one Dovecot instance"
            );
            let name = format!(
                "{}.M{seq:06}P{}Q{seq}.popguard-test",
                self.epoch,
                std::process::id()
            );
            let tmp = md.join("tmp").join(&name);
            write_file(&tmp, msg);
            set_mode(&tmp, 0o600);
            if let Some((uid, gid)) = self.owner {
                chown(&tmp, uid, gid);
            }
            let dest = md.join("new").join(&name);
            fs::rename(&tmp, &dest).unwrap_or_else(|e| {
                panic!("cannot move {} to {}: {e}", tmp.display(), dest.display())
            });
        }
    }

    /// The messages now in `user`'s maildrop (`new/` and `cur/`), in delivery order.
    pub fn maildrop(&self, user: &str) -> Vec<Vec<u8>> {
        let md = self.maildir(user);
        let mut files: Vec<((u64, u64, String), PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let entries = fs::read_dir(md.join(sub))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", md.join(sub).display()));
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    files.push((order_key(&name), entry.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            })
            .collect()
    }

    /// `user`'s UIDLs as Dovecot reports them (a plain POP3 session: USER, PASS, UIDL, QUIT; nothing deleted).
    pub fn uidls(&self, user: &str) -> Vec<String> {
        self.try_uidls(user)
            .unwrap_or_else(|e| panic!("UIDL session as {user} failed: {e}"))
    }

    fn try_uidls(&self, user: &str) -> Result<Vec<String>, String> {
        let pass = self.password(user);
        let stream = TcpStream::connect_timeout(&self.addr, SESSION_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(SESSION_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(SESSION_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let read_line = |reader: &mut BufReader<TcpStream>| -> Result<String, String> {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => Err("connection closed".to_string()),
                Ok(_) => Ok(line.trim_end().to_string()),
                Err(e) => Err(format!("read: {e}")),
            }
        };
        let mut command =
            |reader: &mut BufReader<TcpStream>, cmd: &str| -> Result<String, String> {
                writer
                    .write_all(format!("{cmd}\r\n").as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                let reply = read_line(reader)?;
                if !reply.starts_with("+OK") {
                    let verb = cmd.split(' ').next().unwrap_or(cmd);
                    return Err(format!("{verb} -> {reply}"));
                }
                Ok(reply)
            };
        let greeting = read_line(&mut reader)?;
        if !greeting.starts_with("+OK") {
            return Err(format!("greeting: {greeting}"));
        }
        command(&mut reader, &format!("USER {user}"))?;
        command(&mut reader, &format!("PASS {pass}"))?;
        command(&mut reader, "UIDL")?;
        let mut uidls = Vec::new();
        loop {
            let l = read_line(&mut reader)?;
            if l == "." {
                break;
            }
            let uid = l
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| format!("bad UIDL line {l:?}"))?;
            uidls.push(uid.to_string());
        }
        command(&mut reader, "QUIT")?;
        Ok(uidls)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Dovecot log ({}) ----\n{}\n---- end of Dovecot log ----",
                self.dir.path().display(),
                tail(&self.log())
            );
        }
        stop(&mut self.master, &mut self.watchdog);
        // `dir` (a TempDir) is removed when the fields drop, after the processes using it are gone.
    }
}

/// A startup failure worth retrying on other ports.
struct Retry(String);

/// Waits until something accepts connections on every address in `addrs`. `Err(Retry)` when a port was taken by
/// someone else (try other ports); panics with the log on any other failure.
fn wait_ready(
    master: &mut Child,
    watchdog: &mut Option<(Child, ChildStdin)>,
    root: &Path,
    addrs: &[SocketAddr],
) -> Result<(), Retry> {
    let deadline = Instant::now() + START_TIMEOUT;
    let output = || {
        let stderr = fs::read_to_string(root.join("dovecot.stderr")).unwrap_or_default();
        let log = fs::read_to_string(root.join("log/dovecot.log")).unwrap_or_default();
        format!("{stderr}\n{}", tail(&log))
    };
    loop {
        if let Ok(Some(status)) = master.try_wait() {
            let output = output();
            if status.code() == Some(EXIT_CONFIG) && output.contains("Address already in use") {
                return Err(Retry(output));
            }
            stop(master, watchdog);
            panic!("Dovecot exited during startup ({status}):\n{output}");
        }
        let up = |addr: &SocketAddr| {
            TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
        };
        if addrs.iter().all(up) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            stop(master, watchdog);
            panic!(
                "Dovecot did not listen on {addrs:?} within {START_TIMEOUT:?}:\n{}",
                output()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the watchdog (so that it does not act), then kills Dovecot's whole process group: a graceful SIGTERM
/// costs the master about a second, and nothing of the instance outlives its directory anyway.
fn stop(master: &mut Child, watchdog: &mut Option<(Child, ChildStdin)>) {
    if let Some((mut child, stdin)) = watchdog.take() {
        let _ = child.kill();
        let _ = child.wait();
        drop(stdin);
    }
    if let Ok(None) = master.try_wait() {
        let group = format!("-{}", master.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while let Ok(None) = master.try_wait() {
            if Instant::now() >= deadline {
                let _ = master.kill();
                let _ = master.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn create_maildir(md: &Path, owner: Option<(u32, u32)>) {
    for sub in ["", "new", "cur", "tmp"] {
        let p = md.join(sub);
        mkdir(&p);
        set_mode(&p, 0o700);
        if let Some((uid, gid)) = owner {
            chown(&p, uid, gid);
        }
    }
}

fn start_watchdog(pid: u32, dir: &Path) -> Option<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("sh")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

/// Sort key of a maildir file name: Dovecot's own order (seconds, then `.M` microseconds), then the name.
fn order_key(name: &str) -> (u64, u64, String) {
    let digits = |s: &str| -> (u64, usize) {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (s[..n].parse().unwrap_or(0), n)
    };
    let (secs, n) = digits(name);
    let usecs = name[n..]
        .strip_prefix(".M")
        .map(|rest| digits(rest).0)
        .unwrap_or(0);
    (secs, usecs, name.to_string())
}

fn config(
    root: &Path,
    port: u16,
    tls_port: u16,
    ca: &TestCa,
    as_root: bool,
    options: &DovecotOptions,
    uidl_format: &str,
) -> String {
    let root = root.display();
    let (internal_user, internal_group, login_user, mail_uid, mail_gid, chroot) = if as_root {
        let mail = MAIL_USER.to_string();
        (
            "dovecot".to_string(),
            "dovecot".to_string(),
            "dovenull".to_string(),
            mail.clone(),
            mail,
            "",
        )
    } else {
        // Rootless Dovecot: every process runs as us and nothing can chroot.
        let me = current_user_name();
        let group = current_group_name();
        (
            me.clone(),
            group.clone(),
            me.clone(),
            me,
            group,
            "  chroot =\n",
        )
    };
    let (stls_port, nostls_port) = if options.stls { (port, 0) } else { (0, port) };
    let (login_perf, pop3_perf) = if options.high_performance {
        (
            "  service_count = 0\n  process_min_avail = 2\n  client_limit = 1000\n",
            "  service_count = 100\n  process_min_avail = 2\n",
        )
    } else {
        ("", "")
    };
    let cert = ca.cert_file.display();
    let key = ca.key_file.display();
    format!(
        r#"# private test instance made by tests/support/src/dovecot.rs
instance_name = popguard-test-{port}
base_dir = {root}/run
state_dir = {root}/state
protocols = pop3
listen = 127.0.0.1
log_path = {root}/log/dovecot.log
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = {AUTH_FAILURE_DELAY}
first_valid_uid = 1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
mail_location = maildir:{root}/mail/%u
pop3_uidl_format = {uidl_format}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/mail/%u
}}
protocol pop3 {{
  mail_max_userip_connections = 1000
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {stls_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
  process_limit = 512
{chroot}{login_perf}}}
service pop3-login-nostls {{
  # the same login binary with ssl forced off: no STLS on this listener
  executable = pop3-login -o ssl=no
  protocol = pop3
  type = login
  chroot = {nostls_chroot}
  user = $default_login_user
  process_limit = 512
{login_perf}  inet_listener pop3plain {{
    address = 127.0.0.1
    port = {nostls_port}
  }}
}}
service pop3 {{
  process_limit = 1024
{pop3_perf}}}
service auth {{
  client_limit = 4096
}}
service anvil {{
  client_limit = 4096
{chroot}  # no per-IP auth penalty: the auth process cannot open this socket
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{
{chroot}}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"#,
        nostls_chroot = if as_root { "login" } else { "" },
    )
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
