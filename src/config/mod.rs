//! The configuration file (`popguard.toml`): one struct per section, every key optional with a sane default.
//!
//! Each section's type lives beside the code it configures; this module composes them and loads the file.
//! Every key is documented in `popguard.example.toml` and the README. The settings each layer is built from are
//! resolved from it here: `filter` (this directory) for the spam filter.

mod filter;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod proxy;

use crate::filter::FilterConfig;
use crate::filter::bayes::BayesConfig;
use crate::filter::dnsbl::DnsblConfig;
use crate::filter::rules::RulesConfig;
use crate::proxy::ProxyConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where per-user state lives (token DB, verdict cache, quarantine). Default: `$XDG_DATA_HOME/popguard`,
    /// else `~/.local/share/popguard`, else `./popguard-data`.
    pub data_dir: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub filter: FilterConfig,
    pub rules: RulesConfig,
    pub bayes: BayesConfig,
    pub dnsbl: DnsblConfig,
    /// Per-user overrides, `[users.alice]`.
    pub users: BTreeMap<String, UserConfig>,
}

/// `[users.NAME]`: what differs for one POP3 login name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// Upstream `HOST:PORT` for this user instead of `proxy.upstream`.
    pub upstream: Option<String>,
    /// `none`, `implicit` or `starttls` for this user's upstream.
    pub upstream_tls: Option<String>,
    /// `tag` or `hide` for this user.
    pub action: Option<String>,
    /// Extra rule file for this user (default: `RULES_DIR/users/NAME.toml` when it exists).
    pub rules: Option<PathBuf>,
    /// Set to false to skip DNS blocklist lookups for this user.
    pub dnsbl: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is part of the message, not a `source`, so `{e:#}` chains print it once.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("proxy configuration: {0}")]
    Proxy(String),
}

impl Config {
    /// Loads a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|cause| ConfigError::Read {
                    path: p.to_owned(),
                    cause,
                })?;
                Config::parse(&text).map_err(|message| ConfigError::Parse {
                    path: p.to_owned(),
                    message,
                })
            }
        }
    }

    /// Parses config text; the error carries toml's line/column report.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The data directory in force (config value or the platform default).
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("popguard");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(h).join(".local/share/popguard");
        }
        PathBuf::from("popguard-data")
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert!(c.users.is_empty());
        assert_eq!(
            c.filter.spam_threshold,
            crate::filter::DEFAULT_SPAM_THRESHOLD
        );
    }

    #[test]
    fn a_missing_config_file_names_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
        // Formatted exactly as `main` prints errors: the anyhow chain with `{:#}`.
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            shown.matches("No such file or directory").count(),
            1,
            "{shown}"
        );
        assert!(shown.contains("nope.toml"), "{shown}");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let e = Config::parse("[filter]\nspam_treshold = 4\n").unwrap_err();
        assert!(e.contains("spam_treshold"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn user_sections_parse() {
        let c =
            Config::parse("[users.alice]\nupstream = \"127.0.0.1:995\"\ndnsbl = false\n").unwrap();
        assert_eq!(
            c.user("alice").unwrap().upstream.as_deref(),
            Some("127.0.0.1:995")
        );
        assert_eq!(c.user("alice").unwrap().dnsbl, Some(false));
    }
}
