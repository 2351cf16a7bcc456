//! POP3 status lines: `+OK`, `-ERR` with RFC 2449 response codes, and RFC 5034 `+ ` SASL continuations.

use std::fmt;

/// RFC 2449 §4: "the maximum length of the first line of a command response (including the initial greeting) is
/// unchanged at 512 octets (including the terminating CRLF)". What we send stays under it.
pub const MAX_RESPONSE_LINE: usize = 512;

/// How long a status line we accept on read (without CRLF). Tolerant beyond [`MAX_RESPONSE_LINE`] because SASL
/// challenges (`+ <base64>`, RFC 5034 §4, exempt from the limit) and chatty greetings exceed it, but bounded so a
/// broken server cannot grow our memory.
pub const RESPONSE_LINE_READ_LIMIT: usize = 12288;

/// The first token of a status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Err,
    /// `+ ` followed by a base64 SASL challenge (RFC 5034 §4); the challenge is the response text.
    Continue,
}

/// An extended response code (RFC 2449 §8, RFC 3206, RFC 6856 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session.
    InUse,
    /// `[LOGIN-DELAY]`: the user logs in too often.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary system problem (RFC 3206).
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem (RFC 3206).
    SysPerm,
    /// `[AUTH]`: the credentials are wrong (RFC 3206).
    Auth,
    /// `[UTF8]`: the request needs UTF-8 mode (RFC 6856 §3).
    Utf8,
    /// Any other code, as sent (e.g. `SYS/TEMP/QUOTA`).
    Other(String),
}

impl RespCode {
    fn from_text(code: &str) -> RespCode {
        match code.to_ascii_uppercase().as_str() {
            "IN-USE" => RespCode::InUse,
            "LOGIN-DELAY" => RespCode::LoginDelay,
            "SYS/TEMP" => RespCode::SysTemp,
            "SYS/PERM" => RespCode::SysPerm,
            "AUTH" => RespCode::Auth,
            "UTF8" => RespCode::Utf8,
            _ => RespCode::Other(code.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
            RespCode::Utf8 => "UTF8",
            RespCode::Other(s) => s,
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status line. For [`Status::Continue`] the text is the base64 challenge and there is no code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub code: Option<RespCode>,
    pub text: String,
}

/// Why a status line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("empty status line")]
    Empty,
    #[error("status line does not start with +OK, -ERR or \"+ \": {0:?}")]
    BadStatus(String),
    #[error("status line longer than {limit} octets")]
    TooLong { limit: usize },
}

/// RFC 2449 §8: resp-level = 1*schar, schar = %x21-5A / %x5C / %x5E-7F (printable, not `[` or `]`).
fn is_code_char(c: char) -> bool {
    matches!(c, '\x21'..='\x5a' | '\x5c' | '\x5e'..='\x7f')
}

/// How much of an unparseable status line goes into the error message.
const SHOWN_IN_ERROR: usize = 40;

impl Response {
    pub fn ok(text: impl Into<String>) -> Self {
        Response {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }

    pub fn err(text: impl Into<String>) -> Self {
        Response {
            status: Status::Err,
            code: None,
            text: text.into(),
        }
    }

    /// A SASL continuation carrying a base64 challenge (empty for "send your response").
    pub fn cont(challenge: impl Into<String>) -> Self {
        Response {
            status: Status::Continue,
            code: None,
            text: challenge.into(),
        }
    }

    pub fn with_code(mut self, code: RespCode) -> Self {
        self.code = Some(code);
        self
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    pub fn is_err(&self) -> bool {
        self.status == Status::Err
    }

    /// Parses one status line without its CRLF. `+OK`/`-ERR` are matched case-insensitively (some servers send
    /// `+ok`); the text is decoded as UTF-8 with replacement characters, since greetings may hold anything.
    pub fn parse(line: &[u8]) -> Result<Response, ResponseError> {
        if line.len() > RESPONSE_LINE_READ_LIMIT {
            return Err(ResponseError::TooLong {
                limit: RESPONSE_LINE_READ_LIMIT,
            });
        }
        let mut line = line;
        while let [head @ .., b'\r' | b'\n'] = line {
            line = head;
        }
        if line.is_empty() {
            return Err(ResponseError::Empty);
        }
        let (status, rest) = if starts_with_word(line, b"+OK") {
            (Status::Ok, &line[3..])
        } else if starts_with_word(line, b"-ERR") {
            (Status::Err, &line[4..])
        } else if starts_with_word(line, b"+") {
            (Status::Continue, &line[1..])
        } else {
            let shown =
                String::from_utf8_lossy(&line[..line.len().min(SHOWN_IN_ERROR)]).into_owned();
            return Err(ResponseError::BadStatus(shown));
        };
        // One separating space; more are kept as part of the text only for continuations (base64 has none).
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let text = String::from_utf8_lossy(rest).into_owned();
        if status == Status::Continue {
            return Ok(Response {
                status,
                code: None,
                text: text.trim().to_owned(),
            });
        }
        let (code, text) = split_code(&text);
        Ok(Response { status, code, text })
    }

    /// The status line with CRLF. CR and LF inside the text are replaced by spaces so a message cannot inject a
    /// second line.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut s = String::with_capacity(self.text.len() + 16);
        s.push_str(match self.status {
            Status::Ok => "+OK",
            Status::Err => "-ERR",
            Status::Continue => "+",
        });
        if let (Some(code), false) = (&self.code, self.status == Status::Continue) {
            s.push_str(" [");
            s.push_str(code.as_str());
            s.push(']');
        }
        if !self.text.is_empty() || self.status == Status::Continue {
            s.push(' ');
            s.extend(self.text.chars().map(|c| {
                if c == '\r' || c == '\n' || c == '\0' {
                    ' '
                } else {
                    c
                }
            }));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wire = self.to_wire();
        f.write_str(String::from_utf8_lossy(&wire[..wire.len() - 2]).as_ref())
    }
}

/// `word` at the start of `line`, case-insensitively, followed by a space or the end of the line.
fn starts_with_word(line: &[u8], word: &[u8]) -> bool {
    line.len() >= word.len()
        && line[..word.len()].eq_ignore_ascii_case(word)
        && matches!(line.get(word.len()), None | Some(b' '))
}

fn split_code(text: &str) -> (Option<RespCode>, String) {
    if let Some(inner) = text.strip_prefix('[')
        && let Some(end) = inner.find(']')
    {
        let code = &inner[..end];
        if !code.is_empty() && code.chars().all(is_code_char) {
            let rest = inner[end + 1..]
                .strip_prefix(' ')
                .unwrap_or(&inner[end + 1..]);
            return (Some(RespCode::from_text(code)), rest.to_owned());
        }
    }
    (None, text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines_and_codes() {
        let r =
            Response::parse(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>").unwrap();
        assert_eq!(
            r,
            Response::ok("POP3 server ready <1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(Response::parse(b"+OK").unwrap(), Response::ok(""));
        assert_eq!(
            Response::parse(b"+ok 2 320").unwrap(),
            Response::ok("2 320")
        );
        assert_eq!(
            Response::parse(b"-ERR [IN-USE] maildrop locked").unwrap(),
            Response::err("maildrop locked").with_code(RespCode::InUse)
        );
        for (code, want) in [
            ("LOGIN-DELAY", RespCode::LoginDelay),
            ("SYS/TEMP", RespCode::SysTemp),
            ("SYS/PERM", RespCode::SysPerm),
            ("AUTH", RespCode::Auth),
            ("UTF8", RespCode::Utf8),
            ("SYS/TEMP/QUOTA", RespCode::Other("SYS/TEMP/QUOTA".into())),
        ] {
            let r = Response::parse(format!("-ERR [{code}] x").as_bytes()).unwrap();
            assert_eq!(r.code, Some(want.clone()));
            assert_eq!(r.text, "x");
            assert_eq!(
                Response::parse(&r.to_wire()).unwrap(),
                r,
                "round trip of {code}"
            );
        }
        assert_eq!(
            Response::parse(b"-ERR [broken").unwrap(),
            Response::err("[broken")
        );
        assert_eq!(Response::parse(b"+ ").unwrap(), Response::cont(""));
        assert_eq!(Response::parse(b"+").unwrap(), Response::cont(""));
        assert_eq!(
            Response::parse(b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+")
                .unwrap()
                .status,
            Status::Continue
        );
        assert!(matches!(
            Response::parse(b"+OKAY"),
            Err(ResponseError::BadStatus(_))
        ));
        assert!(matches!(
            Response::parse(b"* OK imap"),
            Err(ResponseError::BadStatus(_))
        ));
        assert!(matches!(Response::parse(b""), Err(ResponseError::Empty)));
    }

    #[test]
    fn to_wire_forms() {
        assert_eq!(Response::ok("").to_wire(), b"+OK\r\n");
        assert_eq!(Response::ok("2 320").to_wire(), b"+OK 2 320\r\n");
        assert_eq!(
            Response::err("locked").with_code(RespCode::InUse).to_wire(),
            b"-ERR [IN-USE] locked\r\n"
        );
        assert_eq!(Response::cont("").to_wire(), b"+ \r\n");
        assert_eq!(
            Response::err("a\r\nDELE 1").to_wire(),
            b"-ERR a  DELE 1\r\n"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for b in 0..=255u8 {
            let _ = Response::parse(&[b]);
            let _ = Response::parse(&[b'-', b'E', b'R', b'R', b' ', b'[', b, b']']);
        }
        assert!(Response::parse(b"+OK \xff\xfe\x00").is_ok());
        assert!(matches!(
            Response::parse(&vec![b'+'; 100_000]),
            Err(ResponseError::TooLong { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Response::parse(&bytes);
        }
    }
}
