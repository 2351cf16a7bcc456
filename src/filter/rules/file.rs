//! The rule-file format: TOML parsed into specs that remember the line each rule and setting came from.
//!
//! Patterns use the `regex` crate's syntax with Unicode off by default: `\b`, `\w`, `\s`, `\d` and `(?i)` are
//! ASCII, which keeps the lazy DFA usable on any text (Unicode word boundaries force a slower engine on
//! non-ASCII input). Literal UTF-8 still matches as written; `(?u)` (or `(?u:...)`) opts a pattern (or part)
//! into Unicode classes such as `\p{Lu}`.
//!
//! ```toml
//! whitelist_from = ["*@example.org"]      # optional, any file
//! blacklist_from = ["*@spam.example"]
//! disable = ["SUBJ_ALL_CAPS"]             # rules (from any file) to turn off
//! [score]
//! BODY_CLICK_HERE = 0.5                   # change a rule's score
//!
//! [[rule]]
//! name = "SUBJ_VIAGRA"
//! target = "subject"                      # see `Target`
//! pattern = '(?i)\bviagra\b'
//! score = 2.5
//! description = "Subject mentions viagra"
//! negate = false                          # optional: hit when the pattern does NOT match
//! min_matches = 1                         # optional: matches needed (text: occurrences; lists: items)
//!
//! [[rule]]
//! name = "BODY_PILLS"
//! target = "body"
//! patterns = ['(?i)\bviagra\b', '(?i)\bcialis\b']  # several patterns: the rule matches when any does
//! score = 1.0                             # (short patterns keep the regex prefilter: much faster on bodies)
//! description = "..."
//!
//! [[rule]]
//! name = "HTML_BULK"
//! expr = "__HTML_ONLY && (BODY_REMOVE_LINE || BODY_UNSUBSCRIBE)"   # a meta rule over other rules
//! score = 1.0
//! description = "..."
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::RulesError;

/// Largest rule file read. The default set is ~40 KiB; a rule file of megabytes is a mistake (or a corpus
/// pasted in), and every file is compiled into memory.
pub const MAX_RULE_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Longest rule name; names appear in `X-Spam-Status`, which should stay readable on one folded line per hit.
pub const MAX_NAME_LEN: usize = 64;

/// What a rule's pattern is matched against (all values decoded; see `MessageView`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The decoded Subject.
    Subject,
    /// The decoded From field as written.
    From,
    /// Each decoded value of one header field (name compared case-insensitively; stored lower-cased).
    Header(String),
    /// All decoded header fields as `Name: value` lines (use `(?m)^` to anchor at a field).
    Headers,
    /// The raw header block as received (encoded words and folding intact).
    RawHeaders,
    /// Decoded text of all text parts, HTML converted to text.
    Body,
    /// Raw HTML of HTML parts.
    Html,
    /// Each URL found in text and HTML.
    Url,
    /// Each distinct URL host.
    UrlHost,
    /// One line per MIME part: `type/subtype [charset=..] [encoding=..] [attachment] [name=..]`.
    Mime,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        Some(match s {
            "subject" => Target::Subject,
            "from" => Target::From,
            "headers" => Target::Headers,
            "raw_headers" => Target::RawHeaders,
            "body" => Target::Body,
            "html" => Target::Html,
            "url" => Target::Url,
            "url_host" => Target::UrlHost,
            "mime" => Target::Mime,
            _ => {
                let name = s.strip_prefix("header:")?.trim();
                let valid =
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                return valid.then(|| Target::Header(name.to_ascii_lowercase()));
            }
        })
    }

    /// True when the target is a list of short items (each matched separately).
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            Target::Header(_) | Target::Url | Target::UrlHost | Target::Mime
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Subject => f.write_str("subject"),
            Target::From => f.write_str("from"),
            Target::Header(h) => write!(f, "header:{h}"),
            Target::Headers => f.write_str("headers"),
            Target::RawHeaders => f.write_str("raw_headers"),
            Target::Body => f.write_str("body"),
            Target::Html => f.write_str("html"),
            Target::Url => f.write_str("url"),
            Target::UrlHost => f.write_str("url_host"),
            Target::Mime => f.write_str("mime"),
        }
    }
}

pub const TARGET_NAMES: &str =
    "subject, from, header:NAME, headers, raw_headers, body, html, url, url_host, mime";

/// How a rule decides that it hit.
#[derive(Debug, Clone)]
pub enum RuleKind {
    Pattern {
        target: Target,
        /// One or more patterns with the line each was written on; the rule matches when any matches.
        patterns: Vec<(String, usize)>,
        negate: bool,
        min_matches: u32,
    },
    Meta {
        expr: String,
    },
}

/// One rule as written, with where it was written.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub kind: RuleKind,
    pub score: f64,
    pub description: String,
    pub file: String,
    pub line: usize,
    /// Line of the `pattern`/`expr` value, for errors about it.
    pub value_line: usize,
}

/// Something from a rule file that carries its source line.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub file: String,
    pub line: usize,
}

/// Everything one rule file says.
#[derive(Debug, Clone, Default)]
pub struct FileSpec {
    pub rules: Vec<RuleSpec>,
    pub whitelist_from: Vec<Located<String>>,
    pub blacklist_from: Vec<Located<String>>,
    pub disable: Vec<Located<String>>,
    pub scores: Vec<Located<(String, f64)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    whitelist_from: Vec<Spanned<String>>,
    #[serde(default)]
    blacklist_from: Vec<Spanned<String>>,
    #[serde(default)]
    disable: Vec<Spanned<String>>,
    #[serde(default)]
    score: BTreeMap<Spanned<String>, Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    target: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    patterns: Option<Spanned<Vec<Spanned<String>>>>,
    expr: Option<Spanned<String>>,
    score: Spanned<f64>,
    description: Spanned<String>,
    #[serde(default)]
    negate: bool,
    min_matches: Option<Spanned<u32>>,
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = text.floor_char_boundary(offset.min(text.len()));
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Is `name` an acceptable rule name? Upper-case letters, digits and `_`; a leading `__` marks a helper rule
/// that only feeds meta rules and is never reported.
pub fn valid_name(name: &str) -> bool {
    let body = name.strip_prefix("__").unwrap_or(name);
    name.len() <= MAX_NAME_LEN
        && body.starts_with(|c: char| c.is_ascii_uppercase())
        && body
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses one rule file's text. Errors carry the file name and the line of the offending value; every problem
/// in the file is reported, not only the first.
pub fn parse(file: &str, text: &str) -> Result<FileSpec, Vec<RulesError>> {
    let err = |line: usize, reason: String| RulesError::Invalid {
        file: file.to_owned(),
        line,
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        vec![err(line, e.message().trim().to_owned())]
    })?;
    let line = |span: std::ops::Range<usize>| line_of(text, span.start);
    let located = |v: Spanned<String>| Located {
        line: line(v.span()),
        file: file.to_owned(),
        value: v.into_inner(),
    };

    let mut errors = Vec::new();
    let mut spec = FileSpec {
        whitelist_from: raw.whitelist_from.into_iter().map(located).collect(),
        blacklist_from: raw.blacklist_from.into_iter().map(located).collect(),
        disable: raw.disable.into_iter().map(located).collect(),
        ..FileSpec::default()
    };
    for (name, score) in raw.score {
        let l = line(name.span());
        if !score.get_ref().is_finite() {
            errors.push(err(
                l,
                format!("score for {} must be a finite number", name.get_ref()),
            ));
        }
        spec.scores.push(Located {
            value: (name.into_inner(), score.into_inner()),
            file: file.to_owned(),
            line: l,
        });
    }

    for r in raw.rule {
        let rule_line = line(r.span());
        let r = r.into_inner();
        let name_line = line(r.name.span());
        let name = r.name.into_inner();
        if !valid_name(&name) {
            errors.push(err(
                name_line,
                format!(
                    "rule name {name:?} must be upper-case letters, digits and '_' (at most {MAX_NAME_LEN} \
                     characters; a leading \"__\" marks a helper rule)"
                ),
            ));
        }
        let score = *r.score.get_ref();
        if !score.is_finite() {
            errors.push(err(
                line(r.score.span()),
                format!("{name}: score must be a finite number"),
            ));
        }
        let description = r.description.get_ref().trim().to_owned();
        if description.is_empty() {
            errors.push(err(
                line(r.description.span()),
                format!("{name}: description is empty; say what the rule detects"),
            ));
        }
        let pattern_list: Option<(Vec<Spanned<String>>, usize)> = match (r.pattern, r.patterns) {
            (Some(_), Some(ps)) => {
                errors.push(err(
                    line(ps.span()),
                    format!("{name}: has both pattern and patterns; use one of them"),
                ));
                continue;
            }
            (Some(p), None) => {
                let l = line(p.span());
                Some((vec![p], l))
            }
            (None, Some(ps)) => {
                let l = line(ps.span());
                let ps = ps.into_inner();
                if ps.is_empty() {
                    errors.push(err(l, format!("{name}: patterns is empty")));
                    continue;
                }
                Some((ps, l))
            }
            (None, None) => None,
        };
        let (kind, value_line) = match (pattern_list, r.expr) {
            (Some(_), Some(e)) => {
                errors.push(err(
                    line(e.span()),
                    format!("{name}: has both pattern and expr; a rule is either a pattern or a meta rule"),
                ));
                continue;
            }
            (None, None) => {
                errors.push(err(
                    name_line,
                    format!("{name}: needs a pattern (with a target) or an expr"),
                ));
                continue;
            }
            (None, Some(expr)) => {
                if let Some(t) = &r.target {
                    errors.push(err(
                        line(t.span()),
                        format!("{name}: a meta rule (expr) takes no target"),
                    ));
                }
                if r.negate || r.min_matches.is_some() {
                    errors.push(err(
                        rule_line,
                        format!("{name}: negate and min_matches apply to pattern rules; use ! and + in expr"),
                    ));
                }
                let l = line(expr.span());
                (
                    RuleKind::Meta {
                        expr: expr.into_inner(),
                    },
                    l,
                )
            }
            (Some((patterns, first_line)), None) => {
                let Some(target) = r.target else {
                    errors.push(err(
                        name_line,
                        format!("{name}: pattern rule needs a target ({TARGET_NAMES})"),
                    ));
                    continue;
                };
                let Some(t) = Target::parse(target.get_ref().trim()) else {
                    errors.push(err(
                        line(target.span()),
                        format!(
                            "{name}: unknown target {:?}; use one of {TARGET_NAMES}",
                            target.get_ref()
                        ),
                    ));
                    continue;
                };
                let min_matches = match r.min_matches {
                    Some(m) if *m.get_ref() == 0 => {
                        errors.push(err(
                            line(m.span()),
                            format!("{name}: min_matches must be at least 1"),
                        ));
                        1
                    }
                    Some(m) => m.into_inner(),
                    None => 1,
                };
                let patterns = patterns
                    .into_iter()
                    .map(|p| {
                        let l = line(p.span());
                        (p.into_inner(), l)
                    })
                    .collect();
                (
                    RuleKind::Pattern {
                        target: t,
                        patterns,
                        negate: r.negate,
                        min_matches,
                    },
                    first_line,
                )
            }
        };
        spec.rules.push(RuleSpec {
            name,
            kind,
            score,
            description,
            file: file.to_owned(),
            line: rule_line,
            value_line,
        });
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_error(text: &str) -> (usize, String) {
        match parse("t.toml", text) {
            Err(mut e) if e.len() == 1 => match e.remove(0) {
                RulesError::Invalid { line, reason, .. } => (line, reason),
                other => panic!("unexpected {other}"),
            },
            Err(e) => panic!("expected one error, got {e:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn parses_pattern_and_meta_rules_with_lines() {
        let text = "# comment\n\n[[rule]]\nname = \"A_B\"\ntarget = \"header:X-Mailer\"\npattern = 'x'\n\
                    score = 2\ndescription = \"d\"\n\n[[rule]]\nname = \"__H\"\nexpr = \"A_B && !A_B\"\n\
                    score = 0.0\ndescription = \"helper\"\n[score]\nA_B = 1.5\n";
        let spec = parse("t.toml", text).unwrap();
        assert_eq!(spec.rules.len(), 2);
        let a = &spec.rules[0];
        assert_eq!(a.name, "A_B");
        assert_eq!(a.value_line, 6);
        assert!(a.line <= 4, "rule line {}", a.line);
        assert!(
            matches!(&a.kind, RuleKind::Pattern { target: Target::Header(h), min_matches: 1, patterns, .. }
                if h == "x-mailer" && patterns == &[("x".to_owned(), 6)])
        );
        assert_eq!(a.score, 2.0);
        assert!(matches!(spec.rules[1].kind, RuleKind::Meta { .. }));
        assert_eq!(spec.rules[1].value_line, 12);
        assert_eq!(spec.scores[0].value, ("A_B".to_owned(), 1.5));
        assert_eq!(spec.scores[0].line, 16);
    }

    #[test]
    fn errors_point_at_the_line() {
        let (line, reason) = only_error(
            "[[rule]]\nname = \"X\"\ntarget = \"bogus\"\npattern = 'a'\nscore = 1\ndescription = \"d\"\n",
        );
        assert_eq!(line, 3);
        assert!(reason.contains("unknown target"), "{reason}");

        let (line, reason) = only_error(
            "[[rule]]\nname = \"lower\"\ntarget = \"body\"\npattern = 'a'\nscore = 1\ndescription = \"d\"\n",
        );
        assert_eq!(line, 2);
        assert!(reason.contains("upper-case"), "{reason}");

        let (line, reason) =
            only_error("\n\n[[rule]]\nname = \"X\"\ntarget = \"body\"\npattern = 'a'\nscore = 1\n");
        assert!((3..=7).contains(&line), "{line}");
        assert!(reason.contains("description"), "{reason}");

        let (line, reason) = only_error(
            "[[rule]]\nname = \"X\"\ntarget = \"body\"\npattern = 'a'\nscore = 1\ndescription = \"d\"\ncolour = 1\n",
        );
        assert!((1..=7).contains(&line), "{line}");
        assert!(reason.contains("colour"), "{reason}");

        let (line, _) = only_error("a = [\n1,\n");
        assert!(line >= 2, "{line}");
    }

    #[test]
    fn all_errors_in_a_file_are_reported() {
        let text = "[[rule]]\nname = \"A\"\ntarget = \"nope\"\npattern = 'a'\nscore = 1\ndescription = \"d\"\n\
                    [[rule]]\nname = \"B\"\nscore = 1\ndescription = \"d\"\n";
        let errs = parse("t.toml", text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn names() {
        assert!(valid_name("SUBJ_ALL_CAPS"));
        assert!(valid_name("__HELPER_2"));
        assert!(!valid_name("_X"));
        assert!(!valid_name("9X"));
        assert!(!valid_name("Mixed"));
        assert!(!valid_name(&"A".repeat(65)));
    }
}
