//! The first scan of a session: learn the upstream's LIST and UIDL, fetch what scoring needs (pipelined when the
//! upstream allows), and score in parallel with the download.
//!
//! Memory stays bounded whatever the maildrop: one prefix of at most `scan_limit` bytes per message being read or
//! scored ([`MAX_PARALLEL_SCORING`] at once); the rest of each message streams past and is dropped.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::ScanMethod;
use super::tag::{self, Eol, HeadEnd};
use super::upstream::{Upstream, UpstreamError};
use crate::filter::{Filter, LocalScore, ScoreOptions, Verdict};
use crate::pop3::{Command, listing};
use crate::store::quarantine::Quarantine;

pub use crate::pop3::limits::MAX_LISTING_BYTES as MAX_LISTING;
/// Scan commands in flight to a pipelining upstream: enough to hide the round trip, and so few that the commands
/// (about 16 bytes each) always fit the socket buffers, so neither side can block the other (RFC 2449 §6.6).
pub const PIPELINE_WINDOW: usize = 16;
/// Messages scored at once per session: scoring is CPU work, so more than the cores buys nothing, and each one
/// holds a prefix of up to `scan_limit` bytes.
pub const MAX_PARALLEL_SCORING: usize = 8;

/// A scoring function: user and message bytes in, verdict out.
pub type ScoreFn = dyn Fn(Option<&str>, &[u8]) -> Verdict + Send + Sync;

/// What scores a message: the real filter, or a fixed function (tests and benchmarks that must not depend on
/// rule tuning).
#[derive(Clone)]
pub enum Scorer {
    Filter(Arc<Filter>),
    Func(Arc<ScoreFn>),
}

/// Scoring calls running at once in the whole process: scoring is CPU work, so more than the cores only queues it
/// on the blocking pool.
static SCORING_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())));

impl Scorer {
    /// Scores on the blocking pool (at most one call per core at once), never on an async worker: a long score
    /// must not stall the other sessions' I/O on the same worker.
    pub async fn score(&self, user: Option<&str>, message: &[u8]) -> Verdict {
        // The permit moves into the blocking task: a caller that gives up does not free the slot while its
        // score still runs.
        let permit = SCORING_SLOTS.acquire().await.ok();
        let scorer = self.clone();
        let user = user.map(str::to_owned);
        let message = message.to_vec();
        let scored = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match &scorer {
                // The CPU part only: the DNS blocklist lookups are awaited below, on the runtime, so a slow
                // resolver holds no scoring slot and lookups of many messages overlap.
                Scorer::Filter(f) => {
                    let local = f.score_local(user.as_deref(), &message, &ScoreOptions::default());
                    // Auto-learning rewrites and fsyncs a token file: here, on the blocking thread, never on an
                    // async worker.
                    if let Err(e) = f.autolearn() {
                        tracing::warn!("bayes: auto-learned messages not saved: {e}");
                    }
                    Scored::Local(f.clone(), local)
                }
                Scorer::Func(f) => Scored::Done(f(user.as_deref(), &message)),
            }
        })
        .await;
        match scored {
            Ok(Scored::Done(v)) => v,
            Ok(Scored::Local(f, local)) => f.finish(local).await,
            // A panicking scorer fails the caller as it would have inline (the scan reports it per message).
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("scoring task cancelled: {e}"),
        }
    }
}

/// What the blocking part of [`Scorer::score`] hands back to the async part.
enum Scored {
    Done(Verdict),
    Local(Arc<Filter>, LocalScore),
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scorer::Filter(_) => "Scorer::Filter",
            Scorer::Func(_) => "Scorer::Func",
        })
    }
}

/// The upstream's view of the maildrop.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// `(upstream number, size)` from LIST.
    pub sizes: Vec<(u32, u64)>,
    /// Unique ids from UIDL, only those that identify a message (valid and not repeated); `None` when the upstream
    /// has no UIDL. A listed message missing here has no identity (see [`crate::proxy::session`]'s plan).
    pub uidls: Option<HashMap<u32, String>>,
}

/// Asks for UIDL and LIST (both at once to a pipelining upstream).
pub async fn fetch_listing<T>(up: &mut Upstream<T>) -> Result<Listing, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pipelined = up.pipelining();
    if pipelined {
        up.queue(&Command::Uidl(None));
        up.queue(&Command::List(None));
        up.flush().await?;
    } else {
        up.send(&Command::Uidl(None)).await?;
    }
    let r = up.response().await?;
    let uidls = if r.is_ok() {
        Some(parse_uidl(&up.multiline(MAX_LISTING).await?))
    } else {
        None
    };
    if !pipelined {
        up.send(&Command::List(None)).await?;
    }
    let r = up.response().await?;
    if !r.is_ok() {
        return Err(UpstreamError::Refused {
            command: "LIST",
            answer: r.to_string(),
        });
    }
    let sizes = parse_list(&up.multiline(MAX_LISTING).await?);
    Ok(Listing { sizes, uidls })
}

/// Listing problems logged one by one per answer; the rest are only counted, so a hostile upstream cannot flood
/// the log with one line per message.
pub const MAX_LOGGED_PROBLEMS: usize = 10;

/// `n size` lines ([`crate::pop3::listing`] policy); lines it refuses are left out (the message then stays
/// invisible rather than mis-sized).
pub fn parse_list(body: &[u8]) -> Vec<(u32, u64)> {
    let listing = listing::parse_list(body);
    log_problems("LIST", &listing.problems, |m| tracing::debug!("{m}"));
    listing.entries
}

/// `n uid` lines ([`crate::pop3::listing`] policy): an invalid or repeated unique-id identifies no message; the
/// session scores such a message every time and never hides it on a cached verdict (the plan's module docs).
pub fn parse_uidl(body: &[u8]) -> HashMap<u32, String> {
    let listing = listing::parse_uidl(body);
    log_problems("UIDL", &listing.problems, |m| tracing::warn!("{m}"));
    listing.entries.into_iter().collect()
}

fn log_problems(what: &str, problems: &[listing::Problem], emit: fn(&str)) {
    for p in problems.iter().take(MAX_LOGGED_PROBLEMS) {
        emit(&format!("upstream {what}: {p}"));
    }
    let more = problems.len().saturating_sub(MAX_LOGGED_PROBLEMS);
    if more > 0 {
        emit(&format!("upstream {what}: {more} more lines like these"));
    }
}

/// The cache key of a message without UIDL: a digest of its header (as far as tagging reads it).
pub fn digest_key(prefix: &[u8], end: HeadEnd, head_cap: usize) -> String {
    let region = match end {
        HeadEnd::Found(n) => &prefix[..n.min(prefix.len())],
        _ => &prefix[..prefix.len().min(head_cap)],
    };
    let d = Sha256::digest(region);
    let mut s = String::from("digest:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// How the scan runs.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub method: ScanMethod,
    pub top_lines: u32,
    pub scan_limit: usize,
    pub head_cap: usize,
    /// Subject prefix, to compute the Subject edit's size while the header is at hand.
    pub subject_prefix: String,
    /// Keep the scanned prefix of spam in the quarantine (hide mode).
    pub quarantine: Option<Quarantine>,
    pub parallel: usize,
    /// When to stop asking for more messages (`proxy.scan_budget`); the rest are [`Outcome::Deferred`].
    pub deadline: Option<std::time::Instant>,
}

/// One message to scan.
#[derive(Debug, Clone)]
pub struct ScanJob {
    pub upstream: u32,
    pub uidl: Option<String>,
}

/// From and Subject of a spam message, for the quarantine listing.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub from: String,
    pub subject: String,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Scored {
        upstream: u32,
        key: String,
        verdict: Verdict,
        subject_delta: u32,
        summary: Option<Summary>,
    },
    /// No UIDL, but the header digest is in the verdict cache.
    Known { upstream: u32, key: String },
    /// The upstream refused to send it.
    Failed { upstream: u32, reason: String },
    /// Not scanned: the scan budget ran out first. Left out of this session, untouched upstream.
    Deferred { upstream: u32 },
}

struct TaskOut {
    outcome: Outcome,
    spam_prefix: Option<(String, Vec<u8>)>,
}

/// Fetches and scores every job; `known` says whether a digest key is already cached.
pub async fn scan<T>(
    up: &mut Upstream<T>,
    filter: &Scorer,
    user: &str,
    jobs: Vec<ScanJob>,
    settings: &ScanSettings,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Outcome>, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let use_top = settings.method == ScanMethod::Top && up.may_have_top();
    let command = |u: u32, top: bool| {
        if top {
            Command::Top(u, settings.top_lines)
        } else {
            Command::Retr(u)
        }
    };
    let window = if up.pipelining() { PIPELINE_WINDOW } else { 1 };
    let parallel = settings.parallel.clamp(1, MAX_PARALLEL_SCORING);
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut tasks: JoinSet<TaskOut> = JoinSet::new();
    let mut retry = Vec::new();
    let mut scratch = Vec::with_capacity(crate::pop3::stream::READ_BUFFER);

    let out_of_time = || {
        settings
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
    };
    let mut sent = 0;
    while sent < jobs.len() && sent < window {
        up.queue(&command(jobs[sent].upstream, use_top));
        sent += 1;
    }
    up.flush().await?;
    for (i, job) in jobs.iter().enumerate() {
        if i >= sent {
            // Only reached once the budget stopped the requests: every answer asked for has been read.
            outcomes.push(Outcome::Deferred {
                upstream: job.upstream,
            });
            continue;
        }
        let r = up.response().await?;
        let fetched = if r.is_ok() {
            Some(read_prefix(up, settings.scan_limit, &mut scratch).await?)
        } else {
            None
        };
        if sent < jobs.len() && !out_of_time() {
            up.queue(&command(jobs[sent].upstream, use_top));
            sent += 1;
            up.flush().await?;
        }
        match fetched {
            Some((prefix, complete)) => {
                start_scoring(
                    job,
                    prefix,
                    complete,
                    filter,
                    user,
                    settings,
                    known,
                    &mut tasks,
                    &mut outcomes,
                );
                while tasks.len() >= parallel {
                    if let Some(done) = tasks.join_next().await {
                        collect(done, settings, &mut outcomes).await;
                    }
                }
            }
            None if use_top => retry.push(job.clone()),
            None => outcomes.push(Outcome::Failed {
                upstream: job.upstream,
                reason: r.to_string(),
            }),
        }
    }
    // Upstreams without TOP (or refusing it for one message) get RETR, one at a time.
    for job in &retry {
        if out_of_time() {
            outcomes.push(Outcome::Deferred {
                upstream: job.upstream,
            });
            continue;
        }
        let r = up.command(&Command::Retr(job.upstream)).await?;
        if !r.is_ok() {
            outcomes.push(Outcome::Failed {
                upstream: job.upstream,
                reason: r.to_string(),
            });
            continue;
        }
        let (prefix, complete) = read_prefix(up, settings.scan_limit, &mut scratch).await?;
        start_scoring(
            job,
            prefix,
            complete,
            filter,
            user,
            settings,
            known,
            &mut tasks,
            &mut outcomes,
        );
        while tasks.len() >= parallel {
            if let Some(done) = tasks.join_next().await {
                collect(done, settings, &mut outcomes).await;
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, settings, &mut outcomes).await;
    }
    Ok(outcomes)
}

/// Reads a multi-line body, keeping its first `limit` bytes; `complete` is false when more was dropped.
async fn read_prefix<T>(
    up: &mut Upstream<T>,
    limit: usize,
    scratch: &mut Vec<u8>,
) -> Result<(Vec<u8>, bool), UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut prefix = Vec::new();
    let mut complete = true;
    loop {
        scratch.clear();
        let done = up.chunk(scratch).await?;
        let room = limit.saturating_sub(prefix.len());
        if scratch.len() > room {
            complete = false;
        }
        prefix.extend_from_slice(&scratch[..scratch.len().min(room)]);
        if done {
            return Ok((prefix, complete));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_scoring(
    job: &ScanJob,
    prefix: Vec<u8>,
    complete: bool,
    filter: &Scorer,
    user: &str,
    settings: &ScanSettings,
    known: &(dyn Fn(&str) -> bool + Sync),
    tasks: &mut JoinSet<TaskOut>,
    outcomes: &mut Vec<Outcome>,
) {
    let end = tag::head_end(&prefix, settings.head_cap, complete);
    let key = match &job.uidl {
        Some(u) => u.clone(),
        None => {
            let k = digest_key(&prefix, end, settings.head_cap);
            if known(&k) {
                outcomes.push(Outcome::Known {
                    upstream: job.upstream,
                    key: k,
                });
                return;
            }
            k
        }
    };
    let filter = filter.clone();
    let user = user.to_owned();
    let upstream = job.upstream;
    let head_cap = settings.head_cap;
    let subject_prefix = settings.subject_prefix.clone();
    let keep_spam = settings.quarantine.is_some();
    tasks.spawn(async move {
        let (verdict, subject_delta) =
            score_prefix(&filter, &user, &prefix, end, head_cap, &subject_prefix).await;
        let spam = verdict.is_spam();
        let summary = spam.then(|| summarize(&prefix));
        let spam_prefix = (spam && keep_spam).then(|| (key.clone(), prefix));
        TaskOut {
            outcome: Outcome::Scored {
                upstream,
                key,
                verdict,
                subject_delta,
                summary,
            },
            spam_prefix,
        }
    });
}

/// Scores a scanned prefix, and measures the Subject edit a spam tag would make to it (header end `end`, found with
/// `head_cap`): the first scan, and `tag_sizing = "fixed"` scoring on retrieval, both go through here.
pub async fn score_prefix(
    filter: &Scorer,
    user: &str,
    prefix: &[u8],
    end: HeadEnd,
    head_cap: usize,
    subject_prefix: &str,
) -> (Verdict, u32) {
    let verdict = filter.score(Some(user), prefix).await;
    let edit = tag::subject_edit(prefix, end, head_cap, subject_prefix, Eol::Crlf);
    (verdict, u32::try_from(edit.len()).unwrap_or(u32::MAX))
}

async fn collect(
    done: Result<TaskOut, tokio::task::JoinError>,
    settings: &ScanSettings,
    outcomes: &mut Vec<Outcome>,
) {
    match done {
        Ok(out) => {
            if let (Some((key, prefix)), Some(q)) = (out.spam_prefix, settings.quarantine.clone()) {
                let written =
                    tokio::task::spawn_blocking(move || q.store_prefix(&key, &prefix)).await;
                if let Ok(Err(e)) = written {
                    tracing::warn!("quarantine: {e}");
                }
            }
            outcomes.push(out.outcome);
        }
        Err(e) => {
            // A panicking scorer must not take the session down; the message is shown unscored.
            tracing::error!("scoring task failed: {e}");
        }
    }
}

/// Decoded From and Subject for the quarantine listing.
fn summarize(prefix: &[u8]) -> Summary {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(prefix) else {
        return Summary::default();
    };
    let subject = msg.subject().unwrap_or_default().to_owned();
    let from = msg
        .from()
        .and_then(|a| a.first())
        .map(|a| match (&a.name, &a.address) {
            (Some(n), Some(ad)) => format!("{n} <{ad}>"),
            (None, Some(ad)) => ad.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .unwrap_or_default();
    Summary { from, subject }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn list_and_uidl_parsing_skips_garbage() {
        let l = parse_list(b"1 120\r\n2 300 extra\r\n0 5\r\nx 4\r\n3\r\n4 -1\r\n5 77\r\n");
        assert_eq!(l, vec![(1, 120), (2, 300), (5, 77)]);
        let long = "u".repeat(71);
        let body = format!("1 abc\r\n2 {long}\r\n3 has space\r\n4 \x01x\r\n5 ok-5\r\n");
        let u = parse_uidl(body.as_bytes());
        assert_eq!(u.len(), 2);
        assert_eq!(u[&1], "abc");
        assert_eq!(u[&5], "ok-5");
    }

    #[test]
    fn digest_keys_depend_on_the_header_only() {
        let a = b"Subject: x\r\n\r\nbody one";
        let b = b"Subject: x\r\n\r\nbody two";
        let c = b"Subject: y\r\n\r\nbody one";
        let k = |m: &[u8]| digest_key(m, tag::head_end(m, 1000, true), 1000);
        assert_eq!(k(a), k(b));
        assert_ne!(k(a), k(c));
        assert!(k(a).starts_with("digest:"));
        assert_eq!(k(a).len(), "digest:".len() + 64);
    }

    #[test]
    fn summary_decodes_headers() {
        let s = summarize(
            b"From: =?UTF-8?Q?J=C3=B6rg?= <j@x.org>\r\nSubject: =?UTF-8?B?w6k=?=\r\n\r\n",
        );
        assert_eq!(s.from, "Jörg <j@x.org>");
        assert_eq!(s.subject, "é");
        let none = summarize(b"");
        assert_eq!(none.subject, "");
    }

    fn counting_scorer(
        running: Arc<std::sync::atomic::AtomicUsize>,
        peak: Arc<std::sync::atomic::AtomicUsize>,
        thread: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
    ) -> Scorer {
        use std::sync::atomic::Ordering;
        Scorer::Func(Arc::new(move |_, _| {
            *thread.lock().unwrap() = Some(std::thread::current().id());
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            Verdict::from_hits(Vec::new(), 5.0, 3.0)
        }))
    }

    /// Scoring never runs on the async worker, and never more than one call per core at once.
    #[tokio::test]
    async fn scoring_runs_on_the_bounded_blocking_pool() {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = Arc::new(std::sync::Mutex::new(None));
        let scorer = counting_scorer(running, peak.clone(), thread.clone());
        scorer.score(Some("u"), b"Subject: x\r\n\r\n").await;
        assert_ne!(thread.lock().unwrap().unwrap(), std::thread::current().id());

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut set = JoinSet::new();
        for _ in 0..cores * 3 {
            let s = scorer.clone();
            set.spawn(async move { s.score(None, b"x").await });
        }
        while set.join_next().await.is_some() {}
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(peak >= 1 && peak <= cores, "peak {peak} with {cores} cores");
    }

    /// A resolver that never answers must not hold a scoring slot: the lookups are awaited on the runtime, after
    /// the CPU part has given its slot back.
    #[tokio::test]
    async fn dns_lookups_hold_no_scoring_slot() {
        use crate::filter::{FilterConfig, FilterSettings, bayes, dnsbl, rules};
        // A black hole on loopback: it reads queries and never answers.
        let hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let settings = FilterSettings {
            filter: FilterConfig::default(),
            rules: rules::RulesSettings::default(),
            bayes: bayes::BayesSettings::new(data.path().to_owned()),
            dnsbl: dnsbl::DnsblSettings {
                config: dnsbl::DnsblConfig {
                    enabled: true,
                    nameservers: vec![hole.local_addr().unwrap()],
                    budget_ms: 20_000,
                    ..dnsbl::DnsblConfig::default()
                },
                disabled_users: Vec::new(),
            },
        };
        let scorer = Scorer::Filter(Arc::new(Filter::new(&settings).unwrap()));
        let message =
            b"Subject: hi\r\n\r\nsee http://www.example-spam-domain.com/offer now\r\n".to_vec();
        let pending = tokio::spawn(async move { scorer.score(None, &message).await });
        // The first query reaching the hole means the CPU part is over and the lookups are under way.
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_secs(10), hole.recv_from(&mut buf))
            .await
            .expect("the filter sent no DNS query")
            .unwrap();
        let cores =
            u32::try_from(std::thread::available_parallelism().map_or(1, |n| n.get())).unwrap();
        let all = tokio::time::timeout(Duration::from_secs(5), SCORING_SLOTS.acquire_many(cores))
            .await
            .expect("a message waiting for DNS still holds a scoring slot");
        drop(all);
        assert!(
            !pending.is_finished(),
            "the lookup should still be waiting for the black hole"
        );
        pending.abort();
    }
}
