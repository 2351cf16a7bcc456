//! The CAPA capability list (RFC 2449 §5–6): parse a server's list, query it, edit it, and write it back.

use super::multiline::Stuffer;

/// RFC 2449 does not bound the list; real servers send about ten lines. Cap what we keep so a hostile server
/// cannot make the list large.
pub const MAX_CAPABILITIES: usize = 128;

/// A capability line is a tag and optional parameters; longer lines are cut here (RFC 2449 §4's 255 octets for
/// lines we may repeat to a client).
const MAX_CAPABILITY_LINE: usize = 253;

/// The capability lines of a CAPA response, in order, without CRLF.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    lines: Vec<String>,
}

impl Capabilities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an un-stuffed CAPA body (lines ended by CRLF or LF). Empty lines are skipped, control characters
    /// dropped, and at most [`MAX_CAPABILITIES`] lines kept.
    pub fn parse(body: &[u8]) -> Self {
        Self::from_lines(body.split(|&b| b == b'\n'))
    }

    /// Builds the list from individual lines (bytes or strings).
    pub fn from_lines<I, L>(lines: I) -> Self
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        let mut caps = Capabilities::new();
        for line in lines {
            caps.push(&String::from_utf8_lossy(line.as_ref()));
            if caps.lines.len() >= MAX_CAPABILITIES {
                break;
            }
        }
        caps
    }

    /// Adds a line (e.g. `"SASL PLAIN"`), unless it is empty after cleaning.
    pub fn push(&mut self, line: &str) {
        let clean: String = line
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CAPABILITY_LINE)
            .collect::<String>()
            .trim()
            .to_owned();
        if !clean.is_empty() && self.lines.len() < MAX_CAPABILITIES {
            self.lines.push(clean);
        }
    }

    /// Whether the tag (first word, case-insensitive) is present: `has("TOP")`, `has("SASL")`.
    pub fn has(&self, tag: &str) -> bool {
        self.find(tag).is_some()
    }

    /// The parameters after a tag: `params("SASL")` gives `["PLAIN", "LOGIN"]`.
    pub fn params(&self, tag: &str) -> Option<Vec<&str>> {
        self.find(tag)
            .map(|line| line.split_whitespace().skip(1).collect())
    }

    /// The SASL mechanisms advertised (RFC 5034 §5), upper-cased.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.params("SASL")
            .unwrap_or_default()
            .into_iter()
            .map(str::to_ascii_uppercase)
            .collect()
    }

    /// Removes every line with this tag; returns whether one was present.
    pub fn remove(&mut self, tag: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| !tag_of(l).eq_ignore_ascii_case(tag));
        before != self.lines.len()
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The un-stuffed body (CRLF lines), to send with `Pop3Stream::write_multiline_chunk`.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// The stuffed body with its terminator, to write after a `+OK` line.
    pub fn to_multiline(&self) -> Vec<u8> {
        Stuffer::stuff_all(&self.to_body())
    }

    fn find(&self, tag: &str) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| tag_of(l).eq_ignore_ascii_case(tag))
    }
}

fn tag_of(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_dovecot_style_list() {
        let caps = Capabilities::parse(b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN login\r\nSTLS\r\n");
        assert!(caps.has("top") && caps.has("STLS") && caps.has("SASL"));
        assert!(!caps.has("UTF8"));
        assert_eq!(caps.sasl_mechanisms(), vec!["PLAIN", "LOGIN"]);
        assert_eq!(caps.lines().len(), 9);
        let mut c2 = caps.clone();
        assert!(c2.remove("stls"));
        assert!(!c2.has("STLS"));
        assert_eq!(Capabilities::parse(&c2.to_body()), c2);
        assert!(c2.to_multiline().ends_with(b"SASL PLAIN login\r\n.\r\n"));
    }

    #[test]
    fn hostile_lists_are_bounded() {
        let body = "X\r\n".repeat(10_000);
        assert_eq!(
            Capabilities::parse(body.as_bytes()).lines().len(),
            MAX_CAPABILITIES
        );
        let caps = Capabilities::parse(b"\x00\xffTOP\r\n\r\n   \r\n");
        assert_eq!(caps.lines().len(), 1);
    }
}
