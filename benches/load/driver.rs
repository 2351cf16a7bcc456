//! Load phases: many concurrent sessions until a session count or a duration is reached (both hard caps), and
//! idle sessions held open to measure memory per session. Collects latencies, throughput and errors by kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::procmem;
use super::session::{self, Failure, Plan, STEP_TIMEOUT};

/// After the duration cap, sessions already running get this long to finish; whatever still runs is aborted and
/// counted as an error, so a phase never outlives `duration + HARD_GRACE` (plus connection teardown).
pub const HARD_GRACE: Duration = Duration::from_secs(60);

/// How often the target's resident size is sampled during a load phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Idle sessions logging in at the same time: enough to open hundreds in about a second, few enough that the
/// login burst itself (not the idle sessions) does not decide the memory figure.
const IDLE_OPEN_PARALLEL: usize = 50;

/// Pause after the last idle login before reading memory: lets the target finish any per-login work and the
/// kernel account for it.
const IDLE_SETTLE: Duration = Duration::from_millis(1000);

/// A mailbox to log in to.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub pass: String,
}

/// One load phase.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub concurrency: usize,
    /// Start no more sessions than this.
    pub max_sessions: usize,
    /// Start no session after this much time.
    pub duration: Duration,
    pub plan: Plan,
}

/// Errors counted by kind, with the first example of each.
#[derive(Debug, Default)]
pub struct Errors(pub BTreeMap<String, (usize, String)>);

impl Errors {
    pub fn add(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.0.entry(kind).or_insert_with(|| (0, detail())).0 += 1;
    }

    pub fn total(&self) -> usize {
        self.0.values().map(|(n, _)| n).sum()
    }

    fn record(&mut self, failure: &Failure) {
        self.add(failure.kind(), || failure.detail());
    }
}

/// The outcome of one load phase.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: usize,
    pub errors: Errors,
    /// From the first connect to the last session's end.
    pub wall: Duration,
    /// Latencies of the successful sessions (connect to the reply to QUIT), sorted.
    pub latencies: Vec<Duration>,
    pub bytes: u64,
    /// Largest VmRSS sampled during the phase, KiB (local target only).
    pub sampled_peak_kib: Option<u64>,
    /// VmHWM at the end of the phase, KiB: reset at its start when the kernel allows, else since process start.
    pub hwm_kib: Option<u64>,
    pub hwm_reset: bool,
    /// Growth of the kernel's listen-queue overflow counter during the phase (system-wide).
    pub listen_overflows: Option<u64>,
}

impl LoadResult {
    /// Adds another phase on the same target: counts and times add up, peaks take the larger.
    pub fn merge(&mut self, other: LoadResult) {
        self.ok += other.ok;
        for (kind, (n, example)) in other.errors.0 {
            self.errors.0.entry(kind).or_insert((0, example)).0 += n;
        }
        self.wall += other.wall;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        self.bytes += other.bytes;
        self.sampled_peak_kib = self.sampled_peak_kib.max(other.sampled_peak_kib);
        self.hwm_kib = self.hwm_kib.max(other.hwm_kib);
        self.hwm_reset |= other.hwm_reset;
        self.listen_overflows = match (self.listen_overflows, other.listen_overflows) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    pub fn sessions_per_sec(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile `p` (0-100) of the session latencies.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.clamp(1, self.latencies.len()) - 1)
            .copied()
    }
}

#[derive(Default)]
struct Shared {
    latencies: Vec<Duration>,
    errors: Errors,
    bytes: u64,
}

/// Runs `load.concurrency` workers against `addr`, each doing full sessions back to back on its own account
/// until `load.max_sessions` were started or `load.duration` passed. `pid` is the target process whose memory is
/// watched, if it is local.
pub async fn run_load(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    load: Load,
    pid: Option<u32>,
) -> LoadResult {
    let hwm_reset = pid.is_some_and(procmem::reset_peak);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let started = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampled_peak = Arc::new(AtomicU64::new(0));
    let sampler = pid.map(|pid| {
        let stop = stop_sampling.clone();
        let peak = sampled_peak.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = procmem::rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    });

    let overflows_before = procmem::listen_overflows();
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut workers = JoinSet::new();
    for worker in 0..load.concurrency {
        let (shared, started, in_flight, accounts) = (
            shared.clone(),
            started.clone(),
            in_flight.clone(),
            accounts.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = started.fetch_add(1, Ordering::Relaxed);
                if i >= load.max_sessions || Instant::now() >= deadline {
                    break;
                }
                // One mailbox per worker, as when each user's client checks its own mail: RFC 1939 servers
                // lock a maildrop for the length of a session, so two concurrent sessions on one mailbox would
                // measure the lock, not the server.
                let account = &accounts[worker % accounts.len()];
                in_flight.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let outcome = session::full(addr, &account.user, &account.pass, load.plan).await;
                let elapsed = t0.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(done) => {
                        s.latencies.push(elapsed);
                        s.bytes += done.bytes;
                    }
                    Err(f) => s.errors.record(&f),
                }
            }
        });
    }
    let hard_stop = tokio::time::Instant::from_std(deadline + HARD_GRACE);
    let all_done = async { while workers.join_next().await.is_some() {} };
    let aborted = if tokio::time::timeout_at(hard_stop, all_done).await.is_err() {
        let n = in_flight.load(Ordering::Relaxed);
        workers.abort_all();
        while workers.join_next().await.is_some() {}
        n
    } else {
        0
    };
    let wall = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }

    let mut s = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    if aborted > 0 {
        s.errors.0.insert(
            "aborted at the phase's hard cap".into(),
            (
                aborted,
                format!("still running {HARD_GRACE:?} after the duration cap"),
            ),
        );
    }
    s.latencies.sort();
    let peak = sampled_peak.load(Ordering::Relaxed);
    LoadResult {
        ok: s.latencies.len(),
        errors: s.errors,
        wall,
        latencies: s.latencies,
        bytes: s.bytes,
        sampled_peak_kib: (peak > 0).then_some(peak),
        hwm_kib: pid.and_then(procmem::peak_kib),
        hwm_reset,
        listen_overflows: overflows_before
            .zip(procmem::listen_overflows())
            .map(|(before, after)| after.saturating_sub(before)),
    }
}

/// The outcome of holding idle sessions open.
#[derive(Debug, Default)]
pub struct IdleResult {
    pub opened: usize,
    pub errors: Errors,
    /// Target memory (KiB) before any idle session was opened and while all of them were held.
    pub before_kib: Option<u64>,
    pub during_kib: Option<u64>,
}

impl IdleResult {
    /// Memory added per idle session, KiB.
    pub fn per_session_kib(&self) -> Option<f64> {
        let (before, during) = (self.before_kib?, self.during_kib?);
        (self.opened > 0).then(|| (during as f64 - before as f64) / self.opened as f64)
    }
}

/// Opens `count` sessions that log in and then sit idle, measures the target's memory with `measure` before and
/// while they are all held, then QUITs them.
pub async fn run_idle(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    count: usize,
    measure: impl Fn() -> Option<u64>,
) -> IdleResult {
    let before_kib = measure();
    let (release_tx, release_rx) = watch::channel(false);
    let (login_tx, mut login_rx) = mpsc::channel(count.max(1));
    let gate = Arc::new(Semaphore::new(IDLE_OPEN_PARALLEL));
    let mut sessions = JoinSet::new();
    for i in 0..count {
        let account = accounts[i % accounts.len()].clone();
        let (login_tx, mut release_rx, gate) = (login_tx.clone(), release_rx.clone(), gate.clone());
        sessions.spawn(async move {
            // The permit bounds concurrent logins only; an idle session holds none.
            let permit = gate.acquire_owned().await;
            let login = session::login(addr, &account.user, &account.pass).await;
            drop(permit);
            match login {
                Err(f) => {
                    let _ = login_tx.send(Err(f)).await;
                    Ok(())
                }
                Ok(mut conn) => {
                    let _ = login_tx.send(Ok(())).await;
                    let _ = release_rx.wait_for(|released| *released).await;
                    session::quit(&mut conn).await
                }
            }
        });
    }
    drop(login_tx);
    drop(release_rx);

    let mut result = IdleResult {
        before_kib,
        ..IdleResult::default()
    };
    // Every login answers within its step timeouts; the bound only guards against a bug here.
    let logins_deadline = tokio::time::Instant::now() + STEP_TIMEOUT * 4 + HARD_GRACE;
    // Each session reports its login once and keeps its sender until released, so count, not wait for close.
    for _ in 0..count {
        match tokio::time::timeout_at(logins_deadline, login_rx.recv()).await {
            Ok(Some(Ok(()))) => result.opened += 1,
            Ok(Some(Err(f))) => result.errors.record(&f),
            Ok(None) | Err(_) => {
                result.errors.add("idle login never answered".into(), || {
                    "no login outcome before the idle phase's bound".into()
                });
                break;
            }
        }
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    result.during_kib = measure();
    let _ = release_tx.send(true);
    let quit_deadline = tokio::time::Instant::now() + STEP_TIMEOUT + HARD_GRACE;
    loop {
        match tokio::time::timeout_at(quit_deadline, sessions.join_next()).await {
            Ok(Some(Ok(Ok(())))) => {}
            Ok(Some(Ok(Err(f)))) => result.errors.record(&f),
            Ok(Some(Err(e))) => result
                .errors
                .add("idle task failed".into(), || e.to_string()),
            Ok(None) => break,
            Err(_) => {
                let left = sessions.len();
                sessions.abort_all();
                result.errors.add("idle QUIT not answered".into(), || {
                    format!("{left} sessions still open {HARD_GRACE:?} after release")
                });
                break;
            }
        }
    }
    result
}
