//! Multi-line replies on the client side: pulled chunk by chunk ([`Body`]), streamed into a writer, collected
//! into memory under a cap, or parsed as a LIST/UIDL listing while they arrive.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::quote;
use super::{Client, ClientError};
use crate::pop3::listing::{ListingParser, Value};
use crate::pop3::{CrlfToLf, Eol, Pop3Error};

/// A multi-line reply being read. Pull it with [`Body::next_chunk`] to the end; dropping it earlier leaves the
/// session out of step, so the client then refuses further commands ([`ClientError::Broken`]).
pub struct Body<'a, S> {
    client: &'a mut Client<S>,
    command: &'static str,
    eol: Eol,
    lf: CrlfToLf,
    chunk: Vec<u8>,
    converted: Vec<u8>,
    received: u64,
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Body<'_, S> {
    /// The next piece of content (un-stuffed, line ends as asked), never empty; `None` once the terminating line
    /// has been read. Each piece is at most about one read buffer of the wire layer.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>, ClientError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.client.broken {
                return Err(ClientError::Broken);
            }
            self.chunk.clear();
            let command = self.command;
            let done = match self.client.conn.chunk(&mut self.chunk, command).await {
                Ok(done) => done,
                Err(e) => {
                    self.client.broken = true;
                    return Err(match e {
                        Pop3Error::Timeout { after, .. } => ClientError::Timeout {
                            what: command,
                            secs: after,
                        },
                        Pop3Error::Closed | Pop3Error::UnexpectedEof => {
                            ClientError::ClosedMidMessage {
                                command,
                                received: self.received,
                            }
                        }
                        cause => ClientError::Wire { command, cause },
                    });
                }
            };
            self.received += self.chunk.len() as u64;
            self.done = done;
            let empty = match self.eol {
                Eol::Crlf => self.chunk.is_empty(),
                Eol::Lf => {
                    self.converted.clear();
                    self.lf.convert(&self.chunk, &mut self.converted);
                    if done {
                        self.lf.finish(&mut self.converted);
                    }
                    self.converted.is_empty()
                }
            };
            if !empty {
                return Ok(Some(match self.eol {
                    Eol::Crlf => &self.chunk,
                    Eol::Lf => &self.converted,
                }));
            }
        }
    }

    /// Octets of content received so far (un-stuffed, before any line-end conversion).
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl<S> Drop for Body<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.client.broken = true;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub(super) fn body(&mut self, command: &'static str, eol: Eol) -> Body<'_, S> {
        Body {
            client: self,
            command,
            eol,
            lf: CrlfToLf::new(),
            chunk: Vec::new(),
            converted: Vec::new(),
            received: 0,
            done: false,
        }
    }

    /// Reads a multi-line body into memory, refusing more than `limit` octets (the session stays usable).
    pub(super) async fn read_body(
        &mut self,
        command: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let mut sink = CappedVec {
            data: Vec::new(),
            limit,
            overflowed: false,
        };
        match self.copy_body(command, &mut sink, Eol::Crlf).await {
            Err(ClientError::Sink(_)) if sink.overflowed => {
                Err(ClientError::TooLarge { command, limit })
            }
            Err(e) => Err(e),
            Ok(_) => Ok(sink.data),
        }
    }

    /// Parses a LIST or UIDL body as it arrives, refusing more than `limit` octets and any line the shared
    /// listing policy does not accept (an invalid or repeated unique-id cannot be a seen-state identity).
    pub(super) async fn read_listing<T: Value>(
        &mut self,
        command: &'static str,
        mut parser: ListingParser<T>,
        limit: usize,
    ) -> Result<Vec<(u32, T)>, ClientError> {
        let mut body = self.body(command, Eol::Crlf);
        let mut total = 0usize;
        while let Some(data) = body.next_chunk().await? {
            total = total.saturating_add(data.len());
            if total <= limit {
                parser.feed(data);
            }
        }
        if total > limit {
            return Err(ClientError::TooLarge { command, limit });
        }
        parser
            .finish()
            .into_clean()
            .map_err(|p| ClientError::Protocol {
                command,
                detail: quote(p.to_string().as_bytes()),
            })
    }

    /// Streams a multi-line body (already un-stuffed, terminator removed) into `out`, returning the octets written.
    ///
    /// When `out` fails, the rest of the body is still read and dropped, so the session can go on (a fetch can then
    /// QUIT and commit the deletions of the messages that were saved).
    pub(super) async fn copy_body<W: AsyncWrite + Unpin>(
        &mut self,
        command: &'static str,
        out: &mut W,
        eol: Eol,
    ) -> Result<u64, ClientError> {
        let mut body = self.body(command, eol);
        let mut written: u64 = 0;
        let mut sink_error = None;
        while let Some(data) = body.next_chunk().await? {
            if sink_error.is_none() {
                match out.write_all(data).await {
                    Ok(()) => written += data.len() as u64,
                    Err(e) => sink_error = Some(e),
                }
            }
        }
        if sink_error.is_none()
            && let Err(e) = out.flush().await
        {
            sink_error = Some(e);
        }
        match sink_error {
            Some(e) => Err(ClientError::Sink(e)),
            None => Ok(written),
        }
    }
}

/// An in-memory sink with a cap: the write that would pass `limit` fails, and `overflowed` says why.
struct CappedVec {
    data: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl AsyncWrite for CappedVec {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.data.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            self.data = Vec::new();
            return Poll::Ready(Err(io::Error::other("over the size limit")));
        }
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
