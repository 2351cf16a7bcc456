//! Sender IPs from Received fields (RFC 5321 §4.4 "from" clause): the address in brackets that the receiving
//! relay saw the connection come from.

use std::net::IpAddr;

/// The first `[ip]` (or `[IPv6:ip]`) between the leading `from` and the ` by ` clause of a Received field (as
/// decoded text, folds unfolded).
pub(super) fn from_ip(value: &str) -> Option<IpAddr> {
    let lower = value.to_ascii_lowercase();
    let rest = lower.trim_start().strip_prefix("from")?;
    let from_clause = match rest.find(" by ") {
        Some(end) => &rest[..end],
        None => rest,
    };
    let mut search = from_clause;
    while let Some(open) = search.find('[') {
        let after = &search[open + 1..];
        let close = after.find(']')?;
        let inner = after[..close].trim();
        let inner = inner.strip_prefix("ipv6:").unwrap_or(inner);
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Some(ip);
        }
        search = &after[close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bracketed_ips_in_the_from_clause_only() {
        assert_eq!(
            from_ip("from x (y [10.1.2.3]) by z"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            from_ip("from x ([IPv6:2001:db8::1]) by z"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(from_ip("from x by z ([10.1.2.3])"), None);
        assert_eq!(from_ip("by z ([10.1.2.3])"), None);
        assert_eq!(
            from_ip("from x [not-an-ip] [192.0.2.9]"),
            Some("192.0.2.9".parse().unwrap())
        );
        assert_eq!(from_ip("from x [unterminated"), None);
    }
}
