//! DNSBL lookup cost: 1000 messages checked against a local hickory-server (the test-support crate's DNS server), cold and warm cache,
//! sequentially (added latency per message, p50/p99) and with several messages in flight (throughput). Baseline: the
//! same queries issued one after another through a bare hickory resolver, as a naive filter would.
//!
//! Run: `cargo bench --profile dev --bench dnsbl` (or `cargo test --bench dnsbl`). Only 127.0.0.1 is contacted.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use popguard::filter::dnsbl::{Dnsbl, DnsblConfig, default_zones};
use popguard::message::MessageView;
use popguard_test_support::dns::{TestDns, TestZone};

const MESSAGES: usize = 1000;
/// Distinct URL domains per message (plus one domain every message shares).
const DOMAINS_PER_MESSAGE: usize = 3;
/// Every tenth relay IP and URL domain is listed.
const LISTED_EVERY: usize = 10;
/// Messages in flight in the concurrent run (several POP3 sessions scoring at once).
const IN_FLIGHT: usize = 16;

fn relay_ip(i: usize) -> Ipv4Addr {
    // Public-looking addresses (private ones are never looked up); only the local test server is ever asked.
    Ipv4Addr::new(203, (i / 250) as u8, 113, (i % 250) as u8 + 1)
}

fn domain(i: usize, j: usize) -> String {
    format!("m{i}-{j}.example")
}

fn message(i: usize) -> MessageView {
    let ip = relay_ip(i);
    let mut hosts: Vec<String> = (0..DOMAINS_PER_MESSAGE)
        .map(|j| format!("www.{}", domain(i, j)))
        .collect();
    hosts.push("shared-newsletter.example".into());
    MessageView {
        headers: vec![
            (
                "Received".into(),
                "from localhost (localhost [127.0.0.1]) by mx.local".into(),
            ),
            (
                "Received".into(),
                format!("from sender{i}.example (sender{i}.example [{ip}]) by mx.local"),
            ),
        ],
        url_hosts: hosts,
        ..MessageView::default()
    }
}

async fn server() -> TestDns {
    let mut zen = TestZone::new("zen.test");
    let mut dbl = TestZone::new("dbl.test");
    for i in (0..MESSAGES).step_by(LISTED_EVERY) {
        let [a, b, c, d] = relay_ip(i).octets();
        zen = zen.with(&format!("{d}.{c}.{b}.{a}"), Ipv4Addr::new(127, 0, 0, 2));
        dbl = dbl.with(&domain(i, 0), Ipv4Addr::new(127, 0, 1, 2));
    }
    TestDns::start(vec![zen, dbl]).await
}

fn dnsbl(ns: SocketAddr) -> Dnsbl {
    let mut zones = default_zones();
    zones[0].zone = "zen.test".into();
    zones[1].zone = "dbl.test".into();
    Dnsbl::new(&DnsblConfig {
        nameservers: vec![ns],
        zones,
        ..DnsblConfig::default()
    })
    .expect("bench config")
}

struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
    hits: usize,
    skipped: usize,
}

impl Run {
    fn report(&self, label: &str, queries: usize) {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "{label:<34} {:>9.0} msg/s   p50 {:>8.1} µs   p99 {:>8.1} µs   hits {:>4}   skipped {:>3}   DNS queries {:>5}",
            MESSAGES as f64 / self.elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
            self.hits,
            self.skipped,
            queries
        );
    }
}

async fn sequential(d: &Dnsbl, messages: &[MessageView]) -> Run {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(messages.len());
    let (mut hits, mut skipped) = (0, 0);
    for m in messages {
        let t = Instant::now();
        let r = d.check(m).await;
        latencies.push(t.elapsed());
        hits += r.hits.len();
        skipped += r.skipped.len();
    }
    Run {
        elapsed: started.elapsed(),
        latencies,
        hits,
        skipped,
    }
}

async fn concurrent(d: Arc<Dnsbl>, messages: Arc<Vec<MessageView>>) -> Run {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let (d, messages) = (d.clone(), messages.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for m in messages.iter().skip(worker).step_by(IN_FLIGHT) {
                let t = Instant::now();
                let r = d.check(m).await;
                out.push((t.elapsed(), r.hits.len(), r.skipped.len()));
            }
            out
        });
    }
    let mut run = Run {
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        hits: 0,
        skipped: 0,
    };
    while let Some(Ok(results)) = tasks.join_next().await {
        for (l, h, s) in results {
            run.latencies.push(l);
            run.hits += h;
            run.skipped += s;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// The naive baseline: the same names, one query after another, through a bare hickory resolver with no cache.
async fn naive_sequential(ns: SocketAddr, messages: &[MessageView]) -> Run {
    let mut udp = ConnectionConfig::udp();
    udp.port = ns.port();
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(ns.ip(), true, vec![udp])]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().cache_size = 0;
    let resolver = builder.build().expect("resolver");
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(messages.len());
    let mut hits = 0;
    for (i, m) in messages.iter().enumerate() {
        let [a, b, c, d] = relay_ip(i).octets();
        let mut names = vec![format!("{d}.{c}.{b}.{a}.zen.test.")];
        for h in &m.url_hosts {
            let registered = h.strip_prefix("www.").unwrap_or(h);
            names.push(format!("{registered}.dbl.test."));
        }
        let t = Instant::now();
        for n in names {
            if resolver.ipv4_lookup(n).await.is_ok() {
                hits += 1;
            }
        }
        latencies.push(t.elapsed());
    }
    Run {
        elapsed: started.elapsed(),
        latencies,
        hits,
        skipped: 0,
    }
}

#[tokio::main]
async fn main() {
    let dns = server().await;
    let messages: Vec<MessageView> = (0..MESSAGES).map(message).collect();
    println!(
        "DNSBL: {MESSAGES} messages, each 1 relay IP + {} URL domains (1 shared), 1 in {LISTED_EVERY} listed; \
         hickory-server on {}",
        DOMAINS_PER_MESSAGE + 1,
        dns.addr
    );

    let before = dns.queries();
    let naive = naive_sequential(dns.addr, &messages).await;
    naive.report("naive sequential, no cache", dns.queries() - before);

    let d = dnsbl(dns.addr);
    let before = dns.queries();
    let cold = sequential(&d, &messages).await;
    cold.report("popguard sequential, cold cache", dns.queries() - before);
    let before = dns.queries();
    let warm = sequential(&d, &messages).await;
    warm.report("popguard sequential, warm cache", dns.queries() - before);

    let d = Arc::new(dnsbl(dns.addr));
    let shared = Arc::new(messages);
    let before = dns.queries();
    let cold_c = concurrent(d.clone(), shared.clone()).await;
    cold_c.report(
        &format!("popguard {IN_FLIGHT} in flight, cold"),
        dns.queries() - before,
    );
    let before = dns.queries();
    let warm_c = concurrent(d, shared).await;
    warm_c.report(
        &format!("popguard {IN_FLIGHT} in flight, warm"),
        dns.queries() - before,
    );

    let median = |r: &Run| {
        let mut l = r.latencies.clone();
        l.sort();
        l[l.len() / 2].as_secs_f64()
    };
    println!(
        "ratio naive/popguard p50 latency (cold): {:.2}x; cold/warm p50: {:.1}x",
        median(&naive) / median(&cold),
        median(&cold) / median(&warm)
    );
}
