//! The Bayesian classifier: configuration, the scoring engines over per-user token stores, and the training API.
//!
//! Two engines share one tokenizer ([`tokenize`]) and one store ([`crate::store::tokens`]):
//! - `robinson` (default): Gary Robinson's f(w) per token, the strongest tokens combined with Fisher's inverse
//!   chi-square, as SpamBayes and bogofilter do; it gives a calibrated probability with a real "unsure" middle.
//! - `bayespam`: the `bayespam` crate's Graham-style scoring, fed with the same tokens and counts.
//!
//! Models: each user has one under `store::user_dir(data_dir, user)/tokens.db`; a global model lives in
//! `data_dir/global/tokens.db` and serves `user = None` (e.g. `popguard score` without `--user`) and, when
//! `fallback_to_global` is on, users whose own model is not trained enough yet. The probability becomes part of the
//! total score through score bands (`BAYES_00` .. `BAYES_99`), like SpamAssassin's.

pub mod source;
pub mod tokenize;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{Class, Hit};
use crate::config::Config;
use crate::store::tokens::{self, Label, PrunePolicy, TokenDb, TokenWriter};
use tokenize::{TokenSet, Tokenizer};

/// Strongest tokens listed each way by `--explain`.
pub const EXPLAIN_TOKENS: usize = 10;
/// Token stores kept open at once by a scorer (one per active user); the least recently used is closed beyond it.
pub const MAX_OPEN_STORES: usize = 256;
/// A batch trainer writes its changes once this many distinct tokens are pending (bounds its memory).
pub const MAX_PENDING_TOKENS: usize = 2_000_000;
/// Auto-learned messages are written in batches of this many (a write rewrites the whole store).
pub const AUTOLEARN_BATCH: usize = 25;
/// Bytes of a message hashed into its training digest (whole messages; this only stops absurd inputs).
pub const MAX_DIGEST_BYTES: usize = 64 * 1024 * 1024;

/// Which scoring method turns token counts into a probability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Robinson's f(w) with Fisher's chi-square combining (SpamBayes, bogofilter).
    #[default]
    Robinson,
    /// The `bayespam` crate (Graham 2002), fed by this tokenizer.
    Bayespam,
}

/// One score band: a message whose Bayes probability is at least `min` (and below the next band's `min`) gets a
/// hit named `name` worth `score`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Hit name as shown in `X-Spam-Status`, e.g. `BAYES_99`.
    pub name: String,
    /// Lowest probability in the band (0..1).
    pub min: f64,
    /// Points added to the total score.
    pub score: f64,
}

fn band(name: &str, min: f64, score: f64) -> Band {
    Band {
        name: name.into(),
        min,
        score,
    }
}

/// The default bands: SpamAssassin's layout. Bayes alone never reaches the spam threshold (5.0) except at its most
/// certain (`BAYES_999`), so a trained model needs a little help from the rules for the rest.
pub fn default_bands() -> Vec<Band> {
    vec![
        band("BAYES_00", 0.0, -1.5),
        band("BAYES_05", 0.01, -0.5),
        band("BAYES_20", 0.05, -0.1),
        band("BAYES_40", 0.20, 0.0),
        band("BAYES_50", 0.40, 0.8),
        band("BAYES_60", 0.60, 1.5),
        band("BAYES_80", 0.80, 2.0),
        band("BAYES_95", 0.95, 3.0),
        band("BAYES_99", 0.99, 3.5),
        band("BAYES_999", 0.999, 4.5),
    ]
}

/// `[bayes]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayesConfig {
    /// Set to false to never consult the Bayesian classifier.
    pub enabled: bool,
    /// `"robinson"` (default: Robinson/Fisher chi-square, with an unsure band) or `"bayespam"`.
    pub engine: Engine,
    /// A model is used only after this many spam messages were trained into it...
    pub min_spam: u32,
    /// ...and this many ham messages.
    pub min_ham: u32,
    /// Score users whose own model is not trained enough with the global model (`data_dir/global`).
    pub fallback_to_global: bool,
    /// Bayes probability at or above which the classifier alone calls a message spam (benchmarks, `--explain`).
    pub spam_cutoff: f64,
    /// Bayes probability below which the classifier alone calls a message ham; between the two it is unsure.
    pub ham_cutoff: f64,
    /// Robinson's s: how strongly an unknown token is pulled towards `unknown_token_prob` (bigger = more caution).
    pub robinson_s: f64,
    /// Robinson's x: the probability assumed for a token never seen.
    pub unknown_token_prob: f64,
    /// Tokens whose probability is within this distance of 0.5 are ignored as uninformative.
    pub min_deviation: f64,
    /// At most this many of the strongest tokens are combined per message.
    pub max_discriminators: usize,
    /// Distinct tokens taken from one message (more are sampled).
    pub max_tokens_per_message: usize,
    /// Hard cap on tokens in one store; beyond it the rarest, oldest tokens are dropped on write. 0 = no cap.
    pub max_tokens: usize,
    /// Pruning drops tokens not trained for this many days...
    pub prune_after_days: u32,
    /// ...that were seen in at most this many messages. Pruning runs on a write at most weekly, or with
    /// `popguard train --prune`.
    pub prune_max_count: u32,
    /// When set, messages the proxy scores with a Bayes probability at or above this are trained as spam
    /// (auto-learn). Off by default: self-training reinforces mistakes.
    pub autolearn_spam: Option<f64>,
    /// When set, messages scored below this probability are trained as ham (auto-learn). Off by default.
    pub autolearn_ham: Option<f64>,
    /// `popguard quarantine release` trains the released message as ham (the user's correction).
    pub train_on_release: bool,
    /// Score bands; each `{ name, min, score }`. The band with the highest `min` not above the probability hits.
    pub bands: Vec<Band>,
}

impl Default for BayesConfig {
    fn default() -> Self {
        BayesConfig {
            enabled: true,
            engine: Engine::Robinson,
            min_spam: 20,
            min_ham: 20,
            fallback_to_global: true,
            spam_cutoff: 0.99,
            ham_cutoff: 0.20,
            robinson_s: 0.1,
            unknown_token_prob: 0.5,
            min_deviation: 0.25,
            max_discriminators: 1000,
            max_tokens_per_message: tokenize::DEFAULT_MAX_TOKENS,
            max_tokens: 2_000_000,
            prune_after_days: tokens::DEFAULT_PRUNE_AFTER_DAYS,
            prune_max_count: tokens::DEFAULT_PRUNE_MAX_COUNT,
            autolearn_spam: None,
            autolearn_ham: None,
            train_on_release: true,
            bands: default_bands(),
        }
    }
}

impl BayesConfig {
    fn prune_policy(&self) -> PrunePolicy {
        PrunePolicy {
            after_days: self.prune_after_days,
            max_count: self.prune_max_count,
            max_tokens: self.max_tokens,
        }
    }

    /// The classifier-alone verdict for a probability.
    pub fn class_of(&self, probability: f64) -> Class {
        if probability >= self.spam_cutoff {
            Class::Spam
        } else if probability < self.ham_cutoff {
            Class::Ham
        } else {
            Class::Unsure
        }
    }

    /// The band hit for a probability, if any band covers it.
    pub fn band_for(&self, probability: f64) -> Option<&Band> {
        self.bands
            .iter()
            .filter(|b| b.min <= probability)
            .max_by(|a, b| a.min.total_cmp(&b.min))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BayesError {
    #[error("token store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error(transparent)]
    Tokens(#[from] tokens::StoreError),
}

/// The Bayes part of a verdict.
#[derive(Debug, Clone)]
pub struct BayesResult {
    /// Spam probability, 0..1.
    pub probability: f64,
    /// Score-band hits such as `BAYES_99`.
    pub hits: Vec<Hit>,
    /// Strongest tokens each way (token, spam probability), filled when explaining: spammiest first, then the
    /// hammiest.
    pub evidence: Vec<(String, f64)>,
    /// What the classifier alone says (by `spam_cutoff` / `ham_cutoff`).
    pub class: Class,
    /// The model used: a user name, or `None` for the global model.
    pub model: Option<String>,
}

/// Which class a message is trained as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainClass {
    Spam,
    Ham,
}

impl TrainClass {
    fn label(self) -> Label {
        match self {
            TrainClass::Spam => Label::Spam,
            TrainClass::Ham => Label::Ham,
        }
    }
}

/// What training one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOutcome {
    /// Counted into the class.
    Trained,
    /// Refused: this message (same digest) is already trained into this class.
    AlreadyTrained,
    /// It was trained into the other class; it was moved (untrained there, trained here).
    Retrained,
    /// Removed from the class (`untrain`).
    Untrained,
    /// `untrain` of a message that is not trained into this class: nothing changed.
    NotTrained,
}

/// The token store of a user's model (`None` = the global model).
pub fn model_path(data_dir: &Path, user: Option<&str>) -> PathBuf {
    match user {
        Some(u) => crate::store::user_dir(data_dir, u).join(tokens::TOKENS_FILE),
        None => data_dir.join("global").join(tokens::TOKENS_FILE),
    }
}

/// The identity of a message for "already trained": SHA-256 of its bytes with line ends normalised and the
/// `X-Spam-*` fields this proxy (or SpamAssassin) adds left out, so a tagged copy is the same message.
pub fn message_digest(raw: &[u8]) -> tokens::Digest {
    let raw = &raw[..raw.len().min(MAX_DIGEST_BYTES)];
    let mut h = Sha256::new();
    let mut in_header = true;
    let mut skipping = false;
    let mut first = true;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if first {
            first = false;
            if line.starts_with(b"From ") {
                continue;
            }
        }
        if in_header {
            if line.is_empty() {
                in_header = false;
            } else if line[0] == b' ' || line[0] == b'\t' {
                if skipping {
                    continue;
                }
            } else {
                skipping = line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"x-spam-");
                if skipping {
                    continue;
                }
            }
        }
        h.update(line);
        h.update(b"\n");
    }
    let full = h.finalize();
    let mut d = [0u8; tokens::DIGEST_LEN];
    d.copy_from_slice(&full[..tokens::DIGEST_LEN]);
    d
}

/// Robinson's f(w): the token's spam probability from its counts, pulled towards `x` with strength `s` while
/// evidence is thin.
fn robinson_f(c: tokens::Counts, nspam: u32, nham: u32, s: f64, x: f64) -> f64 {
    // Counts can exceed message totals only after untraining unrelated messages; clamp so ratios stay ≤ 1.
    let spam = f64::from(c.spam.min(nspam));
    let ham = f64::from(c.ham.min(nham));
    let sr = if nspam > 0 {
        spam / f64::from(nspam)
    } else {
        0.0
    };
    let hr = if nham > 0 { ham / f64::from(nham) } else { 0.0 };
    let p = if sr + hr > 0.0 { sr / (sr + hr) } else { x };
    let n = spam + ham;
    (s * x + n * p) / (s + n)
}

/// Maximum terms summed for one chi-square tail (convergence is geometric; this is a safety stop).
const MAX_SERIES_TERMS: usize = 20_000;

/// ln Σ exp(terms), without overflow or underflow.
fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// Both tails (P, Q) of the chi-square distribution with `dof` (even) degrees of freedom at `x2`. With m = x2/2 and
/// k = dof/2, Q = Σ_{i<k} Poisson(i; m) and P = Σ_{i≥k} Poisson(i; m); whichever is the small side is summed from its
/// own series in log space, so it keeps full precision instead of rounding to 0 (which would make messages tie).
fn chi2_tails(x2: f64, dof: usize) -> (f64, f64) {
    let m = x2 / 2.0;
    let k = (dof / 2).max(1);
    if m <= 0.0 || !m.is_finite() {
        return if m > 0.0 { (1.0, 0.0) } else { (0.0, 1.0) };
    }
    let ln_m = m.ln();
    if m < k as f64 {
        let ln_k_fact: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
        let mut t = -m + k as f64 * ln_m - ln_k_fact;
        let first = t;
        let mut terms = vec![t];
        for i in k + 1..k + MAX_SERIES_TERMS {
            t += ln_m - (i as f64).ln();
            terms.push(t);
            if t < first - 60.0 {
                break;
            }
        }
        let p = log_sum_exp(&terms).exp().min(1.0);
        (p, 1.0 - p)
    } else {
        let mut t = -m;
        let mut terms = Vec::with_capacity(k);
        terms.push(t);
        for i in 1..k {
            t += ln_m - (i as f64).ln();
            terms.push(t);
        }
        let q = log_sum_exp(&terms).exp().min(1.0);
        (1.0 - q, q)
    }
}

/// One token's contribution to a score.
#[derive(Debug, Clone, Copy)]
pub struct Clue {
    pub hash: u64,
    pub prob: f64,
}

/// Robinson/Fisher combining over the tokens found in `db`; returns the probability and the clues used.
pub fn robinson_score(db: &TokenDb, tokens: &[u64], cfg: &BayesConfig) -> (f64, Vec<Clue>) {
    let (nspam, nham) = (db.nspam(), db.nham());
    let mut clues: Vec<Clue> = Vec::with_capacity(tokens.len());
    for &t in tokens {
        let Some(c) = db.get(t) else {
            // An unseen token is exactly x, which min_deviation discards unless x itself is far from 0.5.
            if (cfg.unknown_token_prob - 0.5).abs() >= cfg.min_deviation {
                clues.push(Clue {
                    hash: t,
                    prob: cfg.unknown_token_prob,
                });
            }
            continue;
        };
        let prob = robinson_f(c, nspam, nham, cfg.robinson_s, cfg.unknown_token_prob);
        if (prob - 0.5).abs() >= cfg.min_deviation {
            clues.push(Clue { hash: t, prob });
        }
    }
    let strength = |c: &Clue| (c.prob - 0.5).abs();
    if clues.len() > cfg.max_discriminators && cfg.max_discriminators > 0 {
        clues.select_nth_unstable_by(cfg.max_discriminators - 1, |a, b| {
            strength(b)
                .total_cmp(&strength(a))
                .then(a.hash.cmp(&b.hash))
        });
        clues.truncate(cfg.max_discriminators);
    }
    if clues.is_empty() {
        return (0.5, clues);
    }
    // Fisher: H tests "the tokens are not hammy", S "not spammy"; the indicator is (1 + H - S) / 2 where both are
    // chi-square survival probabilities of -2 Σ ln(p).
    let (mut ln_h, mut ln_s) = (0.0f64, 0.0f64);
    for c in &clues {
        let p = c.prob.clamp(1e-9, 1.0 - 1e-9);
        ln_h += p.ln();
        ln_s += (1.0 - p).ln();
    }
    let dof = 2 * clues.len();
    let (p_h, q_h) = chi2_tails(-2.0 * ln_h, dof);
    let (p_s, q_s) = chi2_tails(-2.0 * ln_s, dof);
    // S = 1 - q_s ("spammy"), H = 1 - q_h ("hammy"); (S - H + 1) / 2 = (q_h + p_s) / 2 = 1 - (p_h + q_s) / 2.
    // The form built from the small quantities keeps the precision at either end.
    let low = (q_h + p_s) / 2.0;
    let prob = if low < 0.5 {
        low
    } else {
        1.0 - (p_h + q_s) / 2.0
    };
    (prob.clamp(0.0, 1.0), clues)
}

/// The `bayespam` crate's score for these tokens with the store's counts. bayespam keeps its model as a private
/// map rebuilt through serde, so the map holds just this message's tokens plus one filler entry (a key no word can
/// match) that makes its per-class totals equal the store's.
pub fn bayespam_score(db: &TokenDb, tokens: &[u64]) -> f64 {
    let mut table = serde_json::Map::with_capacity(tokens.len() + 1);
    let mut words = String::with_capacity(tokens.len() * 18);
    let (mut used_spam, mut used_ham) = (0u64, 0u64);
    for &t in tokens {
        let key = format!("t{t:016x}");
        words.push_str(&key);
        words.push(' ');
        if let Some(c) = db.get(t) {
            used_spam += u64::from(c.spam);
            used_ham += u64::from(c.ham);
            table.insert(key, serde_json::json!({"spam": c.spam, "ham": c.ham}));
        }
    }
    let filler_spam = u32::try_from(db.sum_spam().saturating_sub(used_spam)).unwrap_or(u32::MAX);
    let filler_ham = u32::try_from(db.sum_ham().saturating_sub(used_ham)).unwrap_or(u32::MAX);
    table.insert(
        " totals".into(),
        serde_json::json!({"spam": filler_spam, "ham": filler_ham}),
    );
    let model = serde_json::json!({ "token_table": table });
    match serde_json::from_value::<bayespam::classifier::Classifier>(model) {
        Ok(c) => f64::from(c.score(&words)).clamp(0.0, 1.0),
        Err(_) => 0.5,
    }
}

/// The probability bayespam's per-token rule would give (for `--explain` with that engine).
fn graham_prob(c: tokens::Counts, sum_spam: u64, sum_ham: u64) -> f64 {
    if c.spam > 0 && c.ham == 0 {
        0.99
    } else if c.ham > 0 && c.spam == 0 {
        0.01
    } else if sum_spam > 0 && sum_ham > 0 {
        let h = f64::from(c.ham) / sum_ham as f64;
        let s = f64::from(c.spam) / sum_spam as f64;
        (s / (h + s)).max(0.01)
    } else {
        0.5
    }
}

/// A model's store and whose it is (`None` = global).
type ModelChoice = (Arc<TokenDb>, Option<String>);

struct Pending {
    digest: tokens::Digest,
    tokens: Vec<u64>,
    label: Label,
}

/// Shared by every session: opens each model's store lazily, keeps it mapped, and reopens it when another process
/// (e.g. `popguard train`) replaced the file.
pub struct BayesScorer {
    config: BayesConfig,
    data_dir: PathBuf,
    scan_limit: usize,
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
    pub fn new(config: &Config) -> Result<BayesScorer, BayesError> {
        Ok(BayesScorer {
            config: config.bayes.clone(),
            data_dir: config.data_dir(),
            scan_limit: config.filter.scan_limit,
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
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((db, used)) = stores.get_mut(path)
            && !db.changed_on_disk()
        {
            *used = tick;
            return Ok(db.clone());
        }
        let db = Arc::new(TokenDb::open(path)?);
        if stores.len() >= MAX_OPEN_STORES
            && !stores.contains_key(path)
            && let Some(oldest) = stores
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
        {
            stores.remove(&oldest);
        }
        stores.insert(path.to_owned(), (db.clone(), tick));
        Ok(db)
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

    /// None when the user (or the global model) has too little training to say anything.
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
            self.autolearn(u, message, tokens.hashes, result.probability)?;
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

    fn autolearn(
        &self,
        user: &str,
        message: &[u8],
        tokens: Vec<u64>,
        p: f64,
    ) -> Result<(), BayesError> {
        let label = match (self.config.autolearn_spam, self.config.autolearn_ham) {
            (Some(t), _) if p >= t => Label::Spam,
            (_, Some(t)) if p < t => Label::Ham,
            _ => return Ok(()),
        };
        let path = model_path(&self.data_dir, Some(user));
        let batch = {
            let mut pending = self.autolearn.lock().unwrap_or_else(|e| e.into_inner());
            let list = pending.entry(path.clone()).or_default();
            list.push(Pending {
                digest: message_digest(message),
                tokens,
                label,
            });
            if list.len() < AUTOLEARN_BATCH {
                return Ok(());
            }
            std::mem::take(list)
        };
        self.write_pending(&path, batch)
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

    /// Writes auto-learned messages still waiting for a full batch.
    pub fn flush(&self) -> Result<(), BayesError> {
        let all: Vec<(PathBuf, Vec<Pending>)> = {
            let mut pending = self.autolearn.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        for (path, batch) in all {
            if !batch.is_empty() {
                self.write_pending(&path, batch)?;
            }
        }
        Ok(())
    }
}

impl Drop for BayesScorer {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("bayes: auto-learned messages not saved: {e}");
        }
    }
}

/// Trains many messages into one model under a single lock: `popguard train`, benchmarks, corrections.
pub struct Trainer {
    writer: TokenWriter,
    tokenizer: Tokenizer,
    max_tokens: usize,
    scan_limit: usize,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("store", self.writer.base())
            .finish()
    }
}

impl Trainer {
    /// Opens `user`'s model (`None` = global) for writing; blocks while another writer holds it.
    pub fn open(config: &Config, user: Option<&str>) -> Result<Trainer, BayesError> {
        Trainer::open_path(
            &model_path(&config.data_dir(), user),
            &config.bayes,
            config.filter.scan_limit,
        )
    }

    /// Opens the store at `path` for writing.
    pub fn open_path(
        path: &Path,
        config: &BayesConfig,
        scan_limit: usize,
    ) -> Result<Trainer, BayesError> {
        let writer = TokenWriter::open(path, config.prune_policy())?;
        tokens::remove_stale_temps(path);
        Ok(Trainer {
            writer,
            tokenizer: Tokenizer::new(),
            max_tokens: config.max_tokens_per_message,
            scan_limit: scan_limit.max(1),
        })
    }

    /// Trains (or untrains) one message; duplicates are refused by digest. Changes are written by `commit`
    /// (and automatically when very many are pending).
    pub fn train(
        &mut self,
        message: &[u8],
        class: TrainClass,
        untrain: bool,
    ) -> Result<TrainOutcome, BayesError> {
        let digest = message_digest(message);
        let label = class.label();
        let was = self.writer.trained_as(&digest);
        let outcome = match (untrain, was) {
            (false, Some(l)) if l == label => return Ok(TrainOutcome::AlreadyTrained),
            (true, Some(l)) if l == label => TrainOutcome::Untrained,
            (true, _) => return Ok(TrainOutcome::NotTrained),
            (false, Some(_)) => TrainOutcome::Retrained,
            (false, None) => TrainOutcome::Trained,
        };
        let scanned = &message[..message.len().min(self.scan_limit)];
        let tokens = self.tokenizer.tokenize(scanned, self.max_tokens, false);
        if outcome == TrainOutcome::Retrained {
            let other = match label {
                Label::Spam => Label::Ham,
                Label::Ham => Label::Spam,
            };
            self.writer.apply(&tokens.hashes, other, &digest, true);
        }
        self.writer.apply(&tokens.hashes, label, &digest, untrain);
        if self.writer.pending_tokens() > MAX_PENDING_TOKENS {
            self.writer.commit()?;
        }
        Ok(outcome)
    }

    /// Trains a message's tokens directly (already tokenized by the caller) with a caller-chosen digest.
    pub fn train_tokens(
        &mut self,
        tokens: &[u64],
        digest: &tokens::Digest,
        class: TrainClass,
    ) -> TrainOutcome {
        if self.writer.trained_as(digest).is_some() {
            return TrainOutcome::AlreadyTrained;
        }
        self.writer.apply(tokens, class.label(), digest, false);
        TrainOutcome::Trained
    }

    /// Prune stale rare tokens on the next commit.
    pub fn prune(&mut self) {
        self.writer.prune_on_commit();
    }

    /// Writes pending changes (crash-safe); the trainer stays usable.
    pub fn commit(&mut self) -> Result<tokens::CommitStats, BayesError> {
        Ok(self.writer.commit()?)
    }

    /// Trained (spam, ham) messages, including uncommitted changes.
    pub fn message_counts(&self) -> (u32, u32) {
        self.writer.message_counts()
    }

    /// The store as of the last commit.
    pub fn store(&self) -> &TokenDb {
        self.writer.base()
    }
}

/// Trains one message into `user`'s model and writes it at once: what `popguard quarantine release` calls to
/// record a correction (class `Ham`).
pub fn train_message(
    config: &Config,
    user: &str,
    message: &[u8],
    class: TrainClass,
    untrain: bool,
) -> Result<TrainOutcome, BayesError> {
    train_message_for(config, Some(user), message, class, untrain)
}

/// Like [`train_message`], for a user or (`None`) the global model.
pub fn train_message_for(
    config: &Config,
    user: Option<&str>,
    message: &[u8],
    class: TrainClass,
    untrain: bool,
) -> Result<TrainOutcome, BayesError> {
    let mut t = Trainer::open(config, user)?;
    let outcome = t.train(message, class, untrain)?;
    t.commit()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config {
            data_dir: Some(dir.to_owned()),
            ..Config::default()
        };
        c.bayes.min_spam = 3;
        c.bayes.min_ham = 3;
        c
    }

    fn spam(i: usize) -> String {
        let offers = [
            "cheap pills",
            "casino bonus",
            "viagra discount",
            "mortgage rates",
            "lottery winner",
        ];
        format!(
            "From: promo{i}@deals{i}.example.biz\nTo: undisclosed-recipients:;\nSubject: Amazing offer {i} FREE!!!\n\
             Content-Type: text/html\n\n<html><body><font size=1 color=#ffffff>xq{i}</font>\
             <p>Act now for {} and unbeatable savings! Click <a href=\"http://win{i}.example.biz/claim?id={i}\">here</a>\
             to claim your guaranteed prize money. Limited offer, order today, remove me from list.</p></body></html>\n",
            offers[i % offers.len()]
        )
    }

    fn ham(i: usize) -> String {
        let topics = [
            "the build script",
            "tomorrow's meeting",
            "the patch review",
            "release notes",
            "the kernel bug",
        ];
        format!(
            "From: Alice Example <alice@work.example.org>\nTo: bob@work.example.org\nSubject: Re: question about {}\n\
             In-Reply-To: <{i}@work.example.org>\nContent-Type: text/plain\n\nHi Bob,\n\nI looked at {} again and \
             I think the problem is in the configuration file we discussed on Monday. Could you check the logs \
             and send me the output? Thanks, Alice\n",
            topics[i % topics.len()],
            topics[(i + 2) % topics.len()]
        )
    }

    #[test]
    fn chi2_tails_match_known_values() {
        // Q(x2=2, dof=2) = e^-1.
        let (p, q) = chi2_tails(2.0, 2);
        assert!((q - (-1.0f64).exp()).abs() < 1e-12 && (p + q - 1.0).abs() < 1e-12);
        // Q(x2, 4) = e^-m (1 + m), m = x2/2, on both sides of m = k.
        for m in [0.5f64, 1.5, 3.0, 30.0] {
            let (p, q) = chi2_tails(2.0 * m, 4);
            let want = (-m).exp() * (1.0 + m);
            assert!((q - want).abs() < 1e-12, "{m}: {q} vs {want}");
            assert!((p - (1.0 - want)).abs() < 1e-12);
        }
        // The small side keeps its precision: P(x2 = 0.02, dof = 20) = e^-m Σ_{i≥10} m^i / i! is ~3e-27, not 0.
        let (p, _) = chi2_tails(0.02, 20);
        let m = 0.01f64;
        let mut term = (-m).exp() * m.powi(10) / 3_628_800.0;
        let mut want = 0.0;
        for i in 11..20 {
            want += term;
            term *= m / f64::from(i);
        }
        assert!((p / want - 1.0).abs() < 1e-9, "{p} vs {want}");
        assert_eq!(chi2_tails(0.0, 10), (0.0, 1.0));
        let (p, q) = chi2_tails(1e6, 300);
        assert!(p == 1.0 && q >= 0.0);
    }

    #[test]
    fn bands_pick_the_highest_min() {
        let c = BayesConfig::default();
        assert_eq!(c.band_for(0.0).map(|b| b.name.as_str()), Some("BAYES_00"));
        assert_eq!(c.band_for(0.995).map(|b| b.name.as_str()), Some("BAYES_99"));
        assert_eq!(c.band_for(1.0).map(|b| b.name.as_str()), Some("BAYES_999"));
        assert_eq!(c.band_for(0.5).map(|b| b.name.as_str()), Some("BAYES_50"));
        assert_eq!(c.class_of(0.995), Class::Spam);
        assert_eq!(c.class_of(0.95), Class::Unsure);
        assert_eq!(c.class_of(0.5), Class::Unsure);
        assert_eq!(c.class_of(0.1), Class::Ham);
    }

    #[test]
    fn digest_ignores_line_ends_and_spam_tags() {
        let a = message_digest(b"Subject: x\nFrom: y\n\nbody\n");
        let b = message_digest(
            b"Subject: x\r\nX-Spam-Status: Yes,\r\n  tests=A\r\nFrom: y\r\n\r\nbody\r\n",
        );
        assert_eq!(a, b);
        assert_ne!(a, message_digest(b"Subject: x\nFrom: y\n\nbody!\n"));
    }

    #[test]
    fn classifier_separates_a_small_corpus_with_both_engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        for i in 0..30 {
            assert_eq!(
                train_message(&cfg, "u", spam(i).as_bytes(), TrainClass::Spam, false).unwrap(),
                TrainOutcome::Trained
            );
            train_message(&cfg, "u", ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
        }
        for engine in [Engine::Robinson, Engine::Bayespam] {
            cfg.bayes.engine = engine;
            let scorer = BayesScorer::new(&cfg).unwrap();
            for i in 100..110 {
                let s = scorer
                    .score(Some("u"), spam(i).as_bytes(), true)
                    .unwrap()
                    .unwrap();
                let h = scorer
                    .score(Some("u"), ham(i).as_bytes(), false)
                    .unwrap()
                    .unwrap();
                assert!(
                    s.probability > 0.9,
                    "{engine:?} spam {i}: {}",
                    s.probability
                );
                assert!(h.probability < 0.1, "{engine:?} ham {i}: {}", h.probability);
                assert!(!s.evidence.is_empty());
                assert_eq!(s.model.as_deref(), Some("u"));
            }
        }
        cfg.bayes.engine = Engine::Robinson;
        let scorer = BayesScorer::new(&cfg).unwrap();
        let r = scorer
            .score(Some("u"), spam(200).as_bytes(), true)
            .unwrap()
            .unwrap();
        assert_eq!(r.class, Class::Spam);
        assert!(r.hits[0].name.starts_with("BAYES_9"), "{:?}", r.hits);
        assert!(r.evidence[0].1 > 0.5 && r.evidence.last().unwrap().1 <= r.evidence[0].1);
    }

    #[test]
    fn too_little_training_gives_none_then_global_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let scorer = BayesScorer::new(&cfg).unwrap();
        assert!(
            scorer
                .score(Some("u"), spam(1).as_bytes(), false)
                .unwrap()
                .is_none()
        );
        assert!(
            scorer
                .score(None, spam(1).as_bytes(), false)
                .unwrap()
                .is_none()
        );
        for i in 0..5 {
            train_message_for(&cfg, None, spam(i).as_bytes(), TrainClass::Spam, false).unwrap();
            train_message_for(&cfg, None, ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
        }
        // The scorer notices the new file without a restart.
        let r = scorer
            .score(Some("u"), spam(50).as_bytes(), false)
            .unwrap()
            .unwrap();
        assert_eq!(r.model, None);
        cfg.bayes.fallback_to_global = false;
        let strict = BayesScorer::new(&cfg).unwrap();
        assert!(
            strict
                .score(Some("u"), spam(50).as_bytes(), false)
                .unwrap()
                .is_none()
        );
        assert!(
            strict
                .score(None, spam(50).as_bytes(), false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn duplicates_untrain_and_retrain() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let m = spam(1);
        let t = |class, untrain| train_message(&cfg, "u", m.as_bytes(), class, untrain).unwrap();
        assert_eq!(t(TrainClass::Spam, false), TrainOutcome::Trained);
        assert_eq!(t(TrainClass::Spam, false), TrainOutcome::AlreadyTrained);
        assert_eq!(t(TrainClass::Ham, true), TrainOutcome::NotTrained);
        assert_eq!(t(TrainClass::Ham, false), TrainOutcome::Retrained);
        let db = TokenDb::open(&model_path(dir.path(), Some("u"))).unwrap();
        assert_eq!((db.nspam(), db.nham()), (0, 1));
        assert_eq!(t(TrainClass::Ham, true), TrainOutcome::Untrained);
        let db = TokenDb::open(&model_path(dir.path(), Some("u"))).unwrap();
        assert_eq!((db.nspam(), db.nham(), db.len()), (0, 0, 0));
    }

    #[test]
    fn autolearn_is_off_by_default_and_batches_when_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        for i in 0..5 {
            train_message(&cfg, "u", spam(i).as_bytes(), TrainClass::Spam, false).unwrap();
            train_message(&cfg, "u", ham(i).as_bytes(), TrainClass::Ham, false).unwrap();
        }
        let path = model_path(dir.path(), Some("u"));
        {
            let scorer = BayesScorer::new(&cfg).unwrap();
            for i in 10..20 {
                scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
            }
        }
        assert_eq!(TokenDb::open(&path).unwrap().nspam(), 5);
        cfg.bayes.autolearn_spam = Some(0.9);
        {
            let scorer = BayesScorer::new(&cfg).unwrap();
            for i in 10..20 {
                scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
                scorer.score(Some("u"), spam(i).as_bytes(), false).unwrap();
            }
        }
        assert_eq!(
            TokenDb::open(&path).unwrap().nspam(),
            15,
            "flushed on drop, each message once"
        );
    }

    #[test]
    fn scorer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<BayesScorer>();
    }
}
