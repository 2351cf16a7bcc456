//! Fuzz target: `Pop3Stream` over a byte stream delivered in fuzzer-chosen chunks, driven by a fuzzer-chosen
//! sequence of reads (commands, status lines, whole and streamed multi-line bodies, SASL lines). Every result is
//! checked against a model that reads the same bytes with the pure parsers, so a framing bug at a buffer or chunk
//! boundary shows up as a mismatch, not only as a panic. Then the write side is checked against `Stuffer`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popguard::pop3::stream::{MAX_DISCARD, READ_BUFFER};
use popguard::pop3::{
    COMMAND_LINE_READ_LIMIT, Command, CommandError, Pop3Error, Pop3Stream,
    RESPONSE_LINE_READ_LIMIT, Response, SASL_LINE_READ_LIMIT, SaslResponse, Stuffer, Unstuffer,
};
use popguard_fuzz::{ChunkedTransport, block_on, split_pattern};

/// The reference reader: the same framing rules as `Pop3Stream`, over the whole input at once.
struct Model<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Model<'_> {
    fn line(&mut self, max: usize) -> Result<Option<Vec<u8>>, Pop3Error> {
        let rest = &self.input[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                self.pos += p + 1;
                let line = rest[..p].strip_suffix(b"\r").unwrap_or(&rest[..p]);
                if line.len() > max {
                    Err(Pop3Error::LineTooLong {
                        limit: max,
                        resynced: true,
                    })
                } else {
                    Ok(Some(line.to_vec()))
                }
            }
            None => {
                self.pos = self.input.len();
                if rest.len() > max + 1 {
                    // Skipped to the end of the stream; the next read sees a clean close.
                    Err(Pop3Error::LineTooLong {
                        limit: max,
                        resynced: true,
                    })
                } else {
                    Err(Pop3Error::UnexpectedEof)
                }
            }
        }
    }

    fn multiline(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut out = Vec::new();
        match Unstuffer::new().feed(&self.input[self.pos..], &mut out) {
            Some(n) => {
                self.pos += n;
                Ok(out)
            }
            None => {
                self.pos = self.input.len();
                Err(Pop3Error::UnexpectedEof)
            }
        }
    }
}

/// Pop3Error has no `PartialEq` (it wraps `io::Error`); its Debug form names the variant and fields.
fn dbg<T, E: std::fmt::Debug>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{e:?}"))
}

/// Whether the connection is still usable after this error (the session would answer `-ERR` and go on).
fn survivable(e: &Pop3Error) -> bool {
    matches!(
        e,
        Pop3Error::LineTooLong { resynced: true, .. }
            | Pop3Error::Response(_)
            | Pop3Error::TooLarge { .. }
    )
}

fuzz_target!(|data: &[u8]| {
    let (pattern, rest) = split_pattern(data);
    let Some((&nops, rest)) = rest.split_first() else {
        return;
    };
    let nops = usize::from(nops % 8) + 1;
    let (ops, payload) = rest.split_at(nops.min(rest.len()));
    if ops.is_empty() || payload.len() >= MAX_DISCARD {
        // Past MAX_DISCARD whether a line resyncs depends on where reads end; the tests cover that case.
        return;
    }

    let mut stream = Pop3Stream::new(ChunkedTransport::new(payload, &pattern));
    let mut model = Model {
        input: payload,
        pos: 0,
    };
    let mut steps = 0;
    'ops: loop {
        for &op in ops {
            steps += 1;
            // Every step consumes at least one byte or ends the loop.
            assert!(steps <= payload.len() + 2, "no progress");
            let go_on = match op % 5 {
                0 => {
                    let got = block_on(stream.read_command());
                    let want = match model.line(COMMAND_LINE_READ_LIMIT) {
                        Ok(None) => Ok(None),
                        Ok(Some(line)) => Ok(Some(Command::parse(&line))),
                        Err(Pop3Error::LineTooLong {
                            limit,
                            resynced: true,
                        }) => Ok(Some(Err(CommandError::TooLong { limit }))),
                        Err(e) => Err(e),
                    };
                    let go_on = matches!(got, Ok(Some(_)));
                    assert_eq!(dbg(got), dbg(want));
                    go_on
                }
                1 => {
                    let got = block_on(stream.read_response());
                    let want = match model.line(RESPONSE_LINE_READ_LIMIT) {
                        Ok(None) => Err(Pop3Error::Closed),
                        Ok(Some(line)) => Response::parse(&line).map_err(Pop3Error::from),
                        Err(e) => Err(e),
                    };
                    let go_on = got.as_ref().map_or_else(survivable, |_| true);
                    assert_eq!(dbg(got), dbg(want));
                    go_on
                }
                2 => {
                    let limit = usize::from(op >> 3) * 97;
                    let got = block_on(stream.read_multiline(limit));
                    let want = model.multiline().and_then(|b| {
                        if b.len() > limit {
                            Err(Pop3Error::TooLarge { limit })
                        } else {
                            Ok(b)
                        }
                    });
                    let go_on = got.as_ref().map_or_else(survivable, |_| true);
                    assert_eq!(dbg(got), dbg(want));
                    go_on
                }
                3 => {
                    let mut body = Vec::new();
                    let got = loop {
                        let before = body.len();
                        let r = block_on(stream.read_multiline_chunk(&mut body));
                        // One call yields at most one buffer, doubled if every LF was bare.
                        assert!(body.len() - before <= 2 * READ_BUFFER);
                        match r {
                            Ok(true) => break Ok(body),
                            Ok(false) => {}
                            Err(e) => break Err(e),
                        }
                    };
                    let want = model.multiline();
                    let go_on = got.is_ok();
                    assert_eq!(dbg(got), dbg(want));
                    go_on
                }
                _ => {
                    let got = block_on(stream.read_sasl_response());
                    let want = match model.line(SASL_LINE_READ_LIMIT) {
                        Ok(None) => Err(Pop3Error::Closed),
                        Ok(Some(line)) => Ok(SaslResponse::parse(&line)),
                        Err(Pop3Error::LineTooLong {
                            limit,
                            resynced: true,
                        }) => Ok(Err(CommandError::TooLong { limit })),
                        Err(e) => Err(e),
                    };
                    let go_on = got.is_ok();
                    assert_eq!(dbg(got), dbg(want));
                    go_on
                }
            };
            // The stream holds exactly what was delivered and not yet consumed.
            let delivered = payload.len() - stream.get_ref().unread();
            assert!(
                model.pos <= delivered,
                "stream consumed bytes it never read"
            );
            assert_eq!(stream.has_buffered_input(), model.pos < delivered);
            assert!(delivered - model.pos <= READ_BUFFER);
            if !go_on {
                break 'ops;
            }
        }
    }

    // The write side: a queued status line, then the payload as a body in the same chunks, sent stuffed.
    let before = stream.get_ref().written.len();
    assert_eq!(before, 0, "reads wrote something");
    let ok = Response::ok("follows");
    stream.queue_response(&ok);
    for c in popguard_fuzz::chunks(payload, &pattern) {
        block_on(stream.write_multiline_chunk(c)).expect("in-memory write");
    }
    block_on(stream.finish_multiline()).expect("in-memory write");
    let mut want = ok.to_wire();
    want.extend_from_slice(&Stuffer::stuff_all(payload));
    assert_eq!(stream.get_ref().written, want);
});
