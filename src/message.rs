//! MIME view of a message (decoded subject and text, URLs, Received IPs) and header splicing for tags.
//!
//! SKELETON: the field set below is the contract other modules code against; `MessageView::parse`
//! and the splicing functions are filled in by the rules/message work.

use std::net::IpAddr;

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
    /// Decoded text of all text parts (quoted-printable/base64 undone, charsets to UTF-8, HTML turned to text).
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
    /// True when the scanned bytes were cut at the scan limit.
    pub truncated: bool,
}

impl MessageView {
    /// Parses a message (or its scanned prefix). Never fails: unparseable parts are skipped.
    pub fn parse(_raw: &[u8]) -> MessageView {
        MessageView::default()
    }
}
