//! Fuzz target: the rule loader. The input is written as one rule file (`fuzz.toml`) in a directory of its own and
//! loaded with `RuleEngine::check`, which parses the TOML, compiles every pattern with the regex crate's size
//! limits, resolves meta expressions and sender globs. Any input must give a rule set or errors that name the file,
//! never a panic or a stall (libFuzzer's -timeout catches the latter).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use popguard::config::Config;
use popguard::filter::rules::{RuleEngine, RulesError};

static DIR: OnceLock<PathBuf> = OnceLock::new();

fn dir() -> &'static PathBuf {
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("popguard-fuzz-rules-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fn names_the_file(e: &RulesError) -> bool {
    match e {
        RulesError::Invalid { file, .. } | RulesError::Read { file, .. } => {
            file.contains("fuzz.toml")
        }
        RulesError::Many { first, .. } => names_the_file(first),
    }
}

fuzz_target!(|data: &[u8]| {
    let file = dir().join("fuzz.toml");
    std::fs::write(&file, data).expect("write rule file");
    let mut config = Config::default();
    config.rules.dir = Some(dir().clone());
    match RuleEngine::check(&config.rules_settings()) {
        Ok(summary) => {
            let _ = format!("{summary:?}");
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(names_the_file(e), "error without its file: {e}");
                let msg = e.to_string();
                assert!(!msg.is_empty() && msg.len() < 4096, "{msg}");
            }
        }
    }
});
