//! The POP3 wire protocol (RFC 1939, 2449, 2595, 5034, 6856), shared by proxy, server and client; no policy.
//!
//! Layers: pure parsers and encoders over byte slices (`command`, `response`, `multiline`, `capability`), which
//! never touch a socket and are the fuzzing entry points, and `stream`, which moves those over any
//! `AsyncRead + AsyncWrite` with bounded buffers.

pub mod capability;
pub mod command;
pub mod error;
pub mod multiline;
pub mod response;
pub mod stream;

pub use capability::Capabilities;
pub use command::{
    COMMAND_LINE_READ_LIMIT, Command, CommandError, MAX_COMMAND_LINE, SASL_LINE_READ_LIMIT,
    SaslResponse,
};
pub use error::Pop3Error;
pub use multiline::{Stuffer, Unstuffer};
pub use response::{
    MAX_RESPONSE_LINE, RESPONSE_LINE_READ_LIMIT, RespCode, Response, ResponseError, Status,
};
pub use stream::Pop3Stream;
