//! MIME view of a message (decoded headers, subject and text, URLs, Received IPs), extracted once per message.
//!
//! `MessageView::parse` is the only place popguard reads MIME structure for scoring: every scorer (rules, DNS
//! blocklists) reads the view, never the raw bytes, so features are decoded once. Parsing is done by `mail-parser`;
//! this module bounds what is collected from it, because the scanned prefix may be hostile (100 000 MIME parts,
//! deep nesting, 100 000 header lines).

mod decode;
pub mod encode;
mod received;
mod urls;

use std::collections::HashSet;
use std::net::IpAddr;

use mail_parser::{
    Encoding, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

/// Header fields collected. Real mail carries well under 200 (long relay chains included); past this a message
/// is malformed or hostile, and the rest of its header is still visible to `raw_headers` rules up to its cap.
pub const MAX_HEADERS: usize = 1000;
/// Bytes of one decoded header value kept. RFC 5322 §2.1.1 limits a line to 998 octets; folded fields may be
/// longer, 16 KiB covers any honest one (long References chains).
pub const MAX_HEADER_VALUE: usize = 16 * 1024;
/// Bytes of the raw header block kept for `raw_headers` rules.
pub const MAX_RAW_HEADERS: usize = 128 * 1024;
/// MIME parts visited (nested messages included). Work per part is small, but a 256 KiB prefix can declare tens
/// of thousands of empty parts; no real message has more than a few hundred.
pub const MAX_PARTS: usize = 1000;
/// Nesting depth of message/rfc822 parts followed (forwarded-of-forwarded mail rarely exceeds 3).
pub const MAX_DEPTH: usize = 8;
/// Bytes of decoded text kept in `body_text`, and separately of raw HTML in `html`.
pub const MAX_TEXT: usize = 1024 * 1024;
/// URLs collected (distinct).
pub const MAX_URLS: usize = 1000;
/// Received-header IPs collected (distinct). Relay chains are short; a long list is itself a spam sign, and the
/// newest hops are the ones a blocklist lookup uses.
pub const MAX_RECEIVED_IPS: usize = 64;
/// Attachment names collected.
pub const MAX_ATTACHMENT_NAMES: usize = 256;
/// Characters kept of one attachment name (RFC 2183 sets no limit; file systems stop at 255).
pub const MAX_ATTACHMENT_NAME_CHARS: usize = 255;

/// Everything the scorers read, extracted once per message.
#[derive(Debug, Clone, Default)]
pub struct MessageView {
    /// Header fields in order, names as written, values unfolded and RFC 2047-decoded.
    pub headers: Vec<(String, String)>,
    /// The raw header block (up to the blank line), lossily UTF-8.
    pub raw_headers: String,
    /// Decoded Subject.
    pub subject: String,
    /// Decoded From field as written (display name and address).
    pub from: String,
    /// The bare sender address from From, lower-cased.
    pub from_address: String,
    /// Decoded text of the body parts (quoted-printable/base64 undone, charsets to UTF-8, HTML turned to text;
    /// one alternative of each multipart/alternative), lines ending in `\n`.
    pub body_text: String,
    /// Raw HTML of HTML parts (decoded transfer encoding), for structure rules.
    pub html: String,
    /// URLs found in text and HTML (href/src included), as written.
    pub urls: Vec<String>,
    /// Host names of those URLs, lower-cased, de-duplicated.
    pub url_hosts: Vec<String>,
    /// IP addresses from Received headers, newest hop first.
    pub received_ips: Vec<IpAddr>,
    /// Content-Type of every MIME part (`text/plain`, `multipart/alternative`, ...), lower-cased.
    pub content_types: Vec<String>,
    /// File names of attachments.
    pub attachment_names: Vec<String>,
    /// One line per MIME part for structure rules:
    /// `TYPE/SUBTYPE [charset=CS] [encoding=base64|quoted-printable] [attachment] [name=FILE]`.
    pub mime_parts: Vec<String>,
    /// True when the scanned bytes were cut at the scan limit.
    pub truncated: bool,
}

/// The one MIME parse of a scored message, shared by the rules' view and the Bayes tokenizer: MIME headers and From
/// (an address) structurally, every other field as RFC 2047-decoded text. Both read that text, and decode the
/// structured fields' bytes as text where they need them. Received stays text: its structured parse was 4% of
/// `popguard score`, and the bracketed relay IP is all anyone reads from it.
pub static PARSER: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .default_header_text()
        .header_address(HeaderName::From)
});

/// `raw` parsed by [`PARSER`]; `None` when mail-parser finds no message, or panics (it indexes on offsets derived
/// from hostile input: a bug there costs one message its parse, never the caller).
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| PARSER.parse(raw)).unwrap_or(None)
}

impl MessageView {
    /// Parses a message (or its scanned prefix). Never fails: unparseable parts are skipped.
    pub fn parse(raw: &[u8]) -> MessageView {
        MessageView::from_parsed(raw, parse(raw).as_ref())
    }

    /// The view of `raw` from its parse by [`PARSER`] (`None`: mail-parser found no message, or failed).
    pub fn from_parsed(raw: &[u8], parsed: Option<&Message<'_>>) -> MessageView {
        let header_end = find_header_end(raw);
        let fresh = || MessageView {
            raw_headers: raw_header_block(raw, header_end),
            ..MessageView::default()
        };
        // mail-parser is written not to panic, but it indexes and subtracts on offsets derived from hostile
        // input (and its HTML converter unwraps); a bug there must cost one message its rule score, never the
        // proxy session. The fallback still lets body rules see the text.
        std::panic::catch_unwind(|| {
            let mut view = fresh();
            match parsed {
                Some(message) if !message.parts.is_empty() => {
                    view.fill(message);
                    if header_end.is_none() && view.body_text.is_empty() {
                        // No blank line: either a bare header block or text that merely looks like one
                        // ("word: word"). Body rules see it too; a real header block rarely trips them.
                        push_capped(&mut view.body_text, &String::from_utf8_lossy(raw), MAX_TEXT);
                    }
                }
                _ => {
                    // No header block at all: score what there is as text so body rules still see it.
                    push_capped(&mut view.body_text, &String::from_utf8_lossy(raw), MAX_TEXT);
                }
            }
            view.collect_urls();
            view
        })
        .unwrap_or_else(|_| {
            let mut view = fresh();
            push_capped(&mut view.body_text, &String::from_utf8_lossy(raw), MAX_TEXT);
            view
        })
    }

    /// Decoded values of every header field named `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn fill(&mut self, message: &Message<'_>) {
        let raw = message.raw_message.as_ref();
        for header in message.headers().iter().take(MAX_HEADERS) {
            // Fields the shared parse read as text are already decoded exactly as `decode_header_value` would;
            // the structured ones (MIME, From) are decoded from their bytes.
            let mut value = match &header.value {
                HeaderValue::Text(t) => t.to_string(),
                _ => decode_header_value(
                    raw.get(header.offset_start as usize..header.offset_end as usize)
                        .unwrap_or_default(),
                ),
            };
            truncate_at_char(&mut value, MAX_HEADER_VALUE);
            let name = header.name.as_str().to_owned();
            if header.name == HeaderName::Received
                && self.received_ips.len() < MAX_RECEIVED_IPS
                && let Some(ip) = received::from_ip(&value)
                && !self.received_ips.contains(&ip)
            {
                self.received_ips.push(ip);
            }
            self.headers.push((name, value));
        }
        self.subject = message.subject().unwrap_or_default().to_owned();
        truncate_at_char(&mut self.subject, MAX_HEADER_VALUE);
        let from = self
            .header_values("From")
            .next()
            .unwrap_or_default()
            .to_owned();
        self.from = from;
        self.from_address = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mut budget = MAX_PARTS;
        self.walk(message, 0, &mut budget);
    }

    /// Visits the parts of `message` (and nested messages) until the part budget runs out.
    ///
    /// Text comes from mail-parser's choice of body parts: one alternative of each multipart/alternative (the
    /// plain one when there is one), so phrase counts are not doubled by the HTML copy of the same text. The
    /// HTML of every HTML body part still goes to `html`, where hidden-text and layout rules look.
    fn walk(&mut self, message: &Message<'_>, depth: usize, budget: &mut usize) {
        let raw = message.raw_message.as_ref();
        for part in &message.parts {
            if *budget == 0 {
                // Stop collecting parts, but still reach the text loops below: returning here let 1000 empty
                // padding parts hide a spam's text from every body rule (found by the fuzz helper).
                break;
            }
            *budget -= 1;
            self.describe_part(part);
            if let PartType::Message(inner) = &part.body
                && depth < MAX_DEPTH
            {
                self.walk(inner, depth + 1, budget);
            }
            if let Some((text, html)) = recover_cut_part(part, raw) {
                self.recover(&text, html);
            }
        }
        for id in message.text_body.iter().take(MAX_PARTS) {
            let Some(part) = message.parts.get(*id as usize) else {
                continue;
            };
            if recoverable(part).is_some() {
                continue;
            }
            match &part.body {
                PartType::Text(text) => append_text(&mut self.body_text, text),
                PartType::Html(html) => {
                    let text = mail_parser::decoders::html::html_to_text(html);
                    append_text(&mut self.body_text, &text);
                }
                _ => {}
            }
        }
        for id in message.html_body.iter().take(MAX_PARTS) {
            if let Some(PartType::Html(html)) = message.parts.get(*id as usize).map(|p| &p.body) {
                append_text(&mut self.html, html);
            }
        }
    }

    /// Adds a text part mail-parser left undecoded (see `recover_cut_part`).
    fn recover(&mut self, text: &str, html: bool) {
        if html {
            append_text(&mut self.html, text);
            let text = mail_parser::decoders::html::html_to_text(text);
            append_text(&mut self.body_text, &text);
        } else {
            append_text(&mut self.body_text, text);
        }
    }

    fn describe_part(&mut self, part: &MessagePart<'_>) {
        let ctype = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            },
            // RFC 2045 §5.2: no Content-Type means text/plain.
            None if part.is_multipart() => "multipart/mixed".to_owned(),
            None => "text/plain".to_owned(),
        }
        .to_ascii_lowercase();
        let mut line = ctype.clone();
        if let Some(cs) = part.content_type().and_then(|ct| ct.attribute("charset")) {
            line.push_str(" charset=");
            line.push_str(&cs.trim().to_ascii_lowercase());
        }
        // The declared encoding: mail-parser resets `part.encoding` when decoding fails (a cut-off part).
        let cte = part
            .content_transfer_encoding()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if cte == "base64" || cte == "quoted-printable" {
            line.push_str(" encoding=");
            line.push_str(&cte);
        }
        if part
            .content_disposition()
            .is_some_and(|d| d.is_attachment())
        {
            line.push_str(" attachment");
        }
        if let Some(name) = part.attachment_name() {
            let name: String = name.chars().take(MAX_ATTACHMENT_NAME_CHARS).collect();
            line.push_str(" name=");
            line.push_str(&name);
            if self.attachment_names.len() < MAX_ATTACHMENT_NAMES {
                self.attachment_names.push(name);
            }
        }
        self.content_types.push(ctype);
        self.mime_parts.push(line);
    }

    fn collect_urls(&mut self) {
        let mut seen = HashSet::new();
        let mut hosts = HashSet::new();
        let mut add = |url: String, view_urls: &mut Vec<String>, view_hosts: &mut Vec<String>| {
            if view_urls.len() >= MAX_URLS || !seen.insert(url.clone()) {
                return;
            }
            if let Some(host) = urls::host_of(&url)
                && hosts.insert(host.clone())
            {
                view_hosts.push(host);
            }
            view_urls.push(url);
        };
        let (mut found_urls, mut found_hosts) = (Vec::new(), Vec::new());
        for url in urls::in_html(&self.html) {
            add(url, &mut found_urls, &mut found_hosts);
        }
        for url in urls::in_text(&self.body_text) {
            add(url, &mut found_urls, &mut found_hosts);
        }
        self.urls = found_urls;
        self.url_hosts = found_hosts;
    }
}

/// The text of a text/plain or text/html part that mail-parser kept raw because its transfer encoding did not
/// end cleanly (the last part of a scanned prefix), decoded leniently to UTF-8; and whether it is HTML. None for
/// every other part. `raw` is the message the part was parsed from (`Message::raw_message`).
pub fn recover_cut_part(part: &MessagePart<'_>, raw: &[u8]) -> Option<(String, bool)> {
    let kind = recoverable(part)?;
    let body = raw
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    let bytes = match kind.encoding {
        Encoding::Base64 => decode::base64_lenient(body),
        Encoding::QuotedPrintable => decode::quoted_printable_lenient(body),
        Encoding::None => body.to_vec(),
    };
    let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
    Some((decode::to_utf8(&bytes, charset), kind.html))
}

/// How to recover a part that mail-parser could not decode.
#[derive(Clone, Copy)]
struct Recover {
    encoding: Encoding,
    html: bool,
}

/// A text/plain or text/html part that mail-parser kept raw because its transfer encoding did not end cleanly,
/// which is what the last part of a scanned prefix looks like (no closing boundary).
fn recoverable(part: &MessagePart<'_>) -> Option<Recover> {
    if !part.is_encoding_problem || !matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
        return None;
    }
    let ct = part.content_type();
    let is_text = ct.is_none_or(|c| c.ctype().eq_ignore_ascii_case("text"));
    if !is_text {
        return None;
    }
    let html = ct
        .and_then(|c| c.subtype())
        .is_some_and(|s| s.eq_ignore_ascii_case("html"));
    let cte = part
        .content_transfer_encoding()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let encoding = match cte.as_str() {
        "base64" => Encoding::Base64,
        "quoted-printable" => Encoding::QuotedPrintable,
        _ => Encoding::None,
    };
    Some(Recover { encoding, html })
}

/// The header block up to the first empty line, lossily decoded and capped.
fn raw_header_block(raw: &[u8], header_end: Option<usize>) -> String {
    let end = header_end.unwrap_or(raw.len());
    let block = &raw[..end.min(MAX_RAW_HEADERS)];
    let mut s = String::from_utf8_lossy(block).into_owned();
    truncate_at_char(&mut s, MAX_RAW_HEADERS);
    s
}

/// Offset of the blank line ending the header (LF or CRLF line ends), if there is one.
fn find_header_end(raw: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    while line_start < raw.len() {
        let rest = &raw[line_start..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return Some(line_start);
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => line_start += nl + 1,
            None => return None,
        }
    }
    None
}

/// Unfolds a raw header value and decodes RFC 2047 encoded words (the unstructured-field rules of RFC 5322
/// §3.2.5 apply to every field for matching purposes: a rule on `To` wants the display names decoded too).
fn decode_header_value(bytes: &[u8]) -> String {
    let mut stream = mail_parser::parsers::MessageStream::new(bytes);
    match stream.parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    }
}

/// Appends one part's text on a new line. Line ends become `\n` (decoded parts keep the CRLF of the wire), so
/// rules can anchor with `(?m)$` whatever the transport.
fn append_text(dst: &mut String, text: &str) {
    if dst.len() >= MAX_TEXT {
        return;
    }
    if !dst.is_empty() {
        dst.push('\n');
    }
    if text.contains('\r') {
        push_capped(dst, &text.replace("\r\n", "\n"), MAX_TEXT);
    } else {
        push_capped(dst, text, MAX_TEXT);
    }
}

/// Appends as much of `src` as fits under `cap` bytes, cutting at a character boundary.
fn push_capped(dst: &mut String, src: &str, cap: usize) {
    let room = cap.saturating_sub(dst.len());
    if src.len() <= room {
        dst.push_str(src);
    } else {
        dst.push_str(&src[..src.floor_char_boundary(room)]);
    }
}

fn truncate_at_char(s: &mut String, cap: usize) {
    if s.len() > cap {
        let at = s.floor_char_boundary(cap);
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests;
