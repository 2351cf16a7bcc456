//! The per-user Bayes token database.
