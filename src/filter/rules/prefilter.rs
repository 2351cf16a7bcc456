//! Literal prefilter for the long-text rule groups (body, html, header blocks): one Aho-Corasick pass over a
//! text tells which patterns can match it at all, so only those run their own regex.
//!
//! Why: each body pattern keeps its own literal prefilter inside the regex crate, but that still means one scan
//! of the body per pattern (about a hundred), and most patterns match nothing in most mail. Here every pattern's
//! required literals (strings one of which must occur in any match, found by walking the pattern's syntax tree)
//! go into one case-insensitive automaton; a pattern whose literal did not occur cannot match and is skipped.
//! The test is conservative: a pattern without a usable requirement (`\w+@\w+`) always runs. A pattern whose
//! every match holds a byte >= 0x80 (`[\x80-\xFF]`, a far-away script) is also skipped on pure ASCII texts.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

use super::compile::MAX_NEST;

/// Literals in one alternative set (`(?:free|cheap|...)` expands to one per branch; a cross product of classes
/// grows fast). Past this a set is dropped and a shorter requirement is looked for.
const MAX_SET: usize = 64;
/// Bytes of one literal kept: longer literals are cut (still required: their prefix must occur too).
const MAX_LITERAL: usize = 32;
/// Bytes of a byte class expanded into single-byte literals (`[-\s]`, case pairs such as `[Ff]`).
const MAX_CLASS: usize = 8;
/// Shortest requirement worth prefiltering on: one- and two-byte literals occur in nearly every text.
const MIN_USEFUL: usize = 3;
/// Length past which a longer requirement is not preferred over a smaller set.
const GOOD_ENOUGH: usize = 6;

/// A set of literals, ASCII lower-cased (matched case-insensitively, which only widens the test).
type Set = Vec<Vec<u8>>;

/// What a sub-pattern says about the texts it matches.
struct Info {
    /// Every string it can match, when that set is small.
    exact: Option<Set>,
    /// Strings one of which every match starts with (`[""]` when nothing is known).
    prefix: Set,
    /// Strings one of which occurs in every match of it (besides `exact` and `prefix`).
    need: Option<Set>,
}

/// The literals one of which occurs in every match of `pattern` (compiled with the rule engine's syntax
/// options), or None when the pattern has no useful requirement.
#[cfg(test)]
pub fn required_literals(pattern: &str) -> Option<Set> {
    literals_of(&parse(pattern)?)
}

fn literals_of(hir: &Hir) -> Option<Set> {
    effective(&analyze(hir)).filter(useful)
}

fn parse(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .nest_limit(MAX_NEST)
        .build()
        .parse(pattern)
        .ok()
}

/// True when every match of `pattern` holds a byte >= 0x80 (8-bit header bytes, a far-away script): such a
/// pattern cannot match pure ASCII text, which most mail is, and checking that is one fast pass per text.
#[cfg(test)]
pub fn needs_non_ascii(pattern: &str) -> bool {
    parse(pattern).is_some_and(|h| non_ascii(&h))
}

fn non_ascii(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(lit) => lit.0.iter().any(|b| *b >= 0x80),
        HirKind::Class(Class::Bytes(c)) => c.ranges().iter().all(|r| r.start() >= 0x80),
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().all(|r| r.start() >= '\u{80}'),
        HirKind::Capture(c) => non_ascii(&c.sub),
        HirKind::Repetition(r) => r.min >= 1 && non_ascii(&r.sub),
        HirKind::Concat(children) => children.iter().any(non_ascii),
        HirKind::Alternation(children) => children.iter().all(non_ascii),
    }
}

/// Worth a pass: long enough literals, or ones holding a byte that most texts lack (`$`, `!`, `&#`, UTF-8 of a
/// far-away script), so the pattern is skipped in most mail.
fn useful(set: &Set) -> bool {
    let rare = |b: &u8| {
        !b.is_ascii_alphanumeric() && !b.is_ascii_whitespace() && !b".,-'\"():;/".contains(b)
    };
    set.iter()
        .all(|l| l.len() >= MIN_USEFUL || l.iter().any(rare))
}

fn unknown() -> Set {
    vec![Vec::new()]
}

fn analyze(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(unknown()),
            prefix: unknown(),
            need: None,
        },
        HirKind::Literal(lit) => {
            let cut = lower(&lit.0[..lit.0.len().min(MAX_LITERAL)]);
            Info {
                exact: (lit.0.len() <= MAX_LITERAL).then(|| vec![cut.clone()]),
                prefix: vec![cut.clone()],
                need: Some(vec![cut]),
            }
        }
        HirKind::Class(c) => {
            let (bytes, exact) = class_bytes(c);
            let set: Option<Set> = bytes.map(|b| b.into_iter().map(|b| vec![b]).collect());
            Info {
                exact: if exact { set.clone() } else { None },
                prefix: set.clone().unwrap_or_else(unknown),
                need: set,
            }
        }
        HirKind::Capture(c) => analyze(&c.sub),
        HirKind::Repetition(r) => {
            let sub = analyze(&r.sub);
            let exact = match (r.min, r.max) {
                (0, Some(1)) => sub.exact.as_ref().and_then(|e| {
                    let mut e = e.clone();
                    e.push(Vec::new());
                    normalize(e)
                }),
                (1, Some(1)) => sub.exact.clone(),
                (m, Some(x)) if m == x && m <= 4 => {
                    let mut acc = Some(unknown());
                    for _ in 0..m {
                        acc = cross(acc.as_ref(), sub.exact.as_ref());
                    }
                    acc
                }
                _ => None,
            };
            let prefix = match &exact {
                Some(e) => e.clone(),
                None if r.min >= 1 => sub.prefix.clone(),
                None => {
                    let mut p = sub.prefix.clone();
                    p.push(Vec::new());
                    normalize(p).unwrap_or_else(unknown)
                }
            };
            let need = if r.min >= 1 { effective(&sub) } else { None };
            Info {
                exact,
                prefix,
                need,
            }
        }
        HirKind::Concat(children) => {
            let infos: Vec<Info> = children.iter().map(analyze).collect();
            let mut need = None;
            for i in &infos {
                need = better(need, effective(i));
            }
            // Runs of children with small exact sets combine into longer literals ("one" [-\s] "time"), and a
            // run continues into the start of the next child ("h" + "uman..|gh" = "human", "hgh").
            let mut exact = None;
            let mut prefix = unknown();
            for start in 0..infos.len() {
                let mut acc = unknown();
                let mut whole = true;
                for info in infos.iter().skip(start) {
                    match cross(Some(&acc), info.exact.as_ref()) {
                        Some(next) => {
                            acc = next;
                            need = better(need, Some(acc.clone()));
                        }
                        None => {
                            whole = false;
                            if let Some(longer) = cross(Some(&acc), Some(&info.prefix)) {
                                acc = longer;
                            }
                            break;
                        }
                    }
                }
                if start == 0 {
                    prefix = acc.clone();
                    if whole {
                        exact = Some(acc.clone());
                    }
                }
                need = better(need, Some(acc));
            }
            Info {
                exact,
                prefix,
                need,
            }
        }
        HirKind::Alternation(alts) => {
            let infos: Vec<Info> = alts.iter().map(analyze).collect();
            let exact = union(infos.iter().map(|i| i.exact.clone()));
            let prefix =
                union(infos.iter().map(|i| Some(i.prefix.clone()))).unwrap_or_else(unknown);
            let need = union(infos.iter().map(effective));
            Info {
                exact,
                prefix,
                need,
            }
        }
    }
}

/// The best requirement a sub-pattern offers.
fn effective(info: &Info) -> Option<Set> {
    let best = better(info.need.clone(), info.exact.clone());
    better(best, Some(info.prefix.clone()))
}

/// Usable: non-empty and no empty literal (an empty literal occurs in every text). Longer literals first, then
/// fewer of them.
fn quality(set: &Set) -> Option<(usize, std::cmp::Reverse<usize>, usize)> {
    if set.is_empty() || set.iter().any(Vec::is_empty) {
        return None;
    }
    let len = min_len(set);
    Some((len.min(GOOD_ENOUGH), std::cmp::Reverse(set.len()), len))
}

fn better(a: Option<Set>, b: Option<Set>) -> Option<Set> {
    let qa = a.as_ref().and_then(quality);
    let qb = b.as_ref().and_then(quality);
    match (qa, qb) {
        (Some(x), Some(y)) if y > x => b,
        (Some(_), _) => a,
        (None, Some(_)) => b,
        (None, None) => None,
    }
}

fn min_len(set: &Set) -> usize {
    set.iter().map(Vec::len).min().unwrap_or(0)
}

fn lower(bytes: &[u8]) -> Vec<u8> {
    bytes.to_ascii_lowercase()
}

fn normalize(mut set: Set) -> Option<Set> {
    set.sort();
    set.dedup();
    (set.len() <= MAX_SET).then_some(set)
}

/// Every `x + y`; None when that is too many or too long.
fn cross(a: Option<&Set>, b: Option<&Set>) -> Option<Set> {
    let (a, b) = (a?, b?);
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            if x.len() + y.len() > MAX_LITERAL {
                return None;
            }
            let mut l = x.clone();
            l.extend_from_slice(y);
            out.push(l);
        }
    }
    normalize(out)
}

fn union(sets: impl Iterator<Item = Option<Set>>) -> Option<Set> {
    let mut out = Vec::new();
    for s in sets {
        out.extend(s?);
        if out.len() > MAX_SET * 4 {
            return None;
        }
    }
    normalize(out)
}

/// The first bytes of what a class matches, lower-cased, when there are few (`[Ff]` is one byte, `[-\s]`
/// seven, a far-away script a few UTF-8 lead bytes), and whether those bytes are the whole match (a
/// non-ASCII character of a Unicode class is longer).
fn class_bytes(class: &Class) -> (Option<Vec<u8>>, bool) {
    let mut seen = [false; 256];
    let mut exact = true;
    let mut mark = |lo: u32, hi: u32| {
        for b in lo..=hi.min(255) {
            if let Ok(b) = u8::try_from(b) {
                seen[usize::from(b.to_ascii_lowercase())] = true;
            }
        }
    };
    match class {
        Class::Bytes(b) => {
            for r in b.ranges() {
                mark(u32::from(r.start()), u32::from(r.end()));
            }
        }
        Class::Unicode(u) => {
            for r in u.ranges() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if lo < 0x80 {
                    mark(lo, hi.min(0x7f));
                }
                if hi >= 0x80 {
                    exact = false;
                    let first = char::from_u32(lo.max(0x80)).map_or(0xc2, utf8_lead);
                    mark(u32::from(first), u32::from(utf8_lead(r.end())));
                }
            }
        }
    }
    let bytes: Vec<u8> = (0..=255u8).filter(|b| seen[usize::from(*b)]).collect();
    let few =
        bytes.len() <= MAX_CLASS || (bytes.len() <= MAX_SET && bytes.iter().all(|b| *b >= 0x80));
    (few.then_some(bytes), exact)
}

fn utf8_lead(c: char) -> u8 {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf);
    buf[0]
}

/// The compiled prefilter of one group of patterns.
#[derive(Debug)]
pub struct Prefilter {
    automaton: Option<AhoCorasick>,
    /// Pattern indices per automaton literal.
    owners: Vec<Vec<usize>>,
    /// Patterns without a usable requirement: they always run.
    always: Vec<usize>,
    /// Patterns whose every match holds a byte >= 0x80: they never run on pure ASCII texts.
    eight_bit: Vec<usize>,
}

impl Prefilter {
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let mut eight_bit = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (i, p) in patterns.into_iter().enumerate() {
            let hir = parse(p);
            match hir.as_ref().and_then(literals_of) {
                Some(set) => {
                    for lit in set {
                        let id = *index.entry(lit.clone()).or_insert_with(|| {
                            literals.push(lit);
                            owners.push(Vec::new());
                            owners.len() - 1
                        });
                        if let Some(o) = owners.get_mut(id) {
                            o.push(i);
                        }
                    }
                }
                None => always.push(i),
            }
            if hir.as_ref().is_some_and(non_ascii) {
                eight_bit.push(i);
            }
        }
        let automaton = if literals.is_empty() {
            None
        } else {
            match AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                // A few hundred short literals: the DFA is small and the fastest to search.
                .kind(Some(AhoCorasickKind::DFA))
                .build(&literals)
            {
                Ok(ac) => Some(ac),
                Err(_) => {
                    // Cannot happen for a few hundred short literals; if it did, run everything.
                    always.extend(owners.iter().flatten().copied());
                    owners.clear();
                    None
                }
            }
        };
        Prefilter {
            automaton,
            owners,
            always,
            eight_bit,
        }
    }

    /// Sets `maybe[i]` for every pattern `i` that may match one of `texts`.
    pub fn candidates(&self, texts: &[&str], maybe: &mut [bool]) {
        self.literal_candidates(texts, maybe);
        if !self.eight_bit.is_empty() && texts.iter().all(|t| t.is_ascii()) {
            for &i in &self.eight_bit {
                if let Some(m) = maybe.get_mut(i) {
                    *m = false;
                }
            }
        }
    }

    fn literal_candidates(&self, texts: &[&str], maybe: &mut [bool]) {
        for &i in &self.always {
            if let Some(m) = maybe.get_mut(i) {
                *m = true;
            }
        }
        let Some(ac) = &self.automaton else { return };
        let mut seen = vec![false; self.owners.len()];
        for t in texts {
            for m in ac.find_overlapping_iter(t.as_bytes()) {
                let id = m.pattern().as_usize();
                if let Some(s) = seen.get_mut(id)
                    && !*s
                {
                    *s = true;
                    for &p in self.owners.get(id).map_or(&[][..], |o| &o[..]) {
                        if let Some(m) = maybe.get_mut(p) {
                            *m = true;
                        }
                    }
                }
            }
        }
    }

    /// Patterns that always run (for tests and benchmarks).
    #[cfg(test)]
    pub fn always(&self) -> &[usize] {
        &self.always
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|s| {
            s.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    #[test]
    fn requirements_of_typical_rule_patterns() {
        assert_eq!(lits(r"(?i)\bmurkowski\b").unwrap(), ["murkowski"]);
        assert_eq!(
            lits(r"(?i)\b(?:reply|respond|send)\b.{0,40}\b(?:remove|stop)\b.{0,40}\bsubject\b")
                .unwrap(),
            ["subject"]
        );
        let one_time = lits(r"(?i)\bone[-\s]time\s+(?:mailing|e-?mail)").unwrap();
        assert!(
            one_time.contains(&"one-time".to_owned()) && one_time.contains(&"one time".to_owned()),
            "{one_time:?}"
        );
        assert_eq!(lits(r"(?i)free|cheap").unwrap(), ["cheap", "free"]);
        // An optional piece does not count; a usable sibling does.
        assert_eq!(lits(r"(?i)(?:click\s+)?here\b").unwrap(), ["here"]);
        // Nothing required, or only short literals: the pattern always runs.
        assert_eq!(lits(r"\w+@\w+").unwrap(), ["@"]);
        assert_eq!(lits(r"\w+\s\w+"), None);
        assert_eq!(lits(r"(?i)a|bcd"), None);
        assert_eq!(lits(r"(?i)(?:viagra)?"), None);
        assert_eq!(lits("[[:upper:]]{20}"), None);
        // Unicode case folding reaches beyond ASCII ("k" matches KELVIN SIGN): not expanded as bytes.
        assert_eq!(lits(r"(?iu)kk").as_deref(), None);
        assert_eq!(lits(r"(?iu)kkxyz").unwrap(), ["xyz"]);
        // Short literals of rare bytes are worth it; a far-away script gives its UTF-8 lead bytes.
        assert_eq!(lits(r"\$\s?\d").unwrap(), ["$"]);
        let hgh = lits(r"(?i)\bhuman\s+growth\s+hormone|\bhgh\b").unwrap();
        assert!(
            hgh.contains(&"hgh".to_owned())
                && hgh.iter().all(|l| l == "hgh" || l.starts_with("human")),
            "{hgh:?}"
        );
        let han = required_literals(r"(?u)[\p{Han}]{8}").unwrap();
        assert!(han.iter().all(|l| l.len() == 1 && l[0] >= 0xe0), "{han:?}");
    }

    #[test]
    fn eight_bit_patterns_run_only_on_text_that_is_not_ascii() {
        assert!(needs_non_ascii(
            r"(?m)^(?i:Subject|From|To):[^\n]*[\x80-\xFF]"
        ));
        assert!(needs_non_ascii(r"(?u)[\p{Han}\p{Hangul}]{8}"));
        assert!(needs_non_ascii(r"caf\xE9|na\xEFve"));
        assert!(!needs_non_ascii(r"[^a-z]+"));
        assert!(!needs_non_ascii(r"(?u)\p{Lu}{3}"));
        assert!(!needs_non_ascii(r"x[\x80-\xFF]?"));
        assert!(!needs_non_ascii(r"caf\xE9|cafe"));
        let patterns = [r"(?m)^(?i:Subject|To):[^\n]*[\x80-\xFF]", r"\d{3}-\d{4}"];
        let pf = Prefilter::new(patterns);
        for (texts, expect) in [
            (&["Subject: plain", "555-1234"][..], [false, true]),
            (&["Subject: caf\u{e9}"][..], [true, true]),
        ] {
            let mut maybe = vec![false; patterns.len()];
            pf.candidates(texts, &mut maybe);
            assert_eq!(maybe, expect, "{texts:?}");
            for (i, p) in patterns.iter().enumerate() {
                let re = regex::bytes::RegexBuilder::new(p)
                    .unicode(false)
                    .build()
                    .unwrap();
                if texts.iter().any(|t| re.is_match(t.as_bytes())) {
                    assert!(maybe[i], "{p} matches {texts:?} but was filtered out");
                }
            }
        }
    }

    #[test]
    fn candidates_cover_every_match() {
        let patterns = [
            r"(?i)\bfree\s+money\b",
            r"(?i)click\s+here",
            r"\d{3}-\d{4}",
            r"(?i)\bunsubscribe\b",
            r"(?m)^>{3,}",
        ];
        let texts = [
            "FREE   money now",
            "please CLICK\there",
            "call 555-1234",
            "nothing to see",
            ">>>> quoted",
            "Unsubscribe\nfree money",
        ];
        let pf = Prefilter::new(patterns);
        assert_eq!(pf.always(), &[2]);
        for t in texts {
            let mut maybe = vec![false; patterns.len()];
            pf.candidates(&[t], &mut maybe);
            for (i, p) in patterns.iter().enumerate() {
                let re = regex::bytes::Regex::new(p).unwrap();
                if re.is_match(t.as_bytes()) {
                    assert!(maybe[i], "{p} matches {t:?} but was filtered out");
                }
            }
        }
        let mut maybe = vec![false; patterns.len()];
        pf.candidates(&["nothing to see"], &mut maybe);
        assert_eq!(maybe, [false, false, true, false, false]);
    }
}
