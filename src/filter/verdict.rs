//! The result of scoring one message: class, total score, and every contribution that made it.

use serde::Serialize;

/// What the filter concluded about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Ham,
    Unsure,
    Spam,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ham => "ham",
            Class::Unsure => "unsure",
            Class::Spam => "spam",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contribution to the score: a rule, a Bayes band, a blocklist listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Upper-case identifier as it appears in `X-Spam-Status`, e.g. `SUBJ_ALL_CAPS`, `BAYES_99`, `DNSBL_ZEN_SBL`.
    pub name: String,
    pub score: f64,
    pub description: String,
}

/// The verdict for one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub class: Class,
    /// Sum of all hit scores.
    pub score: f64,
    pub hits: Vec<Hit>,
    /// Bayesian spam probability (0..1) when a trained classifier was consulted.
    pub bayes: Option<f64>,
    /// Strongest tokens each way, for `score --explain` (token, spam probability).
    pub bayes_evidence: Vec<(String, f64)>,
    /// Lookups or scorers that were skipped (timeout, no network, disabled) and why.
    pub skipped: Vec<String>,
}

impl Verdict {
    /// Builds a verdict from its hits with the given thresholds (`score >= spam` is spam,
    /// `score >= unsure` is unsure).
    pub fn from_hits(hits: Vec<Hit>, spam_threshold: f64, unsure_threshold: f64) -> Verdict {
        let score = hits.iter().map(|h| h.score).sum::<f64>();
        let class = if score >= spam_threshold {
            Class::Spam
        } else if score >= unsure_threshold {
            Class::Unsure
        } else {
            Class::Ham
        };
        Verdict {
            class,
            score,
            hits,
            bayes: None,
            bayes_evidence: Vec::new(),
            skipped: Vec::new(),
        }
    }

    pub fn is_spam(&self) -> bool {
        self.class == Class::Spam
    }

    /// Rule names that hit, in order, as listed in `X-Spam-Status` and `score --json`.
    pub fn rule_names(&self) -> Vec<&str> {
        self.hits.iter().map(|h| h.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(name: &str, score: f64) -> Hit {
        Hit {
            name: name.into(),
            score,
            description: String::new(),
        }
    }

    #[test]
    fn classes_follow_thresholds() {
        assert_eq!(Verdict::from_hits(vec![], 5.0, 3.0).class, Class::Ham);
        assert_eq!(
            Verdict::from_hits(vec![hit("A", 3.0)], 5.0, 3.0).class,
            Class::Unsure
        );
        let v = Verdict::from_hits(vec![hit("A", 3.0), hit("B", 2.5)], 5.0, 3.0);
        assert_eq!(v.class, Class::Spam);
        assert_eq!(v.score, 5.5);
        assert_eq!(v.rule_names(), vec!["A", "B"]);
    }
}
