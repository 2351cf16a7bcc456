//! The quarantine: what the proxy hid for a user (UIDL, from, subject, score, why) and which were released.
//!
//! Records live in `quarantine.jsonl` (same crash-safe journal as the verdict cache); the scanned prefix of each
//! hidden message (at most `filter.scan_limit` bytes: what was scored) is kept beside it, so a release can train the
//! classifier on exactly the bytes that were misjudged without asking the upstream again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::verdicts::{StoreError, journal, now_secs};

/// The journal file in a user's directory.
pub const QUARANTINE_FILE: &str = "quarantine.jsonl";
/// Directory of scanned message prefixes, one file per key.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Longest From/Subject kept in a record: enough to recognise a message in `quarantine list`.
pub const MAX_SUMMARY_CHARS: usize = 200;

/// One hidden message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The upstream UIDL (or `digest:...` for upstreams without UIDL).
    pub uidl: String,
    pub from: String,
    pub subject: String,
    pub score: f64,
    /// Rule names that hit.
    pub rules: Vec<String>,
    /// When it was hidden (seconds since the Unix epoch).
    pub at: u64,
    #[serde(default)]
    pub released: bool,
}

impl QuarantineEntry {
    /// Builds an entry, shortening From and Subject to [`MAX_SUMMARY_CHARS`] and removing control characters so a
    /// hostile header cannot garble the listing.
    pub fn new(uidl: &str, from: &str, subject: &str, score: f64, rules: Vec<String>) -> Self {
        QuarantineEntry {
            uidl: uidl.to_owned(),
            from: summary(from),
            subject: summary(subject),
            score,
            rules,
            at: now_secs(),
            released: false,
        }
    }
}

fn summary(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SUMMARY_CHARS)
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entry: Option<QuarantineEntry>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
}

/// A message taken out of the quarantine, with the bytes that were scored (None if the file is gone).
#[derive(Debug, Clone)]
pub struct Released {
    pub entry: QuarantineEntry,
    pub prefix: Option<Vec<u8>>,
}

/// One user's quarantine.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    pub fn open(data_dir: &Path, user: &str) -> Quarantine {
        Quarantine {
            dir: crate::fsutil::user_dir(data_dir, user),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(QUARANTINE_FILE)
    }

    fn message_path(&self, key: &str) -> PathBuf {
        self.dir
            .join(QUARANTINE_DIR)
            .join(format!("{}.eml", crate::fsutil::safe_name(key)))
    }

    /// Records newly hidden messages with their scanned prefixes. The prefix files are written first, so a record
    /// never points at a missing file after a crash.
    pub fn add(&self, batch: &[(QuarantineEntry, Vec<u8>)]) -> Result<(), StoreError> {
        for (entry, prefix) in batch {
            self.store_prefix(&entry.uidl, prefix)?;
        }
        let entries: Vec<QuarantineEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
        self.add_entries(&entries)
    }

    /// Keeps the scanned bytes of a hidden message (written as soon as it is scored, so a large first scan does not
    /// hold them in memory).
    pub fn store_prefix(&self, key: &str, prefix: &[u8]) -> Result<(), StoreError> {
        let mdir = self.dir.join(QUARANTINE_DIR);
        crate::fsutil::create_private_dir_all(&mdir).map_err(|source| StoreError::Io {
            action: "create",
            path: mdir.clone(),
            cause: source,
        })?;
        let p = self.message_path(key);
        crate::fsutil::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, prefix))
            .map_err(|source| StoreError::Io {
                action: "write",
                path: p.clone(),
                cause: source,
            })
    }

    /// Appends records for hidden messages (one sync for the batch).
    pub fn add_entries(&self, entries: &[QuarantineEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for entry in entries {
            journal::encode(
                &Record {
                    key: entry.uidl.clone(),
                    entry: Some(entry.clone()),
                    released: false,
                },
                &mut buf,
            );
        }
        journal::append(&self.dir, &self.path(), &buf)
    }

    /// Every recorded entry, released ones included, oldest first.
    pub fn entries(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        let (lines, _) = journal::read(&self.path())?;
        let mut by_key: BTreeMap<String, QuarantineEntry> = BTreeMap::new();
        for line in lines {
            let Ok(r) = serde_json::from_slice::<Record>(&line) else {
                continue;
            };
            if let Some(e) = r.entry {
                let released = by_key.get(&r.key).is_some_and(|o| o.released);
                by_key.insert(
                    r.key.clone(),
                    QuarantineEntry {
                        released: e.released || released,
                        ..e
                    },
                );
            }
            if r.released
                && let Some(e) = by_key.get_mut(&r.key)
            {
                e.released = true;
            }
        }
        let mut v: Vec<QuarantineEntry> = by_key.into_values().collect();
        v.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.uidl.cmp(&b.uidl)));
        Ok(v)
    }

    /// Entries still hidden.
    pub fn list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| !e.released)
            .collect())
    }

    /// Marks `uidl` released and returns its entry and stored prefix (None when it is not in the quarantine).
    pub fn release(&self, uidl: &str) -> Result<Option<Released>, StoreError> {
        let Some(entry) = self.entries()?.into_iter().find(|e| e.uidl == uidl) else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        journal::encode(
            &Record {
                key: uidl.to_owned(),
                entry: None,
                released: true,
            },
            &mut buf,
        );
        journal::append(&self.dir, &self.path(), &buf)?;
        let prefix = std::fs::read(self.message_path(uidl)).ok();
        Ok(Some(Released {
            entry: QuarantineEntry {
                released: true,
                ..entry
            },
            prefix,
        }))
    }

    /// Forgets entries whose message left the maildrop (and their prefix files). Call only after a complete
    /// listing; returns how many were dropped.
    pub fn prune(&self, live: &dyn Fn(&str) -> bool) -> Result<usize, StoreError> {
        let all = self.entries()?;
        let dead: Vec<&QuarantineEntry> = all.iter().filter(|e| !live(&e.uidl)).collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        for e in all.iter().filter(|e| live(&e.uidl)) {
            journal::encode(
                &Record {
                    key: e.uidl.clone(),
                    entry: Some(e.clone()),
                    released: false,
                },
                &mut buf,
            );
        }
        journal::rewrite(&self.dir, &self.path(), buf, |existing| {
            // Keep anything appended since we read (a release, or another session's entries) for live keys.
            let mut extra = Vec::new();
            let seen: Vec<&str> = all.iter().map(|e| e.uidl.as_str()).collect();
            for line in existing {
                if let Ok(r) = serde_json::from_slice::<Record>(line)
                    && live(&r.key)
                    && (r.entry.is_none() || !seen.contains(&r.key.as_str()))
                {
                    journal::encode(&r, &mut extra);
                }
            }
            extra
        })?;
        for e in &dead {
            let _ = std::fs::remove_file(self.message_path(&e.uidl));
        }
        Ok(dead.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uidl: &str) -> QuarantineEntry {
        QuarantineEntry::new(
            uidl,
            "Spammer <s@x>",
            "Win\r\nmoney",
            9.5,
            vec!["R1".into()],
        )
    }

    #[test]
    fn add_list_release() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path(), "alice");
        assert!(q.list().unwrap().is_empty());
        q.add(&[
            (entry("u1"), b"Subject: Win\r\n\r\nbody".to_vec()),
            (entry("u/2"), b"x".to_vec()),
        ])
        .unwrap();
        let l = q.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].subject, "Win  money", "control characters replaced");
        let r = q.release("u1").unwrap().unwrap();
        assert!(r.entry.released);
        assert_eq!(r.prefix.unwrap(), b"Subject: Win\r\n\r\nbody");
        let l = q.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].uidl, "u/2");
        assert!(q.release("nope").unwrap().is_none());
        // The entry stays known (released) for the record.
        assert_eq!(q.entries().unwrap().len(), 2);
    }

    #[test]
    fn hidden_again_after_release_stays_released() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path(), "a");
        q.add(&[(entry("u1"), Vec::new())]).unwrap();
        q.release("u1").unwrap();
        q.add(&[(entry("u1"), Vec::new())]).unwrap();
        assert!(q.list().unwrap().is_empty());
    }

    #[test]
    fn prune_drops_gone_messages_and_their_files() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path(), "a");
        q.add(&[
            (entry("keep"), b"k".to_vec()),
            (entry("gone"), b"g".to_vec()),
        ])
        .unwrap();
        q.release("keep").unwrap();
        assert_eq!(q.prune(&|k| k == "keep").unwrap(), 1);
        let all = q.entries().unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].released);
        assert!(!q.message_path("gone").exists());
        assert!(q.message_path("keep").exists());
        assert_eq!(q.prune(&|k| k == "keep").unwrap(), 0);
    }
}
