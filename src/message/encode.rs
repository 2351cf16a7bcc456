//! Writing header text: RFC 2047 Q encoded words for non-ASCII text in unstructured fields. The proxy writes its
//! Subject prefix with these, and the Bayes training digest recognises the same bytes, so both use this one
//! encoder.

/// RFC 2047 §2: an encoded word is at most 75 characters long.
pub const RFC2047_MAX_WORD: usize = 75;

/// True when `text` can be written literally into an unstructured field: printable ASCII and no `=?` that a
/// reader could take for the start of an encoded word (RFC 2047 §5).
pub fn is_literal(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b)) && !text.contains("=?")
}

/// `text` as one or more RFC 2047 Q encoded words (UTF-8), separated by a space, each at most 75 characters.
pub fn encode_words(text: &str) -> String {
    const OPEN: &str = "=?UTF-8?Q?";
    const CLOSE: &str = "?=";
    let room = RFC2047_MAX_WORD - OPEN.len() - CLOSE.len();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        let mut enc = String::new();
        if ch == ' ' {
            enc.push('_');
        } else if ch.is_ascii_alphanumeric() || matches!(ch, '!' | '*' | '+' | '-' | '/') {
            enc.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                enc.push_str(&format!("={b:02X}"));
            }
        }
        // A character's bytes never straddle two words (RFC 2047 §5: each word must be self-contained).
        if cur.len() + enc.len() > room && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        cur.push_str(&enc);
    }
    if !cur.is_empty() || words.is_empty() {
        words.push(cur);
    }
    words
        .iter()
        .map(|w| format!("{OPEN}{w}{CLOSE}"))
        .collect::<Vec<_>>()
        .join(" ")
}
