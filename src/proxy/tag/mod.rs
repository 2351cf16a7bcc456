//! Tagging by splicing into the original bytes: `X-Spam-*` fields at the top of the header, a Subject prefix
//! (RFC 2047-correct), the body untouched — and the exact number of bytes that adds, so LIST sizes stay true.
//! Incoming fields of the names the proxy writes are renamed first, through the whole header but at the same length,
//! so sizes do not depend on them ([`forged`]).
//!
//! Everything here depends only on the first `head_cap` bytes of a message (or the whole header when shorter), so the
//! scan (from `TOP`) and the later `RETR` compute the same edit and the size announced in LIST is the size sent.

use crate::filter::Class;
use crate::message::encode::{self, encode_words};

pub mod forged;
pub use forged::ForgedFields;

/// Header bytes searched for the end of the header and the Subject field. Real headers are a few KiB; 64 KiB
/// bounds the buffer held per RETR while covering long Received chains.
pub const MAX_TAG_HEADER: usize = 64 * 1024;
/// RFC 5322 §2.1.1: a line "MUST be no more than 998 characters" (CRLF excluded).
pub const RFC5322_MAX_LINE: usize = 998;
/// RFC 5322 §2.1.1: lines "SHOULD be no more than 78 characters"; the `tests=` list is folded at this width.
pub const RFC5322_FOLD_WIDTH: usize = 78;
pub use crate::message::encode::RFC2047_MAX_WORD;
/// Bytes every message grows by with `tag_sizing = "fixed"`: room for the three `X-Spam-*` fields with a dozen
/// rule names and the Subject prefix; smaller tags are padded to it, larger ones lose rule names (then the prefix).
pub const FIXED_TAG_SIZE: usize = 400;
/// Longest rule name written into `X-Spam-Status`; names are identifiers, this only stops a runaway one.
const MAX_RULE_NAME: usize = 64;

/// Line ending used for inserted lines: the one POP3 line-end type.
pub use crate::pop3::Eol;

/// Where the header of a (possibly partial) message ends, as far as tagging is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadEnd {
    /// The blank line ends at this offset; the header block is everything before it.
    Found(usize),
    /// The whole message is header (no blank line before the end).
    NoBody,
    /// No blank line within the cap: only the first `cap` bytes are considered.
    Overlong,
    /// Not decidable yet: feed more bytes.
    NeedMore,
}

/// Finds the end of the header in the first `cap` bytes of `buf`; `at_eof` says `buf` is the whole message.
///
/// The order of the checks makes the answer depend only on `buf[..cap]` once `cap` bytes are there, which is what
/// keeps the scan and the RETR in agreement.
pub fn head_end(buf: &[u8], cap: usize, at_eof: bool) -> HeadEnd {
    match find_header_end(buf, cap) {
        HeadEnd::NeedMore if at_eof => HeadEnd::NoBody,
        other => other,
    }
}

/// Like [`head_end`] for a buffer that may still grow.
pub fn find_header_end(buf: &[u8], cap: usize) -> HeadEnd {
    let region = &buf[..buf.len().min(cap)];
    let mut line_start = 0;
    while let Some(i) = region[line_start..].iter().position(|&b| b == b'\n') {
        let line = &region[line_start..line_start + i];
        if line.is_empty() || line == b"\r" {
            return HeadEnd::Found(line_start + i + 1);
        }
        line_start += i + 1;
    }
    if buf.len() >= cap {
        HeadEnd::Overlong
    } else {
        HeadEnd::NeedMore
    }
}

/// What the tag says, independent of the message.
#[derive(Debug, Clone)]
pub struct TagSettings {
    /// Subject prefix for spam (e.g. `[SPAM]`); empty disables the Subject edit.
    pub prefix: String,
    /// Add `X-Spam-Status: No, ...` to ham.
    pub mark_ham: bool,
    /// The spam threshold, shown as `required=` in `X-Spam-Status`.
    pub required: f64,
}

/// The verdict facts that go into the header fields.
#[derive(Debug, Clone, Copy)]
pub struct TagVerdict<'a> {
    pub class: Class,
    pub score: f64,
    pub rules: &'a [String],
}

/// The Subject change for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SubjectEdit {
    /// No change (not spam, already prefixed, or no Subject within an overlong header).
    #[default]
    None,
    /// Insert these bytes at this offset of the message.
    Insert(usize, Vec<u8>),
    /// The message has no Subject: add this whole field at the top.
    AddField(Vec<u8>),
}

impl SubjectEdit {
    pub fn len(&self) -> usize {
        match self {
            SubjectEdit::None => 0,
            SubjectEdit::Insert(_, b) | SubjectEdit::AddField(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The complete edit for one message: fields added at offset 0, and the Subject change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagPlan {
    top: Vec<u8>,
    subject: SubjectEdit,
}

impl TagPlan {
    /// Bytes the edit adds to the message (exact: CRLF counted, dot-stuffing not).
    pub fn added_len(&self) -> usize {
        self.top.len() + self.subject.len()
    }

    /// The offset up to which the message must be buffered before [`TagPlan::apply`] can run.
    pub fn needs_bytes(&self) -> usize {
        match &self.subject {
            SubjectEdit::Insert(at, _) => *at,
            _ => 0,
        }
    }

    /// Writes the tagged form of `head` (a prefix of the message at least [`TagPlan::needs_bytes`] long) to `out`;
    /// the rest of the message follows unchanged.
    pub fn apply(&self, head: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.top);
        if let SubjectEdit::AddField(f) = &self.subject {
            out.extend_from_slice(f);
        }
        match &self.subject {
            SubjectEdit::Insert(at, ins) if *at <= head.len() => {
                out.extend_from_slice(&head[..*at]);
                out.extend_from_slice(ins);
                out.extend_from_slice(&head[*at..]);
            }
            _ => out.extend_from_slice(head),
        }
    }

    /// The first bytes to send of a message whose buffered start is `head` (`at_eof`: the whole message), with this
    /// plan computed from the same bytes: owned fields renamed by `forged`, then the tag spliced in. What `forged`
    /// holds back stays in `head`, to go ahead of the next bytes through the same `forged`.
    pub fn start(&self, head: &mut Vec<u8>, at_eof: bool, forged: &mut ForgedFields) -> Vec<u8> {
        let n = forged.rename(head, at_eof);
        let mut out = Vec::with_capacity(n + self.added_len());
        self.apply(&head[..n], &mut out);
        head.drain(..n);
        out
    }
}

/// Plans the tag for a message whose first bytes are `head`, with the header end `end` found by [`head_end`] using
/// the same `cap`. Ham gets at most a status field; unsure always gets one; spam gets the full tag.
pub fn plan(
    head: &[u8],
    end: HeadEnd,
    cap: usize,
    verdict: TagVerdict<'_>,
    settings: &TagSettings,
    eol: Eol,
) -> TagPlan {
    let top = status_fields(verdict, settings, eol);
    let subject = if verdict.class == Class::Spam {
        subject_edit(head, end, cap, &settings.prefix, eol)
    } else {
        SubjectEdit::None
    };
    TagPlan { top, subject }
}

/// [`plan`] grown or shrunk to add exactly `size` bytes (at least 128), for `tag_sizing = "fixed"`, where LIST
/// promises the size before the message is scored. Ham always gets its status field. When the tag is too long,
/// rule names are dropped from the end (the list then ends in `...`), then the Subject prefix; when it is short,
/// the last `X-Spam-Status` line is padded with spaces (an unstructured field, so they carry no meaning).
pub fn plan_fixed(
    head: &[u8],
    end: HeadEnd,
    cap: usize,
    verdict: TagVerdict<'_>,
    settings: &TagSettings,
    eol: Eol,
    size: usize,
) -> TagPlan {
    let settings = TagSettings {
        mark_ham: true,
        ..settings.clone()
    };
    let TagPlan { mut subject, .. } = plan(head, end, cap, verdict, &settings, eol);
    let mut kept = verdict.rules.len();
    let mut top = loop {
        let mut rules: Vec<String> = verdict.rules[..kept].to_vec();
        if kept < verdict.rules.len() {
            rules.push("...".into());
        }
        let top = status_fields(
            TagVerdict {
                rules: &rules,
                ..verdict
            },
            &settings,
            eol,
        );
        if top.len() + subject.len() <= size {
            break top;
        }
        if !subject.is_empty() && kept == 0 {
            subject = SubjectEdit::None;
        } else if kept > 0 {
            kept -= 1;
        } else {
            // Not even the bare fields fit: `size` is below the documented minimum. Send them anyway; the
            // caller's size check logs the difference.
            break top;
        }
    };
    let pad = size.saturating_sub(top.len() + subject.len());
    if pad > 0 {
        // The fields end with the line ending: pad just before it.
        let at = top.len() - eol.bytes().len();
        top.splice(at..at, std::iter::repeat_n(b' ', pad));
    }
    TagPlan { top, subject }
}

/// The `X-Spam-*` fields for a verdict: they depend on nothing in the message, so a cached verdict gives their size.
pub fn status_fields(verdict: TagVerdict<'_>, settings: &TagSettings, eol: Eol) -> Vec<u8> {
    let e = eol.bytes();
    let score = fmt_score(verdict.score);
    let word = match verdict.class {
        Class::Spam => "Yes",
        Class::Unsure => "Unsure",
        Class::Ham if settings.mark_ham => "No",
        Class::Ham => return Vec::new(),
    };
    let mut out = Vec::new();
    if verdict.class == Class::Spam {
        out.extend_from_slice(b"X-Spam-Flag: YES");
        out.extend_from_slice(e);
        out.extend_from_slice(format!("X-Spam-Score: {score}").as_bytes());
        out.extend_from_slice(e);
    }
    let mut line = format!(
        "X-Spam-Status: {word}, score={score} required={} tests=",
        fmt_score(settings.required)
    );
    if verdict.rules.is_empty() {
        line.push_str("none");
    }
    for (i, name) in verdict.rules.iter().enumerate() {
        let name = sanitize_rule_name(name);
        let sep = if i + 1 < verdict.rules.len() { "," } else { "" };
        // Fold before a name that would push the line past the recommended width (the first name always fits
        // on the first line, so the field never starts with a fold).
        if i > 0 && line.len() + name.len() + sep.len() > RFC5322_FOLD_WIDTH {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(e);
            line = String::from("\t");
        }
        line.push_str(&name);
        line.push_str(sep);
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(e);
    out
}

/// One decimal, as SpamAssassin writes scores; never `-0.0` or `NaN` in a header.
fn fmt_score(s: f64) -> String {
    if !s.is_finite() {
        return "0.0".into();
    }
    let t = format!("{s:.1}");
    if t == "-0.0" { "0.0".into() } else { t }
}

/// Rule names come from user-editable files: keep them to identifier characters so no name can break the header.
fn sanitize_rule_name(name: &str) -> String {
    let s: String = name
        .chars()
        .take(MAX_RULE_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// The Subject change for spam, computed from the header region only.
pub fn subject_edit(head: &[u8], end: HeadEnd, cap: usize, prefix: &str, eol: Eol) -> SubjectEdit {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return SubjectEdit::None;
    }
    let (region, complete) = match end {
        HeadEnd::Found(n) => (&head[..n.min(head.len())], true),
        HeadEnd::NoBody => (&head[..head.len().min(cap)], true),
        HeadEnd::Overlong | HeadEnd::NeedMore => (&head[..head.len().min(cap)], false),
    };
    let literal = encode::is_literal(prefix);
    let Some(field) = find_field(region, b"subject") else {
        if !complete {
            // The Subject may lie past the cap; adding a second one would be worse than none.
            return SubjectEdit::None;
        }
        let word = if literal {
            prefix.to_owned()
        } else {
            encode_words(prefix)
        };
        let mut f = format!("Subject: {word}").into_bytes();
        f.extend_from_slice(eol.bytes());
        return SubjectEdit::AddField(f);
    };

    // The value: WSP after the colon skipped on the first line, continuation lines included.
    let mut p = field.colon + 1;
    while p < field.first_line_end && matches!(region[p], b' ' | b'\t') {
        p += 1;
    }
    let ws_after_colon = p > field.colon + 1;
    let first_rest = &region[p..field.first_line_end];
    let value = &region[p..field.end];
    let value_nonempty = value
        .iter()
        .any(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    let starts_encoded = {
        let v = trim_start_fws(value);
        v.starts_with(b"=?")
    };

    let word = if literal {
        prefix.to_owned()
    } else if value_nonempty && starts_encoded {
        // Whitespace between two encoded words is not displayed (RFC 2047 §6.2): carry the gap inside ours.
        encode_words(&format!("{prefix} "))
    } else {
        encode_words(prefix)
    };
    if trim_start_fws(value).starts_with(word.trim_end().as_bytes()) {
        return SubjectEdit::None;
    }

    let lead = if ws_after_colon { "" } else { " " };
    let mut ins = Vec::new();
    ins.extend_from_slice(lead.as_bytes());
    ins.extend_from_slice(word.as_bytes());
    if value_nonempty && !first_rest.is_empty() {
        let first_line_len = field.first_line_end - field.start;
        if first_line_len + ins.len() + 1 > RFC5322_MAX_LINE {
            // Folding keeps the Subject line within the hard limit; the fold unfolds to the same single space.
            ins.extend_from_slice(eol.bytes());
            ins.push(b' ');
        } else {
            ins.push(b' ');
        }
    }
    SubjectEdit::Insert(p, ins)
}

fn trim_start_fws(v: &[u8]) -> &[u8] {
    let n = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(v.len());
    &v[n..]
}

/// A header field's position within a header region.
struct Field {
    start: usize,
    colon: usize,
    /// End of the field's first line, before its CR/LF.
    first_line_end: usize,
    /// End of the field (after the last continuation line), before its line ending.
    end: usize,
}

/// The first field named `name` (lower-case) in `region`, tolerating the obsolete `Name :` form (RFC 5322 §4.5).
fn find_field(region: &[u8], name: &[u8]) -> Option<Field> {
    let lines = split_lines(region);
    for (i, &(start, content_end, _)) in lines.iter().enumerate() {
        let line = &region[start..content_end];
        if line.is_empty() {
            return None;
        }
        if matches!(line[0], b' ' | b'\t') {
            continue;
        }
        let Some(colon_rel) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !trim_wsp_end(&line[..colon_rel]).eq_ignore_ascii_case(name) {
            continue;
        }
        let continuation = lines[i + 1..]
            .iter()
            .take_while(|&&(s, e, _)| e > s && matches!(region[s], b' ' | b'\t'))
            .count();
        return Some(Field {
            start,
            colon: start + colon_rel,
            first_line_end: content_end,
            end: lines[i + continuation].1,
        });
    }
    None
}

fn trim_wsp_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &s[..n]
}

/// Lines as (start, end of content before CR/LF, end including the ending); a last line without ending is included.
fn split_lines(region: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < region.len() {
        match region[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let nl = start + i;
                let content_end = if nl > start && region[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                out.push((start, content_end, nl + 1));
                start = nl + 1;
            }
            None => {
                let mut content_end = region.len();
                if region[content_end - 1] == b'\r' {
                    content_end -= 1;
                }
                out.push((start, content_end, region.len()));
                start = region.len();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
