//! TLS for clients and listeners with rustls: trust anchors, certificate loading, and a stream that can upgrade.
