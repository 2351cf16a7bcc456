//! popguard's integration tests, one binary: one module per area, all sharing the test-support crate
//! (`tests/support`). Tests here share one process, so none may change process-wide state (environment, current
//! directory, a global tracing subscriber) or rely on a fixed port: children get their environment per command.

mod bayes_classifier;
mod client_dovecot;
mod client_scripted;
mod demo_cli;
mod dnsbl;
mod faults;
mod forged_headers;
mod hostile_input;
mod layers;
mod peers_dovecot;
mod pipelining_flood;
mod proxy_net;
mod proxy_peers;
mod proxy_session;
mod rules_engine;
mod score_cli;
mod security;
mod server_cli;
mod server_interop;
mod server_protocol;
mod server_tls;
mod train_cli;
mod uidl_identity;
