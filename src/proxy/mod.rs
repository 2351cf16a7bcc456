//! The proxy: relays a client to an upstream POP3 server, scores RETR/TOP, and tags or hides spam.

use serde::Deserialize;

/// `[proxy]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {}
