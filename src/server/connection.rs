//! One client connection of the server: reads commands, runs them through the [`Session`], writes the replies,
//! streams message files, and performs the STLS upgrade.
//!
//! Every read and every write is bounded by the inactivity timer, so a client that stops reading cannot hold a
//! task forever either. However the connection ends, the session's maildrop lock is released when the session is
//! dropped, and nothing is removed unless QUIT reached the UPDATE state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::maildir::{MessageSource, READ_CHUNK, TopFilter};
use super::session::{Reply, Session, Shared};
use crate::pop3::stream::WRITE_HIGH_WATER;
use crate::pop3::{Pop3Error, Pop3Stream, RespCode, Response, Stuffer};
use crate::tls::{self, MaybeTls};

/// Messages up to this POP3 size are opened and read on the async worker itself, in one read. From the page
/// cache that costs a few microseconds, less than the two thread switches of a trip to the blocking pool, which
/// made up most of the server's CPU time in a RETR-all session (perf, 1000 messages). Larger files, where a slow
/// disk could stall the worker, are read on the blocking pool chunk by chunk.
const INLINE_READ_LIMIT: u64 = READ_CHUNK as u64;

/// LIST/UIDL/CAPA bodies are handed to the stream in pieces of about this size, so a 200 000-message listing
/// does not sit whole in memory.
const LISTING_PIECE: usize = 16 * 1024;

/// Why a connection ended other than by QUIT or a clean close; only logged.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    // The cause is part of the message, not a `source`, so `{e:#}` chains print it once.
    #[error("TLS: {0}")]
    Tls(tls::TlsError),
    #[error("client idle or not reading for longer than the inactivity timer")]
    Timeout,
    #[error("cannot read message file {path}: {error}")]
    File { path: PathBuf, error: String },
}

impl From<tls::TlsError> for ConnError {
    fn from(e: tls::TlsError) -> Self {
        ConnError::Tls(e)
    }
}

/// Serves one accepted TCP connection to its end; errors are logged, never propagated.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Pipelined replies are small and flushed as one write; Nagle would only delay the last one.
    let _ = stream.set_nodelay(true);
    let span = tracing::info_span!("pop3", %peer);
    async move {
        tracing::debug!("connected");
        match serve_stream(stream, shared).await {
            Ok(()) => tracing::debug!("closed"),
            Err(e) => tracing::info!(error = %e, "connection ended"),
        }
    }
    .instrument(span)
    .await
}

/// Bounds one I/O step by the inactivity timer.
async fn timed<T, E: Into<ConnError>>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ConnError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ConnError::Timeout),
    }
}

/// Runs a session over any byte stream (TCP in production, `tokio::io::duplex` in tests).
pub async fn serve_stream<S>(stream: S, shared: Arc<Shared>) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.config.idle_timeout;
    let tls_config = shared.config.tls.clone();
    let (stream, tls_active) = match (&tls_config, shared.config.implicit_tls) {
        (Some(cfg), true) => (
            timed(idle, tls::accept(stream, Arc::clone(cfg))).await?,
            true,
        ),
        _ => (MaybeTls::Plain(stream), false),
    };
    let mut session = Session::new(shared, tls_active);
    let mut conn = Pop3Stream::new(stream);
    timed(idle, conn.write_response(&session.greeting())).await?;

    loop {
        let reply = if session.expects_sasl_line() {
            match tokio::time::timeout(idle, conn.read_sasl_response()).await {
                Err(_) => return time_out(&mut conn, &mut session, idle).await,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(Ok(line))) => session.sasl_line(line).await,
                Ok(Ok(Err(e))) => session.bad_sasl_line(&e),
            }
        } else {
            match tokio::time::timeout(idle, conn.read_command()).await {
                Err(_) => return time_out(&mut conn, &mut session, idle).await,
                // The client went away between commands: no UPDATE, nothing removed.
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(Ok(cmd)))) => {
                    tracing::debug!(command = cmd.verb(), "command");
                    session.handle(cmd).await
                }
                Ok(Ok(Some(Err(e)))) => session.bad_command(&e),
                Ok(Err(e @ Pop3Error::LineTooLong { .. })) => {
                    // Too long even to skip: not a POP3 client.
                    let bye = Response::err("line too long; closing the connection");
                    let _ = timed(idle, conn.write_response(&bye)).await;
                    return Err(e.into());
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        };

        match reply {
            Reply::Status(r) => {
                conn.queue_response(&r);
                // Pipelined commands (RFC 2449 PIPELINING) get their replies in one write, up to the stream's
                // high-water mark; half a command waiting for its rest does not hold them back.
                timed(idle, conn.flush_if_needed()).await?;
            }
            Reply::Lines(r, lines) => {
                conn.queue_response(&r);
                send_lines(&mut conn, &lines, idle).await?;
            }
            Reply::Message {
                ok,
                path,
                source,
                size,
                top,
            } => {
                send_message(&mut conn, ok, path, source, size, top, idle).await?;
            }
            Reply::SaslContinue => {
                timed(idle, conn.write_response(&Response::cont(""))).await?;
            }
            Reply::StartTls(r) => {
                timed(idle, conn.write_response(&r)).await?;
                // Bytes that arrived after STLS were sent in the clear and must not count as protected.
                let inner = conn.into_inner_checked()?;
                let (MaybeTls::Plain(plain), Some(cfg)) = (inner, &tls_config) else {
                    // The session offers STLS only on a plaintext connection with a certificate.
                    return Ok(());
                };
                let upgraded = timed(idle, tls::accept(plain, Arc::clone(cfg))).await?;
                // A fresh stream: no parser state or buffered input survives the upgrade.
                conn = Pop3Stream::new(upgraded);
                session.tls_started();
            }
            Reply::Close(r) => {
                conn.queue_response(&r);
                let _ = timed(idle, conn.shutdown()).await;
                return Ok(());
            }
        }
    }
}

async fn time_out<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Pop3Stream<S>,
    session: &mut Session,
    idle: Duration,
) -> Result<(), ConnError> {
    let bye = session.timed_out();
    // The client may be gone; a short bound on this last write is enough.
    let _ = timed(idle.min(Duration::from_secs(5)), conn.write_response(&bye)).await;
    Err(ConnError::Timeout)
}

/// A multi-line body on its way out: stuffed with the pop3 [`Stuffer`], written every [`WRITE_HIGH_WATER`]
/// octets (so memory stays bounded), and ended by the stream's flush policy ([`Pop3Stream::flush_if_needed`]):
/// while a complete pipelined command is waiting its reply leaves in the same write.
/// (`Pop3Stream::finish_multiline` always flushes.)
struct Body {
    stuffer: Stuffer,
    out: Vec<u8>,
}

impl Body {
    fn new() -> Body {
        Body {
            stuffer: Stuffer::new(),
            out: Vec::with_capacity(16 * 1024),
        }
    }

    async fn chunk<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Pop3Stream<S>,
        data: &[u8],
        idle: Duration,
    ) -> Result<(), ConnError> {
        self.stuffer.stuff(data, &mut self.out);
        if self.out.len() >= WRITE_HIGH_WATER {
            timed(idle, conn.write_raw(&self.out)).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        conn: &mut Pop3Stream<S>,
        idle: Duration,
    ) -> Result<(), ConnError> {
        self.stuffer.finish(&mut self.out);
        conn.queue_raw(&self.out);
        timed(idle, conn.flush_if_needed()).await
    }
}

async fn send_lines<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Pop3Stream<S>,
    lines: &[String],
    idle: Duration,
) -> Result<(), ConnError> {
    let mut body = Body::new();
    let mut piece = Vec::with_capacity(LISTING_PIECE + 128);
    for line in lines {
        piece.extend_from_slice(line.as_bytes());
        piece.extend_from_slice(b"\r\n");
        if piece.len() >= LISTING_PIECE {
            body.chunk(conn, &piece, idle).await?;
            piece.clear();
        }
    }
    body.chunk(conn, &piece, idle).await?;
    body.finish(conn, idle).await
}

/// Streams a message file (whole, or cut by TOP) as a multi-line reply, one chunk in memory at a time.
async fn send_message<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Pop3Stream<S>,
    ok: Response,
    path: PathBuf,
    source: MessageSource,
    size: u64,
    top: Option<u32>,
    idle: Duration,
) -> Result<(), ConnError> {
    let open_and_read = |src: &MessageSource| {
        let mut file = src.open()?;
        let mut buf = Vec::new();
        file.read_chunk(&mut buf)?;
        Ok::<_, std::io::Error>((file, buf))
    };
    let first = if size <= INLINE_READ_LIMIT {
        Ok(open_and_read(&source))
    } else {
        // Opening and the first read share one trip to the blocking pool.
        tokio::task::spawn_blocking(move || open_and_read(&source)).await
    };
    let (mut file, mut buf) = match first {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            // Before the +OK, so the client gets a clean -ERR and the session goes on.
            tracing::warn!(path = %path.display(), error = %e, "cannot open message");
            let r = Response::err("message is no longer available").with_code(RespCode::SysTemp);
            return timed(idle, conn.write_response(&r)).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "message read task failed");
            let r = Response::err("internal error").with_code(RespCode::SysTemp);
            return timed(idle, conn.write_response(&r)).await;
        }
    };
    conn.queue_response(&ok);
    let mut filter = top.map(TopFilter::new);
    let mut body = Body::new();
    loop {
        let n = match &mut filter {
            Some(f) => f.feed(&buf),
            None => buf.len(),
        };
        body.chunk(conn, &buf[..n], idle).await?;
        if file.is_at_end() || buf.is_empty() || filter.as_ref().is_some_and(TopFilter::is_done) {
            break;
        }
        let next = tokio::task::spawn_blocking(move || {
            let r = file.read_chunk(&mut buf);
            (file, buf, r)
        })
        .await;
        match next {
            Ok((f, b, Ok(()))) => {
                file = f;
                buf = b;
            }
            // After the +OK and part of the body there is no way to report an error in-band: the connection
            // has to end, and the client will not take the truncated body as complete.
            Ok((_, _, Err(e))) => {
                return Err(ConnError::File {
                    path,
                    error: e.to_string(),
                });
            }
            Err(e) => {
                return Err(ConnError::File {
                    path,
                    error: e.to_string(),
                });
            }
        }
    }
    body.finish(conn, idle).await
}
