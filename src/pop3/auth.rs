//! The credentials POP3 puts on the wire, encoded once for every side: SASL PLAIN messages (RFC 4616, as used by
//! RFC 5034 AUTH) and the APOP digest (RFC 1939 §7) with the greeting timestamp it is computed over.

use base64::prelude::*;
use md5::Digest as _;

use crate::secret::Secret;

/// A SASL PLAIN message, base64 as on the wire: `authzid NUL authcid NUL passwd` (RFC 4616 §2). An empty authzid
/// means "act as authcid". Bytes, not strings, so a relayed message is re-encoded exactly as it came.
pub fn plain_message(authzid: &[u8], authcid: &[u8], password: &[u8]) -> Secret {
    let mut raw = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    raw.extend_from_slice(authzid);
    raw.push(0);
    raw.extend_from_slice(authcid);
    raw.push(0);
    raw.extend_from_slice(password);
    let encoded = Secret::new(BASE64_STANDARD.encode(&raw));
    // The raw message holds the password in clear.
    raw.fill(0);
    encoded
}

/// The three NUL-separated fields of a decoded PLAIN message: authzid, authcid, password (the password may itself
/// hold NULs: only the first two separate fields).
pub type PlainFields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits a decoded PLAIN message; `None` when it has fewer than two NULs.
pub fn split_plain(raw: &[u8]) -> Option<PlainFields<'_>> {
    let mut parts = raw.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(z), Some(c), Some(p)) => Some((z, c, p)),
        _ => None,
    }
}

/// The APOP digest: lower-case hex MD5 of the greeting timestamp followed by the shared secret (RFC 1939 §7).
pub fn apop_digest(timestamp: &str, password: &Secret) -> Secret {
    let mut h = md5::Md5::new();
    h.update(timestamp.as_bytes());
    h.update(password.expose().as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Secret::new(hex)
}

/// The APOP timestamp `<...@...>` in a greeting text, if any (RFC 1939 §7).
pub fn apop_timestamp(text: &str) -> Option<&str> {
    let start = text.find('<')?;
    let end = start + text[start..].find('>')?;
    let stamp = &text[start..=end];
    stamp.contains('@').then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_is_rfc4616() {
        let m = plain_message(b"", b"tim", b"tanstaaftanstaaf");
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        assert_eq!(m.expose(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        let m = plain_message(b"Ursel", b"Kurt", b"xipj3plmq");
        assert_eq!(
            BASE64_STANDARD.decode(m.expose()).unwrap(),
            b"Ursel\0Kurt\0xipj3plmq"
        );
        assert_eq!(
            split_plain(b"Ursel\0Kurt\0xip\0j"),
            Some((&b"Ursel"[..], &b"Kurt"[..], &b"xip\0j"[..]))
        );
        assert_eq!(split_plain(b"alice\0pw"), None);
        assert_eq!(split_plain(b"\0\0"), Some((&b""[..], &b""[..], &b""[..])));
    }

    #[test]
    fn apop_digest_matches_rfc1939_example() {
        let d = apop_digest(
            "<1896.697170952@dbc.mtview.ca.us>",
            &Secret::new("tanstaaf"),
        );
        assert_eq!(d.expose(), "c4c9334bac560ecc979e58001b3e22fb");
    }

    #[test]
    fn apop_timestamp_from_greeting() {
        assert_eq!(
            apop_timestamp("POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("<no-at>"), None);
        assert_eq!(apop_timestamp("<unclosed@x"), None);
    }
}
