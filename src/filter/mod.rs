//! The spam filter: rules, Bayes and DNS blocklists combined into one verdict. Bytes in, verdict out; no sockets
//! except the DNS resolver behind `dnsbl`.
//!
//! It knows nothing of the proxy or the config file: [`FilterSettings`] holds everything it needs, resolved by the
//! config layer (`Config::filter_settings`), so it can be built, tested and fuzzed on its own.

pub mod bayes;
pub mod dnsbl;
pub mod rules;
pub mod verdict;

use serde::Deserialize;

pub use verdict::{Class, Hit, Verdict};

use crate::message::MessageView;

/// Default score at or above which a message is spam (SpamAssassin's familiar 5.0).
pub const DEFAULT_SPAM_THRESHOLD: f64 = 5.0;
/// Default score at or above which a message is "unsure" (shown, tagged only in `X-Spam-Status`).
pub const DEFAULT_UNSURE_THRESHOLD: f64 = 3.0;
/// Bytes of a message that are scored; the rest is relayed unscored. 256 KiB holds the text of nearly all mail
/// while bounding per-message work and memory.
pub const DEFAULT_SCAN_LIMIT: usize = 256 * 1024;

/// A message scored by everything but the network (see [`Filter::score_local`]), with the DNS lookups still to
/// make.
#[derive(Debug)]
pub struct LocalScore {
    hits: Vec<Hit>,
    skipped: Vec<String>,
    probability: Option<f64>,
    evidence: Vec<(String, f64)>,
    dns: Option<dnsbl::DnsblLookups>,
}

/// `[filter]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub spam_threshold: f64,
    pub unsure_threshold: f64,
    /// Bytes of each message that are scored (the proxy fetches at most this much when scanning).
    pub scan_limit: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            spam_threshold: DEFAULT_SPAM_THRESHOLD,
            unsure_threshold: DEFAULT_UNSURE_THRESHOLD,
            scan_limit: DEFAULT_SCAN_LIMIT,
        }
    }
}

/// Everything the filter is built from.
#[derive(Debug, Clone)]
pub struct FilterSettings {
    /// `[filter]`: thresholds and the scan limit.
    pub filter: FilterConfig,
    pub rules: rules::RulesSettings,
    pub bayes: bayes::BayesSettings,
    pub dnsbl: dnsbl::DnsblSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Bayes(#[from] bayes::BayesError),
    #[error(transparent)]
    Dnsbl(#[from] dnsbl::DnsblError),
}

/// How one message is scored.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Allow DNS blocklist lookups (`score --no-network` turns this off).
    pub network: bool,
    /// Collect the strongest Bayes tokens for `--explain`.
    pub explain: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            network: true,
            explain: false,
        }
    }
}

/// The whole filter, shared by every session (cheap to clone behind an `Arc`).
pub struct Filter {
    config: FilterConfig,
    rules: rules::RuleEngine,
    bayes: bayes::BayesScorer,
    dnsbl: Option<dnsbl::Dnsbl>,
    dnsbl_disabled_users: Vec<String>,
}

impl Filter {
    /// Loads rules, opens the Bayes stores lazily, sets up the resolver. Errors name the file and line at fault.
    pub fn new(settings: &FilterSettings) -> Result<Filter, FilterError> {
        let dnsbl = if settings.dnsbl.config.enabled {
            Some(dnsbl::Dnsbl::new(&settings.dnsbl.config)?)
        } else {
            None
        };
        Ok(Filter {
            config: settings.filter.clone(),
            rules: rules::RuleEngine::load(&settings.rules)?,
            bayes: bayes::BayesScorer::new(&settings.bayes)?,
            dnsbl,
            dnsbl_disabled_users: settings.dnsbl.disabled_users.clone(),
        })
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// Writes what scoring queued for auto-learning once a model has a full batch (see
    /// [`bayes::BayesScorer::learn_pending`]): blocking file work, to run after scoring, off the async workers.
    /// Returns the messages learned.
    pub fn autolearn(&self) -> Result<usize, FilterError> {
        Ok(self.bayes.learn_pending()?)
    }

    /// Scores the first `scan_limit` bytes of `message` for `user` (None: global rules and model only). Never
    /// writes: auto-learning is queued for [`Filter::autolearn`].
    pub async fn score(&self, user: Option<&str>, message: &[u8], opts: &ScoreOptions) -> Verdict {
        let local = self.score_local(user, message, opts);
        self.finish(local).await
    }

    /// The CPU part of [`Filter::score`]: MIME parse, rules and Bayes, and the DNS blocklist lookups to make.
    /// Blocking work; a caller on an async runtime runs it on a blocking thread, then awaits [`Filter::finish`]
    /// there, so a slow resolver holds no CPU slot.
    pub fn score_local(
        &self,
        user: Option<&str>,
        message: &[u8],
        opts: &ScoreOptions,
    ) -> LocalScore {
        let truncated = message.len() > self.config.scan_limit;
        let message = &message[..message.len().min(self.config.scan_limit)];
        // One MIME parse serves the rules' view and the Bayes tokenizer.
        let parsed = crate::message::parse(message);
        let mut view = MessageView::from_parsed(message, parsed.as_ref());
        view.truncated |= truncated;

        let mut hits = self.rules.evaluate(user, &view);
        let mut skipped = Vec::new();

        let shared =
            bayes::tokenize::Tokenizer::takes_shared_parse(message).then_some(parsed.as_ref());
        let bayes = self.bayes.score_parsed(user, message, shared, opts.explain);
        let (probability, evidence) = match bayes {
            Ok(Some(b)) => {
                hits.extend(b.hits);
                (Some(b.probability), b.evidence)
            }
            Ok(None) => (None, Vec::new()),
            Err(e) => {
                skipped.push(format!("bayes: {e}"));
                (None, Vec::new())
            }
        };

        let user_allows_dns =
            user.is_none_or(|u| !self.dnsbl_disabled_users.iter().any(|d| d == u));
        let dns = match &self.dnsbl {
            Some(d) if opts.network && user_allows_dns => Some(d.prepare(&view)),
            Some(_) => {
                skipped.push("dnsbl: network lookups disabled".into());
                None
            }
            None => None,
        };
        LocalScore {
            hits,
            skipped,
            probability,
            evidence,
            dns,
        }
    }

    /// The waiting part of [`Filter::score`]: the DNS blocklist lookups, then the verdict.
    pub async fn finish(&self, local: LocalScore) -> Verdict {
        let LocalScore {
            mut hits,
            mut skipped,
            probability,
            evidence,
            dns,
        } = local;
        if let (Some(d), Some(lookups)) = (&self.dnsbl, dns) {
            let r = d.lookup(lookups).await;
            hits.extend(r.hits);
            skipped.extend(r.skipped);
        }
        let mut verdict = Verdict::from_hits(
            hits,
            self.config.spam_threshold,
            self.config.unsure_threshold,
        );
        verdict.bayes = probability;
        verdict.bayes_evidence = evidence;
        verdict.skipped = skipped;
        verdict
    }
}
