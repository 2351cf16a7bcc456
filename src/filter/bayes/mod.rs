//! The Bayesian classifier: configuration, the scoring engines over per-user token stores, and the training API.
//!
//! Two engines share one tokenizer ([`tokenize`]) and one store ([`store`], the model's file format):
//! - `robinson` (default): Gary Robinson's f(w) per token, the strongest tokens combined with Fisher's inverse
//!   chi-square, as SpamBayes and bogofilter do; it gives a calibrated probability with a real "unsure" middle.
//! - `bayespam`: the `bayespam` crate's Graham-style scoring, fed with the same tokens and counts.
//!
//! Models: each user has one under `fsutil::user_dir(data_dir, user)/tokens.db`; a global model lives in
//! `data_dir/global/tokens.db` and serves `user = None` (e.g. `popguard score` without `--user`) and, when
//! `fallback_to_global` is on, users whose own model is not trained enough yet. The probability becomes part of the
//! total score through score bands (`BAYES_00` .. `BAYES_99`), like SpamAssassin's.

mod config;
mod digest;
mod engine;
mod scorer;
pub mod source;
pub mod store;
pub mod tokenize;
mod trainer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use super::{Class, Hit};
use store::Label;

pub use config::{Band, BayesConfig, BayesSettings, Engine, default_bands};
pub use digest::message_digest;
pub use engine::{Clue, bayespam_score, robinson_score};
pub use scorer::BayesScorer;
pub use trainer::{Trainer, train_message, train_message_for};

/// Strongest tokens listed each way by `--explain`.
pub const EXPLAIN_TOKENS: usize = 10;
/// Token stores kept open at once by a scorer (one per active user); the least recently used is closed beyond it.
pub const MAX_OPEN_STORES: usize = 256;
/// A batch trainer writes its changes once this many distinct tokens are pending (bounds its memory).
pub const MAX_PENDING_TOKENS: usize = 2_000_000;
/// Auto-learned messages are written in batches of this many (a write rewrites the whole store).
pub const AUTOLEARN_BATCH: usize = 25;
/// Auto-learned messages queued per model while nobody writes them: beyond this, new ones are not learned (each
/// holds up to `max_tokens_per_message` hashes, so this bounds the queue's memory).
pub const MAX_AUTOLEARN_QUEUE: usize = 40 * AUTOLEARN_BATCH;
/// The Subject prefix training digests ignore when the settings name none: `proxy.subject_prefix`'s default (the
/// filter cannot see the proxy's configuration; the config layer passes the configured one).
pub const DEFAULT_SUBJECT_PREFIX: &str = "[SPAM]";
/// Bytes of a message hashed into its training digest (whole messages; this only stops absurd inputs).
pub const MAX_DIGEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BayesError {
    #[error("token store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error(transparent)]
    Tokens(#[from] store::StoreError),
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
        Some(u) => crate::fsutil::user_dir(data_dir, u).join(store::TOKENS_FILE),
        None => data_dir.join("global").join(store::TOKENS_FILE),
    }
}
