//! `[bayes]` in the config file, and the settings a scorer or trainer is built from.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Class, store, tokenize};
use store::PrunePolicy;

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
            prune_after_days: store::DEFAULT_PRUNE_AFTER_DAYS,
            prune_max_count: store::DEFAULT_PRUNE_MAX_COUNT,
            autolearn_spam: None,
            autolearn_ham: None,
            train_on_release: true,
            bands: default_bands(),
        }
    }
}

impl BayesConfig {
    pub(super) fn prune_policy(&self) -> PrunePolicy {
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

/// Everything a scorer or trainer needs, resolved by the config layer.
#[derive(Debug, Clone)]
pub struct BayesSettings {
    /// The `[bayes]` section.
    pub config: BayesConfig,
    /// Where the models live (`data_dir` in the config, or the platform default).
    pub data_dir: PathBuf,
    /// Bytes of each message that are tokenized (`filter.scan_limit`).
    pub scan_limit: usize,
    /// The Subject prefix the proxy adds to spam (`proxy.subject_prefix`): training digests ignore it, so a tagged
    /// copy is the same message.
    pub subject_prefix: String,
}

impl BayesSettings {
    /// Default settings for models under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> BayesSettings {
        BayesSettings {
            config: BayesConfig::default(),
            data_dir: data_dir.into(),
            scan_limit: super::super::DEFAULT_SCAN_LIMIT,
            subject_prefix: super::DEFAULT_SUBJECT_PREFIX.to_owned(),
        }
    }
}
