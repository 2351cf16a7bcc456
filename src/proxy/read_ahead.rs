//! Read-ahead for clients that wait for each answer before sending the next RETR: the proxy asks the upstream for
//! the next few messages while the client takes this one, so a download costs one round trip per message (client
//! to proxy) instead of two.
//!
//! The upstream answers in order, so every answer still on the wire is read (into memory, bounded) before any
//! other command is sent: the read-ahead never changes what the client sees, only when the bytes were asked for.

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncWrite};

use super::upstream::{Upstream, UpstreamError};
use crate::pop3::{Command, Pop3Error, Response};

/// Largest message (by the upstream's LIST size) asked for ahead of the client, and the most of one body held in
/// memory: read-ahead is for the many small messages of a download, where the round trip dominates.
pub const READ_AHEAD_MAX: u64 = 256 * 1024;
/// Bytes (by LIST size) asked for ahead at once per session, which bounds the memory a settled queue holds.
pub const READ_AHEAD_BUDGET: u64 = 512 * 1024;
/// RETR commands in flight to a pipelining upstream (RFC 2449 §6.6); a few hide the upstream's own latency, and
/// each is only ~12 bytes, so the commands always fit the socket buffers. Without PIPELINING, one.
pub const READ_AHEAD_WINDOW: usize = 8;

#[derive(Debug)]
enum Entry {
    /// Sent; the answer is still on the wire.
    Sent { upstream: u32, size: u64 },
    /// Read: the status line, and the body (`None` when refused or larger than [`READ_AHEAD_MAX`]).
    Ready {
        upstream: u32,
        size: u64,
        response: Response,
        body: Option<Vec<u8>>,
    },
}

impl Entry {
    fn upstream(&self) -> u32 {
        match self {
            Entry::Sent { upstream, .. } | Entry::Ready { upstream, .. } => *upstream,
        }
    }
    fn size(&self) -> u64 {
        match self {
            Entry::Sent { size, .. } | Entry::Ready { size, .. } => *size,
        }
    }
}

/// An answer the read-ahead holds for the client's RETR.
#[derive(Debug)]
pub enum Answer {
    /// The status line was read; the body follows on the upstream connection.
    OnWire(Response),
    /// Read already: the status line and, after `+OK`, the whole body (unstuffed).
    Read(Response, Option<Vec<u8>>),
}

/// RETR answers asked for ahead of the client, oldest first. Every `Ready` entry precedes every `Sent` one.
#[derive(Debug, Default)]
pub struct ReadAhead {
    queue: VecDeque<Entry>,
    /// The highest client number asked for (0: none).
    last_client: u32,
}

impl ReadAhead {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Asks for client messages after `after` (the RETR just answered), as `lookup` resolves them to `(upstream
    /// number, size)`, until the window or budget is full or a message is missing, deleted or too large. A send
    /// that fails is left for the next command to meet.
    pub async fn extend<T, F>(&mut self, up: &mut Upstream<T>, after: u32, lookup: F)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
        F: Fn(u32) -> Option<(u32, u64)>,
    {
        // Without pipelining, one: nothing is sent while any answer, read or not, is still held.
        let window = if up.pipelining() {
            READ_AHEAD_WINDOW
        } else {
            1
        };
        let mut next = if self.queue.is_empty() {
            after.saturating_add(1)
        } else {
            self.last_client.max(after).saturating_add(1)
        };
        let mut budget: u64 = self.queue.iter().map(Entry::size).sum();
        let mut sent = 0;
        while self.queue.len() < window {
            let Some((upstream, size)) = lookup(next) else {
                break;
            };
            if size > READ_AHEAD_MAX || budget + size > READ_AHEAD_BUDGET {
                break;
            }
            up.queue(&Command::Retr(upstream));
            self.queue.push_back(Entry::Sent { upstream, size });
            self.last_client = next;
            budget += size;
            sent += 1;
            next = next.saturating_add(1);
        }
        if sent > 0
            && let Err(e) = up.flush().await
        {
            tracing::debug!("read-ahead not sent: {e}");
        }
    }

    /// Reads every answer still on the wire into memory, in order, so the next command's answer is the next thing
    /// the upstream sends.
    pub async fn settle<T>(&mut self, up: &mut Upstream<T>) -> Result<(), UpstreamError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        for entry in self.queue.iter_mut() {
            let Entry::Sent { upstream, size } = *entry else {
                continue;
            };
            let response = up.response().await?;
            let body = if response.is_ok() {
                match up.multiline(READ_AHEAD_MAX as usize).await {
                    Ok(b) => Some(b),
                    Err(UpstreamError::Pop3(Pop3Error::TooLarge { .. })) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            *entry = Entry::Ready {
                upstream,
                size,
                response,
                body,
            };
        }
        Ok(())
    }

    /// The answer to `RETR upstream` if it was asked for ahead. When it is next on the wire its status line is
    /// read and the body left to stream; otherwise everything before it is settled first. `None`: not asked for,
    /// or an `+OK` whose body was too large to keep, so the caller asks again.
    pub async fn take<T>(
        &mut self,
        up: &mut Upstream<T>,
        upstream: u32,
    ) -> Result<Option<Answer>, UpstreamError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if let Some(Entry::Sent { upstream: u, .. }) = self.queue.front()
            && *u == upstream
        {
            self.queue.pop_front();
            return Ok(Some(Answer::OnWire(up.response().await?)));
        }
        self.settle(up).await?;
        let Some(i) = self.queue.iter().position(|e| e.upstream() == upstream) else {
            return Ok(None);
        };
        match self.queue.remove(i) {
            Some(Entry::Ready {
                response,
                body: Some(b),
                ..
            }) => Ok(Some(Answer::Read(response, Some(b)))),
            Some(Entry::Ready {
                response,
                body: None,
                ..
            }) if !response.is_ok() => Ok(Some(Answer::Read(response, None))),
            _ => Ok(None),
        }
    }

    /// Drops a held answer (its message was deleted, so it will not be asked for).
    pub fn forget(&mut self, upstream: u32) {
        self.queue
            .retain(|e| !matches!(e, Entry::Ready { upstream: u, .. } if *u == upstream));
    }
}
