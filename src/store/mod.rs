//! Per-user proxy state under the data directory: the verdict cache keyed by UIDL, and the quarantine.
//!
//! The Bayes token store is the model's own file format and lives with it, in `filter::bayes::store`; owner-only
//! files, user directories and atomic replaces are `crate::fsutil`.

pub mod quarantine;
pub mod verdicts;
