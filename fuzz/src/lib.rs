//! Helpers shared by the fuzz targets: fuzzer-chosen chunking, an always-ready in-memory transport, and a
//! runtime-free executor for futures over it.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many leading input bytes choose the chunk sizes; the rest is the payload.
pub const CHUNK_PATTERN: usize = 4;

/// Splits a fuzz input into a chunk-size pattern (each byte + 1, cycled) and the payload.
pub fn split_pattern(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let n = data.len().min(CHUNK_PATTERN);
    let mut pattern: Vec<usize> = data[..n].iter().map(|&b| usize::from(b) + 1).collect();
    if pattern.is_empty() {
        pattern.push(1);
    }
    (pattern, &data[n..])
}

/// `payload` cut into consecutive chunks whose sizes cycle through `pattern`.
pub fn chunks<'a>(payload: &'a [u8], pattern: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    while !rest.is_empty() {
        let n = pattern[i % pattern.len()].min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// A transport whose reads return the given chunks one per call (then end of stream), and whose writes are
/// collected. Never returns `Pending`, so [`block_on`] drives anything over it to completion.
pub struct ChunkedTransport {
    chunks: Vec<Vec<u8>>,
    next: usize,
    /// Offset into `chunks[next]` when a read buffer was smaller than the chunk.
    offset: usize,
    pub written: Vec<u8>,
    pub shut_down: bool,
}

impl ChunkedTransport {
    pub fn new(payload: &[u8], pattern: &[usize]) -> Self {
        ChunkedTransport {
            chunks: chunks(payload, pattern)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
            next: 0,
            offset: 0,
            written: Vec::new(),
            shut_down: false,
        }
    }

    /// Bytes not yet handed out by reads.
    pub fn unread(&self) -> usize {
        self.chunks[self.next.min(self.chunks.len())..]
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            - self.offset
    }
}

impl AsyncRead for ChunkedTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(chunk) = this.chunks.get(this.next) {
            let rest = &chunk[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == chunk.len() {
                this.next += 1;
                this.offset = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkedTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future over a [`ChunkedTransport`] to completion. The transport is never `Pending`, so a future that
/// is still pending after one poll is waiting on something else: that is a bug in the code under test.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future pending over an always-ready transport"),
    }
}
