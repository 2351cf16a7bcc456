//! Multi-line bodies (RFC 1939 §3): byte-stuffing on write, un-stuffing and terminator detection on read,
//! both incremental over arbitrary chunk boundaries so a relay never holds a whole message.
//!
//! Line ends are normalised to CRLF in both directions: a bare LF (from an LF-only maildir file or a sloppy
//! upstream) becomes CRLF; a bare CR inside a line is data and is kept. Precisely, for any bytes `x`,
//! `unstuff(stuff(x)) == normalize(x)` where [`normalize`] splits `x` at each LF, drops one CR before each LF,
//! drops one CR at the very end, and joins the lines with CRLF, ending with CRLF unless `x` is empty.

/// Stuffs a message body for sending: `.` at a line start becomes `..`, line ends become CRLF, and
/// [`Stuffer::finish`] adds the `.` CRLF terminator.
#[derive(Debug, Clone)]
pub struct Stuffer {
    /// The next byte starts a line (true at the start: the body begins right after the status line).
    at_line_start: bool,
    /// The last byte written was a CR that may still be followed by its LF in the next chunk.
    last_cr: bool,
}

impl Default for Stuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Stuffer {
    pub fn new() -> Self {
        Stuffer {
            at_line_start: true,
            last_cr: false,
        }
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 2);
        let mut i = 0;
        while i < input.len() {
            if self.at_line_start && input[i] == b'.' {
                out.extend_from_slice(b"..");
                self.at_line_start = false;
                self.last_cr = false;
                i += 1;
                continue;
            }
            let rest = &input[i..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    out.extend_from_slice(&rest[..p]);
                    let cr_before = if p > 0 {
                        rest[p - 1] == b'\r'
                    } else {
                        self.last_cr
                    };
                    if !cr_before {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.at_line_start = true;
                    self.last_cr = false;
                    i += p + 1;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    self.last_cr = rest.last() == Some(&b'\r');
                    i = input.len();
                }
            }
        }
    }

    /// Ends the body: completes an unterminated last line with CRLF (a trailing bare CR gets its LF), then
    /// writes the `.` CRLF terminator. The stuffer is ready for a new body afterwards.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.last_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Stuffer::new();
    }

    /// The whole stuffed and terminated form of `body`, for small bodies (CAPA, LIST).
    pub fn stuff_all(body: &[u8]) -> Vec<u8> {
        let mut s = Stuffer::new();
        let mut out = Vec::with_capacity(body.len() + 8);
        s.stuff(body, &mut out);
        s.finish(&mut out);
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnState {
    /// At the first byte of a line.
    LineStart,
    /// Inside a line; `last_cr` says whether the last byte emitted was a CR.
    MidLine { last_cr: bool },
    /// Saw `.` at a line start; the dot is held back until we know what follows.
    Dot,
    /// Saw `.` CR at a line start.
    DotCr,
    /// The terminator has been consumed.
    Done,
}

/// Reads a multi-line body: removes the stuffing dot, normalises line ends to CRLF and finds the terminator.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    state: UnState,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Unstuffer {
    pub fn new() -> Self {
        Unstuffer {
            state: UnState::LineStart,
        }
    }

    /// Whether the terminator has been seen.
    pub fn is_done(&self) -> bool {
        self.state == UnState::Done
    }

    /// Consumes `input`, appending the body bytes to `out`. Returns `Some(n)` once the terminator ends within the
    /// first `n` bytes of `input`: the remaining `input[n..]` belongs to the next reply (pipelining). After that,
    /// every call returns `Some(0)` until a new `Unstuffer` is made.
    ///
    /// RFC 1939 §3: a line that starts with `.` but is not the terminator loses that first dot; so `..x` gives
    /// `.x`, and a stray `.x` gives `x`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        out.reserve(input.len() + input.len() / 32);
        let mut i = 0;
        while i < input.len() {
            match self.state {
                UnState::Done => return Some(0),
                UnState::LineStart => {
                    if input[i] == b'.' {
                        self.state = UnState::Dot;
                        i += 1;
                    } else {
                        self.state = UnState::MidLine { last_cr: false };
                    }
                }
                UnState::Dot => match input[i] {
                    b'\r' => {
                        self.state = UnState::DotCr;
                        i += 1;
                    }
                    // A bare-LF upstream's terminator.
                    b'\n' => {
                        self.state = UnState::Done;
                        return Some(i + 1);
                    }
                    // The stuffing dot (or a stray one) is dropped; the line goes on from this byte.
                    _ => self.state = UnState::MidLine { last_cr: false },
                },
                UnState::DotCr => {
                    if input[i] == b'\n' {
                        self.state = UnState::Done;
                        return Some(i + 1);
                    }
                    // `.` CR x: the dot is dropped, the CR is data.
                    out.push(b'\r');
                    self.state = UnState::MidLine { last_cr: true };
                }
                UnState::MidLine { last_cr } => {
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => {
                            out.extend_from_slice(&rest[..p]);
                            let cr_before = if p > 0 { rest[p - 1] == b'\r' } else { last_cr };
                            if !cr_before {
                                out.push(b'\r');
                            }
                            out.push(b'\n');
                            self.state = UnState::LineStart;
                            i += p + 1;
                        }
                        None => {
                            out.extend_from_slice(rest);
                            self.state = UnState::MidLine {
                                last_cr: rest.last() == Some(&b'\r'),
                            };
                            i = input.len();
                        }
                    }
                }
            }
        }
        if self.state == UnState::Done {
            Some(i)
        } else {
            None
        }
    }
}

/// The canonical form of a body as it comes out of stuff → unstuff (see the module docs).
pub fn normalize(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() + 2);
    if x.is_empty() {
        return out;
    }
    let mut pieces: Vec<&[u8]> = x.split(|&b| b == b'\n').collect();
    // A trailing LF leaves an empty last piece, which is not a line.
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    for piece in pieces {
        out.extend_from_slice(piece.strip_suffix(b"\r").unwrap_or(piece));
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deliberately naive stuffing: whole input, line by line.
    fn naive_stuff(x: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let norm = normalize(x);
        let mut body = norm.as_slice();
        while let Some(p) = body.windows(2).position(|w| w == b"\r\n") {
            if body[0] == b'.' {
                out.push(b'.');
            }
            out.extend_from_slice(&body[..p + 2]);
            body = &body[p + 2..];
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Deliberately naive un-stuffing: split at LF, look at whole lines. Returns (body, consumed) or None.
    fn naive_unstuff(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(p) = wire[pos..].iter().position(|&b| b == b'\n') {
            let raw = &wire[pos..pos + p];
            pos += p + 1;
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line == b"." {
                return Some((out, pos));
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        None
    }

    fn stuff_in_chunks(x: &[u8], splits: &[usize]) -> Vec<u8> {
        let mut s = Stuffer::new();
        let mut out = Vec::new();
        let mut prev = 0;
        for &at in splits.iter().chain(std::iter::once(&x.len())) {
            s.stuff(&x[prev..at], &mut out);
            prev = at;
        }
        s.finish(&mut out);
        out
    }

    /// Feeds `wire` split at `splits`; returns the body and the total consumed when the terminator was found.
    fn unstuff_in_chunks(wire: &[u8], splits: &[usize]) -> Option<(Vec<u8>, usize)> {
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        let mut prev = 0;
        for &at in splits.iter().chain(std::iter::once(&wire.len())) {
            if let Some(n) = u.feed(&wire[prev..at], &mut out) {
                return Some((out, prev + n));
            }
            prev = at;
        }
        None
    }

    fn all_strings(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for s in &layer {
                for &c in alphabet {
                    let mut t: Vec<u8> = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            all.extend(next.iter().cloned());
            layer = next;
        }
        all
    }

    const ALPHABET: &[u8] = b"a.\r\n";

    #[test]
    fn stuffer_matches_naive_reference_at_every_split() {
        for x in all_strings(ALPHABET, 7) {
            let want = naive_stuff(&x);
            assert_eq!(stuff_in_chunks(&x, &[]), want, "whole {x:?}");
            for at in 0..=x.len() {
                assert_eq!(stuff_in_chunks(&x, &[at]), want, "split at {at} of {x:?}");
            }
            let bytewise: Vec<usize> = (1..x.len()).collect();
            assert_eq!(stuff_in_chunks(&x, &bytewise), want, "byte by byte {x:?}");
        }
    }

    #[test]
    fn unstuffer_matches_naive_reference_at_every_split() {
        for s in all_strings(ALPHABET, 7) {
            // With a terminator appended (it may also occur earlier) and bytes of a next reply after it.
            let mut wire = s.clone();
            wire.extend_from_slice(b"\r\n.\r\n+OK next");
            let want = naive_unstuff(&wire);
            assert!(want.is_some());
            assert_eq!(unstuff_in_chunks(&wire, &[]), want, "whole {s:?}");
            for at in 0..=wire.len() {
                assert_eq!(
                    unstuff_in_chunks(&wire, &[at]),
                    want,
                    "split at {at} of {wire:?}"
                );
            }
            let bytewise: Vec<usize> = (1..wire.len()).collect();
            assert_eq!(
                unstuff_in_chunks(&wire, &bytewise),
                want,
                "byte by byte {wire:?}"
            );
            // Without the appended terminator: found exactly when the naive reader finds one.
            assert_eq!(
                unstuff_in_chunks(&s, &[]).map(|r| r.1),
                naive_unstuff(&s).map(|r| r.1),
                "{s:?}"
            );
        }
    }

    #[test]
    fn known_cases() {
        assert_eq!(Stuffer::stuff_all(b""), b".\r\n");
        assert_eq!(Stuffer::stuff_all(b".\n"), b"..\r\n.\r\n");
        assert_eq!(Stuffer::stuff_all(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(
            Stuffer::stuff_all(b"a\r\n.b\r\n..\r\n"),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b".\r\n", b"", 3),
            (b".\n", b"", 2),
            (b"a\r\n..b\r\n.\r\nrest", b"a\r\n.b\r\n", 11),
            (b"a\nb\n.\n", b"a\r\nb\r\n", 6),
            (b"..\r\n.\r\n", b".\r\n", 7),
            (b".x\r\n.\r\n", b"x\r\n", 7),
            (b"a.\r\n.\r\n", b"a.\r\n", 7),
        ];
        for &(wire, body, n) in cases {
            let want = Some((body.to_vec(), n));
            for at in 0..=wire.len() {
                assert_eq!(
                    unstuff_in_chunks(wire, &[at]),
                    want,
                    "{wire:?} split at {at}"
                );
            }
        }
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        assert_eq!(u.feed(b".\r\n", &mut out), Some(3));
        assert!(u.is_done());
        assert_eq!(u.feed(b"more", &mut out), Some(0));
    }

    #[test]
    fn large_body_streams_without_holding_input() {
        let line = b"0123456789 .abc\r\n.starts with dot\r\n";
        let mut s = Stuffer::new();
        let mut u = Unstuffer::new();
        let mut wire = Vec::new();
        let mut body = Vec::new();
        let mut total = 0usize;
        for _ in 0..10_000 {
            wire.clear();
            s.stuff(line, &mut wire);
            body.clear();
            assert_eq!(u.feed(&wire, &mut body), None);
            assert_eq!(body, line);
            total += body.len();
        }
        wire.clear();
        s.finish(&mut wire);
        assert_eq!(u.feed(&wire, &mut body), Some(3));
        assert_eq!(total, line.len() * 10_000);
    }

    proptest::proptest! {
        #[test]
        fn stuff_then_unstuff_is_normalize(
            x in proptest::collection::vec(proptest::sample::select(b"ab.\r\n\x00\xff".to_vec()), 0..200),
            split in 0usize..200,
        ) {
            let wire = stuff_in_chunks(&x, &[split.min(x.len())]);
            let got = unstuff_in_chunks(&wire, &[split.min(wire.len())]);
            proptest::prop_assert_eq!(got, Some((normalize(&x), wire.len())));
        }

        #[test]
        fn stuff_then_unstuff_arbitrary_bytes(x in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let wire = Stuffer::stuff_all(&x);
            proptest::prop_assert_eq!(unstuff_in_chunks(&wire, &[]), Some((normalize(&x), wire.len())));
        }
    }
}
