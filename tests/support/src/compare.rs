//! Comparing retrieved messages with their sources "modulo CRLF", with a short diff when they differ.

/// Longest excerpt of a differing line shown in a failure message.
const EXCERPT_CHARS: usize = 160;

/// `msg` with every CRLF turned into LF and a final LF added when missing (POP3 always ends a message with a line
/// terminator, so a source file without one comes back with one).
pub fn normalize(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 1);
    let mut i = 0;
    while i < msg.len() {
        if msg[i] == b'\r' && msg.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(msg[i]);
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// True when `a` and `b` are the same message apart from CRLF vs LF line ends (and a missing final newline).
pub fn same_message(a: &[u8], b: &[u8]) -> bool {
    normalize(a) == normalize(b)
}

/// Describes the first difference between two messages (after normalising), or `None` when they are the same.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<String> {
    let (g, w) = (normalize(got), normalize(want));
    if g == w {
        return None;
    }
    let glines: Vec<&[u8]> = g.split(|&b| b == b'\n').collect();
    let wlines: Vec<&[u8]> = w.split(|&b| b == b'\n').collect();
    let n = glines
        .iter()
        .zip(&wlines)
        .take_while(|(a, b)| a == b)
        .count();
    let show = |lines: &[&[u8]]| match lines.get(n) {
        Some(line) => excerpt(line),
        None => "<end of message>".to_string(),
    };
    Some(format!(
        "first difference at line {} (got {} lines/{} bytes, want {} lines/{} bytes)\n  got:  {}\n  want: {}",
        n + 1,
        glines.len(),
        got.len(),
        wlines.len(),
        want.len(),
        show(&glines),
        show(&wlines)
    ))
}

fn excerpt(line: &[u8]) -> String {
    let text = line.escape_ascii().to_string();
    if text.chars().count() > EXCERPT_CHARS {
        let cut: String = text.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}... ({} bytes)", line.len())
    } else {
        text
    }
}

/// Panics with a short diff unless `got` and `want` are the same message modulo CRLF.
pub fn assert_same_message(label: &str, got: &[u8], want: &[u8]) {
    if let Some(diff) = first_difference(got, want) {
        panic!("{label}: message differs from its source: {diff}");
    }
}

/// Panics unless `got` holds exactly the messages of `want`, in the same order, each the same modulo CRLF. The
/// message names the count mismatch or the first differing message and line.
pub fn assert_same_messages(label: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if let Some(diff) = first_difference(g, w) {
            let subject = subject_of(w);
            panic!(
                "{label}: message {} of {} ({subject}) differs: {diff}",
                i + 1,
                want.len()
            );
        }
    }
    if got.len() != want.len() {
        panic!(
            "{label}: got {} messages, want {} (the first {} match)",
            got.len(),
            want.len(),
            got.len().min(want.len())
        );
    }
}

/// The raw Subject line of a message, for failure messages.
pub fn subject_of(msg: &[u8]) -> String {
    msg.split(|&b| b == b'\n')
        .take_while(|l| !l.is_empty() && *l != b"\r")
        .find(|l| l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"subject:"))
        .map(|l| excerpt(l.strip_suffix(b"\r").unwrap_or(l)))
        .unwrap_or_else(|| "no Subject".to_string())
}

/// The header block of `msg` (up to, not including, the empty line), split into fields; each field keeps its
/// continuation lines and line ends.
pub fn header_fields(msg: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        if pos > start && !matches!(line.first(), Some(b' ' | b'\t')) {
            fields.push(&msg[start..pos]);
            start = pos;
        }
        pos = end;
    }
    if pos > start {
        fields.push(&msg[start..pos]);
    }
    fields
}

/// `msg` without the header fields whose names start with one of `prefixes` (case-insensitive), continuation
/// lines included: e.g. `without_fields(m, &["X-Spam-"])` to compare a tagged message with its source.
pub fn without_fields(msg: &[u8], prefixes: &[&str]) -> Vec<u8> {
    let fields = header_fields(msg);
    let header_len: usize = fields.iter().map(|f| f.len()).sum();
    let mut out = Vec::with_capacity(msg.len());
    for field in fields {
        let drop = prefixes
            .iter()
            .any(|p| field.len() >= p.len() && field[..p.len()].eq_ignore_ascii_case(p.as_bytes()));
        if !drop {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(&msg[header_len..]);
    out
}

/// The value of the first header field called `name` (case-insensitive), unfolded (line ends removed) and
/// trimmed, decoded lossily as UTF-8; RFC 2047 words are left encoded.
pub fn header_value(msg: &[u8], name: &str) -> Option<String> {
    header_fields(msg).into_iter().find_map(|field| {
        let colon = field.iter().position(|&b| b == b':')?;
        if !field[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let value: Vec<u8> = field[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        Some(String::from_utf8_lossy(&value).trim().to_string())
    })
}

/// A relayed message with the proxy's additions removed: its `X-Spam-*` fields and the `[SPAM] ` Subject prefix.
pub fn strip_tag(msg: &[u8]) -> Vec<u8> {
    let m = without_fields(msg, &["X-Spam-"]);
    let needle = b"Subject: [SPAM] ";
    match m.windows(needle.len()).position(|w| w == needle) {
        Some(i) => [&m[..i], b"Subject: ".as_slice(), &m[i + needle.len()..]].concat(),
        None => m,
    }
}
