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

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::Mmap;

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

/// Token keys are already uniformly mixed 64-bit hashes, so the map can use them as they are instead of hashing
/// them again with SipHash (training spends much of its time in this map).
#[derive(Default, Clone, Copy)]
pub struct PassThroughHasher(u64);

impl std::hash::Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type TokenMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PassThroughHasher>>;

/// The one writer of a database: holds the exclusive lock from `open` until dropped, accumulates changes in memory
/// and writes them with `commit` (which may be called repeatedly, e.g. every few thousand messages).
pub struct TokenWriter {
    lock: File,
    base: TokenDb,
    delta: TokenMap<(i64, i64)>,
    digests: HashMap<Digest, Option<Label>>,
    dspam: i64,
    dham: i64,
    today: u32,
    policy: PrunePolicy,
    force_prune: bool,
    #[cfg(test)]
    fail_after: Option<usize>,
}

impl TokenWriter {
    /// Takes the writers' lock of the database at `path` (blocking while another writer holds it), creating the
    /// directory as needed, and reads the current contents.
    pub fn open(path: &Path, policy: PrunePolicy) -> Result<TokenWriter, StoreError> {
        let dir = parent_dir(path);
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        lock.lock().map_err(|e| io_err(&lock_path, e))?;
        let base = TokenDb::open(path)?;
        Ok(TokenWriter {
            lock,
            base,
            delta: TokenMap::default(),
            digests: HashMap::new(),
            dspam: 0,
            dham: 0,
            today: today(),
            policy,
            force_prune: false,
            #[cfg(test)]
            fail_after: None,
        })
    }

    /// The database as of the last commit (or open).
    pub fn base(&self) -> &TokenDb {
        &self.base
    }

    /// Pretend it is this day (tests of pruning).
    pub fn set_today(&mut self, day: u32) {
        self.today = day;
    }

    /// Prune on the next commit even if the last prune is recent.
    pub fn prune_on_commit(&mut self) {
        self.force_prune = true;
    }

    /// The class this digest is trained as, including uncommitted changes.
    pub fn trained_as(&self, digest: &Digest) -> Option<Label> {
        match self.digests.get(digest) {
            Some(state) => *state,
            None => self.base.trained_as(digest),
        }
    }

    /// Message counts including uncommitted changes.
    pub fn message_counts(&self) -> (u32, u32) {
        let add =
            |base: u32, d: i64| u32::try_from((i64::from(base) + d).max(0)).unwrap_or(u32::MAX);
        (
            add(self.base.nspam(), self.dspam),
            add(self.base.nham(), self.dham),
        )
    }

    /// Adds (or with `untrain` removes) one message's unique tokens to `label`, and records (or forgets) its digest.
    /// The caller checks `trained_as` first; this does not refuse duplicates itself.
    pub fn apply(&mut self, tokens: &[u64], label: Label, digest: &Digest, untrain: bool) {
        let step: i64 = if untrain { -1 } else { 1 };
        for &t in tokens {
            let e = self.delta.entry(t).or_insert((0, 0));
            match label {
                Label::Spam => e.0 += step,
                Label::Ham => e.1 += step,
            }
        }
        match label {
            Label::Spam => self.dspam += step,
            Label::Ham => self.dham += step,
        }
        self.digests
            .insert(*digest, if untrain { None } else { Some(label) });
    }

    /// Uncommitted distinct tokens (to bound memory: commit when this grows large).
    pub fn pending_tokens(&self) -> usize {
        self.delta.len()
    }

    /// True when there is something to write.
    pub fn is_dirty(&self) -> bool {
        !self.delta.is_empty() || !self.digests.is_empty() || self.force_prune
    }

    /// Writes base + changes as a new file (atomically), then continues from it.
    pub fn commit(&mut self) -> Result<CommitStats, StoreError> {
        if !self.is_dirty() {
            return Ok(CommitStats {
                tokens: self.base.len(),
                pruned: 0,
                generation: self.base.generation(),
            });
        }
        let path = self.base.path.clone();
        let prune = self.force_prune
            || self.today.saturating_sub(self.base.last_prune_day()) >= PRUNE_INTERVAL_DAYS;
        let (bytes, stats) = self.build(prune)?;
        #[cfg(test)]
        let fail_after = self.fail_after;
        #[cfg(not(test))]
        let fail_after = None;
        write_atomic(&path, &bytes, fail_after)?;
        self.base = TokenDb::open(&path)?;
        self.delta.clear();
        self.digests.clear();
        self.dspam = 0;
        self.dham = 0;
        self.force_prune = false;
        Ok(stats)
    }

    /// Merges the sorted base table with the sorted changes into a complete new file image.
    fn build(&self, prune: bool) -> Result<(Vec<u8>, CommitStats), StoreError> {
        let mut changes: Vec<(u64, (i64, i64))> =
            self.delta.iter().map(|(k, v)| (*k, *v)).collect();
        changes.sort_unstable_by_key(|c| c.0);
        let today = self.today;
        let apply = |c: Counts, d: (i64, i64)| -> Counts {
            let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
            Counts {
                spam: clamp(i64::from(c.spam) + d.0),
                ham: clamp(i64::from(c.ham) + d.1),
                // Only training (not untraining) refreshes a token's age.
                day: if d.0 > 0 || d.1 > 0 { today } else { c.day },
            }
        };

        let mut merged: Vec<(u64, Counts)> = Vec::with_capacity(self.base.len() + changes.len());
        let mut base = self.base.iter().peekable();
        let mut ch = changes.into_iter().peekable();
        loop {
            let next = match (base.peek(), ch.peek()) {
                (None, None) => break,
                (Some(_), None) => base.next(),
                (None, Some(_)) => ch.next().map(|(h, d)| (h, apply(Counts::default(), d))),
                (Some(b), Some(c)) => {
                    if b.0 < c.0 {
                        base.next()
                    } else if b.0 > c.0 {
                        ch.next().map(|(h, d)| (h, apply(Counts::default(), d)))
                    } else {
                        let b = base.next();
                        ch.next().zip(b).map(|((h, d), (_, c))| (h, apply(c, d)))
                    }
                }
            };
            if let Some((h, c)) = next
                && (c.spam > 0 || c.ham > 0)
            {
                merged.push((h, c));
            }
        }

        let before = merged.len();
        if prune {
            let p = self.policy;
            merged.retain(|(_, c)| {
                c.spam.saturating_add(c.ham) > p.max_count
                    || today.saturating_sub(c.day) <= p.after_days
            });
        }
        if self.policy.max_tokens > 0 && merged.len() > self.policy.max_tokens {
            // Drop the rarest tokens first, the oldest among equally rare ones.
            let mut order: Vec<(u32, u32, usize)> = merged
                .iter()
                .enumerate()
                .map(|(i, (_, c))| (c.spam.saturating_add(c.ham), c.day, i))
                .collect();
            let excess = merged.len() - self.policy.max_tokens;
            order.select_nth_unstable(excess - 1);
            let mut drop = vec![false; merged.len()];
            for &(_, _, i) in &order[..excess] {
                drop[i] = true;
            }
            let mut i = 0;
            merged.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
        }
        let pruned = before - merged.len();

        let mut digests: Vec<(Digest, Label)> = self
            .base
            .digests()
            .filter(|(d, _)| !self.digests.contains_key(d))
            .filter_map(|(d, l)| l.map(|l| (d, l)))
            .chain(self.digests.iter().filter_map(|(d, l)| l.map(|l| (*d, l))))
            .collect();
        digests.sort_unstable_by_key(|a| a.0);

        if merged.len() > MAX_RECORDS || digests.len() > MAX_RECORDS {
            return Err(StoreError::TooLarge {
                path: self.base.path.clone(),
                reason: format!("{} tokens, {} digests", merged.len(), digests.len()),
            });
        }

        let (nspam, nham) = self.message_counts();
        let mut header = Header {
            index_bits: index_bits_for(merged.len()),
            generation: self.base.generation().wrapping_add(1),
            nspam,
            nham,
            ntokens: merged.len() as u32,
            ndigests: digests.len() as u32,
            sum_spam: merged.iter().map(|(_, c)| u64::from(c.spam)).sum(),
            sum_ham: merged.iter().map(|(_, c)| u64::from(c.ham)).sum(),
            last_prune_day: if prune {
                today
            } else {
                self.base.last_prune_day()
            },
            checksum: 0,
        };
        let mut out = vec![0u8; header.file_len()];
        if !merged.is_empty() {
            // index[b] = first record whose top bits are >= b.
            let bits = header.index_bits;
            let mut at = HEADER_LEN;
            let mut rec = 0usize;
            for b in 0..=(1usize << bits) {
                while rec < merged.len() && ((merged[rec].0 >> (64 - bits)) as usize) < b {
                    rec += 1;
                }
                out[at..at + 4].copy_from_slice(&(rec as u32).to_le_bytes());
                at += 4;
            }
        }
        let mut at = header.tokens_at();
        for (h, c) in &merged {
            out[at..at + 8].copy_from_slice(&h.to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&c.spam.to_le_bytes());
            out[at + 12..at + 16].copy_from_slice(&c.ham.to_le_bytes());
            out[at + 16..at + 20].copy_from_slice(&c.day.to_le_bytes());
            at += TOKEN_RECORD;
        }
        for (d, l) in &digests {
            out[at..at + DIGEST_LEN].copy_from_slice(d);
            out[at + DIGEST_LEN] = l.to_byte();
            at += DIGEST_RECORD;
        }
        header.checksum = checksum(&out[HEADER_LEN..]);
        header.write(&mut out[..HEADER_LEN]);
        Ok((
            out,
            CommitStats {
                tokens: merged.len(),
                pruned,
                generation: header.generation,
            },
        ))
    }
}

impl Drop for TokenWriter {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first just makes it prompt.
        let _ = self.lock.unlock();
    }
}

fn index_bits_for(n: usize) -> u32 {
    let buckets = (n / TOKENS_PER_BUCKET).max(1);
    let bits = usize::BITS - buckets.leading_zeros();
    bits.clamp(MIN_INDEX_BITS, MAX_INDEX_BITS)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Crash-safe replace: write a temporary file in the same directory, fsync it, rename it over `path`, fsync the
/// directory. `fail_after` (tests) stops writing after that many bytes to simulate a crash mid-write.
fn write_atomic(path: &Path, bytes: &[u8], fail_after: Option<usize>) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| TOKENS_FILE.to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        match fail_after {
            Some(n) => {
                f.write_all(&bytes[..n.min(bytes.len())])?;
                return Err(io::Error::other("simulated crash mid-write"));
            }
            None => f.write_all(bytes)?,
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        // A real crash leaves the temp file behind; it is harmless (never read) and removed here when we can.
        if fail_after.is_none() {
            let _ = fs::remove_file(&tmp);
        }
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Removes temporary files left by writers that crashed (call with the writers' lock held).
pub fn remove_stale_temps(path: &Path) {
    let dir = parent_dir(path);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        [n; DIGEST_LEN]
    }

    fn spread(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = TokenDb::open(&dir.path().join(TOKENS_FILE)).unwrap();
        assert_eq!((db.nspam(), db.nham(), db.len()), (0, 0, 0));
        assert_eq!(db.get(42), None);
        assert_eq!(db.trained_as(&digest(1)), None);
    }

    #[test]
    fn train_untrain_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u").join(TOKENS_FILE);
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.apply(&[1, 2, 3], Label::Spam, &digest(1), false);
        w.apply(&[2, 3, 4], Label::Ham, &digest(2), false);
        w.commit().unwrap();
        drop(w);

        let db = TokenDb::open(&path).unwrap();
        assert_eq!((db.nspam(), db.nham(), db.len()), (1, 1, 4));
        assert_eq!(db.get(2).map(|c| (c.spam, c.ham)), Some((1, 1)));
        assert_eq!(db.get(4).map(|c| (c.spam, c.ham)), Some((0, 1)));
        assert_eq!(db.get(5), None);
        assert_eq!(db.trained_as(&digest(1)), Some(Label::Spam));
        assert_eq!(db.trained_as(&digest(2)), Some(Label::Ham));
        assert_eq!((db.sum_spam(), db.sum_ham()), (3, 3));
        assert_eq!(db.generation(), 1);

        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.apply(&[1, 2, 3], Label::Spam, &digest(1), true);
        w.commit().unwrap();
        drop(w);
        let db = TokenDb::open(&path).unwrap();
        assert_eq!((db.nspam(), db.nham(), db.len()), (0, 1, 3));
        assert_eq!(db.get(1), None, "a token with no counts left is removed");
        assert_eq!(db.trained_as(&digest(1)), None);
        assert_eq!(db.generation(), 2);
    }

    #[test]
    fn many_tokens_are_all_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        let toks: Vec<u64> = (0..50_000u64).map(spread).collect();
        w.apply(&toks, Label::Ham, &digest(9), false);
        w.commit().unwrap();
        let db = TokenDb::open(&path).unwrap();
        assert_eq!(db.len(), 50_000);
        for &t in &toks {
            assert_eq!(db.get(t).map(|c| c.ham), Some(1), "{t}");
        }
        assert_eq!(db.get(spread(50_001)), None);
        assert!(db.iter().zip(db.iter().skip(1)).all(|(a, b)| a.0 < b.0));
    }

    #[test]
    fn crash_mid_write_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.apply(&[10, 20], Label::Spam, &digest(1), false);
        w.commit().unwrap();
        w.apply(&[30, 40], Label::Spam, &digest(2), false);
        w.fail_after = Some(100);
        assert!(w.commit().is_err());
        drop(w);
        let db = TokenDb::open(&path).unwrap();
        assert_eq!((db.nspam(), db.len()), (1, 2));
        assert_eq!(db.get(30), None);
        remove_stale_temps(&path);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
            "{left:?}"
        );
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.apply(
            &(0..1000).map(spread).collect::<Vec<_>>(),
            Label::Spam,
            &digest(1),
            false,
        );
        w.commit().unwrap();
        drop(w);
        let good = fs::read(&path).unwrap();
        for cut in [0, 7, 64, HEADER_LEN, good.len() / 2, good.len() - 1] {
            let e = TokenDb::from_bytes(&path, good[..cut].to_vec()).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{cut}: {e}");
        }
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(TokenDb::from_bytes(&path, flipped).is_err());
        assert!(TokenDb::from_bytes(&path, good).is_ok());
    }

    #[test]
    fn prune_drops_only_stale_rare_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.set_today(1000);
        w.apply(&[1, 2], Label::Spam, &digest(1), false);
        w.apply(&[2], Label::Spam, &digest(2), false);
        w.commit().unwrap();
        w.set_today(1000 + DEFAULT_PRUNE_AFTER_DAYS + 1);
        w.apply(&[3], Label::Ham, &digest(3), false);
        w.prune_on_commit();
        let stats = w.commit().unwrap();
        assert_eq!(stats.pruned, 1);
        let db = w.base();
        assert_eq!(db.get(1), None, "stale and rare");
        assert_eq!(db.get(2).map(|c| c.spam), Some(2), "stale but common");
        assert_eq!(db.get(3).map(|c| c.ham), Some(1), "rare but fresh");
        assert_eq!(db.last_prune_day(), 1000 + DEFAULT_PRUNE_AFTER_DAYS + 1);
    }

    #[test]
    fn token_cap_drops_the_rarest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let policy = PrunePolicy {
            max_tokens: 10,
            ..PrunePolicy::default()
        };
        let mut w = TokenWriter::open(&path, policy).unwrap();
        let common: Vec<u64> = (0..10).map(spread).collect();
        for d in 0..3 {
            w.apply(&common, Label::Spam, &digest(d), false);
        }
        w.apply(
            &(100..120).map(spread).collect::<Vec<_>>(),
            Label::Ham,
            &digest(9),
            false,
        );
        let stats = w.commit().unwrap();
        assert_eq!((stats.tokens, stats.pruned), (10, 20));
        assert!(common.iter().all(|t| w.base().get(*t).is_some()));
    }

    #[test]
    fn concurrent_writers_do_not_lose_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let threads: Vec<_> = (0..2u8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..20u8 {
                        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
                        let d = digest(t * 100 + i);
                        assert_eq!(w.trained_as(&d), None);
                        w.apply(
                            &[7, 1_000_000 + u64::from(t) * 1000 + u64::from(i)],
                            Label::Spam,
                            &d,
                            false,
                        );
                        w.commit().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let db = TokenDb::open(&path).unwrap();
        assert_eq!(db.nspam(), 40);
        assert_eq!(db.get(7).map(|c| c.spam), Some(40));
        assert_eq!(db.digest_count(), 40);
    }

    #[test]
    fn a_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let empty = TokenDb::open(&path).unwrap();
        assert!(!empty.changed_on_disk());
        let mut w = TokenWriter::open(&path, PrunePolicy::default()).unwrap();
        w.apply(&[1], Label::Spam, &digest(1), false);
        w.commit().unwrap();
        assert!(empty.changed_on_disk());
        let db = TokenDb::open(&path).unwrap();
        assert!(!db.changed_on_disk());
        w.apply(&[2], Label::Spam, &digest(2), false);
        w.commit().unwrap();
        assert!(db.changed_on_disk());
    }
}
