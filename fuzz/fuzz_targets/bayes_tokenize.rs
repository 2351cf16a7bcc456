//! Fuzz target: the Bayes mail tokenizer (mail-parser MIME decoding, HTML, URLs, headers) on arbitrary bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use popguard::filter::bayes::tokenize::{DEFAULT_MAX_TOKENS, Tokenizer, token_hash};

static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let tok = TOKENIZER.get_or_init(Tokenizer::new);
    // The first byte picks a small cap sometimes, to exercise the sampling path.
    let max = match data.first() {
        Some(&b) if b < 16 => usize::from(b),
        _ => DEFAULT_MAX_TOKENS,
    };
    let t = tok.tokenize(data, max, true);
    assert!(t.hashes.len() <= max.max(1));
    assert!(
        t.hashes.windows(2).all(|w| w[0] < w[1]),
        "sorted and distinct"
    );
    assert_eq!(
        t.names.len(),
        t.hashes.len(),
        "every kept hash has its text"
    );
    for (h, name) in &t.names {
        assert_eq!(
            token_hash(name),
            *h,
            "token {name:?} does not hash to its key"
        );
    }
    // Without names the same hashes come out: explaining never changes the score.
    assert_eq!(tok.tokenize(data, max, false).hashes, t.hashes);
});
