//! The per-user Bayes token database: one immutable, memory-mapped file of sorted token counts and trained-message
//! digests, replaced atomically on every write.
//!
//! Layout (little-endian): a fixed header, a bucket index on the top bits of the token hash, the token records
//! sorted by hash, then the digest records sorted by digest. Opening is an `mmap` plus a checksum pass, so a session
//! pays a few milliseconds even for hundreds of thousands of tokens. Readers never lock: a writer builds the whole new
//! file beside the old one (`*.tmp-*`), fsyncs it, renames it over the old name and fsyncs the directory, so a reader
//! sees either the old or the new file, and a crash mid-write leaves the old file intact. Writers serialise on an
//! exclusive `File::lock` of a separate `tokens.lock` file (the data file itself is replaced, so it cannot carry the
//! lock), and re-read the current file under that lock, so two writers never lose each other's updates.

#[cfg(test)]
mod tests;
mod writer;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::Mmap;

pub use writer::{PassThroughHasher, TokenWriter};

/// File name of a token database inside a user's directory.
pub const TOKENS_FILE: &str = "tokens.db";
/// File name of the writers' lock beside it.
pub const LOCK_FILE: &str = "tokens.lock";

const MAGIC: &[u8; 8] = b"PGTOKDB1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 128;
/// hash u64, spam u32, ham u32, last-trained day u32.
const TOKEN_RECORD: usize = 20;
/// digest [u8; 16], class u8, 3 bytes padding.
const DIGEST_RECORD: usize = 20;
/// Bytes of a SHA-256 kept per trained message: 128 bits make an accidental collision in a lifetime of mail
/// negligible while keeping the digest table small.
pub const DIGEST_LEN: usize = 16;
/// Index bits are chosen so a bucket holds about this many tokens: one cache line or two per lookup.
const TOKENS_PER_BUCKET: usize = 4;
/// Bounds of the bucket index size (2^8 .. 2^22 entries of 4 bytes).
const MIN_INDEX_BITS: u32 = 8;
const MAX_INDEX_BITS: u32 = 22;
/// The file format stores counts as u32 and offsets as u32 record numbers.
const MAX_RECORDS: usize = u32::MAX as usize / 2;

/// How many days a token may go untrained before pruning may drop it (when also rare).
pub const DEFAULT_PRUNE_AFTER_DAYS: u32 = 120;
/// Tokens seen in at most this many messages in total are "rare" for pruning.
pub const DEFAULT_PRUNE_MAX_COUNT: u32 = 1;
/// Automatic pruning runs on a write at most this often.
pub const PRUNE_INTERVAL_DAYS: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The cause is part of the message (not a `source`), so `{e:#}` chains do not print it twice.
    #[error("token store {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "token store {path} is damaged ({reason}); move it aside and retrain with `popguard train`, \
         or restore it from a backup"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("token store {path} is too large ({reason}); prune it with `popguard train --prune`")]
    TooLarge { path: PathBuf, reason: String },
}

fn io_err(path: &Path, error: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Which class a trained message went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    Spam,
    Ham,
}

impl Label {
    fn to_byte(self) -> u8 {
        match self {
            Label::Spam => 1,
            Label::Ham => 2,
        }
    }
    fn from_byte(b: u8) -> Option<Label> {
        match b {
            1 => Some(Label::Spam),
            2 => Some(Label::Ham),
            _ => None,
        }
    }
}

/// A trained message's identity (truncated SHA-256 of its normalised bytes).
pub type Digest = [u8; DIGEST_LEN];

/// One token's counts: in how many trained spam and ham messages it occurred, and the last day it was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub spam: u32,
    pub ham: u32,
    pub day: u32,
}

/// Days since the Unix epoch (the granularity of token ages).
pub fn today() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs / 86_400).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Header {
    index_bits: u32,
    generation: u64,
    nspam: u32,
    nham: u32,
    ntokens: u32,
    ndigests: u32,
    sum_spam: u64,
    sum_ham: u64,
    last_prune_day: u32,
    checksum: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || &b[..8] != MAGIC || le_u32(b, 8) != VERSION {
            return None;
        }
        Some(Header {
            index_bits: le_u32(b, 12),
            generation: le_u64(b, 16),
            nspam: le_u32(b, 24),
            nham: le_u32(b, 28),
            ntokens: le_u32(b, 32),
            ndigests: le_u32(b, 36),
            sum_spam: le_u64(b, 40),
            sum_ham: le_u64(b, 48),
            last_prune_day: le_u32(b, 56),
            checksum: le_u64(b, 64),
        })
    }

    fn write(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.index_bits.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..28].copy_from_slice(&self.nspam.to_le_bytes());
        out[28..32].copy_from_slice(&self.nham.to_le_bytes());
        out[32..36].copy_from_slice(&self.ntokens.to_le_bytes());
        out[36..40].copy_from_slice(&self.ndigests.to_le_bytes());
        out[40..48].copy_from_slice(&self.sum_spam.to_le_bytes());
        out[48..56].copy_from_slice(&self.sum_ham.to_le_bytes());
        out[56..60].copy_from_slice(&self.last_prune_day.to_le_bytes());
        out[64..72].copy_from_slice(&self.checksum.to_le_bytes());
    }

    fn index_len(&self) -> usize {
        if self.ntokens == 0 {
            0
        } else {
            (1usize << self.index_bits) + 1
        }
    }

    fn tokens_at(&self) -> usize {
        HEADER_LEN + self.index_len() * 4
    }

    fn digests_at(&self) -> usize {
        self.tokens_at() + self.ntokens as usize * TOKEN_RECORD
    }

    fn file_len(&self) -> usize {
        self.digests_at() + self.ndigests as usize * DIGEST_RECORD
    }
}

/// A checksum over the body, eight bytes at a time: fast enough to verify on every open (a few ms for 4 MB), good
/// enough to catch a truncated or overwritten file. Not cryptographic.
fn checksum(body: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = body.len() as u64 ^ K;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(29);
    }
    h ^ (h >> 32)
}

enum Backing {
    Empty,
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Empty => &[],
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// What identifies one version of the file on disk, to notice when another process replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// An open, read-only snapshot of a token database.
pub struct TokenDb {
    path: PathBuf,
    header: Header,
    backing: Backing,
    stamp: Option<Stamp>,
}

impl std::fmt::Debug for TokenDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDb")
            .field("path", &self.path)
            .field("nspam", &self.header.nspam)
            .field("nham", &self.header.nham)
            .field("tokens", &self.header.ntokens)
            .field("generation", &self.header.generation)
            .finish()
    }
}

impl TokenDb {
    /// Opens the database at `path`; a missing file is an empty database (nothing trained yet).
    pub fn open(path: &Path) -> Result<TokenDb, StoreError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TokenDb::empty(path)),
            Err(e) => return Err(io_err(path, e)),
        };
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        let stamp = Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
        });
        if meta.len() == 0 {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "the file is empty".into(),
            });
        }
        // SAFETY: the file is only ever replaced by rename, never modified or truncated in place (see the module
        // comment), so the mapped pages stay valid and unchanged for the life of the mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        TokenDb::from_backing(path, Backing::Mapped(map), stamp)
    }

    /// Builds a database from file bytes in memory (tests, and tools that read a copy).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<TokenDb, StoreError> {
        TokenDb::from_backing(path, Backing::Owned(bytes), None)
    }

    fn empty(path: &Path) -> TokenDb {
        TokenDb {
            path: path.to_owned(),
            header: Header::default(),
            backing: Backing::Empty,
            stamp: None,
        }
    }

    fn from_backing(
        path: &Path,
        backing: Backing,
        stamp: Option<Stamp>,
    ) -> Result<TokenDb, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = backing.bytes();
        let header = Header::parse(bytes).ok_or_else(|| corrupt("not a popguard token file"))?;
        if header.ntokens > 0 && !(MIN_INDEX_BITS..=MAX_INDEX_BITS).contains(&header.index_bits) {
            return Err(corrupt("bad index size"));
        }
        if header.file_len() != bytes.len() {
            return Err(corrupt(
                "the file length does not match its header (truncated?)",
            ));
        }
        if checksum(&bytes[HEADER_LEN..]) != header.checksum {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(TokenDb {
            path: path.to_owned(),
            header,
            backing,
            stamp,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Trained spam messages.
    pub fn nspam(&self) -> u32 {
        self.header.nspam
    }
    /// Trained ham messages.
    pub fn nham(&self) -> u32 {
        self.header.nham
    }
    /// Distinct tokens stored.
    pub fn len(&self) -> usize {
        self.header.ntokens as usize
    }
    pub fn is_empty(&self) -> bool {
        self.header.ntokens == 0
    }
    /// Remembered message digests.
    pub fn digest_count(&self) -> usize {
        self.header.ndigests as usize
    }
    /// Sum of every token's spam count (what a token-count classifier such as bayespam calls its spam total).
    pub fn sum_spam(&self) -> u64 {
        self.header.sum_spam
    }
    /// Sum of every token's ham count.
    pub fn sum_ham(&self) -> u64 {
        self.header.sum_ham
    }
    /// Bumped by every write; 0 for a database never written.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }
    pub fn last_prune_day(&self) -> u32 {
        self.header.last_prune_day
    }

    /// True when the file on disk is no longer the one this snapshot was read from (another process trained).
    pub fn changed_on_disk(&self) -> bool {
        stamp_of(&self.path) != self.stamp
    }

    fn index_entry(&self, i: usize) -> usize {
        le_u32(self.backing.bytes(), HEADER_LEN + i * 4) as usize
    }

    fn token_at(&self, i: usize) -> (u64, Counts) {
        let b = self.backing.bytes();
        let at = self.header.tokens_at() + i * TOKEN_RECORD;
        (
            le_u64(b, at),
            Counts {
                spam: le_u32(b, at + 8),
                ham: le_u32(b, at + 12),
                day: le_u32(b, at + 16),
            },
        )
    }

    /// The counts of one token (by hash), if it was ever trained.
    pub fn get(&self, hash: u64) -> Option<Counts> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let bucket = (hash >> (64 - self.header.index_bits)) as usize;
        let mut lo = self.index_entry(bucket).min(n);
        let mut hi = self.index_entry(bucket + 1).min(n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (h, c) = self.token_at(mid);
            match h.cmp(&hash) {
                std::cmp::Ordering::Equal => return Some(c),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Every token in hash order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Counts)> + '_ {
        (0..self.len()).map(|i| self.token_at(i))
    }

    fn digest_at(&self, i: usize) -> (Digest, Option<Label>) {
        let b = self.backing.bytes();
        let at = self.header.digests_at() + i * DIGEST_RECORD;
        let mut d = [0u8; DIGEST_LEN];
        if let Some(s) = b.get(at..at + DIGEST_LEN) {
            d.copy_from_slice(s);
        }
        (
            d,
            b.get(at + DIGEST_LEN).copied().and_then(Label::from_byte),
        )
    }

    /// The class a message with this digest was trained as, if it was.
    pub fn trained_as(&self, digest: &Digest) -> Option<Label> {
        let (mut lo, mut hi) = (0, self.digest_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (d, label) = self.digest_at(mid);
            match d.cmp(digest) {
                std::cmp::Ordering::Equal => return label,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    fn digests(&self) -> impl Iterator<Item = (Digest, Option<Label>)> + '_ {
        (0..self.digest_count()).map(|i| self.digest_at(i))
    }
}

/// When a write prunes stale rare tokens, and how large the database may grow.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    /// Tokens untrained for longer than this many days...
    pub after_days: u32,
    /// ...and seen in at most this many messages are dropped.
    pub max_count: u32,
    /// Hard cap on stored tokens: beyond it the rarest, oldest tokens are dropped on write. 0 = no cap.
    pub max_tokens: usize,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            after_days: DEFAULT_PRUNE_AFTER_DAYS,
            max_count: DEFAULT_PRUNE_MAX_COUNT,
            max_tokens: 0,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub tokens: usize,
    pub pruned: usize,
    pub generation: u64,
}

/// Removes temporary files left by writers that crashed (call with the writers' lock held).
pub fn remove_stale_temps(path: &Path) {
    crate::fsutil::remove_stale_temps(path);
}
