//! The one POP3 client connection, under both `client::Client` and the proxy's upstream: dialling (TCP, implicit
//! TLS, greeting, all within one budget), the STLS upgrade, timed commands and replies, multi-line bodies whole
//! (capped) or in chunks, a pipelining queue, and the CAPA cache. Policy (which TLS, how errors read) stays with
//! the callers.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::limits::{MAX_CAPA_BYTES, MAX_COMMAND_LINE};
use super::listing::{Listing, ListingParser, Value};
use super::{Capabilities, Command, Pop3Error, Pop3Stream, Response, Status, auth};
use crate::tls::{self, MaybeTls, TlsError};

/// Commands a connection holds queued and not yet sent (pipelining, RFC 2449 §6.6). Callers keep far fewer in
/// flight (the proxy's scan 16, its read-ahead 8) and every read sends the queue first, so reaching this means a
/// caller queues in a loop without flushing: the connection then refuses ([`Pop3Error::QueueFull`]) instead of
/// holding an unbounded queue. A command line is at most `MAX_COMMAND_LINE` octets (RFC 2449 §4), so a full
/// queue is about 16 KiB, under the stream's high-water mark.
pub const MAX_QUEUED_COMMANDS: usize = 64;

const _: () = assert!(MAX_QUEUED_COMMANDS * MAX_COMMAND_LINE <= super::stream::WRITE_HIGH_WATER);

/// What a [`dial`] timeout reports: the budget covers all three steps.
pub const DIAL_STEPS: &str = "the TCP connection, TLS handshake and greeting";

/// Runs one network step under `limit`; a step that takes longer is [`Pop3Error::Timeout`].
pub async fn timed<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, Pop3Error>>,
) -> Result<T, Pop3Error> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(Pop3Error::Timeout { what, after: limit }),
        Ok(r) => r,
    }
}

/// Opens a connection: `connect` (TCP, or a test's pipe), TLS from the first byte when `implicit_tls` gives the
/// certificate name and configuration, then the greeting, which must be `+OK`. `budget` covers all of it (a peer
/// that accepts TCP and then stalls the handshake or the greeting cannot hold the caller longer); `timeout` is
/// the connection's budget for each later step.
pub async fn dial<S, F>(
    connect: F,
    implicit_tls: Option<(&str, Arc<rustls::ClientConfig>)>,
    budget: Duration,
    timeout: Duration,
) -> Result<Connection<MaybeTls<S>>, Pop3Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = io::Result<S>>,
{
    timed(budget, DIAL_STEPS, async {
        let stream = connect.await.map_err(Pop3Error::Connect)?;
        let stream = match implicit_tls {
            Some((name, cfg)) => tls::connect(stream, name, cfg)
                .await
                .map_err(Pop3Error::Tls)?,
            None => MaybeTls::Plain(stream),
        };
        let mut conn = Connection::new(stream, timeout);
        conn.read_greeting().await?;
        Ok(conn)
    })
    .await
}

/// One POP3 client connection over any byte stream.
pub struct Connection<S> {
    stream: Pop3Stream<S>,
    timeout: Duration,
    greeting: Response,
    /// `None`: not asked in this state; `Some(None)`: CAPA refused; `Some(Some(c))`: the list.
    caps: Option<Option<Capabilities>>,
    /// Commands queued since the stream last had nothing waiting to go out.
    queued: usize,
    /// A command was refused by a full queue: the caller's view of the conversation is wrong, so every later
    /// step fails.
    overflowed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection on an open stream, before its greeting; `timeout` bounds every later network step.
    pub fn new(stream: S, timeout: Duration) -> Self {
        Connection {
            stream: Pop3Stream::new(stream),
            timeout,
            greeting: Response::ok(""),
            caps: None,
            queued: 0,
            overflowed: false,
        }
    }

    /// Reads the greeting; a `-ERR` greeting is [`Pop3Error::Refused`].
    pub async fn read_greeting(&mut self) -> Result<&Response, Pop3Error> {
        let greeting = self.response("the greeting").await?;
        if greeting.status != Status::Ok {
            return Err(Pop3Error::Refused {
                command: "the greeting",
                response: greeting,
            });
        }
        self.greeting = greeting;
        Ok(&self.greeting)
    }

    pub fn greeting(&self) -> &Response {
        &self.greeting
    }

    /// The APOP timestamp `<...@...>` of the greeting, if it has one (RFC 1939 §7).
    pub fn apop_timestamp(&self) -> Option<&str> {
        auth::apop_timestamp(&self.greeting.text)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, limit: Duration) {
        self.timeout = limit;
    }

    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// True when the peer sent bytes nobody has read yet.
    pub fn has_buffered_input(&self) -> bool {
        self.stream.has_buffered_input()
    }

    /// The transport, for a last shutdown.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    /// Rewraps the transport (e.g. clear TCP into `MaybeTls::Plain`), keeping greeting and capabilities; call it
    /// only between replies, when [`has_buffered_input`](Self::has_buffered_input) is false.
    pub fn map_stream<T: AsyncRead + AsyncWrite + Unpin>(
        self,
        f: impl FnOnce(S) -> T,
    ) -> Connection<T> {
        Connection {
            stream: Pop3Stream::new(f(self.stream.into_inner())),
            timeout: self.timeout,
            greeting: self.greeting,
            caps: self.caps,
            queued: self.queued,
            overflowed: self.overflowed,
        }
    }

    /// Sends one command (flushed, with anything queued before it).
    pub async fn send(&mut self, cmd: &Command) -> Result<(), Pop3Error> {
        self.in_step()?;
        tracing::trace!(dir = "c→s", %cmd);
        timed(self.timeout, cmd.verb(), self.stream.write_command(cmd)).await
    }

    /// Queues a command without sending it (pipelining, RFC 2449 §6.6); [`flush`](Self::flush) sends the batch,
    /// and so does the next read. Past [`MAX_QUEUED_COMMANDS`] unsent commands the command is refused and every
    /// later step fails with [`Pop3Error::QueueFull`].
    pub fn queue(&mut self, cmd: &Command) {
        if self.stream.queued_output() == 0 {
            self.queued = 0;
        }
        if self.queued >= MAX_QUEUED_COMMANDS {
            self.overflowed = true;
            return;
        }
        tracing::trace!(dir = "c→s", %cmd, "queued");
        self.stream.queue_raw(&cmd.to_wire());
        self.queued += 1;
    }

    /// Commands queued and not yet sent.
    pub fn queued_commands(&self) -> usize {
        if self.stream.queued_output() == 0 {
            0
        } else {
            self.queued
        }
    }

    pub async fn flush(&mut self) -> Result<(), Pop3Error> {
        self.in_step()?;
        timed(self.timeout, "sending queued commands", self.stream.flush()).await
    }

    /// Fails once a command was refused by a full queue: the answers would no longer match the commands.
    fn in_step(&self) -> Result<(), Pop3Error> {
        if self.overflowed {
            Err(Pop3Error::QueueFull {
                limit: MAX_QUEUED_COMMANDS,
            })
        } else {
            Ok(())
        }
    }

    /// Sends a raw line (a SASL response); CR and LF inside it are dropped so it stays one line.
    pub async fn send_line(&mut self, line: &[u8], what: &'static str) -> Result<(), Pop3Error> {
        self.in_step()?;
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend(line.iter().copied().filter(|&b| b != b'\r' && b != b'\n'));
        wire.extend_from_slice(b"\r\n");
        let r = timed(self.timeout, what, self.stream.write_raw(&wire)).await;
        wire.fill(0);
        r
    }

    /// The next status line; `what` names it in a timeout.
    pub async fn response(&mut self, what: &'static str) -> Result<Response, Pop3Error> {
        self.in_step()?;
        let r = timed(self.timeout, what, self.stream.read_response()).await?;
        tracing::trace!(dir = "s→c", response = %r);
        Ok(r)
    }

    /// Sends a command and reads its status line, whatever it says.
    pub async fn command(&mut self, cmd: &Command) -> Result<Response, Pop3Error> {
        self.send(cmd).await?;
        self.response(cmd.verb()).await
    }

    /// The next piece of a multi-line body (un-stuffed) appended to `out`; `true` once the terminator was read.
    pub async fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<bool, Pop3Error> {
        self.in_step()?;
        timed(self.timeout, what, self.stream.read_multiline_chunk(out)).await
    }

    /// A whole multi-line body; past `limit` octets it is read to its end and dropped ([`Pop3Error::TooLarge`]).
    /// The timeout applies to each chunk, so a large body on a slow link is not cut off.
    pub async fn multiline(
        &mut self,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, Pop3Error> {
        let mut body = Vec::new();
        let mut too_large = false;
        loop {
            let done = self.chunk(&mut body, what).await?;
            if body.len() > limit {
                too_large = true;
                body = Vec::new();
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

    /// A LIST or UIDL body parsed as it arrives (only the entries are held); past `limit` octets it is read to its
    /// end and dropped ([`Pop3Error::TooLarge`]).
    pub async fn listing<T: Value>(
        &mut self,
        mut parser: ListingParser<T>,
        limit: usize,
        what: &'static str,
    ) -> Result<Listing<T>, Pop3Error> {
        let mut chunk = Vec::new();
        let mut total = 0usize;
        loop {
            chunk.clear();
            let done = self.chunk(&mut chunk, what).await?;
            total = total.saturating_add(chunk.len());
            if total <= limit {
                parser.feed(&chunk);
            }
            if done {
                return if total > limit {
                    Err(Pop3Error::TooLarge { limit })
                } else {
                    Ok(parser.finish())
                };
            }
        }
    }

    /// The capabilities (RFC 2449), asked once per connection state; `None` when CAPA is refused. A `+ `
    /// continuation is a protocol error.
    pub async fn capabilities(&mut self) -> Result<Option<&Capabilities>, Pop3Error> {
        if self.caps.is_none() {
            let r = self.command(&Command::Capa).await?;
            let caps = match r.status {
                Status::Ok => Some(Capabilities::parse(
                    &self.multiline(MAX_CAPA_BYTES, "CAPA").await?,
                )),
                Status::Err => None,
                Status::Continue => {
                    self.caps = Some(None);
                    return Err(Pop3Error::Refused {
                        command: "CAPA",
                        response: r,
                    });
                }
            };
            self.caps = Some(caps);
        }
        Ok(self.cached_capabilities())
    }

    /// The capability list if it was asked in this state and given.
    pub fn cached_capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref().and_then(Option::as_ref)
    }

    /// True when capabilities were asked in this state (given or refused).
    pub fn capabilities_known(&self) -> bool {
        self.caps.is_some()
    }

    /// Forgets the capability list (it may change after login, RFC 2449 §5).
    pub fn forget_capabilities(&mut self) {
        self.caps = None;
    }

    /// STLS (RFC 2595 §4), then `handshake` on the same transport. Anything the server sent after `+OK` and before
    /// the handshake came in clear text and would be read as if it came through TLS (the CVE-2011-0411 family of
    /// injections), so it is refused; the upgraded connection gets a fresh parser and forgets the capabilities,
    /// which may have been forged in clear text.
    pub async fn starttls<T, F, Fut>(mut self, handshake: F) -> Result<Connection<T>, Pop3Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(S) -> Fut,
        Fut: Future<Output = Result<T, TlsError>>,
    {
        let answer = self.command(&Command::Stls).await?;
        if !answer.is_ok() {
            return Err(Pop3Error::Refused {
                command: "STLS",
                response: answer,
            });
        }
        let inner = self.stream.into_inner_checked()?;
        let tls = timed(self.timeout, "the TLS handshake", async {
            handshake(inner).await.map_err(Pop3Error::Tls)
        })
        .await?;
        Ok(Connection {
            stream: Pop3Stream::new(tls),
            timeout: self.timeout,
            greeting: self.greeting,
            caps: None,
            queued: 0,
            overflowed: false,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<MaybeTls<S>> {
    /// STLS on a connection that is still clear text; the certificate must be valid for `name`.
    pub async fn starttls_plain(
        self,
        name: &str,
        cfg: Arc<rustls::ClientConfig>,
    ) -> Result<Connection<MaybeTls<S>>, Pop3Error> {
        self.starttls(|stream| async move {
            match stream {
                MaybeTls::Plain(tcp) => tls::connect(tcp, name, cfg).await,
                _ => Err(TlsError::Handshake {
                    peer: name.to_owned(),
                    reason: "STLS on a connection that already uses TLS".into(),
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection whose server side is scripted: `script` is what the server sends, in one write.
    async fn scripted(
        script: &'static [u8],
    ) -> (Connection<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(script).await.unwrap();
        let mut c = Connection::new(client, Duration::from_secs(5));
        c.read_greeting().await.unwrap();
        (c, server)
    }

    #[tokio::test]
    async fn greeting_capa_cache_and_listing() {
        let (mut c, mut server) = scripted(
            b"+OK ready <1.2@host>\r\n+OK\r\nUSER\r\nPIPELINING\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n2 c\r\n.\r\n",
        )
        .await;
        assert_eq!(c.apop_timestamp(), Some("<1.2@host>"));
        assert!(c.capabilities().await.unwrap().unwrap().has("PIPELINING"));
        // Cached: no second CAPA goes out.
        assert!(c.capabilities().await.unwrap().is_some());
        c.queue(&Command::Uidl(None));
        c.flush().await.unwrap();
        assert!(c.response("UIDL").await.unwrap().is_ok());
        let l = c
            .listing(ListingParser::uidl(), 1024, "UIDL")
            .await
            .unwrap();
        assert_eq!(l.entries, vec![(1, "a".to_owned()), (2, "b".to_owned())]);
        assert_eq!(l.problems.len(), 1);
        drop(c);
        let mut sent = String::new();
        server.read_to_string(&mut sent).await.unwrap();
        assert_eq!(sent, "CAPA\r\nUIDL\r\n");
    }

    #[tokio::test]
    async fn the_pipelining_queue_is_bounded() {
        let (mut c, mut server) = scripted(b"+OK ready\r\n").await;
        // Flushing (or reading) empties the queue, so window after window is fine.
        for _ in 0..3 {
            for n in 1..=MAX_QUEUED_COMMANDS as u32 {
                c.queue(&Command::Retr(n));
            }
            assert_eq!(c.queued_commands(), MAX_QUEUED_COMMANDS);
            c.flush().await.unwrap();
            assert_eq!(c.queued_commands(), 0);
        }
        let mut sent = vec![0; 3 * MAX_QUEUED_COMMANDS * b"RETR 64\r\n".len()];
        let n = server.read(&mut sent).await.unwrap();
        assert!(n > 0);
        // One more than the queue holds: refused, and the connection stays refused rather than out of step.
        for n in 0..=MAX_QUEUED_COMMANDS as u32 {
            c.queue(&Command::Retr(n + 1));
        }
        assert_eq!(c.queued_commands(), MAX_QUEUED_COMMANDS);
        for e in [
            c.flush().await.unwrap_err(),
            c.response("RETR").await.unwrap_err(),
            c.send(&Command::Noop).await.unwrap_err(),
        ] {
            assert!(
                matches!(
                    e,
                    Pop3Error::QueueFull {
                        limit: MAX_QUEUED_COMMANDS
                    }
                ),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_bodies_are_read_to_their_end() {
        let (mut c, _server) =
            scripted(b"+OK\r\n+OK\r\n1 2\r\n3 4\r\n.\r\n+OK\r\nxxxxxxxxxx\r\n.\r\n+OK next\r\n")
                .await;
        c.response("LIST").await.unwrap();
        let e = c
            .listing(ListingParser::list(), 5, "LIST")
            .await
            .unwrap_err();
        assert!(matches!(e, Pop3Error::TooLarge { limit: 5 }), "{e}");
        c.response("TOP").await.unwrap();
        assert!(matches!(
            c.multiline(3, "TOP").await,
            Err(Pop3Error::TooLarge { limit: 3 })
        ));
        assert_eq!(c.response("NOOP").await.unwrap().text, "next");
    }

    #[tokio::test]
    async fn refused_greeting_and_timeouts() {
        let (client, mut server) = tokio::io::duplex(1024);
        server.write_all(b"-ERR go away\r\n").await.unwrap();
        let mut c = Connection::new(client, Duration::from_secs(5));
        let e = c.read_greeting().await.unwrap_err();
        assert!(
            matches!(
                e,
                Pop3Error::Refused {
                    command: "the greeting",
                    ..
                }
            ),
            "{e}"
        );

        let (client, _server) = tokio::io::duplex(1024);
        let mut c = Connection::new(client, Duration::from_millis(20));
        let e = c.read_greeting().await.unwrap_err();
        assert!(
            matches!(
                e,
                Pop3Error::Timeout {
                    what: "the greeting",
                    ..
                }
            ),
            "{e}"
        );

        // The dial budget covers a greeting that never comes.
        let (client, _server) = tokio::io::duplex(1024);
        let e = dial(
            async { Ok(client) },
            None,
            Duration::from_millis(20),
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(
                e,
                Pop3Error::Timeout {
                    what: DIAL_STEPS,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn stls_refuses_bytes_sent_before_the_handshake() {
        let (c, _server) = scripted(b"+OK\r\n+OK begin TLS\r\n+OK injected\r\n").await;
        let e = c
            .starttls(|s| async move { Ok::<_, TlsError>(s) })
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Pop3Error::BufferedInputAfterStls), "{e}");
        let (c, _server) = scripted(b"+OK\r\n-ERR no\r\n").await;
        let e = c
            .starttls(|s| async move { Ok::<_, TlsError>(s) })
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                Pop3Error::Refused {
                    command: "STLS",
                    ..
                }
            ),
            "{e}"
        );
    }
}
