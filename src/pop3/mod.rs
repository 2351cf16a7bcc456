//! The POP3 wire protocol (RFC 1939, 2449, 2595, 5034, 6856), shared by proxy, server and client; no policy.
//!
//! Layers: pure parsers and encoders over byte slices (`command`, `response`, `multiline`, `capability`,
//! `listing`, `auth`, `eol`), which never touch a socket and are the fuzzing entry points; `stream`, which moves
//! those over any `AsyncRead + AsyncWrite` with bounded buffers; and `connection`, the one client connection the
//! POP3 client and the proxy's upstream side are policies over. `limits` holds the ports, timers and caps.

pub mod auth;
pub mod capability;
pub mod command;
pub mod connection;
pub mod eol;
pub mod error;
pub mod limits;
pub mod listing;
pub mod multiline;
pub mod response;
pub mod stream;

pub use capability::Capabilities;
pub use command::{
    COMMAND_LINE_READ_LIMIT, Command, CommandError, MAX_COMMAND_LINE, SASL_LINE_READ_LIMIT,
    SaslResponse,
};
pub use connection::Connection;
pub use eol::{CrlfToLf, Eol};
pub use error::Pop3Error;
pub use multiline::{Stuffer, Unstuffer};
pub use response::{
    MAX_RESPONSE_LINE, RESPONSE_LINE_READ_LIMIT, RespCode, Response, ResponseError, Status,
};
pub use stream::Pop3Stream;
