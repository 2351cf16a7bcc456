//! The exclusive maildrop lock (RFC 1939 §4: one session per maildrop), held from login until the session ends.
//!
//! Two layers: a table inside the process, which is what sessions of one server see; and an advisory `flock` on
//! the maildrop directory itself, which keeps a second `popguard server` process on the same maildirs out too
//! without writing a lock file into the maildrop. Both are released when the [`MaildropLock`] is dropped, so every
//! way a session can end (QUIT, a dropped connection, a timeout, a panic unwinding) releases the lock.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Why a lock was not granted.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("maildrop already locked by another session")]
    InUse,
}

/// The locks of one server.
#[derive(Debug, Default, Clone)]
pub struct LockTable {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Proof that a session holds a maildrop; dropping it releases the maildrop.
#[derive(Debug)]
pub struct MaildropLock {
    user: String,
    table: Arc<Mutex<HashSet<String>>>,
    /// The open directory holding the `flock`; closing it releases the lock.
    _dir: Option<File>,
}

impl LockTable {
    pub fn new() -> LockTable {
        LockTable::default()
    }

    /// Locks `user`'s maildrop at `dir`, or says it is in use. Blocking (opens the directory): call from a blocking
    /// thread or where a short filesystem call is acceptable.
    pub fn try_lock(&self, user: &str, dir: &Path) -> Result<MaildropLock, LockError> {
        {
            // A poisoned table only means another session panicked while holding the mutex; the set is still
            // consistent (insert/remove are single operations), so keep using it.
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if !held.insert(user.to_owned()) {
                return Err(LockError::InUse);
            }
        }
        // From here on the guard exists, so any early return releases the table entry.
        let mut lock = MaildropLock {
            user: user.to_owned(),
            table: Arc::clone(&self.held),
            _dir: None,
        };
        match File::open(dir) {
            Ok(f) => match f.try_lock() {
                Ok(()) => lock._dir = Some(f),
                Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::InUse),
                Err(std::fs::TryLockError::Error(e)) => {
                    // A filesystem without flock (some network mounts): the in-process lock still holds.
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot flock maildrop; in-process lock only");
                }
            },
            // A missing maildrop is reported by the maildrop scan with a better message.
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot open maildrop to flock it")
            }
        }
        Ok(lock)
    }

    /// Whether `user`'s maildrop is locked by a session of this server.
    pub fn is_locked(&self, user: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(user)
    }
}

impl MaildropLock {
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut held = self.table.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let table = LockTable::new();
        let a = table.try_lock("alice", t.path()).unwrap();
        assert!(matches!(
            table.try_lock("alice", t.path()),
            Err(LockError::InUse)
        ));
        assert!(table.is_locked("alice"));
        // Other users are independent.
        let b = table.try_lock("bob", &t.path().join("missing")).unwrap();
        drop(a);
        assert!(!table.is_locked("alice"));
        let again = table.try_lock("alice", t.path()).unwrap();
        assert_eq!(again.user(), "alice");
        drop(b);
    }

    #[test]
    fn a_second_server_process_is_kept_out_by_flock() {
        let t = tempfile::tempdir().unwrap();
        // Two tables stand for two server processes: only the directory flock connects them.
        let one = LockTable::new();
        let two = LockTable::new();
        let held = one.try_lock("alice", t.path()).unwrap();
        assert!(matches!(
            two.try_lock("alice", t.path()),
            Err(LockError::InUse)
        ));
        // The refused attempt must not leave its own table entry behind.
        assert!(!two.is_locked("alice"));
        drop(held);
        assert!(two.try_lock("alice", t.path()).is_ok());
    }
}
