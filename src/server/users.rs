//! The users file of `popguard server`: login names, how each password is stored, and checking a password.
//!
//! One `user:password` per line; `#` starts a comment line. The password is plaintext, or a Dovecot-style
//! `{SCHEME}value` with SCHEME one of `PLAIN`, `SHA512-CRYPT`, `SHA256-CRYPT`, `CRYPT` (with a `$6$`/`$5$` hash),
//! `SHA256`, `SHA512` (base64 digests; `.HEX` variants take hex). With a `{SCHEME}` the value ends at the next
//! `:`, so Dovecot passwd-files (`user:{PLAIN}pw::::::`) work unchanged; a plaintext password without a scheme is
//! the whole rest of the line and may contain `:`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

use crate::secret::Secret;

/// Longest users file read: far beyond any hand-written file, and a bound on memory if pointed at the wrong file.
pub const MAX_USERS_FILE: u64 = 16 * 1024 * 1024;

/// Longest login name. RFC 2449 §4 caps a command line at 255 octets, so `USER name` cannot carry more.
pub const MAX_USER_NAME: usize = 250;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    // The cause is part of the message, not a `source`, so `{e:#}` chains print it once.
    #[error("cannot read users file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("users file {path} is larger than {MAX_USERS_FILE} bytes; is it the right file?")]
    TooLarge { path: PathBuf },
    #[error("users file line {line}: {message}")]
    Parse { line: usize, message: String },
}

/// How one user's password is stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Plain(Secret),
    /// A crypt(3) string, `$6$...` (SHA-512-crypt) or `$5$...` (SHA-256-crypt).
    ShaCrypt(String),
    /// A raw SHA-256 digest of the password.
    Sha256([u8; 32]),
    /// A raw SHA-512 digest of the password.
    Sha512([u8; 64]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are secrets too (offline guessing), so only the kind is shown.
        f.write_str(match self {
            Credential::Plain(_) => "Plain(***)",
            Credential::ShaCrypt(_) => "ShaCrypt(***)",
            Credential::Sha256(_) => "Sha256(***)",
            Credential::Sha512(_) => "Sha512(***)",
        })
    }
}

impl Credential {
    /// Parses the password field of a users-file line (see the module docs).
    pub fn parse(field: &str) -> Result<Credential, String> {
        let Some(rest) = field.strip_prefix('{') else {
            return Ok(Credential::Plain(Secret::new(field)));
        };
        let Some((scheme, value)) = rest.split_once('}') else {
            return Err("a password starting with `{` needs a `{SCHEME}` prefix; write `{PLAIN}{...` for a \
                        plaintext password that starts with `{`"
                .to_owned());
        };
        // Dovecot passwd-file: the hash ends at the next `:` (extra fields follow).
        let value = value.split_once(':').map_or(value, |(v, _)| v);
        let scheme_upper = scheme.to_ascii_uppercase();
        match scheme_upper.as_str() {
            "PLAIN" | "CLEARTEXT" => Ok(Credential::Plain(Secret::new(value))),
            "SHA512-CRYPT" | "SHA256-CRYPT" | "CRYPT" => {
                let want = match scheme_upper.as_str() {
                    "SHA512-CRYPT" => &["$6$"][..],
                    "SHA256-CRYPT" => &["$5$"][..],
                    _ => &["$6$", "$5$"][..],
                };
                if !want.iter().any(|p| value.starts_with(p)) {
                    return Err(format!(
                        "{{{scheme}}} needs a crypt string starting with {} (make one with `openssl passwd -6`)",
                        want.join(" or ")
                    ));
                }
                Ok(Credential::ShaCrypt(value.to_owned()))
            }
            "SHA256" | "SHA256.B64" => decode_b64(value).map(Credential::Sha256),
            "SHA256.HEX" => decode_hex(value).map(Credential::Sha256),
            "SHA512" | "SHA512.B64" => decode_b64(value).map(Credential::Sha512),
            "SHA512.HEX" => decode_hex(value).map(Credential::Sha512),
            _ => Err(format!(
                "unknown password scheme {{{scheme}}}; use PLAIN, SHA512-CRYPT, SHA256-CRYPT, CRYPT, SHA256 or SHA512"
            )),
        }
    }

    /// Checks a password. Digest comparisons take the same time wherever they differ; crypt strings are slow on
    /// purpose, so call this from a blocking thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Credential::Plain(s) => constant_time_eq(s.expose().as_bytes(), password),
            Credential::ShaCrypt(hash) => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, hash.as_str())
                    .is_ok()
            }
            Credential::Sha256(d) => constant_time_eq(&Sha256::digest(password), d),
            Credential::Sha512(d) => constant_time_eq(&Sha512::digest(password), d),
        }
    }

    /// The plaintext, when stored that way: APOP (RFC 1939 §7) needs it, every other scheme cannot do APOP.
    pub fn plaintext(&self) -> Option<&Secret> {
        match self {
            Credential::Plain(s) => Some(s),
            _ => None,
        }
    }
}

fn decode_b64<const N: usize>(value: &str) -> Result<[u8; N], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| format!("digest is not valid base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("digest has {} bytes, expected {N}", b.len()))
}

fn decode_hex<const N: usize>(value: &str) -> Result<[u8; N], String> {
    let value = value.trim();
    if value.len() != N * 2 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest must be {} hex digits", N * 2));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&value[i * 2..i * 2 + 2], 16)
            .map_err(|_| "digest is not valid hex".to_owned())?;
    }
    Ok(out)
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a login name can be used as a maildrop directory name: no path separators, no `.`/`..`, no control
/// characters or spaces (which could not be sent in `USER name` anyway).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace())
}

/// All users of the server.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, Credential>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let read = |source| UsersError::Read {
            path: path.to_owned(),
            cause: source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_USERS_FILE {
            return Err(UsersError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Users::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut users = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |message: String| UsersError::Parse {
                line: line_no,
                message,
            };
            // `lines()` leaves the CR of a CRLF file; it is never part of a password.
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((name, field)) = line.split_once(':') else {
                return Err(err("expected `user:password`".to_owned()));
            };
            if !valid_user_name(name) {
                return Err(err(format!(
                    "user name {name:?} cannot name a maildrop directory (no `/`, spaces, control characters, \
                     `.` or `..`; at most {MAX_USER_NAME} bytes)"
                )));
            }
            if field.is_empty() {
                return Err(err(format!("user {name} has an empty password")));
            }
            let cred = Credential::parse(field).map_err(err)?;
            if users.insert(name.to_owned(), cred).is_some() {
                return Err(err(format!("user {name} is listed twice")));
            }
        }
        Ok(Users { users })
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether any password is stored in plaintext (worth a warning when the server listens beyond loopback).
    pub fn any_plaintext(&self) -> bool {
        self.users.values().any(|c| c.plaintext().is_some())
    }

    /// Checks a login. An unknown user is checked against a dummy credential so that it costs the same time as a
    /// wrong password for a real one, and the answer does not reveal which names exist.
    pub fn verify(&self, name: &str, password: &[u8]) -> bool {
        match self.users.get(name) {
            Some(c) => c.verify(password),
            None => {
                let dummy = Credential::Plain(Secret::new("\u{0}never-matches"));
                let _ = dummy.verify(password);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl passwd -6 -salt saltsalt secret` and `-5`.
    const SHA512_CRYPT: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    const SHA256_CRYPT: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";

    #[test]
    fn parses_every_scheme_and_verifies() {
        // `printf secret | sha256sum`, and base64 of the same digest.
        let sha256_hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let sha256_b64 = "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=";
        let text = format!(
            "# comment\n\
             \n\
             alice:secret\n\
             bob:{{PLAIN}}secret::::::\n\
             carol:{{SHA512-CRYPT}}{SHA512_CRYPT}\n\
             dave:{{SHA256-CRYPT}}{SHA256_CRYPT}\r\n\
             erin:{{SHA256}}{sha256_b64}\n\
             frank:{{SHA256.HEX}}{sha256_hex}\n\
             gina:{{CRYPT}}{SHA512_CRYPT}\n\
             hugo:pass:with:colons\n"
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 8);
        for name in ["alice", "bob", "carol", "dave", "erin", "frank", "gina"] {
            assert!(users.verify(name, b"secret"), "{name}");
            assert!(!users.verify(name, b"Secret"), "{name}");
            assert!(!users.verify(name, b""), "{name}");
        }
        assert!(users.verify("hugo", b"pass:with:colons"));
        assert!(!users.verify("nobody", b"secret"));
        assert!(users.get("alice").unwrap().plaintext().is_some());
        assert!(users.get("carol").unwrap().plaintext().is_none());
    }

    #[test]
    fn rejects_bad_lines_with_their_number() {
        for (text, line, needle) in [
            ("a:b\nnocolon\n", 2, "user:password"),
            ("../x:pw\n", 1, "maildrop directory"),
            ("a b:pw\n", 1, "maildrop directory"),
            ("a:\n", 1, "empty password"),
            ("a:1\na:2\n", 2, "twice"),
            ("a:{MD5}xyz\n", 1, "unknown password scheme"),
            ("a:{SHA512-CRYPT}$1$abc\n", 1, "openssl passwd -6"),
            ("a:{SHA256}AAAA\n", 1, "expected 32"),
            ("a:{oops\n", 1, "{PLAIN}"),
        ] {
            let e = Users::parse(text).unwrap_err();
            let UsersError::Parse { line: l, .. } = &e else {
                panic!("{e:?}")
            };
            assert_eq!(*l, line, "{text:?}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn debug_never_shows_passwords_or_hashes() {
        let users =
            Users::parse(&format!("a:hunter2\nb:{{SHA512-CRYPT}}{SHA512_CRYPT}\n")).unwrap();
        let dbg = format!("{users:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("saltsalt"), "{dbg}");
    }

    #[test]
    fn user_names_that_escape_the_maildirs_are_invalid() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\tb",
            &"x".repeat(251),
        ] {
            assert!(!valid_user_name(bad), "{bad:?}");
        }
        for good in ["alice", "a.b", "user@example.org", "Ünïcode"] {
            assert!(valid_user_name(good), "{good:?}");
        }
    }
}
