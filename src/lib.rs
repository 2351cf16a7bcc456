//! popguard: a spam-filtering POP3 proxy, with the built-in maildir POP3 server and the POP3 client it grew from.
//!
//! Layers point downward: `proxy`, `server` and `client` speak through `pop3` (wire protocol, no policy);
//! `proxy` asks `filter` (bytes in, verdict out, no sockets) and keeps per-user state in `store`.

pub mod client;
pub mod config;
pub mod filter;
pub mod fsutil;
pub mod listener;
pub mod message;
pub mod pop3;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;
