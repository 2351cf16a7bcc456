//! URL extraction from text and HTML (href/src/action/background attributes), and the host of a URL.

use std::sync::LazyLock;

use regex::Regex;

/// Longest URL kept; longer ones are cut (they are still matched by rules on their first 2 KiB, which is where
/// host tricks live). Browsers accept far longer, but no honest link needs more.
pub const MAX_URL_LEN: usize = 2048;

// Static patterns: a failure here is a bug in this file, caught by the unit tests below. The word boundaries are
// ASCII (`(?-u:\b)`): a Unicode `\b` stops the regex crate's DFA at the first non-ASCII byte and falls back to a
// backtracking engine, which made URL extraction 4% of `popguard score` on non-English mail.
static TEXT_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?-u:\b)(?:(?:https?|ftp)://|www\.)[^\s<>"'`{}|\\^\[\]]+"#)
        .expect("static regex")
});
static HTML_ATTR_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?-u:\b)(?:href|src|action|background)\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+)"#)
        .expect("static regex")
});

/// URLs written in plain text, trailing sentence punctuation removed.
pub(super) fn in_text(text: &str) -> impl Iterator<Item = String> + '_ {
    TEXT_URL.find_iter(text).filter_map(|m| {
        let url = m
            .as_str()
            .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '*']);
        (url.len() > 4).then(|| cap(url))
    })
}

/// Link and resource URLs from HTML attributes, `&amp;` undone; fragments and `cid:` references skipped.
pub(super) fn in_html(html: &str) -> impl Iterator<Item = String> + '_ {
    // `find_iter` and a hand split rather than capture groups: captures run a slower engine on every match.
    HTML_ATTR_URL.find_iter(html).filter_map(|m| {
        let value = m.as_str().split_once('=')?.1.trim_start();
        let raw = match value.as_bytes().first()? {
            q @ (b'"' | b'\'') => value[1..].strip_suffix(*q as char)?,
            _ => value,
        }
        .trim();
        let lower_start = raw.get(..4).unwrap_or(raw).to_ascii_lowercase();
        if raw.is_empty() || raw.starts_with('#') || lower_start == "cid:" {
            return None;
        }
        Some(cap(&raw.replace("&amp;", "&")))
    })
}

fn cap(url: &str) -> String {
    url[..url.floor_char_boundary(MAX_URL_LEN)].to_owned()
}

/// The host of an http(s)/ftp URL or a bare `www.` link, lower-cased, without user info or port.
/// `None` for other schemes (mailto:, javascript:) and relative links.
pub fn host_of(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = if let Some(i) = lower.find("://") {
        let scheme = &lower[..i];
        if !matches!(scheme, "http" | "https" | "ftp") {
            return None;
        }
        &lower[i + 3..]
    } else if lower.starts_with("www.") {
        &lower[..]
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    // `http://trusted.example@198.51.100.7/` goes to the part after the last '@' (RFC 3986 §3.2.1).
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_urls_lose_trailing_punctuation() {
        let found: Vec<_> =
            in_text("see http://example.com/a?b=1. or (www.example.org), ftp://f.example/x!")
                .collect();
        assert_eq!(
            found,
            [
                "http://example.com/a?b=1",
                "www.example.org",
                "ftp://f.example/x"
            ]
        );
    }

    #[test]
    fn html_attributes_in_any_quoting() {
        let html = r##"<a href="http://a.example/?x=1&amp;y=2">x</a><img SRC='http://b.example/i.gif'>
            <form action=http://c.example/post><a href="#top"><img src="cid:part1">"##;
        let found: Vec<_> = in_html(html).collect();
        assert_eq!(
            found,
            [
                "http://a.example/?x=1&y=2",
                "http://b.example/i.gif",
                "http://c.example/post"
            ]
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("http://User@Bank.Example:8080/x").as_deref(),
            Some("bank.example")
        );
        assert_eq!(
            host_of("http://www.bank.example@198.51.100.7/login").as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            host_of("https://[2001:db8::1]:443/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host_of("www.example.org.").as_deref(),
            Some("www.example.org")
        );
        assert_eq!(host_of("http://3232235777/").as_deref(), Some("3232235777"));
        assert_eq!(host_of("mailto:x@example.com"), None);
        assert_eq!(host_of("/relative"), None);
        assert_eq!(host_of("http:///"), None);
    }
}
