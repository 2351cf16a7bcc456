//! The filter's settings, resolved from the config file: the sections it owns, plus what it needs from elsewhere
//! (the data directory, `[users.NAME]` rule files and DNS switches, the proxy's Subject prefix).

use crate::filter::FilterSettings;
use crate::filter::bayes::BayesSettings;
use crate::filter::dnsbl::DnsblSettings;
use crate::filter::rules::RulesSettings;

use super::Config;

impl Config {
    /// Everything `Filter::new` needs.
    pub fn filter_settings(&self) -> FilterSettings {
        FilterSettings {
            filter: self.filter.clone(),
            rules: self.rules_settings(),
            bayes: self.bayes_settings(),
            dnsbl: self.dnsbl_settings(),
        }
    }

    /// The rule engine's settings: `[rules]` and each user's `rules = PATH`.
    pub fn rules_settings(&self) -> RulesSettings {
        RulesSettings {
            config: self.rules.clone(),
            user_files: self
                .users
                .iter()
                .filter_map(|(name, u)| u.rules.clone().map(|p| (name.clone(), p)))
                .collect(),
        }
    }

    /// The Bayes scorer's and trainer's settings.
    pub fn bayes_settings(&self) -> BayesSettings {
        BayesSettings {
            config: self.bayes.clone(),
            data_dir: self.data_dir(),
            scan_limit: self.filter.scan_limit,
            subject_prefix: self.proxy.subject_prefix.clone(),
        }
    }

    /// The blocklist checker's settings: `[dnsbl]` and the users with `dnsbl = false`.
    pub fn dnsbl_settings(&self) -> DnsblSettings {
        DnsblSettings {
            config: self.dnsbl.clone(),
            disabled_users: self
                .users
                .iter()
                .filter(|(_, u)| u.dnsbl == Some(false))
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn user_sections_and_the_proxy_prefix_reach_the_filter() {
        let c = Config::parse(
            "data_dir = \"/d\"\n[proxy]\nsubject_prefix = \"[JUNK]\"\n[filter]\nscan_limit = 1000\n\
             [users.alice]\nrules = \"/r/a.toml\"\ndnsbl = false\n[users.bob]\ndnsbl = true\n",
        )
        .unwrap();
        let s = c.filter_settings();
        assert_eq!(
            s.rules.user_files,
            [("alice".to_owned(), PathBuf::from("/r/a.toml"))]
        );
        assert_eq!(s.dnsbl.disabled_users, ["alice"]);
        assert_eq!(s.bayes.data_dir, PathBuf::from("/d"));
        assert_eq!(s.bayes.scan_limit, 1000);
        assert_eq!(s.bayes.subject_prefix, "[JUNK]");
        assert_eq!(s.filter.scan_limit, 1000);
    }

    /// The digest's view of the Subject prefix agrees with what the proxy's tagger really writes.
    #[test]
    fn a_copy_tagged_by_the_proxy_has_the_digest_of_the_original() {
        use crate::filter::Class;
        use crate::filter::bayes::message_digest;
        use crate::proxy::tag::{self, Eol, TagSettings, TagVerdict};

        let long = "y".repeat(990);
        let messages = [
            "From: a@example.org\r\nSubject: cheap pills\r\n\r\nbody\r\n".to_owned(),
            "From: a@example.org\r\nSubject: =?UTF-8?B?w6ljaGFudGlsbG9u?=\r\n\r\nbody\r\n"
                .to_owned(),
            "From: a@example.org\r\n\r\nno subject at all\r\n".to_owned(),
            format!("From: a@example.org\r\nSubject: {long}\r\n\r\nbody\r\n"),
        ];
        let rules = ["BODY_FREE_OFFER".to_owned()];
        for prefix in ["[SPAM]", "[ПОДОЗР]", "=?odd?="] {
            let settings = TagSettings {
                prefix: prefix.to_owned(),
                mark_ham: true,
                required: 5.0,
            };
            for m in &messages {
                let m = m.as_bytes();
                let verdict = TagVerdict {
                    class: Class::Spam,
                    score: 9.0,
                    rules: &rules,
                };
                let end = tag::head_end(m, tag::MAX_TAG_HEADER, true);
                let plan = tag::plan(m, end, tag::MAX_TAG_HEADER, verdict, &settings, Eol::Crlf);
                let mut tagged = Vec::new();
                plan.apply(m, &mut tagged);
                assert_ne!(tagged, m);
                assert_eq!(
                    message_digest(&tagged, prefix),
                    message_digest(m, prefix),
                    "prefix {prefix}: {}",
                    String::from_utf8_lossy(&tagged)
                );
            }
        }
    }
}
