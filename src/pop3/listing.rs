//! The one LIST and UIDL listing parser (RFC 1939 §5, §7), fed whole bodies or chunk by chunk.
//!
//! Policy, the same for every caller:
//! - A line is `message-number SP value`; SP may be a run of spaces or tabs, leading and trailing blanks and
//!   blank lines are ignored. The message number is a decimal from 1 to 2^32-1.
//! - LIST: the value starts with the size in octets; text after it is ignored (RFC 1939 §5 lets servers add it).
//! - UIDL: the value is the whole rest of the line and must be a valid unique-id: 1 to [`MAX_UID_LEN`] characters
//!   in 0x21..=0x7E (RFC 1939 §7). Nothing may follow it.
//! - Nothing is dropped silently: a line that breaks these rules is left out of [`Listing::entries`] and reported
//!   in [`Listing::problems`]. A message number listed twice keeps its first line. A unique-id given to more than
//!   one message identifies none of them: every message carrying it is left out (RFC 1939 §7 requires unique ids,
//!   and callers use them as identities for verdict caches and seen-state files).
//!
//! Callers pick what to do with problems: the client refuses a listing that has any, the proxy serves the clean
//! entries and identifies the rest of the messages another way.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::limits::{MAX_LISTING_LINE, MAX_UID_LEN};

/// Longest excerpt of a bad line kept in a [`Problem`], so a hostile server cannot flood a log.
const MAX_EXCERPT: usize = 80;

/// Why a unique-id is not one RFC 1939 §7 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidError {
    Empty,
    TooLong(usize),
    BadByte(u8),
}

impl fmt::Display for UidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UidError::Empty => f.write_str("it is empty"),
            UidError::TooLong(n) => write!(
                f,
                "it has {n} characters, over the {MAX_UID_LEN} RFC 1939 §7 allows"
            ),
            UidError::BadByte(b) => {
                write!(
                    f,
                    "it contains byte 0x{b:02x}, outside the printable 0x21..0x7E RFC 1939 §7 allows"
                )
            }
        }
    }
}

/// Checks a unique-id against RFC 1939 §7: 1 to 70 characters in 0x21..=0x7E.
pub fn check_uid(uid: &[u8]) -> Result<&str, UidError> {
    if uid.is_empty() {
        return Err(UidError::Empty);
    }
    if let Some(&b) = uid.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
        return Err(UidError::BadByte(b));
    }
    if uid.len() > MAX_UID_LEN {
        return Err(UidError::TooLong(uid.len()));
    }
    // All bytes are printable ASCII.
    Ok(std::str::from_utf8(uid).unwrap_or_default())
}

/// One line of a listing the parser did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not `number SP value` (or longer than [`MAX_LISTING_LINE`]); `line` counts from 1.
    BadLine { line: usize, excerpt: String },
    /// A unique-id RFC 1939 §7 does not allow.
    InvalidUid { number: u32, error: UidError },
    /// `number` carries the unique-id that `first` already had; neither is in the entries.
    DuplicateUid { number: u32, first: u32 },
    /// A message number listed again; its first line is kept.
    DuplicateNumber { number: u32 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadLine { line, excerpt } => {
                write!(f, "line {line} is not \"number value\": {excerpt:?}")
            }
            Problem::InvalidUid { number, error } => {
                write!(f, "the unique-id of message {number} is invalid: {error}")
            }
            Problem::DuplicateUid { number, first } => {
                write!(f, "messages {first} and {number} have the same unique-id")
            }
            Problem::DuplicateNumber { number } => write!(f, "message {number} is listed twice"),
        }
    }
}

/// A parsed listing: the accepted `(message number, value)` pairs in server order, and every line left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub entries: Vec<(u32, T)>,
    pub problems: Vec<Problem>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            entries: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl<T> Listing<T> {
    /// The entries when no line was left out, else the first problem.
    pub fn into_clean(self) -> Result<Vec<(u32, T)>, Problem> {
        match self.problems.into_iter().next() {
            Some(p) => Err(p),
            None => Ok(self.entries),
        }
    }
}

/// Splits a stream into lines without holding more than [`MAX_LISTING_LINE`] of one.
#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
    overlong: bool,
    count: usize,
}

impl Lines {
    /// Calls `each(line number, Some(line))` for every complete line, `None` for one that was too long.
    fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(usize, Option<&[u8]>)) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.push(&chunk[..i]);
            self.end_line(each);
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LISTING_LINE + 1 {
            self.overlong = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, each: &mut impl FnMut(usize, Option<&[u8]>)) {
        self.count += 1;
        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        if self.overlong || line.len() > MAX_LISTING_LINE {
            each(self.count, None);
        } else {
            each(self.count, Some(line));
        }
        self.partial.clear();
        self.overlong = false;
    }

    fn finish(&mut self, each: &mut impl FnMut(usize, Option<&[u8]>)) {
        if self.overlong || !self.partial.is_empty() {
            self.end_line(each);
        }
    }
}

fn is_blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_blank(first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_blank(last)
    {
        s = rest;
    }
    s
}

fn excerpt(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(MAX_EXCERPT)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn decimal<N: std::str::FromStr>(digits: &[u8]) -> Option<N> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An incremental LIST or UIDL parser: [`feed`](ListingParser::feed) the un-stuffed body in any pieces, then
/// [`finish`](ListingParser::finish). The result does not depend on where the pieces were cut.
#[derive(Debug)]
pub struct ListingParser<T> {
    lines: Lines,
    numbers: HashSet<u32>,
    /// Unique-id → the first message that had it (UIDL only).
    uids: HashMap<String, u32>,
    /// Unique-ids seen more than once: no message keeps them.
    repeated: HashSet<String>,
    out: Listing<T>,
}

impl ListingParser<u64> {
    /// Parses a LIST answer: `(message number, size in octets)`.
    pub fn list() -> Self {
        Self::new()
    }
}

impl ListingParser<String> {
    /// Parses a UIDL answer: `(message number, unique-id)`.
    pub fn uidl() -> Self {
        Self::new()
    }
}

/// What a listing line holds after its number: a LIST size (`u64`) or a UIDL unique-id (`String`).
pub trait Value: Sized {
    /// The value from the rest of the line; `Err(None)` for a bad line, `Err(Some(_))` for an invalid unique-id.
    fn parse(rest: &[u8]) -> Result<Self, Option<UidError>>;
    /// The unique-id, which must not repeat.
    fn uid(&self) -> Option<&str>;
}

impl Value for u64 {
    fn parse(rest: &[u8]) -> Result<u64, Option<UidError>> {
        let size = rest.split(is_blank).next().unwrap_or_default();
        decimal(size).ok_or(None)
    }
    fn uid(&self) -> Option<&str> {
        None
    }
}

impl Value for String {
    fn parse(rest: &[u8]) -> Result<String, Option<UidError>> {
        check_uid(rest).map(str::to_owned).map_err(Some)
    }
    fn uid(&self) -> Option<&str> {
        Some(self)
    }
}

impl<T: Value> ListingParser<T> {
    fn new() -> Self {
        ListingParser {
            lines: Lines::default(),
            numbers: HashSet::new(),
            uids: HashMap::new(),
            repeated: HashSet::new(),
            out: Listing::default(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, &mut |n, line| self.line(n, line));
        self.lines = lines;
    }

    pub fn finish(mut self) -> Listing<T> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(&mut |n, line| self.line(n, line));
        if !self.repeated.is_empty() {
            let repeated = &self.repeated;
            self.out
                .entries
                .retain(|(_, v)| v.uid().is_none_or(|u| !repeated.contains(u)));
        }
        self.out
    }

    fn line(&mut self, number: usize, line: Option<&[u8]>) {
        let bad = |excerpt: String| Problem::BadLine {
            line: number,
            excerpt,
        };
        let Some(raw) = line else {
            let e = format!("(longer than {MAX_LISTING_LINE} octets)");
            self.out.problems.push(bad(e));
            return;
        };
        let line = trim(raw);
        if line.is_empty() {
            return;
        }
        let split = line.iter().position(is_blank).unwrap_or(line.len());
        let (num, rest) = (&line[..split], trim(&line[split..]));
        let Some(msg) = decimal::<u32>(num).filter(|&n| n > 0) else {
            self.out.problems.push(bad(excerpt(raw)));
            return;
        };
        if rest.is_empty() {
            self.out.problems.push(bad(excerpt(raw)));
            return;
        }
        let value = match T::parse(rest) {
            Ok(v) => v,
            Err(None) => {
                self.out.problems.push(bad(excerpt(raw)));
                return;
            }
            Err(Some(error)) => {
                let p = Problem::InvalidUid { number: msg, error };
                self.out.problems.push(p);
                return;
            }
        };
        if !self.numbers.insert(msg) {
            let p = Problem::DuplicateNumber { number: msg };
            self.out.problems.push(p);
            return;
        }
        if let Some(uid) = value.uid() {
            if let Some(&first) = self.uids.get(uid) {
                self.repeated.insert(uid.to_owned());
                let p = Problem::DuplicateUid { number: msg, first };
                self.out.problems.push(p);
                return;
            }
            self.uids.insert(uid.to_owned(), msg);
        }
        self.out.entries.push((msg, value));
    }
}

/// A whole LIST body.
pub fn parse_list(body: &[u8]) -> Listing<u64> {
    let mut p = ListingParser::list();
    p.feed(body);
    p.finish()
}

/// A whole UIDL body.
pub fn parse_uidl(body: &[u8]) -> Listing<String> {
    let mut p = ListingParser::uidl();
    p.feed(body);
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` cut at `a` and `b`, and checks the result equals the whole-body parse.
    fn every_split<T: Value + PartialEq + fmt::Debug>(
        body: &[u8],
        new: impl Fn() -> ListingParser<T>,
    ) -> Listing<T> {
        let mut whole = new();
        whole.feed(body);
        let whole = whole.finish();
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let mut p = new();
                p.feed(&body[..a]);
                p.feed(&body[a..b]);
                p.feed(&body[b..]);
                assert_eq!(p.finish(), whole, "cut at {a} and {b}");
            }
        }
        whole
    }

    #[test]
    fn valid_listings() {
        let l = every_split(
            b"1 120\r\n2 300 extra text\r\n\r\n 3\t7 \r\n",
            ListingParser::list,
        );
        assert_eq!(l.entries, vec![(1, 120), (2, 300), (3, 7)]);
        assert!(l.problems.is_empty());
        let u = every_split(
            b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n",
            ListingParser::uidl,
        );
        assert_eq!(
            u.into_clean().unwrap(),
            vec![
                (1, "whqtswO00WBw418f9t5JxYwZ".to_owned()),
                (2, "QhdPYR:00WBw1Ph7x7".to_owned())
            ]
        );
        // Without a final line end (a body cut by the caller) the last line still counts.
        assert_eq!(parse_list(b"1 5").entries, vec![(1, 5)]);
        assert_eq!(parse_list(b"").into_clean().unwrap(), vec![]);
    }

    #[test]
    fn uid_length_limit_is_70() {
        let ok = "u".repeat(70);
        let long = "v".repeat(71);
        let body = format!("1 {ok}\r\n2 {long}\r\n");
        let u = parse_uidl(body.as_bytes());
        assert_eq!(u.entries, vec![(1, ok)]);
        assert_eq!(
            u.problems,
            vec![Problem::InvalidUid {
                number: 2,
                error: UidError::TooLong(71)
            }]
        );
        assert!(u.problems[0].to_string().contains("71 characters"));
    }

    #[test]
    fn bad_bytes_in_uids_are_reported() {
        let u = every_split(
            b"1 a\x01b\r\n2 has space\r\n3 caf\xc3\xa9\r\n4 ok\r\n",
            ListingParser::uidl,
        );
        assert_eq!(u.entries, vec![(4, "ok".to_owned())]);
        assert_eq!(
            u.problems,
            vec![
                Problem::InvalidUid {
                    number: 1,
                    error: UidError::BadByte(1)
                },
                Problem::InvalidUid {
                    number: 2,
                    error: UidError::BadByte(b' ')
                },
                Problem::InvalidUid {
                    number: 3,
                    error: UidError::BadByte(0xc3)
                },
            ]
        );
        assert_eq!(check_uid(b""), Err(UidError::Empty));
        assert_eq!(check_uid(b"~!"), Ok("~!"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let l = every_split(
            b"1 120\r\n0 5\r\nx 4\r\n3\r\n4 -1\r\n5 77\r\n+1 2\r\n",
            ListingParser::list,
        );
        assert_eq!(l.entries, vec![(1, 120), (5, 77)]);
        let lines: Vec<usize> = l
            .problems
            .iter()
            .map(|p| match p {
                Problem::BadLine { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 7]);
        assert_eq!(
            parse_list(b"1 2\r\n1 3\r\n").problems,
            vec![Problem::DuplicateNumber { number: 1 }]
        );
        let huge = format!("1 {}\r\n2 9\r\n", "9".repeat(5000));
        let l = every_split(huge.as_bytes(), ListingParser::list);
        assert_eq!(l.entries, vec![(2, 9)]);
        assert!(matches!(
            &l.problems[..],
            [Problem::BadLine { line: 1, .. }]
        ));
        // Excerpts are short and printable.
        let l = parse_list(format!("x\x1b[2J{}\r\n", "y".repeat(500)).as_bytes());
        let Problem::BadLine { excerpt, .. } = &l.problems[0] else {
            panic!()
        };
        assert!(
            excerpt.len() <= MAX_EXCERPT && !excerpt.contains('\x1b'),
            "{excerpt}"
        );
    }

    #[test]
    fn duplicated_uids_identify_no_message() {
        let u = every_split(b"1 a\r\n2 b\r\n3 a\r\n4 c\r\n5 a\r\n", ListingParser::uidl);
        assert_eq!(u.entries, vec![(2, "b".to_owned()), (4, "c".to_owned())]);
        assert_eq!(
            u.problems,
            vec![
                Problem::DuplicateUid {
                    number: 3,
                    first: 1
                },
                Problem::DuplicateUid {
                    number: 5,
                    first: 1
                },
            ]
        );
        assert!(u.clone().into_clean().is_err());
        assert_eq!(
            u.problems[0].to_string(),
            "messages 1 and 3 have the same unique-id"
        );
    }
}
