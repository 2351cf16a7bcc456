//! POP3 commands: a pure parser from one command line (without CRLF) and the encoder clients use.

use std::fmt;

use crate::secret::Secret;

/// RFC 2449 §4: "the maximum length of a command line is 255 octets, including the terminating CRLF".
/// This is what well-behaved clients send and what [`Command::fits_line_limit`] checks for our own client.
pub const MAX_COMMAND_LINE: usize = 255;

/// How long a command line we accept on read (without CRLF). RFC 2449 §4 limits clients to 255 octets, but real
/// clients exceed it: `AUTH XOAUTH2 <initial response>` carries an OAuth bearer token (often 1–2 KB of base64),
/// and user names with a domain can be long. Being tolerant costs at most this much per connection.
pub const COMMAND_LINE_READ_LIMIT: usize = 8192;

/// How long a client's SASL response line (RFC 5034 §4, a base64 line after a `+ ` continuation) may be. RFC 5034
/// lifts the 255-octet command limit for these lines; GSSAPI tokens are several KB, so allow 12 KB
/// (the size RFC 4422 implementations commonly accept for one SASL message once base64-encoded).
pub const SASL_LINE_READ_LIMIT: usize = 12288;

/// RFC 4422 §3.1: a SASL mechanism name is 1 to 20 characters of [A-Z0-9-_].
const MAX_MECHANISM_NAME: usize = 20;

/// Unknown verbs are echoed in logs and errors; keep them short (RFC 2449 §4: keywords are 3 or 4 characters,
/// extensions up to 40).
const MAX_UNKNOWN_VERB: usize = 40;

/// A POP3 command. `Debug` never shows passwords, SASL data or APOP digests (they are [`Secret`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(Secret),
    Apop {
        name: String,
        digest: Secret,
    },
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    /// `TOP msg lines`; the line count may be 0 (headers only).
    Top(u32, u32),
    Uidl(Option<u32>),
    Quit,
    Capa,
    Stls,
    /// RFC 5034. `AUTH` alone (no mechanism) asks for the list of mechanisms, as many servers allow.
    /// The mechanism is upper-cased; `initial` is the base64 initial response as sent (`=` means empty).
    Auth {
        mechanism: Option<String>,
        initial: Option<Secret>,
    },
    Utf8,
    /// RFC 1460 (obsolete, but some clients still send it).
    Last,
    /// A verb we do not know, upper-cased and truncated; answer it with `-ERR`.
    Unknown(String),
}

/// Why a command line could not be parsed. `Display` is a message meant to follow `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command line")]
    Empty,
    #[error("command line too long (limit {limit} octets)")]
    TooLong { limit: usize },
    #[error("{verb} needs {what}")]
    MissingArgument {
        verb: &'static str,
        what: &'static str,
    },
    #[error("too many arguments to {verb}")]
    TooManyArguments { verb: &'static str },
    #[error("{verb}: invalid {what} (expected digits only)")]
    InvalidNumber {
        verb: &'static str,
        what: &'static str,
    },
    #[error("{verb}: message numbers start at 1")]
    ZeroMessageNumber { verb: &'static str },
    #[error("{verb}: {what} too large (maximum 4294967295)")]
    NumberTooLarge {
        verb: &'static str,
        what: &'static str,
    },
    #[error("{verb}: argument is not valid UTF-8")]
    InvalidUtf8 { verb: &'static str },
    #[error("{verb}: argument contains control characters")]
    ControlCharacter { verb: &'static str },
    #[error("APOP digest must be 32 hexadecimal digits")]
    BadDigest,
    #[error("AUTH: invalid SASL mechanism name")]
    BadMechanism,
    #[error("SASL response is not base64")]
    BadSaslResponse,
}

const MSG: &str = "message number";
const LINES: &str = "line count";

impl Command {
    /// Parses one command line, without its CRLF. Verbs are case-insensitive; arguments are separated by runs of
    /// spaces (RFC 1939 says one space, we tolerate more), except `PASS`, whose argument is the rest of the line
    /// (RFC 1939 §7: a password may contain spaces).
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.len() > COMMAND_LINE_READ_LIMIT {
            return Err(CommandError::TooLong {
                limit: COMMAND_LINE_READ_LIMIT,
            });
        }
        let line = trim_crlf(line);
        let line = trim_start(line);
        if trim_end(line).is_empty() {
            return Err(CommandError::Empty);
        }
        let verb_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        let (verb_raw, rest) = line.split_at(verb_end);
        let verb = match std::str::from_utf8(verb_raw) {
            Ok(v) if v.len() <= 4 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                v.to_ascii_uppercase()
            }
            _ => return Ok(Command::Unknown(sanitize_verb(verb_raw))),
        };
        let rest = trim_start(rest);
        let mut args = Args::new(rest);
        let cmd = match verb.as_str() {
            "USER" => {
                let name = args.required("USER", "a user name")?;
                args.end("USER")?;
                Command::User(text_arg("USER", name)?)
            }
            "PASS" => {
                // Everything after the one separating space, spaces included; `PASS ` is an empty password.
                match line.get(verb_end + 1..) {
                    Some(password) => Command::Pass(Secret::new(text_arg("PASS", password)?)),
                    None => {
                        return Err(CommandError::MissingArgument {
                            verb: "PASS",
                            what: "a password",
                        });
                    }
                }
            }
            "APOP" => {
                let name = text_arg("APOP", args.required("APOP", "a name and a digest")?)?;
                let digest = args.required("APOP", "a digest")?;
                args.end("APOP")?;
                if digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
                    return Err(CommandError::BadDigest);
                }
                let digest = String::from_utf8_lossy(digest).to_ascii_lowercase();
                Command::Apop {
                    name,
                    digest: Secret::new(digest),
                }
            }
            "STAT" => no_args(args, "STAT", Command::Stat)?,
            "NOOP" => no_args(args, "NOOP", Command::Noop)?,
            "RSET" => no_args(args, "RSET", Command::Rset)?,
            "QUIT" => no_args(args, "QUIT", Command::Quit)?,
            "CAPA" => no_args(args, "CAPA", Command::Capa)?,
            "STLS" => no_args(args, "STLS", Command::Stls)?,
            "UTF8" => no_args(args, "UTF8", Command::Utf8)?,
            "LAST" => no_args(args, "LAST", Command::Last)?,
            "LIST" => {
                let n = args.optional().map(|a| msg_number("LIST", a)).transpose()?;
                args.end("LIST")?;
                Command::List(n)
            }
            "UIDL" => {
                let n = args.optional().map(|a| msg_number("UIDL", a)).transpose()?;
                args.end("UIDL")?;
                Command::Uidl(n)
            }
            "RETR" => {
                let n = msg_number("RETR", args.required("RETR", "a message number")?)?;
                args.end("RETR")?;
                Command::Retr(n)
            }
            "DELE" => {
                let n = msg_number("DELE", args.required("DELE", "a message number")?)?;
                args.end("DELE")?;
                Command::Dele(n)
            }
            "TOP" => {
                let n = msg_number(
                    "TOP",
                    args.required("TOP", "a message number and a line count")?,
                )?;
                let lines = number("TOP", LINES, args.required("TOP", "a line count")?)?;
                args.end("TOP")?;
                Command::Top(n, lines)
            }
            "AUTH" => {
                let mechanism = match args.optional() {
                    None => None,
                    Some(m) => {
                        let valid = !m.is_empty()
                            && m.len() <= MAX_MECHANISM_NAME
                            && m.iter()
                                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                        if !valid {
                            return Err(CommandError::BadMechanism);
                        }
                        Some(String::from_utf8_lossy(m).to_ascii_uppercase())
                    }
                };
                let initial = args.optional();
                args.end("AUTH")?;
                let initial = match initial {
                    None => None,
                    Some(i) if is_base64_or_empty_marker(i) => {
                        Some(Secret::new(String::from_utf8_lossy(i)))
                    }
                    Some(_) => return Err(CommandError::BadSaslResponse),
                };
                Command::Auth { mechanism, initial }
            }
            _ => Command::Unknown(verb),
        };
        Ok(cmd)
    }

    /// The verb as sent on the wire (`"UNKNOWN"` for unknown commands); safe to log.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Quit => "QUIT",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Auth { .. } => "AUTH",
            Command::Utf8 => "UTF8",
            Command::Last => "LAST",
            Command::Unknown(_) => "UNKNOWN",
        }
    }

    /// Whether the reply to this command is a multi-line response when it is `+OK` (RFC 1939, RFC 2449).
    pub fn expects_multiline(&self) -> bool {
        matches!(
            self,
            Command::List(None)
                | Command::Uidl(None)
                | Command::Retr(_)
                | Command::Top(..)
                | Command::Capa
        )
    }

    /// The command line with CRLF. CR, LF and NUL inside arguments are dropped, so a value taken from a user
    /// cannot smuggle a second command onto the wire.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut s = String::with_capacity(32);
        let num = |n: &Option<u32>| n.map(|n| format!(" {n}")).unwrap_or_default();
        match self {
            Command::User(name) => s.push_str(&format!("USER {name}")),
            Command::Pass(p) => s.push_str(&format!("PASS {}", p.expose())),
            Command::Apop { name, digest } => {
                s.push_str(&format!("APOP {name} {}", digest.expose()))
            }
            Command::List(n) => s.push_str(&format!("LIST{}", num(n))),
            Command::Uidl(n) => s.push_str(&format!("UIDL{}", num(n))),
            Command::Retr(n) => s.push_str(&format!("RETR {n}")),
            Command::Dele(n) => s.push_str(&format!("DELE {n}")),
            Command::Top(n, l) => s.push_str(&format!("TOP {n} {l}")),
            Command::Auth { mechanism, initial } => {
                s.push_str("AUTH");
                if let Some(m) = mechanism {
                    s.push(' ');
                    s.push_str(m);
                    if let Some(i) = initial {
                        s.push(' ');
                        s.push_str(if i.is_empty() { "=" } else { i.expose() });
                    }
                }
            }
            Command::Unknown(v) => s.push_str(v),
            other => s.push_str(other.verb()),
        }
        let mut out: Vec<u8> = s.into_bytes();
        out.retain(|&b| b != b'\r' && b != b'\n' && b != 0);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Whether [`Command::to_wire`] fits the RFC 2449 §4 limit; RFC 5034 §4 says a client must then not send an
    /// AUTH initial response and wait for the `+ ` continuation instead.
    pub fn fits_line_limit(&self) -> bool {
        self.to_wire().len() <= MAX_COMMAND_LINE
    }
}

impl fmt::Display for Command {
    /// A log-safe rendering: the verb and its non-secret arguments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(name) => write!(f, "USER {name}"),
            Command::Pass(_) => write!(f, "PASS ***"),
            Command::Apop { name, .. } => write!(f, "APOP {name} ***"),
            Command::Auth { mechanism, initial } => {
                write!(f, "AUTH")?;
                if let Some(m) = mechanism {
                    write!(f, " {m}")?;
                }
                if initial.is_some() {
                    write!(f, " ***")?;
                }
                Ok(())
            }
            Command::Unknown(v) => write!(f, "{v} (unknown)"),
            other => {
                let wire = other.to_wire();
                f.write_str(String::from_utf8_lossy(&wire[..wire.len() - 2]).as_ref())
            }
        }
    }
}

/// A client's line during a SASL exchange (RFC 5034 §4): base64 data, or `*` to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// The client gave up; answer `-ERR` (RFC 5034 §4).
    Cancel,
    /// Base64 text as sent (not decoded; may be empty).
    Data(Secret),
}

impl SaslResponse {
    /// Parses one client line (without CRLF) sent after a `+ ` continuation.
    pub fn parse(line: &[u8]) -> Result<SaslResponse, CommandError> {
        if line.len() > SASL_LINE_READ_LIMIT {
            return Err(CommandError::TooLong {
                limit: SASL_LINE_READ_LIMIT,
            });
        }
        let line = trim_end(trim_crlf(line));
        if line == b"*" {
            return Ok(SaslResponse::Cancel);
        }
        if !line.iter().all(|&b| is_base64_byte(b)) {
            return Err(CommandError::BadSaslResponse);
        }
        Ok(SaslResponse::Data(Secret::new(String::from_utf8_lossy(
            line,
        ))))
    }
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

fn is_base64_or_empty_marker(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_base64_byte(b))
}

/// Splits arguments on runs of spaces or tabs.
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Args { rest }
    }

    fn optional(&mut self) -> Option<&'a [u8]> {
        let rest = trim_start(self.rest);
        if rest.is_empty() {
            self.rest = rest;
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(rest.len());
        let (arg, tail) = rest.split_at(end);
        self.rest = tail;
        Some(arg)
    }

    fn required(
        &mut self,
        verb: &'static str,
        what: &'static str,
    ) -> Result<&'a [u8], CommandError> {
        self.optional()
            .ok_or(CommandError::MissingArgument { verb, what })
    }

    fn end(&mut self, verb: &'static str) -> Result<(), CommandError> {
        match self.optional() {
            None => Ok(()),
            Some(_) => Err(CommandError::TooManyArguments { verb }),
        }
    }
}

fn no_args(mut args: Args<'_>, verb: &'static str, cmd: Command) -> Result<Command, CommandError> {
    args.end(verb)?;
    Ok(cmd)
}

/// A message number: digits only, checked against `u32`, never 0 (RFC 1939 §5 numbers messages from 1).
fn msg_number(verb: &'static str, arg: &[u8]) -> Result<u32, CommandError> {
    let n = number(verb, MSG, arg)?;
    if n == 0 {
        return Err(CommandError::ZeroMessageNumber { verb });
    }
    Ok(n)
}

/// A non-negative decimal number with checked arithmetic: no sign, no wrap-around.
fn number(verb: &'static str, what: &'static str, arg: &[u8]) -> Result<u32, CommandError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::InvalidNumber { verb, what });
    }
    let mut n: u32 = 0;
    for &d in arg {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u32::from(d - b'0')))
            .ok_or(CommandError::NumberTooLarge { verb, what })?;
    }
    Ok(n)
}

/// A textual argument: UTF-8 (RFC 6856 allows UTF-8 user names), no control characters.
fn text_arg(verb: &'static str, arg: &[u8]) -> Result<String, CommandError> {
    let s = std::str::from_utf8(arg).map_err(|_| CommandError::InvalidUtf8 { verb })?;
    if s.chars().any(|c| c.is_control()) {
        return Err(CommandError::ControlCharacter { verb });
    }
    Ok(s.to_owned())
}

/// Control characters become `?` rather than being dropped: dropping them would turn `S\0TAT` into an unknown
/// verb spelled `STAT`, which logs as a real verb and re-encodes (`to_wire`) as one.
fn sanitize_verb(raw: &[u8]) -> String {
    let mut v: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_UNKNOWN_VERB)
        .collect();
    v.make_ascii_uppercase();
    v
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = head;
    }
    s
}

fn trim_crlf(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b'\r' | b'\n'] = s {
        s = head;
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', tail @ ..] = s {
        s = tail;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn parses_every_rfc1939_command() {
        assert_eq!(p("USER alice"), Ok(Command::User("alice".into())));
        assert_eq!(
            p("pass hunter 2"),
            Ok(Command::Pass(Secret::new("hunter 2")))
        );
        assert_eq!(
            p("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                name: "mrose".into(),
                digest: Secret::new("c4c9334bac560ecc979e58001b3e22fb")
            })
        );
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("LIST 2"), Ok(Command::List(Some(2))));
        assert_eq!(p("RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(p("DELE 4294967295"), Ok(Command::Dele(u32::MAX)));
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("TOP 1 0"), Ok(Command::Top(1, 0)));
        assert_eq!(p("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(p("uidl 7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("CAPA"), Ok(Command::Capa));
        assert_eq!(p("STLS"), Ok(Command::Stls));
        assert_eq!(p("UTF8"), Ok(Command::Utf8));
        assert_eq!(p("LAST"), Ok(Command::Last));
        assert_eq!(
            p("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            p("AUTH plain"),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some(Secret::new("AGFsaWNlAHNlY3JldA=="))
            })
        );
        assert_eq!(
            p("AUTH PLAIN ="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some(Secret::new("="))
            })
        );
        assert_eq!(p("XTND XLST"), Ok(Command::Unknown("XTND".into())));
        assert_eq!(
            p("quit  "),
            Ok(Command::Quit),
            "trailing spaces are tolerated"
        );
        assert_eq!(
            p("RETR  3"),
            Ok(Command::Retr(3)),
            "runs of spaces are tolerated"
        );
    }

    #[test]
    fn bad_numbers_are_errors_not_wraparounds() {
        assert!(matches!(
            p("RETR 0"),
            Err(CommandError::ZeroMessageNumber { .. })
        ));
        assert!(matches!(
            p("RETR -1"),
            Err(CommandError::InvalidNumber { .. })
        ));
        assert!(matches!(
            p("RETR +1"),
            Err(CommandError::InvalidNumber { .. })
        ));
        assert!(matches!(
            p("RETR 1x"),
            Err(CommandError::InvalidNumber { .. })
        ));
        assert!(matches!(
            p("RETR 99999999999"),
            Err(CommandError::NumberTooLarge { .. })
        ));
        assert!(matches!(
            p("RETR 4294967296"),
            Err(CommandError::NumberTooLarge { .. })
        ));
        assert!(matches!(
            p("TOP 1 -1"),
            Err(CommandError::InvalidNumber { .. })
        ));
        assert!(matches!(
            p("TOP 0 1"),
            Err(CommandError::ZeroMessageNumber { .. })
        ));
        assert!(matches!(
            p("LIST 0"),
            Err(CommandError::ZeroMessageNumber { .. })
        ));
        assert!(matches!(
            p("RETR"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            p("TOP 1"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            p("RETR 1 2"),
            Err(CommandError::TooManyArguments { .. })
        ));
        assert!(matches!(
            p("STAT 1"),
            Err(CommandError::TooManyArguments { .. })
        ));
        assert!(matches!(
            p("USER"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            p("PASS"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert_eq!(p("PASS "), Ok(Command::Pass(Secret::new(""))));
        assert_eq!(
            p("PASS  two leading "),
            Ok(Command::Pass(Secret::new(" two leading ")))
        );
        assert!(matches!(p("APOP bob xyz"), Err(CommandError::BadDigest)));
        assert!(matches!(p("AUTH PL@IN"), Err(CommandError::BadMechanism)));
        assert!(matches!(p(""), Err(CommandError::Empty)));
        assert!(matches!(p("   "), Err(CommandError::Empty)));
    }

    #[test]
    fn error_messages_read_well_after_err() {
        assert_eq!(
            p("RETR 0").unwrap_err().to_string(),
            "RETR: message numbers start at 1"
        );
        assert_eq!(
            p("RETR").unwrap_err().to_string(),
            "RETR needs a message number"
        );
        assert_eq!(
            p("RETR 99999999999").unwrap_err().to_string(),
            "RETR: message number too large (maximum 4294967295)"
        );
    }

    #[test]
    fn secrets_never_in_debug_or_display() {
        for line in [
            "PASS hunter2",
            "APOP bob c4c9334bac560ecc979e58001b3e22fb",
            "AUTH PLAIN aHVudGVyMg==",
        ] {
            let c = Command::parse(line.as_bytes()).unwrap();
            for shown in [format!("{c:?}"), format!("{c}")] {
                assert!(
                    !shown.contains("hunter2")
                        && !shown.contains("c4c933")
                        && !shown.contains("aHVudGVy")
                );
            }
        }
    }

    #[test]
    fn to_wire_round_trips_and_strips_injection() {
        for line in [
            "USER alice",
            "PASS a b",
            "LIST",
            "LIST 3",
            "TOP 2 10",
            "AUTH PLAIN =",
            "UIDL 1",
            "QUIT",
        ] {
            let c = p(line).unwrap();
            assert_eq!(c.to_wire(), format!("{line}\r\n").into_bytes());
            assert_eq!(Command::parse(&c.to_wire()).unwrap(), c);
        }
        let evil = Command::User("bob\r\nDELE 1".into());
        assert_eq!(evil.to_wire(), b"USER bobDELE 1\r\n");
        assert!(Command::Retr(1).fits_line_limit());
        let long = Command::Auth {
            mechanism: Some("XOAUTH2".into()),
            initial: Some(Secret::new("A".repeat(300))),
        };
        assert!(!long.fits_line_limit());
        assert!(
            p(&format!("AUTH XOAUTH2 {}", "A".repeat(2000))).is_ok(),
            "tolerant of long initial responses"
        );
    }

    #[test]
    fn garbage_never_panics() {
        assert!(matches!(
            Command::parse(b"\xff\xfe\x00"),
            Ok(Command::Unknown(_))
        ));
        assert!(matches!(
            Command::parse(b"USER \xff"),
            Err(CommandError::InvalidUtf8 { .. })
        ));
        assert!(matches!(
            Command::parse(b"USER a\x00b"),
            Err(CommandError::ControlCharacter { .. })
        ));
        assert!(matches!(
            Command::parse(b"\x00\x00\x00\x00"),
            Ok(Command::Unknown(_))
        ));
        assert!(matches!(
            Command::parse(&[b'A'; 100_000]),
            Err(CommandError::TooLong { .. })
        ));
        assert_eq!(
            Command::parse(b"RETRIEVE 1"),
            Ok(Command::Unknown("RETRIEVE".into()))
        );
        for b in 0..=255u8 {
            let _ = Command::parse(&[b]);
            let _ = Command::parse(&[b'R', b'E', b'T', b'R', b' ', b]);
            let _ = SaslResponse::parse(&[b]);
        }
    }

    /// Found by the `pop3_command` fuzz target: NULs inside a verb were dropped, so `S\0…\0TAT` parsed as
    /// `Unknown("STAT")`, whose `to_wire()` is a real `STAT`.
    #[test]
    fn control_characters_in_an_unknown_verb_are_not_dropped() {
        let mut line = b"S".to_vec();
        line.extend_from_slice(&[0; 26]);
        line.extend_from_slice(b"TAT");
        let cmd = Command::parse(&line).unwrap();
        assert_eq!(cmd, Command::Unknown(format!("S{}TAT", "?".repeat(26))));
        let wire = cmd.to_wire();
        assert_eq!(Command::parse(&wire[..wire.len() - 2]), Ok(cmd));
        assert_eq!(p("\0\0\0"), Ok(Command::Unknown("???".into())));
    }

    #[test]
    fn sasl_responses() {
        assert_eq!(SaslResponse::parse(b"*"), Ok(SaslResponse::Cancel));
        assert_eq!(
            SaslResponse::parse(b"dGVzdA=="),
            Ok(SaslResponse::Data(Secret::new("dGVzdA==")))
        );
        assert_eq!(
            SaslResponse::parse(b""),
            Ok(SaslResponse::Data(Secret::new("")))
        );
        assert_eq!(
            SaslResponse::parse(b"not base64!"),
            Err(CommandError::BadSaslResponse)
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Command::parse(&bytes);
        }

        #[test]
        fn message_numbers_round_trip(n in 1u32..) {
            proptest::prop_assert_eq!(p(&format!("RETR {n}")), Ok(Command::Retr(n)));
        }
    }
}
