//! The client layer's one error type, and how wire failures of the shared POP3 connection become it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::pop3::{Pop3Error, RespCode};
use crate::tls::TlsError;

/// Cap on one reply line that we quote back in an error message, so a hostile server cannot flood the terminal.
const MAX_QUOTED: usize = 200;

/// The one error type of the client layer; every message says what happened and, where it helps, what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "could not connect to {addr}: {cause} (check the host and port, and that a POP3 server listens there)"
    )]
    Connect { addr: String, cause: io::Error },
    #[error(
        "TLS verification of {host} failed because the server certificate was refused: {reason}"
    )]
    TlsVerify { host: String, reason: String },
    #[error("TLS with {host} failed: {cause}")]
    Tls { host: String, cause: TlsError },
    #[error(
        "the server does not support STLS ({detail}); use --tls implicit (usually port 995), or --tls none only if the network path is trusted"
    )]
    NoStls { detail: String },
    #[error(
        "refusing to send the password in clear text to {addr}, which is not a loopback address and offered no STLS; \
         use --tls implicit (usually port 995), or pass --tls none explicitly if the network path is trusted"
    )]
    PlaintextRefused { addr: String },
    #[error(
        "the server said -ERR{} {text} (in reply to {command})",
        code_text(code)
    )]
    Server {
        command: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    #[error(
        "login as {user} failed with {method}: the server said -ERR{} {text} (check the user name and password)",
        code_text(code)
    )]
    LoginFailed {
        user: String,
        method: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    #[error("cannot log in: {0}")]
    NoLoginMethod(String),
    #[error("the user name or password contains a line break or NUL, which POP3 cannot carry")]
    BadCredentials,
    #[error("the server closed the connection while we waited for the reply to {command}")]
    Closed { command: &'static str },
    #[error(
        "the server closed the connection in the middle of a message ({command}, after {received} octets); nothing of it was kept"
    )]
    ClosedMidMessage {
        command: &'static str,
        received: u64,
    },
    #[error("timed out after {secs:?} waiting for {what}")]
    Timeout { what: &'static str, secs: Duration },
    #[error("the reply to {command} is not valid POP3: {detail}")]
    Protocol {
        command: &'static str,
        detail: String,
    },
    #[error("the reply to {command} is larger than {limit} octets; stream it instead (retr_to)")]
    TooLarge { command: &'static str, limit: usize },
    #[error("POP3 wire error during {command}: {cause}")]
    Wire {
        command: &'static str,
        cause: Pop3Error,
    },
    #[error("the connection is unusable after an earlier error; reconnect")]
    Broken,
    #[error("writing the message failed: {0}")]
    Sink(io::Error),
    #[error("maildir {}: {cause}", path.display())]
    Maildir { path: PathBuf, cause: io::Error },
}

fn code_text(code: &Option<RespCode>) -> String {
    match code {
        None => String::new(),
        Some(c) => format!(" [{}]", quote(c.as_str().as_bytes())),
    }
}

/// Keeps server text printable and short before it goes into an error message.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED)]);
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A failure of a step that may run TLS with `host` (connecting, STLS), in the client's terms.
pub(crate) fn tls_step(what: &'static str, host: &str, e: Pop3Error) -> ClientError {
    match e {
        Pop3Error::Tls(e) => tls_failure(host, e),
        e => wire(what, e),
    }
}

/// A failure of the shared connection during `what`, in the client's terms.
pub(crate) fn wire(what: &'static str, e: Pop3Error) -> ClientError {
    match e {
        Pop3Error::Timeout { what, after } => ClientError::Timeout { what, secs: after },
        Pop3Error::Closed | Pop3Error::UnexpectedEof => ClientError::Closed { command: what },
        Pop3Error::TooLarge { limit } => ClientError::TooLarge {
            command: what,
            limit,
        },
        Pop3Error::Refused { command, response } => ClientError::Server {
            command,
            code: response.code,
            text: quote(response.text.as_bytes()),
        },
        Pop3Error::BufferedInputAfterStls => ClientError::Protocol {
            command: "STLS",
            detail: "the server sent data after +OK and before the TLS handshake; refusing it (possible injection)"
                .into(),
        },
        cause => ClientError::Wire {
            command: what,
            cause,
        },
    }
}

/// Turns a TLS failure into [`ClientError::TlsVerify`] when the cause is the peer's certificate.
pub(crate) fn tls_failure(host: &str, err: TlsError) -> ClientError {
    match err {
        TlsError::Certificate { host, reason } => {
            // webpki's name for a self-signed certificate that is its own CA (what `openssl req -x509` makes).
            let reason = if reason.contains("CaUsedAsEndEntity") {
                format!(
                    "{reason}: it is a CA certificate used as a server certificate (self-signed?); give the \
                     server a certificate signed by a CA and pass that CA with --ca-file"
                )
            } else {
                reason
            };
            ClientError::TlsVerify { host, reason }
        }
        cause => ClientError::Tls {
            host: host.to_owned(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_become_tls_verify_with_the_tls_layers_reason() {
        let e = tls_failure(
            "h",
            TlsError::Certificate {
                host: "h".into(),
                reason: "unknown issuer: pass --ca-file".into(),
            },
        );
        let msg = e.to_string();
        assert!(matches!(e, ClientError::TlsVerify { .. }), "{msg}");
        assert!(
            msg.starts_with("TLS verification of h failed because"),
            "{msg}"
        );
        assert!(msg.contains("--ca-file"), "{msg}");
        let e = tls_failure(
            "h",
            TlsError::Certificate {
                host: "h".into(),
                reason: "Other(CaUsedAsEndEntity)".into(),
            },
        );
        assert!(e.to_string().contains("self-signed"), "{e}");
        let e = tls_failure("h", TlsError::Timeout { peer: "h".into() });
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    }

    #[test]
    fn wire_failures_keep_the_step_that_failed() {
        let e = wire("STAT", Pop3Error::Closed);
        assert!(matches!(e, ClientError::Closed { command: "STAT" }), "{e}");
        let e = wire("RETR", Pop3Error::TooLarge { limit: 9 });
        assert!(
            matches!(
                e,
                ClientError::TooLarge {
                    command: "RETR",
                    limit: 9
                }
            ),
            "{e}"
        );
        let e = wire("STLS", Pop3Error::BufferedInputAfterStls);
        assert!(e.to_string().contains("injection"), "{e}");
    }
}
