//! Which URL domains are looked up: each URL host reduced to its registered domain ("eTLD+1").
//!
//! Heuristic instead of the full Public Suffix List (~10k rules): the registered domain is the last two labels, or the
//! last three when the last two are a well-known multi-label public suffix from [`MULTI_LABEL_SUFFIXES`] (country
//! second levels such as `co.uk`, and free-hosting suffixes such as `github.io` whose subdomains belong to different
//! people). Domain blocklists (Spamhaus DBL, SURBL, URIBL) list registered domains, so a missed suffix costs at worst
//! one lookup of a name that is never listed; `dnsbl.extra_suffixes` adds more.

/// RFC 1035 §2.3.4: a name is at most 255 octets on the wire (253 as text), a label at most 63.
pub const MAX_NAME_LEN: usize = 253;
pub const MAX_LABEL_LEN: usize = 63;

/// Multi-label public suffixes, sorted (binary search). Country second levels with many registrations, plus hosting
/// suffixes under which each subdomain is a separate customer.
pub const MULTI_LABEL_SUFFIXES: &[&str] = &[
    "ac.il",
    "ac.in",
    "ac.jp",
    "ac.kr",
    "ac.nz",
    "ac.th",
    "ac.uk",
    "ac.za",
    "appspot.com",
    "asn.au",
    "azurewebsites.net",
    "blogspot.com",
    "br.com",
    "cloudfront.net",
    "cn.com",
    "co.id",
    "co.il",
    "co.in",
    "co.jp",
    "co.ke",
    "co.kr",
    "co.nz",
    "co.th",
    "co.tz",
    "co.ug",
    "co.uk",
    "co.ve",
    "co.za",
    "co.zw",
    "com.ar",
    "com.au",
    "com.bd",
    "com.br",
    "com.cn",
    "com.co",
    "com.cy",
    "com.do",
    "com.ec",
    "com.eg",
    "com.gh",
    "com.gt",
    "com.hk",
    "com.kw",
    "com.lb",
    "com.mt",
    "com.mx",
    "com.my",
    "com.ng",
    "com.np",
    "com.pa",
    "com.pe",
    "com.ph",
    "com.pk",
    "com.pl",
    "com.pr",
    "com.py",
    "com.qa",
    "com.ru",
    "com.sa",
    "com.sg",
    "com.sv",
    "com.tr",
    "com.tw",
    "com.ua",
    "com.uy",
    "com.ve",
    "com.vn",
    "de.com",
    "edu.au",
    "edu.cn",
    "eu.com",
    "firebaseapp.com",
    "github.io",
    "gitlab.io",
    "go.jp",
    "gov.au",
    "gov.br",
    "gov.cn",
    "gov.in",
    "gov.uk",
    "gov.za",
    "gr.jp",
    "herokuapp.com",
    "id.au",
    "in.th",
    "ltd.uk",
    "me.uk",
    "ne.jp",
    "net.au",
    "net.br",
    "net.cn",
    "net.in",
    "net.nz",
    "net.pl",
    "net.ua",
    "netlify.app",
    "nhs.uk",
    "or.id",
    "or.jp",
    "or.kr",
    "org.au",
    "org.br",
    "org.cn",
    "org.il",
    "org.in",
    "org.mx",
    "org.nz",
    "org.pl",
    "org.ru",
    "org.tr",
    "org.uk",
    "org.za",
    "pages.dev",
    "plc.uk",
    "ru.com",
    "sch.uk",
    "uk.com",
    "uk.net",
    "us.com",
    "vercel.app",
    "web.app",
    "workers.dev",
];

/// The registered domain of a URL host, lower-cased, or None for IP literals and names that cannot be queried.
pub fn registered_domain(host: &str, extra_suffixes: &[String]) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_lowercase();
    if host.is_empty() || host.len() > MAX_NAME_LEN || host.starts_with('[') {
        return None;
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| !valid_label(l)) {
        return None;
    }
    // An all-numeric TLD is an IP address written oddly (`0x7f.1`, `1.2.3`): no registry behind it.
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let last_two = labels[labels.len() - 2..].join(".");
    let is_suffix = MULTI_LABEL_SUFFIXES
        .binary_search(&last_two.as_str())
        .is_ok()
        || extra_suffixes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&last_two));
    let keep = if is_suffix { 3 } else { 2 };
    if labels.len() < keep {
        return None;
    }
    Some(labels[labels.len() - keep..].join("."))
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_table_is_sorted_and_lower_case() {
        assert!(MULTI_LABEL_SUFFIXES.windows(2).all(|w| w[0] < w[1]));
        assert!(
            MULTI_LABEL_SUFFIXES
                .iter()
                .all(|s| s.to_lowercase() == *s && s.split('.').count() == 2)
        );
    }

    proptest::proptest! {
        #[test]
        fn registered_domain_is_a_suffix_of_the_host(host in "\\PC{0,80}") {
            if let Some(d) = registered_domain(&host, &[]) {
                let lower = host.trim().trim_end_matches('.').to_lowercase();
                proptest::prop_assert!(lower.ends_with(&d), "{} -> {}", host, d);
                proptest::prop_assert!(d.split('.').count() >= 2);
            }
        }
    }

    #[test]
    fn reduces_hosts_to_registered_domains() {
        let extra = vec!["example.test".to_string()];
        let cases = [
            ("www.example.com", Some("example.com")),
            ("Example.COM.", Some("example.com")),
            ("a.b.c.shop.co.uk", Some("shop.co.uk")),
            ("co.uk", None),
            ("evil.github.io", Some("evil.github.io")),
            ("x.evil.blogspot.com", Some("evil.blogspot.com")),
            ("spam-domain.test", Some("spam-domain.test")),
            ("deep.x.example.test", Some("x.example.test")),
            ("münchen.de", Some("münchen.de")),
            ("192.0.2.1", None),
            ("[2001:db8::1]", None),
            ("1.2.3", None),
            ("localhost", None),
            ("", None),
            ("bad..example.com", None),
            ("bad_ok.example.com", Some("example.com")),
            ("sp ace.example.com", None),
        ];
        for (host, want) in cases {
            assert_eq!(registered_domain(host, &extra).as_deref(), want, "{host}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(registered_domain(&long, &[]), None);
    }
}
