//! One user's maildrop on disk: scanning `new/` and `cur/`, POP3 sizes and UIDLs, chunked reads, and removal at QUIT.
//!
//! The maildrop is never modified except by [`Maildrop::remove`] (called only in the UPDATE state): messages are
//! not moved from `new/` to `cur/` and no flags are added, so a session that ends any other way leaves it exactly
//! as it was. Everything here is blocking file I/O; the session runs it on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Largest number of messages one session offers. Each costs about 150 bytes of memory for the whole session, so
/// this bounds a session to ~30 MB; messages beyond it (the newest) wait for the next session, as if not yet
/// delivered.
pub const MAX_MESSAGES: usize = 200_000;

/// How much of a message file one read returns: large enough that a typical message takes one read, small enough
/// that a 50 MB message never sits whole in memory.
pub const READ_CHUNK: usize = 128 * 1024;

/// RFC 1939 §7 (UIDL): a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
pub const MAX_UIDL_LEN: usize = 70;

/// Most file sizes the [`SizeCache`] remembers (about 100 bytes each); past this it starts over, which only costs
/// re-reading files once.
pub const SIZE_CACHE_ENTRIES: usize = 500_000;

/// How long a hashed UIDL is, in hex digits (128 bits: collisions are not a practical concern).
const HASHED_UIDL_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("no maildrop at {path}: create it with `mkdir -p {path}/new {path}/cur {path}/tmp`")]
    Missing { path: PathBuf },
    // The cause is part of the message, not a `source`, so `{e:#}` chains print it once.
    #[error("cannot read maildrop {path}: {cause} (check its permissions)")]
    Read { path: PathBuf, cause: io::Error },
}

/// One message as the session sees it: fixed when the session starts, so message numbers stay stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The file, in `new/` or `cur/`.
    pub path: PathBuf,
    /// The unique part of the file name (before the `:2,` info), or a hash of it when that is not a valid UIDL.
    pub uidl: String,
    /// The size in octets as sent by RETR: the file's bytes plus one CR for every bare LF (RFC 1939 §5: "exact
    /// size", with CRLF line ends; the byte-stuffing dots are not counted).
    pub size: u64,
}

/// A snapshot of a maildrop, taken when the session enters the TRANSACTION state.
#[derive(Debug, Clone)]
pub struct Maildrop {
    root: PathBuf,
    messages: Vec<MessageInfo>,
}

/// What [`Maildrop::remove`] achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    /// Messages that are now gone (including ones someone else had already removed).
    pub removed: usize,
    /// Messages that could not be removed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

impl Maildrop {
    /// Scans `root/new` and `root/cur` and computes every message's POP3 size (this reads each file once).
    ///
    /// A missing `new/` or `cur/` counts as empty; a missing `root` is an error, so that a typo in `--maildirs`
    /// shows up instead of looking like an empty mailbox.
    pub fn open(root: &Path) -> Result<Maildrop, MaildirError> {
        Maildrop::open_cached(root, &SizeCache::default())
    }

    /// Like [`Maildrop::open`], reading only files whose size `cache` does not know yet.
    pub fn open_cached(root: &Path, cache: &SizeCache) -> Result<Maildrop, MaildirError> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(MaildirError::Missing {
                    path: root.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MaildirError::Missing {
                    path: root.to_owned(),
                });
            }
            Err(source) => {
                return Err(MaildirError::Read {
                    path: root.to_owned(),
                    cause: source,
                });
            }
        }
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let dir = root.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(MaildirError::Read {
                        path: dir,
                        cause: source,
                    });
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| MaildirError::Read {
                    path: dir.clone(),
                    cause: source,
                })?;
                // Symlinks are skipped, not followed: a link in a maildrop must not serve a file from elsewhere.
                let Ok(ft) = entry.file_type() else { continue };
                if !ft.is_file() {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    // Maildir names are ASCII by construction; anything else is not a delivered message.
                    tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
                    continue;
                };
                // Dot files are not messages (maildir spec: readers ignore them).
                if name.starts_with('.') {
                    continue;
                }
                // The identity that validates a cached size; a failed stat means the file just went away.
                let Ok(meta) = entry.metadata() else { continue };
                let id = FileId::of(&meta);
                files.push((delivery_time(name), name.to_owned(), entry.path(), id));
            }
        }
        // Oldest first, the order every POP3 client expects; the name breaks ties so the order is stable.
        files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        if files.len() > MAX_MESSAGES {
            tracing::warn!(
                maildrop = %root.display(),
                count = files.len(),
                "maildrop holds more than {MAX_MESSAGES} messages; offering the oldest {MAX_MESSAGES}"
            );
            files.truncate(MAX_MESSAGES);
        }

        let mut seen = HashSet::with_capacity(files.len());
        let mut messages = Vec::with_capacity(files.len());
        let mut buf = Vec::new();
        for (_, name, path, id) in files {
            let size = match cache.get(&path, id) {
                Some(s) => s,
                None => match pop3_size_with(&path, &mut buf) {
                    Ok(s) => {
                        cache.put(&path, id, s);
                        s
                    }
                    // Gone between readdir and now (another reader expunged it): not in this session.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(MaildirError::Read {
                            path,
                            cause: source,
                        });
                    }
                },
            };
            let mut uidl = uidl_for(&name);
            if !seen.insert(uidl.clone()) {
                // The same unique part twice (say in new/ and cur/): derive a distinct, still stable, id from
                // the full path relative to the maildrop.
                let rel = path.strip_prefix(root).unwrap_or(&path);
                uidl = hashed_uidl(rel.to_string_lossy().as_bytes());
                seen.insert(uidl.clone());
            }
            messages.push(MessageInfo { path, uidl, size });
        }
        Ok(Maildrop {
            root: root.to_owned(),
            messages,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    /// Removes the given messages (indices into [`Maildrop::messages`]); the UPDATE state of RFC 1939 §6.
    ///
    /// A message someone else already removed counts as removed; one that was renamed meanwhile (a local mail
    /// reader moving it from `new/` to `cur/`) is found again by its unique part.
    pub fn remove(&self, indices: &[usize]) -> RemoveReport {
        let mut report = RemoveReport::default();
        for &i in indices {
            let Some(msg) = self.messages.get(i) else {
                continue;
            };
            match fs::remove_file(&msg.path) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match self.find_renamed(&msg.path)
                {
                    Some(moved) => match fs::remove_file(&moved) {
                        Ok(()) => report.removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => report.removed += 1,
                        Err(e) => report.failed.push((moved, e.to_string())),
                    },
                    None => report.removed += 1,
                },
                Err(e) => report.failed.push((msg.path.clone(), e.to_string())),
            }
        }
        report
    }

    /// Looks for a message by the unique part of its original name in `cur/` and `new/`.
    fn find_renamed(&self, original: &Path) -> Option<PathBuf> {
        let name = original.file_name()?.to_str()?;
        let unique = unique_part(name);
        for sub in ["cur", "new"] {
            let Ok(entries) = fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let n = entry.file_name();
                if n.to_str().is_some_and(|n| unique_part(n) == unique) {
                    return Some(entry.path());
                }
            }
        }
        None
    }
}

/// The part of a maildir file name that identifies the message for its whole life: everything before the
/// `:2,FLAGS` info suffix, which changes when flags change.
pub fn unique_part(name: &str) -> &str {
    name.split_once(':').map_or(name, |(u, _)| u)
}

/// The UIDL for a file name: its unique part when that is a valid RFC 1939 unique-id, else a hash of it.
pub fn uidl_for(name: &str) -> String {
    let unique = unique_part(name);
    let valid = !unique.is_empty()
        && unique.len() <= MAX_UIDL_LEN
        && unique.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if valid {
        unique.to_owned()
    } else {
        hashed_uidl(unique.as_bytes())
    }
}

fn hashed_uidl(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(HASHED_UIDL_LEN);
    for b in digest.iter().take(HASHED_UIDL_LEN / 2) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The delivery time maildir writers put at the start of the name (`1700000000.M1P2.host`); names without one
/// sort after all that have one.
fn delivery_time(name: &str) -> u64 {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    name[..digits].parse().unwrap_or(u64::MAX)
}

/// The POP3 size of a file: its bytes plus one for every LF not preceded by CR (each is sent as CRLF).
pub fn pop3_size(path: &Path) -> io::Result<u64> {
    pop3_size_with(path, &mut Vec::new())
}

/// [`pop3_size`] with a caller's buffer, reused across files (a scan of thousands of files then allocates once).
fn pop3_size_with(path: &Path, buf: &mut Vec<u8>) -> io::Result<u64> {
    let mut file = MessageFile::open(path)?;
    let mut counter = SizeCounter::default();
    while !file.is_at_end() {
        file.read_chunk(buf)?;
        if buf.is_empty() {
            break;
        }
        counter.feed(buf);
    }
    Ok(counter.size())
}

/// What identifies one version of a file: a cached size is valid while all of these are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// POP3 sizes of message files already read, shared by the sessions of one server.
///
/// Counting bare LFs means reading every byte, which made each login read the whole maildrop; maildir files do
/// not change after delivery, so a size stays valid while the file's identity ([`FileId`]) is unchanged.
#[derive(Debug, Default)]
pub struct SizeCache {
    sizes: Mutex<HashMap<PathBuf, (FileId, u64)>>,
}

impl SizeCache {
    fn get(&self, path: &Path, id: FileId) -> Option<u64> {
        let sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        match sizes.get(path) {
            Some((cached, size)) if *cached == id => Some(*size),
            _ => None,
        }
    }

    fn put(&self, path: &Path, id: FileId, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() >= SIZE_CACHE_ENTRIES {
            sizes.clear();
        }
        sizes.insert(path.to_owned(), (id, size));
    }

    pub fn len(&self) -> usize {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts the POP3 size of a byte stream fed in arbitrary chunks.
#[derive(Debug, Default, Clone)]
pub struct SizeCounter {
    bytes: u64,
    bare_lfs: u64,
    prev_cr: bool,
}

impl SizeCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        self.bytes += chunk.len() as u64;
        let mut prev_cr = self.prev_cr;
        let mut start = 0;
        // Jump from LF to LF: only the byte before each LF matters.
        while let Some(off) = chunk[start..].iter().position(|&b| b == b'\n') {
            let at = start + off;
            let before_is_cr = if at == 0 {
                prev_cr
            } else {
                chunk[at - 1] == b'\r'
            };
            if !before_is_cr {
                self.bare_lfs += 1;
            }
            start = at + 1;
            prev_cr = false;
        }
        self.prev_cr = last == b'\r';
    }

    pub fn size(&self) -> u64 {
        self.bytes + self.bare_lfs
    }
}

/// An open message file read in chunks of at most [`READ_CHUNK`] bytes, up to the length it had when opened
/// (maildir files never change once delivered; stopping there keeps the body consistent with the size sent).
#[derive(Debug)]
pub struct MessageFile {
    file: fs::File,
    remaining: u64,
}

impl MessageFile {
    pub fn open(path: &Path) -> io::Result<MessageFile> {
        let file = fs::File::open(path)?;
        let remaining = file.metadata()?.len();
        Ok(MessageFile { file, remaining })
    }

    /// True when everything has been read: the caller need not ask again (saving a read that would return 0).
    pub fn is_at_end(&self) -> bool {
        self.remaining == 0
    }

    /// The next chunk into `buf`, empty at end of file.
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let want = usize::try_from(self.remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
        buf.clear();
        buf.resize(want, 0);
        let mut filled = 0;
        // Fill the whole chunk (or reach the end): a short read of a regular file is rare but allowed.
        while filled < want {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => {
                    // Shorter than it was: someone truncated it; stop here.
                    self.remaining = 0;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.clear();
                    return Err(e);
                }
            }
        }
        buf.truncate(filled);
        self.remaining = self.remaining.saturating_sub(filled as u64);
        Ok(())
    }
}

/// Cuts a message after its header, the blank line and `lines` body lines: the TOP command (RFC 1939 §7).
///
/// Fed chunk by chunk; each call says how much of the chunk to send. Header and body may end in LF or CRLF.
#[derive(Debug, Clone)]
pub struct TopFilter {
    state: TopState,
    /// Body lines to send once the header has ended.
    lines: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopState {
    /// In the header; what the current line holds so far.
    Header(LineStart),
    /// In the body with this many more lines to send (never 0: that is `Done`).
    Body(u32),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    Empty,
    /// Only a CR so far: an LF now ends a blank (CRLF) line.
    Cr,
    Text,
}

impl TopFilter {
    pub fn new(lines: u32) -> TopFilter {
        TopFilter {
            state: TopState::Header(LineStart::Empty),
            lines,
        }
    }

    /// True once everything TOP should send has been sent; the rest of the file need not be read.
    pub fn is_done(&self) -> bool {
        self.state == TopState::Done
    }

    /// How many leading bytes of `chunk` belong to the TOP output.
    pub fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                TopState::Done => return i,
                TopState::Header(start) => {
                    let b = chunk[i];
                    i += 1;
                    self.state = match (b, start) {
                        // The blank line that ends the header is sent; then the body lines, if any.
                        (b'\n', LineStart::Empty | LineStart::Cr) if self.lines == 0 => {
                            TopState::Done
                        }
                        (b'\n', LineStart::Empty | LineStart::Cr) => TopState::Body(self.lines),
                        (b'\n', LineStart::Text) => TopState::Header(LineStart::Empty),
                        (b'\r', LineStart::Empty) => TopState::Header(LineStart::Cr),
                        _ => TopState::Header(LineStart::Text),
                    };
                }
                TopState::Body(left) => match chunk[i..].iter().position(|&b| b == b'\n') {
                    Some(off) => {
                        i += off + 1;
                        self.state = if left <= 1 {
                            TopState::Done
                        } else {
                            TopState::Body(left - 1)
                        };
                    }
                    None => return chunk.len(),
                },
            }
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_size(data: &[u8]) -> u64 {
        let bare = (0..data.len())
            .filter(|&i| data[i] == b'\n' && (i == 0 || data[i - 1] != b'\r'))
            .count();
        (data.len() + bare) as u64
    }

    /// TOP by whole lines: split after each LF, keep the header through its blank line, then `n` lines.
    fn naive_top(data: &[u8], n: usize) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
        let blank = lines.iter().position(|l| *l == b"\n" || *l == b"\r\n");
        match blank {
            None => data.to_vec(),
            Some(i) => {
                lines.truncate((i + 1 + n).min(lines.len()));
                lines.concat()
            }
        }
    }

    fn split_feed_size(data: &[u8], at: usize) -> u64 {
        let mut c = SizeCounter::default();
        c.feed(&data[..at]);
        c.feed(&[]);
        c.feed(&data[at..]);
        c.size()
    }

    fn split_feed_top(data: &[u8], n: u32, at: usize) -> Vec<u8> {
        let mut f = TopFilter::new(n);
        let mut out = Vec::new();
        for part in [&data[..at], &data[at..]] {
            if f.is_done() {
                break;
            }
            let k = f.feed(part);
            out.extend_from_slice(&part[..k]);
        }
        out
    }

    const SAMPLES: &[&[u8]] = &[
        b"",
        b"\n",
        b"\r\n",
        b"Subject: a\r\n\r\nbody1\r\nbody2\r\n",
        b"Subject: a\n\nbody1\nbody2\nbody3",
        b"Subject: a\nX: b\r\n\r\n\r\n.\n..\r\nlast",
        b"Subject: no body at all\n",
        b"A: \r\r\nB: c\r\n\r\nx\ry\r\n",
        b"\r\n\r\nstarts blank\n",
        b"lone cr at end\r",
    ];

    #[test]
    fn size_counts_bare_lfs_at_every_split() {
        for data in SAMPLES {
            let want = naive_size(data);
            for at in 0..=data.len() {
                assert_eq!(split_feed_size(data, at), want, "{data:?} split at {at}");
            }
        }
        assert_eq!(naive_size(b"a\nb\r\n"), 6);
    }

    #[test]
    fn top_matches_line_reference_at_every_split() {
        for data in SAMPLES {
            for n in 0..5u32 {
                let want = naive_top(data, n as usize);
                for at in 0..=data.len() {
                    assert_eq!(
                        split_feed_top(data, n, at),
                        want,
                        "{:?} n={n} split at {at}",
                        String::from_utf8_lossy(data)
                    );
                }
            }
        }
    }

    #[test]
    fn top_zero_is_header_and_blank_line() {
        let msg = b"From: a\r\nSubject: b\r\n\r\nbody\r\n";
        let mut f = TopFilter::new(0);
        let k = f.feed(msg);
        assert_eq!(&msg[..k], b"From: a\r\nSubject: b\r\n\r\n");
        assert!(f.is_done());
    }

    #[test]
    fn uidl_is_the_unique_part_or_a_hash() {
        assert_eq!(uidl_for("1700000000.M1P2.host:2,S"), "1700000000.M1P2.host");
        assert_eq!(uidl_for("1700000000.M1P2.host"), "1700000000.M1P2.host");
        let long = "x".repeat(71);
        let h = uidl_for(&long);
        assert_eq!(h.len(), HASHED_UIDL_LEN);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(h, uidl_for(&long), "stable");
        assert_eq!(uidl_for("with space").len(), HASHED_UIDL_LEN);
        assert_eq!(uidl_for(":2,S").len(), HASHED_UIDL_LEN);
    }

    fn make_maildrop(dir: &Path, files: &[(&str, &[u8])]) {
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (name, data) in files {
            fs::write(dir.join(name), data).unwrap();
        }
    }

    #[test]
    fn open_orders_by_delivery_time_and_skips_non_messages() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("alice");
        make_maildrop(
            &root,
            &[
                ("cur/200.M2.h:2,S", b"b\n"),
                ("new/100.M1.h", b"a\r\n"),
                ("new/1000.M3.h", b"c\n\n"),
                ("new/.hidden", b"x"),
                ("tmp/50.M0.h", b"in delivery"),
                ("new/zzz", b"no timestamp\n"),
            ],
        );
        fs::create_dir(root.join("new/subdir")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("new/10.link")).unwrap();
        let m = Maildrop::open(&root).unwrap();
        let got: Vec<(&str, u64)> = m
            .messages()
            .iter()
            .map(|x| (x.uidl.as_str(), x.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("100.M1.h", 3),
                ("200.M2.h", 3),
                ("1000.M3.h", 5),
                ("zzz", 14)
            ]
        );
    }

    #[test]
    fn duplicate_unique_parts_get_distinct_stable_uidls() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("u");
        make_maildrop(&root, &[("new/5.A.h", b"1\n"), ("cur/5.A.h:2,", b"2\n")]);
        let a = Maildrop::open(&root).unwrap();
        let b = Maildrop::open(&root).unwrap();
        let ua: Vec<_> = a.messages().iter().map(|m| m.uidl.clone()).collect();
        let ub: Vec<_> = b.messages().iter().map(|m| m.uidl.clone()).collect();
        assert_eq!(ua.len(), 2);
        assert_ne!(ua[0], ua[1]);
        assert_eq!(ua, ub);
    }

    #[test]
    fn missing_root_is_an_error_missing_subdirs_are_empty() {
        let t = tempfile::tempdir().unwrap();
        let e = Maildrop::open(&t.path().join("nobody")).unwrap_err();
        assert!(matches!(e, MaildirError::Missing { .. }));
        assert!(e.to_string().contains("mkdir -p"), "{e}");
        let root = t.path().join("bare");
        fs::create_dir(&root).unwrap();
        assert!(Maildrop::open(&root).unwrap().messages().is_empty());
    }

    #[test]
    fn remove_handles_renamed_and_vanished_messages() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("u");
        make_maildrop(
            &root,
            &[
                ("new/1.a.h", b"1\n"),
                ("new/2.b.h", b"2\n"),
                ("new/3.c.h", b"3\n"),
                ("new/4.d.h", b"4\n"),
            ],
        );
        let m = Maildrop::open(&root).unwrap();
        // A local reader moves message 2 to cur/ and someone else expunges message 3.
        fs::rename(root.join("new/2.b.h"), root.join("cur/2.b.h:2,S")).unwrap();
        fs::remove_file(root.join("new/3.c.h")).unwrap();
        let r = m.remove(&[0, 1, 2]);
        assert_eq!(r.removed, 3);
        assert!(r.failed.is_empty());
        let left = Maildrop::open(&root).unwrap();
        assert_eq!(left.messages().len(), 1);
        assert_eq!(left.messages()[0].uidl, "4.d.h");
    }

    #[test]
    fn size_cache_is_used_and_notices_changed_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("u");
        make_maildrop(&root, &[("new/1.a.h", b"a\nb\n"), ("new/2.b.h", b"c\r\n")]);
        let cache = SizeCache::default();
        let first = Maildrop::open_cached(&root, &cache).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(first.messages()[0].size, 6);
        // Rewritten with a different length: the cached size must not be used.
        fs::write(root.join("new/1.a.h"), b"a\nb\nc\n").unwrap();
        let second = Maildrop::open_cached(&root, &cache).unwrap();
        assert_eq!(second.messages()[0].size, 9);
        assert_eq!(second.messages()[1].size, 3);
    }

    #[test]
    fn message_file_reads_in_bounded_chunks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        let data: Vec<u8> = (0..READ_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let mut f = MessageFile::open(&p).unwrap();
        let mut buf = Vec::new();
        let mut all = Vec::new();
        while !f.is_at_end() {
            f.read_chunk(&mut buf).unwrap();
            assert!(!buf.is_empty());
            assert!(buf.len() <= READ_CHUNK);
            all.extend_from_slice(&buf);
        }
        assert_eq!(all, data);
        f.read_chunk(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(pop3_size(&p).unwrap(), naive_size(&data));
    }
}
