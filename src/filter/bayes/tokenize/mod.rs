//! The mail tokenizer: turns message bytes into the set of features the classifiers count.
//!
//! Tokens carry a prefix saying where they came from (`subject:`, `from:addr:`, `rcvd:ip:`, `url:`, `html:`...)
//! so the same word means different things in different places; body words are bare. MIME is decoded by
//! mail-parser (quoted-printable, base64, charsets to UTF-8, RFC 2047 headers); HTML is reduced to its text plus
//! tokens for its structure (tags, hidden text, tiny fonts, links); URLs are split into host suffixes and path
//! pieces; long runs and binary parts become a few summary tokens instead of thousands of junk words. Each token is
//! reduced to a stable 64-bit hash (the token store keeps only hashes); its text is kept only when explaining.
//!
//! All work is bounded: input bytes, MIME parts, nesting, decoded text and emitted tokens each have a named cap, so
//! a 100 000-part message or an endless base64 body costs no more than an ordinary large one.

mod html;

use std::collections::HashMap;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderName, HeaderValue, Message, MessagePart, PartType};

use html::html_tokens;

/// Bytes of a message the tokenizer looks at. The filter already cuts messages to `filter.scan_limit`
/// (256 KiB by default); this is the hard stop for any other caller.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// MIME parts looked at per message (real mail has a handful; a bomb has thousands).
pub const MAX_PARTS: usize = 64;
/// Nested `message/rfc822` levels followed.
pub const MAX_NESTING: usize = 3;
/// Decoded text (all parts together) that is split into words.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Characters of one header value that are tokenized.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Header fields looked at (a message with thousands of fields is junk anyway).
pub const MAX_HEADERS: usize = 200;
/// `Received` fields mined for hosts and IPs: the hops nearest the recipient say the most.
pub const MAX_RECEIVED: usize = 8;
/// URLs split into pieces per message.
pub const MAX_URLS: usize = 64;
/// Path pieces taken from one URL.
pub const MAX_URL_PIECES: usize = 8;
/// Raw tokens emitted before de-duplication (a safety stop well above what any real message produces).
pub const MAX_RAW_TOKENS: usize = 20_000;
/// Default cap on distinct tokens per message (`bayes.max_tokens_per_message`).
pub const DEFAULT_MAX_TOKENS: usize = 4_000;
/// Body words shorter than this are noise ("a", "of").
pub const MIN_WORD: usize = 3;
/// Body words longer than this are summarised (`skip:x 20`): real words are shorter, junk is not.
pub const MAX_WORD: usize = 12;
/// Bytes searched for the end of an HTML tag before the `<` is taken as text.
pub const MAX_TAG_LEN: usize = 4096;

/// The distinct tokens of one message, as sorted hashes; their text too when asked for (explain).
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    pub hashes: Vec<u64>,
    pub names: HashMap<u64, String>,
}

impl TokenSet {
    /// The token's text, or its hash when the names were not kept.
    pub fn name(&self, hash: u64) -> String {
        self.names
            .get(&hash)
            .cloned()
            .unwrap_or_else(|| format!("#{hash:016x}"))
    }
}

/// FNV-1a over the bytes (ASCII folded to lower case when asked) finished with a 64-bit mixer so the top bits
/// (used by the store's index) are uniform. Stable forever: stored databases depend on it.
fn hash_parts(prefix: &str, word: &str, fold: bool) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in prefix.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    for &b in word.as_bytes() {
        let b = if fold { b.to_ascii_lowercase() } else { b };
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of a token given as text (`"subject:free"`), as the tokenizer would produce it.
pub fn token_hash(token: &str) -> u64 {
    hash_parts("", token, false)
}

struct Emitter {
    hashes: Vec<u64>,
    names: Option<HashMap<u64, String>>,
    text_budget: usize,
}

impl Emitter {
    /// The distinct hashes (at most `max_tokens`, a fair sample by hash order) and, when kept, their names.
    fn finish(self, max_tokens: usize) -> TokenSet {
        let mut hashes = self.hashes;
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.len() > max_tokens.max(1) {
            // Hash order is a fair random sample of the message's tokens.
            hashes.truncate(max_tokens.max(1));
        }
        let names = match self.names {
            Some(mut n) => {
                n.retain(|h, _| hashes.binary_search(h).is_ok());
                n
            }
            None => HashMap::new(),
        };
        TokenSet { hashes, names }
    }

    fn full(&self) -> bool {
        self.hashes.len() >= MAX_RAW_TOKENS
    }

    /// Emits `prefix` + `word` as written.
    fn emit(&mut self, prefix: &str, word: &str) {
        self.push(prefix, word, false);
    }

    /// Emits `prefix` + `word` in lower case.
    fn emit_lower(&mut self, prefix: &str, word: &str) {
        if word.is_ascii() {
            self.push(prefix, word, true);
        } else {
            let lower = word.to_lowercase();
            self.push(prefix, &lower, false);
        }
    }

    fn push(&mut self, prefix: &str, word: &str, fold: bool) {
        if self.full() {
            return;
        }
        let h = hash_parts(prefix, word, fold);
        self.hashes.push(h);
        if let Some(names) = &mut self.names {
            names.entry(h).or_insert_with(|| {
                if fold {
                    format!("{prefix}{}", word.to_ascii_lowercase())
                } else {
                    format!("{prefix}{word}")
                }
            });
        }
    }
}

/// The mail tokenizer. It holds no state (the MIME parser is [`crate::message::PARSER`]); kept as a type so
/// callers keep one handle.
pub struct Tokenizer {}

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer::new()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer")
    }
}

impl Tokenizer {
    pub fn new() -> Tokenizer {
        Tokenizer {}
    }

    /// True when `raw` can be tokenized from [`crate::message::PARSER`]'s parse of the same bytes (the filter
    /// then parses once for rules and Bayes): no mbox separator to strip, nothing to cut.
    pub fn takes_shared_parse(raw: &[u8]) -> bool {
        !raw.starts_with(b"From ") && raw.len() <= MAX_INPUT_BYTES
    }

    /// [`Tokenizer::tokenize`] from an existing parse of `raw` by [`crate::message::PARSER`] (see
    /// [`Tokenizer::takes_shared_parse`]); `None`: it found no message.
    pub fn tokenize_parsed(
        &self,
        raw: &[u8],
        parsed: Option<&Message<'_>>,
        max_tokens: usize,
        keep_names: bool,
    ) -> TokenSet {
        let mut em = Emitter {
            hashes: Vec::with_capacity(1024),
            names: keep_names.then(HashMap::new),
            text_budget: MAX_TEXT_BYTES,
        };
        match parsed {
            Some(msg) => {
                let mut parts_left = MAX_PARTS;
                message_tokens(msg, &mut em, 0, &mut parts_left);
            }
            None => {
                // Not even a header block: treat the bytes as text so something is learnt.
                em.emit("meta:", "unparsable");
                let text = String::from_utf8_lossy(raw);
                text_tokens(&text, &mut em);
            }
        }
        em.finish(max_tokens)
    }

    /// The distinct tokens of `raw` (at most `max_tokens`), with their text when `keep_names`.
    pub fn tokenize(&self, raw: &[u8], max_tokens: usize, keep_names: bool) -> TokenSet {
        let mut raw = &raw[..raw.len().min(MAX_INPUT_BYTES)];
        // An mbox "From " separator line is not a header; mail-parser would read it as junk.
        if raw.starts_with(b"From ") {
            let nl = raw
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |p| p + 1);
            raw = &raw[nl..];
        }
        let parsed = crate::message::parse(raw);
        self.tokenize_parsed(raw, parsed.as_ref(), max_tokens, keep_names)
    }
}

fn message_tokens(msg: &Message<'_>, em: &mut Emitter, depth: usize, parts_left: &mut usize) {
    if depth == 0 {
        header_tokens(msg, em);
    } else if let Some(s) = msg.subject() {
        subject_tokens(s, em);
    }
    for part in &msg.parts {
        if *parts_left == 0 || em.full() {
            em.emit("meta:", "parts-capped");
            return;
        }
        *parts_left -= 1;
        part_tokens(msg.raw_message.as_ref(), part, em, depth, parts_left);
    }
}

fn part_tokens(
    raw: &[u8],
    part: &MessagePart<'_>,
    em: &mut Emitter,
    depth: usize,
    parts_left: &mut usize,
) {
    let mut ctype = String::new();
    for h in part.headers.iter().take(MAX_HEADERS) {
        match &h.value {
            HeaderValue::ContentType(ct) => {
                let lname = h.name.as_str().to_ascii_lowercase();
                if lname == "content-type" {
                    ctype = match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_string(),
                    };
                    em.emit_lower("ct:", &ctype);
                    if let Some(cs) = ct.attribute("charset") {
                        em.emit_lower("charset:", cs);
                    }
                    if let Some(name) = ct.attribute("name") {
                        filename_tokens(name, em);
                    }
                } else {
                    em.emit_lower("disposition:", ct.ctype());
                    if let Some(name) = ct.attribute("filename") {
                        filename_tokens(name, em);
                    }
                }
            }
            HeaderValue::Text(t)
                if h.name
                    .as_str()
                    .eq_ignore_ascii_case("content-transfer-encoding") =>
            {
                em.emit_lower("cte:", t.trim());
            }
            _ => {}
        }
    }
    // A text part cut before its closing boundary (the scan limit falls inside it) is kept undecoded by
    // mail-parser: decode it here, as the rules' view does, so its words count. Only a part that runs to the
    // end of the input: other badly encoded parts keep the tokens the models were trained on.
    let cut = part.offset_end as usize >= raw.len();
    if let Some((text, html)) = cut
        .then(|| crate::message::recover_cut_part(part, raw))
        .flatten()
    {
        eight_bit_tokens(&text, em);
        if html {
            html_tokens(&text, em);
        } else {
            text_tokens(&text, em);
        }
        return;
    }
    match &part.body {
        PartType::Text(t) => {
            eight_bit_tokens(t, em);
            text_tokens(t, em);
        }
        PartType::Html(h) => {
            eight_bit_tokens(h, em);
            html_tokens(h, em);
        }
        PartType::Binary(b) | PartType::InlineBinary(b) => {
            em.emit_lower("binary:", if ctype.is_empty() { "unknown" } else { &ctype });
            em.emit("binary:size:", size_bucket(b.len()));
        }
        PartType::Message(m) => {
            em.emit("meta:", "attached-message");
            if depth + 1 < MAX_NESTING {
                message_tokens(m, em, depth + 1, parts_left);
            }
        }
        PartType::Multipart(_) => {}
    }
}

fn size_bucket(n: usize) -> &'static str {
    match n {
        0..=1023 => "<1k",
        1024..=10_239 => "<10k",
        10_240..=102_399 => "<100k",
        _ => ">=100k",
    }
}

fn filename_tokens(name: &str, em: &mut Emitter) {
    let name = name.trim();
    em.emit_lower("filename:", name);
    if let Some((_, ext)) = name.rsplit_once('.')
        && !ext.is_empty()
        && ext.len() <= 8
    {
        em.emit_lower("fileext:", ext);
    }
}

/// The share of non-ASCII characters in a text part, in tenths: CJK spam and accented ham differ here.
fn eight_bit_tokens(text: &str, em: &mut Emitter) {
    let sample = truncate_str(text, 4096);
    let total = sample.chars().count();
    if total < 32 {
        return;
    }
    let high = sample.chars().filter(|c| !c.is_ascii()).count();
    if high > 0 {
        const DECILES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
        em.emit("8bit%:", DECILES[(high * 10 / total).min(10)]);
    }
}

fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Fields a mail client, a filter or this proxy adds after delivery (`x-prev-`: tags it renamed): never evidence.
fn ignored_header(lname: &str) -> bool {
    lname.starts_with("x-spam-")
        || lname.starts_with("x-prev-")
        || lname.starts_with("x-bogosity")
        || lname.starts_with("x-popguard")
        || matches!(
            lname,
            "status"
                | "x-status"
                | "x-keywords"
                | "x-uid"
                | "x-mozilla-status"
                | "x-mozilla-status2"
        )
}

fn header_tokens(msg: &Message<'_>, em: &mut Emitter) {
    let mut received = 0usize;
    let mut recipients = 0usize;
    for h in msg.headers().iter().take(MAX_HEADERS) {
        let name = h.name.as_str();
        let lname = name.to_ascii_lowercase();
        if ignored_header(&lname) {
            continue;
        }
        // The shared parse reads From structurally (for the rules); here it is text, decoded from its bytes
        // exactly as every other field was.
        let redecoded;
        let value = match &h.value {
            HeaderValue::Text(_) | HeaderValue::TextList(_) => &h.value,
            _ if h.name == HeaderName::From => {
                let bytes = msg
                    .raw_message
                    .get(h.offset_start as usize..h.offset_end as usize)
                    .unwrap_or_default();
                redecoded = MessageStream::new(bytes).parse_unstructured();
                &redecoded
            }
            _ => continue,
        };
        let value: &str = match value {
            HeaderValue::Text(t) => t,
            HeaderValue::TextList(l) => l.first().map(|s| s.as_ref()).unwrap_or(""),
            _ => continue,
        };
        let value = truncate_str(value, MAX_HEADER_VALUE);
        match lname.as_str() {
            "subject" => subject_tokens(value, em),
            "from" | "reply-to" | "sender" | "return-path" | "errors-to" => {
                address_tokens(&lname, value, em);
            }
            "to" | "cc" => {
                recipients += value.matches('@').count();
                address_tokens(&lname, value, em);
            }
            "received" => {
                if received < MAX_RECEIVED {
                    received_tokens(value, em);
                }
                received += 1;
            }
            "message-id" => {
                let v = value.trim().trim_matches(|c| c == '<' || c == '>');
                match v.rsplit_once('@') {
                    Some((_, host)) => em.emit_lower("msgid:@", host),
                    None => em.emit("msgid:", "no-at"),
                }
            }
            "date" => {
                if let Some(tz) = value
                    .split_whitespace()
                    .find(|w| (w.starts_with('+') || w.starts_with('-')) && w.len() == 5)
                {
                    em.emit("date:tz:", tz);
                }
            }
            "x-mailer" | "user-agent" | "x-mimeole" | "organization" | "list-id" | "precedence"
            | "x-priority" | "x-msmail-priority" | "importance" | "mime-version"
            | "x-originating-ip" | "content-class" | "thread-index" => {
                let prefix = format!("{lname}:");
                for w in value
                    .split(|c: char| c.is_whitespace() || c == ';' || c == ',')
                    .take(8)
                {
                    let w = w.trim_matches(|c: char| {
                        matches!(c, '(' | ')' | '"' | '<' | '>' | '[' | ']')
                    });
                    if !w.is_empty() && w.len() <= 40 {
                        em.emit_lower(&prefix, w);
                    }
                }
            }
            _ => {}
        }
    }
    em.emit("hdr:received-count:", count_bucket(received));
    em.emit("hdr:recipients:", count_bucket(recipients));
}

fn count_bucket(n: usize) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2 => "2",
        3..=5 => "3-5",
        6..=10 => "6-10",
        _ => ">10",
    }
}

fn subject_tokens(subject: &str, em: &mut Emitter) {
    let mut letters = 0usize;
    let mut upper = 0usize;
    for w in subject.split_whitespace() {
        if em.full() {
            return;
        }
        letters += w.chars().filter(|c| c.is_alphabetic()).count();
        upper += w.chars().filter(|c| c.is_uppercase()).count();
        // Word characters and runs of punctuation separately: "FREE!!!" is "free" and "!!!".
        let mut start = None;
        let mut punct_start = None;
        for (i, c) in w.char_indices() {
            let wordish = c.is_alphanumeric() || matches!(c, '$' | '%' | '\'' | '.' | '-');
            if wordish {
                if let Some(p) = punct_start.take() {
                    subject_punct(&w[p..i], em);
                }
                start.get_or_insert(i);
            } else {
                if let Some(s) = start.take() {
                    subject_word(&w[s..i], em);
                }
                punct_start.get_or_insert(i);
            }
        }
        if let Some(s) = start {
            subject_word(&w[s..], em);
        }
        if let Some(p) = punct_start {
            subject_punct(&w[p..], em);
        }
    }
    if letters >= 6 && upper * 10 >= letters * 7 {
        em.emit("subject:", "ALL-CAPS");
    }
}

/// Runs of `!`, `?` and `*` are shouting; other punctuation in subjects (brackets, quotes, encoding debris) is not
/// worth a token.
fn subject_punct(run: &str, em: &mut Emitter) {
    if run.len() <= 8 && run.chars().all(|c| matches!(c, '!' | '?' | '*')) {
        em.emit("subject:", run);
    }
}

fn subject_word(w: &str, em: &mut Emitter) {
    let w = w.trim_matches(|c| c == '.' || c == '-' || c == '\'');
    if w.is_empty() {
        return;
    }
    if w.len() > 20 {
        em.emit("subject:skip:", size_word(w.len()));
    } else {
        em.emit_lower("subject:", w);
    }
}

fn size_word(n: usize) -> &'static str {
    const BUCKETS: [&str; 10] = ["0", "10", "20", "30", "40", "50", "60", "70", "80", "90+"];
    BUCKETS[(n / 10).min(9)]
}

/// Addresses and display-name words of an address field.
fn address_tokens(lname: &str, value: &str, em: &mut Emitter) {
    let mut any_address = false;
    for raw in value
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"' | '(' | ')'))
    {
        if raw.is_empty() {
            continue;
        }
        if let Some((local, domain)) = raw.rsplit_once('@') {
            let domain = domain.trim_end_matches('.');
            if domain.is_empty() {
                continue;
            }
            any_address = true;
            em.emit_lower(&format!("{lname}:addr:"), raw);
            domain_tokens(&format!("{lname}:domain:"), domain, em);
            if local.chars().any(|c| c.is_ascii_digit()) {
                em.emit(&format!("{lname}:"), "local-has-digits");
            }
        } else if lname == "from" && raw.len() >= 2 && raw.len() <= 20 {
            em.emit_lower("from:name:", raw);
        }
    }
    if !any_address {
        em.emit(&format!("{lname}:"), "no-address");
    }
}

/// A host name and each of its parent domains with at least two labels.
fn domain_tokens(prefix: &str, host: &str, em: &mut Emitter) {
    let host = host.trim_matches('.');
    if host.is_empty() || host.len() > 253 {
        return;
    }
    let mut rest = host;
    for _ in 0..6 {
        em.emit_lower(prefix, rest);
        match rest.split_once('.') {
            Some((_, parent)) if parent.contains('.') => rest = parent,
            _ => break,
        }
    }
}

/// Host names and IP prefixes from one `Received` field.
fn received_tokens(value: &str, em: &mut Emitter) {
    for w in value.split(|c: char| {
        c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ';' | '<' | '>' | '=')
    }) {
        let w = w.trim_matches(|c| c == '.' || c == ',');
        if w.len() < 4 || !w.contains('.') {
            continue;
        }
        if let Some(ip) = ipv4(w) {
            let [a, b, c, _] = ip;
            em.emit("rcvd:ip:", &format!("{a}"));
            em.emit("rcvd:ip:", &format!("{a}.{b}"));
            em.emit("rcvd:ip:", &format!("{a}.{b}.{c}"));
            em.emit("rcvd:ip:", w);
        } else if w.contains('@') {
            continue;
        } else if w
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && w.bytes().any(|b| b.is_ascii_alphabetic())
        {
            domain_tokens("rcvd:", w, em);
        }
    }
}

fn ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for piece in s.split('.') {
        if n == 4
            || piece.is_empty()
            || piece.len() > 3
            || !piece.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        out[n] = piece.parse().ok()?;
        n += 1;
    }
    (n == 4).then_some(out)
}

/// Body text: URLs and e-mail addresses split into pieces, words lower-cased, long runs summarised.
fn text_tokens(text: &str, em: &mut Emitter) {
    let text = truncate_str(text, em.text_budget);
    em.text_budget -= text.len();
    let mut urls = 0usize;
    for chunk in text.split_whitespace() {
        if em.full() {
            return;
        }
        if let Some(at) = find_url(chunk) {
            if at > 0 {
                word_tokens(&chunk[..at], em);
            }
            if urls < MAX_URLS {
                url_tokens(&chunk[at..], em);
                urls += 1;
            }
            continue;
        }
        word_tokens(chunk, em);
    }
}

/// Byte offset of a URL start (`http://`, `https://`, `ftp://`, `www.`) in a whitespace-free chunk.
fn find_url(chunk: &str) -> Option<usize> {
    if chunk.len() < 7 {
        return None;
    }
    let b = chunk.as_bytes();
    for i in 0..b.len().saturating_sub(3) {
        let rest = &b[i..];
        let starts = |p: &[u8]| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p);
        if (rest[0] == b'h' || rest[0] == b'H') && (starts(b"http://") || starts(b"https://")) {
            return Some(i);
        }
        if (rest[0] == b'w' || rest[0] == b'W')
            && starts(b"www.")
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
        {
            return Some(i);
        }
        if (rest[0] == b'f' || rest[0] == b'F') && starts(b"ftp://") {
            return Some(i);
        }
    }
    None
}

fn word_tokens(chunk: &str, em: &mut Emitter) {
    let w = chunk.trim_matches(|c: char| {
        matches!(
            c,
            '.' | ','
                | ';'
                | ':'
                | '!'
                | '?'
                | '('
                | ')'
                | '"'
                | '\''
                | '['
                | ']'
                | '<'
                | '>'
                | '{'
                | '}'
                | '*'
                | '`'
        )
    });
    if w.is_empty() {
        return;
    }
    // A byte scan: `rsplit_once('@')` goes through the generic char searcher, 2% of scoring on every word.
    if let Some(at) = w.bytes().rposition(|b| b == b'@')
        && let (local, domain) = (&w[..at], &w[at + 1..])
        && domain.contains('.')
        && !local.is_empty()
    {
        domain_tokens("email:", domain, em);
        if local.len() <= 20 {
            em.emit_lower("email:name:", local);
        }
        return;
    }
    let n = w.chars().count();
    if n < MIN_WORD {
        return;
    }
    if n <= MAX_WORD {
        em.emit_lower("", w);
        return;
    }
    // Long runs: words glued by punctuation are split once; genuine junk (base64, hex, tracking ids) is summarised
    // by its first character and length.
    let pieces: Vec<&str> = w
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '$')
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.len() > 1 && pieces.len() <= 8 && pieces.iter().all(|p| p.chars().count() <= MAX_WORD)
    {
        for p in pieces {
            if p.chars().count() >= MIN_WORD {
                em.emit_lower("", p);
            }
        }
        return;
    }
    let first = w
        .chars()
        .next()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .unwrap_or('?');
    let mut buf = [0u8; 4];
    em.emit(
        &format!("skip:{} ", first.encode_utf8(&mut buf)),
        size_word(n),
    );
}

/// Host suffixes, path pieces and the shape of one URL.
fn url_tokens(url: &str, em: &mut Emitter) {
    let url = url.trim_end_matches(['.', ',', ';', ')', '"', '\'', '>', ']']);
    let url = truncate_str(url, 512);
    let (proto, rest) = match url.find("://") {
        Some(p) => (&url[..p], &url[p + 3..]),
        None => ("www", url),
    };
    em.emit_lower("proto:", proto);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| {
        em.emit("url:", "userinfo");
        h
    });
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            em.emit("url:", "port");
            h
        }
        _ => host_port,
    };
    if ipv4(host).is_some() {
        em.emit("url:", "ip");
    } else if host.contains('%') {
        em.emit("url:", "encoded-host");
    } else {
        domain_tokens("url:", host, em);
    }
    if path.contains('%') {
        em.emit("url:", "%-encoded");
    }
    for piece in path
        .split(['/', '?', '&', '=', '.', '-', '_', '#', '+', '~'])
        .filter(|p| p.len() >= 2)
        .take(MAX_URL_PIECES)
    {
        if piece.len() <= 20 {
            em.emit_lower("url:", piece);
        } else {
            em.emit("url:long:", size_word(piece.len()));
        }
    }
}

#[cfg(test)]
mod tests;
