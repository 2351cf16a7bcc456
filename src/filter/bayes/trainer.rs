//! Training: many messages into one model under the writers' lock (`popguard train`, corrections, benchmarks).

use std::path::Path;

use super::store::{self, Label, TokenDb, TokenWriter};
use super::tokenize::Tokenizer;
use super::*;

/// Trains many messages into one model under a single lock: `popguard train`, benchmarks, corrections.
pub struct Trainer {
    writer: TokenWriter,
    subject_prefix: String,
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
    pub fn open(settings: &BayesSettings, user: Option<&str>) -> Result<Trainer, BayesError> {
        let mut t = Trainer::open_path(
            &model_path(&settings.data_dir, user),
            &settings.config,
            settings.scan_limit,
        )?;
        t.subject_prefix.clone_from(&settings.subject_prefix);
        Ok(t)
    }

    /// Opens the store at `path` for writing.
    pub fn open_path(
        path: &Path,
        config: &BayesConfig,
        scan_limit: usize,
    ) -> Result<Trainer, BayesError> {
        let writer = TokenWriter::open(path, config.prune_policy())?;
        store::remove_stale_temps(path);
        Ok(Trainer {
            writer,
            subject_prefix: super::DEFAULT_SUBJECT_PREFIX.to_owned(),
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
        let digest = message_digest(message, &self.subject_prefix);
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
        digest: &store::Digest,
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
    pub fn commit(&mut self) -> Result<store::CommitStats, BayesError> {
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
    settings: &BayesSettings,
    user: &str,
    message: &[u8],
    class: TrainClass,
    untrain: bool,
) -> Result<TrainOutcome, BayesError> {
    train_message_for(settings, Some(user), message, class, untrain)
}

/// Like [`train_message`], for a user or (`None`) the global model.
pub fn train_message_for(
    settings: &BayesSettings,
    user: Option<&str>,
    message: &[u8],
    class: TrainClass,
    untrain: bool,
) -> Result<TrainOutcome, BayesError> {
    let mut t = Trainer::open(settings, user)?;
    let outcome = t.train(message, class, untrain)?;
    t.commit()?;
    Ok(outcome)
}
