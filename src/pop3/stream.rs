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

/// Outgoing data is written to the peer once this much is queued (a multi-line body is streamed in pieces of
/// about this size); smaller replies wait for the flush that ends them.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

/// An over-long line is skipped up to its LF so the session can answer `-ERR` and go on; past this many octets
/// without an LF the peer is not speaking POP3 and the caller must close ([`Pop3Error::LineTooLong`] with
/// `resynced: false`). Bounds time spent on garbage, not memory (discarded bytes are never stored).
pub const MAX_DISCARD: usize = 1 << 20;

/// A POP3 connection. Reads are buffered in a fixed [`READ_BUFFER`]; writes queue in memory until the reply is
/// complete and are then flushed once.
pub struct Pop3Stream<S> {
    inner: S,
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    wbuf: Vec<u8>,
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

    /// Reads more input into the buffer; returns how many octets arrived (0 = end of stream).
    async fn fill(&mut self) -> Result<usize, Pop3Error> {
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
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.inner.write_all(&self.wbuf).await?;
            self.wbuf.clear();
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
        if !self.wbuf.is_empty() {
            self.inner.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Flushes and shuts down the write side (after QUIT).
    pub async fn shutdown(&mut self) -> Result<(), Pop3Error> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// Whether the peer sent bytes we have not consumed yet (pipelined commands).
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rend
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
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;
    use crate::pop3::response::Status;
    use crate::secret::Secret;

    /// Serves `input` in pieces of `chunk` octets and records writes and flushes.
    struct Scripted {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
        written: Vec<u8>,
        flushes: usize,
    }

    impl Scripted {
        fn new(input: &[u8], chunk: usize) -> Self {
            Scripted {
                input: input.to_vec(),
                pos: 0,
                chunk: chunk.max(1),
                written: Vec::new(),
                flushes: 0,
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .chunk
                .min(buf.remaining())
                .min(self.input.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.input[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn stream(input: &[u8], chunk: usize) -> Pop3Stream<Scripted> {
        Pop3Stream::new(Scripted::new(input, chunk))
    }

    #[tokio::test]
    async fn commands_at_every_chunk_size() {
        let wire = b"USER alice\r\nPASS se cret\r\nSTAT\nLIST 2\r\nRETR 0\r\nTOP 1 0\r\nXYZZY\r\n\r\nQUIT\r\n";
        for chunk in 1..=wire.len() {
            let mut s = stream(wire, chunk);
            let mut got = Vec::new();
            while let Some(c) = s.read_command().await.unwrap() {
                got.push(c);
            }
            assert_eq!(
                got,
                vec![
                    Ok(Command::User("alice".into())),
                    Ok(Command::Pass(Secret::new("se cret"))),
                    Ok(Command::Stat),
                    Ok(Command::List(Some(2))),
                    Err(CommandError::ZeroMessageNumber { verb: "RETR" }),
                    Ok(Command::Top(1, 0)),
                    Ok(Command::Unknown("XYZZY".into())),
                    Err(CommandError::Empty),
                    Ok(Command::Quit),
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn responses_and_bodies_at_every_chunk_size() {
        let wire: &[u8] =
            b"+OK POP3 ready\r\n+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n+OK 17 octets\r\n\
            Subject: x\r\n\r\n..dot\nbare lf\r\n.\r\n+OK\r\n.\r\n-ERR [SYS/TEMP] busy\r\n";
        for chunk in 1..=wire.len() {
            let mut s = stream(wire, chunk);
            assert_eq!(s.read_response().await.unwrap(), Response::ok("POP3 ready"));
            assert!(s.read_response().await.unwrap().is_ok());
            assert_eq!(s.read_multiline(1000).await.unwrap(), b"1 120\r\n2 200\r\n");
            assert!(s.read_response().await.unwrap().is_ok());
            let mut body = Vec::new();
            while !s.read_multiline_chunk(&mut body).await.unwrap() {}
            assert_eq!(
                body, b"Subject: x\r\n\r\n.dot\r\nbare lf\r\n",
                "chunk size {chunk}"
            );
            assert!(s.read_response().await.unwrap().is_ok());
            assert_eq!(
                s.read_multiline(1000).await.unwrap(),
                b"",
                "empty body, chunk size {chunk}"
            );
            let r = s.read_response().await.unwrap();
            assert_eq!(
                (r.status, r.code.clone()),
                (Status::Err, Some(crate::pop3::RespCode::SysTemp))
            );
            assert!(matches!(s.read_response().await, Err(Pop3Error::Closed)));
        }
    }

    #[tokio::test]
    async fn ten_thousand_pipelined_commands() {
        let mut wire = Vec::new();
        for i in 1..=10_000u32 {
            wire.extend_from_slice(format!("RETR {i}\r\n").as_bytes());
        }
        let mut s = stream(&wire, wire.len());
        for i in 1..=10_000u32 {
            assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Retr(i))));
        }
        assert_eq!(s.read_command().await.unwrap(), None);
    }

    #[tokio::test]
    async fn megabyte_line_is_an_error_then_the_session_goes_on() {
        let mut wire = vec![b'A'; 1_000_000];
        wire.extend_from_slice(b"\r\nNOOP\r\n");
        let mut s = stream(&wire, 64 * 1024);
        assert_eq!(
            s.read_command().await.unwrap(),
            Some(Err(CommandError::TooLong {
                limit: COMMAND_LINE_READ_LIMIT
            }))
        );
        assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Noop)));
        assert_eq!(s.rbuf.len(), READ_BUFFER, "the read buffer never grows");

        // No LF at all: past MAX_DISCARD the caller is told to close.
        let wire = vec![b'A'; MAX_DISCARD + 2 * READ_BUFFER];
        let mut s = stream(&wire, READ_BUFFER);
        assert!(matches!(
            s.read_command().await,
            Err(Pop3Error::LineTooLong {
                resynced: false,
                ..
            })
        ));

        let mut long = vec![b'+'; RESPONSE_LINE_READ_LIMIT + 10];
        long.extend_from_slice(b"\r\n+OK\r\n");
        let mut s = stream(&long, 100);
        assert!(matches!(
            s.read_response().await,
            Err(Pop3Error::LineTooLong { resynced: true, .. })
        ));
        assert!(s.read_response().await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn line_limit_is_exact() {
        let mut ok = vec![b'x'; 10];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            stream(&ok, 3).read_line(10).await.unwrap(),
            Some(vec![b'x'; 10])
        );
        let mut long = vec![b'x'; 11];
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            stream(&long, 3).read_line(10).await,
            Err(Pop3Error::LineTooLong { .. })
        ));
        let mut long_lf = vec![b'x'; 11];
        long_lf.push(b'\n');
        assert!(matches!(
            stream(&long_lf, 3).read_line(10).await,
            Err(Pop3Error::LineTooLong { .. })
        ));
    }

    #[tokio::test]
    async fn nul_and_invalid_utf8_do_not_panic() {
        let wire = b"\x00\xff\xfe\r\nUSER \xff\xfe\r\nPASS \x00\r\n\xc3\x28 1\r\n+OK \xff\r\n";
        let mut s = stream(wire, 2);
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Ok(Command::Unknown(_)))
        ));
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Err(CommandError::InvalidUtf8 { .. }))
        ));
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Err(CommandError::ControlCharacter { .. }))
        ));
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Ok(Command::Unknown(_)))
        ));
        assert!(s.read_response().await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn eof_clean_versus_mid_line() {
        assert_eq!(stream(b"", 1).read_command().await.unwrap(), None);
        assert!(matches!(
            stream(b"NOOP", 1).read_command().await,
            Err(Pop3Error::UnexpectedEof)
        ));
        assert!(matches!(
            stream(b"", 1).read_response().await,
            Err(Pop3Error::Closed)
        ));
        let mut s = stream(b"line one\r\nline tw", 4);
        let mut out = Vec::new();
        let mut result = Ok(false);
        while let Ok(false) = result {
            result = s.read_multiline_chunk(&mut out).await;
        }
        assert!(matches!(result, Err(Pop3Error::UnexpectedEof)));
    }

    #[tokio::test]
    async fn multiline_limit_keeps_the_stream_in_step() {
        let mut s = stream(b"0123456789\r\n0123456789\r\n.\r\n+OK next\r\n", 5);
        assert!(matches!(
            s.read_multiline(15).await,
            Err(Pop3Error::TooLarge { limit: 15 })
        ));
        assert_eq!(s.read_response().await.unwrap(), Response::ok("next"));
    }

    #[tokio::test]
    async fn writes_stuff_and_flush_once_per_reply() {
        let body = b"From: a\n.hidden\r\n\r\n..two\nlast line without end";
        for split in 0..=body.len() {
            let mut s = stream(b"", 1);
            s.queue_response(&Response::ok("message follows"));
            s.write_multiline_chunk(&body[..split]).await.unwrap();
            s.write_multiline_chunk(&body[split..]).await.unwrap();
            s.finish_multiline().await.unwrap();
            let inner = s.into_inner();
            let mut want = b"+OK message follows\r\n".to_vec();
            want.extend_from_slice(&Stuffer::stuff_all(body));
            assert_eq!(inner.written, want);
            assert_eq!(inner.flushes, 1, "one flush per reply");
        }
        let mut s = stream(b"", 1);
        s.write_response(&Response::err("no such message"))
            .await
            .unwrap();
        s.write_command(&Command::Retr(3)).await.unwrap();
        s.finish_multiline().await.unwrap();
        let inner = s.into_inner();
        assert_eq!(inner.written, b"-ERR no such message\r\nRETR 3\r\n.\r\n");
        assert_eq!(inner.flushes, 3);
    }

    #[tokio::test]
    async fn stls_refuses_pipelined_plaintext() {
        let mut s = stream(b"STLS\r\nUSER injected\r\n", 100);
        assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Stls)));
        assert!(s.has_buffered_input());
        assert!(matches!(
            s.into_inner_checked(),
            Err(Pop3Error::BufferedInputAfterStls)
        ));
        let mut s = stream(b"STLS\r\n", 100);
        assert_eq!(s.read_command().await.unwrap(), Some(Ok(Command::Stls)));
        assert!(s.into_inner_checked().is_ok());
    }

    #[tokio::test]
    async fn sasl_exchange_lines() {
        let mut s = stream(
            b"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN\r\n*\r\n",
            3,
        );
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Ok(Command::Auth { .. }))
        ));
        s.write_response(&Response::cont("")).await.unwrap();
        assert_eq!(
            s.read_sasl_response().await.unwrap(),
            Ok(SaslResponse::Data(Secret::new("AGFsaWNlAHNlY3JldA==")))
        );
        assert!(matches!(
            s.read_command().await.unwrap(),
            Some(Ok(Command::Auth { .. }))
        ));
        assert_eq!(
            s.read_sasl_response().await.unwrap(),
            Ok(SaslResponse::Cancel)
        );
        assert!(matches!(
            s.read_sasl_response().await,
            Err(Pop3Error::Closed)
        ));
        assert_eq!(s.into_inner().written, b"+ \r\n");
    }

    #[tokio::test]
    async fn works_over_a_duplex_pipe() {
        let (a, b) = tokio::io::duplex(64);
        let mut client = Pop3Stream::new(a);
        let mut server = Pop3Stream::new(b);
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| if i % 77 == 0 { b'\n' } else { b'.' })
            .collect();
        let big2 = big.clone();
        let srv = tokio::spawn(async move {
            let cmd = server.read_command().await.unwrap();
            assert_eq!(cmd, Some(Ok(Command::Retr(1))));
            server.queue_response(&Response::ok("follows"));
            for piece in big2.chunks(1000) {
                server.write_multiline_chunk(piece).await.unwrap();
            }
            server.finish_multiline().await.unwrap();
        });
        let test = async {
            client.write_command(&Command::Retr(1)).await.unwrap();
            assert!(client.read_response().await.unwrap().is_ok());
            let body = client.read_multiline(1 << 20).await.unwrap();
            assert_eq!(body, crate::pop3::multiline::normalize(&big));
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), test)
            .await
            .unwrap();
        srv.await.unwrap();
    }
}
