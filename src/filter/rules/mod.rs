//! Regex rules from TOML files (default set plus per-user files), compiled once into `RegexSet`s.
//!
//! The engine is loaded once and shared by every session: global rules live in one layer of per-target sets;
//! each user with a rule file gets a small extra layer (their added rules) plus score overrides and disabled
//! rules, all resolved at load time, so `evaluate` is a few set scans and a table walk. The file format is
//! described in `file`; meta-rule expressions in `meta`.

mod builtin;
mod compile;
pub mod file;
mod loader;
mod meta;
mod prefilter;
mod sender;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Hit;
use crate::message::MessageView;
use file::Target;
use loader::Loader;
use sender::SenderGlob;

/// Rules directory used when `rules.dir` is not set, relative to the working directory. When it does not
/// exist either, the default set compiled into the binary is used, so `popguard` filters from any directory.
pub const DEFAULT_RULES_DIR: &str = "rules";
/// Sub-directory of the rules directory holding per-user files, `users/NAME.toml`.
pub const USERS_SUBDIR: &str = "users";
/// Score of a whitelisted sender: large enough to outweigh any rule combination, so a listed sender is never
/// hidden, while Bayes and blocklists still show in `X-Spam-Status` for diagnosis.
pub const DEFAULT_WHITELIST_SCORE: f64 = -100.0;
/// Score of a blacklisted sender.
pub const DEFAULT_BLACKLIST_SCORE: f64 = 100.0;
/// Rule files read from one directory; more is certainly a wrong path (a maildir, a home directory).
pub const MAX_RULE_FILES: usize = 1000;

/// Characters of a sender address quoted in a hit description (RFC 5321 §4.5.3.1.3 caps a path at 256).
const MAX_SHOWN_ADDRESS: usize = 256;

/// Names the engine reports itself; rule files may not define them.
const WHITELIST_FROM: &str = "WHITELIST_FROM";
const BLACKLIST_FROM: &str = "BLACKLIST_FROM";
const USER_WHITELIST: &str = "USER_WHITELIST";
const USER_BLACKLIST: &str = "USER_BLACKLIST";
const RESERVED_PREFIXES: [&str; 2] = ["BAYES_", "DNSBL_"];

/// `[rules]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of rule files: every `*.toml` in it (in name order) plus per-user files in `users/NAME.toml`.
    /// Default: `rules/` in the working directory when it exists, else the default set built into popguard.
    pub dir: Option<PathBuf>,
    /// Senders whose mail is never spam: globs over the From address (`*@example.org`, `boss@corp.com`;
    /// an entry without `@` is a domain). Adds `WHITELIST_FROM` with `whitelist_score`. The From field is
    /// easily forged: list only senders whose mail you would not mind a spammer imitating.
    pub whitelist_from: Vec<String>,
    /// Senders whose mail is always spam (same syntax). Adds `BLACKLIST_FROM` with `blacklist_score`.
    pub blacklist_from: Vec<String>,
    /// Score of `WHITELIST_FROM` and `USER_WHITELIST` (default -100).
    pub whitelist_score: f64,
    /// Score of `BLACKLIST_FROM` and `USER_BLACKLIST` (default 100).
    pub blacklist_score: f64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: None,
            whitelist_from: Vec::new(),
            blacklist_from: Vec::new(),
            whitelist_score: DEFAULT_WHITELIST_SCORE,
            blacklist_score: DEFAULT_BLACKLIST_SCORE,
        }
    }
}

/// Everything the rule engine loads, resolved by the config layer: the `[rules]` section plus the per-user rule
/// files named in `[users.NAME] rules = PATH`.
#[derive(Debug, Clone, Default)]
pub struct RulesSettings {
    pub config: RulesConfig,
    /// `(user, file)` in user-name order; each replaces that user's `RULES_DIR/users/NAME.toml`.
    pub user_files: Vec<(String, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{first} (and {more} more; run `popguard rules check` to list them all)")]
    Many { first: Box<RulesError>, more: usize },
}

/// What `rules check` and `rules list` report about a loaded rule set.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Global rule files read, in load order.
    pub files: Vec<String>,
    /// `(user, file)` for every per-user file.
    pub user_files: Vec<(String, String)>,
    /// Rules in the global set (helpers included) and how many of them are meta rules.
    pub rules: usize,
    pub meta_rules: usize,
    /// Rules added by all user files together.
    pub user_rules: usize,
    /// `users/*.toml.sample` files validated by `rules check` (they apply to nobody).
    pub sample_files: Vec<String>,
}

/// One rule for `rules list`.
#[derive(Debug, Clone)]
pub struct Listing {
    pub name: String,
    pub score: f64,
    /// `subject`, `header:x-mailer`, ... or `meta`.
    pub target: String,
    pub description: String,
    pub file: String,
    pub line: usize,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
struct RuleInfo {
    name: String,
    score: f64,
    description: String,
    target: Option<Target>,
    file: String,
    line: usize,
}

impl RuleInfo {
    /// Helper rules (`__NAME`) feed meta rules and are never reported.
    fn helper(&self) -> bool {
        self.name.starts_with("__")
    }
}

/// Compiled rules of one layer (the global set, or one user's additions).
#[derive(Default)]
struct Layer {
    patterns: compile::Compiled,
    /// Meta rules in dependency order.
    metas: Vec<(usize, meta::Expr)>,
}

struct UserRules {
    /// Rules this user added; their indices start after the global rules.
    rules: Vec<RuleInfo>,
    layer: Layer,
    /// Score per rule index (global and own), overrides applied.
    scores: Vec<f64>,
    enabled: Vec<bool>,
    whitelist: Vec<SenderGlob>,
    blacklist: Vec<SenderGlob>,
}

/// The loaded rule set, shared by all sessions.
pub struct RuleEngine {
    rules: Vec<RuleInfo>,
    enabled: Vec<bool>,
    layer: Layer,
    whitelist: Vec<SenderGlob>,
    blacklist: Vec<SenderGlob>,
    whitelist_score: f64,
    blacklist_score: f64,
    users: HashMap<String, UserRules>,
    summary: Summary,
}

impl RuleEngine {
    /// Loads and compiles the global rules, every per-user file and the sender lists. Any error in any file
    /// fails the load (a proxy silently running without a broken rule file would let its spam through).
    pub fn load(settings: &RulesSettings) -> Result<RuleEngine, RulesError> {
        let (engine, mut errors) = Loader::default().run(settings);
        match errors.len() {
            0 => Ok(engine),
            1 => Err(errors.remove(0)),
            n => Err(RulesError::Many {
                first: Box::new(errors.remove(0)),
                more: n - 1,
            }),
        }
    }

    /// Loads everything and returns every error found (for `popguard rules check`).
    pub fn check(settings: &RulesSettings) -> Result<Summary, Vec<RulesError>> {
        let loader = Loader::checking_samples();
        match loader.run(settings) {
            (e, errors) if errors.is_empty() => Ok(e.summary),
            (_, errors) => Err(errors),
        }
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The global rules, in load order (for `popguard rules list`).
    pub fn list(&self) -> Vec<Listing> {
        self.rules
            .iter()
            .zip(&self.enabled)
            .map(|(r, &enabled)| Listing {
                name: r.name.clone(),
                score: r.score,
                target: r
                    .target
                    .as_ref()
                    .map_or_else(|| "meta".to_owned(), |t| t.to_string()),
                description: r.description.clone(),
                file: r.file.clone(),
                line: r.line,
                enabled,
            })
            .collect()
    }

    /// Scores a parsed message for `user` (None: global rules only). Hits come in rule order, sender-list
    /// hits first; helper rules and rules whose effective score is 0 are not reported.
    pub fn evaluate(&self, user: Option<&str>, view: &MessageView) -> Vec<Hit> {
        let u = user.and_then(|name| self.users.get(name));
        let total = self.rules.len() + u.map_or(0, |u| u.rules.len());
        let mut hit = vec![false; total];
        let mut scratch = compile::Scratch::default();
        self.layer.patterns.run(view, &mut scratch, &mut hit);
        if let Some(u) = u {
            u.layer.patterns.run(view, &mut scratch, &mut hit);
        }
        let enabled = u.map_or(&self.enabled, |u| &u.enabled);
        for (h, &on) in hit.iter_mut().zip(enabled) {
            *h &= on;
        }
        let metas = self
            .layer
            .metas
            .iter()
            .chain(u.map_or(&[][..], |u| &u.layer.metas[..]));
        for (i, expr) in metas {
            let value = enabled[*i] && expr.eval(&hit) != 0;
            hit[*i] = value;
        }

        let mut hits = Vec::new();
        let from = view.from_address.as_str();
        let sender_hit =
            |list: &[SenderGlob]| !from.is_empty() && list.iter().any(|g| g.matches(from));
        // The address comes from the message: keep it printable and short, it may end up in a header.
        let shown: String = from
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_SHOWN_ADDRESS)
            .collect();
        let mut push_sender = |name: &str, score: f64, what: &str| {
            hits.push(Hit {
                name: name.to_owned(),
                score,
                description: format!("sender {shown} is {what}"),
            });
        };
        if sender_hit(&self.whitelist) {
            push_sender(WHITELIST_FROM, self.whitelist_score, "on the whitelist");
        }
        if sender_hit(&self.blacklist) {
            push_sender(BLACKLIST_FROM, self.blacklist_score, "on the blacklist");
        }
        if let Some(u) = u {
            if sender_hit(&u.whitelist) {
                push_sender(
                    USER_WHITELIST,
                    self.whitelist_score,
                    "on the user's whitelist",
                );
            }
            if sender_hit(&u.blacklist) {
                push_sender(
                    USER_BLACKLIST,
                    self.blacklist_score,
                    "on the user's blacklist",
                );
            }
        }

        let infos = self.rules.iter().chain(u.map_or(&[][..], |u| &u.rules[..]));
        for (i, info) in infos.enumerate() {
            if !hit[i] || info.helper() {
                continue;
            }
            let score = u.map_or(info.score, |u| u.scores[i]);
            if score != 0.0 {
                hits.push(Hit {
                    name: info.name.clone(),
                    score,
                    description: info.description.clone(),
                });
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests;
