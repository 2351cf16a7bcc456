//! Pattern rules compiled into `RegexSet`s per target, and matched against a `MessageView`.

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::file::Target;
use super::prefilter::Prefilter;
use crate::message::MessageView;

/// Compiled size allowed for one pattern (the regex crate's `size_limit`). Honest rules compile to a few KiB;
/// `(a{1000}){1000}` or `(?u)\w{500}` would need tens of MiB and are rejected with the rule's name.
pub const MAX_PATTERN_SIZE: usize = 1024 * 1024;
/// Compiled size allowed for all patterns of one set together.
pub const MAX_SET_SIZE: usize = 64 * 1024 * 1024;
/// Lazy-DFA cache per set (`dfa_size_limit`). Bigger than the crate default (2 MiB) because a set holds all
/// patterns of a target; a cache that thrashes falls back to a much slower engine.
pub const DFA_CACHE_SIZE: usize = 8 * 1024 * 1024;
/// Parenthesis/repetition nesting accepted in a pattern (the parser's `nest_limit`).
pub const MAX_NEST: u32 = 64;
/// Occurrences counted for `min_matches` (a count rule never needs more than this to decide).
pub const MAX_MIN_MATCHES: u32 = 1000;

/// One pattern of a target: its rule, text and compiled regex.
type Item = (usize, String, Regex);

/// Compiled patterns of one target. Short items are matched with one `RegexSet` (one pass per item for all
/// patterns); long texts with one `Regex` per pattern (see `compile` for why).
#[derive(Debug)]
enum Group {
    /// `rules[i]` is the rule of the set's pattern `i`.
    Set {
        target: Target,
        set: RegexSet,
        rules: Vec<usize>,
    },
    /// `(rule, regex)` per pattern, and which of them can match a given text.
    Each {
        target: Target,
        patterns: Vec<(usize, Regex)>,
        prefilter: Prefilter,
    },
}

/// How one pattern rule turns its patterns' matches into a hit.
#[derive(Debug)]
struct PatternRule {
    /// Index of the rule in the engine's (global + user) rule table.
    rule: usize,
    target: Target,
    negate: bool,
    min_matches: u32,
    /// Only for `min_matches > 1`: a set says whether a pattern matched, not how often.
    counters: Vec<Regex>,
}

/// The pattern rules of one layer (global set or one user's additions), ready to run.
#[derive(Debug, Default)]
pub struct Compiled {
    groups: Vec<Group>,
    rules: Vec<PatternRule>,
}

/// A pattern rule waiting to be compiled: its validated patterns (each compiled alone, see `check_pattern`).
pub struct Pending {
    pub rule: usize,
    pub target: Target,
    pub patterns: Vec<(String, Regex)>,
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

/// Builds one `RegexSet` per short-item target (subject, from, header values, URLs, MIME lines) and keeps the
/// single-pattern regexes for long texts (body, html, header blocks). Patterns were validated one by one
/// before; an error here means a set as a whole is too large.
///
/// Why not sets on long texts: `RegexSet::matches` must report every pattern, so it scans the whole text with
/// the lazy DFA and cannot use the literal prefilter that lets `Regex::is_match` skip most of a body and stop at
/// the first match. On the SpamAssassin corpus (benches/rules_corpus.rs) the body rules ran 3-10x slower as
/// sets (whole set, or sets of 1-8 patterns) than as separate regexes; item targets are short, so one set pass
/// per item wins there.
pub fn compile(pending: Vec<Pending>) -> Result<Compiled, String> {
    let mut by_target: BTreeMap<Target, Vec<Item>> = BTreeMap::new();
    let mut rules = Vec::with_capacity(pending.len());
    for p in pending {
        let mut counters = Vec::new();
        for (text, re) in p.patterns {
            if p.min_matches > 1 {
                counters.push(re.clone());
            }
            by_target
                .entry(p.target.clone())
                .or_default()
                .push((p.rule, text, re));
        }
        rules.push(PatternRule {
            rule: p.rule,
            target: p.target,
            negate: p.negate,
            min_matches: p.min_matches.min(MAX_MIN_MATCHES),
            counters,
        });
    }
    let targets: Vec<(Target, Vec<Item>)> = by_target.into_iter().collect();
    let groups = par_map(&targets, |(target, items)| {
        group(target.clone(), items.clone())
    });
    Ok(Compiled {
        groups: groups.into_iter().collect::<Result<_, _>>()?,
        rules,
    })
}

/// `f` over every item on every core, results in item order (rule compilation at start-up).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Compiles the patterns of one target.
fn group(target: Target, items: Vec<Item>) -> Result<Group, String> {
    if target.is_long_text() {
        let prefilter = Prefilter::new(items.iter().map(|(_, p, _)| p.as_str()));
        return Ok(Group::Each {
            target,
            patterns: items.into_iter().map(|(r, _, re)| (r, re)).collect(),
            prefilter,
        });
    }
    let set = RegexSetBuilder::new(items.iter().map(|(_, p, _)| p.as_str()))
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
    Ok(Group::Set {
        target,
        set,
        rules: items.into_iter().map(|(r, _, _)| r).collect(),
    })
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

impl Compiled {
    /// Sets `hit[rule]` for every pattern rule of this layer.
    pub fn run(&self, view: &MessageView, scratch: &mut Scratch, hit: &mut [bool]) {
        // First: did any pattern of each rule match?
        for g in &self.groups {
            match g {
                Group::Set { target, set, rules } => {
                    for item in items(target, view, scratch) {
                        for i in set.matches(item.as_bytes()).iter() {
                            if let Some(h) = rules.get(i).and_then(|r| hit.get_mut(*r)) {
                                *h = true;
                            }
                        }
                    }
                }
                Group::Each {
                    target,
                    patterns,
                    prefilter,
                } => {
                    let items = items(target, view, scratch);
                    let mut maybe = vec![false; patterns.len()];
                    prefilter.candidates(&items, &mut maybe);
                    for ((rule, re), maybe) in patterns.iter().zip(maybe) {
                        // A rule with several patterns is decided by its first match.
                        if !maybe || hit.get(*rule).copied().unwrap_or(true) {
                            continue;
                        }
                        if items.iter().any(|t| re.is_match(t.as_bytes()))
                            && let Some(h) = hit.get_mut(*rule)
                        {
                            *h = true;
                        }
                    }
                }
            }
        }
        // Then counts, for the few rules that need them, and negation.
        for r in &self.rules {
            let Some(h) = hit.get_mut(r.rule) else {
                continue;
            };
            let mut yes = *h;
            if yes && r.min_matches > 1 {
                let items = items(&r.target, view, scratch);
                let mut n = 0;
                for re in &r.counters {
                    n += count(re, &items, r.target.is_list(), r.min_matches - n);
                    if n >= r.min_matches {
                        break;
                    }
                }
                yes = n >= r.min_matches;
            }
            *h = yes != r.negate;
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

    fn compiled(target: Target, rules: &[(&[&str], bool, u32)]) -> Compiled {
        let pending = rules
            .iter()
            .enumerate()
            .map(|(i, (ps, negate, min))| Pending {
                rule: i,
                target: target.clone(),
                patterns: ps
                    .iter()
                    .map(|p| ((*p).to_owned(), check_pattern(p).unwrap()))
                    .collect(),
                negate: *negate,
                min_matches: *min,
            })
            .collect();
        compile(pending).unwrap()
    }

    #[test]
    fn negate_and_counts() {
        let view = MessageView {
            body_text: "free free FREE money".into(),
            urls: vec!["http://a/".into(), "http://b/".into(), "mailto:x".into()],
            ..MessageView::default()
        };
        let c = compiled(
            Target::Body,
            &[
                (&[r"(?i)free"], false, 3),
                (&[r"(?i)free"], false, 4),
                (&["cheap"], true, 1),
                (&["money"], true, 1),
                // Several patterns: any matches; counts add up across them.
                (&["cheap", "money"], false, 1),
                (&[r"(?i)free", "money"], false, 4),
                (&[r"(?i)free", "money"], false, 5),
                (&["cheap", "nothing"], true, 1),
            ],
        );
        let mut hit = vec![false; 8];
        c.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true, false, true, false, true, true, false, true]);

        let c = compiled(
            Target::Url,
            &[(&["^http:"], false, 2), (&["^http:"], false, 3)],
        );
        let mut hit = vec![false; 2];
        c.run(&view, &mut Scratch::default(), &mut hit);
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
        let c = compiled(Target::Header("x-mailer".into()), &[(&["^Bulk"], false, 1)]);
        let mut hit = vec![false];
        c.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true]);
        let c = compiled(
            Target::Headers,
            &[
                (&["(?m)^Subject: hi$"], false, 1),
                (&["(?m)^Date:"], true, 1),
            ],
        );
        let mut hit = vec![false; 2];
        c.run(&view, &mut Scratch::default(), &mut hit);
        assert_eq!(hit, [true, true]);
    }
}
