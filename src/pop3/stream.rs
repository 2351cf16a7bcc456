//! `Pop3Stream`: POP3 framing over any `AsyncRead + AsyncWrite`, with a bounded read buffer, capped line reads,
//! streaming multi-line bodies and buffered writes flushed once per reply.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::command::{
    COMMAND_LINE_READ_LIMIT, Command, CommandError, SASL_LINE_READ_LIMIT, SaslResponse,
};
use super::error::Pop3Error;
use super::multiline::{Stuffer, Unstuffer};
use super::response::{RESPONSE_LINE_READ_LIMIT, Response};

/// Size of the read buffer: the most we hold of unread input, and the most one `read_multiline_chunk` yields.
pub const READ_BUFFER: usize = 16 * 1024;

/// The most output one connection holds for its peer: once this much is queued it is written before anything
/// else is queued (a multi-line body is streamed in pieces of about this size, and a run of pipelined replies is
/// cut here). A peer that sends commands and never reads then meets TCP backpressure — the write waits, under the
/// caller's write or inactivity timer — instead of growing our memory; 64 KiB is a few TCP windows' worth, so
/// batching still saves the syscalls that matter.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

/// An over-long line is skipped up to its LF so the session can answer `-ERR` and go on; past this many octets
/// without an LF the peer is not speaking POP3 and the caller must close ([`Pop3Error::LineTooLong`] with
/// `resynced: false`). Bounds time spent on garbage, not memory (discarded bytes are never stored).
pub const MAX_DISCARD: usize = 1 << 20;

/// A POP3 connection. Reads are buffered in a fixed [`READ_BUFFER`]; writes queue in memory until the reply is
/// complete and are then flushed once.
///
/// The flush policy for a loop that answers commands is [`Pop3Stream::flush_if_needed`], and no read ever waits
/// on the peer while output is queued (it is flushed first): a peer that pipelines never waits for a reply we
/// hold, and what we hold stays under [`WRITE_HIGH_WATER`] plus one reply.
pub struct Pop3Stream<S> {
    inner: S,
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    wbuf: Vec<u8>,
    /// How much of `wbuf` the peer already has: a write cut short by a timeout resumes here, so nothing is sent
    /// twice.
    wpos: usize,
    /// The multi-line body being read, if one was started and not finished.
    unstuffer: Option<Unstuffer>,
    /// The multi-line body being written, if one was started and not finished.
    stuffer: Option<Stuffer>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3Stream<S> {
    pub fn new(inner: S) -> Self {
        Pop3Stream {
            inner,
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(1024),
            wpos: 0,
            unstuffer: None,
            stuffer: None,
        }
    }

    /// The next command. `Ok(None)` is a clean close between commands. A malformed command, or one longer than
    /// [`COMMAND_LINE_READ_LIMIT`] (skipped up to its end), is `Ok(Some(Err(..)))`: answer `-ERR {error}` and go
    /// on. `Err` means the connection is unusable (I/O error, close mid-line, an endless line): close it.
    pub async fn read_command(
        &mut self,
    ) -> Result<Option<Result<Command, CommandError>>, Pop3Error> {
        match self.read_line(COMMAND_LINE_READ_LIMIT).await {
            Ok(None) => Ok(None),
            Ok(Some(line)) => Ok(Some(Command::parse(&line))),
            Err(Pop3Error::LineTooLong {
                limit,
                resynced: true,
            }) => Ok(Some(Err(CommandError::TooLong { limit }))),
            Err(e) => Err(e),
        }
    }

    /// A client's line during a SASL exchange, after we sent a `+ ` continuation (RFC 5034 §4): base64 data or
    /// `*` (cancel). A close here is [`Pop3Error::Closed`]; a bad line is `Ok(Err(..))`, answer `-ERR`.
    pub async fn read_sasl_response(
        &mut self,
    ) -> Result<Result<SaslResponse, CommandError>, Pop3Error> {
        match self.read_line(SASL_LINE_READ_LIMIT).await {
            Ok(None) => Err(Pop3Error::Closed),
            Ok(Some(line)) => Ok(SaslResponse::parse(&line)),
            Err(Pop3Error::LineTooLong {
                limit,
                resynced: true,
            }) => Ok(Err(CommandError::TooLong { limit })),
            Err(e) => Err(e),
        }
    }

    /// The next status line from a server. A close before it is [`Pop3Error::Closed`].
    pub async fn read_response(&mut self) -> Result<Response, Pop3Error> {
        match self.read_line(RESPONSE_LINE_READ_LIMIT).await? {
            None => Err(Pop3Error::Closed),
            Some(line) => Ok(Response::parse(&line)?),
        }
    }

    /// One line without its line end (LF, or CRLF). `Ok(None)` on a close before any byte of the line; a close
    /// after some bytes is [`Pop3Error::UnexpectedEof`]. A line longer than `max` octets is discarded up to its
    /// LF and reported as [`Pop3Error::LineTooLong`] (see [`MAX_DISCARD`] for when `resynced` is false).
    pub async fn read_line(&mut self, max: usize) -> Result<Option<Vec<u8>>, Pop3Error> {
        let mut line = Vec::new();
        loop {
            let avail = &self.rbuf[self.rpos..self.rend];
            if let Some(p) = avail.iter().position(|&b| b == b'\n') {
                // `max + 1` leaves room for the CR that is not part of the line.
                if line.len() + p > max + 1 {
                    self.rpos += p + 1;
                    return Err(Pop3Error::LineTooLong {
                        limit: max,
                        resynced: true,
                    });
                }
                line.extend_from_slice(&avail[..p]);
                self.rpos += p + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > max {
                    return Err(Pop3Error::LineTooLong {
                        limit: max,
                        resynced: true,
                    });
                }
                return Ok(Some(line));
            }
            if line.len() + avail.len() > max + 1 {
                let already = line.len() + avail.len();
                self.rpos = self.rend;
                return self.discard_line(max, already).await;
            }
            line.extend_from_slice(avail);
            self.rpos = self.rend;
            if self.fill().await? == 0 {
                return if line.is_empty() {
                    Ok(None)
                } else {
                    Err(Pop3Error::UnexpectedEof)
                };
            }
        }
    }

    /// Skips input up to and including the next LF, after `already` octets of an over-long line.
    async fn discard_line(
        &mut self,
        max: usize,
        mut already: usize,
    ) -> Result<Option<Vec<u8>>, Pop3Error> {
        loop {
            if self.fill().await? == 0 {
                // The stream is at its end: the next read reports a clean close.
                return Err(Pop3Error::LineTooLong {
                    limit: max,
                    resynced: true,
                });
            }
            let avail = &self.rbuf[self.rpos..self.rend];
            if let Some(p) = avail.iter().position(|&b| b == b'\n') {
                self.rpos += p + 1;
                return Err(Pop3Error::LineTooLong {
                    limit: max,
                    resynced: true,
                });
            }
            already += avail.len();
            self.rpos = self.rend;
            if already > MAX_DISCARD {
                return Err(Pop3Error::LineTooLong {
                    limit: max,
                    resynced: false,
                });
            }
        }
    }

    /// Reads more input into the buffer; returns how many octets arrived (0 = end of stream). Queued output is
    /// sent first: the peer may be waiting for it before it sends more (a client that pipelines and leaves half
    /// a command at the end of each write, or commands queued towards a server), and holding it while waiting
    /// would let it grow without bound.
    async fn fill(&mut self) -> Result<usize, Pop3Error> {
        if self.queued_output() > 0 {
            self.flush().await?;
        }
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let n = self.inner.read(&mut self.rbuf[self.rend..]).await?;
        self.rend += n;
        Ok(n)
    }

    /// Streams a multi-line body (after its `+OK` line was read): appends the next un-stuffed piece to `out` and
    /// returns `true` once the terminator has been consumed. Yields what is buffered, reading from the peer only
    /// when nothing is; each call adds at most about [`READ_BUFFER`] octets to `out`. A close before the
    /// terminator is [`Pop3Error::UnexpectedEof`]. Content lines have no length limit.
    pub async fn read_multiline_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, Pop3Error> {
        if self.rpos == self.rend && self.fill().await? == 0 {
            self.unstuffer = None;
            return Err(Pop3Error::UnexpectedEof);
        }
        let unstuffer = self.unstuffer.get_or_insert_with(Unstuffer::new);
        match unstuffer.feed(&self.rbuf[self.rpos..self.rend], out) {
            Some(n) => {
                self.rpos += n;
                self.unstuffer = None;
                Ok(true)
            }
            None => {
                self.rpos = self.rend;
                Ok(false)
            }
        }
    }

    /// A whole multi-line body, for small replies (LIST, UIDL, CAPA, or a message to score). Past `limit` octets
    /// the body is still read to its terminator (so the stream stays in step) but dropped, and the result is
    /// [`Pop3Error::TooLarge`].
    pub async fn read_multiline(&mut self, limit: usize) -> Result<Vec<u8>, Pop3Error> {
        let mut body = Vec::new();
        let mut too_large = false;
        loop {
            let done = self.read_multiline_chunk(&mut body).await?;
            if body.len() > limit {
                too_large = true;
                body.clear();
            }
            if done {
                return if too_large {
                    Err(Pop3Error::TooLarge { limit })
                } else {
                    Ok(body)
                };
            }
        }
    }

    /// Queues a status line without sending it (pipelined replies, or a `+OK` before a multi-line body).
    pub fn queue_response(&mut self, response: &Response) {
        self.wbuf.extend_from_slice(&response.to_wire());
    }

    /// Queues raw bytes without sending them.
    pub fn queue_raw(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// Sends a status line (and anything queued before it) with one flush.
    pub async fn write_response(&mut self, response: &Response) -> Result<(), Pop3Error> {
        self.queue_response(response);
        self.flush().await
    }

    /// Sends a command with one flush.
    pub async fn write_command(&mut self, command: &Command) -> Result<(), Pop3Error> {
        self.wbuf.extend_from_slice(&command.to_wire());
        self.flush().await
    }

    /// Sends bytes as they are (a relayed status line, a SASL line) and flushes.
    pub async fn write_raw(&mut self, data: &[u8]) -> Result<(), Pop3Error> {
        self.queue_raw(data);
        self.flush().await
    }

    /// Adds body bytes of a multi-line reply, stuffing them; data goes out in [`WRITE_HIGH_WATER`] pieces, and
    /// the reply ends with [`Pop3Stream::finish_multiline`]. Chunk boundaries may fall anywhere.
    pub async fn write_multiline_chunk(&mut self, data: &[u8]) -> Result<(), Pop3Error> {
        self.stuffer
            .get_or_insert_with(Stuffer::new)
            .stuff(data, &mut self.wbuf);
        if self.queued_output() >= WRITE_HIGH_WATER {
            self.write_queued().await?;
        }
        Ok(())
    }

    /// Ends the multi-line reply (CRLF if needed, then `.` CRLF) and flushes. With no chunk written before, this
    /// sends an empty body.
    pub async fn finish_multiline(&mut self) -> Result<(), Pop3Error> {
        self.stuffer
            .take()
            .unwrap_or_default()
            .finish(&mut self.wbuf);
        self.flush().await
    }

    /// Sends everything queued and flushes the transport (for TLS, this emits the records).
    pub async fn flush(&mut self) -> Result<(), Pop3Error> {
        self.write_queued().await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Writes what is queued. Safe to cancel (a timeout): `wpos` records what the peer already has.
    async fn write_queued(&mut self) -> Result<(), Pop3Error> {
        while self.wpos < self.wbuf.len() {
            let n = self.inner.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(Pop3Error::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    /// Flushes and shuts down the write side (after QUIT).
    pub async fn shutdown(&mut self) -> Result<(), Pop3Error> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// Whether the peer sent bytes we have not consumed yet (pipelined commands, or part of one).
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rend
    }

    /// Whether a whole line (up to its LF) is waiting in the read buffer: the next command can be read without
    /// waiting on the peer. Half a line does not count: the rest may come only after the peer reads our replies.
    pub fn has_buffered_line(&self) -> bool {
        self.rbuf[self.rpos..self.rend].contains(&b'\n')
    }

    /// Octets queued for the peer and not yet written.
    pub fn queued_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Whether [`Pop3Stream::flush_if_needed`] would write now.
    pub fn needs_flush(&self) -> bool {
        !self.has_buffered_line() || self.queued_output() >= WRITE_HIGH_WATER
    }

    /// The one flush policy after a reply is queued (server and proxy alike): the replies to pipelined commands
    /// leave in one write (RFC 2449 §6.6), so wait only while the next command is already complete in the read
    /// buffer and less than [`WRITE_HIGH_WATER`] is queued; otherwise flush now. Waiting on a half command
    /// instead would hold every reply until the peer completes it, which it may never do without them.
    pub async fn flush_if_needed(&mut self) -> Result<(), Pop3Error> {
        if self.needs_flush() {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// The transport, for the STLS upgrade; build a fresh `Pop3Stream` on the TLS stream afterwards so no parser
    /// state survives the upgrade. Unread buffered input is dropped and queued output is lost: flush first, and
    /// prefer [`Pop3Stream::into_inner_checked`], which refuses when plaintext input is waiting.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Like [`Pop3Stream::into_inner`], but fails with [`Pop3Error::BufferedInputAfterStls`] when the peer sent
    /// bytes after the STLS command (or the server after its `+OK`): such bytes were sent in plaintext and would
    /// be taken as protected after the handshake (the command-injection attack of RFC 3207 §6, CVE-2011-0411).
    pub fn into_inner_checked(self) -> Result<S, Pop3Error> {
        if self.has_buffered_input() {
            Err(Pop3Error::BufferedInputAfterStls)
        } else {
            Ok(self.inner)
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests;
