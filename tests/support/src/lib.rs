//! Test support shared by popguard's integration tests (tests/it) and benchmarks (benches/): real peers (Dovecot
//! and five POP3 clients), message fixtures and comparison, process and port helpers for the `popguard` binary, a
//! scripted POP3 upstream, a test DNS server, the proxy harness, the one test PKI and the one fixed scorer.

pub mod clients;
pub mod compare;
pub mod dns;
pub mod dovecot;
pub mod fake;
pub mod fixtures;
pub mod harness;
pub mod process;
pub mod raw;
pub mod scorer;
pub mod tls;

pub use clients::{Client, Opts, PeerError, Tls, curl, fetchmail, getmail, mpop, poplib};
pub use compare::{
    assert_same_message, assert_same_messages, header_fields, header_value, same_message,
    strip_tag, without_fields,
};
pub use dovecot::{Dovecot, DovecotOptions};
pub use harness::{ProxyBuilder, RunningProxy};
pub use process::{ChildGuard, free_port, popguard_bin, spawn, spawn_command, wait_for_port};
pub use scorer::FixedScorer;
pub use tls::TestCa;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directories searched for peer executables besides `$PATH`: Debian puts `dovecot` in /usr/sbin, which is not on
/// an unprivileged user's `$PATH`.
const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/bin"];

/// The unprivileged system user that owns Dovecot's test mail when the tests run as root (created by
/// `.ci/install-peers`). Dovecot refuses to serve mail as root.
pub const MAIL_USER: &str = "popguard-mail";

/// True when the tests run in CI (`CI` set to anything but empty, `0` or `false`): a missing peer is then a
/// failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Full path of executable `name`, looked up in `$PATH` and then in the sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why peer `name` cannot be used here, or `None` when it is fully installed.
pub fn peer_missing(name: &str) -> Option<String> {
    let needs: &[&str] = match name {
        "dovecot" => &["dovecot", "doveadm"],
        "poplib" | "python3" => &["python3"],
        "getmail" | "getmail6" => &["getmail"],
        other => {
            return which(other)
                .is_none()
                .then(|| format!("`{other}` is not installed"));
        }
    };
    if let Some(bin) = needs.iter().find(|bin| which(bin).is_none()) {
        return Some(format!("`{bin}` is not installed"));
    }
    if name == "dovecot" {
        if !Path::new("/usr/lib/dovecot/pop3").exists() {
            return Some("dovecot-pop3d is not installed (/usr/lib/dovecot/pop3 missing)".into());
        }
        if dovecot::running_as_root() && dovecot::user_ids(MAIL_USER).is_none() {
            return Some(format!("the mail user `{MAIL_USER}` does not exist"));
        }
    }
    None
}

/// True when real peer `name` ("dovecot", "fetchmail", "getmail", "mpop", "curl", "poplib", "bogofilter", or any
/// executable name) is installed. When it is not: in CI (env `CI` set) this panics, because a missing peer there is
/// a broken install step; elsewhere it prints a SKIP line and returns false, so the caller returns early.
pub fn require_peer(name: &str) -> bool {
    let Some(why) = peer_missing(name) else {
        return true;
    };
    let fix = "run `sudo .ci/install-peers`";
    if in_ci() {
        panic!("real peer {name} is required in CI but {why}: {fix}");
    }
    eprintln!("SKIP: real peer {name} unavailable ({why}); {fix} to run this test");
    false
}

/// Runs `fut`, panicking with a clear message if it takes longer than `secs` seconds: every network test has a
/// bound, so a deadlock fails instead of hanging CI.
pub async fn with_timeout<F: Future>(secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("test timed out after {secs} s"),
    }
}
