//! A message's identity for "already trained": the same message with or without this proxy's tags is one message.

use sha2::{Digest as _, Sha256};

use super::MAX_DIGEST_BYTES;
use super::store;
use crate::message::encode::{self, encode_words};

/// The identity of a message for "already trained": SHA-256 of its bytes with line ends normalised and what this
/// proxy (or SpamAssassin) adds left out, so a tagged copy is the same message: the `X-Spam-*` and `X-Popguard-*`
/// fields (and `X-Prev-*`, what the proxy renames incoming ones to), and `subject_prefix` at the start of the
/// Subject (as written: literally, or as RFC 2047 encoded words for a non-ASCII prefix). A Subject that holds
/// nothing but the prefix, or nothing at all, is left out too: the proxy adds `Subject: PREFIX` to spam without one.
/// Everything else is hashed exactly as it is.
pub fn message_digest(raw: &[u8], subject_prefix: &str) -> store::Digest {
    let raw = &raw[..raw.len().min(MAX_DIGEST_BYTES)];
    let forms = prefix_forms(subject_prefix);
    let mut h = Sha256::new();
    let mut line_out = |bytes: &[&[u8]]| {
        for b in bytes {
            h.update(b);
        }
        h.update(b"\n");
    };
    let mut in_header = true;
    let mut skipping = false;
    let mut first = true;
    // A Subject line whose value is empty or only the prefix, held until the next line shows whether a
    // continuation line carries the real subject.
    let mut held: Option<HeldSubject> = None;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if first {
            first = false;
            if line.starts_with(b"From ") {
                continue;
            }
        }
        if in_header {
            let continues = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
            match held.take() {
                // The proxy folded its prefix onto a line of its own: the original value is the next line.
                Some(HeldSubject::PrefixOnly { head }) if continues => {
                    line_out(&[head, &line[1..]]);
                    continue;
                }
                Some(HeldSubject::Empty { line: orig }) if continues => line_out(&[orig]),
                // Nothing follows: the proxy added this Subject, or filled an empty one.
                _ => {}
            }
            if line.is_empty() {
                in_header = false;
            } else if continues {
                if skipping {
                    continue;
                }
            } else {
                skipping = is_tag_field(line);
                if skipping {
                    continue;
                }
                match subject_without_prefix(line, &forms) {
                    Some(Subject::Stripped { head, rest }) => {
                        line_out(&[head, rest]);
                        continue;
                    }
                    Some(Subject::Held(s)) => {
                        held = Some(s);
                        continue;
                    }
                    None => {}
                }
            }
        }
        line_out(&[line]);
    }
    let full = h.finalize();
    let mut d = [0u8; store::DIGEST_LEN];
    d.copy_from_slice(&full[..store::DIGEST_LEN]);
    d
}

/// Fields added by taggers, never part of the message's identity; `x-prev-` is what `proxy::tag::forged` renames
/// incoming `X-Spam-*`/`X-Popguard-*` fields to (same length), so the delivered copy keeps the original's digest.
fn is_tag_field(line: &[u8]) -> bool {
    let starts = |p: &[u8]| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p);
    starts(b"x-spam-") || starts(b"x-popguard-") || starts(b"x-prev-")
}

enum HeldSubject<'a> {
    /// `Subject:` and whitespace, the prefix after it removed.
    PrefixOnly { head: &'a [u8] },
    /// The whole line of a Subject with an empty first line.
    Empty { line: &'a [u8] },
}

enum Subject<'a> {
    /// The line without the prefix: `head` (`Subject:` and whitespace), then `rest`.
    Stripped {
        head: &'a [u8],
        rest: &'a [u8],
    },
    Held(HeldSubject<'a>),
}

/// A Subject line with the prefix taken off, or held (empty or prefix-only); `None` for any other line.
fn subject_without_prefix<'a>(line: &'a [u8], forms: &[Vec<u8>]) -> Option<Subject<'a>> {
    const NAME: &[u8] = b"subject:";
    if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return None;
    }
    let ws = line[NAME.len()..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let (head, value) = line.split_at(NAME.len() + ws);
    if value.is_empty() {
        return Some(Subject::Held(HeldSubject::Empty { line }));
    }
    for form in forms {
        let Some(after) = value.strip_prefix(form.as_slice()) else {
            continue;
        };
        if after.is_empty() {
            return Some(Subject::Held(HeldSubject::PrefixOnly { head }));
        }
        if let Some(rest) = after.strip_prefix(b" ") {
            return Some(Subject::Stripped { head, rest });
        }
    }
    None
}

/// The forms in which the proxy writes `prefix` into a Subject, longest first. It must match what
/// `proxy::tag::subject_edit` writes: the trimmed prefix literally when it is printable ASCII without `=?`, else
/// encoded words, with the gap to an encoded original subject carried inside the last word.
fn prefix_forms(prefix: &str) -> Vec<Vec<u8>> {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return Vec::new();
    }
    let literal = encode::is_literal(prefix);
    if literal {
        return vec![prefix.as_bytes().to_vec()];
    }
    vec![
        encode_words(&format!("{prefix} ")).into_bytes(),
        encode_words(prefix).into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "[SPAM]";

    fn digest(m: &str) -> store::Digest {
        message_digest(m.as_bytes(), PREFIX)
    }

    #[test]
    fn digest_ignores_line_ends_and_spam_tags() {
        let a = digest("Subject: x\nFrom: y\n\nbody\n");
        let b = digest("Subject: x\r\nX-Spam-Status: Yes,\r\n  tests=A\r\nFrom: y\r\n\r\nbody\r\n");
        assert_eq!(a, b);
        assert_ne!(a, digest("Subject: x\nFrom: y\n\nbody!\n"));
    }

    #[test]
    fn a_tagged_copy_has_the_same_digest() {
        let original = "From: a@example.org\r\nSubject: cheap pills\r\n\r\nbody\r\n";
        let tagged = "X-Spam-Flag: YES\r\nX-Spam-Score: 9.1\r\nX-Spam-Status: Yes, score=9.1\r\n  tests=A,B\r\n\
                      X-Popguard-Link: release with popguard quarantine release\r\n\
                      X-Prev-Flag: NO\r\nX-Prev-Status: No, score=-10.0\r\n\ttests=NONE\r\n\
                      From: a@example.org\r\nSubject: [SPAM] cheap pills\r\n\r\nbody\r\n";
        assert_eq!(digest(original), digest(tagged));
        // A different real subject is a different message, tagged or not.
        let other = tagged.replace("cheap pills", "cheap pill");
        assert_ne!(digest(original), digest(&other));
        assert_ne!(
            digest(original),
            digest(&original.replace("cheap pills", "[SPAM]cheap pills"))
        );
        // Another prefix is not this proxy's.
        assert_ne!(
            digest(original),
            digest(&original.replace("cheap pills", "[JUNK] cheap pills"))
        );
        assert_eq!(
            message_digest(original.as_bytes(), "[JUNK]"),
            message_digest(
                original
                    .replace("cheap pills", "[JUNK] cheap pills")
                    .as_bytes(),
                "[JUNK]"
            )
        );
    }

    #[test]
    fn added_and_folded_subjects_are_the_original() {
        // No Subject: the proxy adds one holding only the prefix.
        assert_eq!(
            digest("From: a\r\n\r\nbody\r\n"),
            digest("Subject: [SPAM]\r\nFrom: a\r\n\r\nbody\r\n")
        );
        // An empty Subject, filled with the prefix.
        assert_eq!(
            digest("Subject: \r\nFrom: a\r\n\r\nb\r\n"),
            digest("Subject: [SPAM]\r\nFrom: a\r\n\r\nb\r\n")
        );
        // A Subject too long for the prefix on its line is folded after it.
        let long = "x".repeat(990);
        assert_eq!(
            digest(&format!("Subject: {long}\r\nFrom: a\r\n\r\nb\r\n")),
            digest(&format!(
                "Subject: [SPAM]\r\n {long}\r\nFrom: a\r\n\r\nb\r\n"
            ))
        );
        // A Subject whose text starts on a continuation line is kept as it is.
        let folded = "Subject:\r\n real\r\nFrom: a\r\n\r\nb\r\n";
        assert_ne!(digest(folded), digest("From: a\r\n\r\nb\r\n"));
    }

    #[test]
    fn an_encoded_prefix_is_recognised() {
        let prefix = "[ПОДОЗР]";
        assert_eq!(
            encode_words(prefix),
            "=?UTF-8?Q?=5B=D0=9F=D0=9E=D0=94=D0=9E=D0=97=D0=A0=5D?="
        );
        let d = |m: String| message_digest(m.as_bytes(), prefix);
        let enc = "=?UTF-8?B?w6ljaGFudGlsbG9u?=";
        assert_eq!(
            d(format!("Subject: {enc}\r\n\r\nb\r\n")),
            d(format!(
                "Subject: {} {enc}\r\n\r\nb\r\n",
                encode_words(&format!("{prefix} "))
            ))
        );
        assert_eq!(
            d("Subject: plain words\r\n\r\nb\r\n".into()),
            d(format!(
                "Subject: {} plain words\r\n\r\nb\r\n",
                encode_words(prefix)
            ))
        );
    }
}
