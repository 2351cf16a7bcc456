//! One user's maildrop on disk: scanning `new/` and `cur/`, POP3 sizes and UIDLs, chunked reads, and removal at QUIT.
//!
//! The maildrop is never modified except by [`Maildrop::remove`] (called only in the UPDATE state): messages are
//! not moved from `new/` to `cur/` and no flags are added, so a session that ends any other way leaves it exactly
//! as it was. Everything here is blocking file I/O; the session runs it on tokio's blocking pool.
//!
//! A maildrop may belong to a local user who can plant symbolic links in it, while the server reads and deletes
//! with its own privileges. So nothing is ever reached through a link: `new/` and `cur/` are opened once with
//! `O_NOFOLLOW` when the session starts, and every later stat, open and unlink of a message goes through those
//! descriptors, by name, again with `O_NOFOLLOW`, and checks that it found the file (device and inode) that was
//! listed. Swapping `cur/` or a message for a link after LIST then reaches nothing outside the maildrop.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use sha2::{Digest, Sha256};

/// Largest number of messages one session offers. Each costs about 150 bytes of memory for the whole session, so
/// this bounds a session to ~30 MB; messages beyond it (the newest) wait for the next session, as if not yet
/// delivered.
pub const MAX_MESSAGES: usize = 200_000;

/// How much of a message file one read returns: large enough that a typical message takes one read, small enough
/// that a 50 MB message never sits whole in memory.
pub const READ_CHUNK: usize = 128 * 1024;

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
    /// How to reach the listed file again without following a link (see the module comment).
    pub source: MessageSource,
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
    /// `new/` and `cur/` as opened at the start of the session (absent ones left out).
    dirs: Vec<Arc<OwnedFd>>,
    messages: Vec<MessageInfo>,
}

/// One listed message file: the directory it was found in (an open descriptor), its name there, and its identity
/// then. Opening or removing it later goes through the descriptor and checks the identity.
#[derive(Debug, Clone)]
pub struct MessageSource {
    dir: Arc<OwnedFd>,
    name: String,
    /// Device and inode alone are not enough: a freed inode number is soon reused by the next new file.
    id: FileId,
}

impl PartialEq for MessageSource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.id == other.id
    }
}

impl Eq for MessageSource {}

/// Flags for opening a message: never through a link (`ELOOP` instead), never a controlling terminal, and never
/// blocking on a FIFO someone swapped in for a message.
fn message_open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

/// Flags for opening `new/` or `cur/`: a directory, and not a link to one.
fn subdir_open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The identity fields of a `stat` result. The field types differ between architectures, hence the casts.
#[allow(clippy::unnecessary_cast)]
fn stat_id(st: &rustix::fs::Stat) -> FileId {
    FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        len: st.st_size as u64,
        mtime_ns: i128::from(st.st_mtime as i64) * 1_000_000_000
            + i128::from(st.st_mtime_nsec as i64),
    }
}

/// A message file as it is now, by name inside an opened directory, without following a link: its identity when
/// it is a regular file, `None` when the name is something else (a link, a directory, a FIFO).
fn stat_in(dir: &OwnedFd, name: &str) -> rustix::io::Result<Option<FileId>> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok((FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| stat_id(&st)))
}

impl MessageSource {
    /// Opens the listed file for reading: through the directory descriptor, without following a link, and only
    /// when it is still the very file that was listed.
    pub fn open(&self) -> io::Result<MessageFile> {
        let fd = rustix::fs::openat(
            &*self.dir,
            self.name.as_str(),
            message_open_flags(),
            Mode::empty(),
        )?;
        let file = fs::File::from(fd);
        let st = rustix::fs::fstat(&file)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || stat_id(&st) != self.id {
            return Err(io::Error::other(
                "the message file was replaced since the maildrop was listed",
            ));
        }
        Ok(MessageFile {
            file,
            remaining: self.id.len,
        })
    }

    /// True when `name` in `dir` is this message (a regular file with the listed identity).
    fn is_at(&self, dir: &OwnedFd, name: &str) -> bool {
        matches!(stat_in(dir, name), Ok(Some(id)) if id == self.id)
    }
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
        // The root is what the administrator configured (it may be a link on purpose); below it, nothing is.
        let root_fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MaildirError::Read {
            path: root.to_owned(),
            cause: e.into(),
        })?;
        let mut files = Vec::new();
        let mut dirs = Vec::with_capacity(2);
        for sub in ["new", "cur"] {
            let dir = root.join(sub);
            let dir_fd = match rustix::fs::openat(&root_fd, sub, subdir_open_flags(), Mode::empty())
            {
                Ok(fd) => Arc::new(fd),
                Err(Errno::NOENT) => continue,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    tracing::warn!(
                        dir = %dir.display(),
                        "skipping: not a directory (a symbolic link is never followed out of a maildrop)"
                    );
                    continue;
                }
                Err(e) => {
                    return Err(MaildirError::Read {
                        path: dir,
                        cause: e.into(),
                    });
                }
            };
            let entries = Dir::read_from(&*dir_fd).map_err(|e| MaildirError::Read {
                path: dir.clone(),
                cause: e.into(),
            })?;
            for entry in entries {
                let entry = entry.map_err(|e| MaildirError::Read {
                    path: dir.clone(),
                    cause: e.into(),
                })?;
                let Ok(name) = entry.file_name().to_str() else {
                    // Maildir names are ASCII by construction; anything else is not a delivered message.
                    tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
                    continue;
                };
                // Dot files (and `.`, `..`) are not messages (maildir spec: readers ignore them).
                if name.starts_with('.') {
                    continue;
                }
                // Links, directories and devices are skipped, not followed; a failed stat means the file just
                // went away. The identity validates a cached size and, later, every open and unlink.
                let Ok(Some(id)) = stat_in(&dir_fd, name) else {
                    continue;
                };
                let source = MessageSource {
                    dir: dir_fd.clone(),
                    name: name.to_owned(),
                    id,
                };
                files.push((
                    delivery_time(name),
                    name.to_owned(),
                    dir.join(name),
                    id,
                    source,
                ));
            }
            dirs.push(dir_fd);
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
        for (_, name, path, id, source) in files {
            let size = match cache.get(&path, id) {
                Some(s) => s,
                None => match pop3_size_with(&source, &mut buf) {
                    Ok(s) => {
                        cache.put(&path, id, s);
                        s
                    }
                    // Gone between readdir and now (another reader expunged it), or swapped for something
                    // else: not in this session.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Other => continue,
                    Err(cause) => return Err(MaildirError::Read { path, cause }),
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
            messages.push(MessageInfo {
                source,
                path,
                uidl,
                size,
            });
        }
        Ok(Maildrop {
            root: root.to_owned(),
            dirs,
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
    /// reader moving it from `new/` to `cur/`) is found again by its identity. A name that now holds another file
    /// or a link is left alone and reported: only the listed file is ever unlinked, and only inside the maildrop.
    pub fn remove(&self, indices: &[usize]) -> RemoveReport {
        let mut report = RemoveReport::default();
        for &i in indices {
            let Some(msg) = self.messages.get(i) else {
                continue;
            };
            match self.remove_one(&msg.source) {
                Ok(()) => report.removed += 1,
                Err(e) => report.failed.push((msg.path.clone(), e.to_string())),
            }
        }
        report
    }

    fn remove_one(&self, src: &MessageSource) -> io::Result<()> {
        let (dir, name) = match stat_in(&src.dir, &src.name) {
            Ok(Some(id)) if id == src.id => (src.dir.clone(), src.name.clone()),
            Ok(_) => {
                return Err(io::Error::other(
                    "another file or a link now has this name; left alone",
                ));
            }
            Err(Errno::NOENT) => match self.find_renamed(src) {
                Some(found) => found,
                // Already gone: what QUIT asked for is done.
                None => return Ok(()),
            },
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::unlinkat(&*dir, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Looks for a message by the unique part of its original name in the opened `cur/` and `new/`, accepting
    /// only the listed file itself (a rename keeps the inode).
    fn find_renamed(&self, src: &MessageSource) -> Option<(Arc<OwnedFd>, String)> {
        let unique = unique_part(&src.name);
        for dir in &self.dirs {
            let Ok(entries) = Dir::read_from(&**dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(n) = entry.file_name().to_str() else {
                    continue;
                };
                if unique_part(n) == unique && src.is_at(dir, n) {
                    return Some((dir.clone(), n.to_owned()));
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
    if crate::pop3::listing::check_uid(unique.as_bytes()).is_ok() {
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
    count_pop3_size(MessageFile::open(path)?, &mut Vec::new())
}

/// The POP3 size of a listed message, with a caller's buffer reused across files (a scan of thousands of files
/// then allocates once).
fn pop3_size_with(source: &MessageSource, buf: &mut Vec<u8>) -> io::Result<u64> {
    count_pop3_size(source.open()?, buf)
}

fn count_pop3_size(mut file: MessageFile, buf: &mut Vec<u8>) -> io::Result<u64> {
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
mod tests;
