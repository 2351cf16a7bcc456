//! popguard: a spam-filtering POP3 proxy, with the built-in maildir POP3 server and the POP3 client it grew from.
//!
//! # The map
//! Each top-level module owns one job and may use only the modules listed after it (arrows point down; the
//! test `tests/it/layers.rs` fails when one points back, and when a file under `src/` passes 800 lines).
//!
//! | module | owns | may use |
//! |---|---|---|
//! | `cli` (in the binary) | flags and dispatch, one file per subcommand | everything |
//! | [`config`] | the TOML file, and resolving it into each layer's typed settings (`proxy_settings`, `filter_settings`, ...) | all below |
//! | [`proxy`] | the relay: `session/` as typed phases (authorization, transaction, relay) and the pure mailbox `plan`; `upstream` (routing, a thin policy over `pop3::connection`); `scan` (first scan, scoring pool); `tag` (header splicing); `read_ahead`, `capa`, `sasl` | `pop3`, `filter`, `store`, `message`, `tls`, `listener`, `secret`, `fsutil` |
//! | [`server`] | the built-in maildir server: session state machine, connection I/O, maildrops (no link followed), users file, locks | `pop3`, `tls`, `listener`, `secret`, `message`, `fsutil` |
//! | [`client`] | the `popguard client` library: login policy, fetch into maildir/mbox, UIDL state | `pop3`, `tls`, `secret`, `fsutil` |
//! | [`store`] | per-user proxy state: the verdict cache (journal) and the quarantine | `filter`, `message`, `secret`, `fsutil` |
//! | [`filter`] | bytes in, verdict out: `rules`, `bayes` (with its token `store`), `dnsbl`, `verdict`; takes `FilterSettings` | `message`, `fsutil` |
//! | [`pop3`] | everything that is POP3, both sides, no policy: commands, responses, multi-line framing, the one client `connection`, `listing` parser, `auth` (SASL PLAIN, APOP), `limits` (ports, timers, caps) | `tls`, `secret` |
//! | [`message`] | the MIME view (decoded headers, text, URLs, Received IPs), parsed once per message | — |
//! | [`tls`] | rustls configurations, certificate loading, a stream that can upgrade | `secret` |
//! | [`listener`] | accept loops with a connection limit and graceful shutdown | — |
//! | [`fsutil`] | owner-only files and directories, per-user directory names, the one atomic file replace | — |
//! | [`secret`] | a wrapper whose `Debug`/`Display` print `***` | — |
//!
//! Where to look: a POP3 reply's wording or framing is in `pop3`; what the proxy answers to a command is in
//! `proxy::session::{authorization, transaction, relay}`; which messages are visible and how big they are is
//! `proxy::session::plan`; why a message scored what it did is `filter`; where a setting is read is `config`.

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
