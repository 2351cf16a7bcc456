//! The quarantine: what the proxy hid for a user (UIDL, from, subject, score, why) and which were released.
