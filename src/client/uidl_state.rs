//! The seen-UIDL state file of `fetch --new-only`: which messages of which account a maildir already holds.
//!
//! One file per maildir (`.popguard-uidls`), one `ACCOUNT<TAB>UIDL` line per message, so several accounts can
//! feed one maildir. A UIDL is appended (and fsynced) right after its message is safely in new/, so a crash never
//! loses the record of a delivered message; after a clean QUIT the account's lines are pruned to the messages
//! still on the server, which keeps the file as small as the maildrop.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The state file's name inside the maildir.
pub const STATE_FILE: &str = ".popguard-uidls";

/// The state file is ours, but a damaged or hostile one must not exhaust memory: 64 MiB is about 600 000 lines
/// of the longest UIDL (70 octets, RFC 1939 §7) with an account name.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// The seen UIDLs of one account in one maildir.
#[derive(Debug)]
pub struct UidlState {
    path: PathBuf,
    account: String,
    seen: BTreeSet<String>,
    /// The file ends in a torn line after this many octets; the next append cuts it off first, so the fragment
    /// never becomes a line of its own.
    torn_at: Option<u64>,
}

impl UidlState {
    /// Reads the account's seen UIDLs (none if the file does not exist yet).
    pub fn load(maildir: &Path, account: &str) -> io::Result<Self> {
        let path = maildir.join(STATE_FILE);
        let account = account_key(account);
        let (lines, torn_at) = read_lines(&path)?;
        let seen = lines
            .iter()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(a, _)| *a == account)
            .map(|(_, u)| u.to_owned())
            .collect();
        Ok(UidlState {
            path,
            account,
            seen,
            torn_at,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.seen.contains(uid)
    }

    /// Records one delivered message, durably, before anything else happens to it (such as DELE).
    pub fn record(&mut self, uid: &str) -> io::Result<()> {
        if !self.seen.insert(uid.to_owned()) {
            return Ok(());
        }
        let mut f = private_options()
            .create(true)
            .append(true)
            .open(&self.path)?;
        if let Some(len) = self.torn_at.take() {
            f.set_len(len)?;
        }
        f.write_all(format!("{}\t{}\n", self.account, uid).as_bytes())?;
        f.sync_data()
    }

    /// Keeps only the UIDLs in `on_server` for this account (other accounts' lines are untouched); written to a
    /// temporary file, fsynced and renamed over the old one.
    pub fn prune(&mut self, on_server: &BTreeSet<String>) -> io::Result<()> {
        self.seen.retain(|u| on_server.contains(u));
        let others: Vec<String> = read_lines(&self.path)?
            .0
            .into_iter()
            .filter(|l| l.split_once('\t').is_some_and(|(a, _)| a != self.account))
            .collect();
        let mut out = String::new();
        for line in others {
            out.push_str(&line);
            out.push('\n');
        }
        for uid in &self.seen {
            out.push_str(&format!("{}\t{}\n", self.account, uid));
        }
        crate::fsutil::write_atomic(&self.path, out.as_bytes())?;
        self.torn_at = None;
        Ok(())
    }
}

/// Owner-only file options: the state file tells which mail an account has.
fn private_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Tabs and line breaks would break the line format; nothing legitimate in `user@host:port` contains them.
fn account_key(account: &str) -> String {
    account
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The complete lines of the file, and where a torn (unterminated) last line starts, if there is one.
fn read_lines(path: &Path) -> io::Result<(Vec<String>, Option<u64>)> {
    let data = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(e),
        Ok(f) => {
            if f.metadata()?.len() > MAX_STATE_BYTES {
                return Err(io::Error::other(format!(
                    "{} is larger than {MAX_STATE_BYTES} octets; it is not a popguard state file",
                    path.display()
                )));
            }
            let mut s = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(f, MAX_STATE_BYTES), &mut s)?;
            s
        }
    };
    // Only newline-terminated lines count: a torn last line (crash mid-append) could hold a truncated UIDL that
    // equals another message's, which would then be skipped forever. Its message is simply fetched again.
    let good = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn_at = (good < data.len()).then_some(good as u64);
    let text = String::from_utf8_lossy(&data[..good]);
    Ok((
        text.lines()
            .filter(|l| l.contains('\t'))
            .map(str::to_owned)
            .collect(),
        torn_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_reload_and_prune_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = UidlState::load(dir.path(), "alice@h:110").unwrap();
        let mut b = UidlState::load(dir.path(), "bob@h:110").unwrap();
        a.record("u1").unwrap();
        a.record("u2").unwrap();
        a.record("u2").unwrap();
        b.record("u1").unwrap();

        let a2 = UidlState::load(dir.path(), "alice@h:110").unwrap();
        assert!(a2.contains("u1") && a2.contains("u2") && !a2.contains("u3"));

        a.prune(&["u2".to_string()].into_iter().collect()).unwrap();
        let a3 = UidlState::load(dir.path(), "alice@h:110").unwrap();
        assert!(!a3.contains("u1") && a3.contains("u2"));
        let b2 = UidlState::load(dir.path(), "bob@h:110").unwrap();
        assert!(b2.contains("u1"), "other accounts survive a prune");
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "a@h:1\tu1\na@h:1\tu").unwrap();
        let s = UidlState::load(dir.path(), "a@h:1").unwrap();
        assert!(s.contains("u1") && !s.contains("u"));
        assert_eq!(s.seen.len(), 1);
        let mut s = s;
        s.record("u7").unwrap();
        let s = UidlState::load(dir.path(), "a@h:1").unwrap();
        assert!(
            s.contains("u1") && s.contains("u7") && !s.contains("u"),
            "{:?}",
            s.seen
        );
    }
}
