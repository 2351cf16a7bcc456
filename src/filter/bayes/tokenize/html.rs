//! HTML bodies: their text, plus tokens for the structure spammers use (tags, hidden text, tiny fonts, links).

use super::*;

/// HTML: structure tokens, then the visible text through `text_tokens`.
pub(super) fn html_tokens(html: &str, em: &mut Emitter) {
    let html = truncate_str(html, em.text_budget.max(4096));
    let mut text = String::with_capacity(html.len() / 2);
    let b = html.as_bytes();
    let mut i = 0;
    let mut links = 0usize;
    let mut images = 0usize;
    let mut comments = 0usize;
    while i < b.len() {
        if b[i] == b'<' {
            let window = &b[i..b.len().min(i + MAX_TAG_LEN)];
            if window.starts_with(b"<!--") {
                comments += 1;
                match find_bytes(&b[i + 4..], b"-->") {
                    Some(e) => i += 4 + e + 3,
                    None => break,
                }
                continue;
            }
            let Some(close) = window.iter().position(|&c| c == b'>') else {
                text.push('<');
                i += 1;
                continue;
            };
            let tag = &html[i + 1..i + close];
            i += close + 1;
            let closing = tag.starts_with('/');
            let tag_body = tag.trim_start_matches('/');
            let name_end = tag_body
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(tag_body.len());
            let name = tag_body[..name_end].to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if !closing {
                em.emit("html:", &name);
                let attrs = &tag_body[name_end..];
                match name.as_str() {
                    "a" => links += 1,
                    "img" => images += 1,
                    _ => {}
                }
                attr_tokens(&name, attrs, em);
                if name == "script" || name == "style" {
                    // Their contents are not text anybody reads.
                    let end_tag = if name == "script" {
                        "</script"
                    } else {
                        "</style"
                    };
                    match find_ci(&html[i..], end_tag) {
                        Some(e) => i += e,
                        None => break,
                    }
                }
            }
            if matches!(
                name.as_str(),
                "br" | "p"
                    | "div"
                    | "tr"
                    | "td"
                    | "th"
                    | "li"
                    | "table"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "title"
                    | "hr"
            ) {
                text.push(' ');
            }
        } else if b[i] == b'&' {
            let (decoded, used) = entity(&html[i..]);
            text.push_str(decoded.as_deref().unwrap_or("&"));
            i += used;
        } else {
            let next = b[i..]
                .iter()
                .position(|&c| c == b'<' || c == b'&')
                .map_or(b.len(), |p| i + p);
            text.push_str(&html[i..next]);
            i = next;
        }
    }
    em.emit("html:links:", count_bucket(links));
    em.emit("html:images:", count_bucket(images));
    if comments > 0 {
        em.emit("html:comments:", count_bucket(comments));
    }
    let visible = text.split_whitespace().map(str::len).sum::<usize>();
    if !html.is_empty() {
        const DECILES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
        em.emit("html:text%:", DECILES[(visible * 10 / html.len()).min(10)]);
    }
    text_tokens(&text, em);
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
}

/// Attribute signals: link and image targets, hidden or tiny text, invisible colours.
fn attr_tokens(tag: &str, attrs: &str, em: &mut Emitter) {
    if attrs.trim().is_empty() {
        return;
    }
    let lower = attrs.to_ascii_lowercase();
    for (key, value) in attributes(&lower) {
        match key {
            "href" | "src" | "action" | "background" => {
                if value.starts_with("http")
                    || value.starts_with("www.")
                    || value.starts_with("ftp")
                {
                    url_tokens(value, em);
                } else if value.starts_with("mailto:") {
                    em.emit("html:", "mailto");
                } else if value.starts_with("cid:") {
                    em.emit("html:", "cid-image");
                }
            }
            "style" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                if compact.contains("display:none") {
                    em.emit("html:", "display-none");
                }
                if compact.contains("visibility:hidden") {
                    em.emit("html:", "visibility-hidden");
                }
                if let Some(p) = compact.find("font-size:") {
                    let v = &compact[p + 10..];
                    if v.starts_with("0") || v.starts_with("1px") || v.starts_with("2px") {
                        em.emit("html:", "tiny-font");
                    }
                }
                if compact.contains("color:#fff") || compact.contains("color:white") {
                    em.emit("html:", "white-text");
                }
            }
            "size" if tag == "font" => em.emit("html:font-size:", value.trim_start_matches('+')),
            "color" if tag == "font" => {
                if matches!(value, "#ffffff" | "#fff" | "white") {
                    em.emit("html:", "white-text");
                } else {
                    em.emit("html:font-color", "");
                }
            }
            "width" | "height" if tag == "img" && (value == "1" || value == "0") => {
                em.emit("html:", "web-bug");
            }
            _ => {}
        }
    }
}

/// `key=value` pairs of a lower-cased attribute string (quotes removed); bounded by the tag length.
fn attributes(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < 32 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' {
            i += 1;
        }
        let key = &s[ks..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let (vs, ve);
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                vs = i + 1;
                let e = b[vs..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |p| vs + p);
                ve = e;
                i = (e + 1).min(b.len());
            } else {
                vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                ve = i;
            }
            if !key.is_empty() {
                out.push((key, &s[vs..ve]));
            }
        } else if key.is_empty() {
            i += 1;
        }
    }
    out
}

/// Decodes one HTML character reference at the start of `s`; returns the text and the bytes used.
fn entity(s: &str) -> (Option<String>, usize) {
    let b = s.as_bytes();
    let Some(end) = b.iter().take(12).position(|&c| c == b';') else {
        return (None, 1);
    };
    let name = &s[1..end];
    let decoded = match name {
        "nbsp" => Some(" ".to_string()),
        "amp" => Some("&".to_string()),
        "lt" => Some("<".to_string()),
        "gt" => Some(">".to_string()),
        "quot" => Some("\"".to_string()),
        "apos" => Some("'".to_string()),
        _ => {
            let num = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
            {
                u32::from_str_radix(hex, 16).ok()
            } else {
                name.strip_prefix('#').and_then(|d| d.parse().ok())
            };
            num.and_then(char::from_u32).map(|c| c.to_string())
        }
    };
    match decoded {
        Some(d) => (Some(d), end + 1),
        // Unknown names (&eacute; ...) read as a word break.
        None if name.bytes().all(|c| c.is_ascii_alphanumeric()) => (Some(" ".into()), end + 1),
        None => (None, 1),
    }
}
