//! The error type of the POP3 stream layer: I/O, framing and size limits, each saying what the caller should do.

use std::time::Duration;

use super::response::{Response, ResponseError};
use crate::tls::TlsError;

/// A failure of the connection or of its framing. Parse errors of single commands are not here: they are
/// [`super::CommandError`]s that the session answers with `-ERR` and survives.
///
/// Causes are part of the messages, not `source`s, so `{e:#}` chains print each once.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("I/O error on the POP3 connection: {0}")]
    Io(std::io::Error),

    #[error("the peer closed the connection")]
    Closed,

    #[error(
        "the peer closed the connection in the middle of a line or a multi-line response; the data is incomplete"
    )]
    UnexpectedEof,

    /// `resynced` is true when the rest of the line was discarded and the stream is at the start of the next
    /// line (the session may answer `-ERR` and go on); false when the line went past
    /// [`super::stream::MAX_DISCARD`] and the connection must be closed.
    #[error("line longer than {limit} octets{}", if *.resynced { " (discarded)" } else { "; closing the connection" })]
    LineTooLong { limit: usize, resynced: bool },

    #[error("malformed response from the server: {0}")]
    Response(ResponseError),

    #[error(
        "multi-line response larger than the {limit}-octet limit (it was read to its end and dropped)"
    )]
    TooLarge { limit: usize },

    #[error(
        "the peer sent data after STLS before the TLS handshake (possible command injection, cf. RFC 3207 §6); \
         closing the connection"
    )]
    BufferedInputAfterStls,

    /// The TCP connection could not be opened.
    #[error("cannot connect: {0} (check the host and port, and that a POP3 server listens there)")]
    Connect(std::io::Error),

    /// A step of the connection took longer than its budget.
    #[error("no answer within {}s while waiting for {what}; the server is stuck or unreachable", .after.as_secs())]
    Timeout { what: &'static str, after: Duration },

    #[error("TLS failed: {0}")]
    Tls(TlsError),

    /// More commands were queued without being sent than a connection holds; the one past the limit was not
    /// queued, so the conversation is out of step.
    #[error(
        "more than {limit} commands queued without being sent (flush, or read their answers, before queueing \
         more); the connection is out of step and must be closed"
    )]
    QueueFull { limit: usize },

    /// A `-ERR` where the connection cannot go on without `+OK` (the greeting, STLS).
    #[error("the server refused {command}: {response}")]
    Refused {
        command: &'static str,
        response: Response,
    },
}

impl From<std::io::Error> for Pop3Error {
    fn from(e: std::io::Error) -> Self {
        Pop3Error::Io(e)
    }
}

impl From<ResponseError> for Pop3Error {
    fn from(e: ResponseError) -> Self {
        Pop3Error::Response(e)
    }
}
