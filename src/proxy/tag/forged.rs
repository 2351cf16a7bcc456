//! Incoming header fields named like the proxy's own (`X-Spam-*`, `X-Popguard-*`) renamed before the tag goes on,
//! so a client filter that reads `X-Spam-Flag` or `X-Spam-Status` finds only the proxy's verdict, never one the
//! sender forged (`X-Spam-Flag: NO`) or an upstream filter left.
//!
//! SpamAssassin removes such fields; the proxy renames them to a name of the same length (`X-Spam-Status` becomes
//! `X-Prev-Status`), because a rename that keeps the size is the only way to keep every promise the proxy makes:
//! - LIST sizes: a message's size is promised before its header is read again (from a cached verdict, or as
//!   upstream size plus [`super::FIXED_TAG_SIZE`] before it is scored at all). Removing fields would change the size
//!   by an amount known only from the header, which neither the verdict cache nor the fixed sizing carries, and which
//!   the 400-byte padding could not absorb for a large forged block. Renamed, the size is unchanged: LIST equals
//!   what RETR sends in both sizings, and TOP shows the same header as RETR.
//! - Bounded work for any header. The buffered head is bounded by [`super::MAX_TAG_HEADER`] as before (the Subject
//!   edit looks only there); the renaming is not bounded by it: a rename touches only the first bytes of a line, so
//!   it streams, and every field of the header is renamed however far past the head it lies, with at most
//!   [`MAX_HELD`] bytes held back between chunks and constant state. One pass, no allocation, whatever the number
//!   of forged fields.
//! - The original values stay readable for whoever debugs a delivery (an upstream SpamAssassin's score, say).
//!
//! Every `X-Spam-*` field is renamed, not only the three the proxy writes: `X-Spam-Level` and the like are read by
//! filters too, and the Bayes training digest and tokenizer (`filter::bayes`) already treat the whole family as a
//! tagger's, and treat the renamed `X-Prev-*` the same way, so a delivered copy is still the message it came from.

/// Name prefixes the proxy owns (compared without regard to case, as readers compare field names) and what an
/// incoming field's prefix is replaced with: the same length, and owned by no tagger.
pub const RENAMES: [(&[u8], &[u8]); 2] =
    [(b"X-Spam-", b"X-Prev-"), (b"X-Popguard-", b"X-Prev-Pgd-")];

/// The most bytes [`ForgedFields::rename`] holds back at the end of a chunk: the start of a line that may still
/// become an owned name (the longest owned name, less one byte).
pub const MAX_HELD: usize = 10;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a header line.
    #[default]
    LineStart,
    /// Inside a header line: nothing to do before its end.
    InLine,
    /// Past the blank line that ends the header: the body is never touched.
    Body,
}

/// The renaming state of one message's header, fed its bytes in order. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct ForgedFields {
    state: State,
}

/// What the start of a line says.
enum Line {
    /// The blank line that ends the header.
    Blank,
    /// A field with the owned name `RENAMES[i]`.
    Owned(usize),
    /// Any other line.
    Other,
    /// Too few bytes yet to tell.
    Undecided,
}

impl ForgedFields {
    pub fn new() -> ForgedFields {
        ForgedFields::default()
    }

    /// Renames owned fields in `buf` in place: `buf` is the message's bytes not sent yet, in order, starting with
    /// the ones this call held back last time. Returns how many leading bytes are final and may be sent; the rest
    /// (at most [`MAX_HELD`], the start of a line that may still turn out to be an owned name) must be passed again,
    /// with the next bytes after them. With `at_eof` (no more bytes will come) everything is final.
    pub fn rename(&mut self, buf: &mut [u8], at_eof: bool) -> usize {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Body => break,
                State::InLine => match buf[i..].iter().position(|&b| b == b'\n') {
                    Some(k) => {
                        i += k + 1;
                        self.state = State::LineStart;
                    }
                    None => break,
                },
                State::LineStart => match classify(&buf[i..]) {
                    Line::Blank => self.state = State::Body,
                    Line::Undecided if !at_eof => return i,
                    Line::Undecided | Line::Other => self.state = State::InLine,
                    Line::Owned(k) => {
                        let (from, to) = RENAMES[k];
                        buf[i..i + from.len()].copy_from_slice(to);
                        // A folded field's continuation lines go with its new name.
                        self.state = State::InLine;
                    }
                },
            }
        }
        buf.len()
    }

    /// True once the header's end went by: every later byte passes unchanged.
    pub fn past_header(&self) -> bool {
        self.state == State::Body
    }
}

/// Classifies the line starting at `rest[0]`, from as few bytes as decide it. The header ends where
/// [`super::find_header_end`] says it does: at the first empty line (LF or CRLF).
fn classify(rest: &[u8]) -> Line {
    match rest {
        [b'\n', ..] | [b'\r', b'\n', ..] => return Line::Blank,
        [b'\r'] => return Line::Undecided,
        _ => {}
    }
    let mut undecided = false;
    for (k, (name, _)) in RENAMES.iter().enumerate() {
        let n = name.len().min(rest.len());
        if rest[..n].eq_ignore_ascii_case(&name[..n]) {
            if n == name.len() {
                return Line::Owned(k);
            }
            undecided = true;
        }
    }
    if undecided {
        Line::Undecided
    } else {
        Line::Other
    }
}
