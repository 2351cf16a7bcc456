//! Tests of the blocklist checker: zone parsing, configuration limits, and lookups against fake resolvers.

use super::*;

#[test]
fn defaults_ship_zen_and_dbl() {
    let c = DnsblConfig::default();
    assert!(c.enabled);
    assert_eq!(c.budget_ms, 2000);
    let names: Vec<&str> = c.zones.iter().map(|z| z.zone.as_str()).collect();
    assert_eq!(names, ["zen.spamhaus.org", "dbl.spamhaus.org"]);
    let d = Dnsbl::new(&DnsblConfig {
        nameservers: vec!["127.0.0.1:53".parse().unwrap()],
        ..c
    })
    .unwrap();
    let zen = &d.zones[0];
    assert!(
        matches!(zen.interpret(Ipv4Addr::new(127, 0, 0, 2)), Answer::Listed(n, s) if n == "DNSBL_ZEN_SBL" && s == 3.0)
    );
    assert!(
        matches!(zen.interpret(Ipv4Addr::new(127, 0, 0, 10)), Answer::Listed(n, _) if n == "DNSBL_ZEN_PBL")
    );
    assert!(
        matches!(zen.interpret(Ipv4Addr::new(127, 0, 0, 99)), Answer::Listed(n, s) if n == "DNSBL_ZEN" && s == 2.0)
    );
    assert!(matches!(
        zen.interpret(Ipv4Addr::new(127, 255, 255, 254)),
        Answer::Odd(_)
    ));
    assert!(matches!(
        zen.interpret(Ipv4Addr::new(192, 0, 2, 1)),
        Answer::Odd(_)
    ));
    let dbl = &d.zones[1];
    assert!(
        matches!(dbl.interpret(Ipv4Addr::new(127, 0, 1, 2)), Answer::Listed(n, _) if n == "DNSBL_DBL_SPAM")
    );
    assert!(matches!(
        dbl.interpret(Ipv4Addr::new(127, 0, 1, 255)),
        Answer::Odd(_)
    ));
}

#[test]
fn config_parses_from_toml() {
    let text = r#"
        enabled = true
        nameservers = ["127.0.0.1:5353", "[::1]:53"]
        budget_ms = 500
        max_lookups = 4
        trusted_networks = ["198.51.100.0/24", "192.0.2.1"]
        [[zones]]
        name = "test"
        zone = "bl.example."
        kind = "ip"
        score = 1.5
        codes = { "127.0.0.2" = 3, "127.0.0.3" = { score = 2.5, name = "css" } }
        [[zones]]
        name = "uri"
        zone = "uri.example"
        kind = "domain"
        score = 2.0
        error_codes = []
    "#;
    let c: DnsblConfig = toml::from_str(text).unwrap();
    assert_eq!(c.nameservers.len(), 2);
    assert_eq!(c.zones.len(), 2);
    assert_eq!(c.zones[0].codes["127.0.0.2"], CodeScore::Score(3.0));
    assert_eq!(c.zones[0].error_codes, default_error_codes());
    assert!(c.zones[1].error_codes.is_empty());
    let d = Dnsbl::new(&c).unwrap();
    assert_eq!(d.zones[0].zone, "bl.example");
    assert!(
        matches!(d.zones[0].interpret(Ipv4Addr::new(127, 0, 0, 2)), Answer::Listed(n, s) if n == "DNSBL_TEST" && s == 3.0)
    );
    assert!(
        matches!(d.zones[0].interpret(Ipv4Addr::new(127, 0, 0, 3)), Answer::Listed(n, s) if n == "DNSBL_TEST_CSS" && s == 2.5)
    );
    // Without error codes, 127.255.255.254 is an ordinary (unknown-code) listing.
    assert!(
        matches!(d.zones[1].interpret(Ipv4Addr::new(127, 255, 255, 254)), Answer::Listed(n, _) if n == "DNSBL_URI")
    );
}

#[test]
fn bad_configs_say_what_is_wrong() {
    let base = || DnsblConfig {
        nameservers: vec!["127.0.0.1:53".parse().unwrap()],
        ..DnsblConfig::default()
    };
    let err = |c: DnsblConfig| Dnsbl::new(&c).unwrap_err().to_string();
    assert!(
        err(DnsblConfig {
            budget_ms: 0,
            ..base()
        })
        .contains("budget_ms")
    );
    assert!(
        err(DnsblConfig {
            max_lookups: 100_000,
            ..base()
        })
        .contains("max_lookups")
    );
    assert!(
        err(DnsblConfig {
            trusted_networks: vec!["nope".into()],
            ..base()
        })
        .contains("trusted_networks")
    );
    let mut c = base();
    c.zones[0]
        .codes
        .insert("127.0.0".into(), CodeScore::Score(1.0));
    assert!(err(c).contains("127.0.0"));
    let mut c = base();
    c.zones[0].name = "ZEN-1".into();
    assert!(err(c).contains("ZEN-1"));
    let mut c = base();
    c.zones[1].zone = "bad zone".into();
    assert!(err(c).contains("bad zone"));
    let mut c = base();
    c.zones[1].error_codes = vec!["127.0.1.0/99".into()];
    assert!(err(c).contains("error_codes"));
    assert!(toml::from_str::<DnsblConfig>("budget = 1").is_err());
}

#[test]
fn plan_orders_ips_first_and_caps() {
    let d = Dnsbl::new(&DnsblConfig {
        nameservers: vec!["127.0.0.1:53".parse().unwrap()],
        max_lookups: 3,
        ..DnsblConfig::default()
    })
    .unwrap();
    let view = MessageView {
        headers: vec![
            ("Subject".into(), "x".into()),
            ("Received".into(), "from a (a [10.0.0.1]) by b".into()),
            ("received".into(), "from c (c [192.0.2.99]) by a".into()),
        ],
        url_hosts: vec![
            "www.one.example".into(),
            "one.example".into(),
            "192.0.2.5".into(),
            "two.example".into(),
            "three.example".into(),
        ],
        ..MessageView::default()
    };
    let (queries, capped) = d.plan(&view);
    let names: Vec<String> = queries.iter().map(|q| q.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "99.2.0.192.zen.spamhaus.org.",
            "one.example.dbl.spamhaus.org.",
            "two.example.dbl.spamhaus.org."
        ]
    );
    assert_eq!(capped, ["dbl.spamhaus.org three.example"]);
}

#[test]
fn idn_domains_are_queried_in_punycode() {
    let d = Dnsbl::new(&DnsblConfig {
        nameservers: vec!["127.0.0.1:53".parse().unwrap()],
        ..DnsblConfig::default()
    })
    .unwrap();
    let view = MessageView {
        url_hosts: vec!["shop.münchen.example".into()],
        ..MessageView::default()
    };
    let (queries, _) = d.plan(&view);
    assert_eq!(queries.len(), 1);
    assert_eq!(
        queries[0].name.to_ascii(),
        "xn--mnchen-3ya.example.dbl.spamhaus.org."
    );
    assert_eq!(queries[0].item, "münchen.example");
}

#[test]
fn the_system_resolver_default_never_fails_construction() {
    // Reads /etc/resolv.conf (no traffic); without one, lookups are skipped instead of failing startup.
    assert!(Dnsbl::new(&DnsblConfig::default()).is_ok());
}

#[test]
fn odd_answers_are_logged_once_per_zone_and_answer() {
    let d = Dnsbl::new(&DnsblConfig {
        nameservers: vec!["127.0.0.1:53".parse().unwrap()],
        ..DnsblConfig::default()
    })
    .unwrap();
    let refused = Ipv4Addr::new(127, 255, 255, 254);
    for _ in 0..3 {
        d.log_once(&d.zones[0], refused, "test");
        d.log_once(&d.zones[1], refused, "test");
    }
    assert_eq!(d.logged.lock().unwrap().len(), 2);
}

#[test]
fn hits_merge_per_name_with_bounded_descriptions() {
    let zone = Zone::from_config(&default_zones()[1]).unwrap();
    let mut hits = Vec::new();
    for i in 0..8 {
        add_hit(
            &mut hits,
            "DNSBL_DBL_SPAM".into(),
            3.0,
            &zone,
            &format!("d{i}.example"),
            Ipv4Addr::new(127, 0, 1, 2),
        );
    }
    add_hit(
        &mut hits,
        "DNSBL_DBL_SPAM".into(),
        3.0,
        &zone,
        "d0.example",
        Ipv4Addr::new(127, 0, 1, 2),
    );
    let hits: Vec<Hit> = hits.into_iter().map(PendingHit::into_hit).collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].score, 3.0);
    assert_eq!(
        hits[0].description,
        "dbl.spamhaus.org lists d0.example (127.0.1.2), d1.example (127.0.1.2), d2.example (127.0.1.2), \
         d3.example (127.0.1.2), d4.example (127.0.1.2) and 3 more"
    );
}
