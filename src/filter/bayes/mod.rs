//! The Bayesian classifier: a mail tokenizer, per-user token stores, and the scoring engines.
//!
//! SKELETON: signatures are the contract used by `filter::Filter`; the Bayes work fills them in.

use serde::Deserialize;

use super::Hit;
use crate::config::Config;

/// `[bayes]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayesConfig {}

#[derive(Debug, thiserror::Error)]
pub enum BayesError {
    #[error("token store {path}: {reason}")]
    Store { path: String, reason: String },
}

/// The Bayes part of a verdict.
#[derive(Debug, Clone)]
pub struct BayesResult {
    /// Spam probability, 0..1.
    pub probability: f64,
    /// Score-band hits such as `BAYES_99`.
    pub hits: Vec<Hit>,
    /// Strongest tokens each way (token, spam probability), filled when explaining.
    pub evidence: Vec<(String, f64)>,
}

pub struct BayesScorer {}

impl BayesScorer {
    pub fn new(_config: &Config) -> Result<BayesScorer, BayesError> {
        Ok(BayesScorer {})
    }

    /// None when the user (or the global model) has too little training to say anything.
    pub fn score(
        &self,
        _user: Option<&str>,
        _message: &[u8],
        _explain: bool,
    ) -> Result<Option<BayesResult>, BayesError> {
        Ok(None)
    }
}
