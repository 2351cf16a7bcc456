//! Reading (and, for login routing, rewriting) the user name inside the SASL messages the proxy relays.
//!
//! The proxy never authenticates anyone: it only needs to know whose verdict cache, rules and quarantine apply,
//! and for routed logins which upstream to reach. Only mechanisms without a security layer are relayed (a layer
//! would wrap every later byte, and the proxy must read them): RFC 4616 PLAIN, the LOGIN draft, Google's XOAUTH2
//! and RFC 7628 OAUTHBEARER.

use base64::prelude::*;

use crate::pop3::auth;
use crate::secret::Secret;

/// The SASL mechanisms the proxy relays, in the order it advertises them.
pub const RELAYED_MECHANISMS: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];
/// RFC 4616 §2: authzid, authcid and passwd are each at most 255 octets; a login name longer than this is refused.
pub const MAX_SASL_NAME: usize = 255;
/// `LOGIN`'s first challenge, "Username:" in base64, as servers send it.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error(
        "SASL mechanism {0} is not relayed by popguard (use PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER)"
    )]
    Unsupported(String),
    #[error("the SASL data is not valid base64")]
    Base64,
    #[error("the SASL data does not name a user ({0})")]
    NoUser(&'static str),
}

pub fn is_relayed(mechanism: &str) -> bool {
    RELAYED_MECHANISMS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(mechanism))
}

fn decode(data: &Secret) -> Result<Vec<u8>, SaslError> {
    let d = data.expose().trim();
    if d == "=" || d.is_empty() {
        return Ok(Vec::new());
    }
    BASE64_STANDARD.decode(d).map_err(|_| SaslError::Base64)
}

fn checked_name(bytes: &[u8], what: &'static str) -> Result<String, SaslError> {
    let s = std::str::from_utf8(bytes).map_err(|_| SaslError::NoUser(what))?;
    if s.is_empty() || s.len() > MAX_SASL_NAME || s.chars().any(char::is_control) {
        return Err(SaslError::NoUser(what));
    }
    Ok(s.to_owned())
}

/// The user named by the first client message of `mechanism` (base64 as on the wire).
pub fn user_of(mechanism: &str, data: &Secret) -> Result<String, SaslError> {
    let raw = decode(data)?;
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let (authzid, authcid, _) = split_plain(&raw)?;
            // The authorization identity is the mailbox acted upon when given (RFC 4616 §2).
            if authzid.is_empty() {
                checked_name(authcid, "PLAIN authcid")
            } else {
                checked_name(authzid, "PLAIN authzid")
            }
        }
        "LOGIN" => checked_name(&raw, "LOGIN user name"),
        "XOAUTH2" => {
            // user={User}^Aauth=Bearer {token}^A^A
            let first = raw.split(|&b| b == 1).next().unwrap_or_default();
            let user = first
                .strip_prefix(b"user=")
                .ok_or(SaslError::NoUser("XOAUTH2 without user="))?;
            checked_name(user, "XOAUTH2 user")
        }
        "OAUTHBEARER" => {
            // RFC 7628 §3.1: gs2-header "n,a=user," with "=2C" and "=3D" escapes (RFC 5801 §4).
            let header = raw.split(|&b| b == 1).next().unwrap_or_default();
            let authzid = header
                .split(|&b| b == b',')
                .find_map(|f| f.strip_prefix(b"a="))
                .ok_or(SaslError::NoUser("OAUTHBEARER without a= in its header"))?;
            let s = String::from_utf8_lossy(authzid)
                .replace("=2C", ",")
                .replace("=3D", "=");
            checked_name(s.as_bytes(), "OAUTHBEARER a=")
        }
        other => Err(SaslError::Unsupported(other.to_owned())),
    }
}

fn split_plain(raw: &[u8]) -> Result<auth::PlainFields<'_>, SaslError> {
    auth::split_plain(raw).ok_or(SaslError::NoUser("PLAIN message without two NULs"))
}

/// Rewrites the user name in a first client message for a routed login (`alice@host` → `alice`). Only PLAIN and
/// LOGIN carry a plain name to rewrite; the OAuth mechanisms' identity is bound to the token, so they are relayed
/// unchanged and never routed by login.
pub fn with_user(mechanism: &str, data: &Secret, user: &str) -> Result<Secret, SaslError> {
    let raw = decode(data)?;
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let (authzid, authcid, passwd) = split_plain(&raw)?;
            // An authzid equal to the authcid is the same routed name; any other authzid is left alone.
            let authzid = if !authzid.is_empty() && authzid == authcid {
                user.as_bytes()
            } else {
                authzid
            };
            Ok(auth::plain_message(authzid, user.as_bytes(), passwd))
        }
        "LOGIN" => Ok(Secret::new(BASE64_STANDARD.encode(user))),
        other => Err(SaslError::Unsupported(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> Secret {
        Secret::new(BASE64_STANDARD.encode(s))
    }

    #[test]
    fn plain_user_and_authzid() {
        assert_eq!(user_of("PLAIN", &b64(b"\0alice\0pw")).unwrap(), "alice");
        assert_eq!(user_of("plain", &b64(b"bob\0admin\0pw")).unwrap(), "bob");
        assert!(user_of("PLAIN", &b64(b"alice\0pw")).is_err());
        assert!(user_of("PLAIN", &b64(b"\0\0pw")).is_err());
        assert_eq!(
            user_of("PLAIN", &Secret::new("!!!")),
            Err(SaslError::Base64)
        );
        assert!(user_of("PLAIN", &Secret::new("=")).is_err());
    }

    #[test]
    fn login_xoauth2_oauthbearer() {
        assert_eq!(user_of("LOGIN", &b64(b"carol")).unwrap(), "carol");
        assert_eq!(
            user_of(
                "XOAUTH2",
                &b64(b"user=dave@gmail.com\x01auth=Bearer ya29.x\x01\x01")
            )
            .unwrap(),
            "dave@gmail.com"
        );
        assert!(user_of("XOAUTH2", &b64(b"auth=Bearer x\x01\x01")).is_err());
        assert_eq!(
            user_of(
                "OAUTHBEARER",
                &b64(b"n,a=e=2Cve@x.org,\x01host=x\x01auth=Bearer t\x01\x01")
            )
            .unwrap(),
            "e,ve@x.org"
        );
        assert!(user_of("OAUTHBEARER", &b64(b"n,,\x01auth=Bearer t\x01\x01")).is_err());
        assert_eq!(
            user_of("CRAM-MD5", &b64(b"x")),
            Err(SaslError::Unsupported("CRAM-MD5".into()))
        );
    }

    #[test]
    fn control_characters_in_names_are_refused() {
        assert!(user_of("LOGIN", &b64(b"a\r\nb")).is_err());
        assert!(user_of("LOGIN", &b64(&[b'a'; 256])).is_err());
    }

    #[test]
    fn rewriting_for_routed_logins() {
        let s = with_user("PLAIN", &b64(b"\0alice@pop.x\0pw d"), "alice").unwrap();
        assert_eq!(
            BASE64_STANDARD.decode(s.expose()).unwrap(),
            b"\0alice\0pw d"
        );
        let s = with_user("PLAIN", &b64(b"alice@pop.x\0alice@pop.x\0pw"), "alice").unwrap();
        assert_eq!(
            BASE64_STANDARD.decode(s.expose()).unwrap(),
            b"alice\0alice\0pw"
        );
        let s = with_user("LOGIN", &b64(b"alice@pop.x"), "alice").unwrap();
        assert_eq!(user_of("LOGIN", &s).unwrap(), "alice");
        assert!(with_user("XOAUTH2", &b64(b"user=a"), "b").is_err());
    }

    #[test]
    fn relayed_set() {
        assert!(is_relayed("plain") && is_relayed("XOAUTH2"));
        assert!(!is_relayed("GSSAPI") && !is_relayed("SCRAM-SHA-256"));
    }
}
