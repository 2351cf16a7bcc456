//! Which sender IPs are looked up: the relay IP of each `Received` field, trusted networks, never-listed ranges.
//!
//! The walk mirrors SpamAssassin's trusted-relay logic: hops inside your own (trusted) network and hops with private
//! addresses are passed over; the first hop outside them is the host that handed the message in, the only one whose
//! address the recipient's side actually saw. Everything older was written by that host and may be forged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `Received` fields examined per message. RFC 5321 §6.3 treats 100 or more of them as a mail loop, so a real message
/// never needs more; the bound keeps a header bomb from costing work.
pub const MAX_RECEIVED_FIELDS: usize = 100;

/// An IP network written as `ADDR/PREFIX` (or a bare address: a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address. Error text says what was wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or ADDR/PREFIX network"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is the IPv4 host: look it up and match it as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// False for addresses no public blocklist can list: private, loopback, link-local, shared (CGNAT), multicast,
/// reserved and unspecified ranges. Documentation ranges (192.0.2.0/24, 2001:db8::/32, ...) are looked up, so that
/// examples and tests can use them.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0                                   // "this network", RFC 1122 §3.2.1.3
        || (a == 100 && (64..128).contains(&b))     // shared address space, RFC 6598
        || (a == 192 && b == 0 && c == 0)           // IETF protocol assignments, RFC 6890
        || (a == 198 && (b == 18 || b == 19))       // benchmarking, RFC 2544
        || a >= 240) // reserved, RFC 1112 §4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00   // unique local, RFC 4193
        || (first & 0xffc0) == 0xfe80   // link-local, RFC 4291 §2.5.6
        || (first & 0xffc0) == 0xfec0) // deprecated site-local, RFC 3879
}

/// The IPs to look up, newest hop first: walk the `Received` fields (newest first, as they appear in the header),
/// pass over hops that are private or inside `trusted`, and keep the next `hops` public untrusted relay addresses.
pub fn sender_ips<'a>(
    received: impl IntoIterator<Item = &'a str>,
    trusted: &[Cidr],
    hops: usize,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for field in received.into_iter().take(MAX_RECEIVED_FIELDS) {
        if out.len() >= hops {
            break;
        }
        let Some(ip) = relay_ip(field) else { continue };
        let ip = canonical(ip);
        if !is_public(ip) || trusted.iter().any(|t| t.contains(ip)) || out.contains(&ip) {
            continue;
        }
        out.push(ip);
    }
    out
}

/// The address of the host that connected, from one `Received` value (`from HELO (rDNS [IP]) by ...`).
///
/// MTAs disagree on where they write it: Postfix/Sendmail put the TCP peer in the parentheses after the HELO name
/// (RFC 5321 §4.4 TCP-info), qmail writes `(HELO name) (IP)`, Exim writes `from [IP] (helo=name)`. The HELO name is
/// chosen by the client and may itself be an IP literal, so: the first address in parentheses that is not a HELO
/// argument wins, else the first address outside them.
pub fn relay_ip(value: &str) -> Option<IpAddr> {
    let value = value.trim_start();
    let rest = strip_prefix_ci(value, "from")?;
    if !rest.starts_with(|c: char| c.is_whitespace() || c == '(' || c == '[') {
        return None;
    }
    let mut in_parens: Option<IpAddr> = None;
    let mut outside: Option<IpAddr> = None;
    for token in from_clause_tokens(rest) {
        if token.helo {
            continue;
        }
        let Some(ip) = parse_ip_token(token.text) else {
            continue;
        };
        if token.depth > 0 {
            in_parens.get_or_insert(ip);
        } else {
            outside.get_or_insert(ip);
        }
    }
    in_parens.or(outside)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

struct Token<'a> {
    text: &'a str,
    depth: usize,
    /// The client's HELO/EHLO argument (untrustworthy), as opposed to what the receiving MTA observed.
    helo: bool,
}

/// Whitespace- and parenthesis-separated tokens of the `from` clause: up to the `by` keyword (or `;`) at depth 0.
fn from_clause_tokens(rest: &str) -> Vec<Token<'_>> {
    // (start, end, paren depth) of each token.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    let mut end_of_clause = rest.len();
    for (i, c) in rest.char_indices() {
        let clause_end = c == ';' && depth == 0;
        if c == '(' || c == ')' || c.is_whitespace() || clause_end {
            if let Some(s) = start.take() {
                spans.push((s, i, depth));
            }
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if clause_end {
                end_of_clause = i;
                break;
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        spans.push((s, end_of_clause, depth));
    }

    let mut tokens = Vec::new();
    let mut helo_next = false;
    for (s, e, depth) in spans {
        let text = &rest[s..e];
        if depth == 0 && text.eq_ignore_ascii_case("by") {
            break;
        }
        let helo_arg = strip_prefix_ci(text, "helo=").or_else(|| strip_prefix_ci(text, "ehlo="));
        tokens.push(Token {
            text: helo_arg.unwrap_or(text),
            depth,
            helo: helo_arg.is_some() || helo_next,
        });
        helo_next = text.eq_ignore_ascii_case("helo") || text.eq_ignore_ascii_case("ehlo");
    }
    tokens
}

/// `1.2.3.4`, `[1.2.3.4]`, `[IPv6:2001:db8::1]`, `[1.2.3.4]:25`, `1.2.3.4,` ...
fn parse_ip_token(token: &str) -> Option<IpAddr> {
    let inner = match token.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => token.trim_end_matches([',', '.', ':', ']']),
    };
    let inner = strip_prefix_ci(inner, "ipv6:").unwrap_or(inner);
    inner.parse().ok()
}

/// The DNSBL query label for an IP: reversed octets (`4.3.2.1`) or, for IPv6, the 32 reversed nibbles
/// (RFC 5782 §2.4).
pub fn reversed(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mut out = String::with_capacity(63);
            for i in 0..32 {
                if i > 0 {
                    out.push('.');
                }
                let nibble = ((bits >> (i * 4)) & 0xf) as u32;
                out.push(char::from_digit(nibble, 16).unwrap_or('0'));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn relay_ip_handles_common_mta_formats() {
        let cases = [
            // Postfix
            (
                "from mail.example.com (mail.example.com [203.0.113.9])\r\n by mx.local (Postfix) with ESMTPS id X; Mon, 1 Jan 2024",
                "203.0.113.9",
            ),
            // Postfix, client HELO'd with a forged IP literal
            (
                "from [192.0.2.1] (unknown [203.0.113.9]) by mx (Postfix)",
                "203.0.113.9",
            ),
            // Sendmail
            (
                "from helo.example (rdns.example [203.0.113.9] (may be forged)) by mx.example (8.15/8.15)",
                "203.0.113.9",
            ),
            // Exim, literal outside, HELO inside
            (
                "from [203.0.113.9] (helo=[192.0.2.1]) by mx.example with esmtp (Exim 4.96)",
                "203.0.113.9",
            ),
            // Exim with rDNS and port
            (
                "from host.example ([203.0.113.9]:41234 helo=host.example) by mx with esmtps",
                "203.0.113.9",
            ),
            // qmail, HELO is an IP
            (
                "from unknown (HELO 192.0.2.1) (203.0.113.9) by mx.example with SMTP; 1 Jan",
                "203.0.113.9",
            ),
            // Exchange
            (
                "from EXCH01.corp.example (10.0.0.5) by EXCH02.corp.example (10.0.0.6) with Microsoft SMTP Server",
                "10.0.0.5",
            ),
            // IPv6, Postfix style
            (
                "from mail.example.net (mail.example.net [IPv6:2001:db8::25]) by mx.example (Postfix)",
                "2001:db8::25",
            ),
            // IPv6, Exim style
            ("from [2001:db8::25] (helo=x) by mx", "2001:db8::25"),
            ("FROM mail (mail [198.51.100.4]) BY mx", "198.51.100.4"),
        ];
        for (value, want) in cases {
            assert_eq!(relay_ip(value), Some(ip(want)), "{value}");
        }
    }

    #[test]
    fn relay_ip_ignores_fields_without_a_peer() {
        for value in [
            "by 2002:a05:6000:1:b0:0:0:0 with SMTP id x; Mon, 1 Jan 2024",
            "from localhost by mx.example (8.15/Submit) id x",
            "(qmail 1234 invoked by uid 89); 1 Jan 2024",
            "fromage (cheese [203.0.113.9]) by x",
            "",
            "from",
            "from x by y (z [203.0.113.9])",
            "from (((((",
            "from ))) [203.0.113.9",
        ] {
            let got = relay_ip(value);
            assert!(
                got.is_none() || value.ends_with("[203.0.113.9"),
                "{value:?} -> {got:?}"
            );
        }
    }

    #[test]
    fn public_ranges() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "192.0.2.1",
            "203.0.113.9",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.4.4",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn cidr_parse_and_contains() {
        let net = Cidr::parse("198.51.100.0/24").unwrap();
        assert!(net.contains(ip("198.51.100.200")));
        assert!(!net.contains(ip("198.51.101.1")));
        assert!(net.contains(ip("::ffff:198.51.100.1")));
        let host = Cidr::parse(" 192.0.2.7 ").unwrap();
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8:1::/48").unwrap();
        assert!(v6.contains(ip("2001:db8:1:ffff::1")));
        assert!(!v6.contains(ip("2001:db8:2::1")));
        assert!(!v6.contains(ip("192.0.2.7")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "10/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sender_ips_skips_private_and_trusted_hops() {
        let received = [
            "from relay.isp.example (relay.isp.example [198.51.100.7]) by mx.isp.example",
            "from inner (inner [10.0.0.9]) by relay.isp.example",
            "from sender.example (sender.example [203.0.113.9]) by inner",
            "from forged (forged [192.0.2.66]) by sender.example",
        ];
        assert_eq!(sender_ips(received, &[], 1), vec![ip("198.51.100.7")]);
        let trusted = [Cidr::parse("198.51.100.0/24").unwrap()];
        assert_eq!(sender_ips(received, &trusted, 1), vec![ip("203.0.113.9")]);
        assert_eq!(
            sender_ips(received, &trusted, 5),
            vec![ip("203.0.113.9"), ip("192.0.2.66")]
        );
        assert!(sender_ips(received, &trusted, 0).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn relay_ip_never_panics_and_needs_a_from_clause(s in "\\PC{0,80}", prefix in "(from |FROM |by |)") {
            let value = format!("{prefix}{s}");
            let got = relay_ip(&value);
            proptest::prop_assert!(got.is_none() || value.trim_start().to_ascii_lowercase().starts_with("from"));
        }

        #[test]
        fn relay_ip_finds_any_bracketed_peer(a: u8, b: u8, c: u8, d: u8, helo in "[a-z]{1,20}\\.example") {
            let ip = Ipv4Addr::new(a, b, c, d);
            let value = format!("from {helo} ({helo} [{ip}]) by mx.example with ESMTP");
            proptest::prop_assert_eq!(relay_ip(&value), Some(IpAddr::V4(ip)));
        }
    }

    #[test]
    fn reversed_names() {
        assert_eq!(reversed(ip("192.0.2.99")), "99.2.0.192");
        assert_eq!(reversed(ip("::ffff:192.0.2.99")), "99.2.0.192");
        assert_eq!(
            reversed(ip("2001:db8::567:89ab")),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }
}
