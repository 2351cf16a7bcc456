//! The shared scorer: one lazily opened, memory-mapped snapshot per model, and the auto-learning queue.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::engine::{Clue, bayespam_score, graham_prob, robinson_score};
use super::store::{self, Label, TokenDb, TokenWriter};
use super::tokenize::{TokenSet, Tokenizer};
use super::*;

/// A model's store and whose it is (`None` = global).
type ModelChoice = (Arc<TokenDb>, Option<String>);

struct Pending {
    digest: store::Digest,
    tokens: Vec<u64>,
    label: Label,
}

/// Shared by every session: opens each model's store lazily, keeps it mapped, and reopens it when another process
/// (e.g. `popguard train`) replaced the file.
///
/// Nothing slow happens under its locks: a store is opened, mapped and checksummed with no lock held and then
/// swapped in, and auto-learning only queues under the lock; [`BayesScorer::learn_pending`] writes.
pub struct BayesScorer {
    config: BayesConfig,
    data_dir: PathBuf,
    scan_limit: usize,
    subject_prefix: String,
    tokenizer: Tokenizer,
    stores: Mutex<HashMap<PathBuf, (Arc<TokenDb>, u64)>>,
    uses: std::sync::atomic::AtomicU64,
    autolearn: Mutex<HashMap<PathBuf, Vec<Pending>>>,
}

impl std::fmt::Debug for BayesScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BayesScorer")
            .field("data_dir", &self.data_dir)
            .field("engine", &self.config.engine)
            .finish()
    }
}

impl BayesScorer {
    pub fn new(settings: &BayesSettings) -> Result<BayesScorer, BayesError> {
        Ok(BayesScorer {
            config: settings.config.clone(),
            data_dir: settings.data_dir.clone(),
            scan_limit: settings.scan_limit,
            subject_prefix: settings.subject_prefix.clone(),
            tokenizer: Tokenizer::new(),
            stores: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
            autolearn: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &BayesConfig {
        &self.config
    }

    /// The current snapshot of the store at `path`, reopened if the file changed since it was mapped.
    pub fn store(&self, path: &Path) -> Result<Arc<TokenDb>, BayesError> {
        let tick = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cached = {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            stores.get_mut(path).map(|(db, used)| {
                *used = tick;
                db.clone()
            })
        };
        // The stat, and the open, map and checksum of a replaced file, run with no lock held.
        if let Some(db) = &cached
            && !db.changed_on_disk()
        {
            return Ok(db.clone());
        }
        let fresh = Arc::new(TokenDb::open(path)?);
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((db, used)) = stores.get_mut(path) {
            let ours_was_current = cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, db));
            if !ours_was_current && db.generation() >= fresh.generation() {
                // Another session reopened it meanwhile: share that snapshot.
                *used = tick;
                return Ok(db.clone());
            }
        } else if stores.len() >= MAX_OPEN_STORES
            && let Some(oldest) = stores
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
        {
            stores.remove(&oldest);
        }
        stores.insert(path.to_owned(), (fresh.clone(), tick));
        Ok(fresh)
    }

    fn trained_enough(&self, db: &TokenDb) -> bool {
        db.nspam() >= self.config.min_spam.max(1) && db.nham() >= self.config.min_ham.max(1)
    }

    /// The model to use for `user`: theirs when trained enough, else the global one (if allowed and trained).
    fn model_for(&self, user: Option<&str>) -> Result<Option<ModelChoice>, BayesError> {
        if let Some(u) = user {
            let db = self.store(&model_path(&self.data_dir, Some(u)))?;
            if self.trained_enough(&db) {
                return Ok(Some((db, Some(u.to_owned()))));
            }
            if !self.config.fallback_to_global {
                return Ok(None);
            }
        }
        let db = self.store(&model_path(&self.data_dir, None))?;
        Ok(self.trained_enough(&db).then_some((db, None)))
    }

    /// Tokenizes a message exactly as scoring does (for tools and benchmarks).
    pub fn tokenize(&self, message: &[u8], keep_names: bool) -> TokenSet {
        let message = &message[..message.len().min(self.scan_limit.max(1))];
        self.tokenizer
            .tokenize(message, self.config.max_tokens_per_message, keep_names)
    }

    /// None when the user (or the global model) has too little training to say anything. With auto-learning on,
    /// the message may be queued for training; [`BayesScorer::learn_pending`] writes the queue.
    pub fn score(
        &self,
        user: Option<&str>,
        message: &[u8],
        explain: bool,
    ) -> Result<Option<BayesResult>, BayesError> {
        self.score_parsed(user, message, None, explain)
    }

    /// [`BayesScorer::score`], reusing `parsed` (the message's parse by [`crate::message::PARSER`]) when given.
    /// The message must be no longer than the scan limit.
    pub fn score_parsed(
        &self,
        user: Option<&str>,
        message: &[u8],
        parsed: Option<Option<&mail_parser::Message<'_>>>,
        explain: bool,
    ) -> Result<Option<BayesResult>, BayesError> {
        if !self.config.enabled {
            return Ok(None);
        }
        let Some((db, model)) = self.model_for(user)? else {
            return Ok(None);
        };
        let tokens =
            match parsed {
                Some(p) if message.len() <= self.scan_limit.max(1) => self
                    .tokenizer
                    .tokenize_parsed(message, p, self.config.max_tokens_per_message, explain),
                _ => self.tokenize(message, explain),
            };
        let result = self.score_tokens(&db, &tokens, explain, model);
        if let Some(u) = user {
            self.queue_autolearn(u, message, tokens.hashes, result.probability);
        }
        Ok(Some(result))
    }

    /// Scores an already tokenized message against one store.
    pub fn score_tokens(
        &self,
        db: &TokenDb,
        tokens: &TokenSet,
        explain: bool,
        model: Option<String>,
    ) -> BayesResult {
        let (probability, mut clues) = match self.config.engine {
            Engine::Robinson => robinson_score(db, &tokens.hashes, &self.config),
            Engine::Bayespam => {
                let p = bayespam_score(db, &tokens.hashes);
                let clues = if explain {
                    tokens
                        .hashes
                        .iter()
                        .filter_map(|&t| {
                            db.get(t).map(|c| Clue {
                                hash: t,
                                prob: graham_prob(c, db.sum_spam(), db.sum_ham()),
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                (p, clues)
            }
        };
        let hits = self
            .config
            .band_for(probability)
            .map(|b| Hit {
                name: b.name.clone(),
                score: b.score,
                description: format!(
                    "Bayesian spam probability is {:.1}% ({}+)",
                    probability * 100.0,
                    b.min
                ),
            })
            .into_iter()
            .collect();
        let evidence = if explain {
            clues.sort_by(|a, b| b.prob.total_cmp(&a.prob).then(a.hash.cmp(&b.hash)));
            let spammy = clues
                .iter()
                .take_while(|c| c.prob > 0.5)
                .take(EXPLAIN_TOKENS);
            let hammy = clues
                .iter()
                .rev()
                .take_while(|c| c.prob < 0.5)
                .take(EXPLAIN_TOKENS);
            spammy
                .chain(hammy)
                .map(|c| (tokens.name(c.hash), c.prob))
                .collect()
        } else {
            Vec::new()
        };
        BayesResult {
            probability,
            hits,
            evidence,
            class: self.config.class_of(probability),
            model,
        }
    }

    /// Queues the message for auto-learning when its probability is past a threshold. Only a push under the
    /// lock: the store is rewritten by [`BayesScorer::learn_pending`], off the scoring path.
    fn queue_autolearn(&self, user: &str, message: &[u8], tokens: Vec<u64>, p: f64) {
        let label = match (self.config.autolearn_spam, self.config.autolearn_ham) {
            (Some(t), _) if p >= t => Label::Spam,
            (_, Some(t)) if p < t => Label::Ham,
            _ => return,
        };
        let path = model_path(&self.data_dir, Some(user));
        let digest = message_digest(message, &self.subject_prefix);
        let mut pending = self.autolearn.lock().unwrap_or_else(|e| e.into_inner());
        let list = pending.entry(path).or_default();
        if list.len() >= MAX_AUTOLEARN_QUEUE {
            tracing::debug!("bayes: auto-learn queue of {user} is full; message not learned");
            return;
        }
        list.push(Pending {
            digest,
            tokens,
            label,
        });
    }

    /// Writes the queue of every model that holds at least a full batch ([`AUTOLEARN_BATCH`] messages); returns
    /// the messages written. Each write takes the model's writers' lock and rewrites and fsyncs the whole file: call it
    /// where blocking is allowed (a blocking thread, the end of a command), never while scoring.
    pub fn learn_pending(&self) -> Result<usize, BayesError> {
        let ready: Vec<(PathBuf, Vec<Pending>)> = {
            let mut pending = self.autolearn.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .iter_mut()
                .filter(|(_, list)| list.len() >= AUTOLEARN_BATCH)
                .map(|(path, list)| (path.clone(), std::mem::take(list)))
                .collect()
        };
        self.write_batches(ready)
    }

    fn write_batches(&self, batches: Vec<(PathBuf, Vec<Pending>)>) -> Result<usize, BayesError> {
        let mut written = 0;
        let mut first_error = None;
        for (path, batch) in batches {
            let n = batch.len();
            match self.write_pending(&path, batch) {
                Ok(()) => written += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(written), Err)
    }

    fn write_pending(&self, path: &Path, batch: Vec<Pending>) -> Result<(), BayesError> {
        let mut w = TokenWriter::open(path, self.config.prune_policy())?;
        for p in batch {
            // Never override a user's own training, and never learn the same message twice.
            if w.trained_as(&p.digest).is_none() {
                w.apply(&p.tokens, p.label, &p.digest, false);
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Writes every queued auto-learned message, full batch or not (on shutdown).
    pub fn flush(&self) -> Result<(), BayesError> {
        let all: Vec<(PathBuf, Vec<Pending>)> = {
            let mut pending = self.autolearn.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().filter(|(_, b)| !b.is_empty()).collect()
        };
        self.write_batches(all).map(|_| ())
    }
}

impl Drop for BayesScorer {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("bayes: auto-learned messages not saved: {e}");
        }
    }
}
