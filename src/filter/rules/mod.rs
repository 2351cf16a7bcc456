//! Regex rules from TOML files (default set plus per-user files), compiled once into `RegexSet`s.
//!
//! SKELETON: signatures are the contract used by `filter::Filter`; the rules work fills them in.

use serde::Deserialize;

use super::Hit;
use crate::config::Config;
use crate::message::MessageView;

/// `[rules]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of rule files (default `rules/`).
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
}

pub struct RuleEngine {}

impl RuleEngine {
    pub fn load(_config: &Config) -> Result<RuleEngine, RulesError> {
        Ok(RuleEngine {})
    }

    pub fn evaluate(&self, _user: Option<&str>, _view: &MessageView) -> Vec<Hit> {
        Vec::new()
    }
}
