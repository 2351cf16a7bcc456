//! Resolves the `[proxy]` section (and the per-user keys the proxy reads) into typed [`ProxySettings`], once.

use crate::proxy::upstream::{Routing, UserUpstream};
use crate::proxy::{Action, ClientTlsFiles, ProxySettings};

use super::{Config, ConfigError};

impl Config {
    /// The proxy's settings: routing parsed, per-user actions parsed, durations clamped, file pairs checked.
    /// Errors name the key to fix.
    pub fn proxy_settings(&self) -> Result<ProxySettings, ConfigError> {
        let p = &self.proxy;
        let routing = Routing::new(
            p,
            self.users.iter().map(|(name, u)| UserUpstream {
                name,
                upstream: u.upstream.as_deref(),
                upstream_tls: u.upstream_tls.as_deref(),
            }),
        )
        .map_err(ConfigError::Proxy)?;
        let mut user_actions = std::collections::HashMap::new();
        for (name, u) in &self.users {
            if let Some(a) = &u.action {
                let a = a
                    .parse::<Action>()
                    .map_err(|e| ConfigError::Proxy(format!("users.{name}.action: {e}")))?;
                user_actions.insert(name.clone(), a);
            }
        }
        let client_tls = match (&p.tls_cert, &p.tls_key) {
            (Some(cert), Some(key)) => Some(ClientTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                mode: p.client_tls,
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Proxy(
                    "proxy.tls_cert and proxy.tls_key go together: set both or neither".into(),
                ));
            }
        };
        if p.subject_prefix.contains(['\r', '\n']) {
            return Err(ConfigError::Proxy(
                "proxy.subject_prefix must be one line".into(),
            ));
        }
        let scan_limit = self.filter.scan_limit;
        Ok(ProxySettings {
            listen: p.listen.clone(),
            routing,
            ca_file: p.ca_file.clone(),
            action: p.action,
            user_actions,
            subject_prefix: p.subject_prefix.clone(),
            mark_ham: p.mark_ham,
            spam_threshold: self.filter.spam_threshold,
            client_tls,
            allow_non_loopback: p.allow_non_loopback,
            scan: p.scan,
            top_lines: p.top_lines(scan_limit),
            scan_limit,
            client_timeout: p.client_timeout(),
            upstream_timeout: p.upstream_timeout(),
            connect_timeout: p.connect_timeout(),
            delete_hidden: p.delete_hidden,
            max_sessions: p.max_sessions,
            read_ahead: p.read_ahead,
            scan_budget: p.scan_budget(),
            tag_sizing: p.tag_sizing,
            data_dir: self.data_dir(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{ClientTls, ProxyConfig, ScanMethod};

    #[test]
    fn config_section_parses_every_key() {
        let c: crate::config::Config = crate::config::Config::parse(
            r#"
[proxy]
listen = "127.0.0.1:2110"
upstream = "127.0.0.1:995"
upstream_tls = "implicit"
ca_file = "ca.pem"
action = "hide"
subject_prefix = "[JUNK]"
mark_ham = false
tls_cert = "c.pem"
tls_key = "k.pem"
client_tls = "implicit"
allow_non_loopback = true
route_by_login = true
route_allow = ["pop.example.org", "mail.example.net:110"]
scan = "retr"
scan_lines = 50
client_timeout = 900
upstream_timeout = 60
connect_timeout = 10
delete_hidden = true
max_sessions = 8
"#,
        )
        .unwrap();
        let p = &c.proxy;
        assert_eq!(p.action, Action::Hide);
        assert_eq!(p.client_tls, ClientTls::Implicit);
        assert_eq!(p.scan, ScanMethod::Retr);
        assert_eq!(p.route_allow.len(), 2);
        assert_eq!(p.scan_lines, Some(50));
        assert!(p.client_tls_enabled());
    }

    /// The shipped example parses, shows the real defaults, and every commented `# key = value` line parses too.
    #[test]
    fn example_config_parses_with_every_optional_key() {
        let text = include_str!("../../popguard.example.toml");
        let c = Config::parse(text).unwrap();
        let d = ProxyConfig::default();
        let p = &c.proxy;
        assert_eq!(p.listen, d.listen);
        assert_eq!(p.subject_prefix, d.subject_prefix);
        assert_eq!(
            (
                p.client_timeout,
                p.upstream_timeout,
                p.connect_timeout,
                p.max_sessions
            ),
            (
                d.client_timeout,
                d.upstream_timeout,
                d.connect_timeout,
                d.max_sessions
            )
        );
        assert_eq!(
            (p.delete_hidden, p.route_by_login, p.allow_non_loopback),
            (false, false, false)
        );
        assert_eq!(c.filter.scan_limit, crate::filter::DEFAULT_SCAN_LIMIT);
        assert_eq!(
            c.filter.spam_threshold,
            crate::filter::DEFAULT_SPAM_THRESHOLD
        );
        assert_eq!(
            c.filter.unsure_threshold,
            crate::filter::DEFAULT_UNSURE_THRESHOLD
        );
        let dn = crate::filter::dnsbl::DnsblConfig::default();
        assert_eq!(c.dnsbl.zones.len(), dn.zones.len());
        assert_eq!(c.dnsbl.budget_ms, dn.budget_ms);
        let b = crate::filter::bayes::BayesConfig::default();
        assert_eq!(c.bayes.bands, b.bands);
        assert_eq!(
            (c.bayes.min_spam, c.bayes.max_tokens),
            (b.min_spam, b.max_tokens)
        );
        assert_eq!(c.bayes.max_tokens_per_message, b.max_tokens_per_message);
        c.proxy_settings().unwrap();

        let key_line = regex::Regex::new(r"^# ?[a-z_]+ = ").unwrap();
        let all: Vec<&str> = text
            .lines()
            .map(|l| {
                if key_line.is_match(l) {
                    l.trim_start_matches('#').trim_start()
                } else {
                    l
                }
            })
            .collect();
        let c = Config::parse(&all.join("\n")).unwrap();
        assert!(c.data_dir.is_some() && c.rules.dir.is_some());
        assert!(c.proxy.client_tls_enabled() && c.proxy.ca_file.is_some());
        assert_eq!(c.proxy.scan_lines, Some(200));
        assert!(c.user("alice").unwrap().rules.is_some());
        assert!(c.bayes.autolearn_spam.is_some() && c.bayes.autolearn_ham.is_some());
    }

    #[test]
    fn bad_action_is_an_error() {
        let e = crate::config::Config::parse("[proxy]\naction = \"drop\"\n").unwrap_err();
        assert!(e.contains("action") || e.contains("drop"), "{e}");
        assert!("hide".parse::<Action>().is_ok());
        assert!("Drop".parse::<Action>().unwrap_err().contains("tag"));
    }

    #[test]
    fn settings_resolve_every_key_once() {
        let c = Config::parse(
            "data_dir = \"/tmp/pg\"\n[filter]\nscan_limit = 1000\nspam_threshold = 6.5\n[proxy]\n\
             upstream = \"127.0.0.1:110\"\nupstream_tls = \"none\"\nclient_timeout = 5\nscan_budget = 0\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[users.bob]\naction = \"hide\"\n",
        )
        .unwrap();
        let s = c.proxy_settings().unwrap();
        assert_eq!(s.client_timeout, crate::proxy::RFC1939_MIN_AUTOLOGOUT);
        assert_eq!(s.scan_budget, None);
        assert_eq!(
            (s.scan_limit, s.top_lines, s.spam_threshold),
            (1000, 501, 6.5)
        );
        assert_eq!(s.action_for("bob"), Action::Hide);
        assert_eq!(s.action_for("alice"), Action::Tag);
        assert_eq!(s.client_tls_mode(), ClientTls::Stls);
        assert_eq!(s.data_dir, std::path::PathBuf::from("/tmp/pg"));
        assert!(s.routing.is_static() && !s.routing.needs_tls());
    }

    #[test]
    fn settings_errors_name_the_key() {
        let err = |toml: &str| {
            Config::parse(toml)
                .unwrap()
                .proxy_settings()
                .unwrap_err()
                .to_string()
        };
        let up = "[proxy]\nupstream = \"127.0.0.1:110\"\n";
        assert!(err(&format!("{up}tls_cert = \"c.pem\"\n")).contains("tls_key"));
        assert!(err(&format!("{up}subject_prefix = \"a\\nb\"\n")).contains("subject_prefix"));
        assert!(err(&format!("{up}[users.x]\naction = \"drop\"\n")).contains("users.x.action"));
        assert!(err("").contains("proxy.upstream"));
    }
}
