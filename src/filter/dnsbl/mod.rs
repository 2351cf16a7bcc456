//! DNS blocklist lookups (sender IPs, URL domains) with hickory-resolver: parallel, cached, time-budgeted.
//!
//! One message: pick the relay IP(s) from `Received` (see [`address`]) and the registered domains of its URLs (see
//! [`domain`]), ask every configured zone about each in parallel, and stop waiting when the per-message budget runs
//! out. Answers are cached by the resolver for their TTL (negative answers for the zone's SOA minimum), shared by all
//! sessions. A slow, dead or refusing resolver never fails a message: what could not be asked is listed in `skipped`.

pub mod address;
pub mod domain;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use serde::Deserialize;
use tokio::task::JoinSet;

use self::address::Cidr;
use super::Hit;
use crate::message::MessageView;

/// The per-message budget: long enough for a cold lookup through a local caching resolver, short enough that
/// a POP3 client (whose own timeouts are tens of seconds) never notices.
pub const DEFAULT_BUDGET_MS: u64 = 2000;
/// Upper bound accepted for `budget_ms`: the proxy holds a client's RETR while it waits, and POP3 clients commonly
/// give up after 30-60 s of silence.
pub const MAX_BUDGET_MS: u64 = 30_000;
/// Default queries per message: the first relay against IP zones plus ~18 URL domains against one domain zone; spam
/// rarely carries more distinct domains, and more lookups mostly load the blocklist operator.
pub const DEFAULT_MAX_LOOKUPS: usize = 20;
/// Hard cap on `max_lookups`: one message's queries are all in flight at once on one resolver connection.
pub const MAX_LOOKUPS_LIMIT: usize = 256;
/// Default number of responses the shared cache keeps (each is one small A-record answer or negative answer).
pub const DEFAULT_CACHE_SIZE: u64 = 10_000;
/// URL hosts of one message considered at all (the parser already de-duplicates them).
pub const MAX_URL_HOSTS: usize = 1024;
/// Listed items named in one hit's description; the rest are counted.
pub const MAX_DESCRIBED_ITEMS: usize = 5;
/// Distinct (zone, odd answer) pairs remembered so that each is logged once; past this, oddities go unlogged.
pub const MAX_LOGGED_ODDITIES: usize = 1024;
/// Queries per resolver connection in flight at once (hickory's default is 32; several messages can be in flight).
const MAX_ACTIVE_REQUESTS: usize = 4 * MAX_LOOKUPS_LIMIT;

/// `[dnsbl]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsblConfig {
    /// Look messages up in DNS blocklists at all. Per user: `[users.NAME] dnsbl = false`; per run:
    /// `popguard score --no-network`.
    pub enabled: bool,
    /// Resolvers to ask, as `IP:PORT` (UDP, TCP when a reply is truncated). Empty: the system resolver
    /// (`/etc/resolv.conf`). Blocklists refuse queries relayed by big public resolvers: use a local one.
    pub nameservers: Vec<SocketAddr>,
    /// Time budget for all lookups of one message, in milliseconds; lookups still unanswered then are skipped.
    pub budget_ms: u64,
    /// Most DNS queries for one message (relay IPs first, then URL domains in order of appearance).
    pub max_lookups: usize,
    /// Your own relays, as `ADDR/PREFIX` or bare addresses: `Received` hops from these are passed over when looking
    /// for the host that handed the message in. Private, loopback and link-local addresses are always passed over.
    pub trusted_networks: Vec<String>,
    /// How many untrusted relay IPs to look up, starting at the one that handed the message in. Older hops are
    /// written by the sender and forgeable, and policy lists (Spamhaus PBL) are meant for the connecting host only,
    /// so 1 is the safe value.
    pub received_hops: usize,
    /// Responses kept in the shared cache (positive and negative, each for its TTL).
    pub cache_size: u64,
    /// More two-label public suffixes (`"co.example"`) under which the registered domain has three labels.
    pub extra_suffixes: Vec<String>,
    /// Blocklist zones. Giving this key replaces the shipped list (Spamhaus ZEN and DBL) as a whole.
    pub zones: Vec<ZoneConfig>,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig {
            enabled: true,
            nameservers: Vec::new(),
            budget_ms: DEFAULT_BUDGET_MS,
            max_lookups: DEFAULT_MAX_LOOKUPS,
            trusted_networks: Vec::new(),
            received_hops: 1,
            cache_size: DEFAULT_CACHE_SIZE,
            extra_suffixes: Vec::new(),
            zones: default_zones(),
        }
    }
}

/// Everything the blocklist checker is built from, resolved by the config layer.
#[derive(Debug, Clone, Default)]
pub struct DnsblSettings {
    /// The `[dnsbl]` section.
    pub config: DnsblConfig,
    /// Users whose `[users.NAME] dnsbl = false` turns lookups off for their mail.
    pub disabled_users: Vec<String>,
}

/// What a zone lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    /// Sender IPs (IPv4 reversed octets, IPv6 reversed nibbles), e.g. `zen.spamhaus.org`.
    Ip,
    /// Registered domains of URLs, e.g. `dbl.spamhaus.org`.
    Domain,
}

/// `[[dnsbl.zones]]`: one blocklist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Short name used in hit names: `DNSBL_<NAME>` or `DNSBL_<NAME>_<CODE NAME>` (letters, digits, `_`).
    pub name: String,
    /// The DNS zone queried, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// `ip` or `domain`.
    pub kind: ZoneKind,
    /// Score of a listing whose return code is not in `codes`.
    pub score: f64,
    /// Per return code (`"127.0.0.2"`): a score, or `{ score = 3.0, name = "SBL" }` to also name the hit.
    #[serde(default)]
    pub codes: BTreeMap<String, CodeScore>,
    /// Answers that mean "error, query refused" rather than "listed" (addresses or `ADDR/PREFIX`). They count as not
    /// listed, are logged once, and the lookup is reported as skipped.
    #[serde(default = "default_error_codes")]
    pub error_codes: Vec<String>,
}

/// The score for one return code, optionally with a hit-name suffix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CodeScore {
    Score(f64),
    Named(NamedCode),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCode {
    pub score: f64,
    /// Suffix of the hit name, e.g. `SBL` gives `DNSBL_ZEN_SBL`.
    pub name: Option<String>,
}

/// Spamhaus answers 127.255.255.252 (typo in zone name), .254 (query via a public/open resolver) and .255 (excessive
/// queries) instead of a listing; every zone treats that /24 as errors unless it says otherwise.
fn default_error_codes() -> Vec<String> {
    vec!["127.255.255.0/24".into()]
}

fn named(score: f64, name: &str) -> CodeScore {
    CodeScore::Named(NamedCode {
        score,
        name: Some(name.into()),
    })
}

/// The shipped zones: Spamhaus ZEN (IPs) and DBL (domains), with return codes from Spamhaus' documentation.
/// Scores assume the default thresholds (unsure 3, spam 5): a listing for spam sending alone makes a message unsure,
/// together with rules or Bayes it becomes spam. Exploited hosts and malware/phishing domains score higher; the PBL
/// (dynamic ranges that should not send mail directly) and abused legitimate domains score lower.
pub fn default_zones() -> Vec<ZoneConfig> {
    let zen_codes = [
        ("127.0.0.2", named(3.0, "SBL")), // spam source or operation
        ("127.0.0.3", named(2.5, "CSS")), // snowshoe spam
        ("127.0.0.4", named(3.5, "XBL")), // exploited host (bot, proxy); .5-.7 are reserved for XBL
        ("127.0.0.5", named(3.5, "XBL")),
        ("127.0.0.6", named(3.5, "XBL")),
        ("127.0.0.7", named(3.5, "XBL")),
        ("127.0.0.9", named(4.0, "DROP")), // hijacked netblock
        ("127.0.0.10", named(1.5, "PBL")), // ISP-maintained policy block list
        ("127.0.0.11", named(1.5, "PBL")), // Spamhaus-maintained policy block list
    ];
    let dbl_codes = [
        ("127.0.1.2", named(3.0, "SPAM")),
        ("127.0.1.4", named(4.0, "PHISH")),
        ("127.0.1.5", named(4.0, "MALWARE")),
        ("127.0.1.6", named(4.0, "BOTNET")),
        ("127.0.1.102", named(1.0, "ABUSED_SPAM")),
        ("127.0.1.103", named(1.0, "ABUSED_REDIRECTOR")),
        ("127.0.1.104", named(2.5, "ABUSED_PHISH")),
        ("127.0.1.105", named(2.5, "ABUSED_MALWARE")),
        ("127.0.1.106", named(2.5, "ABUSED_BOTNET")),
    ];
    let codes = |list: &[(&str, CodeScore)]| {
        list.iter()
            .map(|(code, score)| ((*code).to_string(), score.clone()))
            .collect()
    };
    vec![
        ZoneConfig {
            name: "ZEN".into(),
            zone: "zen.spamhaus.org".into(),
            kind: ZoneKind::Ip,
            score: 2.0,
            codes: codes(&zen_codes),
            error_codes: default_error_codes(),
        },
        ZoneConfig {
            name: "DBL".into(),
            zone: "dbl.spamhaus.org".into(),
            kind: ZoneKind::Domain,
            score: 2.0,
            codes: codes(&dbl_codes),
            // 127.0.1.255: "IP queries prohibited" (the DBL lists names, never addresses).
            error_codes: vec!["127.0.1.255".into(), "127.255.255.0/24".into()],
        },
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum DnsblError {
    #[error("dnsbl config: {0}")]
    Config(String),
}

/// Hits and skipped lookups for one message.
#[derive(Debug, Clone, Default)]
pub struct DnsblResult {
    pub hits: Vec<Hit>,
    pub skipped: Vec<String>,
}

/// A validated zone.
#[derive(Debug)]
struct Zone {
    hit_name: String,
    zone: String,
    kind: ZoneKind,
    score: f64,
    codes: Vec<(Ipv4Addr, f64, String)>,
    error_codes: Vec<Cidr>,
}

impl Zone {
    fn from_config(z: &ZoneConfig) -> Result<Zone, DnsblError> {
        let bad = |what: String| DnsblError::Config(format!("zone `{}`: {what}", z.name));
        let hit_name = format!("DNSBL_{}", hit_label(&z.name).map_err(&bad)?);
        let zone = z.zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() || Name::from_utf8(format!("{zone}.")).is_err() {
            return Err(bad(format!("`{}` is not a DNS zone name", z.zone)));
        }
        if !z.score.is_finite() {
            return Err(bad("score must be a finite number".into()));
        }
        let mut codes = Vec::new();
        for (code, score) in &z.codes {
            let ip: Ipv4Addr = code.trim().parse().map_err(|_| {
                bad(format!(
                    "return code `{code}` is not an IPv4 address like \"127.0.0.2\""
                ))
            })?;
            let (score, name) = match score {
                CodeScore::Score(s) => (*s, hit_name.clone()),
                CodeScore::Named(n) => match &n.name {
                    Some(suffix) => (
                        n.score,
                        format!("{hit_name}_{}", hit_label(suffix).map_err(&bad)?),
                    ),
                    None => (n.score, hit_name.clone()),
                },
            };
            if !score.is_finite() {
                return Err(bad(format!("score for `{code}` must be a finite number")));
            }
            codes.push((ip, score, name));
        }
        let error_codes = z
            .error_codes
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| bad(format!("error_codes: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Zone {
            hit_name,
            zone,
            kind: z.kind,
            score: z.score,
            codes,
            error_codes,
        })
    }

    /// What one A record in this zone's answer means.
    fn interpret(&self, answer: Ipv4Addr) -> Answer {
        if answer.octets()[0] != 127 {
            return Answer::Odd(
                "outside 127.0.0.0/8, not a blocklist answer (DNS hijacking resolver?)",
            );
        }
        if self
            .error_codes
            .iter()
            .any(|c| c.contains(IpAddr::V4(answer)))
        {
            return Answer::Odd(
                "a documented error code (query refused: use a local, non-public resolver)",
            );
        }
        match self.codes.iter().find(|(ip, _, _)| *ip == answer) {
            Some((_, score, name)) => Answer::Listed(name.clone(), *score),
            None => Answer::Listed(self.hit_name.clone(), self.score),
        }
    }
}

enum Answer {
    Listed(String, f64),
    Odd(&'static str),
}

/// `ZEN` -> `ZEN`; letters, digits and `_` only, upper-cased.
fn hit_label(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "name `{name}` must be letters, digits and `_` (it becomes part of a hit name)"
        ));
    }
    Ok(name.to_ascii_uppercase())
}

/// One planned DNS query.
#[derive(Debug)]
struct Query {
    zone: usize,
    item: String,
    name: Name,
}

/// One message's planned DNS blocklist lookups (see [`Dnsbl::prepare`]).
#[derive(Debug, Default)]
pub struct DnsblLookups {
    queries: Vec<Query>,
    /// Lookups over the per-message cap, as "zone item", reported as skipped.
    capped: Vec<String>,
}

/// The DNS blocklist checker, shared by all sessions (the resolver and its cache are inside).
pub struct Dnsbl {
    /// Err: no resolver could be set up (unreadable system config); every lookup is then skipped with this reason.
    resolver: Result<TokioResolver, String>,
    zones: Vec<Zone>,
    trusted: Vec<Cidr>,
    budget: Duration,
    max_lookups: usize,
    received_hops: usize,
    extra_suffixes: Vec<String>,
    logged: Mutex<HashSet<(String, Ipv4Addr)>>,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl")
            .field("zones", &self.zones)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Dnsbl {
    /// Validates the config and sets up the resolver (no network traffic until the first `check`).
    pub fn new(config: &DnsblConfig) -> Result<Dnsbl, DnsblError> {
        if config.budget_ms == 0 || config.budget_ms > MAX_BUDGET_MS {
            return Err(DnsblError::Config(format!(
                "budget_ms = {} is out of range 1..={MAX_BUDGET_MS}",
                config.budget_ms
            )));
        }
        if config.max_lookups > MAX_LOOKUPS_LIMIT {
            return Err(DnsblError::Config(format!(
                "max_lookups = {} is above the limit {MAX_LOOKUPS_LIMIT}",
                config.max_lookups
            )));
        }
        let zones = config
            .zones
            .iter()
            .map(Zone::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let trusted = config
            .trusted_networks
            .iter()
            .map(|t| {
                Cidr::parse(t).map_err(|e| DnsblError::Config(format!("trusted_networks: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let budget = Duration::from_millis(config.budget_ms);
        let resolver = build_resolver(config, budget);
        if let Err(e) = &resolver {
            tracing::warn!("dnsbl: {e}; every blocklist lookup will be skipped");
        }
        Ok(Dnsbl {
            resolver,
            zones,
            trusted,
            budget,
            max_lookups: config.max_lookups,
            received_hops: config.received_hops,
            extra_suffixes: config.extra_suffixes.clone(),
            logged: Mutex::new(HashSet::new()),
        })
    }

    /// Looks the message's relay IP(s) and URL domains up in every zone, in parallel, within the time budget.
    pub async fn check(&self, view: &MessageView) -> DnsblResult {
        self.lookup(self.prepare(view)).await
    }

    /// What [`Dnsbl::check`] will look up for this message, owned, so the CPU work (reading the view) and the
    /// waiting (the lookups) can run in different places: a blocking thread, then the async runtime.
    pub fn prepare(&self, view: &MessageView) -> DnsblLookups {
        let (queries, capped) = self.plan(view);
        DnsblLookups { queries, capped }
    }

    /// Makes the lookups [`Dnsbl::prepare`] planned, in parallel, within the time budget.
    pub async fn lookup(&self, lookups: DnsblLookups) -> DnsblResult {
        let DnsblLookups { queries, capped } = lookups;
        let mut result = DnsblResult::default();
        if !capped.is_empty() {
            result.skipped.push(format!(
                "dnsbl: lookup cap ({} per message) reached, {} lookups not made: {}",
                self.max_lookups,
                capped.len(),
                summarize(&capped)
            ));
        }
        if queries.is_empty() {
            return result;
        }
        let resolver = match &self.resolver {
            Ok(r) => r,
            Err(e) => {
                result.skipped.push(format!("dnsbl: {e}"));
                return result;
            }
        };
        let answers = self.resolve_all(resolver, &queries).await;
        let mut hits: Vec<PendingHit> = Vec::new();
        for (query, answer) in queries.iter().zip(answers) {
            let zone = &self.zones[query.zone];
            let what = format!("{} {}", zone.zone, query.item);
            let records = match answer {
                None => {
                    result.skipped.push(format!(
                        "dnsbl: {what}: no answer within the {} ms budget",
                        self.budget.as_millis()
                    ));
                    continue;
                }
                Some(Ok(records)) => records,
                Some(Err(e)) if is_not_listed(&e) => continue,
                Some(Err(e)) => {
                    result
                        .skipped
                        .push(format!("dnsbl: {what}: {}", describe_error(&e)));
                    continue;
                }
            };
            let mut odd = Vec::new();
            for code in records {
                match zone.interpret(code) {
                    Answer::Listed(name, score) => {
                        add_hit(&mut hits, name, score, zone, &query.item, code)
                    }
                    Answer::Odd(why) => {
                        self.log_once(zone, code, why);
                        odd.push(code.to_string());
                    }
                }
            }
            if !odd.is_empty() {
                result.skipped.push(format!(
                    "dnsbl: {what}: answer {} is not a listing (error code or not in 127.0.0.0/8), counted as not listed",
                    odd.join(", ")
                ));
            }
        }
        result.hits = hits.into_iter().map(PendingHit::into_hit).collect();
        result
    }

    /// The queries for one message, in priority order, split at the lookup cap: (made, capped as "zone item").
    fn plan(&self, view: &MessageView) -> (Vec<Query>, Vec<String>) {
        let received = view
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("received"))
            .map(|(_, value)| value.as_str());
        let ips = address::sender_ips(received, &self.trusted, self.received_hops);
        let mut domains: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for host in view.url_hosts.iter().take(MAX_URL_HOSTS) {
            if let Some(d) = domain::registered_domain(host, &self.extra_suffixes)
                && seen.insert(d.clone())
            {
                domains.push(d);
            }
        }

        let mut planned: Vec<(usize, String, String)> = Vec::new();
        for ip in &ips {
            let label = address::reversed(*ip);
            for (zi, zone) in self.zones.iter().enumerate() {
                if zone.kind == ZoneKind::Ip {
                    planned.push((zi, ip.to_string(), format!("{label}.{}.", zone.zone)));
                }
            }
        }
        for d in &domains {
            for (zi, zone) in self.zones.iter().enumerate() {
                if zone.kind == ZoneKind::Domain {
                    planned.push((zi, d.clone(), format!("{d}.{}.", zone.zone)));
                }
            }
        }

        let mut queries = Vec::new();
        let mut capped = Vec::new();
        for (zone, item, qname) in planned {
            // IDNA-encodes non-ASCII labels; a name DNS cannot carry is not a lookup at all.
            let Ok(name) = Name::from_utf8(&qname) else {
                continue;
            };
            if queries.len() < self.max_lookups {
                queries.push(Query { zone, item, name });
            } else {
                capped.push(format!("{} {item}", self.zones[zone].zone));
            }
        }
        (queries, capped)
    }

    /// All queries in parallel; `None` for those still unanswered when the budget ran out (they are cancelled).
    async fn resolve_all(
        &self,
        resolver: &TokioResolver,
        queries: &[Query],
    ) -> Vec<Option<Result<Vec<Ipv4Addr>, NetError>>> {
        let deadline = tokio::time::Instant::now() + self.budget;
        let mut answers: Vec<Option<Result<Vec<Ipv4Addr>, NetError>>> =
            queries.iter().map(|_| None).collect();
        let mut tasks = JoinSet::new();
        for (i, q) in queries.iter().enumerate() {
            let resolver = resolver.clone();
            let name = q.name.clone();
            tasks.spawn(async move {
                let answer = resolver.ipv4_lookup(name).await.map(|lookup| {
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::A(a) => Some(a.0),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                });
                (i, answer)
            });
        }
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(Ok((i, answer)))) => {
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(answer);
                    }
                }
                // A lookup task that panicked leaves its slot empty: reported as skipped.
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_elapsed) => {
                    tasks.abort_all();
                    break;
                }
            }
        }
        answers
    }

    /// Logs an error-code or non-127 answer the first time a zone gives it (operators need to hear about a refusing
    /// resolver, once, not per message).
    fn log_once(&self, zone: &Zone, code: Ipv4Addr, why: &str) {
        if let Ok(mut logged) = self.logged.lock()
            && logged.len() < MAX_LOGGED_ODDITIES
            && logged.insert((zone.zone.clone(), code))
        {
            tracing::warn!(
                zone = %zone.zone,
                answer = %code,
                "dnsbl: answer is {why}; treated as not listed (logged once per zone and answer)"
            );
        }
    }
}

/// NXDOMAIN or an empty answer: the item is not listed (the common, cacheable case).
fn is_not_listed(e: &NetError) -> bool {
    matches!(e, NetError::Dns(DnsError::NoRecordsFound(_)))
}

fn describe_error(e: &NetError) -> String {
    match e {
        NetError::Timeout => "resolver timed out".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("resolver answered {code}"),
        other => format!("resolver error: {other}"),
    }
}

fn summarize(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(MAX_DESCRIBED_ITEMS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_DESCRIBED_ITEMS {
        out.push_str(&format!(" and {} more", items.len() - MAX_DESCRIBED_ITEMS));
    }
    out
}

/// A hit being assembled: one per hit name per message (a rule scores once, however many items a zone lists).
struct PendingHit {
    name: String,
    score: f64,
    zone: String,
    /// Listed items with their return codes, in the order found.
    items: Vec<(String, Vec<Ipv4Addr>)>,
}

impl PendingHit {
    fn into_hit(self) -> Hit {
        let described: Vec<String> = self
            .items
            .iter()
            .take(MAX_DESCRIBED_ITEMS)
            .map(|(item, codes)| {
                let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                format!("{item} ({})", codes.join(", "))
            })
            .collect();
        let mut description = format!("{} lists {}", self.zone, described.join(", "));
        if self.items.len() > MAX_DESCRIBED_ITEMS {
            description.push_str(&format!(
                " and {} more",
                self.items.len() - MAX_DESCRIBED_ITEMS
            ));
        }
        Hit {
            name: self.name,
            score: self.score,
            description,
        }
    }
}

fn add_hit(
    hits: &mut Vec<PendingHit>,
    name: String,
    score: f64,
    zone: &Zone,
    item: &str,
    code: Ipv4Addr,
) {
    let hit = match hits.iter_mut().position(|h| h.name == name) {
        Some(i) => &mut hits[i],
        None => {
            hits.push(PendingHit {
                name,
                score,
                zone: zone.zone.clone(),
                items: Vec::new(),
            });
            let last = hits.len() - 1;
            &mut hits[last]
        }
    };
    hit.score = hit.score.max(score);
    match hit.items.iter_mut().find(|(i, _)| i == item) {
        Some((_, codes)) if !codes.contains(&code) => codes.push(code),
        Some(_) => {}
        None => hit.items.push((item.to_string(), vec![code])),
    }
}

fn build_resolver(config: &DnsblConfig, budget: Duration) -> Result<TokioResolver, String> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| {
            format!("cannot read the system resolver configuration ({e}); set dnsbl.nameservers")
        })?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    // One try per query: the budget is the only timeout that matters, and a retry could not finish inside it.
    opts.timeout = budget;
    opts.attempts = 1;
    opts.cache_size = config.cache_size;
    // Blocklist names are never in /etc/hosts; reading it per query is wasted work.
    opts.use_hosts_file = ResolveHosts::Never;
    opts.max_active_requests = MAX_ACTIVE_REQUESTS;
    builder
        .build()
        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))
}

#[cfg(test)]
mod tests;
