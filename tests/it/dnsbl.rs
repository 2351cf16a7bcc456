//! DNS blocklist lookups against a real DNS server on 127.0.0.1 (hickory-server serving test zones): listings,
//! non-listings, refusing zones, IPv6, the shared cache and the time budget. Nothing here leaves the loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use popguard::filter::dnsbl::{
    Dnsbl, DnsblConfig, DnsblResult, ZoneConfig, ZoneKind, default_zones,
};
use popguard::message::MessageView;
use popguard_test_support::dns::{BlackHole, TestDns, TestZone};
use popguard_test_support::with_timeout;

/// Every test finishes well within this, or fails instead of hanging.
const TEST_SECS: u64 = 20;

fn code(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn dbl_code(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, last)
}

/// The shipped zones (same codes and scores), pointed at the test zones `zen.test` and `dbl.test`.
fn shipped_zones_on_test_server() -> Vec<ZoneConfig> {
    let mut zones = default_zones();
    zones[0].zone = "zen.test".into();
    zones[1].zone = "dbl.test".into();
    zones
}

fn config(ns: SocketAddr, zones: Vec<ZoneConfig>) -> DnsblConfig {
    DnsblConfig {
        nameservers: vec![ns],
        zones,
        ..DnsblConfig::default()
    }
}

fn view(received: &[&str], hosts: &[&str]) -> MessageView {
    let mut headers: Vec<(String, String)> = received
        .iter()
        .map(|r| ("Received".to_string(), r.to_string()))
        .collect();
    headers.push(("Subject".into(), "test".into()));
    MessageView {
        headers,
        url_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..MessageView::default()
    }
}

fn hit_names(r: &DnsblResult) -> Vec<&str> {
    r.hits.iter().map(|h| h.name.as_str()).collect()
}

async fn standard_server() -> TestDns {
    TestDns::start(vec![
        TestZone::new("zen.test")
            .with("99.2.0.192", code(2))
            .with("77.2.0.192", code(4))
            .with("77.2.0.192", code(10))
            // 2001:db8::5, reversed nibbles
            .with(
                "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
                code(4),
            ),
        TestZone::new("dbl.test")
            .with("spammer.example", dbl_code(2))
            .with("phisher.co.uk", dbl_code(4)),
    ])
    .await
}

#[tokio::test]
async fn listed_sender_ip_scores_and_private_hops_are_never_asked() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let r = d
            .check(&view(
                &[
                    "from localhost (localhost [127.0.0.1]) by mx.local (Postfix)",
                    "from edge.local (edge.local [10.0.0.2]) by localhost",
                    "from gw (gw [169.254.3.3]) by edge.local",
                    "from bad.example (bad.example [192.0.2.99]) by gw (Postfix); Mon, 1 Jan 2024",
                    "from older (older [198.51.100.1]) by bad.example",
                ],
                &[],
            ))
            .await;
        assert_eq!(hit_names(&r), ["DNSBL_ZEN_SBL"]);
        assert_eq!(r.hits[0].score, 3.0);
        assert_eq!(
            r.hits[0].description,
            "zen.test lists 192.0.2.99 (127.0.0.2)"
        );
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        // Only the first public hop was asked: not the private ones, not the forgeable older one.
        assert_eq!(dns.names(), ["99.2.0.192.zen.test."]);
    })
    .await;
}

#[tokio::test]
async fn unlisted_and_private_ips_do_not_score() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let private_only = view(
            &[
                "from a (a [127.0.0.1]) by b",
                "from c (c [192.168.1.5]) by a",
                "from d (d [IPv6:fe80::1]) by c",
                "from e (e [IPv6:fd12::1]) by d",
                "from f (f [100.64.0.9]) by e",
            ],
            &[],
        );
        let r = d.check(&private_only).await;
        assert!(r.hits.is_empty() && r.skipped.is_empty(), "{r:?}");
        assert_eq!(
            dns.queries(),
            0,
            "private addresses must never be looked up"
        );

        let r = d
            .check(&view(&["from clean (clean [198.51.100.20]) by mx"], &[]))
            .await;
        assert!(r.hits.is_empty() && r.skipped.is_empty(), "{r:?}");
        assert_eq!(dns.names(), ["20.100.51.198.zen.test."]);
    })
    .await;
}

#[tokio::test]
async fn several_codes_for_one_ip_give_one_hit_per_name() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let r = d
            .check(&view(&["from bot (bot [192.0.2.77]) by mx"], &[]))
            .await;
        let mut names = hit_names(&r);
        names.sort();
        assert_eq!(names, ["DNSBL_ZEN_PBL", "DNSBL_ZEN_XBL"]);
        let total: f64 = r.hits.iter().map(|h| h.score).sum();
        assert_eq!(total, 3.5 + 1.5);
    })
    .await;
}

#[tokio::test]
async fn trusted_networks_move_the_lookup_to_the_next_hop() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let message = view(
            &[
                "from relay.isp.example (relay.isp.example [198.51.100.7]) by mx.isp.example",
                "from bad.example (bad.example [192.0.2.99]) by relay.isp.example",
            ],
            &[],
        );
        let untrusting = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        assert!(untrusting.check(&message).await.hits.is_empty());

        let mut cfg = config(dns.addr, shipped_zones_on_test_server());
        cfg.trusted_networks = vec!["198.51.100.0/24".into()];
        let trusting = Dnsbl::new(&cfg).unwrap();
        assert_eq!(
            hit_names(&trusting.check(&message).await),
            ["DNSBL_ZEN_SBL"]
        );
        assert_eq!(
            dns.names(),
            ["7.100.51.198.zen.test.", "99.2.0.192.zen.test."]
        );
    })
    .await;
}

#[tokio::test]
async fn listed_url_domains_score_and_unlisted_do_not() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let r = d
            .check(&view(
                &[],
                &[
                    "click.spammer.example",
                    "www.spammer.example",
                    "login.secure.phisher.co.uk",
                    "clean.example",
                    "192.0.2.5",
                    "localhost",
                ],
            ))
            .await;
        assert_eq!(hit_names(&r), ["DNSBL_DBL_SPAM", "DNSBL_DBL_PHISH"]);
        assert_eq!(
            r.hits[0].description,
            "dbl.test lists spammer.example (127.0.1.2)"
        );
        assert_eq!(r.hits[1].score, 4.0);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        let mut asked = dns.names();
        asked.sort();
        assert_eq!(
            asked,
            [
                "clean.example.dbl.test.",
                "phisher.co.uk.dbl.test.",
                "spammer.example.dbl.test."
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn refusing_zone_and_foreign_answers_do_not_list_anything() {
    with_timeout(TEST_SECS, async {
        // A resolver that is refused by the blocklist answers 127.255.255.254 for every name; a hijacking one answers
        // with an ordinary address. Neither may turn every message into spam.
        let dns = TestDns::start(vec![
            TestZone::new("refusing.test")
                .with("99.2.0.192", Ipv4Addr::new(127, 255, 255, 254))
                .with("20.100.51.198", Ipv4Addr::new(127, 255, 255, 254))
                .with("spammer.example", Ipv4Addr::new(127, 255, 255, 254)),
            TestZone::new("hijack.test").with("99.2.0.192", Ipv4Addr::new(192, 0, 2, 1)),
            TestZone::new("dbl.test").with("spammer.example", dbl_code(255)),
        ])
        .await;
        let zone = |name: &str, zone: &str, kind| ZoneConfig {
            name: name.into(),
            zone: zone.into(),
            kind,
            score: 5.0,
            codes: Default::default(),
            error_codes: vec!["127.255.255.0/24".into(), "127.0.1.255".into()],
        };
        let d = Dnsbl::new(&config(
            dns.addr,
            vec![
                zone("REFUSING", "refusing.test", ZoneKind::Ip),
                zone("HIJACK", "hijack.test", ZoneKind::Ip),
                zone("REFUSINGDOM", "refusing.test", ZoneKind::Domain),
                zone("DBL", "dbl.test", ZoneKind::Domain),
            ],
        ))
        .unwrap();
        for _ in 0..2 {
            let r = d
                .check(&view(
                    &["from bad (bad [192.0.2.99]) by mx"],
                    &["spammer.example"],
                ))
                .await;
            assert!(r.hits.is_empty(), "{:?}", r.hits);
            let joined = r.skipped.join("\n");
            assert_eq!(r.skipped.len(), 4, "{joined}");
            for needle in [
                "refusing.test 192.0.2.99: answer 127.255.255.254",
                "hijack.test 192.0.2.99: answer 192.0.2.1",
                "refusing.test spammer.example: answer 127.255.255.254",
                "dbl.test spammer.example: answer 127.0.1.255",
            ] {
                assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
            }
        }
        let r = d
            .check(&view(&["from ok (ok [198.51.100.20]) by mx"], &[]))
            .await;
        assert!(r.hits.is_empty(), "{:?}", r.hits);
    })
    .await;
}

#[tokio::test]
async fn a_refused_rcode_is_skipped_not_fatal() {
    with_timeout(TEST_SECS, async {
        // The server is not authoritative for `elsewhere.test` and answers REFUSED.
        let dns = standard_server().await;
        let mut zones = shipped_zones_on_test_server();
        zones[0].zone = "elsewhere.test".into();
        let d = Dnsbl::new(&config(dns.addr, zones)).unwrap();
        let r = d
            .check(&view(
                &["from bad (bad [192.0.2.99]) by mx"],
                &["spammer.example"],
            ))
            .await;
        assert_eq!(hit_names(&r), ["DNSBL_DBL_SPAM"]);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        assert!(
            r.skipped[0].starts_with("dnsbl: elsewhere.test 192.0.2.99: resolver"),
            "{:?}",
            r.skipped
        );
    })
    .await;
}

#[tokio::test]
async fn ipv6_senders_are_looked_up_by_reversed_nibbles() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let r = d
            .check(&view(
                &[
                    "from lan (lan [IPv6:fe80::1]) by mx",
                    "from v6.example (v6.example [IPv6:2001:db8::5]) by lan",
                ],
                &[],
            ))
            .await;
        assert_eq!(hit_names(&r), ["DNSBL_ZEN_XBL"]);
        assert!(
            r.hits[0].description.contains("2001:db8::5"),
            "{:?}",
            r.hits
        );
        assert_eq!(
            dns.names(),
            ["5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test."]
        );
        // An unlisted IPv6 sender: asked, not listed.
        let r = d
            .check(&view(&["from v6 (v6 [2001:db8::6]) by mx"], &[]))
            .await;
        assert!(r.hits.is_empty() && r.skipped.is_empty(), "{r:?}");
        assert_eq!(dns.queries(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_cache_answers_repeats_positive_and_negative() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let message = view(
            &["from bad (bad [192.0.2.99]) by mx"],
            &["spammer.example", "clean.example"],
        );
        let first = d.check(&message).await;
        assert_eq!(hit_names(&first), ["DNSBL_ZEN_SBL", "DNSBL_DBL_SPAM"]);
        assert_eq!(dns.queries(), 3);
        let other = view(&["from ok (ok [198.51.100.20]) by mx"], &["clean.example"]);
        let _ = d.check(&other).await;
        assert_eq!(
            dns.queries(),
            4,
            "clean.example (negative) came from the cache"
        );
        for _ in 0..3 {
            let again = d.check(&message).await;
            assert_eq!(hit_names(&again), hit_names(&first));
            assert_eq!(again.hits, first.hits);
        }
        assert_eq!(dns.queries(), 4, "repeats must be answered from the cache");
    })
    .await;
}

#[tokio::test]
async fn cached_answers_expire_with_their_ttl() {
    with_timeout(TEST_SECS, async {
        let zones = vec![
            TestZone::new("zen.test").with("99.2.0.192", code(2)),
            TestZone::new("dbl.test"),
        ];
        let dns = TestDns::start_with_ttl(zones, 1).await;
        let d = Dnsbl::new(&config(dns.addr, shipped_zones_on_test_server())).unwrap();
        let message = view(&["from bad (bad [192.0.2.99]) by mx"], &["clean.example"]);
        assert_eq!(hit_names(&d.check(&message).await), ["DNSBL_ZEN_SBL"]);
        assert_eq!(hit_names(&d.check(&message).await), ["DNSBL_ZEN_SBL"]);
        assert_eq!(dns.queries(), 2, "second check answered from the cache");
        // Both the listing and the NXDOMAIN (SOA minimum 1 s) expire.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(hit_names(&d.check(&message).await), ["DNSBL_ZEN_SBL"]);
        assert_eq!(dns.queries(), 4, "expired answers are asked again");
    })
    .await;
}

#[tokio::test]
async fn a_resolver_that_never_answers_costs_at_most_the_budget() {
    with_timeout(TEST_SECS, async {
        let hole = BlackHole::start().await;
        let mut cfg = config(hole.addr, shipped_zones_on_test_server());
        cfg.budget_ms = 300;
        let d = Dnsbl::new(&cfg).unwrap();
        let message = view(
            &["from bad (bad [192.0.2.99]) by mx"],
            &["spammer.example", "clean.example"],
        );
        let started = Instant::now();
        let r = d.check(&message).await;
        let elapsed = started.elapsed();
        assert!(r.hits.is_empty());
        assert_eq!(r.skipped.len(), 3, "{:?}", r.skipped);
        assert!(
            r.skipped
                .iter()
                .all(|s| s.contains("no answer within the 300 ms budget")),
            "{:?}",
            r.skipped
        );
        // The budget bounds the wait; the margin absorbs scheduling on a loaded machine.
        assert!(
            elapsed < Duration::from_millis(300 + 700),
            "took {elapsed:?}"
        );
        assert!(hole.received() >= 1, "the lookups were sent");
    })
    .await;
}

#[tokio::test]
async fn the_lookup_cap_bounds_queries_per_message() {
    with_timeout(TEST_SECS, async {
        let dns = standard_server().await;
        let mut cfg = config(dns.addr, shipped_zones_on_test_server());
        cfg.max_lookups = 2;
        let d = Dnsbl::new(&cfg).unwrap();
        let r = d
            .check(&view(
                &["from bad (bad [192.0.2.99]) by mx"],
                &["a.example", "b.example", "c.example", "spammer.example"],
            ))
            .await;
        assert_eq!(hit_names(&r), ["DNSBL_ZEN_SBL"]);
        assert_eq!(dns.queries(), 2);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        assert!(
            r.skipped[0].contains("lookup cap (2 per message) reached, 3 lookups not made"),
            "{:?}",
            r.skipped
        );
    })
    .await;
}
