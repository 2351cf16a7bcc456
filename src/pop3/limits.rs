//! Every POP3 number both sides share: ports, the default TLS mode for a port, RFC timers, and the caps on what
//! a peer may make us read or hold.

use std::time::Duration;

use crate::tls::TlsMode;

pub use super::capability::MAX_CAPABILITIES;
pub use super::command::{COMMAND_LINE_READ_LIMIT, MAX_COMMAND_LINE, SASL_LINE_READ_LIMIT};
pub use super::response::{MAX_RESPONSE_LINE, RESPONSE_LINE_READ_LIMIT};

/// The plain POP3 port (RFC 1939 §3).
pub const POP3_PORT: u16 = 110;
/// The POP3-over-TLS port (RFC 8314 §7.3, which recommends implicit TLS there).
pub const POP3S_PORT: u16 = 995;

/// RFC 1939 §3: an autologout timer "MUST be of at least 10 minutes' duration" for an idle client. The server's
/// default inactivity timer and the proxy's floor for its client timeout.
pub const RFC1939_MIN_AUTOLOGOUT: Duration = Duration::from_secs(10 * 60);

/// Consecutive unknown, malformed or out-of-state commands after which a connection is closed (server and proxy
/// alike): a peer sending that much garbage is not a POP3 client.
pub const MAX_BAD_COMMANDS: u32 = 20;

/// Bytes accepted for a CAPA answer. [`super::Capabilities`] keeps at most [`MAX_CAPABILITIES`] lines of about
/// 255 octets (about 32 KiB); twice that leaves room for the lines it drops, and a bigger answer is hostile.
pub const MAX_CAPA_BYTES: usize = 64 * 1024;

/// Bytes accepted for a LIST or UIDL answer. A UIDL line is at most 84 octets (RFC 1939 §7: a message number, a
/// space, a unique-id of up to 70 characters, CRLF), so 16 MiB covers about 200 000 messages at the longest ids
/// (a 100 000-message maildrop with typical ids is about 8 MB). Kept at 16 MiB rather than more because the proxy
/// may hold one listing per session at once.
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
pub const MAX_UID_LEN: usize = 70;

/// Longest LIST or UIDL line accepted (without CRLF). RFC 1939 lines are at most 84 octets and a scan listing
/// may carry extra text after the size (§5 allows it); a longer line is reported as bad, not buffered.
pub const MAX_LISTING_LINE: usize = 1024;

/// The TLS mode a connection to `port` gets when none is configured: implicit TLS on 995 (RFC 8314 §7.3), STLS
/// everywhere else, so a password never leaves in clear text unless the caller says `none`.
pub fn default_tls_for_port(port: u16) -> TlsMode {
    if port == POP3S_PORT {
        TlsMode::Implicit
    } else {
        TlsMode::StartTls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tls_per_port() {
        assert_eq!(default_tls_for_port(POP3S_PORT), TlsMode::Implicit);
        assert_eq!(default_tls_for_port(POP3_PORT), TlsMode::StartTls);
        assert_eq!(default_tls_for_port(1110), TlsMode::StartTls);
        assert_eq!(default_tls_for_port(0), TlsMode::StartTls);
    }

    // The longest RFC 1939 UIDL line fits a listing line, and a CAPA answer can carry every kept line.
    const _: () = assert!(MAX_LISTING_LINE >= 10 + 1 + MAX_UID_LEN);
    const _: () = assert!(MAX_CAPA_BYTES >= MAX_CAPABILITIES * 255);

    #[test]
    fn autologout_is_the_rfc_minimum() {
        assert_eq!(RFC1939_MIN_AUTOLOGOUT, Duration::from_secs(600));
    }
}
