//! The one writer of a token database: changes accumulated in memory, merged with the current file into a complete
//! new image, and written with the crash-safe replace of `crate::fsutil`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{
    CommitStats, Counts, DIGEST_LEN, DIGEST_RECORD, Digest, HEADER_LEN, Header, LOCK_FILE, Label,
    MAX_INDEX_BITS, MAX_RECORDS, MIN_INDEX_BITS, PRUNE_INTERVAL_DAYS, PrunePolicy, StoreError,
    TOKEN_RECORD, TOKENS_PER_BUCKET, TokenDb, checksum, io_err, today,
};

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
    pub(super) fail_after: Option<usize>,
}

impl TokenWriter {
    /// Takes the writers' lock of the database at `path` (blocking while another writer holds it), creating the
    /// directory as needed, and reads the current contents.
    pub fn open(path: &Path, policy: PrunePolicy) -> Result<TokenWriter, StoreError> {
        let dir = crate::fsutil::parent_dir(path);
        crate::fsutil::create_private_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = crate::fsutil::private_file()
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

/// Crash-safe replace through `crate::fsutil`. `fail_after` (tests) stops writing after that many bytes to simulate
/// a crash mid-write.
fn write_atomic(path: &Path, bytes: &[u8], fail_after: Option<usize>) -> Result<(), StoreError> {
    crate::fsutil::write_atomic_with(path, |f: &mut File| match fail_after {
        Some(n) => {
            f.write_all(&bytes[..n.min(bytes.len())])?;
            Err(io::Error::other("simulated crash mid-write"))
        }
        None => f.write_all(bytes),
    })
    .map_err(|e| io_err(path, e))
}
