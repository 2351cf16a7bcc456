//! Line ends: POP3 carries CRLF, maildir files and Unix tools expect LF. One [`Eol`] for the client (which line
//! ends a saved message gets) and the proxy (which line end an inserted header line gets), and the streaming
//! CRLF → LF conversion.

/// A line end. As a setting for saved messages the default is [`Eol::Lf`], the maildir convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eol {
    /// As on the wire: CRLF (after un-stuffing).
    Crlf,
    /// CRLF becomes LF (the maildir convention; fetchmail and getmail do the same). A lone CR is kept.
    #[default]
    Lf,
}

impl Eol {
    /// The ending of the first line of `data` (CRLF when there is none: the wire form).
    pub fn detect(data: &[u8]) -> Eol {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) if i == 0 || data[i - 1] != b'\r' => Eol::Lf,
            _ => Eol::Crlf,
        }
    }

    pub fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Crlf => b"\r\n",
            Eol::Lf => b"\n",
        }
    }
}

/// Streaming CRLF → LF: a CR at the end of one chunk waits to see whether the next chunk starts with LF.
#[derive(Debug, Default)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 1);
        if self.pending_cr && !input.is_empty() {
            self.pending_cr = false;
            if input[0] != b'\n' {
                out.push(b'\r');
            }
        }
        while let Some(i) = input.iter().position(|&b| b == b'\r') {
            out.extend_from_slice(&input[..i]);
            match input.get(i + 1) {
                // CRLF: drop the CR, the LF is copied with the next run.
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => self.pending_cr = true,
            }
            input = &input[i + 1..];
        }
        out.extend_from_slice(input);
    }

    /// Ends the stream: a CR still waiting for its LF is written as it was.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    #[test]
    fn detect_reads_the_first_line_end() {
        assert_eq!(Eol::detect(b"a\r\nb\n"), Eol::Crlf);
        assert_eq!(Eol::detect(b"a\nb\r\n"), Eol::Lf);
        assert_eq!(Eol::detect(b"\n"), Eol::Lf);
        assert_eq!(Eol::detect(b"no end"), Eol::Crlf);
        assert_eq!(Eol::Lf.bytes(), b"\n");
    }

    #[test]
    fn every_split_matches_the_reference() {
        let cases: &[&[u8]] = &[
            b"a\r\nb\r\n",
            b"\r\r\n\r",
            b"\r",
            b"\n\r\n\r\r\n",
            b"x\ry\r\nz",
            b"",
            b"\r\n\r\n.\r\n",
            b"\r\rx\r",
        ];
        for case in cases {
            for cut in 0..=case.len() {
                for cut2 in cut..=case.len() {
                    let mut c = CrlfToLf::new();
                    let mut out = Vec::new();
                    c.convert(&case[..cut], &mut out);
                    c.convert(&case[cut..cut2], &mut out);
                    c.convert(&case[cut2..], &mut out);
                    c.finish(&mut out);
                    assert_eq!(out, naive(case), "case {case:?} cut {cut} {cut2}");
                }
            }
        }
    }

    #[test]
    fn every_string_over_cr_lf_a() {
        // All strings of length ≤ 7 over {CR, LF, 'a'}, one byte per chunk.
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=7u32 {
            for mut k in 0..3usize.pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[k % 3]);
                    k /= 3;
                }
                let mut c = CrlfToLf::new();
                let mut out = Vec::new();
                for b in &s {
                    c.convert(std::slice::from_ref(b), &mut out);
                }
                c.finish(&mut out);
                assert_eq!(out, naive(&s), "{s:?}");
            }
        }
    }
}
