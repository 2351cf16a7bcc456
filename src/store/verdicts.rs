//! The per-user verdict cache, keyed by UIDL, so a message is scored once; persisted as an append-only journal.
//!
//! Crash safety: every change is one complete JSON line appended and synced; a line cut short by a crash is
//! skipped when loading (and never glued to the next append), and compaction writes a new file and renames it over
//! the old one, so the file on disk is always a valid journal. A lock file serialises writers (proxy sessions and
//! `popguard quarantine release`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::filter::Class;

/// The journal file in a user's directory.
pub const VERDICTS_FILE: &str = "verdicts.jsonl";
/// A record is a few hundred bytes; a longer line is damage and is skipped rather than buffered.
pub const MAX_RECORD_LINE: usize = 64 * 1024;
/// Compaction runs when dead records outnumber live ones by this factor (and there are at least
/// [`COMPACT_MIN_DEAD`]): the journal stays proportional to the maildrop without rewriting it every session.
pub const COMPACT_DEAD_RATIO: usize = 1;
pub const COMPACT_MIN_DEAD: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot {action} {path}: {cause} (check the data directory's permissions and free space)"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |cause| StoreError::Io {
        action,
        path: path.to_owned(),
        cause,
    }
}

/// What is remembered about one scored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedVerdict {
    /// `ham`, `unsure` or `spam` as scored.
    #[serde(with = "class_serde")]
    pub class: Class,
    pub score: f64,
    /// Names of the rules that hit.
    pub rules: Vec<String>,
    /// Bytes the Subject edit adds when the message is tagged as spam, computed for `prefix`.
    pub subject_delta: u32,
    /// The Subject prefix `subject_delta` was computed for; a different prefix in the config means rescanning.
    pub prefix: String,
    /// The user released it from the quarantine: show it, untagged, from now on.
    #[serde(default)]
    pub released: bool,
    /// When it was scored (seconds since the Unix epoch).
    #[serde(default)]
    pub at: u64,
}

impl CachedVerdict {
    /// The class in force: a released message counts as ham.
    pub fn effective_class(&self) -> Class {
        if self.released {
            Class::Ham
        } else {
            self.class
        }
    }
}

mod class_serde {
    use super::Class;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Class, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Class, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "ham" => Ok(Class::Ham),
            "unsure" => Ok(Class::Unsure),
            "spam" => Ok(Class::Spam),
            other => Err(serde::de::Error::custom(format!("unknown class {other:?}"))),
        }
    }
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verdict: Option<CachedVerdict>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
}

/// The verdict cache of one user, loaded in memory.
#[derive(Debug)]
pub struct VerdictStore {
    dir: PathBuf,
    entries: HashMap<String, CachedVerdict>,
    /// Keys released before they were ever scored here (kept so a later verdict is born released).
    released_only: Vec<String>,
    /// Lines in the file, for the compaction decision.
    records: usize,
}

impl VerdictStore {
    /// Loads the user's cache (an absent file is an empty cache). Damaged lines are skipped and counted.
    pub fn open(data_dir: &Path, user: &str) -> Result<VerdictStore, StoreError> {
        let dir = crate::fsutil::user_dir(data_dir, user);
        let mut store = VerdictStore {
            dir,
            entries: HashMap::new(),
            released_only: Vec::new(),
            records: 0,
        };
        let path = store.path();
        let (lines, damaged) = journal::read(&path)?;
        if damaged > 0 {
            tracing::warn!(path = %path.display(), damaged, "skipped damaged verdict cache lines");
        }
        for line in lines {
            if let Ok(r) = serde_json::from_slice::<Record>(&line) {
                store.records += 1;
                store.apply(r);
            }
        }
        Ok(store)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(VERDICTS_FILE)
    }

    fn apply(&mut self, r: Record) {
        if let Some(mut v) = r.verdict {
            let was_released = self.entries.get(&r.key).is_some_and(|e| e.released)
                || self.released_only.contains(&r.key);
            v.released |= was_released || r.released;
            self.released_only.retain(|k| k != &r.key);
            self.entries.insert(r.key, v);
        } else if r.released {
            match self.entries.get_mut(&r.key) {
                Some(e) => e.released = true,
                None => {
                    if !self.released_only.contains(&r.key) {
                        self.released_only.push(r.key);
                    }
                }
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&CachedVerdict> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records new verdicts: one append and one sync for the whole batch.
    pub fn insert_many(&mut self, batch: Vec<(String, CachedVerdict)>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for (key, verdict) in &batch {
            let r = Record {
                key: key.clone(),
                verdict: Some(verdict.clone()),
                released: false,
            };
            journal::encode(&r, &mut buf);
        }
        journal::append(&self.dir, &self.path(), &buf)?;
        for (key, verdict) in batch {
            self.records += 1;
            self.apply(Record {
                key,
                verdict: Some(verdict),
                released: false,
            });
        }
        Ok(())
    }

    /// Marks `key` released (shown, untagged) from the next session on. Works before or after it was scored.
    pub fn release(data_dir: &Path, user: &str, key: &str) -> Result<(), StoreError> {
        let dir = crate::fsutil::user_dir(data_dir, user);
        let mut buf = Vec::new();
        journal::encode(
            &Record {
                key: key.to_owned(),
                verdict: None,
                released: true,
            },
            &mut buf,
        );
        journal::append(&dir, &dir.join(VERDICTS_FILE), &buf)
    }

    /// Drops entries for messages no longer in the maildrop, when enough of the journal is dead to be worth it.
    /// Call only after a complete listing of the maildrop.
    pub fn compact_if_worthwhile(
        &mut self,
        live: &dyn Fn(&str) -> bool,
    ) -> Result<bool, StoreError> {
        let live_count = self.entries.keys().filter(|k| live(k)).count();
        let dead = self.records.saturating_sub(live_count);
        if dead < COMPACT_MIN_DEAD || dead < live_count * COMPACT_DEAD_RATIO {
            return Ok(false);
        }
        self.entries.retain(|k, _| live(k));
        self.released_only.retain(|k| live(k));
        let mut buf = Vec::new();
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            journal::encode(
                &Record {
                    key: k.clone(),
                    verdict: self.entries.get(k).cloned(),
                    released: false,
                },
                &mut buf,
            );
        }
        for k in &self.released_only {
            journal::encode(
                &Record {
                    key: k.clone(),
                    verdict: None,
                    released: true,
                },
                &mut buf,
            );
        }
        // Re-read under the lock so an append made since `open` (a release from the CLI) is not lost.
        let path = self.path();
        let known_released: std::collections::HashSet<&str> = self
            .entries
            .iter()
            .filter(|(_, v)| v.released)
            .map(|(k, _)| k.as_str())
            .chain(self.released_only.iter().map(String::as_str))
            .collect();
        journal::rewrite(&self.dir, &path, buf, |existing| {
            let mut extra = Vec::new();
            for line in existing {
                if let Ok(r) = serde_json::from_slice::<Record>(line)
                    && r.verdict.is_none()
                    && r.released
                    && live(&r.key)
                    && !known_released.contains(r.key.as_str())
                {
                    journal::encode(&r, &mut extra);
                }
            }
            extra
        })?;
        self.records = self.entries.len() + self.released_only.len();
        Ok(true)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Append-only JSON-lines files with a lock file, shared by the verdict cache and the quarantine.
pub(crate) mod journal {
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::path::Path;

    use super::{MAX_RECORD_LINE, StoreError, io};

    const LOCK_FILE: &str = ".lock";

    pub fn encode<T: serde::Serialize>(record: &T, out: &mut Vec<u8>) {
        // Serialising plain structs of strings and numbers cannot fail; a failure would drop only this line.
        if serde_json::to_writer(&mut *out, record).is_ok() {
            out.push(b'\n');
        }
    }

    /// Holds the directory's lock file exclusively while alive (released on drop).
    struct Lock(#[allow(dead_code)] File);

    fn lock(dir: &Path) -> Result<Lock, StoreError> {
        crate::fsutil::create_private_dir_all(dir).map_err(io("create", dir))?;
        let p = dir.join(LOCK_FILE);
        let f = crate::fsutil::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io("open", &p))?;
        f.lock().map_err(io("lock", &p))?;
        Ok(Lock(f))
    }

    /// Complete lines of the file (missing file: none) and how many were damaged (too long, or cut by a crash).
    pub fn read(path: &Path) -> Result<(Vec<Vec<u8>>, usize), StoreError> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io("read", path)(e)),
        };
        Ok(split(&data))
    }

    fn split(data: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let mut lines = Vec::new();
        let mut damaged = 0;
        let mut parts = data.split(|&b| b == b'\n').peekable();
        while let Some(line) = parts.next() {
            let last = parts.peek().is_none();
            if line.is_empty() {
                continue;
            }
            if last || line.len() > MAX_RECORD_LINE {
                // The final piece has no newline: a write cut short.
                damaged += 1;
                continue;
            }
            lines.push(line.to_vec());
        }
        (lines, damaged)
    }

    /// Appends complete lines and syncs. A previous torn write is first closed with a newline, so it stays one
    /// damaged line instead of corrupting the new record.
    pub fn append(dir: &Path, path: &Path, lines: &[u8]) -> Result<(), StoreError> {
        let _lock = lock(dir)?;
        let mut f = crate::fsutil::private_file()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io("open", path))?;
        let len = f.metadata().map_err(io("stat", path))?.len();
        let mut buf = Vec::with_capacity(lines.len() + 1);
        if len > 0 {
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1)).map_err(io("seek", path))?;
            f.read_exact(&mut last).map_err(io("read", path))?;
            if last[0] != b'\n' {
                buf.push(b'\n');
            }
        }
        buf.extend_from_slice(lines);
        f.write_all(&buf).map_err(io("write", path))?;
        f.sync_data().map_err(io("sync", path))?;
        Ok(())
    }

    /// Replaces the file with `content` plus whatever `keep` extracts from the current lines, atomically
    /// (temporary file, sync, rename, directory sync), under the lock.
    pub fn rewrite(
        dir: &Path,
        path: &Path,
        mut content: Vec<u8>,
        keep: impl FnOnce(&[Vec<u8>]) -> Vec<u8>,
    ) -> Result<(), StoreError> {
        let _lock = lock(dir)?;
        let (existing, _) = read(path)?;
        content.extend_from_slice(&keep(&existing));
        crate::fsutil::write_atomic(path, &content).map_err(io("replace", path))?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn split_skips_torn_and_oversized_lines() {
            let (l, d) = split(b"a\nb\n");
            assert_eq!(l, vec![b"a".to_vec(), b"b".to_vec()]);
            assert_eq!(d, 0);
            let (l, d) = split(b"a\n{\"torn");
            assert_eq!(l, vec![b"a".to_vec()]);
            assert_eq!(d, 1);
            let big = vec![b'x'; MAX_RECORD_LINE + 1];
            let mut data = big.clone();
            data.extend_from_slice(b"\nok\n");
            let (l, d) = split(&data);
            assert_eq!(l, vec![b"ok".to_vec()]);
            assert_eq!(d, 1);
            assert_eq!(split(b""), (vec![], 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(class: Class) -> CachedVerdict {
        CachedVerdict {
            class,
            score: 6.5,
            rules: vec!["A".into(), "B".into()],
            subject_delta: 7,
            prefix: "[SPAM]".into(),
            released: false,
            at: 1,
        }
    }

    #[test]
    fn round_trip_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        let mut s = VerdictStore::open(d.path(), "alice").unwrap();
        assert!(s.is_empty());
        s.insert_many(vec![
            ("u1".into(), v(Class::Spam)),
            ("u2".into(), v(Class::Ham)),
        ])
        .unwrap();
        let s2 = VerdictStore::open(d.path(), "alice").unwrap();
        assert_eq!(s2.len(), 2);
        assert_eq!(s2.get("u1"), Some(&v(Class::Spam)));
        assert_eq!(s2.get("u2").unwrap().class, Class::Ham);
        // Another user's cache is separate.
        assert!(VerdictStore::open(d.path(), "bob").unwrap().is_empty());
    }

    #[test]
    fn torn_last_line_is_skipped_and_next_append_survives() {
        let d = tempfile::tempdir().unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        s.insert_many(vec![("u1".into(), v(Class::Spam))]).unwrap();
        let path = crate::fsutil::user_dir(d.path(), "a").join(VERDICTS_FILE);
        // Simulate a crash in the middle of an append.
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(b"{\"key\":\"u2\",\"verd");
        std::fs::write(&path, &data).unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        assert_eq!(s.len(), 1);
        s.insert_many(vec![("u3".into(), v(Class::Ham))]).unwrap();
        let s = VerdictStore::open(d.path(), "a").unwrap();
        assert!(s.get("u1").is_some());
        assert!(s.get("u2").is_none());
        assert!(
            s.get("u3").is_some(),
            "append after a torn line must not be lost"
        );
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let dir = crate::fsutil::user_dir(d.path(), "a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(VERDICTS_FILE),
            b"not json\n{\"key\":\"x\",\"verdict\":{\"class\":\"weird\"}}\n\n",
        )
        .unwrap();
        let s = VerdictStore::open(d.path(), "a").unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn release_before_and_after_scoring() {
        let d = tempfile::tempdir().unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        s.insert_many(vec![("u1".into(), v(Class::Spam))]).unwrap();
        VerdictStore::release(d.path(), "a", "u1").unwrap();
        VerdictStore::release(d.path(), "a", "u9").unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        let e = s.get("u1").unwrap();
        assert!(e.released);
        assert_eq!(e.class, Class::Spam);
        assert_eq!(e.effective_class(), Class::Ham);
        // A later verdict for a key released in advance is born released.
        s.insert_many(vec![("u9".into(), v(Class::Spam))]).unwrap();
        assert!(s.get("u9").unwrap().released);
        let s = VerdictStore::open(d.path(), "a").unwrap();
        assert!(s.get("u9").unwrap().released);
    }

    #[test]
    fn compaction_keeps_live_entries_and_releases() {
        let d = tempfile::tempdir().unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        let batch: Vec<_> = (0..200).map(|i| (format!("u{i}"), v(Class::Ham))).collect();
        s.insert_many(batch).unwrap();
        VerdictStore::release(d.path(), "a", "u1").unwrap();
        let mut s = VerdictStore::open(d.path(), "a").unwrap();
        // Nothing dead yet: no rewrite.
        assert!(!s.compact_if_worthwhile(&|_| true).unwrap());
        // A release appended by another process after `open` must survive the rewrite.
        VerdictStore::release(d.path(), "a", "u2").unwrap();
        let live = |k: &str| matches!(k, "u1" | "u2" | "u3");
        assert!(s.compact_if_worthwhile(&live).unwrap());
        let s = VerdictStore::open(d.path(), "a").unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.get("u1").unwrap().released);
        assert!(s.get("u2").unwrap().released);
        assert!(!s.get("u3").unwrap().released);
        let path = crate::fsutil::user_dir(d.path(), "a").join(VERDICTS_FILE);
        let lines = std::fs::read_to_string(path).unwrap().lines().count();
        assert!(lines <= 4, "{lines} lines after compaction");
    }
}
