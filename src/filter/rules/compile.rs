//! Pattern rules compiled into one `RegexSet` per target, and matched against a `MessageView`.

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::file::Target;
use crate::message::MessageView;

/// Compiled size allowed for one pattern (the regex crate's `size_limit`). Honest rules compile to a few KiB;
/// `(a{1000}){1000}` or `\w{500}` (Unicode) would need tens of MiB and are rejected with the rule's name.
pub const MAX_PATTERN_SIZE: usize = 1024 * 1024;
/// Compiled size allowed for all patterns of one target together.
pub const MAX_SET_SIZE: usize = 64 * 1024 * 1024;
/// Lazy-DFA cache per set (`dfa_size_limit`). Bigger than the crate default (2 MiB) because the body set holds
/// many case-insensitive alternations; a cache that thrashes falls back to a much slower engine.
pub const DFA_CACHE_SIZE: usize = 8 * 1024 * 1024;
/// Parenthesis/repetition nesting accepted in a pattern (the parser's `nest_limit`).
pub const MAX_NEST: u32 = 64;
/// Patterns per `RegexSet` on long texts (body, html, header blocks); see `build_groups`.
pub const MAX_SET_PATTERNS_LONG_TEXT: usize = 4;
/// Occurrences counted for `min_matches` (a count rule never needs more than this to decide).
pub const MAX_MIN_MATCHES: u32 = 1000;

/// One pattern rule inside a target group.
#[derive(Debug)]
pub struct Slot {
    /// Index of the rule in the engine's (global + user) rule table.
    pub rule: usize,
    pub negate: bool,
    pub min_matches: u32,
    /// Only for `min_matches > 1`: the set says whether a pattern matched, not how often.
    pub counter: Option<Regex>,
}

/// All pattern rules on one target.
#[derive(Debug)]
pub struct Group {
    pub target: Target,
    pub set: RegexSet,
    pub slots: Vec<Slot>,
}

/// A validated pattern and, for counting rules, its own compiled regex.
pub type Checked = (Pending, Option<Regex>);

/// A pattern waiting to be compiled into its target's set.
pub struct Pending {
    pub rule: usize,
    pub target: Target,
    pub pattern: String,
    pub negate: bool,
    pub min_matches: u32,
}

/// Compiles one pattern alone, so that an error names the rule; returns it for counting rules.
pub fn check_pattern(pattern: &str) -> Result<Regex, String> {
    let re = RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(MAX_PATTERN_SIZE)
        .dfa_size_limit(MAX_PATTERN_SIZE)
        .nest_limit(MAX_NEST)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "pattern compiles to more than {limit} bytes; simplify it (bounded repeats of large classes such as \
                 \\w{{500}} or nested counted repeats are the usual cause)"
            ),
            regex::Error::Syntax(text) => syntax_error(&text),
            other => format!("pattern does not compile: {other}"),
        })?;
    // A pattern that matches anywhere in any text (`x*`, `(?i)|viagra`) would hit every message.
    // The third probe holds every ASCII punctuation class, so ordinary negated classes such as `^[^@]*$` fail it.
    const PROBES: [&str; 3] = [
        "",
        "zq",
        "@ \n\t Qz 12 <>!\"#$%&'()*+,-./:;=?[]^_`{|}~ \u{e9} \u{4e2d}\r\n",
    ];
    if PROBES.iter().all(|h| re.is_match(h.as_bytes())) {
        return Err("pattern matches any text (an empty alternative or a `*` on everything); it would hit every \
                    message"
            .into());
    }
    Ok(re)
}

/// Turns the regex crate's multi-line syntax error (pattern, caret line, message) into one line for
/// `FILE:LINE: reason`, with a hint for the one surprise of this dialect.
fn syntax_error(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let message = lines
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map_or_else(|| text.replace('\n', " "), |m| m.trim().to_owned());
    // The caret line marks the offending span of the pattern line above it.
    let snippet = lines.windows(2).find_map(|w| {
        let start = w[1].find('^')?;
        let end = w[1].rfind('^')? + 1;
        let marks_only = w[1].trim().chars().all(|c| c == '^');
        marks_only.then(|| w[0].get(start..end)).flatten()
    });
    let mut out = format!("pattern does not compile: {message}");
    if let Some(s) = snippet {
        out.push_str(&format!(" (at `{s}`)"));
    }
    if message.contains("Unicode not allowed") {
        out.push_str(
            "; patterns are ASCII by default, write (?u) or (?u:...) to use Unicode classes",
        );
    }
    out
}

/// Builds one set per target. Patterns were validated one by one before; an error here means the set as a whole
/// is too large, and names the target.
pub fn build_groups(pending: Vec<Checked>) -> Result<Vec<Group>, String> {
    let mut by_target: BTreeMap<Target, Vec<Checked>> = BTreeMap::new();
    for p in pending {
        by_target.entry(p.0.target.clone()).or_default().push(p);
    }
    let mut groups = Vec::new();
    // Long texts get small sets: the lazy DFA of one set over dozens of case-insensitive phrase patterns has so
    // many states that it thrashes its cache and falls back to a far slower engine (measured with
    // benches/rules_corpus.rs: one body set ran ~7x slower than sets of four). Short items keep one set.
    let by_target: Vec<(Target, Vec<Checked>)> = by_target
        .into_iter()
        .flat_map(|(t, mut items)| {
            let chunk = if t.is_long_text() {
                MAX_SET_PATTERNS_LONG_TEXT
            } else {
                usize::MAX
            };
            let mut out = Vec::new();
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(chunk));
                out.push((t.clone(), items));
                items = rest;
            }
            out
        })
        .collect();
    for (target, items) in by_target {
        let set = RegexSetBuilder::new(items.iter().map(|(p, _)| p.pattern.as_str()))
            .unicode(false)
            .size_limit(MAX_SET_SIZE)
            .dfa_size_limit(DFA_CACHE_SIZE)
            .nest_limit(MAX_NEST)
            .build()
            .map_err(|e| {
                format!(
                    "the {} patterns on target {target} together do not compile: {e}",
                    items.len()
                )
            })?;
        let slots = items
            .into_iter()
            .map(|(p, re)| Slot {
                rule: p.rule,
                negate: p.negate,
                min_matches: p.min_matches.min(MAX_MIN_MATCHES),
                counter: if p.min_matches > 1 { re } else { None },
            })
            .collect();
        groups.push(Group { target, set, slots });
    }
    Ok(groups)
}

impl Target {
    /// Targets whose text is a whole body or header block rather than a short item.
    fn is_long_text(&self) -> bool {
        matches!(
            self,
            Target::Body | Target::Html | Target::RawHeaders | Target::Headers
        )
    }
}

/// Per-evaluation view data that more than one group may need, computed at most once.
#[derive(Default)]
pub struct Scratch {
    headers_joined: Option<String>,
}

impl Scratch {
    fn headers<'a>(&'a mut self, view: &MessageView) -> &'a str {
        self.headers_joined.get_or_insert_with(|| {
            let mut s = String::with_capacity(view.raw_headers.len());
            for (n, v) in &view.headers {
                s.push_str(n);
                s.push_str(": ");
                s.push_str(v);
                s.push('\n');
            }
            s
        })
    }
}

fn items<'a>(target: &'a Target, view: &'a MessageView, scratch: &'a mut Scratch) -> Vec<&'a str> {
    match target {
        Target::Subject => vec![view.subject.as_str()],
        Target::From => vec![view.from.as_str()],
        Target::Header(name) => view.header_values(name).collect(),
        Target::Headers => vec![scratch.headers(view)],
        Target::RawHeaders => vec![view.raw_headers.as_str()],
        Target::Body => vec![view.body_text.as_str()],
        Target::Html => vec![view.html.as_str()],
        Target::Url => view.urls.iter().map(String::as_str).collect(),
        Target::UrlHost => view.url_hosts.iter().map(String::as_str).collect(),
        Target::Mime => view.mime_parts.iter().map(String::as_str).collect(),
    }
}

impl Group {
    /// Sets `hit[rule]` for every slot of this group.
    pub fn run(&self, view: &MessageView, scratch: &mut Scratch, hit: &mut [bool]) {
        let items = items(&self.target, view, scratch);
        let mut matched = vec![false; self.slots.len()];
        for item in &items {
            for i in self.set.matches(item.as_bytes()).iter() {
                matched[i] = true;
            }
        }
        for (slot, &any) in self.slots.iter().zip(&matched) {
            let mut yes = any;
            if yes && let Some(re) = &slot.counter {
                yes =
                    count(re, &items, self.target.is_list(), slot.min_matches) >= slot.min_matches;
            }
            if let Some(h) = hit.get_mut(slot.rule) {
                *h = yes != slot.negate;
            }
        }
    }
}

/// Matching items (list targets) or occurrences (text targets), stopping once `enough` is reached.
fn count(re: &Regex, items: &[&str], list: bool, enough: u32) -> u32 {
    let mut n = 0;
    for item in items {
        if list {
            n += u32::from(re.is_match(item.as_bytes()));
        } else {
            for _ in re.find_iter(item.as_bytes()) {
                n += 1;
                if n >= enough {
                    return n;
                }
            }
        }
        if n >= enough {
            return n;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_ascii_unless_they_opt_in() {
        let e = check_pattern(r"\p{Lu}").unwrap_err();
        assert!(
            e.contains("(?u)") && e.contains("at `\\p{Lu}`") && !e.contains('\n'),
            "{e}"
        );
        let re = check_pattern(r"(?u)^\p{Lu}+$").unwrap();
        assert!(re.is_match("ÄÖÜ".as_bytes()));
        // ASCII word boundaries: a non-ASCII letter is not a word character.
        let re = check_pattern(r"(?i)\bfree\b").unwrap();
        assert!(re.is_match("FREE!".as_bytes()) && re.is_match("éfree".as_bytes()));
        let re = check_pattern(r"(?iu)\bfree\b").unwrap();
        assert!(!re.is_match("éfree".as_bytes()));
        // Literal UTF-8 in a pattern matches as written.
        assert!(
            check_pattern("Grüße")
                .unwrap()
                .is_match("Viele Grüße".as_bytes())
        );
    }

    #[test]
    fn pathological_patterns_are_rejected_quickly() {
        let e = check_pattern("(a{1000}){1000}").unwrap_err();
        assert!(e.contains("more than"), "{e}");
        let e = check_pattern(r"(?u)\w{2000}").unwrap_err();
        assert!(e.contains("more than"), "{e}");
        let e = check_pattern(&format!("{}a{}", "(".repeat(200), ")".repeat(200))).unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
        assert!(
            check_pattern("(unclosed")
                .unwrap_err()
                .contains("does not compile")
        );
        assert!(check_pattern("x*").unwrap_err().contains("any text"));
        assert!(
            check_pattern("(?i)|viagra")
                .unwrap_err()
                .contains("any text")
        );
        assert!(
            check_pattern(r"^$").is_ok(),
            "empty-subject rules are legitimate"
        );
        assert!(
            check_pattern(r"^[^@]*$").is_ok(),
            "no-address rules are legitimate"
        );
        assert!(check_pattern(r"(?i)\bviagra\b").is_ok());
    }

    fn group(target: Target, rules: &[(&str, bool, u32)]) -> Group {
        let pending = rules
            .iter()
            .enumerate()
            .map(|(i, (p, negate, min))| {
                let re = check_pattern(p).unwrap();
                (
                    Pending {
                        rule: i,
                        target: target.clone(),
                        pattern: (*p).to_owned(),
                        negate: *negate,
                        min_matches: *min,
                    },
                    Some(re),
                )
            })
            .collect();
        build_groups(pending).unwrap().remove(0)
    }

    #[test]
    fn negate_and_counts() {
        let view = MessageView {
            body_text: "free free FREE money".into(),
            urls: vec!["http://a/".into(), "http://b/".into(), "mailto:x".into()],
            ..MessageView::default()
        };
        let g = group(
            Target::Body,
            &[
                (r"(?i)free", false, 3),
                (r"(?i)free", false, 4),
                ("cheap", true, 1),
                ("money", true, 1),
            ],
        );
        let mut hit = vec![false; 4];
        g.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true, false, true, false]);

        let g = group(Target::Url, &[("^http:", false, 2), ("^http:", false, 3)]);
        let mut hit = vec![false; 2];
        g.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true, false]);
    }

    #[test]
    fn header_targets() {
        let view = MessageView {
            headers: vec![
                ("X-Mailer".into(), "Bulk 1.0".into()),
                ("Subject".into(), "hi".into()),
            ],
            ..MessageView::default()
        };
        let g = group(Target::Header("x-mailer".into()), &[("^Bulk", false, 1)]);
        let mut hit = vec![false];
        g.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true]);
        let g = group(
            Target::Headers,
            &[("(?m)^Subject: hi$", false, 1), ("(?m)^Date:", true, 1)],
        );
        let mut hit = vec![false; 2];
        g.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true, true]);
    }
}
