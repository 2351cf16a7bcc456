//! Lenient transfer decoding for parts mail-parser gives up on: the last part of a scanned prefix has no
//! closing boundary (the proxy scores the first `scan_limit` bytes, or a `TOP n L` answer), and mail-parser
//! then keeps it undecoded. Spam filtering wants whatever text can be recovered, not strictness.

use mail_parser::decoders::charsets::map::charset_decoder;

/// Decodes base64, skipping characters outside the alphabet (line breaks, stray spaces) and stopping at the
/// first `=`; a trailing partial group yields the bytes it completes.
pub(super) fn base64_lenient(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut n = 0u8;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            // A boundary line ends the part even when its closing delimiter never came.
            b'-' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

/// Decodes quoted-printable (RFC 2045 §6.7), keeping malformed escapes as written.
pub(super) fn quoted_printable_lenient(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        match (input.get(i + 1), input.get(i + 2)) {
            // Soft line break: "=\n" or "=\r\n".
            (Some(b'\n'), _) => i += 2,
            (Some(b'\r'), Some(b'\n')) => i += 3,
            (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(h) << 4 | hex(l));
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Bytes in `charset` (as declared; unknown or missing means UTF-8 with replacement) to a String.
pub(super) fn to_utf8(bytes: &[u8], charset: Option<&str>) -> String {
    match charset.and_then(|c| charset_decoder(c.trim().as_bytes())) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_tolerates_breaks_garbage_and_truncation() {
        assert_eq!(base64_lenient(b"SGVs\nbG8g\r\nd29y bGQ="), b"Hello world");
        assert_eq!(base64_lenient(b"SGVsbG8gd29ybGQ"), b"Hello world");
        // Cut in the middle of a group: the complete bytes survive.
        assert_eq!(base64_lenient(b"SGVsbG8gd2"), b"Hello w");
        assert_eq!(base64_lenient(b"SGVsbG8=\n--boundary\nmore"), b"Hello");
        assert_eq!(base64_lenient(b""), b"");
    }

    #[test]
    fn quoted_printable_tolerates_bad_escapes() {
        assert_eq!(
            quoted_printable_lenient(b"caf=C3=A9 soft=\nbreak=\r\nx"),
            "café softbreakx".as_bytes()
        );
        assert_eq!(quoted_printable_lenient(b"100=%=ZZ end="), b"100=%=ZZ end=");
    }

    #[test]
    fn charsets() {
        assert_eq!(to_utf8(b"Gr\xfc\xdfe", Some("iso-8859-1")), "Grüße");
        assert_eq!(to_utf8("Grüße".as_bytes(), None), "Grüße");
        assert_eq!(to_utf8(b"a\xffb", Some("x-unknown")), "a\u{fffd}b");
    }
}
