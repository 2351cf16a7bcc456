//! The per-user verdict cache, keyed by UIDL, so a message is scored once.
