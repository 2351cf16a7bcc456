//! CAPA through the proxy: the upstream's list, cut down to what the proxy really does in each state (RFC 2449).
//!
//! Each capability is kept, changed or dropped for a stated reason; anything unknown is dropped, because a client
//! that used an extension the proxy does not understand would desynchronise the relay.

use super::sasl::{RELAYED_MECHANISMS, is_relayed};
use crate::pop3::Capabilities;

/// What the proxy offers on top of the upstream's list.
#[derive(Debug, Clone, Copy)]
pub struct CapaContext {
    /// Still in AUTHORIZATION (login capabilities are shown only there).
    pub authorization: bool,
    /// The proxy terminates STLS for this client (certificate configured, connection not yet TLS).
    pub offer_stls: bool,
}

/// The `IMPLEMENTATION` line the proxy shows instead of the upstream's.
pub const IMPLEMENTATION: &str = concat!("IMPLEMENTATION popguard ", env!("CARGO_PKG_VERSION"));

/// Filters the upstream's capabilities for the client.
pub fn filter(upstream: &Capabilities, ctx: CapaContext) -> Capabilities {
    let mut out = Capabilities::new();
    for line in upstream.lines() {
        let tag = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match tag.as_str() {
            // Translated to client numbers and tagged like RETR.
            "TOP" | "UIDL" => out.push(line),
            // Error codes pass through unchanged and the proxy's own errors use valid codes.
            "RESP-CODES" | "AUTH-RESP-CODE" => out.push(line),
            // Server policy the client should honour; the proxy neither relaxes nor enforces it.
            "LOGIN-DELAY" | "EXPIRE" => out.push(line),
            // USER/PASS are relayed; only meaningful before login.
            "USER" if ctx.authorization => out.push(line),
            // Only mechanisms without a security layer can be relayed (see `sasl`).
            "SASL" if ctx.authorization => {
                let mechs: Vec<&str> = line
                    .split_whitespace()
                    .skip(1)
                    .filter(|m| is_relayed(m))
                    .collect();
                if !mechs.is_empty() {
                    out.push(&format!("SASL {}", mechs.join(" ")));
                }
            }
            // STLS is the proxy's own business (never forwarded upstream); PIPELINING and IMPLEMENTATION are
            // re-added below as the proxy's. UTF8 and LANG change what the upstream sends, and the proxy does not
            // translate them. Everything else is unknown to the proxy.
            _ => {}
        }
    }
    if ctx.offer_stls && ctx.authorization {
        out.push("STLS");
    }
    // Commands are read one at a time from a buffered stream and answered in order, which is all RFC 2449 §6.6
    // asks, whether or not the upstream pipelines.
    out.push("PIPELINING");
    out.push(IMPLEMENTATION);
    out
}

/// The list shown before the upstream is known (routing waits for the login name): what the proxy can relay to a
/// typical server.
pub fn before_routing(offer_stls: bool) -> Capabilities {
    let mut c = Capabilities::new();
    for l in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "USER"] {
        c.push(l);
    }
    c.push(&format!("SASL {}", RELAYED_MECHANISMS.join(" ")));
    if offer_stls {
        c.push("STLS");
    }
    c.push("PIPELINING");
    c.push(IMPLEMENTATION);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dovecot() -> Capabilities {
        Capabilities::parse(
            b"TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN GSSAPI\r\n\
              UTF8 USER\r\nIMPLEMENTATION Dovecot\r\nX-FOO\r\n",
        )
    }

    #[test]
    fn authorization_state_keeps_login_caps_and_drops_stls() {
        let c = filter(
            &dovecot(),
            CapaContext {
                authorization: true,
                offer_stls: false,
            },
        );
        let lines: Vec<&str> = c.lines().iter().map(String::as_str).collect();
        assert_eq!(
            lines,
            vec![
                "TOP",
                "UIDL",
                "RESP-CODES",
                "AUTH-RESP-CODE",
                "USER",
                "SASL PLAIN LOGIN",
                "PIPELINING",
                IMPLEMENTATION
            ]
        );
    }

    #[test]
    fn stls_only_when_the_proxy_terminates_it() {
        let ctx = CapaContext {
            authorization: true,
            offer_stls: true,
        };
        assert!(filter(&dovecot(), ctx).has("STLS"));
        let after_login = CapaContext {
            authorization: false,
            offer_stls: true,
        };
        let c = filter(&dovecot(), after_login);
        assert!(!c.has("STLS") && !c.has("USER") && !c.has("SASL"));
        assert!(c.has("TOP") && c.has("PIPELINING"));
    }

    #[test]
    fn sasl_line_without_relayable_mechanisms_is_dropped() {
        let up = Capabilities::parse(b"SASL GSSAPI CRAM-MD5\r\nUSER\r\n");
        let c = filter(
            &up,
            CapaContext {
                authorization: true,
                offer_stls: false,
            },
        );
        assert!(!c.has("SASL"));
        assert!(c.has("USER"));
    }

    #[test]
    fn pipelining_is_offered_even_when_the_upstream_lacks_it() {
        let c = filter(
            &Capabilities::parse(b"USER\r\n"),
            CapaContext {
                authorization: true,
                offer_stls: false,
            },
        );
        assert!(c.has("PIPELINING"));
        assert!(!c.has("TOP"), "TOP only when the upstream has it");
    }

    #[test]
    fn list_before_routing() {
        let c = before_routing(true);
        assert_eq!(
            c.sasl_mechanisms(),
            vec!["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
        );
        assert!(c.has("STLS"));
        assert!(!before_routing(false).has("STLS"));
    }
}
