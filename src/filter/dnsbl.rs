//! DNS blocklist lookups (sender IPs, URL domains) with hickory-resolver: parallel, cached, time-budgeted.
//!
//! SKELETON: signatures are the contract used by `filter::Filter`; the DNSBL work fills them in.

use serde::Deserialize;

use super::Hit;
use crate::message::MessageView;

/// `[dnsbl]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsblConfig {
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsblError {
    #[error("dnsbl config: {0}")]
    Config(String),
}

/// Hits and skipped lookups for one message.
#[derive(Debug, Clone, Default)]
pub struct DnsblResult {
    pub hits: Vec<Hit>,
    pub skipped: Vec<String>,
}

pub struct Dnsbl {}

impl Dnsbl {
    pub fn new(_config: &DnsblConfig) -> Result<Dnsbl, DnsblError> {
        Ok(Dnsbl {})
    }

    pub async fn check(&self, _view: &MessageView) -> DnsblResult {
        DnsblResult::default()
    }
}
